"""What the conductor hands the worker: the notes played in a window, and the job to answer them.

``BarBuffer`` collects incoming notes stamped with their song position; when a bar's (or beat's)
input window closes, the conductor takes its notes out as a ``NoteArray`` and makes a ``BarJob``:
an immutable message carrying everything the worker needs to compose that bar.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..codec.notes import NoteArray
from ..controls import Controls
from .clock import Timeline


@dataclass(frozen=True)
class BarJob:
    bar: int                 # the bar to render
    played: NoteArray        # the window that just closed, in steps from the previous window's start
    controls: Controls
    timeline: Timeline       # seconds <-> quarters when the job was made
    reset: bool = False      # forget the groove first (mode or preset change)
    position: int | None = None   # one code position of the bar (a beat), not the whole bar
    preset: int | None = None     # with reset: the worker switches to its composer of this bank slot...
    channel: int | None = None    # ...and to this output channel
    epoch: int = 0           # the conductor's panic count when the job was made: a later panic voids it


class BarBuffer:
    """Notes played into the input, stamped with song position in quarter notes.

    The sustain pedal (CC 64) holds released notes until it lifts, as the piano codec expects.
    """

    def __init__(self):
        self.start: list[float] = []
        self.end: list[float] = []
        self.pitch: list[int] = []
        self.velocity: list[int] = []
        self._open: dict[int, int] = {}     # pitch -> index of its sounding note
        self._held: list[int] = []          # released under the pedal: end when it lifts
        self._pedal = False

    def note_on(self, q: float, pitch: int, velocity: int) -> None:
        self._open[pitch] = len(self.start)
        self.start.append(q)
        self.end.append(math.nan)
        self.pitch.append(pitch)
        self.velocity.append(velocity)

    def note_off(self, q: float, pitch: int) -> None:
        i = self._open.pop(pitch, None)
        if i is not None:
            if self._pedal:
                self._held.append(i)
            else:
                self.end[i] = q

    def pedal(self, q: float | None, down: bool) -> None:
        """Pedal up or down at song position ``q`` (None while stopped: only its state changes)."""
        if self._pedal and not down and q is not None:
            for i in self._held:
                self.end[i] = q
        if not down:
            self._held = []
        self._pedal = down

    def take(self, q0: float, q1: float, origin_q: float, steps_per_quarter: int) -> NoteArray:
        """Notes starting in [q0, q1) in steps from ``origin_q``; they (and anything older) leave."""
        start = np.array(self.start)
        m = (start >= q0) & (start < q1)
        end = np.array(self.end)[m]
        end = np.where(np.isnan(end), q1, np.minimum(end, q1))   # still held: cut at the window end
        notes = NoteArray((start[m] - origin_q) * steps_per_quarter, (end - origin_q) * steps_per_quarter,
                          np.array(self.pitch, np.int16)[m], np.array(self.velocity, np.int16)[m])
        keep = [i for i, s in enumerate(self.start) if s >= q1]
        self.start, self.end = [self.start[i] for i in keep], [self.end[i] for i in keep]
        self.pitch, self.velocity = [self.pitch[i] for i in keep], [self.velocity[i] for i in keep]
        self._open = {p: keep.index(i) for p, i in self._open.items() if i in keep}
        self._held = [keep.index(i) for i in self._held if i in keep]
        return notes

    def clear(self) -> None:
        """Forget every note; the pedal stays where the foot is."""
        pedal = self._pedal
        self.__init__()
        self._pedal = pedal
