"""The engine on injected time: bars in, bars out, hundreds of bars in milliseconds, no ports."""
import io
import threading
import time

import numpy as np
import pytest

from sidl.realtime.live.clock import PPQN, ClockFollower, InternalClock, Timeline
from sidl.realtime.controls import Controls
from sidl.realtime.live.bars import BarBuffer, BarJob
from sidl.realtime.live.engine import FIRST_BAR_LEAD_S, PANIC, RETIME, BankEntry, build_engine, run_live, status_line
from sidl.realtime.codec.notes import NoteArray
from sidl.realtime.live.scheduler import RecordingOutput, Scheduler

BAR_S_120 = 2.0


def internal_engine(model, controls=Controls(), **kw):
    """The conductor's engine and the worker's renderer, on an internal clock."""
    return build_engine(model, controls, channel=9, clock=InternalClock(120, start_s=1.0), **kw)


def run_bars(engine, renderer, t_end, step=0.005, played=()):
    """Drive conductor + worker synchronously; ``played`` = [(t, raw bytes)] fed at their times."""
    played = sorted(played)
    batches, i = [], 0
    for now in np.arange(0.0, t_end, step):
        while i < len(played) and played[i][0] <= now:
            engine.feed(*played[i])
            i += 1
        for job in engine.due(now):
            batches.append((now, job, renderer.render(job)))
    return batches


def note_events(batch):
    return [(t, m) for t, m in zip(batch.times, batch.messages) if m.type == "note_on"]


def test_bar_buffer_windows_and_held_notes():
    b = BarBuffer()
    b.note_on(-0.1, 36, 100)                   # just before bar 0: belongs to bar 0's window
    b.note_off(0.0, 36)
    b.note_on(3.5, 60, 80)                     # held over the window end
    b.note_on(3.95, 38, 90)                    # in the last half step: next window
    notes = b.take(-0.125, 3.875, 0.0, 4)
    assert notes.start.tolist() == pytest.approx([-0.4, 14.0])
    assert notes.end.tolist() == pytest.approx([0.0, 15.5])
    b.note_off(4.2, 60)                        # its note-on left with the window: ignored
    later = b.take(3.875, 7.875, 4.0, 4)
    assert later.pitch.tolist() == [38] and later.start.tolist() == pytest.approx([-0.2])


def test_internal_clock_bars_are_prepared_before_they_start_and_timed_exactly(drums):
    e, r = internal_engine(drums, Controls(quantize=True))
    batches = run_bars(e, r, 1.0 + 200 * BAR_S_120 - 0.1, step=0.01)   # 200 bars, no sleeping
    assert [job.bar for _, job, _ in batches] == list(range(200))
    for made_at, job, batch in batches:
        bar_t0 = 1.0 + job.bar * BAR_S_120
        assert made_at < bar_t0                                  # ready before the bar line
        for t, m in note_events(batch):
            steps = (t - bar_t0) / (BAR_S_120 / 16)
            assert steps == pytest.approx(round(steps), abs=1e-9)  # on the grid
            assert 0 <= round(steps) < 16 and m.channel == 9


def test_echo_plays_the_played_bar_on_the_next_bar(drums, gmd_bars):
    e, r = internal_engine(drums, Controls(mode="echo", quantize=True))
    step_s = BAR_S_120 / 16
    played = []
    for b, bar in enumerate(gmd_bars[:4]):
        for s, p, v in zip(bar.start, bar.pitch, bar.velocity):
            t = 1.0 + b * BAR_S_120 + s * step_s
            played += [(t, [0x99, int(p), int(v)]), (t + 0.05, [0x89, int(p), 0])]
    batches = run_bars(e, r, 1.0 + 5 * BAR_S_120, played=played)
    by_bar = {job.bar: batch for _, job, batch in batches}
    assert note_events(by_bar[0]) == []                          # nothing played before bar 0
    for b in range(4):
        want = {(int(np.floor(s + 0.5)), int(p)) for s, p in zip(gmd_bars[b].start, gmd_bars[b].pitch)}
        bar_t0 = 1.0 + (b + 1) * BAR_S_120
        got = {(round((t - bar_t0) / step_s), m.note) for t, m in note_events(by_bar[b + 1])}
        assert len(got) >= 0.6 * len(want)
        assert all(step in {s for s, _ in want} for step, _ in got)


