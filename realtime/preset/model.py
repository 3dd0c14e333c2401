"""A loaded preset: its two onnxruntime graphs, its meter prior, and the caches that make a bar cheap.

Only numpy, onnxruntime and json here: the live path never imports torch.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..codec.spec import Codec
from ..codec.drumfeel import GAIN_LEVELS, TIMING_LEVELS, code_atom
from .format import (DRUM_FEEL_KIND, SHAPES_KIND, PresetError, atoms_kind, manifest_codec, read_manifest, read_meter_priors,
                     read_prior, read_verified, whole_number)
from .pursuit import ShapePursuit, check_window

MAX_BINDINGS = 32                              # per thread; live uses a handful of shapes
MAX_SEEN_POSITIONS = 8192                      # decoded code positions kept (~4 kB each for piano)


def session_options() -> ort.SessionOptions:
    """One thread, no spinning, sequential: a bar is small and the box is shared with the audio."""
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.inter_op_num_threads = 1
    o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    o.add_session_config_entry("session.inter_op.allow_spinning", "0")
    o.log_severity_level = 3
    return o


def open_session(data: bytes, name: str, label: str, inputs: tuple, outputs: tuple) -> ort.InferenceSession:
    try:
        s = ort.InferenceSession(data, session_options(), providers=["CPUExecutionProvider"])
    except Exception as e:     # onnxruntime raises its own Fail/InvalidGraph/InvalidProtobuf types
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise PresetError(label, f"{name} is not a loadable ONNX model (truncated or corrupt?): {first}") from e
    got_in = tuple(i.name for i in s.get_inputs())
    got_out = tuple(o.name for o in s.get_outputs())
    if got_in != inputs or got_out != outputs:
        raise PresetError(label, f"{name} has inputs {got_in} and outputs {got_out}, "
                                 f"expected {inputs} -> {outputs}")
    return s



class BoundRun:
    """One graph bound to fixed input and output buffers of one shape (onnxruntime's IOBinding).

    ``run()`` reads ``inputs`` and writes ``outputs`` in place: no per-call dict, conversion or
    output allocation, which is about a tenth of a generated drum bar's compute. Buffers are
    reused, so a binding belongs to one thread (see ``Preset``).
    """

    def __init__(self, session: ort.InferenceSession, inputs: dict, outputs: dict):
        self.session, self.inputs, self.outputs = session, inputs, outputs
        self.binding = session.io_binding()
        for name, a in inputs.items():
            self.binding.bind_cpu_input(name, a)
        for name, a in outputs.items():
            self.binding.bind_output(name, "cpu", 0, a.dtype, list(a.shape), a.ctypes.data)

    def run(self) -> None:
        self.session.run_with_iobinding(self.binding)


@dataclass(frozen=True, eq=False)
class Preset:
    """A loaded preset; fits the engine's ``BarModel`` (codec, k, usage, transitions, encode/decode).

    Safe to share between threads: each thread runs the graphs through its own bindings.
    """

    name: str
    path: Path
    manifest: dict
    codec: Codec
    k_max: int
    k: int                                   # winners per code position used live
    stride: int                              # grid steps per code position (= atom length)
    usage: np.ndarray                        # (n_atoms, positions_per_bar) float32
    transitions: np.ndarray                  # (n_atoms, n_atoms) float32
    atom_scale: np.ndarray                   # (n_atoms,) float32, typical value of each atom
    encoder: ort.InferenceSession = field(repr=False)
    decoder: ort.InferenceSession = field(repr=False)
    # shapes presets: code of each shape at its typical key and length, one beat long; a code
    # entry idx < n_atoms stands for it (what generate stitches), larger ones are placements
    typical_code: np.ndarray | None = field(default=None, repr=False)
    # shapes presets: the encoder graph's pursuit in numpy (same outputs, a third of the cost),
    # None where it does not reproduce the graph on the load check (then the graph runs)
    pursuit: ShapePursuit | None = field(default=None, repr=False)
    # priors learned in other meters: {"3/4": (usage (n_atoms, positions), transitions or None)};
    # a Composer in a meter without one builds it from usage (sidl.realtime.metrical)
    meter_priors: dict = field(default_factory=dict, repr=False)
    _bound: threading.local = field(default_factory=threading.local, repr=False, init=False)
    # Decoded code positions, by (atom, amplitude) pairs (see decode_bar): shared by threads, as
    # dict reads and writes are atomic and entries never change.
    _one_atom: dict = field(default_factory=dict, repr=False, init=False)
    _seen: dict = field(default_factory=dict, repr=False, init=False)

    @property
    def n_atoms(self) -> int:
        return len(self.atom_scale)

    @property
    def shapes(self) -> bool:
        """Piano shapes placed at any pitch (schema 2): a code entry packs shape, step, key and length."""
        return atoms_kind(self.manifest) == SHAPES_KIND

    @property
    def feel_codes(self) -> bool:
        """Drum entries that carry feel levels (schema 3): idx packs atom, gain and timing."""
        return atoms_kind(self.manifest) == DRUM_FEEL_KIND

    def entry_atoms(self, idx):
        """The meter prior's atom of each code entry (int or array), -1 where it has none: a shapes
        preset's placements. A drum-feel entry plays its atom at some gain and timing."""
        if self.feel_codes:
            return code_atom(idx, self.n_atoms)
        return np.where(np.asarray(idx) < self.n_atoms, idx, -1)

    def _binding(self, graph: str, shape: tuple) -> BoundRun:
        """This thread's binding of ``graph`` for one code shape (k, positions), made on first use."""
        bound = self._bound.__dict__
        run = bound.get((graph, shape))
        if run is None:
            if len(bound) >= MAX_BINDINGS:      # many window lengths (evaluation): keep memory bounded
                bound.clear()
            k, positions = shape
            steps, C = positions * self.stride, self.codec.channels
            code = {"idx": np.zeros(shape, np.int64), "val": np.zeros(shape, np.float32)}
            if graph == "encoder":
                run = BoundRun(self.encoder, {"x": np.zeros((steps, C), np.float32), "k": np.array(k, np.int64)},
                               code)
            else:
                run = BoundRun(self.decoder, code, {"y": np.zeros((steps, C), np.float32)})
            bound[(graph, shape)] = run
        return run

    def encode_bar(self, x: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(steps, channels) float32 -> idx (positions, k) int64, val (positions, k) float32."""
        k = self.k if k is None else int(k)
        if not 1 <= k <= self.k_max:
            raise ValueError(f"k must be in 1..{self.k_max}, got {k}")
        if x.ndim != 2 or x.shape[1] != self.codec.channels or x.shape[0] % self.stride or not len(x):
            raise ValueError(f"bar must be (steps, {self.codec.channels}) with steps a positive "
                             f"multiple of {self.stride}, got {x.shape}")
        if self.pursuit is not None:
            return self.pursuit.encode(x, k)
        return self.run_encoder(x, k)

    def run_encoder(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The encoder graph itself (``encode_bar`` runs the numpy pursuit where there is one)."""
        run = self._binding("encoder", (k, len(x) // self.stride))
        np.copyto(run.inputs["x"], x)
        run.run()
        return run.outputs["idx"].T.copy(), run.outputs["val"].T.copy()

    def decode_bar(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        """idx (positions, k) int64, val (positions, k) float32 -> (positions * stride, channels).

        Atoms tile time (hop == atom length: export checks it) and the read-out works value by
        value, so every code position decodes on its own, and the graph's output for one
        position's atoms and amplitudes can be kept and reused exactly. Each atom at its typical
        amplitude (what generate stitches) is decoded once at load; other positions the first time
        they are met. So a generated bar is a few lookups, and only new material runs the graph.
        """
        positions, k = idx.shape
        if k == 0 or positions == 0:
            return np.zeros((positions * self.stride, self.codec.channels), np.float32)
        if self.shapes and np.any((idx >= self.n_atoms) & (val != 0)):
            return self.run_decoder(idx, val)    # played shapes hold into later beats: decode as one
        # A position's key: its (atom, amplitude) pairs in slot order, empty slots left out (they
        # add exactly 0.0 to the sum, so the output does not depend on them).
        keys = [tuple((i, v) for i, v in zip(ir, vr) if v) for ir, vr in zip(idx.tolist(), val.tolist())]
        seen = self._seen
        parts = [seen.get(key) for key in keys]
        new = [p for p, part in enumerate(parts) if part is None]
        if new:
            if len(seen) > MAX_SEEN_POSITIONS:      # forget what was learned live, keep the atoms
                seen.clear()
                seen.update(self._one_atom)
            y = self.run_decoder(idx[new], val[new])
            for j, p in enumerate(new):
                parts[p] = seen[keys[p]] = y[j * self.stride:(j + 1) * self.stride]
        return np.concatenate(parts)

    def run_decoder(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        """The decoder graph itself on (positions, k) codes, nothing reused (``decode_bar`` reuses)."""
        run = self._binding("decoder", (idx.shape[1], idx.shape[0]))
        if self.shapes:
            idx = np.where(idx < self.n_atoms, self.typical_code[np.clip(idx, 0, self.n_atoms - 1)], idx)
        np.copyto(run.inputs["idx"], idx.T)
        np.copyto(run.inputs["val"], val.T)
        run.run()
        return run.outputs["y"].copy()

    def _decode_every_atom(self) -> None:
        """Decode each atom alone at its typical amplitude (one graph run, at load), kept for good."""
        self.decode_bar(np.arange(self.n_atoms, dtype=np.int64)[:, None], self.atom_scale.astype(np.float32)[:, None])
        self._one_atom.update(self._seen)



def open_preset(folder: Path, label: str) -> Preset:
    """Verify and open the preset in ``folder``; errors name it ``label``."""
    manifest = read_manifest(folder, label)
    codec = manifest_codec(manifest, label)
    atoms = manifest.get("atoms")
    atoms = atoms if isinstance(atoms, dict) else {}
    n_atoms, length = whole_number(atoms.get("count"), "atoms.count", label), whole_number(atoms.get("length"), "atoms.length", label)
    k_max, k_live = whole_number(manifest.get("k_max"), "k_max", label), whole_number(manifest.get("k_live"), "k_live", label)
    if n_atoms < 1 or length < 1 or codec.steps_per_bar % length or not 1 <= k_live <= k_max:
        raise PresetError(label, f"inconsistent manifest: atoms of {length} steps, k_live {k_live}, k_max {k_max}")
    if atoms.get("kind") == DRUM_FEEL_KIND and (atoms.get("gain_levels"), atoms.get("timing_levels")) != (GAIN_LEVELS, TIMING_LEVELS):
        raise PresetError(label, f"its drum feel has {atoms.get('gain_levels')!r} gain and {atoms.get('timing_levels')!r} "
                                 f"timing levels; this sidl plays {GAIN_LEVELS} and {TIMING_LEVELS}")
    data = read_verified(folder, manifest, label)
    usage, transitions, scale = read_prior(data["prior.npz"], n_atoms, codec.steps_per_bar // length, label)
    enc = open_session(data["encoder.onnx"], "encoder.onnx", label, ("x", "k"), ("idx", "val"))
    dec = open_session(data["decoder.onnx"], "decoder.onnx", label, ("idx", "val"), ("y",))
    typical = shape_codes(data["prior.npz"], n_atoms, label) if atoms.get("kind") == SHAPES_KIND else None
    meters = read_meter_priors(data["prior.npz"], n_atoms, codec, length, label)
    preset = Preset(str(manifest.get("name") or folder.name), folder, manifest, codec, k_max, k_live,
                    length, usage, transitions, scale, enc, dec, typical, meter_priors=meters)
    try:   # one silent bar through both graphs: checks them and warms them up for the first real bar
        if typical is not None:   # (frozen: set once here, as the check needs the preset's graph)
            object.__setattr__(preset, "pursuit", numpy_pursuit(preset, data["encoder.onnx"]))
        preset.decode_bar(*preset.encode_bar(np.zeros((codec.steps_per_bar, codec.channels), np.float32)))
        preset._decode_every_atom()
    except Exception as e:
        raise PresetError(label, f"its graphs do not run ({' '.join(str(e).split())[:160]})") from e
    return preset


def numpy_pursuit(preset: Preset, encoder_onnx: bytes) -> ShapePursuit | None:
    """The shapes pursuit in numpy, if it gives exactly the graph's codes on a busy test window:
    it reproduces the graph's tables and onnxruntime's order of summing, so a graph exported
    otherwise, or an onnxruntime that sums otherwise, keeps the graph."""
    try:
        pursuit = ShapePursuit.from_graph(encoder_onnx, preset.stride, preset.k_max)
        x = check_window(preset.stride)
        got_idx, got_val = pursuit.encode(x, preset.k_max)
        want_idx, want_val = preset.run_encoder(x, preset.k_max)
    except (KeyError, ValueError, IndexError):
        return None
    return pursuit if np.array_equal(got_idx, want_idx) and np.array_equal(got_val, want_val) else None


def shape_codes(prior: bytes, n_atoms: int, label: str) -> np.ndarray:
    """prior.npz's typical_code (n_atoms,) int64 of a shapes preset (read_prior has checked the file)."""
    import io
    with np.load(io.BytesIO(prior), allow_pickle=False) as z:
        code = z["typical_code"] if "typical_code" in z.files else None
    if code is None or code.shape != (n_atoms,) or code.dtype.kind not in "iu" or np.any(code < n_atoms):
        raise PresetError(label, "prior.npz has no valid typical_code for its shapes")
    return code.astype(np.int64)
