"""The two ONNX graphs of a preset: a pursuit encoder and a sparse decoder over the learned atoms.

    encoder.onnx   x (steps, channels) float32, k () int64
                   -> idx (k, positions) int64, val (k, positions) float32
    decoder.onnx   idx (k, positions) int64, val (k, positions) float32
                   -> y (steps, channels) float32

A drum encoder's idx packs each entry's feel levels above its atom (``sidl.training.drum_feel``).
``steps`` is dynamic (a multiple of the atom length L, positions = steps / L) and so is ``k``
(1..k_max for the encoder, any for the decoder). Both graphs run the same torch code as training
metrics (``sidl.training.pursuit``), so export is a trace of it, not a second implementation.

The encoder only stores the atoms' classification channels (hits / onsets / holds: what pursuit
reads), and for drums their velocity channels (to fit each entry's feel levels,
``sidl.training.drum_feel``); the decoder stores them whole and gathers only the k winning atoms
per position. Atoms can be stored as float16, or int8 with a scale per atom, and widened to float32 in the graph (presets have
size limits and both graphs need the atoms); the torch reference modules hold the very same rounded
values, so torch and onnxruntime agree to float32 precision whatever the storage.
"""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from sidl.realtime.codec.spec import Codec
from sidl.training.drum_feel import decode_feel, fit_feel
from sidl.training.pursuit import WEAK_HIT, channel_roles, pursuit, read_out, sparse_decode

OPSET = 18
ATOM_DTYPES = ("float32", "float16", "int8")
MAX_POSITIONS = 1 << 16      # longest window the encoder's dynamic axis promises (positions)
MAX_K_DECODE = 64            # widest code the decoder's dynamic axis promises
FOLD_LIMIT = 512             # largest tensor (elements) export folds into a constant: below a
                             # dictionary's size, so per-atom constants (the tie-break ranks) stay
                             # a few ops at load instead of bytes on disk (960 atoms: 3.8 kB less)


class AtomStore(nn.Module):
    """Atoms (A, C, L) as stored in a graph: float32, float16, or int8 with one float32 scale per atom.

    ``forward()`` gives the float32 atoms the graph computes with; torch and ONNX both see exactly
    these values, so storage precision never shows up as a torch/onnxruntime difference.
    """

    def __init__(self, stored: torch.Tensor, scale: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("stored", stored)
        self.register_buffer("scale", scale)            # (A, 1, 1) for int8, else None

    @classmethod
    def of(cls, atoms: torch.Tensor, dtype: str) -> "AtomStore":
        if dtype not in ATOM_DTYPES:
            raise ValueError(f"atom dtype must be one of {', '.join(ATOM_DTYPES)}, got {dtype!r}")
        atoms = atoms.detach().float()
        if dtype == "int8":
            scale = atoms.abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-12) / 127.0
            return cls(torch.round(atoms / scale).to(torch.int8), scale)
        return cls(atoms.to(getattr(torch, dtype)).clone())

    def rows(self, channels: torch.Tensor) -> "AtomStore":
        """The same stored values restricted to some channels (what pursuit reads)."""
        return AtomStore(self.stored[:, channels].clone(), self.scale)

    def forward(self) -> torch.Tensor:
        a = self.stored.float()
        return a if self.scale is None else a * self.scale


class PursuitEncoder(nn.Module):
    """x (steps, channels) float32, k () int64 -> idx, val (k, positions): the pursuit's k winners."""

    def __init__(self, atoms: AtomStore, codec: Codec, k_max: int):
        super().__init__()
        roles = channel_roles(codec)
        self.k_max, self.roles = k_max, roles
        self.channels, self.length = codec.channels, atoms.stored.shape[2]
        cols = torch.tensor(roles.classify, dtype=torch.long)
        # Pursuit only reads the classification channels: keep those atoms' rows, feed those columns.
        # A drum encoder also keeps the velocity rows: it fits each entry's feel levels to them.
        self.feel = codec.spec.drum_feel
        self.n_classify = len(cols)
        kept = torch.cat([cols, torch.arange(codec.n_voices, 2 * codec.n_voices)]) if self.feel else cols
        self.atoms = atoms.rows(kept)
        self.register_buffer("cols", cols)

    def forward(self, x: torch.Tensor, k: torch.Tensor):
        xc = x.index_select(1, self.cols).t()[None]                  # (1, Cc, T)
        rows = self.atoms()
        idx, val = pursuit(xc, rows[:, :self.n_classify], k, self.k_max, None, self.roles)
        n = k.item()
        torch._check(n >= 1)
        torch._check(n <= self.k_max)
        idx, val = idx[0, :n], val[0, :n]                            # (k, P) each
        if self.feel:
            idx = fit_feel(x, idx, val, rows[:, :self.n_classify], rows[:, self.n_classify:])
        return idx, val


