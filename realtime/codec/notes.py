"""Notes as plain arrays: the form every codec reads and writes, from files and from live ports alike.

Times are in grid steps or beats (quarter notes) depending on who holds them; the field names say
which unit a function expects. Nothing here knows about MIDI files or ports.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NoteArray:
    start: np.ndarray     # (n,) float64, onset time (unit given by the caller: steps or beats)
    end: np.ndarray       # (n,) float64, release time, >= start
    pitch: np.ndarray     # (n,) int16, MIDI note number 0..127
    velocity: np.ndarray  # (n,) int16, 1..127

    def __post_init__(self):
        n = len(self.start)
        if not (len(self.end) == len(self.pitch) == len(self.velocity) == n):
            raise ValueError("NoteArray fields must have equal length")

    def __len__(self) -> int:
        return len(self.start)

    @classmethod
    def empty(cls) -> "NoteArray":
        return cls(np.zeros(0), np.zeros(0), np.zeros(0, np.int16), np.zeros(0, np.int16))

    @classmethod
    def from_lists(cls, start, end, pitch, velocity) -> "NoteArray":
        return cls(np.asarray(start, np.float64), np.asarray(end, np.float64),
                   np.asarray(pitch, np.int16), np.asarray(velocity, np.int16))

    def scaled(self, factor: float, shift: float = 0.0) -> "NoteArray":
        """Change time unit (e.g. beats -> steps with factor=steps_per_beat) and origin."""
        return NoteArray(self.start * factor + shift, self.end * factor + shift, self.pitch, self.velocity)

    def select(self, mask: np.ndarray) -> "NoteArray":
        return NoteArray(self.start[mask], self.end[mask], self.pitch[mask], self.velocity[mask])

    def window(self, t0: float, t1: float) -> "NoteArray":
        """Notes with onsets in [t0, t1), times made relative to t0 (ends clipped to the window)."""
        m = (self.start >= t0) & (self.start < t1)
        return NoteArray(self.start[m] - t0, np.minimum(self.end[m], t1) - t0,
                         self.pitch[m], self.velocity[m])

    def sorted(self) -> "NoteArray":
        order = np.lexsort((self.pitch, self.start))
        return self.select(order)


def one_voice_per_key(on: np.ndarray, off: np.ndarray, key: np.ndarray, vel: np.ndarray):
    """Integer note times -> at most one note per (key, onset), the loudest, each ending no later
    than the next onset on its key: what a piano keyboard can play. Returned ordered by key, onset."""
    order = np.lexsort((-vel, on, key))              # by key, then onset, loudest first
    key, on, off, vel = key[order], on[order], off[order], vel[order]
    first = np.ones(len(key), bool)
    first[1:] = (key[1:] != key[:-1]) | (on[1:] != on[:-1])
    key, on, off, vel = key[first], on[first], off[first], vel[first]
    restruck = np.zeros(len(key), bool)
    restruck[:-1] = key[1:] == key[:-1]
    off[:-1] = np.where(restruck[:-1], np.minimum(off[:-1], on[1:]), off[:-1])
    return on, off, key, vel
