"""A clip's part on the codec's grid and its sparse code through a preset: the one path every tool takes.

The grid starts at beat 0 of the file and runs in whole code positions (``preset.stride`` steps, a
beat for the shipped presets), so bars of any meter whose length is a whole number of positions line
up with the code. The code of a whole file is one call of ``encode_bar`` (the encoder is shift
invariant; a 4-minute song is a few hundred positions), shapes as in ``realtime/edit.py``:

    x   : (steps, channels) float32     the part on the grid
    idx : (positions, k) int64          atom of each slot
    val : (positions, k) float32        its amplitude, 0 = empty slot
"""
from __future__ import annotations

import math

import numpy as np

from ..codec.convert import decode_notes, encode_notes
from ..codec.notes import NoteArray
from .clip import Clip


def grid_steps(preset, length_beats: float) -> int:
    """Steps covering ``length_beats``, in whole code positions (at least one)."""
    spb = preset.codec.steps_per_beat
    positions = max(1, math.ceil(length_beats * spb / preset.stride - 1e-9))
    return positions * preset.stride


def part_length_beats(clip: Clip) -> float:
    """Beats the part spans: to its last onset plus a step, at least the file's length."""
    last = float(clip.notes.start.max()) + 0.25 if len(clip.notes) else 0.0
    return max(last, min(clip.length_beats, last + 4.0))


def clip_grid(preset, clip: Clip) -> np.ndarray:
    return encode_notes(preset.codec, clip.notes, grid_steps(preset, part_length_beats(clip)))


SILENCE_PAD = 2           # silent positions kept on each side of a sounding stretch (> the encoder's reach)


def sounding_spans(x: np.ndarray, stride: int, pad: int = SILENCE_PAD) -> list[tuple[int, int]]:
    """[start, stop) position ranges holding every sounding position, each widened by ``pad`` silent
    positions; stretches of silence between them longer than that are left out."""
    loud = np.abs(x).reshape(-1, stride * x.shape[1]).max(axis=1) > 0
    where = np.nonzero(loud)[0]
    if not len(where):
        return []
    breaks = np.nonzero(np.diff(where) > 2 * pad + 1)[0]
    starts = np.concatenate([[where[0]], where[breaks + 1]])
    stops = np.concatenate([where[breaks], [where[-1]]]) + 1
    return [(max(0, a - pad), min(len(loud), b + pad)) for a, b in zip(starts.tolist(), stops.tolist())]


def encode(preset, x: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The code of a whole part: each sounding stretch encoded on its own (silence codes to nothing,
    and a long silence, e.g. a corrupt far-away note, costs no encoder time). ``idx`` < n_atoms is an
    atom (or a shape at its typical key and length); a shapes preset packs placements above that,
    a drum-feel preset the atom's gain and timing levels (``preset.entry_atoms`` gives the atom)."""
    k = preset.k if k is None else int(k)
    positions = len(x) // preset.stride
    idx = np.zeros((positions, k), np.int64)
    val = np.zeros((positions, k), np.float32)
    for a, b in sounding_spans(x, preset.stride):
        seg = np.ascontiguousarray(x[a * preset.stride:b * preset.stride], np.float32)
        idx[a:b], val[a:b] = preset.encode_bar(seg, k)
    return idx, val


def decode(preset, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
    """(positions * stride, channels): with pinned atoms every position decodes on its own (atoms
    tile time), and an empty one to silence, so only the positions holding atoms go through the
    decoder; a shapes preset's notes cross beats, so its code decodes as one window."""
    idx, val = np.asarray(idx, np.int64), np.asarray(val, np.float32)
    if getattr(preset, "shapes", False):       # shapes hold across beats: the whole window at once
        return preset.decode_bar(np.ascontiguousarray(idx), np.ascontiguousarray(val))
    rows = np.nonzero((val != 0).any(axis=1))[0]
    stride, channels = preset.stride, preset.codec.channels
    y = np.zeros((len(idx), stride, channels), np.float32)
    if len(rows):
        part = preset.decode_bar(np.ascontiguousarray(idx[rows]), np.ascontiguousarray(val[rows]))
        y[rows] = part.reshape(len(rows), stride, channels)
    return y.reshape(len(idx) * stride, channels)


def grid_notes(preset, y: np.ndarray, quantize: bool = False) -> NoteArray:
    """A grid back to notes in beats (an early hit on the first step starts at 0, not before)."""
    notes = decode_notes(preset.codec, y, quantize)
    start = np.maximum(notes.start, 0.0)
    return NoteArray(start, np.maximum(notes.end, start + 1e-3), notes.pitch, notes.velocity)


def positions_per_bar(preset, meter: tuple[int, int]) -> int:
    """Code positions in one bar of ``meter``, or a ValueError when the bar is not whole positions."""
    codec = preset.codec.with_meter(*meter)
    steps = codec.steps_per_bar
    if steps % preset.stride:
        raise ValueError(f"meter {meter[0]}/{meter[1]} does not fit this preset's atoms of {preset.stride} steps")
    return steps // preset.stride


def bar_of_position(preset, clip: Clip, n_positions: int) -> np.ndarray:
    """(positions,) index of the bar (through the file's meter changes) each code position starts in."""
    from .clip import bar_starts
    beats_per_pos = preset.stride / preset.codec.steps_per_beat
    starts = bar_starts(clip, n_positions * beats_per_pos + 1)
    pos_beats = np.arange(n_positions) * beats_per_pos
    return np.searchsorted(starts, pos_beats + 1e-9, side="right") - 1


def position_in_bar(preset, clip: Clip, n_positions: int) -> np.ndarray:
    """(positions,) index of each code position within its bar (for the meter prior)."""
    from .clip import bar_starts
    beats_per_pos = preset.stride / preset.codec.steps_per_beat
    starts = bar_starts(clip, n_positions * beats_per_pos + 1)
    pos_beats = np.arange(n_positions) * beats_per_pos
    bar = np.searchsorted(starts, pos_beats + 1e-9, side="right") - 1
    return np.floor((pos_beats - starts[bar]) / beats_per_pos + 1e-9).astype(np.int64)