class KwtaEncoder(nn.Module):
    """x (steps, channels) float32, k () int64 -> idx, val (k, positions): the TCN's own k winners.

    The trained encoder as it is (TCN -> code conv -> k-WTA), for presets whose live budget has no
    room for pursuit: a few convolutions instead of k_max unrolled pursuit steps. Weights are stored
    as float16 when the atoms are (the torch reference computes with the same rounded values).
    """

    def __init__(self, model, codec: Codec, dtype: str = "float32"):
        super().__init__()
        cfg = model.cfg
        self.k_max, self.nonneg, self.hop = cfg.k_max, cfg.nonneg, cfg.hop
        self.channels, self.length = codec.channels, cfg.atom_length
        store = torch.float16 if dtype != "float32" else torch.float32
        self.dilations = [conv.dilation[0] for conv in model.tcn.layers]
        self.paddings = [conv.padding[0] for conv in model.tcn.layers]
        for i, conv in enumerate(model.tcn.layers):
            self.register_buffer(f"w{i}", conv.weight.detach().to(store).clone())
            self.register_buffer(f"b{i}", conv.bias.detach().to(store).clone())
        self.register_buffer("wc", model.code.weight.detach().to(store).clone())
        self.register_buffer("bc", model.code.bias.detach().to(store).clone())

    def forward(self, x: torch.Tensor, k: torch.Tensor):
        import torch.nn.functional as F
        h = x.t()[None]                                               # (1, C, T)
        feats = h
        for i, (d, pad) in enumerate(zip(self.dilations, self.paddings)):
            y = F.relu(F.conv1d(feats, getattr(self, f"w{i}").float(), getattr(self, f"b{i}").float(),
                                dilation=d, padding=pad))
            feats = y + feats if y.shape == feats.shape else y
        scores = F.conv1d(torch.cat([h, feats], 1), self.wc.float(), self.bc.float(), stride=self.hop)
        if self.nonneg:
            scores = F.relu(scores)
        n = k.item()
        torch._check(n >= 1)
        torch._check(n <= self.k_max)
        rank = scores if self.nonneg else scores.abs()
        idx = rank[0].topk(n, dim=0).indices                          # (k, P)
        return idx, scores[0].gather(0, idx)


class SparseDecoder(nn.Module):
    """idx, val (k, positions) -> y (steps, channels): the sum of the winning atoms, read out."""

    def __init__(self, atoms: AtomStore, codec: Codec, feel_prior: torch.Tensor | None = None):
        super().__init__()
        self.roles = channel_roles(codec)
        self.atoms = atoms
        self.feel = codec.spec.drum_feel
        # (C,) each channel's mean feel, read out where atoms barely sound (see pursuit.read_out)
        self.register_buffer("feel_prior", None if feel_prior is None else feel_prior.detach().float().clone())

    def forward(self, idx: torch.Tensor, val: torch.Tensor):
        if self.feel:                                               # entries carry feel levels
            return decode_feel(idx, val, self.atoms(), self.feel_prior, WEAK_HIT)
        y = sparse_decode(idx, val, self.atoms())                   # (T, C)
        return read_out(y, self.roles, self.feel_prior, channel_axis=1)