def test_beat_latency_echo_plays_each_played_beat_on_the_next_beat(gmd_bars):
    """The shipped drums-gmd preset (one-beat atoms): real GMD beats come back one beat later, on
    their steps; a CC back to bar latency re-aligns the jobs on the next bar line."""
    from sidl.realtime.codec.drums import PITCH_TO_CLASS
    from sidl.realtime.preset import load_preset
    e, r = internal_engine(load_preset("drums-gmd"), Controls(mode="echo", quantize=True, latency="beat"))
    step_s = BAR_S_120 / 16
    played, want = [], set()
    for b, bar in enumerate(gmd_bars[:2]):
        for s, p, v in zip(bar.start, bar.pitch, bar.velocity):
            t = 1.0 + b * BAR_S_120 + s * step_s
            played += [(t, [0x99, int(p), int(v)]), (t + 0.05, [0x89, int(p), 0])]
            want.add((16 * b + int(np.floor(s + 0.5)) + 4, int(PITCH_TO_CLASS[p])))   # one beat later
    batches = run_bars(e, r, 1.0 + 2 * BAR_S_120 + 0.4, played=played)
    assert [(j.bar, j.position) for _, j, _ in batches] == [(b, p) for b in range(3) for p in range(4)][:9]
    got = {(round((t - 1.0) / step_s), int(PITCH_TO_CLASS[m.note])) for _, _, batch in batches
           for t, m in note_events(batch)}
    assert len(got & want) >= 0.95 * len(want) and len(got - want) <= 0.05 * len(got)
    assert e.feed(1.0 + 2 * BAR_S_120 + 0.6, [0xB9, 27, 0]) == PANIC   # back to whole bars
    assert e.due(1.0 + 2 * BAR_S_120 + 0.7) == []                      # bar 2's rest is silent
    assert [(j.bar, j.position) for j in e.due(1.0 + 3 * BAR_S_120)] == [(3, None)]


def test_send_clock_adds_start_and_24_ticks_per_quarter(drums):
    e, r = internal_engine(drums, send_clock=True)
    made = []
    for now in np.arange(0.0, 1.0 + 2 * BAR_S_120, 0.005):
        for job in e.due(now):
            assert "clock" not in [m.type for m in r.render(job).messages]   # notes only: the
        if (ticks := e.take_clock()) is not None:                          # conductor makes the clock
            made.append((now, ticks))
    made_at, first = made[0]
    types = [m.type for m in first.messages]
    assert types[0] == "start" and types.count("clock") == 4 * PPQN and made_at < 1.0
    ticks = first.times[[i for i, m in enumerate(first.messages) if m.type == "clock"]]
    np.testing.assert_allclose(np.diff(ticks), 0.5 / PPQN)
    assert ticks[0] == pytest.approx(1.0) and first.times[0] == pytest.approx(1.0)
    assert [m.type for m in made[1][1].messages] == ["clock"] * 4 * PPQN


def ticks_for(bpm, t0, n):
    return t0 + np.arange(n) * 60.0 / bpm / PPQN


def test_follower_bars_start_at_the_daws_start_and_follow_a_tempo_change(drums):
    e, r = build_engine(drums, Controls(quantize=True), channel=9, clock=None)
    assert e.due(0.5) == []                                    # stopped: nothing to do
    a = ticks_for(120, 1.0, 8 * PPQN)                          # two bars at 120
    b = ticks_for(90, a[-1] + 0.5 / PPQN, 8 * PPQN + 10)       # then 90 BPM
    events = [(0.99, [0xFA])] + [(t, [0xF8]) for t in np.concatenate([a, b])]
    acts = []
    jobs = []
    for t, data in events:
        acts.append(e.feed(t, data))
        for job in e.due(t + 0.001):
            jobs.append((job, r.render(job)))
    assert acts[0] is None and set(acts[1:]) == {RETIME}
    assert [j.bar for j, _ in jobs] == [0, 1, 2, 3, 4]
    # Bar 3 (quarters 12..16) was prepared after a bar at 90: its notes sit on the 90 BPM grid.
    job, batch = jobs[3]
    assert job.timeline.bpm == pytest.approx(90, rel=5e-3)
    bar3_t0 = b[0] + 4 * 60 / 90
    for t, m in note_events(batch):
        steps = (t - bar3_t0) / (60 / 90 / 4)
        assert abs(steps - round(steps)) * 60 / 90 / 4 < 0.002   # within 2 ms of the grid


def test_follower_stop_and_lost_clock_panic(drums):
    e, r = build_engine(drums, Controls(), channel=9, clock=None)
    a = ticks_for(120, 1.0, 3 * PPQN)
    e.feed(0.99, [0xFA])
    jobs = []
    for t in a:
        e.feed(t, [0xF8])
        jobs += e.due(t)
    assert [j.bar for j in jobs] == [0]
    assert e.feed(a[-1] + 0.01, [0xFC]) == PANIC and e.due(a[-1] + 1) == []
    e.feed(a[-1] + 0.02, [0xFB])
    for t in ticks_for(120, a[-1] + 0.03, 5):
        e.feed(t, [0xF8])
    assert e.poll(a[-1] + 0.2) is None
    assert e.poll(a[-1] + 2.0) == PANIC                       # no clock for two beats
    assert e.timeline is None


def test_continue_from_song_position_resumes_at_the_next_bar(drums):
    e, r = build_engine(drums, Controls(), channel=9, clock=None)
    spp = 8 * 16 + 4                                            # SPP: bar 8, one beat in (16ths)
    e.feed(0.5, [0xF2, spp & 0x7F, spp >> 7])                   # 14 bits, 7 per data byte
    e.feed(0.6, [0xFB])
    jobs = []
    for t in ticks_for(120, 1.0, 4 * PPQN):
        e.feed(t, [0xF8])
        jobs += e.due(t)
    assert [j.bar for j in jobs] == [9]


