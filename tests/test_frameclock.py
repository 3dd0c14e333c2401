"""The JACK backend's frame clock and the Link recorder's reference, on simulated server cycles:
a dummy driver's timeline (cycles a period apart, restarted later when it falls behind) and the
process callbacks that run on it (late by the GIL and load, never early)."""
from __future__ import annotations

import numpy as np
import pytest

from sidl.realtime.live import jackmidi
from sidl.realtime.live.jackmidi import JUMP_S, REFRESH_S, FrameClock
from sidl.realtime.live.linkpeer import SETTLE_S, timeline_moved, timeline_times

RATE, PERIOD = 48000, 64
CYCLE_S = PERIOD / RATE


class Runs:
    """A port's record of its callbacks (``jackmidi._Runs``), as plain lists."""

    def __init__(self):
        self.frames = [0] * jackmidi.SLOTS
        self.times = [0.0] * jackmidi.SLOTS
        self.head = self.tail = 0

    def ran(self, frame: int, t: float) -> None:
        self.frames[self.head & jackmidi._MASK] = frame & 0xFFFFFFFF
        self.times[self.head & jackmidi._MASK] = t
        self.head += 1


def server(seconds: float, restarts=(), stalls=(), seed=0, t0=100.0, frame0=2**32 - 48000):
    """(cycle start frames, true times, callback times): ``restarts`` [(at s, later by s)] move the
    timeline; ``stalls`` [(at s, for s)] hold the callbacks (the GIL held elsewhere): those cycles'
    callbacks all run when it ends, one after another. Frames wrap past 2**32."""
    rng = np.random.default_rng(seed)
    n = int(seconds / CYCLE_S)
    frames = frame0 + PERIOD * np.arange(n, dtype=np.int64)
    true = t0 + np.arange(n) * CYCLE_S
    for at, by in restarts:
        true[true - t0 >= at] += by
    called = true + 20e-6 + rng.exponential(40e-6, n)
    for at, hold in stalls:
        held = np.nonzero((true - t0 >= at) & (true - t0 < at + hold))[0]
        called[held] = np.maximum(called[held], t0 + at + hold + 10e-6 * np.arange(1, len(held) + 1))
    return frames, true, called


def drive(frames, true, called, first_late_s=0.0):
    """Feed the callbacks to a FrameClock as they run, refreshing it every REFRESH_S as a port's
    thread would (held by a stall as the callbacks are). Returns the clock and, after each refresh,
    (seconds into the run, the line's error at the newest cycle): how far a message converted
    then would be off the server's timeline. ``first_late_s``: the first 0.3 s of callbacks later."""
    clock, runs = FrameClock(RATE), Runs()
    clock.sources.append(runs)
    called = called + np.where(true - true[0] < 0.3, first_late_s, 0.0)
    errors, due = [], called[0] + REFRESH_S
    for n in range(len(frames)):
        runs.ran(int(frames[n]), float(called[n]))
        if called[n] >= due:
            clock.refresh(float(called[n]))
            due = called[n] + REFRESH_S
            if clock.line is not None:
                errors.append((true[n] - true[0], clock.time_of(int(frames[n]) & 0xFFFFFFFF) - true[n]))
    return clock, np.array(errors)


def worst(errors, after_s=0.0, before_s=np.inf):
    at = (errors[:, 0] > after_s) & (errors[:, 0] < before_s)
    return np.max(np.abs(errors[at, 1]))


def test_the_line_stays_on_a_steady_timeline_through_stalled_callbacks():
    frames, true, called = server(12.0, stalls=[(5.0, 0.3), (8.0, 0.05), (8.2, 0.05), (8.4, 0.05)])
    clock, errors = drive(frames, true, called)
    assert clock.jumps == 0
    assert worst(errors, after_s=1.0) < 100e-6          # late callbacks moved it STEP_S a refresh at most


def test_the_line_jumps_to_a_restarted_timeline_within_two_refreshes():
    frames, true, called = server(10.0, restarts=[(4.0, 0.005)])
    clock, errors = drive(frames, true, called)
    assert clock.jumps == 1
    assert worst(errors, 1.0, 4.0) < 100e-6
    assert worst(errors, after_s=4.0 + 2.5 * REFRESH_S) < 100e-6     # (sliding STEP_S: 2 minutes)


def test_a_line_that_started_late_jumps_back_at_the_first_whole_refresh():
    frames, true, called = server(4.0)
    clock, errors = drive(frames, true, called, first_late_s=0.004)   # its first callbacks all 4 ms late
    assert clock.jumps == 1
    assert worst(errors[:1]) > 0.003
    assert worst(errors, after_s=2 * REFRESH_S + 0.2) < 100e-6


def test_a_jump_needs_the_earliest_callback_late_in_consecutive_refreshes():
    # every callback 1 ms late for 1.5 refreshes (a thread of ours starved that long), then on time
    frames, true, called = server(8.0)
    late = (true - true[0] >= 3.0) & (true - true[0] < 3.0 + 1.5 * REFRESH_S)
    clock, errors = drive(frames, true, called + np.where(late, 4 * JUMP_S, 0.0))
    assert clock.jumps == 0
    assert worst(errors, after_s=1.0) < JUMP_S          # it slid a little, never the 1 ms


def test_the_recorders_timeline_is_the_servers_through_bursts_and_restarts():
    frames, true, called = server(10.0, restarts=[(4.0, 0.006)], stalls=[(2.0, 0.2), (7.0, 0.03)])
    events = np.arange(50, len(frames) - 50, 37)
    offsets = np.arange(len(events)) % PERIOD                  # an event anywhere in its cycle
    got = timeline_times(frames & 0xFFFFFFFF, called, (frames[events] + offsets) & 0xFFFFFFFF, RATE)
    want = true[events] + offsets / RATE
    assert np.max(np.abs(got - want)) < 60e-6                  # the callbacks' own floor: 20 us + noise
    # (a frame clock that never jumped would be 6 ms off after the restart)


def test_the_recorders_timeline_needs_cycles_around_each_event():
    frames, _, called = server(1.0)
    with pytest.raises(ValueError, match="no JACK cycle"):
        timeline_times(frames, called, np.array([frames[-1] + 10 * RATE]), RATE)
    assert len(timeline_times(frames, called, np.zeros(0), RATE)) == 0


def test_events_just_after_a_restart_are_marked_settling():
    frames, true, called = server(8.0, restarts=[(4.0, 0.006)], stalls=[(6.0, 0.1)])
    at = np.array([3.9, 4.0 + SETTLE_S / 2, 4.0 + SETTLE_S + 0.05, 6.05])   # seconds into the run
    idx = np.searchsorted(true - true[0], at)
    moved = timeline_moved(frames & 0xFFFFFFFF, called, frames[idx] & 0xFFFFFFFF, RATE)
    assert moved[1] == pytest.approx(0.006, abs=60e-6)          # sidl's frame clock: not there yet
    assert np.all(np.abs(moved[[0, 2, 3]]) < 60e-6)             # before it, after it, a stall: steady


def test_a_false_jump_under_long_late_callbacks_is_undone_when_they_run_on_time_again():
    # every callback 1 ms late for 0.35 s, the refreshes running all along (a starved thread of
    # ours, not the server): the line follows it, then jumps back as soon as on-time callbacks
    # run before it, and ends on the timeline
    frames, true, called = server(6.0)
    late = (true - true[0] >= 3.0) & (true - true[0] < 3.35)
    clock, errors = drive(frames, true, called + np.where(late, 0.001, 0.0))
    assert clock.jumps == 2
    assert worst(errors, 3.35 + 2 * REFRESH_S) < 100e-6