def check_exportable(model, codec: Codec) -> None:
    """The preset graphs tile time with the atoms: hop == atom length, channels match the codec."""
    cfg = model.cfg
    if cfg.hop != cfg.atom_length:
        raise ValueError(f"atoms overlap (hop {cfg.hop} < length {cfg.atom_length}): the sparse "
                         "decoder needs tiling atoms (hop == atom_length)")
    if cfg.channels != codec.channels:
        raise ValueError(f"model has {cfg.channels} channels, codec {codec.name} has {codec.channels}")


ENCODERS = ("pursuit", "kwta")


def build_modules(model, codec: Codec, atom_dtype: str = "float32", encoder: str = "pursuit"):
    """(encoder, SparseDecoder) for a trained ``TCNkWTA``, sharing one stored dictionary.

    ``encoder``: "pursuit" (winners refined by pursuit over the atoms: best reconstruction) or
    "kwta" (the TCN's own k-WTA: a few convolutions, for tight live budgets).
    """
    check_exportable(model, codec)
    if encoder not in ENCODERS:
        raise ValueError(f"encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}")
    store = AtomStore.of(model.atoms, atom_dtype)
    enc = (PursuitEncoder(store, codec, model.cfg.k_max) if encoder == "pursuit"
           else KwtaEncoder(model, codec, atom_dtype)).eval()
    dec = SparseDecoder(store, codec, getattr(model, "feel_prior", None)).eval()
    return enc, dec


def stored_bytes(n_atoms: int, atom_length: int, codec: Codec, dtype: str) -> int:
    """Bytes the atoms take in encoder.onnx + decoder.onnx (without the graphs themselves)."""
    per_value = {"float32": 4, "float16": 2, "int8": 1}[dtype]
    rows = len(channel_roles(codec).classify) + codec.channels + (codec.n_voices if codec.spec.drum_feel else 0)
    scales = 2 * 4 * n_atoms if dtype == "int8" else 0
    return n_atoms * atom_length * rows * per_value + scales


def export_encoder(enc: PursuitEncoder, path) -> Path:
    L = enc.length
    x = torch.zeros(3 * L, enc.channels)             # example only; 3 positions avoids 0/1 specialising
    k = torch.tensor(min(2, enc.k_max), dtype=torch.long)
    positions = torch.export.Dim("positions", min=1, max=MAX_POSITIONS)
    _export(enc, (x, k), path, ["x", "k"], ["idx", "val"],
            {"x": {0: L * positions}, "k": None},
            {"x": ["steps", "channels"], "idx": ["k", "positions"], "val": ["k", "positions"]})
    return Path(path)


def export_decoder(dec: SparseDecoder, path) -> Path:
    idx = torch.zeros(3, 5, dtype=torch.long)
    val = torch.zeros(3, 5)
    k = torch.export.Dim("k", min=1, max=MAX_K_DECODE)
    positions = torch.export.Dim("positions", min=1, max=MAX_POSITIONS)
    _export(dec, (idx, val), path, ["idx", "val"], ["y"],
            {"idx": {0: k, 1: positions}, "val": {0: k, 1: positions}},
            {"idx": ["k", "positions"], "val": ["k", "positions"], "y": ["steps", "channels"]})
    return Path(path)


def _export(module, args, path, input_names, output_names, dynamic_shapes, dim_names) -> None:
    """torch.onnx.export (dynamo, one self-contained file), our own clean-up, then a check."""
    import onnx

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_logs():
        warnings.simplefilter("ignore")
        # optimize=False: the exporter's default rewrites treat constants within 1e-8 of zero as zero
        # (onnxscript's pattern match uses abs_tol=1e-8), which deletes pursuit's ``+ 1e-8`` guards
        # and turns silent positions into 0/0. ``_clean_up`` folds constants without those rewrites.
        prog = torch.onnx.export(module, args, None, dynamo=True, external_data=False,
                                 opset_version=OPSET, input_names=input_names,
                                 output_names=output_names, dynamic_shapes=dynamic_shapes,
                                 optimize=False, verbose=False)
        proto = _clean_up(prog.model)
    for value in list(proto.graph.input) + list(proto.graph.output):
        for dim, name in zip(value.type.tensor_type.shape.dim, dim_names.get(value.name, ())):
            if not dim.HasField("dim_value"):          # keep static sizes (channels)
                dim.dim_param = name
    proto.producer_name = "sidl"
    onnx.checker.check_model(proto)
    onnx.save(proto, os.fspath(path))