def test_a_loop_jump_by_song_position_restarts_the_bars_there(drums):
    """The DAW loops bars 1-2: at bar 3 it sends SPP back to bar 1 while its clock runs."""
    e, r = build_engine(drums, Controls(density=4.0, quantize=True), channel=9, clock=None)
    bpm, tick_s = 120, 60 / 120 / PPQN
    t, song, acts, jobs = 1.0, 0, [], []
    e.feed(t - tick_s / 2, [0xFA])
    for _ in range(9 * 4 * PPQN):                            # nine bars of ticks, looping
        if song == 3 * 4 * PPQN:
            acts.append(e.feed(t - tick_s / 2, [0xF2, 16, 0]))     # SPP 16 sixteenths: bar 1
            song = 4 * PPQN
        e.feed(t, [0xF8])
        song += 1
        jobs += e.due(t + tick_s / 2)
        t += tick_s
    assert len(acts) == 3 and set(acts) == {PANIC}          # what was sounding is silenced at the jump
    # Bar 3 is prepared just before each jump (the panic cancels it), then bars 1, 2 again.
    assert [j.bar for j in jobs] == [0, 1, 2] + [3, 1, 2] * 3 + [3]


def test_start_while_running_panics_and_forgets_what_was_played(drums):
    e, r = build_engine(drums, Controls(mode="echo"), channel=9, clock=None)
    tick_s = 60 / 120 / PPQN
    e.feed(1.0 - tick_s / 2, [0xFA])
    for i in range(2 * PPQN):
        e.feed(1.0 + i * tick_s, [0xF8])
        e.due(1.0 + i * tick_s)
    e.feed(1.0 + 1.5 * PPQN * tick_s, [0x99, 38, 100])         # a snare, then a restart
    assert e.feed(1.0 + 2 * PPQN * tick_s, [0xFA]) == PANIC
    assert e.buffer.start == []


def test_a_note_stamped_before_the_window_closed_but_seen_after_is_kept(drums):
    """Input is stamped back by the transport's latency: the window waits for it."""
    e, r = build_engine(drums, Controls(mode="echo"), channel=9, clock=InternalClock(120, start_s=1.0),
               input_latency_s=0.0007)
    close = 1.0 + BAR_S_120 - 0.0625                          # bar 0's window closes half a step early
    e.due(0.99)
    assert e.due(close + 0.0005) == []                        # not yet: input may still be in flight
    e.feed(close - 0.0003, [0x99, 38, 100])                   # seen now, played before the close
    (job,) = e.due(close + e.input_slack_s + 1e-6)
    assert len(job.played) == 1


def test_controls_by_cc_and_panics(drums):
    e, r = internal_engine(drums)
    assert e.feed(0.0, [0xB9, 21, 127]) is None and e.controls.variation == 1.0
    assert e.feed(0.0, [0xB0, 123, 0]) == PANIC
    assert e.feed(0.0, [0xB0, 23, 127]) == PANIC and e.controls.mode == "echo"
    jobs = e.due(1.0)
    assert jobs[0].reset and jobs[0].controls.mode == "echo"
    assert e.change(controls=Controls(mode="simplify")) == PANIC


def test_tempo_cc_retimes_an_internal_clock_and_a_followed_clock_ignores_it(drums):
    """CC 28 = v asks for v + 60 BPM: the internal clock takes it at the CC's time, the song position
    continuous; a bar already cut at the old tempo moves onto the new map in the scheduler (poll
    says RETIME), and the bars after it are cut at the new tempo. A followed MIDI clock's master
    keeps its tempo."""
    from sidl.realtime.controls import TEMPO_CC, apply_cc, tempo_of_cc
    assert tempo_of_cc(0) == 60.0 and tempo_of_cc(127) == 187.0
    assert apply_cc(Controls(), TEMPO_CC, 30) == Controls()     # not a control: the clock's
    e, r = internal_engine(drums)                                 # 120 BPM, bar 0 at 1 s
    sched = Scheduler(RecordingOutput())                          # not started: we read what is pending
    sched.retime(e.timeline)
    (job,) = e.due(2.945)                                         # bar 1, cut at 120 BPM
    assert job.bar == 1
    batch = r.render(job)
    sched.submit(batch, timeline=job.timeline)
    assert e.poll(2.946) is None                                  # the conductor polls every millisecond
    q = e.song_q(2.95)
    assert e.feed(2.95, [0xB9, TEMPO_CC, 30]) is None             # 90 BPM, in bar 0
    assert e.timeline.bpm == pytest.approx(90.0) and e.song_q(2.95) == pytest.approx(q)
    assert e.poll(2.951) == RETIME and e.poll(2.952) is None
    sched.retime(e.timeline)
    pending = sched._remaining()
    assert len(pending) == len(batch)
    assert np.allclose(pending.times, e.timeline.time_of(pending.positions))      # on the new map
    assert pending.times.min() == pytest.approx(2.95 + (4.0 - q) * 60 / 90, abs=0.01)   # bar 1 at 90 BPM
    (later,) = e.due(e.timeline.time_of(8.0 - 0.125) + 0.01)      # bar 2, cut at 90 BPM
    assert later.bar == 2 and later.timeline.bpm == pytest.approx(90.0)
    assert e.feed(4.0, [0xB9, TEMPO_CC, 30]) is None and e.poll(4.001) is None     # the same tempo again
    f, _ = build_engine(drums, Controls(), channel=9, clock=ClockFollower())
    clock = f.clock
    assert f.feed(0.0, [0xB9, TEMPO_CC, 100]) is None and f.clock is clock and f.clock.bpm == pytest.approx(120.0)


