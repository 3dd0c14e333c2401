"""Scheduler and note tracker against the recording twin: order, timing, retiming and silence."""
import time

import mido
import numpy as np
import pytest

from sidl.realtime.live.clock import Timeline
from sidl.realtime.live.scheduler import Batch, NoteTracker, RecordingOutput, Scheduler


def on(note, ch=9, vel=100):
    return mido.Message("note_on", channel=ch, note=note, velocity=vel)


def off(note, ch=9):
    return mido.Message("note_off", channel=ch, note=note)


class FakeClock:
    def __init__(self, t=0.0):
        self.t = t

    def __call__(self):
        return self.t


def test_batch_sorts_by_time_with_clock_then_offs_first():
    msgs = [on(36), mido.Message("clock"), off(36), on(38)]
    b = Batch.build([1.0, 1.0, 1.0, 0.5], [np.nan] * 4, msgs)
    assert [m.type for m in b.messages] == ["note_on", "clock", "note_off", "note_on"]
    assert b.messages[0].note == 38 and b.times.tolist() == [0.5, 1.0, 1.0, 1.0]


def test_batch_checks_lengths():
    with pytest.raises(ValueError):
        Batch.build([1.0], [], [on(1)])


def test_merging_keeps_time_and_tie_order_whether_batches_overlap_or_follow():
    rng = np.random.default_rng(5)
    kinds = [lambda: mido.Message("clock"), lambda: off(36), lambda: on(36)]
    for _ in range(200):
        parts = []
        for _ in range(2):
            n = int(rng.integers(0, 6))
            start = float(rng.integers(0, 3))             # overlapping, touching or following
            times = start + rng.integers(0, 3, n) * 0.5
            parts.append(Batch.build(times, [np.nan] * n, [kinds[i]() for i in rng.integers(0, 3, n)]))
        merged = parts[0].merged(parts[1])
        want = Batch.build(np.concatenate([p.times for p in parts]), [np.nan] * len(merged),
                           parts[0].messages + parts[1].messages)
        assert merged.times.tolist() == want.times.tolist() and merged.ties.tolist() == want.ties.tolist()
        assert [id(m) for m in merged.messages] == [id(m) for m in want.messages]


def test_note_tracker_counts_restrikes_and_velocity_zero_offs():
    tr = NoteTracker()
    for m in (on(36), on(36), on(38, ch=0), mido.Message("note_on", channel=0, note=38, velocity=0)):
        tr.update(m)
    assert tr.sounding() == 2
    offs = tr.note_offs()
    assert [(m.channel, m.note) for m in offs] == [(9, 36), (9, 36)]
    tr.update(off(99))                        # an unmatched note-off never goes negative
    assert tr.sounding() == 2 and tr.used[[0, 9]].all()


def test_send_due_sends_in_order_only_what_is_due():
    clock = FakeClock()
    out = RecordingOutput(clock)
    s = Scheduler(out, clock=clock)
    s.submit(Batch.build([0.2, 0.1, 0.3], [np.nan] * 3, [on(38), on(36), off(36)]))
    clock.t = 0.15
    assert s.send_due(clock.t) == 1
    clock.t = 0.35
    assert s.send_due(clock.t) == 2
    assert [(m.type, m.note) for m in out.messages()] == [("note_on", 36), ("note_on", 38), ("note_off", 36)]
    assert s.tracker.sounding() == 1
    np.testing.assert_allclose(s.recent_lateness(), [0.05, 0.15, 0.05])


def test_submit_merges_with_pending():
    clock = FakeClock()
    s = Scheduler(RecordingOutput(clock), clock=clock)
    s.submit(Batch.build([1.0, 3.0], [np.nan] * 2, [on(1), on(3)]))
    s.send_due(1.5)
    s.submit(Batch.build([2.0], [np.nan], [on(2)]))
    assert s.pending == 2
    s.send_due(10.0)
    assert [m.note for m in s.output.messages()] == [1, 2, 3]


