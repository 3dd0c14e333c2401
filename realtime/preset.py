"""Presets for the live engine: find, verify, load (two onnxruntime sessions) and install them.

A preset is a folder (see ``sidl.export.preset`` for how one is written)::

    preset.json   manifest (schema_version, codec, atoms, k, meter prior, corpus + license, metrics,
                  and a sha256 for each file below, checked at every load)
    encoder.onnx  x (steps, channels) float32, k () int64 -> idx, val (k, positions)
    decoder.onnx  idx, val (k, positions) -> y (steps, channels) float32
    prior.npz     usage (n_atoms, positions_per_bar) f16, scale (n_atoms,) f16,
                  next_atom / next_p (n_atoms, top): each atom's most likely successors
    atoms.mid, atoms.png

Presets are looked up by name in ``$SIDL_PRESETS`` (else ``~/.local/share/sidl/presets``; where
``install_preset`` puts them) and then in the ``presets/`` folder shipped beside the package. A
single-file archive (``NAME.sidl``, a zip of ``NAME/``) is installed, never loaded in place.

Only numpy, onnxruntime and json here: the live path never imports torch. Nothing is unpickled.
Every problem is a ``PresetError`` whose message is one line naming the preset and what is wrong.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import onnxruntime as ort

from .drums import CLASS_NAMES
from .grid import KNOWN_CODECS, Codec
from .npz import NPZ_ERRORS

SCHEMA_VERSION = 1
PRESET_FILES = ("encoder.onnx", "decoder.onnx", "prior.npz", "atoms.mid", "atoms.png")
MAX_MEMBER_BYTES = 100 * 10**6                  # a preset file is a few MB at most; installs refuse more
ARCHIVE_SUFFIX = ".sidl"
LIVE_CODECS = ("drums", "piano-grid")           # codecs with bars, which the engine can play
MAX_BINDINGS = 32                              # per thread; live uses a handful of shapes
MAX_SEEN_POSITIONS = 8192                      # decoded code positions kept (~4 kB each for piano)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class PresetError(ValueError):
    """A preset that cannot be used; the message is one line: ``preset 'NAME': what is wrong``."""

    def __init__(self, preset, problem: str):
        text = " ".join(str(problem).split())
        super().__init__(f"preset {str(preset)!r}: {text}")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise PresetError(name, "a preset name is letters, digits, '.', '_' or '-' (at most 64)")
    return name


def describe_codec(codec: Codec) -> str:
    """One line saying what a preset's arrays mean, for manifests and ``sidl presets show``."""
    meter = f"{codec.beats_per_bar}/{codec.beat_unit}"
    if codec.name == "drums":
        voices = f"{codec.n_voices} drum classes ({', '.join(CLASS_NAMES)}) x hit/velocity/offset"
    elif codec.name == "piano-grid":
        voices = f"{codec.n_voices} piano keys (A0..C8) x onset/velocity/hold"
    else:
        return f"{codec.name}: {codec.channels} event types, no grid"
    return f"{codec.name}: {voices} = {codec.channels} channels, {codec.steps_per_beat} steps per beat, {meter}"


# ---------------------------------------------------------------------------------------- finding


def user_preset_dir() -> Path:
    """Where presets are installed: $SIDL_PRESETS, else $XDG_DATA_HOME/sidl/presets (~/.local/share)."""
    env = os.environ.get("SIDL_PRESETS")
    if env:
        return Path(env).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "sidl" / "presets"


def shipped_preset_dir() -> Path:
    """``presets/`` beside the package: the repository's (editable install) or ``sidl/presets``."""
    return Path(__file__).resolve().parents[1] / "presets"


def preset_dirs() -> list[Path]:
    """Folders searched for presets, first match of a name wins."""
    return [user_preset_dir(), shipped_preset_dir()]


