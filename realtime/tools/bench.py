"""Measure every file tool on the shipped presets' test splits: the tables of docs/tools-results.md.

    python -m sidl.realtime.tools.bench [--pieces N] [--json] [--markdown docs/tools-results.md]
    sidl tools-report ...                       (the same)

Reads the MIDI files of ../shared/data (GMD test split from groove/info.csv, POP909 test split by song
number) through the tools' own reader, so what is measured is what the commands do. Not a runtime
module: it imports sidl.training (the splits, the training split's velocities for the constant guess).
"""
from __future__ import annotations

import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..codec.convert import encode_notes, encode_steps
from ..codec.drums import N_CLASSES, CLASS_NAMES
from ..codec.midifile import MidiFileError
from ..codec.notes import NoteArray
from ..controls import Controls
from . import code, create, metrics as M, ops, transforms as T
from .clip import read_clip

SEED = 0
GEN_BARS_PER_SEED, GEN_SEEDS = 32, 16


def data_root() -> Path:
    from sidl.training.corpus import data_root as root
    return Path(root())


def gmd_test_files(limit: int = 0) -> list[Path]:
    root = data_root() / "groove"
    with open(root / "info.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    files = [root / r["midi_filename"] for r in rows]
    return files[:limit] if limit else files


def pop909_test_files(limit: int = 0) -> list[Path]:
    from sidl.training.pop909 import pop909_files
    root = data_root() / "pop909"
    files = [root / rel for rel, _ in pop909_files(root, "test")[0]]
    return files[:limit] if limit else files


def pop909_test_parts(preset, limit: int = 0):
    """POP909 test songs on their annotated beat grid: the raw files' notes are not on their tick grid
    (they were played to audio), so, as the corpus does, the first annotated downbeat becomes beat 0
    and the annotated bar length gives the meter. A DAW clip is on its grid already."""
    import dataclasses
    from sidl.training.alignment import DownbeatShifts
    from sidl.training.pop909 import pop909_files
    root = data_root() / "pop909"
    files, downbeat_s, meters = pop909_files(root, "test")
    files = files[:limit] if limit else files
    shifts = DownbeatShifts(root, downbeat_s)
    out, skipped = [], 0
    for rel, _ in files:
        try:
            clip = read_clip(root / rel, preset.codec)
        except MidiFileError:
            skipped += 1
            continue
        shift = shifts[rel]
        notes = clip.notes.scaled(1.0, -shift)
        keep = notes.start >= 0
        clip = dataclasses.replace(clip, notes=notes.select(keep), channel=clip.channel[keep],
                                   time_signatures=((0.0, *meters[rel]),))
        out.append((clip, code.clip_grid(preset, clip)))
    return out, skipped


def read_parts(preset, files):
    """(clip, grid) of each file that has a part for the preset (others skipped, counted)."""
    out, skipped = [], 0
    for f in files:
        try:
            clip = read_clip(f, preset.codec)
        except MidiFileError:
            skipped += 1
            continue
        out.append((clip, code.clip_grid(preset, clip)))
    return out, skipped


def _scores(total: dict, preset) -> dict:
    return M.scores_from_counts(total, preset.codec.spec.drum_feel)


def bench_reconstruct(preset, parts) -> dict:
    total = {}
    for clip, x in parts:
        y, _, _ = T.reconstruct(preset, x)
        M.add_counts(total, M.hit_counts(x, encode_notes(preset.codec, code.grid_notes(preset, y), len(x)), preset.codec.n_voices))
    return {"files": len(parts), "k": preset.k} | _scores(total, preset)


def bench_simplify(preset, parts, keeps=(1, 2, 4, 8, 12, 16)) -> list[dict]:
    rows = []
    for per in ("bar", "beat"):
        for keep in keeps if per == "bar" else (1, 2, 3, 4):
            total, notes_in, notes_out = {}, 0, 0
            for clip, x in parts:
                group = ops._groups(preset, clip, len(x) // preset.stride, per)
                y, _, _ = T.simplify(preset, x, keep, group)
                notes = code.grid_notes(preset, y)
                notes_in += int((x[:, :preset.codec.n_voices] > 0.5).sum())
                notes_out += len(notes)
                M.add_counts(total, M.hit_counts(x, encode_notes(preset.codec, notes, len(x)), preset.codec.n_voices))
            rows.append({"per": per, "keep": keep, "notes_kept": round(notes_out / max(1, notes_in), 3)} | _scores(total, preset))
    return rows


def corrupt(kind: str, notes: NoteArray, n_steps: int, steps_per_second: float, rng, drums: bool) -> NoteArray:
    """10% extra random notes, 10% dropped, or +-20 ms jitter (notes in steps)."""
    if kind == "clean":
        return notes
    if kind == "dropped":
        return notes.select(rng.random(len(notes)) >= 0.10)
    if kind == "jitter":
        d = rng.uniform(-0.020, 0.020, len(notes)) * steps_per_second
        return NoteArray(notes.start + d, notes.end + d, notes.pitch, notes.velocity)
    m = max(1, len(notes) // 10)
    start = rng.uniform(0, n_steps - 1, m)
    pitch = rng.choice([c for c in (36, 38, 42, 46, 43, 47, 50, 49, 51)], m) if drums else rng.integers(21, 109, m)
    return NoteArray(np.concatenate([notes.start, start]), np.concatenate([notes.end, start + 0.5]),
                     np.concatenate([notes.pitch, pitch]).astype(np.int16),
                     np.concatenate([notes.velocity, rng.integers(20, 128, m)]).astype(np.int16))


def bench_clean(preset, parts) -> list[dict]:
    rng = np.random.default_rng(SEED)
    typ = T.voice_typicality(preset)
    spb, n = preset.codec.steps_per_beat, preset.codec.n_voices
    rows = []
    for kind in ("clean", "extra", "dropped", "jitter"):
        before, after = {}, {}
        for clip, x in parts:
            notes = clip.notes.scaled(spb)
            bad = corrupt(kind, notes, len(x), clip.bpm / 60 * spb, rng, preset.codec.spec.drum_feel)
            M.add_counts(before, M.hit_counts(x, encode_steps(preset.codec, bad, len(x)), n))
            out, _ = T.clean(preset, bad, len(x), typicality=typ)
            M.add_counts(after, M.hit_counts(x, encode_steps(preset.codec, out, len(x)), n))
        b, a = _scores(before, preset), _scores(after, preset)
        rows.append({"corruption": "none" if kind == "clean" else kind, "f1_corrupted": b["f1"], "f1_cleaned": a["f1"],
                     "change": round(a["f1"] - b["f1"], 4), "precision_cleaned": a["precision"], "recall_cleaned": a["recall"]})
    return rows


def bench_compress(preset, parts) -> dict:
    from . import sidlz
    bars = bits = midi_bits = gzip_bits = 0
    total = {}
    import gzip
    for clip, x in parts:
        idx, val = code.encode(preset, x)
        tempos, meters, tpb = ops._ticks(clip)
        data = sidlz.pack(preset, idx, val, tempos, meters, tpb, 9)
        back = sidlz.unpack(data, preset)
        notes = code.grid_notes(preset, code.decode(preset, back["idx"], back["val"]))
        M.add_counts(total, M.hit_counts(x, encode_notes(preset.codec, notes, len(x)), preset.codec.n_voices))
        raw = Path(clip.path).read_bytes()
        b = max(1, len(x) // preset.codec.with_meter(*clip.meter).steps_per_bar)
        bars += b
        bits += 8 * len(data)
        midi_bits += 8 * len(raw)
        gzip_bits += 8 * len(gzip.compress(raw, 9, mtime=0))
    s = _scores(total, preset)
    return {"files": len(parts), "bars": bars, "sidlz_bits_per_bar": round(bits / bars, 1),
            "midi_bits_per_bar": round(midi_bits / bars, 1), "gzip_midi_bits_per_bar": round(gzip_bits / bars, 1),
            "round_trip_f1": s["f1"], "round_trip_precision": s["precision"], "round_trip_recall": s["recall"]}


def train_class_velocity() -> np.ndarray:
    """(9,) mean velocity / 127 of each drum class over the GMD training split (the constant guess)."""
    from sidl.realtime.codec.spec import DRUMS
    from sidl.training.corpora import load_corpus
    pieces, _ = load_corpus("groove", DRUMS, "train")
    tr = np.concatenate([p.x for p in pieces])
    hits = tr[:, :N_CLASSES] > 0.5
    return np.array([tr[:, N_CLASSES + c][hits[:, c]].mean() for c in range(N_CLASSES)], np.float32)


def bench_humanize(preset, parts, flat_velocity: int = 100) -> list[dict]:
    mean_vel = train_class_velocity()
    rows = {"nothing (quantized, velocity 100)": {}, "constant guess (class mean velocity, zero offset)": {},
            "humanize": {}}
    spb = preset.codec.steps_per_beat
    for clip, x in parts:
        notes = clip.notes.scaled(spb)
        q = np.floor(notes.start + 0.5)
        flat = NoteArray(q, q + 0.5, notes.pitch, np.full(len(notes), flat_velocity, np.int16))
        xf = encode_steps(preset.codec, flat, len(x))
        guess = xf.copy()
        hits = xf[:, :N_CLASSES] > 0.5
        guess[:, N_CLASSES:2 * N_CLASSES] = np.where(hits, mean_vel, 0.0)
        h = T.humanize(preset, flat, len(x))
        for name, y in zip(rows, (xf, guess, encode_steps(preset.codec, h, len(x)))):
            M.add_counts(rows[name], M.hit_counts(x, y, N_CLASSES))
    return [{"method": name} | {k: v for k, v in _scores(c, preset).items() if k in ("velocity_mae", "offset_mae", "f1")}
            for name, c in rows.items()]


def bench_drumify(preset, parts) -> list[dict]:
    drum, single = {}, [dict() for _ in range(N_CLASSES)]
    for clip, x in parts:
        taps = (x[:, :N_CLASSES] > 0.5).any(axis=1)
        phase = code.position_in_bar(preset, clip, len(x) // preset.stride)
        y, _, _ = T.drumify(preset, taps, create.file_usage(preset, phase))
        M.add_counts(drum, M.hit_counts(x, y, N_CLASSES))
        for c in range(N_CLASSES):
            b = np.zeros_like(x)
            b[taps, c] = 1.0
            M.add_counts(single[c], M.hit_counts(x, b, N_CLASSES))
    rows = [{"method": "drumify"} | _hit_only(_scores(drum, preset))]
    base = [(_scores(single[c], preset), CLASS_NAMES[c]) for c in range(N_CLASSES)]
    best, name = max(base, key=lambda b: b[0]["f1"])
    rows.append({"method": f"every tap as one drum (best class: {name})"} | _hit_only(best))
    return rows


def _hit_only(s: dict) -> dict:
    return {k: s[k] for k in ("f1", "precision", "recall")}


def bench_generate(preset, parts) -> list[dict]:
    """Per-bar features of real test bars, generated bars and random-atom bars; means and Yang & Lerch OA."""
    steps_bar = preset.codec.steps_per_bar
    spb = preset.codec.steps_per_beat
    real = np.concatenate([M.onset_patterns(x, N_CLASSES, steps_bar) for clip, x in parts if clip.meter == (4, 4)])
    gen, rnd = [], []
    rng = np.random.default_rng(SEED)
    positions = steps_bar // preset.stride
    for seed in range(GEN_SEEDS):
        notes = create.generate(preset, GEN_BARS_PER_SEED, (4, 4), Controls(seed=seed))
        gen.append(M.onset_patterns(encode_steps(preset.codec, notes, GEN_BARS_PER_SEED * steps_bar), N_CLASSES, steps_bar))
        idx = rng.integers(0, preset.n_atoms, (GEN_BARS_PER_SEED * positions, 1))
        y = code.decode(preset, idx, preset.atom_scale[idx].astype(np.float32))
        rnd.append(M.onset_patterns(y, N_CLASSES, steps_bar))
    gen, rnd = np.concatenate(gen), np.concatenate(rnd)
    fr, fg, fx = (M.bar_features(h, spb, CLASS_NAMES) for h in (real, gen, rnd))
    return [{"feature": name, "real_mean": round(float(fr[name].mean()), 3), "generated_mean": round(float(fg[name].mean()), 3),
             "random_atoms_mean": round(float(fx[name].mean()), 3),
             "oa_generated": round(M.yang_lerch_oa(fr[name], fg[name]), 3),
             "oa_random_atoms": round(M.yang_lerch_oa(fr[name], fx[name]), 3)} for name in fr] + \
        [{"feature": "bars", "real_mean": len(real), "generated_mean": len(gen), "random_atoms_mean": len(rnd),
          "oa_generated": None, "oa_random_atoms": None}]


def four_minute_file(clip, folder: Path, name: str, seconds: float = 240.0) -> Path:
    """``clip``'s part (and tempo) repeated bar-aligned to ``seconds``, written as a MIDI file."""
    from ..codec.midifile import midi_from_notes, save_midi_atomic
    beats_per_bar = clip.meter[0] * 4 / clip.meter[1]
    span = max(beats_per_bar, np.ceil((clip.notes.start.max() + 1e-6) / beats_per_bar) * beats_per_bar)
    total = seconds * clip.bpm / 60
    reps = int(np.ceil(total / span))
    parts = [clip.notes.scaled(1.0, r * span) for r in range(reps)]
    notes = create.concat(parts).select(create.concat(parts).start < total)
    path = folder / name
    save_midi_atomic(midi_from_notes(notes, clip.bpm, clip.meter, channel=int(clip.channel[0])), path)
    return path


def bench_runtime(presets: dict, parts: dict) -> list[dict]:
    """Seconds per command on a 4-minute song (preset loaded, imports done; median of 3)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for key, preset in presets.items():
            clip = max(parts[key], key=lambda p: len(p[0].notes))[0]
            song = four_minute_file(clip, tmp, f"{key}.mid")
            job = ops.Job(preset=preset.name, options={"keep": 8, "per": "bar", "pull": 0.0, "n": 1,
                                                        "variation": 0.3, "seed": 0, "bars": 4, "steps": 3})
            job._loaded[preset.name] = preset
            data = ops.op_compress(job, song)[0][0][1]
            sz = tmp / f"{key}.sidlz"
            sz.write_bytes(data)
            bars = int(240 * clip.bpm / 60 / 4)
            gen_job = ops.Job(preset=preset.name, options={"bars": bars, "meter": (4, 4), "bpm": clip.bpm,
                                                            "density": 1.0, "variation": 0.2, "seed": 0, "fill_every": 0})
            gen_job._loaded[preset.name] = preset
            calls = {"reconstruct": lambda: ops.op_reconstruct(job, song), "simplify": lambda: ops.op_simplify(job, song),
                     "clean": lambda: ops.op_clean(job, song), "compress": lambda: ops.op_compress(job, song),
                     "decompress": lambda: ops.op_decompress(job, sz), "humanize": lambda: ops.op_humanize(job, song),
                     "vary (n 1)": lambda: ops.op_vary(job, song), "continue (4 bars)": lambda: ops.op_continue(job, song),
                     "interpolate (3 steps)": lambda: ops.op_interpolate(job, song, song),
                     "generate (4 minutes)": lambda: ops.op_generate(gen_job, "drums" if preset.codec.spec.drum_feel else "piano")}
            if preset.codec.spec.drum_feel:
                calls["drumify"] = lambda: ops.op_drumify(job, song)
            from .cli import write_output
            for name, call in calls.items():
                wall, cpu = [], []
                for _ in range(3):
                    t0, c0 = time.perf_counter(), time.process_time()
                    outputs, _ = call()
                    for i, (_, d) in enumerate(outputs):
                        write_output(tmp / f"out{i}.bin", d, None, True)
                    wall.append(time.perf_counter() - t0)
                    cpu.append(time.process_time() - c0)
                # CPU seconds are the command's own cost; wall seconds add the wait for a core on a
                # shared machine (see the load average)
                rows.append({"preset": preset.name, "command": name, "cpu_seconds": round(float(np.median(cpu)), 3),
                             "wall_seconds": round(float(np.median(wall)), 3),
                             "song_notes": len(read_clip(song, preset.codec).notes)})
    return rows


def run(limit: int = 0, log=lambda msg: None) -> dict:
    from ..preset import load_preset
    drums, piano = load_preset(ops.DRUM_PRESET), load_preset(ops.PIANO_PRESET)
    gmd, skipped_g = read_parts(drums, gmd_test_files(limit))
    pop, skipped_p = pop909_test_parts(piano, limit)
    import os
    out = {"files": {"gmd_test": len(gmd), "gmd_skipped": skipped_g, "pop909_test": len(pop), "pop909_skipped": skipped_p},
           "machine": {"cpus": os.cpu_count(), "load_average_1min_at_start": round(os.getloadavg()[0], 2)}}
    steps = [("reconstruct", lambda: [bench_reconstruct(drums, gmd) | {"preset": drums.name},
                                      bench_reconstruct(piano, pop) | {"preset": piano.name}]),
             ("simplify_drums", lambda: bench_simplify(drums, gmd)),
             ("simplify_piano", lambda: bench_simplify(piano, pop, keeps=(1, 2, 4, 8, 16, 32))),
             ("clean_drums", lambda: bench_clean(drums, gmd)),
             ("clean_piano", lambda: bench_clean(piano, pop)),
             ("compress", lambda: [bench_compress(drums, gmd) | {"preset": drums.name},
                                   bench_compress(piano, pop) | {"preset": piano.name}]),
             ("humanize", lambda: bench_humanize(drums, gmd)),
             ("drumify", lambda: bench_drumify(drums, gmd)),
             ("generate", lambda: bench_generate(drums, gmd)),
             ("runtime", lambda: bench_runtime({"drums": drums, "piano": piano}, {"drums": gmd, "piano": pop}))]
    for name, step in steps:
        t0 = time.perf_counter()
        out[name] = step()
        log(f"{name}: {time.perf_counter() - t0:.1f} s")
    out["machine"]["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    return out


def table(rows: list[dict]) -> str:
    """A markdown table of a list of flat dicts."""
    if isinstance(rows, dict):
        rows = [rows]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join("" if r.get(k) is None else str(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def markdown(result: dict) -> str:
    parts = ["# File tools: measured results", "",
             "Made by `python -m sidl.realtime.tools.bench --markdown docs/tools-results.md` (or `sidl tools-report`), "
             "on the GMD test split (groove/info.csv) and the POP909 test split (song number % 20 == 0), "
             "read from ../shared/data through the tools' own MIDI reader (POP909 songs moved onto their "
             "annotated beat grid first, as the corpus does: the raw files are not on their tick grid).", "",
             f"Files: {json.dumps(result['files'])}", "",
             f"Machine: {json.dumps(result['machine'])} (runtime rows are wall-clock seconds on a shared "
             "machine: read them against the load average)", ""]
    for name, rows in result.items():
        if name in ("files", "machine"):
            continue
        parts += [f"## {name}", "", table(rows), ""]
    return "\n".join(parts)


def main(limit: int = 0, as_json: bool = False, markdown_path: Path | None = None) -> int:
    result = run(limit, log=lambda msg: print(msg, file=sys.stderr))
    if as_json:
        print(json.dumps(result, indent=1))
    else:
        print(markdown(result))
    if markdown_path is not None:
        from ..codec.files import atomic_write
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(markdown_path, lambda tmp: tmp.write_text(markdown(result) + "\n", encoding="utf-8"))
    return 0


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description="Measure the file tools on the shipped presets' test splits.")
    ap.add_argument("--pieces", type=int, default=0, help="test files per corpus (0: all)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--markdown", type=Path, default=None)
    a = ap.parse_args()
    sys.exit(main(a.pieces, a.json, a.markdown))
