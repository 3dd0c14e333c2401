"""One file through one tool: read, transform, measure; what to write comes back, nothing is written here.

Each ``op_*`` takes a ``Job`` (the preset chooser and the options shared by all commands) and one
input path, and returns ``(outputs, record)``: ``outputs`` a list of (suffix, MidiFile or bytes) for
the writer to place, ``record`` the per-file JSON object (keys in the README). Errors a user's file
can cause are ``ValueError`` subclasses with one line naming the file.
"""
from __future__ import annotations

import gzip
import io
from dataclasses import dataclass, field

import mido
import numpy as np

from ..codec.convert import encode_notes
from ..codec.midifile import MidiFileError, load_midi
from ..codec.notes import NoteArray
from ..controls import Controls
from . import code, create, metrics, sidlz, transforms
from .clip import Clip, bar_starts, midi_with_maps, read_clip, write_clip

DRUM_PRESET, PIANO_PRESET = "drums-gmd", "piano-pop909"


@dataclass
class Job:
    preset: str | None = None        # -p; None: chosen from what each file holds
    channel: int | None = None       # --channel 1..16
    k: int | None = None             # --k winners per position (default: the preset's live k)
    options: dict = field(default_factory=dict)
    _loaded: dict = field(default_factory=dict)

    def load(self, name: str):
        if name not in self._loaded:
            from ..preset import load_preset
            self._loaded[name] = load_preset(name)
        return self._loaded[name]

    def preset_for(self, mid: mido.MidiFile, default: str | None = None):
        """-p, else ``default``, else drums-gmd for a file with drum notes on channel 10, else the piano preset."""
        if self.preset:
            return self.load(self.preset)
        if default:
            return self.load(default)
        return self.load(DRUM_PRESET if has_drums(mid) else PIANO_PRESET)

    def check_k(self, preset) -> int | None:
        if self.k is not None and not 1 <= self.k <= preset.k_max:
            raise ValueError(f"--k must be in 1..{preset.k_max} for {preset.name}, got {self.k}")
        return self.k


def has_drums(mid: mido.MidiFile) -> bool:
    from ..codec.drums import PITCH_TO_CLASS
    return any(m.type == "note_on" and m.velocity and m.channel == 9 and PITCH_TO_CLASS[m.note] >= 0
               for track in mid.tracks for m in track)


def _part(job: Job, path, taps: bool = False, default: str | None = None):
    mid = load_midi(path)
    preset = job.preset_for(mid, default)
    if taps and not preset.codec.spec.drum_feel:
        raise ValueError(f"drumify needs a drum preset, not {preset.name}")
    clip = read_clip(path, preset.codec, job.channel, taps=taps, mid=mid)
    return preset, clip, code.clip_grid(preset, clip)


def _beats(preset, notes_in_steps: NoteArray) -> NoteArray:
    return notes_in_steps.scaled(1.0 / preset.codec.steps_per_beat)


def _record(path, preset, clip: Clip, notes_out: int) -> dict:
    r = {"file": str(path), "preset": preset.name, "notes_in": len(clip.notes), "notes_out": int(notes_out)}
    if clip.unmapped:
        r["unmapped"] = int(sum(clip.unmapped.values()))
        r["unmapped_drums"] = len(clip.unmapped)
    return r


def _scores(preset, x: np.ndarray, notes_beats: NoteArray) -> dict:
    y = encode_notes(preset.codec, notes_beats, len(x))
    return metrics.hit_scores(x, y, preset.codec.n_voices, preset.codec.spec.drum_feel)


def _groups(preset, clip: Clip, n_positions: int, per: str) -> np.ndarray:
    if per == "bar":
        return code.bar_of_position(preset, clip, n_positions)
    if per == "beat":
        return np.arange(n_positions)
    raise ValueError(f"--per must be bar or beat, got {per!r}")


def op_reconstruct(job: Job, path):
    preset, clip, x = _part(job, path)
    y, idx, val = transforms.reconstruct(preset, x, job.check_k(preset))
    notes = code.grid_notes(preset, y)
    r = _record(path, preset, clip, len(notes)) | _scores(preset, x, notes)
    r["atoms"] = int(np.count_nonzero(val))
    return [("", write_clip(clip, notes))], r


def simplify_curve(preset, x, group, k=None) -> list[dict]:
    """F1 and notes kept for keep = 1 .. the most atoms any group holds (one encoding)."""
    idx, val = code.encode(preset, x, k)
    most = max(int(np.count_nonzero(val[group == g])) for g in np.unique(group))
    rows = []
    for n in range(1, most + 1):
        i, v = transforms.keep_per_group(idx, val, group, n)
        y = code.decode(preset, i, v)
        notes = code.grid_notes(preset, y)
        rows.append({"keep": n, "notes": len(notes)} | metrics.hit_scores(x, y, preset.codec.n_voices,
                                                                        preset.codec.spec.drum_feel))
    return rows


