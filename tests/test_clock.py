"""Clock and follower on synthetic timestamps: hundreds of bars in milliseconds, no sleeping."""

import math

import numpy as np
import pytest

from sidl.realtime.live.clock import PPQN, ClockFollower, InternalClock, Timeline, bar_quarters

PERIOD_S = 64 / 48000     # JACK period 64 at 48 kHz: arrival times are quantized to this


def tick_times(bpm, n, t0=1.0, jitter=True):
    """Ideal tick times and what a JACK client would see (arrival rounded up to a period)."""
    ideal = t0 + np.arange(n) * 60.0 / bpm / PPQN
    seen = np.ceil(ideal / PERIOD_S) * PERIOD_S if jitter else ideal
    return ideal, seen


def feed_ticks(f, times):
    for t in times:
        f.feed("clock", float(t))


def test_bar_quarters_of_common_meters():
    assert bar_quarters(4, 4) == 4.0
    assert bar_quarters(3, 4) == 3.0
    assert bar_quarters(6, 8) == 3.0
    assert bar_quarters(7, 8) == 3.5


def test_timeline_round_trips_and_works_on_arrays():
    tl = Timeline(t0=10.0, q0=8.0, quarter_s=0.5)
    assert tl.bpm == 120.0
    assert tl.time_of(12.0) == 12.0
    assert tl.position(12.0) == 12.0
    np.testing.assert_allclose(tl.time_of(np.array([8.0, 9.0])), [10.0, 10.5])


def test_internal_clock_bar_times_over_hundreds_of_bars():
    c = InternalClock(bpm=90, beats_per_bar=3, beat_unit=4, start_s=5.0)
    assert not c.follows and not c.lost(1e6)
    for bar in (0, 1, 17, 499):
        t = c.timeline.time_of(bar * c.bar_q)
        assert t == pytest.approx(5.0 + bar * 3 * 60 / 90)
        assert math.floor(c.position(t + 0.001) / c.bar_q) == bar
        assert math.floor(c.position(t - 0.001) / c.bar_q) == bar - 1


def test_internal_clock_tempo_change_keeps_the_song_position():
    c = InternalClock(120, start_s=1.0)                    # bar 0 at 1 s, a quarter every 0.5 s
    d = c.with_tempo(90, 3.0)                              # quarter 4 at 3 s
    assert d.bpm == 90 and d.position(3.0) == pytest.approx(4.0)
    assert d.position(3.0 + 60 / 90) == pytest.approx(5.0)      # then at the new tempo
    assert d.timeline.time_of(4.0) == pytest.approx(c.timeline.time_of(4.0))
    early = c.with_tempo(90, 0.5)                          # before the song starts: it starts as planned
    assert early.timeline.time_of(0.0) == pytest.approx(1.0) and early.bpm == 90
    with pytest.raises(ValueError, match="bpm must be in 20..400"):
        c.with_tempo(500, 3.0)


def test_internal_clock_rejects_absurd_tempo():
    with pytest.raises(ValueError, match="bpm"):
        InternalClock(bpm=0)


def test_follower_is_stopped_until_start_and_first_tick():
    f = ClockFollower()
    _, seen = tick_times(120, 48)
    feed_ticks(f, seen[:24])                 # clock while stopped: tempo known, not running
    assert not f.running and f.timeline is None and f.position(seen[23]) is None
    assert f.bpm == pytest.approx(120, rel=2e-3)
    f.feed("start", seen[23] + 0.001)
    assert not f.running                    # Start arms; the next clock is position 0
    f.feed("clock", seen[24])
    assert f.running and f.position(seen[24]) == pytest.approx(0.0, abs=PERIOD_S / 0.5)  # 1 period


@pytest.mark.parametrize("bpm, bars", [(60.0, 100), (97.5, 200), (174.0, 300)])
def test_follower_tempo_and_bar_prediction_over_hundreds_of_bars(bpm, bars):
    f = ClockFollower()
    n = bars * 4 * PPQN
    ideal, seen = tick_times(bpm, n)
    f.feed("start", ideal[0] - 0.01)
    errors = []
    for i, t in enumerate(seen):
        f.feed("clock", float(t))
        if i >= PPQN and i % PPQN == 5:      # a few ticks into each beat, predict the next bar line
            bar = i // (4 * PPQN) + 1
            errors.append(f.timeline.time_of(bar * f.bar_q) - ideal[0] - bar * 4 * 60 / bpm)
    errors = np.abs(errors)
    assert f.bpm == pytest.approx(bpm, rel=1e-3)
    # Arrival jitter is up to one period (1.33 ms); the fit sees through it to the period's mean lag.
    assert np.percentile(errors, 99) < PERIOD_S
    assert math.floor(f.position(float(seen[-1])) / f.bar_q) == bars - 1