def find_presets() -> dict[str, Path]:
    """Every preset folder found, by name (a user's install shadows a shipped preset of that name)."""
    found: dict[str, Path] = {}
    for root in preset_dirs():
        if not root.is_dir():
            continue
        for sub in sorted(root.iterdir()):
            if (sub.name not in found and _NAME.match(sub.name) and (sub / "preset.json").is_file()):
                found[sub.name] = sub
    return found


def resolve(name_or_path) -> Path:
    """A preset folder from a name or a path, or a PresetError saying where it looked."""
    text = os.fspath(name_or_path)
    if not text.strip():
        raise PresetError(text, "no preset named (an empty name)")
    path = Path(text).expanduser()
    if path.is_file() and path.suffix == ARCHIVE_SUFFIX:
        raise PresetError(text, "is an archive: install it first (sidl presets install PATH)")
    if path.is_dir():
        return path
    if os.sep in text or "/" in text or not _NAME.match(text):
        raise PresetError(text, "no such preset folder")
    found = find_presets().get(text)
    if found is None:
        where = ", ".join(str(d) for d in preset_dirs())
        raise PresetError(text, f"not found (looked in {where})")
    return found


# ---------------------------------------------------------------------------------------- loading


def read_manifest(folder: Path, label: str | None = None) -> dict:
    label = label or folder.name
    path = folder / "preset.json"
    if not path.is_file():
        raise PresetError(label, "missing preset.json")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        what = "nested too deeply" if isinstance(e, RecursionError) else e
        raise PresetError(label, f"preset.json is not readable JSON ({what})") from e
    if not isinstance(manifest, dict):
        raise PresetError(label, "preset.json is not a JSON object")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise PresetError(label, f"unknown schema version {version!r} (this sidl reads {SCHEMA_VERSION})")
    return manifest


def manifest_codec(manifest: dict, label: str) -> Codec:
    d = manifest.get("codec")
    name = d.get("name") if isinstance(d, dict) else None
    if name not in KNOWN_CODECS:
        raise PresetError(label, f"unknown codec {name!r} (known: {', '.join(KNOWN_CODECS)})")
    if name not in LIVE_CODECS:
        raise PresetError(label, f"codec {name!r} has no bars; the live engine plays {', '.join(LIVE_CODECS)}")
    try:
        return Codec.from_dict(d)
    except ValueError as e:                 # Codec says what is wrong with the description
        raise PresetError(label, str(e)) from e


def read_verified(folder: Path, manifest: dict, label: str) -> dict[str, bytes]:
    """Every preset file's bytes, each checked against the manifest's sha256."""
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise PresetError(label, "preset.json lists no files")
    out = {}
    for name in PRESET_FILES:
        path = folder / name
        if not path.is_file():
            raise PresetError(label, f"missing {name}")
        want = (files.get(name) or {}).get("sha256") if isinstance(files.get(name), dict) else None
        if not want:
            raise PresetError(label, f"preset.json has no sha256 for {name}")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != want:
            raise PresetError(label, f"sha256 mismatch for {name} (corrupt or modified file)")
        out[name] = data
    return out


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