def test_a_tempo_cc_before_the_first_bar_keeps_the_start_on_a_bar_line(drums):
    """A controller that dumps its CCs on connect sends CC 28 while the worker warms up, before
    any bar is cut: the song still starts on its first bar line, and start_no_earlier still moves
    it past the warm-up (before the fix it re-anchored mid-song and the hold did nothing)."""
    e, _ = internal_engine(drums)                                 # bar 0 at 1 s
    e.feed(1.2, [0xB9, 28, 40])                                   # 100 BPM, 0.2 s after the start
    assert e.clock.start_q == 0.0 and e.timeline.bpm == pytest.approx(100.0)
    e.start_no_earlier(1.5)                                       # the warm-up ended at 1.45 s
    assert e.clock.start_s == 1.5 and e.song_q(1.5) == 0.0
    (job,) = e.due(1.5)
    assert job.bar == 0 and job.timeline.time_of(0.0) == pytest.approx(1.5)


@pytest.mark.parametrize("sync", [False, True])
def test_a_garbage_stream_is_ignored_and_bars_go_on(drums, sync):
    """What a buggy client can put on a JACK port (empty, status-less, short, data bytes >= 128)
    never raises on the conductor, never puts a control out of range, and is counted."""
    e, r = build_engine(drums, Controls(), channel=9, clock=None if sync else InternalClock(120, start_s=1.0))
    rng = np.random.default_rng(7)
    now = 0.0
    for _ in range(20000):
        now += 0.0005
        e.feed(now, rng.integers(0, 256, int(rng.integers(0, 5))).tolist())
        e.poll(now)
        for job in e.due(now):
            r.render(job)
    assert e.ignored > 10000
    Controls(**vars(e.controls))                      # still valid: __post_init__ checks ranges
    if not sync:                                      # and the engine still plays bars on time
        before = r.compute_s[~np.isnan(r.compute_s)].size
        run_bars(e, r, now + 3 * BAR_S_120)
        assert r.compute_s[~np.isnan(r.compute_s)].size > before


def test_warm_up_leaves_no_trace(drums, piano):
    """The worker warms its renderer before the clock starts; the bars it then plays are the bars a
    cold renderer plays (same seed, same groove), and the timing ring starts empty."""
    def bars(renderer, controls):
        return [[(m.type, m.note, m.velocity) for m in renderer.render(BarJob(b, NoteArray.empty(), controls,
                                                                              Timeline(0.0, 0.0, 0.5))).messages]
                for b in range(6)]
    bank = (BankEntry(drums, None, 9), BankEntry(piano, None, 0))
    controls = Controls(density=2.0, variation=0.5)
    _, cold = internal_engine(drums, controls, bank=bank)
    _, warm = internal_engine(drums, controls, bank=bank)
    warm.warm_up(controls)
    assert np.isnan(warm.compute_s).all() and warm.publish().rendered == 0
    assert bars(warm, controls) == bars(cold, controls)


def test_the_conductor_and_the_worker_share_no_mutable_object(drums, piano):
    """Everything reachable from the conductor's Engine and from the worker's Renderer, apart from
    immutable values (numbers, strings, frozen dataclasses of them), is owned by one side only: the
    models and composers live with the renderer, the engine keeps plain facts about them."""
    import dataclasses

    def reachable(root):
        seen, stack, found = set(), [root], {}
        while stack:
            o = stack.pop()
            if id(o) in seen or isinstance(o, (int, float, str, bytes, bool, type(None), type)):
                continue
            seen.add(id(o))
            frozen = dataclasses.is_dataclass(o) and o.__dataclass_params__.frozen
            if not isinstance(o, (tuple, frozenset)) and not frozen:
                found[id(o)] = o
            if isinstance(o, dict):
                stack += list(o.keys()) + list(o.values())
            elif isinstance(o, (list, tuple, set, frozenset)):
                stack += list(o)
            elif isinstance(o, np.ndarray):
                if o.dtype == object:
                    stack += list(o.ravel())
            elif hasattr(o, "__dict__") or dataclasses.is_dataclass(o):
                stack += list(vars(o).values()) if hasattr(o, "__dict__") else \
                    [getattr(o, f.name) for f in dataclasses.fields(o)]
        return found

    bank = (BankEntry(drums, None, 9), BankEntry(piano, "echo", 0))
    e, r = internal_engine(drums, Controls(mode="generate"), bank=bank)
    for job in e.due(1.0):
        r.render(job)
    e.feed(1.5, [0xC0, 1])
    for job in e.due(1.0 + BAR_S_120):
        r.render(job)
    shared = reachable(e).keys() & reachable(r).keys()
    assert not shared, [type(reachable(e)[i]).__name__ for i in shared]
    assert r.composer.model is piano and not any(m is piano for m in reachable(e).values())