def test_follower_follows_a_tempo_change_within_one_beat():
    f = ClockFollower()
    a_ideal, a_seen = tick_times(120, 8 * PPQN)
    t_change = a_ideal[-1] + 60 / 120 / PPQN
    b_ideal, b_seen = tick_times(90, 8 * PPQN, t0=t_change)
    f.feed("start", 0.5)
    feed_ticks(f, a_seen)
    feed_ticks(f, b_seen[:PPQN])             # one beat at the new tempo
    assert f.bpm == pytest.approx(90, rel=3e-3)
    # After that beat, the predicted next beat is within a period of the truth.
    q_now = 8 + 1                            # quarters since start at the last tick fed (+1 tick)
    predicted = f.timeline.time_of(q_now + 1 - 1 / PPQN)
    assert abs(predicted - b_ideal[2 * PPQN - 1]) < PERIOD_S


def test_follower_bars_count_from_song_position_and_continue():
    f = ClockFollower(beats_per_bar=3, beat_unit=4)
    _, seen = tick_times(120, 200)
    f.feed("songpos", 0.0, extra=4 * 12 + 2)   # bar 4 (3/4 = 12 sixteenths a bar), 2 sixteenths in
    f.feed("continue", seen[0] - 0.001)
    feed_ticks(f, seen[:PPQN])
    q = f.position(float(seen[0]))
    assert math.floor(q / f.bar_q) == 4 and q - 4 * f.bar_q == pytest.approx(0.5, abs=PERIOD_S / 0.5)
    # Stop, then Continue resumes right after the last tick played.
    f.feed("stop", seen[PPQN] - 0.002)
    assert f.timeline is None and not f.running
    f.feed("continue", seen[PPQN] - 0.001)
    feed_ticks(f, seen[PPQN:PPQN + 3])
    assert f.position(float(seen[PPQN])) == pytest.approx(4 * 3 + 0.5 + 1.0, abs=PERIOD_S / 0.5)


def test_follower_song_position_while_running_is_where_the_next_tick_lands():
    """A DAW's loop: SPP back to bar 1 while the clock runs; the timeline says so at once."""
    f = ClockFollower()
    _, seen = tick_times(120, 400)
    f.feed("start", seen[0] - 0.001)
    feed_ticks(f, seen[:3 * 4 * PPQN])                      # three bars played
    f.feed("songpos", seen[3 * 4 * PPQN] - 0.001, extra=16)  # back to bar 1 (16 sixteenths)
    assert f.position(float(seen[3 * 4 * PPQN])) == pytest.approx(4.0, abs=PERIOD_S / 0.5)
    feed_ticks(f, seen[3 * 4 * PPQN:4 * 4 * PPQN])
    assert math.floor(f.position(float(seen[4 * 4 * PPQN - 1])) / f.bar_q) == 1


def test_follower_stop_while_stopped_keeps_the_song_position():
    f = ClockFollower()
    _, seen = tick_times(120, 100)
    f.feed("start", 0.0)
    feed_ticks(f, seen[:50])
    f.feed("stop", seen[50])
    f.feed("songpos", seen[50] + 0.1, extra=16)             # the DAW locates to bar 1...
    f.feed("stop", seen[50] + 0.2)                          # ...and sends Stop again (it may)
    f.feed("continue", seen[50] + 0.3)
    f.feed("clock", seen[50] + 0.3 + 60 / 120 / PPQN)
    assert f.position(seen[50] + 0.3 + 60 / 120 / PPQN) == pytest.approx(4.0, abs=1e-3)


@pytest.mark.parametrize("dropped", [[500], [500, 501], [300, 700]])
def test_follower_counts_ticks_the_transport_dropped(dropped):
    """A loaded JACK graph can lose a clock message: counted by timing, the song position stays right."""
    f = ClockFollower()
    ideal, seen = tick_times(120, 1000)
    f.feed("start", seen[0] - 0.001)
    keep = np.ones(len(seen), bool)
    keep[dropped] = False
    for i in np.nonzero(keep)[0]:
        f.feed("clock", float(seen[i]))
        if i > max(dropped) + 1:
            assert f.position(float(seen[i])) == pytest.approx(i / PPQN, abs=PERIOD_S / 0.5)


