"""The JACK backend's frame clock (``jackmidi.FrameClock``) on callback times we make up: it keeps a
slow line through the earliest callbacks, and jumps when the server's timeline does."""
import numpy as np

from sidl.realtime.live import jackmidi

RATE, PERIOD = 48000, 64


def _feed(clock, runs, start_frame, start_s, cycles, late_s, rng):
    """``cycles`` callbacks from ``start_frame``, each waking 0-``late_s`` after its frame's time."""
    for c in range(cycles):
        i = runs.head & jackmidi._MASK
        runs.frames[i] = (start_frame + c * PERIOD) & jackmidi._U32
        runs.times[i] = start_s + c * PERIOD / RATE + rng.uniform(0, late_s)
        runs.head += 1
        if runs.head - runs.tail > jackmidi.SLOTS // 2:
            clock.refresh(0.0)
    clock.refresh(0.0)


def _clock():
    jackmidi._jack()
    clock = jackmidi.FrameClock(RATE)
    runs = jackmidi._Runs()
    clock.sources.append(runs)
    return clock, runs


def test_the_line_holds_through_load_and_jumps_with_the_servers_timeline():
    rng = np.random.default_rng(0)
    clock, runs = _clock()
    cycles = int(0.6 * RATE / PERIOD)                        # a refresh's worth and more
    _feed(clock, runs, 0, 100.0, cycles, 0.0005, rng)        # the first line
    frame = cycles * PERIOD
    for _ in range(4):                                       # load: callbacks up to 1.5 ms late
        _feed(clock, runs, frame, 100.0 + frame / RATE, cycles, 0.0015, rng)
        frame += cycles * PERIOD
    assert abs(clock.time_of(frame) - (100.0 + frame / RATE)) < 1e-4 and clock.jumps == 0
    # The server falls behind and starts its timeline again 30 ms later: frames go on, time jumped.
    for _ in range(3):
        _feed(clock, runs, frame, 100.03 + frame / RATE, cycles, 0.0005, rng)
        frame += cycles * PERIOD
    assert clock.jumps == 1
    assert abs(clock.time_of(frame) - (100.03 + frame / RATE)) < 1e-3
