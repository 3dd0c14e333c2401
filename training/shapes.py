"""Piano shapes: onset patterns that can sit at any pitch and any step of a beat, as plain arrays.

A shape is a set of onset cells (step offset, key offset) normalised to its first step and lowest
key (a triad, an octave, a bass note plus a chord a step later...). A dictionary of them is
``ShapeDictionary``: ``cells`` (A, Cmax, 2) with ``mask`` (A, Cmax), plus a velocity ratio and a
length ratio per cell (the feel each shape carries relative to its entry's amplitude and length).
The single note is always shape 0, so a pursuit over the dictionary can never do worse than the
note list.

``count_shapes`` is the counting reference of issue #10: every beat's onset pattern, each step's
chord and each pair of steps, normalised, ranked by count x notes. ``loudest_notes`` is the other
reference: keep the k loudest onsets of each beat. Both are pure functions of numpy arrays.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from sidl.realtime.codec.notes import NoteArray
from sidl.realtime.codec.pianogrid import N_KEYS

DEFAULT_SPAN = 37            # semitones a shape may cover (three octaves and a note)


@dataclass(frozen=True)
class ShapeDictionary:
    cells: np.ndarray        # (A, Cmax, 2) int64: step offset, key offset (first cell = first step, lowest key)
    mask: np.ndarray         # (A, Cmax) bool
    vel_ratio: np.ndarray    # (A, Cmax) float32: cell velocity / entry amplitude
    len_ratio: np.ndarray    # (A, Cmax) float32: cell length / entry length
    steps_per_beat: int

    @property
    def n_shapes(self) -> int:
        return len(self.cells)

    def to_arrays(self) -> dict:
        return {"cells": self.cells, "mask": self.mask, "vel_ratio": self.vel_ratio,
                "len_ratio": self.len_ratio, "steps_per_beat": np.array(self.steps_per_beat)}

    @classmethod
    def from_arrays(cls, z) -> "ShapeDictionary":
        return cls(np.asarray(z["cells"], np.int64), np.asarray(z["mask"], bool),
                   np.asarray(z["vel_ratio"], np.float32), np.asarray(z["len_ratio"], np.float32),
                   int(z["steps_per_beat"]))


def dictionary_of(shapes: list[tuple], steps_per_beat: int) -> ShapeDictionary:
    """Shapes (tuples of (step, key) cells) -> a dictionary with the single note first, flat feel."""
    shapes = [((0, 0),)] + [tuple(sorted(s)) for s in shapes if len(s) > 1]
    cmax = max(len(s) for s in shapes)
    cells = np.zeros((len(shapes), cmax, 2), np.int64)
    mask = np.zeros((len(shapes), cmax), bool)
    for a, s in enumerate(shapes):
        cells[a, :len(s)] = s
        mask[a, :len(s)] = True
    ones = mask.astype(np.float32)
    return ShapeDictionary(cells, mask, ones, ones.copy(), steps_per_beat)


def beat_onsets(x: np.ndarray, steps_per_beat: int) -> np.ndarray:
    """(steps, 264) piano grid -> (beats, steps_per_beat, 88) bool onsets (a trailing part beat dropped)."""
    L = steps_per_beat
    nb = len(x) // L
    return x[: nb * L, :N_KEYS].reshape(nb, L, N_KEYS) > 0.5


def normalised(cells) -> tuple:
    s0 = min(s for s, _ in cells)
    k0 = min(k for _, k in cells)
    return tuple(sorted((s - s0, k - k0) for s, k in cells))


def beat_shapes(onsets: np.ndarray) -> set:
    """One beat's (L, 88) onsets -> its candidate shapes: the whole pattern, each step's chord and
    each pair of steps' notes, normalised (single notes left out: the dictionary always has one)."""
    s, k = np.nonzero(onsets)
    cells = list(zip(s.tolist(), k.tolist()))
    steps = sorted(set(s.tolist()))
    groups = {tuple(cells)}
    for i in steps:
        groups.add(tuple(c for c in cells if c[0] == i))
        for j in steps:
            if j > i:
                groups.add(tuple(c for c in cells if c[0] in (i, j)))
    return {normalised(g) for g in groups if len(g) > 1}


def count_shapes(grids: list[np.ndarray], steps_per_beat: int, span: int = DEFAULT_SPAN) -> list[tuple[tuple, int]]:
    """Every shape of the grids' beats with its count, ranked by count x notes (best first).

    Shapes wider than ``span`` semitones are left out (a kernel covers ``span`` keys).
    """
    counts = Counter()
    for x in grids:
        on = beat_onsets(x, steps_per_beat)
        for b in np.nonzero(on.any((1, 2)))[0]:
            counts.update(s for s in beat_shapes(on[b]) if max(k for _, k in s) < span)
    return sorted(counts.items(), key=lambda kv: (-kv[1] * len(kv[0]), kv[0]))


def counted_dictionary(grids: list[np.ndarray], n_shapes: int, steps_per_beat: int,
                       span: int = DEFAULT_SPAN) -> ShapeDictionary:
    """The counting reference: the single note plus the n_shapes - 1 top-ranked shapes."""
    ranked = count_shapes(grids, steps_per_beat, span)
    return dictionary_of([s for s, _ in ranked[: n_shapes - 1]], steps_per_beat)


def loudest_notes(notes: NoteArray, k: int, steps_per_beat: int) -> NoteArray:
    """The note-list reference: the k loudest onsets of each beat (notes timed in grid steps)."""
    beat = np.floor(np.asarray(notes.start) + 1e-9).astype(np.int64) // steps_per_beat
    order = np.lexsort((-np.asarray(notes.velocity, np.int64), beat))
    b = beat[order]
    first = np.r_[0, np.nonzero(np.diff(b))[0] + 1] if len(b) else np.zeros(0, np.int64)
    rank = np.arange(len(order)) - np.repeat(first, np.diff(np.r_[first, len(order)]))
    keep = np.zeros(len(notes), bool)
    keep[order[rank < k]] = True
    return notes.select(keep)
