"""Helpers for the file-tool tests: run the real `sidl` command, read MIDI back with mido alone."""
from __future__ import annotations

import json
import subprocess
import sys

import mido
import numpy as np

from conftest import DATA

GMD = DATA / "groove" / "drummer1" / "eval_session" / "1_funk-groove1_138_beat_4-4.mid"
GMD2 = DATA / "groove" / "drummer1" / "eval_session" / "10_soul-groove10_102_beat_4-4.mid"
POP = DATA / "pop909" / "POP909" / "020" / "020.mid"


def sidl(*args, timeout=300):
    """(exit code, stdout lines, stderr) of `sidl ARGS` in a fresh interpreter."""
    p = subprocess.run([sys.executable, "-m", "sidl.realtime.cli", *map(str, args)], capture_output=True,
                       text=True, timeout=timeout)
    return p.returncode, [line for line in p.stdout.splitlines() if line.strip()], p.stderr


def records(lines):
    return [json.loads(line) for line in lines if line.startswith("{")]


def notes_of(path, channels=None):
    """[(beat, channel, pitch, velocity)] of every note-on in a MIDI file, read with mido alone."""
    mid = mido.MidiFile(str(path))
    out = []
    for track in mid.tracks:
        tick = 0
        for m in track:
            tick += m.time
            if m.type == "note_on" and m.velocity > 0 and (channels is None or m.channel in channels):
                out.append((tick / mid.ticks_per_beat, m.channel, m.note, m.velocity))
    return sorted(out)


def drum_grid(notes, n_steps):
    """An independent drum grid: (steps, 27) hit / velocity / offset per class, from note tuples."""
    from sidl.realtime.codec.drums import PITCH_TO_CLASS
    x = np.zeros((n_steps, 27), np.float32)
    for beat, _, pitch, vel in sorted(notes, key=lambda n: n[3]):
        c = PITCH_TO_CLASS[pitch]
        s = int(np.floor(beat * 4 + 0.5))
        if c >= 0 and 0 <= s < n_steps:
            x[s, c], x[s, 9 + c], x[s, 18 + c] = 1.0, vel / 127, min(max(beat * 4 - s, -0.5), 0.5 - 1e-6)
    return x


def hit_f1(ref, out):
    tp = int(((ref[:, :9] > 0.5) & (out[:, :9] > 0.5)).sum())
    p = tp / max(1, int((out[:, :9] > 0.5).sum()))
    r = tp / max(1, int((ref[:, :9] > 0.5).sum()))
    return 2 * p * r / max(1e-12, p + r), p, r


def other_messages(path, skip_channel=9):
    """(tick, message text) of everything but notes on ``skip_channel`` (what must pass through)."""
    mid = mido.MidiFile(str(path))
    out = []
    for track in mid.tracks:
        tick = 0
        for m in track:
            tick += m.time
            if m.type == "end_of_track":
                continue
            if m.type in ("note_on", "note_off") and m.channel == skip_channel:
                continue
            text = str(m.copy(time=0))
            out.append((tick, text.replace("note_off", "note_on") if m.type == "note_off" else text))
    return sorted(out)