def read_prior(data: bytes, n_atoms: int, positions: int, label: str):
    """prior.npz -> usage (n_atoms, positions), transitions (n_atoms, n_atoms), scale (n_atoms,) float32."""
    import io
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            usage, scale = z["usage"], z["scale"]
            nxt, p = z["next_atom"], z["next_p"]
    except NPZ_ERRORS as e:
        # (numpy's own text for a non-npz file suggests allow_pickle: not advice to pass on)
        why = "empty file" if not data else "not an .npz archive" if "pickle" in str(e) else e
        raise PresetError(label, f"prior.npz is not a readable prior ({why})") from e
    arrays = {"usage": usage, "scale": scale, "next_atom": nxt, "next_p": p}
    for key, a in arrays.items():
        if not isinstance(a, np.ndarray) or a.dtype.kind not in "fiu":
            raise PresetError(label, f"prior.npz: {key} is not a numeric array")
    if usage.shape != (n_atoms, positions) or scale.shape != (n_atoms,) or nxt.shape != p.shape \
            or nxt.ndim != 2 or len(nxt) != n_atoms:
        raise PresetError(label, f"prior.npz shapes {usage.shape}, {scale.shape}, {nxt.shape} do not fit "
                                 f"{n_atoms} atoms x {positions} positions")
    nxt = nxt.astype(np.int64)
    if nxt.size and (nxt.min() < 0 or nxt.max() >= n_atoms):
        raise PresetError(label, "prior.npz names atoms that do not exist")
    transitions = np.zeros((n_atoms, n_atoms), np.float32)
    np.put_along_axis(transitions, nxt, p.astype(np.float32), axis=1)
    return usage.astype(np.float32), transitions, scale.astype(np.float32)


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
    _bound: threading.local = field(default_factory=threading.local, repr=False, init=False)
    # Decoded code positions, by (atom, amplitude) pairs (see decode_bar): shared by threads, as
    # dict reads and writes are atomic and entries never change.
    _one_atom: dict = field(default_factory=dict, repr=False, init=False)
    _seen: dict = field(default_factory=dict, repr=False, init=False)

    @property
    def k_live(self) -> int:
        return self.k

    @property
    def n_atoms(self) -> int:
        return len(self.atom_scale)

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
        np.copyto(run.inputs["idx"], idx.T)
        np.copyto(run.inputs["val"], val.T)
        run.run()
        return run.outputs["y"].copy()

    def _decode_every_atom(self) -> None:
        """Decode each atom alone at its typical amplitude (one graph run, at load), kept for good."""
        self.decode_bar(np.arange(self.n_atoms, dtype=np.int64)[:, None], self.atom_scale.astype(np.float32)[:, None])
        self._one_atom.update(self._seen)


def load_preset(name_or_path) -> Preset:
    """Find, verify (schema, codec, sha256 of every file) and open a preset for the live engine."""
    folder = resolve(name_or_path)
    return open_preset(folder, folder.name)


def _whole(value, field: str, label: str) -> int:
    """A manifest field that must be a whole number (JSON numbers only: no strings, no 512.7)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
            or value in (float("inf"), float("-inf")) or int(value) != value:
        raise PresetError(label, f"preset.json: {field} must be a whole number, got {value!r}")
    return int(value)


def open_preset(folder: Path, label: str) -> Preset:
    """Verify and open the preset in ``folder``; errors name it ``label``."""
    manifest = read_manifest(folder, label)
    codec = manifest_codec(manifest, label)
    atoms = manifest.get("atoms")
    atoms = atoms if isinstance(atoms, dict) else {}
    n_atoms, length = _whole(atoms.get("count"), "atoms.count", label), _whole(atoms.get("length"), "atoms.length", label)
    k_max, k_live = _whole(manifest.get("k_max"), "k_max", label), _whole(manifest.get("k_live"), "k_live", label)
    if n_atoms < 1 or length < 1 or codec.steps_per_bar % length or not 1 <= k_live <= k_max:
        raise PresetError(label, f"inconsistent manifest: atoms of {length} steps, k_live {k_live}, k_max {k_max}")
    data = read_verified(folder, manifest, label)
    usage, transitions, scale = read_prior(data["prior.npz"], n_atoms, codec.steps_per_bar // length, label)
    enc = open_session(data["encoder.onnx"], "encoder.onnx", label, ("x", "k"), ("idx", "val"))
    dec = open_session(data["decoder.onnx"], "decoder.onnx", label, ("idx", "val"), ("y",))
    preset = Preset(str(manifest.get("name") or folder.name), folder, manifest, codec, k_max, k_live,
                    length, usage, transitions, scale, enc, dec)
    try:   # one silent bar through both graphs: checks them and warms them up for the first real bar
        preset.decode_bar(*preset.encode_bar(np.zeros((codec.steps_per_bar, codec.channels), np.float32)))
        preset._decode_every_atom()
    except Exception as e:
        raise PresetError(label, f"its graphs do not run ({' '.join(str(e).split())[:160]})") from e
    return preset


# ------------------------------------------------------------------------------------- installing


def safe_members(archive: zipfile.ZipFile, label: str) -> list[zipfile.ZipInfo]:
    """The archive's members, or a PresetError if any would land outside the extraction folder."""
    members = archive.infolist()
    for m in members:
        p = PurePosixPath(m.filename)
        if (m.filename.startswith(("/", "\\")) or "\\" in m.filename or ".." in p.parts
                or re.match(r"^[A-Za-z]:", m.filename)):
            raise PresetError(label, f"archive member {m.filename!r} escapes the preset folder")
        if stat.S_ISLNK(m.external_attr >> 16):
            raise PresetError(label, f"archive member {m.filename!r} is a symbolic link")
    return members


