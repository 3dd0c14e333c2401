"""Export a training run as a preset: the folder the live engine loads, written atomically.

    NAME/
      preset.json    manifest: what the folder holds and how it was made; a sha256 per other file
      encoder.onnx   MIDI-array window -> k winning atoms per code position (``export.onnx``)
      decoder.onnx   sparse code -> MIDI-array window
      prior.npz      meter prior for stitching (``export.prior``)
      atoms.mid      every atom as a short clip, most used first (``export.atoms``)
      atoms.png      a sheet of the atoms as drum grids / piano rolls

Everything is written into a temporary folder beside the target and renamed into place at the end,
so an interrupted export leaves the previous preset (or nothing), never half of one. With
``archive`` the folder is also zipped into ``NAME.sidl`` (one folder ``NAME/`` inside).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from sidl.realtime.codec.spec import Codec
from sidl.realtime.codec.drumfeel import GAIN_LEVELS, TIMING_LEVELS
from sidl.realtime.preset.format import (ARCHIVE_SUFFIX, DRUM_FEEL_KIND, DRUM_FEEL_SCHEMA_VERSION, PRESET_FILES,
                                         SCHEMA_VERSION, check_name)
from sidl.realtime.preset.store import folder_bytes, replace_folder
from sidl.realtime.codec.files import atomic_write, read_json_object
from sidl.training.checkpoint import load_model, sidl_version
from sidl.training.corpora import load_corpus

from sidl.export import atoms as atom_media
from sidl.export.onnx import ATOM_DTYPES, build_modules, check_parity, export_onnx, stored_bytes
from sidl.export.prior import describe_skipped, meter_prior, prior_arrays, sample_windows

# Size targets of shipped presets (bytes on disk) and what the graphs, prior, atoms.mid/png and
# manifest take besides the atoms (measured), so "auto" storage can pick the widest dtype that fits.
SIZE_BUDGET = {"drums": 300_000, "piano-grid": 1_000_000}
OVERHEAD_BYTES = {"drums": 120_000, "piano-grid": 230_000}   # drums: 295.2 kB preset - 180.5 kB of int8 atoms
PARITY_POSITIONS = 256       # code positions of real windows the export checks onnx against torch on
# What an export accepts from that check. Healthy exports agree to ~1e-6. A run that never trained
# has atoms that are still corpus windows, ties in the pursuit break differently in the two graphs,
# and the outputs part ways (max |diff| 0.015 after one step on GMD, 0.55 in the report).
# Indices alone may differ harmlessly: two identical atoms swapped decode to the same bar.
PARITY_MAX_DIFF = 1e-3


def parity_failure(parity: dict) -> str | None:
    """Why onnxruntime and torch disagree too much for a preset to ship, or None when they agree."""
    diff = max(parity["max_abs_val"], parity["max_abs_decoded"])
    if diff <= PARITY_MAX_DIFF:
        return None
    return (f"onnxruntime and torch disagree: max |diff| {diff:.2g} (limit {PARITY_MAX_DIFF:g}), "
            f"indices equal {parity['idx_equal']:.2%}")


def choose_atom_dtype(n_atoms: int, atom_length: int, codec: Codec) -> str:
    """The widest atom storage whose preset fits the codec's size budget (int8 when none does)."""
    budget = SIZE_BUDGET.get(codec.name, 1_000_000)
    for dtype in ATOM_DTYPES:
        if stored_bytes(n_atoms, atom_length, codec, dtype) + OVERHEAD_BYTES.get(codec.name, 230_000) <= budget:
            return dtype
    return "int8"


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export_preset(run_dir, name: str, out_dir, description: str = "", archive: bool = False,
                  k_live: int | None = None, atom_dtype: str = "auto", pieces=None,
                  max_positions: int | None = None, log=None, encoder: str = "pursuit",
                  force: bool = False) -> Path:
    """Write preset ``out_dir/NAME`` (and ``NAME.sidl`` with ``archive``) from the run in ``run_dir``.

    ``pieces`` overrides the corpus the prior is counted on (default: the run's training split).
    An export whose ONNX graphs do not reproduce torch (``parity_failure``) is refused, and
    nothing is written, unless ``force``.
    Returns the preset folder.
    """
    check_name(name)
    from sidl.training.shape_train import is_shape_run
    if is_shape_run(run_dir):          # piano shapes placed at any pitch: their own graphs (schema 2)
        from sidl.export.shapes import export_shape_preset
        return export_shape_preset(run_dir, name, out_dir, description, archive, k_live, log)
    # Everything that can be wrong with the options or the run is checked before the export work
    # (seconds of ONNX export and prior counting), and before anything in out_dir is touched.
    if max_positions is not None and max_positions < 1:
        raise ValueError(f"--prior-positions must be >= 1, got {max_positions}")
    out_dir = Path(out_dir)
    archive_path = out_dir / f"{name}{ARCHIVE_SUFFIX}"
    if archive and archive_path.is_dir():
        raise ValueError(f"{archive_path} is a folder, not an archive path")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} is a file, not a folder to export into")
    say = log or (lambda msg: None)
    metrics = read_metrics(run_dir)
    model, codec, info = load_model(run_dir)
    model.eval()
    cfg = model.cfg
    if not codec.is_grid:
        raise ValueError(f"{codec.name} has no bars: the live engine plays grid codecs only")
    k_live = cfg.k_max if k_live is None else int(k_live)
    if not 1 <= k_live <= cfg.k_max:
        raise ValueError(f"k_live must be in 1..{cfg.k_max}, got {k_live}")
    if atom_dtype == "auto":
        atom_dtype = choose_atom_dtype(cfg.n_atoms, cfg.atom_length, codec)
    t0 = time.perf_counter()
    if pieces is None:             # a run whose corpus is gone fails here, not after the export
        pieces, _ = load_corpus(info.get("corpus", {}).get("name", ""), codec, "train")
    t_corpus = time.perf_counter() - t0
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / name
    tmp = out_dir / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        t0 = time.perf_counter()
        enc, dec = export_onnx(model, codec, tmp, atom_dtype, encoder)
        say(f"encoder.onnx ({encoder}), decoder.onnx ({atom_dtype} atoms) in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter() - t_corpus
        # Counted on one-atom codes: the atom that alone best plays each beat. At k_max the later
        # slots are corrections, and the stitcher would draw them as if they were patterns.
        # Always counted with pursuit (best single-atom fit), whichever encoder the preset plays live.
        prior_enc = enc if encoder == "pursuit" else build_modules(model, codec, atom_dtype)[0]
        prior = meter_prior(prior_enc, codec, pieces, 1, max_positions)
        np.savez_compressed(tmp / "prior.npz", **prior_arrays(prior))
        say(f"prior.npz from {prior.positions} code positions of {prior.pieces} of {len(pieces)} pieces "
            f"in {time.perf_counter() - t0:.1f} s")
        if prior.skipped:
            say(f"prior skipped {describe_skipped(prior.skipped)}")
        parity = check_parity(enc, dec, tmp, sample_windows(pieces, codec, PARITY_POSITIONS,
                                                            cfg.atom_length, seed=1, window_bars=4))
        say(f"onnxruntime vs torch on {parity['windows']} corpus windows, k 1..{cfg.k_max}: "
            f"max |diff| {max(parity['max_abs_val'], parity['max_abs_decoded']):.1e}, "
            f"indices equal {parity['idx_equal']:.2%}")
        failure = parity_failure(parity)
        if failure and not force:
            raise ValueError(f"export refused: {failure} (did the run train? --force exports it anyway)")
        if failure:
            say(f"WARNING: {failure}; exported anyway (--force)")
        with torch.no_grad():
            decoded = atom_media.decoded_atoms(
                lambda i, v: dec(torch.from_numpy(i.T.copy()), torch.from_numpy(v.T.copy())).numpy(),
                prior.scale, cfg.atom_length, codec.n_voices)
        order = atom_media.usage_order(prior.usage)
        atom_media.write_atoms_midi(tmp / "atoms.mid", codec, decoded, order)
        atom_media.write_atoms_png(tmp / "atoms.png", codec, decoded, order, prior.usage)
        manifest = build_manifest(name, description, codec, cfg, k_live, atom_dtype, info, prior,
                                  metrics, tmp)
        manifest["encoder"] = encoder
        manifest["export_check"] = {"onnxruntime_vs_torch": parity}
        (tmp / "preset.json").write_text(json.dumps(manifest, indent=2) + "\n")
        size = folder_bytes(tmp)
        budget = SIZE_BUDGET.get(codec.name)
        say(f"{size / 1000:.1f} kB on disk" + ("" if budget is None or size <= budget else
            f": OVER the {budget / 1000:.0f} kB target of {codec.name} presets (fewer atoms, or --atoms int8)"))
        replace_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if archive:
        write_archive(target, archive_path)
    return target


def read_metrics(run_dir) -> dict:
    """The run's metrics.json ({} when it has none); one that cannot be read is a ValueError naming it."""
    path = Path(run_dir) / "metrics.json"
    if not path.exists():
        return {}
    try:
        return read_json_object(path)
    except ValueError as e:
        raise ValueError(f"{e}: remove it, or rewrite it with `sidl evaluate {run_dir}`") from e


def build_manifest(name, description, codec: Codec, cfg, k_live, atom_dtype, info, prior, metrics,
                   folder: Path) -> dict:
    corpus = info.get("corpus", {})
    feel = codec.spec.drum_feel          # entries carry their feel levels (sidl.training.drum_feel)
    atoms = {"count": cfg.n_atoms, "length": cfg.atom_length, "hop": cfg.hop, "storage": atom_dtype}
    if feel:
        atoms.update(kind=DRUM_FEEL_KIND, gain_levels=GAIN_LEVELS, timing_levels=TIMING_LEVELS)
    return {
        "schema_version": DRUM_FEEL_SCHEMA_VERSION if feel else SCHEMA_VERSION,
        "name": name,
        "description": description,
        "codec": codec.to_dict(),
        "codec_description": codec.describe(),
        "atoms": atoms,
        "k_max": cfg.k_max,
        "k_live": k_live,
        "meter_prior": {"steps_per_beat": codec.steps_per_beat, "beats_per_bar": codec.beats_per_bar,
                        "beat_unit": codec.beat_unit,
                        "positions_per_bar": codec.steps_per_bar // cfg.atom_length,
                        "counted_on": {"code_positions": prior.positions, "pieces": prior.pieces,
                                       "k": 1, "split": corpus.get("split"),   # see export_preset
                                       "skipped": prior.skipped}},
        "corpus": {"name": corpus.get("name"), "license": corpus.get("license"),
                   "split": corpus.get("split")},
        "model": cfg.to_dict(),
        "metrics": metrics,
        "sidl_version": sidl_version(),
        "trained_with": info.get("sidl_version"),
        "files": {f: {"sha256": sha256_of(folder / f), "bytes": (folder / f).stat().st_size}
                  for f in PRESET_FILES},
    }


def write_archive(folder, path) -> Path:
    """Zip a preset folder as ``NAME/<file>`` members into ``path`` (atomically)."""
    folder, path = Path(folder), Path(path)

    def write(tmp):
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for f in ("preset.json",) + PRESET_FILES:
                z.write(folder / f, f"{folder.name}/{f}")
    return atomic_write(path, write)