def _clean_up(model):
    """Constant folding and dead-code removal only (no pattern rewrites); debug metadata dropped."""
    import onnx_ir as ir
    from onnx_ir.passes import common
    from onnxscript.optimizer import fold_constants

    for _ in range(2):   # small limits: fold shape arithmetic, never copies of the atoms in float32
        fold_constants(model, input_size_limit=FOLD_LIMIT, output_size_limit=FOLD_LIMIT)
        common.RemoveUnusedNodesPass()(model)
    ir.passes.Sequential(
        common.IdentityEliminationPass(),
        common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        common.DeduplicateInitializersPass(),
        common.CommonSubexpressionEliminationPass(),
        common.RemoveUnusedNodesPass(),
        common.RemoveUnusedOpsetsPass(),
        common.ClearMetadataAndDocStringPass(),   # stack traces and fx names: most of the bytes
    )(model)
    proto = ir.serde.serialize_model(model)
    del proto.graph.value_info[:]
    del proto.metadata_props[:]
    _short_names(proto.graph)
    return proto


def _short_names(graph) -> None:
    """Drop node names (optional) and give intermediate values short ones: the exporter's took
    about 15 kB of a drum preset's pursuit graph. Inputs, outputs and initializers keep theirs."""
    import onnx
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        return                                     # subgraphs may refer to outer names: leave as is
    keep = {v.name for v in list(graph.input) + list(graph.output)} | {i.name for i in graph.initializer}
    short: dict = {}
    for node in graph.node:
        node.name = ""
        for i, name in enumerate(node.output):
            if name and name not in keep:
                short[name] = f"t{len(short):x}"
                node.output[i] = short[name]
        for i, name in enumerate(node.input):
            node.input[i] = short.get(name, name)


@contextlib.contextmanager
def _quiet_logs():
    """The exporter logs a line per optional op library it does not find (torchvision...)."""
    import logging
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def export_onnx(model, codec: Codec, out_dir, atom_dtype: str = "float32", encoder: str = "pursuit"):
    """Write encoder.onnx and decoder.onnx into ``out_dir``; returns the torch reference modules."""
    out_dir = Path(out_dir)
    enc, dec = build_modules(model, codec, atom_dtype, encoder)
    export_encoder(enc, out_dir / "encoder.onnx")
    export_decoder(dec, out_dir / "decoder.onnx")
    return enc, dec


def check_parity(enc, dec: SparseDecoder, folder, windows) -> dict:
    """onnxruntime vs the torch reference on real windows, every k: the numbers a preset records."""
    import numpy as np
    import onnxruntime as ort

    folder = Path(folder)
    from sidl.realtime.preset.model import session_options
    s_enc, s_dec = (ort.InferenceSession(str(folder / f), session_options(), providers=["CPUExecutionProvider"])
                    for f in ("encoder.onnx", "decoder.onnx"))
    worst_val = worst_y = 0.0
    same = total = 0
    with torch.no_grad():
        for x in windows:
            x = np.ascontiguousarray(x, np.float32)
            for k in range(1, enc.k_max + 1):
                t_idx, t_val = enc(torch.from_numpy(x), torch.tensor(k))
                t_y = dec(t_idx, t_val).numpy()
                o_idx, o_val = s_enc.run(None, {"x": x, "k": np.array(k, np.int64)})
                (o_y,) = s_dec.run(None, {"idx": o_idx, "val": o_val})
                same += int((o_idx == t_idx.numpy()).sum())
                total += o_idx.size
                worst_val = max(worst_val, float(np.abs(o_val - t_val.numpy()).max()))
                worst_y = max(worst_y, float(np.abs(o_y - t_y).max()))
    return {"windows": len(windows), "steps": int(sum(len(x) for x in windows)),
            "k": [1, enc.k_max], "idx_equal": round(same / max(1, total), 6),
            "max_abs_val": worst_val, "max_abs_decoded": worst_y}
