"""Musical time from wall time: an internal clock at a fixed tempo, and a follower of incoming MIDI clock.

Both are pure and time-injected: callers pass ``perf_counter()`` seconds in, nothing here sleeps or
reads a clock. Positions are in quarter notes ("q") counted from the song start (the DAW's Start, or
our own first bar), so bar ``b`` begins at ``q = b * bar_q``. A ``Timeline`` is the frozen, linear map
between the two that the engine and scheduler share; a follower hands out a fresh one on every tick.

The two clocks answer the same questions (the conductor asks nothing else): ``follows`` (is it
driven by incoming MIDI clock), ``timeline`` (None while stopped), ``position(t)``, ``bpm`` and
``lost(now)``; only a follower is ``feed`` incoming clock messages.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

PPQN = 24                 # MIDI clock ticks per quarter note
SPP_TICKS = 6             # Song Position Pointer counts 16ths: 6 ticks each
FIT_MAX_TICKS = 4 * PPQN  # longest tempo fit: four beats of ticks
SETTLED_TICKS = 12        # a tick lost in transport is recognised once the line has this many
LOST_TICK_TOL = 0.2       # ...when the next arrives this close (in periods) to a whole number of them
CHANGE_RUN = 3            # this many ticks in a row off the fitted line -> the tempo changed
CHANGE_MIN_S = 0.0015     # never call a tick "off" by less than this (above JACK period-64 jitter)
LOST_QUARTERS = 2.0       # no clock for this many quarters -> clock lost


def bar_quarters(beats_per_bar: int, beat_unit: int) -> float:
    """Length of one bar in quarter notes (6/8 -> 3.0)."""
    return beats_per_bar * 4.0 / beat_unit


@dataclass(frozen=True)
class Timeline:
    """The linear map  t = t0 + (q - q0) * quarter_s  between seconds and quarter notes."""
    t0: float          # seconds (perf_counter) at position q0
    q0: float          # quarter notes since song start
    quarter_s: float   # seconds per quarter note

    @property
    def bpm(self) -> float:
        return 60.0 / self.quarter_s

    def time_of(self, q):
        """Quarter-note position(s) -> seconds. Works on floats and numpy arrays alike."""
        return self.t0 + (q - self.q0) * self.quarter_s

    def position(self, t: float) -> float:
        """Seconds -> quarter-note position."""
        return self.q0 + (t - self.t0) / self.quarter_s


@dataclass(frozen=True)
class InternalClock:
    """A steady clock: bar 0 starts at ``start_s``; tempo changes re-anchor so position is continuous."""
    follows: ClassVar[bool] = False     # incoming MIDI clock is ignored
    bpm: float
    beats_per_bar: int = 4
    beat_unit: int = 4
    start_s: float = 0.0     # seconds at which the anchor position sounds
    start_q: float = 0.0     # the anchor position (0 for a fresh start)

    def __post_init__(self):
        if not 20.0 <= self.bpm <= 400.0:
            raise ValueError(f"bpm must be in 20..400, got {self.bpm:g}")
        bar_quarters(self.beats_per_bar, self.beat_unit)  # meter sanity is the Codec's job

    @property
    def bar_q(self) -> float:
        return bar_quarters(self.beats_per_bar, self.beat_unit)

    @property
    def timeline(self) -> Timeline:
        return Timeline(self.start_s, self.start_q, 60.0 / self.bpm)

    def position(self, t: float) -> float:
        return self.timeline.position(t)

    def lost(self, now: float) -> bool:
        return False

    def with_tempo(self, bpm: float, t: float) -> "InternalClock":
        """This clock at ``bpm`` from ``t`` on, the song position continuous at ``t``. Before the
        song has started, its start time stays where it was."""
        if self.position(t) < 0.0:
            return replace(self, bpm=bpm)
        return replace(self, bpm=bpm, start_s=t, start_q=self.position(t))


class ClockFollower:
    """Follows MIDI clock (24 PPQN), Start, Stop, Continue and Song Position Pointer.

    Feed it ``(kind, t, extra)`` with kind in {"clock", "start", "stop", "continue", "songpos"};
    ``extra`` is the SPP value in 16ths for "songpos". Per the MIDI spec, the first clock after Start
    (or Continue) marks the start position; every later clock advances one tick.

    Tempo is a least-squares line through recent tick times, which sees through the transport's
    jitter (JACK delivers in periods). The line spans up to ``FIT_MAX_TICKS`` (four beats) while the
    tempo holds; when ticks leave it (``CHANGE_RUN`` in a row off by more than the jitter) the fit
    restarts from those ticks, so a tempo change is followed within a beat. Ticks are fitted while
    stopped too, since DAWs send clock then.
    """
    follows = True

    def __init__(self, beats_per_bar: int = 4, beat_unit: int = 4, default_bpm: float = 120.0):
        self.bar_q = bar_quarters(beats_per_bar, beat_unit)
        self.running = False
        self._armed = False                   # Start/Continue seen, waiting for the first tick
        self._next_tick = 0                   # song position (ticks) the next clock will mark
        self._song_tick = -1                  # song position (ticks) of the last clock while running
        self._times = np.zeros(FIT_MAX_TICKS)  # ring of recent tick times, slot = counter % size
        self._n = 0                           # ticks seen in total
        self._m = 0                           # ticks in the current fit segment (<= FIT_MAX_TICKS)
        self._off_run = 0                     # consecutive ticks off the line, same sign
        self._quarter_s = 60.0 / default_bpm
        self._tick_s = self._quarter_s / PPQN
        self._line = (0.0, self._tick_s)      # fitted time at the last tick, seconds per tick
        self._tol = CHANGE_MIN_S
        self._last_t = -math.inf
        self._armed_at = -math.inf
        self._counted_lost = 0                # ticks the last clock counted as lost in transport
        self._timeline: Timeline | None = None

    # -- input -------------------------------------------------------------------------------
    def feed(self, kind: str, t: float, extra: int = 0) -> None:
        if kind == "clock":
            self._clock(t)
        elif kind == "start":
            self._arm(t, 0)
        elif kind == "continue":
            self._arm(t, self._next_tick)
        elif kind == "stop":
            self._stop()
        elif kind == "songpos":
            # Legal while stopped (where to Continue from); a DAW jumping while running (a loop)
            # also sends it: the next tick marks the new position, and the timeline says so now.
            self._next_tick = int(extra) * SPP_TICKS
            self._counted_lost = 0                # a count of lost ticks is not undone across a jump
            if self.running or self._armed:
                self._song_tick = self._next_tick - 1
                t_next = self._line[0] + self._tick_s if self.running else self._timeline.t0
                self._timeline = Timeline(t_next, self._next_tick / PPQN, self._quarter_s)
        else:
            raise ValueError(f"unknown clock message {kind!r}")

    def _arm(self, t: float, tick: int) -> None:
        """Start/Continue: until the first tick, expect it one tick from now at the last tempo, so
        the engine can prepare the first bar before it begins (the first tick then corrects it)."""
        self._armed, self._armed_at, self._next_tick = True, t, tick
        self._counted_lost = 0
        if t - self._last_t > 4 * self._tick_s:
            self._m = 0                       # the clock paused while stopped: fit afresh
        self._song_tick = tick - 1
        self._timeline = Timeline(t + self._tick_s, tick / PPQN, self._quarter_s)

    def _clock(self, t: float) -> None:
        if self._counted_lost:
            # The last tick came a whole number of periods late and we counted the ticks between
            # as lost in transport. Back on the period now: they were. Late again: the tempo fell.
            if abs(t - self._last_t - self._line[1]) > self._lost_tol():
                self._next_tick -= self._counted_lost
                self._m = 0
            self._counted_lost = 0
        if t - self._last_t > LOST_QUARTERS * self._quarter_s:
            self._m = 0                       # a gap: old ticks say nothing about the new tempo
        elif self.running and self._m >= SETTLED_TICKS and (lost := self._lost_ticks(t)):
            # A loaded JACK graph can drop a tick: uncounted, every later position would sit a tick
            # early for the rest of the song. Count the missing ones on the line (checked next tick).
            for j in range(1, lost + 1):
                self._times[self._n % FIT_MAX_TICKS] = self._line[0] + j * self._line[1]
                self._n += 1
                self._m = min(self._m + 1, FIT_MAX_TICKS)
            self._next_tick += lost
            self._counted_lost = lost
            self._off_run = 0
        elif self._m >= 4:
            # Does this tick still sit on the line? A run of misses on one side means a new tempo.
            miss = t - (self._line[0] + self._line[1])
            if abs(miss) > self._tol:
                side = 1 if miss > 0 else -1
                self._off_run = self._off_run + side if self._off_run * side > 0 else side
                if abs(self._off_run) >= CHANGE_RUN:
                    self._m = CHANGE_RUN - 1  # keep the ticks that showed the change
                    self._off_run = 0
            else:
                self._off_run = 0
        self._last_t = t
        self._times[self._n % FIT_MAX_TICKS] = t
        self._n += 1
        self._m = min(self._m + 1, FIT_MAX_TICKS)
        self._fit()
        if self._armed:
            self._armed, self.running = False, True
        if self.running:
            self._song_tick = self._next_tick
            self._next_tick += 1
            # The line's value at this tick is a better anchor than its jittered arrival.
            self._timeline = Timeline(self._line[0], self._song_tick / PPQN, self._quarter_s)

    def _lost_tol(self) -> float:
        return LOST_TICK_TOL * self._line[1]

    def _lost_ticks(self, t: float) -> int:
        """Ticks missing before one at ``t``: it lands a whole number (2 or more) of periods after
        the line's last tick, within a fifth of a period. Only while the clock is steady (its jitter
        well under that): on a jittery clock a late tick would pass for a lost one."""
        if self._tol > self._lost_tol():
            return 0
        gap = (t - self._line[0]) / self._line[1]
        n = round(gap)
        return n - 1 if n >= 2 and abs(gap - n) * self._line[1] <= self._lost_tol() else 0

    def _fit(self) -> None:
        m = self._m
        if m < 2:
            self._line = (self._last_t, self._tick_s)
            return
        x = np.arange(self._n - m, self._n, dtype=np.float64)
        y = self._times[(self._n - m + np.arange(m)) % FIT_MAX_TICKS]
        xc = x - x.mean()
        slope = (xc * (y - y.mean())).sum() / (xc * xc).sum()     # seconds per tick
        if slope <= 0:
            return
        resid = y - (y.mean() + slope * xc)
        self._tick_s, self._quarter_s = slope, slope * PPQN
        self._line = (y.mean() + slope * xc[-1], slope)
        if m >= 8:                            # enough ticks to say how large the jitter is
            # (A median-based tolerance, tried for jack_midi_clock's doubled ticks, is too tight for
            # period-quantized arrivals: it counted phantom lost ticks, a tick late for the song.)
            self._tol = max(CHANGE_MIN_S, 4.0 * float(np.sqrt((resid * resid).mean())))

    def _stop(self) -> None:
        if self.running or self._armed:         # (a Stop while stopped keeps a Song Position Pointer)
            self._next_tick = self._song_tick + 1   # Continue resumes after the last tick played
        self.running, self._armed = False, False
        self._counted_lost = 0
        self._timeline = None

    # -- queries -----------------------------------------------------------------------------
    @property
    def next_tick(self) -> int:
        """The song position (ticks) the next clock will mark."""
        return self._next_tick

    @property
    def armed(self) -> bool:
        """Start or Continue seen, the first tick not yet."""
        return self._armed

    @property
    def bpm(self) -> float:
        return 60.0 / self._quarter_s

    @property
    def timeline(self) -> Timeline | None:
        """The current seconds <-> quarters map while running (or expected, between Start and the
        first tick), else None."""
        return self._timeline

    def lost(self, now: float) -> bool:
        """True when running (or started) but no clock has arrived for two beats (quarters)."""
        if not (self.running or self._armed):
            return False
        return now - max(self._last_t, self._armed_at) > LOST_QUARTERS * self._quarter_s

    def position(self, now: float) -> float | None:
        """Quarter notes since song start at ``now`` (never beyond the next tick), or None if stopped."""
        if self._timeline is None:
            return None
        return min(self._timeline.position(now), (self._song_tick + 1) / PPQN)

    def mark_lost(self) -> None:
        """The caller saw ``lost()``: stop as if the DAW had sent Stop."""
        self._stop()