def test_retime_moves_pending_events_by_position():
    clock = FakeClock()
    s = Scheduler(RecordingOutput(clock), clock=clock)
    tl = Timeline(t0=0.0, q0=0.0, quarter_s=0.5)
    q = np.array([1.0, 2.0, 3.0])
    s.submit(Batch.build(tl.time_of(q), q, [on(1), on(2), on(3)]))
    s.send_due(0.6)                            # the first is gone; two pending
    s.retime(Timeline(t0=0.6, q0=1.0, quarter_s=1.0))   # tempo halves at q=1
    s.send_due(1.55)
    assert len(s.output.sent) == 1
    s.send_due(1.6)
    assert len(s.output.sent) == 2


def test_panic_cancels_pending_and_silences_what_sounds():
    clock = FakeClock()
    out = RecordingOutput(clock)
    s = Scheduler(out, clock=clock)
    s.submit(Batch.build([0.0, 0.0, 1.0, 2.0], [np.nan] * 4,
                         [on(36), on(60, ch=0), off(36), on(40)]))
    s.send_due(0.5)
    out.sent.clear()
    s.panic()
    msgs = out.messages()
    assert {(m.type, m.channel, getattr(m, "note", None)) for m in msgs if m.type == "note_off"} == \
        {("note_off", 9, 36), ("note_off", 0, 60)}
    assert {(m.channel, m.control) for m in msgs if m.type == "control_change"} == {(0, 123), (9, 123)}
    assert s.pending == 0 and s.tracker.sounding() == 0


def test_thread_sends_on_time_and_close_silences():
    out = RecordingOutput()
    s = Scheduler(out).start()
    t0 = time.perf_counter() + 0.02
    times = t0 + np.arange(20) * 0.004
    msgs = [on(36 + i % 2) if i % 2 == 0 else off(36) for i in range(20)]
    s.submit(Batch.build(times, [np.nan] * 20, msgs))
    s.submit(Batch.build([t0 + 1.0], [np.nan], [on(50)]))   # far future: must be dropped at close
    time.sleep(times[-1] - time.perf_counter() + 0.01)
    s.submit(Batch.build([time.perf_counter()], [np.nan], [on(49)]))  # left sounding
    time.sleep(0.01)
    s.close()
    sent_t = np.array([t for t, m in out.sent[:20]])
    late = sent_t - times
    assert late.min() >= 0                     # never early
    assert np.median(late) < 0.0005            # sleep-then-spin: well under a millisecond
    notes = [m for _, m in out.sent if m.type.startswith("note")]
    assert all(m.note != 50 for m in notes)
    assert notes[-1].type == "note_off" and notes[-1].note == 49
    assert s.tracker.sounding() == 0


def test_close_says_all_notes_off_again_where_a_panic_silenced_a_moment_later():
    """A Stop's panic just before exit leaves nothing for close's own panic: the repeat still comes,
    a few periods after, so one dropped cycle cannot swallow the only All Notes Off."""
    out = RecordingOutput()
    s = Scheduler(out)
    s.submit(Batch.build([0.0], [np.nan], [on(36)]))
    s.send_due(time.perf_counter())
    s.panic()
    t_panic = time.perf_counter()
    s.close()
    repeats = [(t, m) for t, m in out.sent if m.type == "control_change" and m.control == 123 and t > t_panic]
    assert [m.channel for _, m in repeats] == [9]
    assert repeats[0][0] - t_panic >= 0.009


def test_output_failure_stops_the_thread_and_is_reported():
    class Broken:
        def send(self, msg):
            raise OSError("port went away")

    s = Scheduler(Broken()).start()
    s.submit(Batch.build([time.perf_counter()], [np.nan], [on(36)]))
    deadline = time.perf_counter() + 1.0
    while s.error is None and time.perf_counter() < deadline:
        time.sleep(0.002)
    assert isinstance(s.error, OSError)
    s.close()                                  # closing after a failure does not raise