def op_simplify(job: Job, path):
    preset, clip, x = _part(job, path)
    keep, per = job.options["keep"], job.options.get("per", "bar")
    group = _groups(preset, clip, len(x) // preset.stride, per)
    y, idx, val = transforms.simplify(preset, x, keep, group, job.check_k(preset))
    notes = code.grid_notes(preset, y)
    r = _record(path, preset, clip, len(notes)) | _scores(preset, x, notes)
    r |= {"keep": keep, "per": per, "atoms": int(np.count_nonzero(val))}
    if job.options.get("curve"):
        r["curve"] = simplify_curve(preset, x, group, job.k)
    return [("", write_clip(clip, notes))], r


def op_clean(job: Job, path):
    preset, clip, x = _part(job, path)
    spb = preset.codec.steps_per_beat
    out, info = transforms.clean(preset, clip.notes.scaled(spb), len(x), pull=job.options.get("pull", 0.0))
    notes = _beats(preset, out)
    r = _record(path, preset, clip, len(notes)) | _scores(preset, x, notes) | info
    return [("", write_clip(clip, notes))], r


def op_humanize(job: Job, path):
    preset, clip, x = _part(job, path)
    out = transforms.humanize(preset, clip.notes.scaled(preset.codec.steps_per_beat), len(x), job.check_k(preset))
    notes = _beats(preset, out)
    r = _record(path, preset, clip, len(notes)) | _scores(preset, x, notes)
    return [("", write_clip(clip, notes))], r


def op_drumify(job: Job, path):
    preset, clip, x = _part(job, path, taps=True, default=DRUM_PRESET)
    taps = np.zeros(len(x), bool)
    step = np.floor(clip.notes.start * preset.codec.steps_per_beat + 0.5).astype(np.int64)
    taps[step[(step >= 0) & (step < len(x))]] = True
    phase = code.position_in_bar(preset, clip, len(x) // preset.stride)
    y, idx, val = transforms.drumify(preset, taps, create.file_usage(preset, phase))
    notes = code.grid_notes(preset, y)
    out_steps = np.unique(np.floor(notes.start * preset.codec.steps_per_beat + 0.5).astype(np.int64))
    r = _record(path, preset, clip, len(notes))
    r |= {"taps": int(taps.sum()), "taps_covered": int(np.isin(np.nonzero(taps)[0], out_steps).sum())}
    return [("", write_clip(clip, notes, channel=preset.codec.spec.channel))], r


def _ticks(clip: Clip):
    tpb = clip.midi.ticks_per_beat
    tempos = tuple((int(round(b * tpb)), int(t)) for b, t in clip.tempos)
    meters = tuple((int(round(b * tpb)), int(n), int(d)) for b, n, d in clip.time_signatures)
    return tempos, meters, tpb


def midi_bytes(mid: mido.MidiFile) -> bytes:
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def op_compress(job: Job, path):
    preset, clip, x = _part(job, path)
    idx, val = code.encode(preset, x, job.check_k(preset))
    tempos, meters, tpb = _ticks(clip)
    channel = int(np.bincount(clip.channel.astype(np.int64), minlength=16).argmax())
    data = sidlz.pack(preset, idx, val, tempos, meters, tpb, channel)
    back = sidlz.unpack(data, preset, str(path))
    notes = code.grid_notes(preset, code.decode(preset, back["idx"], back["val"]))
    raw = open(path, "rb").read()
    bars = max(1, len(bar_starts(clip, len(x) / preset.codec.steps_per_beat)))
    r = _record(path, preset, clip, len(notes)) | _scores(preset, x, notes)
    r |= {"bars": bars, "sidlz_bytes": len(data), "midi_bytes": len(raw),
          "gzip_midi_bytes": len(gzip.compress(raw, 9, mtime=0)),
          "bits_per_bar": round(8 * len(data) / bars, 1), "midi_bits_per_bar": round(8 * len(raw) / bars, 1),
          "gzip_bits_per_bar": round(8 * len(gzip.compress(raw, 9, mtime=0)) / bars, 1),
          "entries": int(np.count_nonzero(back["val"]))}
    return [("", data)], r


def sidlz_preset_name(data: bytes) -> str:
    if data[:5] != sidlz.MAGIC or len(data) < 8:
        raise sidlz.SidlzError("not a .sidlz file (no SIDLZ magic)")
    return data[8:8 + data[7]].decode("utf-8", "replace")


def op_decompress(job: Job, path):
    try:
        data = open(path, "rb").read()
    except OSError as e:
        raise MidiFileError(f"{path}: {e.strerror or e}") from None
    try:
        preset = job.load(job.preset or sidlz_preset_name(data))
    except sidlz.SidlzError as e:
        raise sidlz.SidlzError(f"{path}: {e}") from None
    back = sidlz.unpack(data, preset, str(path))
    for _, n, d in back["meters"]:
        if n < 1 or d not in (1, 2, 4, 8, 16, 32):
            raise sidlz.SidlzError(f"{path}: damaged .sidlz (meter {n}/{d})")
    try:
        y = code.decode(preset, back["idx"], back["val"])
    except Exception as e:   # a damaged placement the graph cannot index (shapes presets)
        raise sidlz.SidlzError(f"{path}: damaged .sidlz (its code does not decode: {type(e).__name__})") from None
    notes = code.grid_notes(preset, y)
    mid = midi_with_maps(notes, back["tempos"], back["meters"], back["ticks_per_beat"], back["channel"])
    r = {"file": str(path), "preset": preset.name, "notes_in": None, "notes_out": len(notes),
         "entries": int(np.count_nonzero(back["val"]))}
    return [("", mid)], r


def op_generate(job: Job, kind: str):
    o = job.options
    preset = job.load(job.preset or (DRUM_PRESET if kind == "drums" else PIANO_PRESET))
    code.positions_per_bar(preset, o["meter"])
    c = Controls(mode="generate", density=o["density"], variation=o["variation"], seed=o["seed"],
                 fill_every=o["fill_every"])
    notes = _beats(preset, create.generate(preset, o["bars"], o["meter"], c))
    tempo = int(round(60e6 / o["bpm"]))
    mid = midi_with_maps(notes, ((0, tempo),), ((0, *o["meter"]),), 480, preset.codec.spec.channel)
    return [("", mid)], {"file": None, "preset": preset.name, "notes_in": None, "notes_out": len(notes),
                         "bars": o["bars"]}


def op_vary(job: Job, path):
    preset, clip, x = _part(job, path)
    n_pos = len(x) // preset.stride
    phase, bar = code.position_in_bar(preset, clip, n_pos), code.bar_of_position(preset, clip, n_pos)
    outs, f1s, total = [], [], 0
    for i in range(job.options["n"]):
        y = create.vary(preset, x, phase, bar, job.options["variation"], job.options["seed"] + i, job.check_k(preset))
        notes = code.grid_notes(preset, y)
        total += len(notes)
        f1s.append(_scores(preset, x, notes)["f1"])
        outs.append((f".var{i + 1}", write_clip(clip, notes)))
    r = _record(path, preset, clip, total) | {"variations": len(outs), "f1_to_input": f1s}
    return outs, r


def op_continue(job: Job, path):
    preset, clip, x = _part(job, path)
    spb = preset.codec.steps_per_beat
    meter = tuple(clip.time_signatures[-1][1:])
    ppb = code.positions_per_bar(preset, meter)
    starts = bar_starts(clip, len(x) / spb)
    bar_beats = meter[0] * 4 / meter[1]
    end_beat = float(starts[-1] + bar_beats)                  # the clip's last bar ends here
    x = encode_notes(preset.codec, clip.notes, code.grid_steps(preset, end_beat))
    phase = code.position_in_bar(preset, clip, len(x) // preset.stride)
    y = create.continuation(preset, x, phase, job.options["bars"], ppb, job.options["seed"], job.check_k(preset))
    new = code.grid_notes(preset, y).scaled(1.0, len(x) / spb)
    notes = create.concat([clip.notes, new])
    r = _record(path, preset, clip, len(notes)) | {"bars_added": job.options["bars"], "notes_added": len(new)}
    return [("", write_clip(clip, notes))], r


def op_interpolate(job: Job, path_a, path_b):
    preset, clip_a, xa = _part(job, path_a)
    clip_b = read_clip(path_b, preset.codec, job.channel)
    xb = code.clip_grid(preset, clip_b)
    meter = clip_a.meter
    steps_bar = preset.codec.with_meter(*meter).steps_per_bar
    bars_a, bars_b = -(-len(xa) // steps_bar), -(-len(xb) // steps_bar)
    if bars_a != bars_b:
        raise ValueError(f"{path_a} is {bars_a} bars and {path_b} {bars_b}: interpolate needs clips of one length")
    n = bars_a * steps_bar
    xa = encode_notes(preset.codec, clip_a.notes, n)
    xb = encode_notes(preset.codec, clip_b.notes, n)
    grids = create.interpolate(preset, xa, xb, job.options["steps"], job.check_k(preset))
    outs, f1a, total = [], [], 0
    for i, y in enumerate(grids):
        notes = code.grid_notes(preset, y)
        total += len(notes)
        f1a.append((_scores(preset, xa, notes)["f1"], _scores(preset, xb, notes)["f1"]))
        outs.append((f".{i + 1}", write_clip(clip_a, notes)))
    r = _record(path_a, preset, clip_a, total) | {"file_b": str(path_b), "notes_in_b": len(clip_b.notes),
                                                 "steps": len(outs), "f1_to_a_b": f1a}
    return outs, r