def test_in_channel_listens_to_one_channel_but_always_to_the_clock(drums, piano):
    e, r = build_engine(drums, Controls(mode="echo"), channel=9, clock=None, in_channel=9,
               bank=(BankEntry(drums, None, 9), BankEntry(piano, None, 0)))
    e.feed(0.0, [0xFA])
    e.feed(0.01, [0xF8])
    assert e.timeline is not None                              # the clock has no channel
    for other in ([0x90, 38, 100], [0xB0, 123, 0], [0xC0, 1], [0xB0, 23, 127]):
        assert e.feed(0.02, other) is None                     # channel 1: another instrument's
    assert e.buffer.start == [] and e.controls.mode == "echo" and e.epoch == 0
    e.feed(0.03, [0x99, 38, 100])
    assert e.buffer.pitch == [38]
    assert e.feed(0.04, [0xB9, 123, 0]) == PANIC


def test_a_drum_preset_hears_the_drums_of_an_arrangement_not_its_bass(drums, piano):
    """Without --in-channel a drum preset takes notes from channel 10 only (controls from any); after
    a Program Change to a piano preset, notes count on every channel again."""
    e, r = build_engine(drums, Controls(mode="echo"), channel=9, clock=None,
                        bank=(BankEntry(drums, None, 9), BankEntry(piano, None, 0)))
    e.feed(0.0, [0xFA])
    e.feed(0.01, [0xF8])
    e.feed(0.02, [0x90, 36, 100])                              # a bass note on channel 1
    e.feed(0.02, [0x99, 36, 100])                              # a kick on channel 10
    assert e.buffer.pitch == [36] and len(e.buffer.start) == 1
    assert e.feed(0.03, [0xB0, 23, 0]) == PANIC                # a CC on channel 1 still counts
    e.feed(0.04, [0xC0, 1])                                    # the piano preset
    e.feed(0.05, [0x90, 60, 100])
    assert e.buffer.pitch[-1] == 60


@pytest.mark.parametrize("latency, cc", [("bar", 127), ("beat", 0)])
def test_send_clock_neither_repeats_nor_skips_a_tick_when_the_job_length_changes(drums, latency, cc):
    """CC 27 switches simplify between bar and beat jobs mid-bar; the DAW still gets 24 ticks a beat."""
    now = [0.0]
    out = RecordingOutput(clock=lambda: now[0])
    sched = Scheduler(out, clock=lambda: now[0])
    e, r = build_engine(drums, Controls(mode="simplify", latency=latency), channel=9, clock=InternalClock(120),
               send_clock=True)
    for i in range(-100, 12000):
        now[0] = t = i / 1000
        if i == 9250 and e.feed(t, [0xB0, 27, cc]) == PANIC:       # at quarter 18.5
            sched.panic()
        e.due(t)
        if (ticks := e.take_clock()) is not None:
            sched.submit(ticks)
        sched.send_due(t)
    q = np.array([t for t, m in out.sent if m.type == "clock"]) / 0.5
    per_beat = np.bincount(np.floor(q + 1e-6).astype(int))
    assert (per_beat[:23] == PPQN).all(), per_beat


def test_a_second_start_before_the_first_tick_voids_the_bar_made_for_the_first(drums):
    e, r = build_engine(drums, Controls(mode="generate"), channel=9, clock=None)
    e.feed(0.0, [0xFA])
    (first,) = e.due(0.001)
    assert e.feed(0.005, [0xFA]) == PANIC                      # restarted before any tick
    (second,) = e.due(0.006)
    assert first.bar == second.bar == 0 and first.epoch < e.epoch == second.epoch
    assert e.feed(0.5, [0xF8]) is not None and e.feed(0.51, [0xFB]) is None   # Continue while playing


def test_a_late_bar_is_dropped_but_the_clock_kept(drums):
    e, r = internal_engine(drums)
    assert [j.bar for j in e.due(0.99)] == [0]
    assert e.due(1.0 + 3 * BAR_S_120 + 0.1) == []             # bars 1..3: too late, dropped
    assert e.dropped == 3
    assert [j.bar for j in e.due(1.0 + 4 * BAR_S_120)] == [4]  # the clock went on


def test_the_worker_times_every_bar_it_renders(drums):
    """The status line's compute figure covers every rendered bar (how fast: the live benchmark)."""
    e, r = internal_engine(drums, Controls(density=2.0))
    run_bars(e, r, 1.0 + 300 * BAR_S_120, step=0.05)
    stats = r.publish()
    times = r.compute_s[~np.isnan(r.compute_s)]
    assert stats.rendered == len(times) >= 300 and (times > 0).all()
    assert stats.compute_p99_ms == pytest.approx(np.percentile(times, 99) * 1e3)