def _unpack(archive_path: Path, into: Path, label: str) -> Path:
    """Extract the one preset an archive holds: its preset.json and PRESET_FILES, nothing else,
    each at most ``MAX_MEMBER_BYTES`` (a zip can claim gigabytes in a few bytes)."""
    wanted = ("preset.json",) + PRESET_FILES
    try:
        with zipfile.ZipFile(archive_path) as z:
            members = [m for m in safe_members(z, label)
                       if not m.is_dir() and PurePosixPath(m.filename).name in wanted]
            manifests = [m for m in members if PurePosixPath(m.filename).name == "preset.json"]
            if len(manifests) != 1:
                raise PresetError(label, "archive holds no single preset folder with a preset.json")
            top = PurePosixPath(manifests[0].filename).parent
            into.mkdir(parents=True)
            for m in members:
                if PurePosixPath(m.filename).parent != top:
                    continue
                if m.file_size > MAX_MEMBER_BYTES:
                    raise PresetError(label, f"archive member {m.filename!r} is {m.file_size / 1e6:.0f} MB, "
                                             f"more than a preset file can be ({MAX_MEMBER_BYTES // 10**6} MB)")
                with z.open(m) as src, open(into / PurePosixPath(m.filename).name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, EOFError, OSError) as e:
        # RuntimeError: an encrypted member; NotImplementedError: a compression zipfile lacks
        raise PresetError(label, f"not a readable preset archive ({e.__class__.__name__}: {e})") from e
    return into


def replace_folder(new: Path, target: Path) -> None:
    """Put the finished folder ``new`` at ``target``: a folder already there is moved aside, put
    back if the move fails, and removed only once ``new`` is in place (export and install)."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        if old.exists():
            os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def folder_bytes(folder: Path) -> int:
    """Bytes of the files in a preset folder (what ``sidl presets`` and export report)."""
    return sum(f.stat().st_size for f in Path(folder).iterdir() if f.is_file())


def install_preset(path, dest: Path | None = None) -> Path:
    """Verify a preset folder or ``.sidl`` archive and copy it to ``dest`` (the user folder) by name.

    An installed preset of the same name is replaced (atomically: a temporary folder is renamed).
    """
    src = Path(os.fspath(path)).expanduser()
    label = src.name
    dest = Path(dest) if dest is not None else user_preset_dir()
    if not src.exists():
        raise PresetError(label, f"{src}: no such file or folder")
    dest.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".install-", dir=dest))
    try:
        folder = _unpack(src, work / "unpacked", label) if src.is_file() else src
        name = check_name(str(read_manifest(folder, label).get("name") or folder.name))
        open_preset(folder, label)                           # every check the engine makes
        staged = work / name
        staged.mkdir()
        for f in ("preset.json",) + PRESET_FILES:           # only what a preset holds
            shutil.copyfile(folder / f, staged / f)
        target = dest / name
        replace_folder(staged, target)
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)