@pytest.mark.parametrize("slower", [2.0, 3.0])
def test_follower_a_sudden_whole_number_slowdown_is_a_tempo_change_not_lost_ticks(slower):
    """Ticks suddenly 2x (3x) apart look like lost ticks for one tick; the next one settles it."""
    f = ClockFollower()
    _, first = tick_times(120, 200)
    _, then = tick_times(120 / slower, 100, t0=float(first[-1]) + 60 / (120 / slower) / PPQN)
    f.feed("start", first[0] - 0.001)
    feed_ticks(f, first)
    feed_ticks(f, then[:30])
    assert f.position(float(then[29])) == pytest.approx((200 + 29) / PPQN, abs=PERIOD_S / 0.25)
    assert f.bpm == pytest.approx(120 / slower, rel=0.02)


@pytest.mark.parametrize("bpm, sd_ms", [(120, 3.0), (174, 2.0), (300, 1.2)])
def test_follower_never_counts_a_late_tick_of_a_jittery_clock_as_lost(bpm, sd_ms):
    """Jitter is not loss: a clock wobbling by a few ms keeps its count exactly."""
    f = ClockFollower()
    rng = np.random.default_rng(0)
    n = 4000
    t = np.sort(1.0 + np.arange(n) * 60 / bpm / PPQN + rng.normal(0, sd_ms / 1e3, n))
    f.feed("start", t[0] - 0.001)
    feed_ticks(f, t)
    assert f.next_tick == n


def test_follower_a_song_position_after_a_counted_lost_tick_starts_clean():
    f = ClockFollower()
    _, seen = tick_times(120, 100, jitter=False)
    f.feed("start", seen[0] - 0.001)
    feed_ticks(f, seen[:48])
    f.feed("clock", float(seen[49]))                        # tick 48 lost: counted
    f.feed("songpos", float(seen[49]) + 0.002, extra=0)      # the DAW loops back to the start...
    f.feed("clock", float(seen[49]) + 1.6 * 60 / 120 / PPQN) # ...its first tick off the old period
    assert f.next_tick == 1                                  # that tick marked position 0


def test_follower_start_restarts_from_zero():
    f = ClockFollower()
    _, seen = tick_times(120, 100)
    f.feed("start", 0.0)
    feed_ticks(f, seen[:60])
    f.feed("start", seen[60] - 0.001)
    f.feed("clock", seen[60])
    assert f.position(float(seen[60])) == pytest.approx(0.0, abs=1e-3)


def test_follower_position_never_runs_ahead_of_the_next_tick():
    f = ClockFollower()
    _, seen = tick_times(120, 30)
    f.feed("start", 0.0)
    feed_ticks(f, seen)
    assert f.position(float(seen[-1]) + 10.0) == pytest.approx(30 / PPQN)


def test_follower_lost_after_two_beats_without_clock():
    f = ClockFollower()
    _, seen = tick_times(120, 48)
    f.feed("start", 0.0)
    feed_ticks(f, seen)
    last = float(seen[-1])
    assert not f.lost(last + 0.9)            # two beats at 120 bpm = 1.0 s
    assert f.lost(last + 1.1)
    f.mark_lost()
    assert not f.running and not f.lost(last + 5)


def test_follower_restarts_tempo_fit_after_a_gap():
    f = ClockFollower()
    _, a = tick_times(120, 48)
    _, b = tick_times(80, 10, t0=float(a[-1]) + 3.0)
    feed_ticks(f, a)
    feed_ticks(f, b)                         # only 10 ticks, but none from before the gap
    assert f.bpm == pytest.approx(80, rel=1e-2)


def test_follower_rejects_unknown_messages():
    with pytest.raises(ValueError):
        ClockFollower().feed("tick", 0.0)


def test_follower_expects_the_first_tick_after_start_then_corrects():
    f = ClockFollower()
    _, seen = tick_times(150, 48)
    feed_ticks(f, seen[:24])                 # tempo known from the clock sent while stopped
    t_start = float(seen[23]) + 0.002
    f.feed("start", t_start)
    tl = f.timeline                          # expected: position 0 one tick after Start
    assert not f.running and tl.q0 == 0.0
    assert tl.t0 == pytest.approx(t_start + 60 / 150 / PPQN, abs=1e-4)
    assert f.position(t_start) <= 0.0
    assert not f.lost(t_start + 0.5) and f.lost(t_start + 1.0)   # two beats at 150 = 0.8 s
    f.feed("clock", float(seen[24]))         # the real first tick, in the DAW's steady stream
    assert f.running and f.timeline.position(float(seen[24])) == pytest.approx(0.0, abs=PERIOD_S / 0.4)