def test_run_live_sends_on_time_and_silences_on_stop(drums):
    out = RecordingOutput()
    sched = Scheduler(out).start()
    start = time.perf_counter() + 0.05
    e, r = build_engine(drums, Controls(density=4.0, quantize=True), channel=9,
               clock=InternalClock(400, start_s=start), send_clock=True)   # 0.6 s bars
    stop = threading.Event()
    status = io.StringIO()
    threading.Timer(0.8, stop.set).start()
    assert run_live(e, r, list, sched, stop, status=status, status_every_s=0.1) is None
    sched.close()
    start = e.clock.start_s                                # (the first bar waited for the warm-up)
    sent = [(t, m) for t, m in out.sent]
    ons = [(t, m) for t, m in sent if m.type == "note_on"]
    assert len(ons) > 8
    step_s = 60 / 400 / 4
    err = [abs((t - start) / step_s - round((t - start) / step_s)) * step_s for t, _ in ons]
    assert np.median(err) < 0.001
    assert e.controls.mode in status.getvalue() and "\r" in status.getvalue()
    balance = {}
    for _, m in sent:
        if m.type == "note_on":
            balance[m.note] = balance.get(m.note, 0) + 1
        elif m.type == "note_off":
            balance[m.note] = balance.get(m.note, 0) - 1
    assert all(v <= 0 for v in balance.values())               # every note-on got its note-off
    assert [m.type for _, m in sent if m.is_realtime][-1] == "stop"


class StoppingClock:
    """A clock that moves by itself, stops at ``stop_s`` and starts a new song at ``restart_s``
    (known 0.1 s ahead), as an Ableton Link session's Stop and Start do (``link.LinkClock`` answers
    the same questions)."""
    follows = False

    def __init__(self, bpm: float, start_s: float, stop_s: float, restart_s: float):
        self.bpm, self.start_s, self.stop_s, self.restart_s = bpm, start_s, stop_s, restart_s
        self._song = 0                           # 0: the first song, 1: stopped, 2: the second

    @property
    def timeline(self):
        if self._song == 1 and time.perf_counter() >= self.restart_s - 0.1:
            self._song = 2
        return None if self._song == 1 else Timeline(self.restart_s if self._song else self.start_s, 0.0, 60 / self.bpm)

    def position(self, t):
        tl = self.timeline
        return None if tl is None else tl.position(t)

    def lost(self, now):
        return self._song == 0 and now >= self.stop_s

    def mark_lost(self):
        self._song = 1


@pytest.mark.slow
def test_send_clock_stops_a_daw_when_the_session_stops_and_starts_it_again(drums):
    """--link --send-clock: the session's Stop sends MIDI Stop at once, no tick or note after it
    (before, the ticks queued for the rest of the bar went on, and Stop came only on exit); the
    session's next Start sends Start again and the ticks follow it."""
    out = RecordingOutput()
    sched = Scheduler(out).start()
    start = time.perf_counter() + 0.4
    clock = StoppingClock(400, start, start + 1.0, start + 1.6)       # 0.6 s bars: stop mid bar 1
    e, r = build_engine(drums, Controls(density=4.0, quantize=True), channel=9, clock=clock, send_clock=True)
    stop = threading.Event()
    threading.Timer(start + 2.5 - time.perf_counter(), stop.set).start()
    run_live(e, r, list, sched, stop)
    sched.close()
    real = [(t, m.type) for t, m in out.sent if m.is_realtime]
    kinds = [k for _, k in real]
    assert kinds.count("start") == 2 and kinds.count("stop") == 2, kinds
    first_stop = next(t for t, k in real if k == "stop")
    second_start = [t for t, k in real if k == "start"][1]
    # (the conductor sees the stop within a poll or a few, later on a loaded box: a bar is 0.6 s)
    assert clock.stop_s <= first_stop < clock.stop_s + 0.05        # at the session's Stop
    between = [k for t, k in real if first_stop < t < second_start]
    assert between == []                                           # no tick once stopped
    assert abs(second_start - clock.restart_s) < 0.02              # the new song's first bar line
    ticks = [t for t, k in real if k == "clock"]
    assert len([t for t in ticks if t > second_start]) >= 2 * PPQN  # it plays on
    ons = [t for t, m in out.sent if m.type == "note_on" and m.velocity > 0]
    assert not [t for t in ons if first_stop < t < second_start]   # silent while stopped
    assert [t for t in ons if t < clock.stop_s] and [t for t in ons if t > clock.restart_s]
    assert kinds[-1] == "stop"                                     # on the way out


def test_an_internal_clocks_first_bar_waits_for_the_warm_up_and_goes_out_on_time(drums):
    """A cold preset warms up for a while (~300 ms seen): the first bar, due 50 ms after the ports
    opened, used to reach a worker still warming up and go out late. It now starts after the warm-up."""
    out = RecordingOutput()
    sched = Scheduler(out).start()
    start = time.perf_counter() + 0.05
    e, r = build_engine(drums, Controls(density=4.0, quantize=True), channel=9,
                        clock=InternalClock(400, start_s=start), send_clock=True)
    warm_up, ready = r.warm_up, []

    def slow_warm_up(controls):
        time.sleep(0.3)
        warm_up(controls)
        ready.append(time.perf_counter())

    r.warm_up = slow_warm_up
    stop = threading.Event()
    threading.Timer(1.2, stop.set).start()
    assert run_live(e, r, list, sched, stop) is None
    sched.close()
    ons = [t for t, m in out.sent if m.type == "note_on"]
    first_clock = min(t for t, m in out.sent if m.type == "start")
    assert e.clock.start_s >= ready[0] + FIRST_BAR_LEAD_S - 0.002 > start + 0.25
    assert first_clock == pytest.approx(e.clock.start_s, abs=0.002) and ons[0] >= e.clock.start_s - 0.001
    assert sched.late_sends == 0 and len(ons) > 4


