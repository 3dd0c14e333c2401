"""Export a piano-shapes run (`sidl train ... --transpose`) as a preset (schema 2).

    encoder.onnx   x (steps, 264) float32, k () int64 -> idx, val (k, beats)   greedy pursuit
    decoder.onnx   idx, val (k, beats) -> y (steps, 264) float32               sparse: gathers k entries
    prior.npz      usage (shapes, beats per bar), scale, next_atom / next_p    counted on one-entry codes

Both graphs are traces of ``sidl.training.shape_pursuit``; export checks them against torch on
real corpus windows at every k and refuses a preset whose graphs disagree.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from sidl.realtime.codec.spec import PIANO_GRID, Codec
from sidl.realtime.preset.format import SHAPES_KIND, SHAPES_SCHEMA_VERSION, check_name
from sidl.realtime.preset.store import folder_bytes, replace_folder
from sidl.training.checkpoint import sidl_version
from sidl.training.corpora import load_corpus
from sidl.training.shape_pursuit import K, ShapeDecoder, ShapeEncoder, ShapeTables
from sidl.training.shape_train import load_shapes

from sidl.export import atoms as atom_media
from sidl.export.onnx import MAX_K_DECODE, MAX_POSITIONS, _export
from sidl.export.preset import ARCHIVE_SUFFIX, PRESET_FILES, read_metrics, sha256_of, write_archive

PARITY_WINDOWS = 24          # real 4-bar windows the export compares onnxruntime with torch on
PRIOR_PIECES = 200           # training pieces the meter prior is counted on
TOP_NEXT = 16                # successors kept per shape in the prior


def build_modules(d, k_max: int):
    tables = ShapeTables.of(d)
    return ShapeEncoder(tables, k_max).eval(), ShapeDecoder(tables).eval()


def export_graphs(enc: ShapeEncoder, dec: ShapeDecoder, folder: Path) -> None:
    L = enc.tables.L
    beats = torch.export.Dim("positions", min=1, max=MAX_POSITIONS)
    _export(enc, (torch.zeros(3 * L, 3 * K), torch.tensor(2)), folder / "encoder.onnx", ["x", "k"],
            ["idx", "val"], {"x": {0: L * beats}, "k": None},
            {"x": ["steps", "channels"], "idx": ["k", "positions"], "val": ["k", "positions"]})
    k = torch.export.Dim("k", min=1, max=MAX_K_DECODE)
    beats = torch.export.Dim("positions", min=1, max=MAX_POSITIONS)
    _export(dec, (torch.zeros(3, 5, dtype=torch.long), torch.zeros(3, 5)), folder / "decoder.onnx",
            ["idx", "val"], ["y"], {"idx": {0: k, 1: beats}, "val": {0: k, 1: beats}},
            {"idx": ["k", "positions"], "val": ["k", "positions"], "y": ["steps", "channels"]})


def check_parity(enc, dec, folder: Path, windows) -> dict:
    """onnxruntime against torch on real windows at every k: indices equal, largest differences."""
    import onnxruntime as ort
    from sidl.realtime.preset.model import session_options
    s_enc, s_dec = (ort.InferenceSession(str(folder / f), session_options(), providers=["CPUExecutionProvider"])
                    for f in ("encoder.onnx", "decoder.onnx"))
    same = total = 0
    worst_val = worst_y = 0.0
    with torch.no_grad():
        for x in windows:
            for k in range(1, enc.k_max + 1):
                ti, tv = enc(torch.from_numpy(x), torch.tensor(k))
                ty = dec(ti, tv).numpy()
                oi, ov = s_enc.run(None, {"x": x, "k": np.array(k, np.int64)})
                (oy,) = s_dec.run(None, {"idx": oi, "val": ov})
                same += int((oi == ti.numpy()).sum())
                total += oi.size
                worst_val = max(worst_val, float(np.abs(ov - tv.numpy()).max()))
                worst_y = max(worst_y, float(np.abs(oy - ty).max()))
    return {"windows": len(windows), "k": [1, enc.k_max], "idx_equal": round(same / max(1, total), 6),
            "max_abs_val": worst_val, "max_abs_decoded": worst_y}


def shape_prior(enc: ShapeEncoder, pieces, beats_per_bar: int) -> dict:
    """prior.npz arrays from one-entry codes (k = 1): where in the bar each shape plays, its typical
    amplitude, and which shape tends to follow it."""
    A, L = enc.tables.A, enc.tables.L
    places = A * L * K
    usage = np.zeros((A, beats_per_bar))
    amp, n = np.zeros(A), np.zeros(A)
    key, length = np.zeros(A), np.zeros(A)
    follow = np.zeros((A, A))
    with torch.no_grad():
        for p in pieces:
            x = np.ascontiguousarray(p.x[: len(p.x) // L * L], np.float32)
            if not len(x):
                continue
            idx, val = (t.numpy()[0] for t in enc(torch.from_numpy(x), torch.tensor(1)))
            on = val > 0
            a = (idx % places) // (L * K)
            beat = np.arange(len(a)) % beats_per_bar
            np.add.at(usage, (a[on], beat[on]), 1)
            np.add.at(amp, a[on], val[on])
            np.add.at(n, a[on], 1)
            np.add.at(key, a[on], (idx % K)[on])
            np.add.at(length, a[on], (idx // places)[on])
            both = on[:-1] & on[1:]
            np.add.at(follow, (a[:-1][both], a[1:][both]), 1)
    nxt = np.argsort(-follow, axis=1, kind="stable")[:, :TOP_NEXT]
    p_next = np.take_along_axis(follow, nxt, 1) / np.maximum(1, follow.sum(1, keepdims=True))
    tb = enc.tables
    # each shape at its typical key and length, ending inside its beat, so a beat of such codes
    # decodes on its own (what generate stitches; idx < A in a code means this placement)
    t = np.clip(np.rint(np.where(n > 0, key / np.maximum(1, n), 39)), 0, K - tb.span.numpy()).astype(np.int64)
    want = np.clip(np.rint(np.where(n > 0, length / np.maximum(1, n), 1)), 1, L).astype(np.int64)
    ln = np.ones(A, np.int64)
    cs, ratio, m = tb.cs.numpy(), tb.len_ratio.numpy(), tb.cm.numpy() > 0
    for a in range(A):
        for cand in range(int(want[a]), 1, -1):       # the longest typical length that ends in the beat
            if np.all(~m[a] | (cs[a] + np.maximum(1, np.rint(cand * ratio[a])) <= L)):
                ln[a] = cand
                break
    typical = np.arange(A) * L * K + t + places * ln
    return {"usage": (usage / max(1, usage.sum())).astype(np.float16), "typical_code": typical,
            "scale": np.where(n > 0, amp / np.maximum(1, n), 0.5).astype(np.float16),
            "next_atom": nxt.astype(np.int16), "next_p": p_next.astype(np.float16)}


def export_shape_preset(run_dir, name: str, out_dir, description: str = "", archive: bool = False,
                        k_live: int | None = None, log=None) -> Path:
    check_name(name)
    say = log or (lambda msg: None)
    d, info = load_shapes(run_dir)
    codec = Codec.from_dict(info["codec"])
    k_max = int(info["model"]["k_max"])
    k_live = k_max if k_live is None else int(k_live)
    if not 1 <= k_live <= k_max:
        raise ValueError(f"k_live must be in 1..{k_max}, got {k_live}")
    metrics = read_metrics(run_dir)
    corpus = info.get("corpus", {})
    pieces, _ = load_corpus(corpus.get("name", ""), codec, "train")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        t0 = time.perf_counter()
        enc, dec = build_modules(d, k_max)
        export_graphs(enc, dec, tmp)
        say(f"encoder.onnx (shape pursuit), decoder.onnx in {time.perf_counter() - t0:.1f} s")
        rng = np.random.default_rng(0)
        chosen = [pieces[i] for i in rng.permutation(len(pieces))[:PRIOR_PIECES]]
        prior = shape_prior(enc, chosen, codec.beats_per_bar)
        np.savez_compressed(tmp / "prior.npz", **prior)
        windows = []
        for i in rng.permutation(len(pieces))[:PARITY_WINDOWS]:
            x = pieces[i].x
            s = int(rng.integers(0, max(1, len(x) - 4 * codec.steps_per_bar)))
            w = x[s: s + 4 * codec.steps_per_bar]
            windows.append(np.ascontiguousarray(w[: len(w) // d.steps_per_beat * d.steps_per_beat], np.float32))
        parity = check_parity(enc, dec, tmp, [w for w in windows if len(w)])
        say(f"onnxruntime vs torch on {parity['windows']} windows, k 1..{k_max}: indices equal "
            f"{parity['idx_equal']:.2%}, max |diff| {max(parity['max_abs_val'], parity['max_abs_decoded']):.1e}")
        if parity["idx_equal"] < 1.0 or max(parity["max_abs_val"], parity["max_abs_decoded"]) > 1e-5:
            raise ValueError(f"export refused: onnxruntime and torch disagree ({parity})")
        with torch.no_grad():
            decoded = shape_clips(d, dec, prior["scale"].astype(np.float32))
        order = atom_media.usage_order(prior["usage"].astype(np.float32))
        atom_media.write_atoms_midi(tmp / "atoms.mid", codec, decoded, order)
        atom_media.write_atoms_png(tmp / "atoms.png", codec, decoded, order)
        manifest = {
            "schema_version": SHAPES_SCHEMA_VERSION, "name": name, "description": description,
            "codec": codec.to_dict(), "codec_description": codec.describe(),
            "atoms": {"count": d.n_shapes, "length": d.steps_per_beat, "hop": d.steps_per_beat,
                      "kind": SHAPES_KIND, "transpositions": K, "span": int(info["model"].get("span", 0)),
                      "storage": "int64 cell tables"},
            "k_max": k_max, "k_live": k_live, "encoder": "shape pursuit",
            "meter_prior": {"steps_per_beat": codec.steps_per_beat, "beats_per_bar": codec.beats_per_bar,
                            "beat_unit": codec.beat_unit, "positions_per_bar": codec.beats_per_bar,
                            "counted_on": {"pieces": len(chosen), "k": 1, "split": corpus.get("split")}},
            "corpus": {"name": corpus.get("name"), "license": corpus.get("license"), "split": corpus.get("split")},
            "model": info["model"], "metrics": metrics, "sidl_version": sidl_version(),
            "trained_with": info.get("sidl_version"),
            "export_check": {"onnxruntime_vs_torch": parity},
            "files": {f: {"sha256": sha256_of(tmp / f), "bytes": (tmp / f).stat().st_size} for f in PRESET_FILES},
        }
        (tmp / "preset.json").write_text(json.dumps(manifest, indent=2) + "\n")
        say(f"{folder_bytes(tmp) / 1000:.1f} kB on disk")
        target = out_dir / name
        replace_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if archive:
        write_archive(target, out_dir / f"{name}{ARCHIVE_SUFFIX}")
    return target


def shape_clips(d, dec: ShapeDecoder, scale: np.ndarray) -> np.ndarray:
    """Each shape alone, its lowest key on middle C's octave (C3), one-step notes: (A, L, 264)."""
    A, L = d.n_shapes, d.steps_per_beat
    t = 39                                   # key index of C4 (MIDI 60)
    places = A * L * K
    idx = torch.tensor([[a * L * K + t + places] for a in range(A)]).T       # (1, A): one beat each
    val = torch.from_numpy(np.clip(scale, 0.3, 1.0)[None].astype(np.float32))
    return dec(idx, val).numpy().reshape(A, L, -1)