def test_run_live_reports_a_vanished_port(drums):
    class Port:
        name = "IAC Bus 1"

        def alive(self):
            return False

    sched = Scheduler(RecordingOutput()).start()
    e, r = internal_engine(drums)
    reason = run_live(e, r, list, sched, threading.Event(), watch=[Port()])
    sched.close()
    assert reason == "MIDI port 'IAC Bus 1' disappeared"


def test_status_line_says_where_we_are(drums):
    e, r = internal_engine(drums)
    line = status_line(e, r.stats, Scheduler(RecordingOutput()), 1.0 + 2.6)
    assert "120.0 bpm" in line and "bar    2:2" in line


def test_first_bar_is_prepared_at_start_before_the_first_tick(drums):
    e, r = build_engine(drums, Controls(quantize=True), channel=9, clock=None)
    ticks = ticks_for(120, 0.0, PPQN + 1)                      # the DAW's clock runs while stopped
    for t in ticks[:PPQN]:
        e.feed(t, [0xF8])
    assert e.due(ticks[PPQN - 1]) == []
    t_start = ticks[PPQN - 1] + 0.01                           # Start between two ticks
    e.feed(t_start, [0xFA])
    jobs = e.due(t_start + 0.001)
    assert [j.bar for j in jobs] == [0]
    batch = r.render(jobs[0])
    assert batch.times.min() >= t_start                        # expected one tick after Start
    assert e.feed(ticks[PPQN], [0xF8]) == RETIME               # the first tick: retime the batch
    assert e.timeline.time_of(0.0) == pytest.approx(ticks[PPQN], abs=0.001)


def test_run_live_mode_change_by_cc_silences_at_once(drums):
    out = RecordingOutput()
    sched = Scheduler(out).start()
    start = time.perf_counter() + 0.02
    e, r = build_engine(drums, Controls(density=4.0), channel=9, clock=InternalClock(400, start_s=start))
    t_cc = start + 0.35                                        # mid-bar
    fed = []

    def poll():                                                # the input: one CC 23 = echo
        if not fed and time.perf_counter() >= t_cc:
            fed.append(time.perf_counter())
            return [(fed[0], [0xB0, 23, 127])]
        return []

    stop = threading.Event()
    threading.Timer(0.9, stop.set).start()
    run_live(e, r, poll, sched, stop)
    sched.close()
    assert e.controls.mode == "echo"
    before = [(t, m) for t, m in out.sent if t <= fed[0] + 0.005]
    after = [(t, m) for t, m in out.sent if t > fed[0] + 0.005]
    sounding = {}
    for _, m in before:
        if m.type in ("note_on", "note_off"):
            sounding[m.note] = sounding.get(m.note, 0) + (1 if m.type == "note_on" else -1)
    assert any(m.type == "note_on" for _, m in before)
    assert all(v <= 0 for v in sounding.values())              # silenced right at the change
    assert not any(m.type == "note_on" for _, m in after)      # echo of nothing played: silence


def test_preset_change_swaps_the_model_on_the_worker_at_the_next_bar(drums, piano):
    e, r = internal_engine(drums, bank=(BankEntry(piano, None, 0),))
    first = e.due(0.99)
    assert r.render(first[0]) is not None and r.composer.model is drums
    assert e.change(preset=1) == PANIC
    assert r.composer.model is drums                           # not yet: the worker swaps it
    job = e.due(1.0 + BAR_S_120)[0]
    assert job.reset
    r.render(job)
    assert r.composer.model is piano


def test_program_change_switches_preset_mode_and_channel_at_the_next_bar(drums, piano):
    bank = (BankEntry(drums, None, 9), BankEntry(piano, None, 0))
    e, r = internal_engine(drums, bank=bank)
    batches = run_bars(e, r, 1.0 + BAR_S_120 - 0.1)
    assert {m.channel for _, m in note_events(batches[-1][2])} == {9}
    assert e.feed(2.5, [0xC0, 5]) is None                      # no such program: ignored
    assert e.feed(2.5, [0xC0, 1]) == PANIC                     # program 2: the piano preset
    assert e.controls.mode == "simplify"                       # the piano preset's own default
    played = [(3.0 + i * 0.25, [0x90, 60 + i, 100]) for i in range(8)]
    played += [(3.1 + i * 0.25, [0x80, 60 + i, 0]) for i in range(8)]
    batches = run_bars(e, r, 1.0 + 3 * BAR_S_120 - 0.1, played=played)
    assert r.composer.model is piano
    notes = [m for _, job, b in batches if job.bar == 2 for _, m in note_events(b)]
    assert notes and {m.channel for m in notes} == {0}          # the played bar, simplified, on channel 1
    assert e.feed(7.5, [0xC0, 0]) == PANIC and e.controls.mode == "generate"


def test_run_live_drops_a_bar_that_fails_and_keeps_going(drums):
    class Flaky:
        """The stand-in, failing to decode its second bar."""
        def __init__(self, inner):
            self.inner, self.calls = inner, 0
            self.codec, self.k, self.usage = inner.codec, inner.k, inner.usage
            self.transitions, self.atom_scale = inner.transitions, inner.atom_scale

        def encode_bar(self, x, k):
            return self.inner.encode_bar(x, k)

        def decode_bar(self, idx, val):
            # The worker warms up on throwaway bars first: fail once, composing bar 1 (made ~0.58 s in).
            if time.perf_counter() > e.clock.start_s + 0.3 and not self.calls:
                self.calls += 1
                raise RuntimeError("onnx says no")
            return self.inner.decode_bar(idx, val)

    out = RecordingOutput()
    sched = Scheduler(out).start()
    start = time.perf_counter() + 0.02
    e, r = build_engine(Flaky(drums), Controls(density=4.0), channel=9, clock=InternalClock(400, start_s=start),
               send_clock=True)
    stop = threading.Event()
    threading.Timer(start + 1.9 - time.perf_counter(), stop.set).start()    # three bars of 0.6 s
    log = io.StringIO()
    run_live(e, r, list, sched, stop, log=log)
    sched.close()
    start = e.clock.start_s                                # (the first bar waited for the warm-up)
    bar_of = [int((t - start + 0.001) // 0.6) for t, m in out.sent if m.type == "note_on"]
    assert r.stats.failed == 1 and "bar 1: RuntimeError: onnx says no" == r.stats.last_error
    assert log.getvalue() == "sidl-live: a bar was dropped (bar 1: RuntimeError: onnx says no)\n"
    assert 0 in bar_of and 1 not in bar_of and 2 in bar_of
    # The clock a DAW follows is kept: every tick of every bar, the failed one too.
    ticks = [int((t - start + 0.001) // 0.6) for t, m in out.sent if m.type == "clock"]
    assert [ticks.count(b) for b in range(3)] == [4 * PPQN] * 3
    assert "failed 1" in status_line(e, r.stats, sched, time.perf_counter())


def test_panic_silences_notes_but_keeps_the_clock_a_daw_follows(drums):
    out = RecordingOutput()
    sched = Scheduler(out).start()
    # Bar 0 starts after the worker's warm-up (run_live holds an internal clock's start for it): a
    # start 50 ms ahead was moved 6 ms on a loaded CI box, and the bars counted here with it.
    start = time.perf_counter() + 0.5
    e, r = build_engine(drums, Controls(density=4.0), channel=9, clock=InternalClock(400, start_s=start),
               send_clock=True)
    stop = threading.Event()
    threading.Timer(start + 1.9 - time.perf_counter(), stop.set).start()    # three bars of 0.6 s
    panic_at = start + 0.9                                                   # the middle of bar 1
    sent_panic = []

    def poll():
        if not sent_panic and time.perf_counter() >= panic_at:
            sent_panic.append(time.perf_counter())
            return [(panic_at, [0xB0, 123, 0])]
        return []

    run_live(e, r, poll, sched, stop)
    sched.close()
    ticks = [int((t - start + 0.001) // 0.6) for t, m in out.sent if m.type == "clock"]
    assert sent_panic and [ticks.count(b) for b in range(3)] == [4 * PPQN] * 3
    ons = [t for t, m in out.sent if m.type == "note_on" and m.velocity > 0]
    assert not [t for t in ons if sent_panic[0] + 0.001 < t < start + 1.2]   # the rest of bar 1: silent
    assert [t for t in ons if t >= start + 1.2]                             # bar 2 plays




def test_bar_buffer_sustain_pedal_holds_released_notes():
    b = BarBuffer()
    b.note_on(0.0, 60, 80)
    b.pedal(0.5, True)
    b.note_off(1.0, 60)                        # released under the pedal: still sounding
    b.note_on(1.5, 64, 70)
    b.note_off(2.0, 64)
    b.pedal(3.0, False)                        # the pedal lifts: both end here
    b.note_on(3.2, 67, 60)
    b.note_off(3.4, 67)
    notes = b.take(-0.125, 3.875, 0.0, 4)
    assert notes.end.tolist() == pytest.approx([12.0, 12.0, 13.6])


def test_engine_feeds_the_pedal_to_the_buffer(piano):
    e, r = build_engine(piano, Controls(mode="simplify"), channel=0, clock=InternalClock(120, start_s=0.0))
    e.feed(0.0, [0x90, 60, 90])
    assert e.feed(0.1, [0xB0, 64, 127]) is None
    e.feed(0.5, [0x80, 60, 0])
    e.feed(1.5, [0xB0, 64, 0])
    job = e.due(2.0 - 0.0625 + e.input_slack_s + 1e-6)[0]
    assert job.played.end.tolist() == pytest.approx([12.0])   # 1.5 s = 3 quarters = 12 steps


def test_the_benchmark_compares_with_another_checkout():
    """`bench --compare DIR` (the README's comparison across commits), here against this checkout."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "sidl.realtime.live.bench", "--preset", "drums-gmd", "--compare",
                        str(root), "--bars", "30"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if " p50 " in line and " p99 " in line]
    assert len(rows) == 2 and "generate, alternated bar by bar (30 bars each)" in r.stdout
