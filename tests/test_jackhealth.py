"""The live tests' judge of a JACK server's health, on lines as jackd 1.9.21 writes them."""
from jackhealth import (MAX_MISSED_SHARE, AlwaysJudged, EventsLost, MissedCycles, TimelineMoved, count_missed_cycles,
                        not_judged)

PERIOD_US = 1e6 * 64 / 48000          # 1333 us
LOG = b"""JACK server starting in realtime mode with priority 10
JackTimedDriver::Process XRun = 11 usec
JackTimedDriver::Process XRun = 900 usec
JackAudioDriver::ProcessGraphAsyncMaster: Process error
JackEngine::XRun: client = sidl-in was not finished, state = Triggered
JackEngine::XRun: client = sidl-out was not finished, state = Running
JackTimedDriver::Process XRun = 660 usec
"""


def test_late_clients_and_a_driver_late_by_half_a_period_count_timer_slack_does_not():
    # 900 us late (> 666) and the cycle whose clients were not done: 2; 11 and 660 us are not
    # missed cycles, and the per-client lines repeat the graph's one.
    assert count_missed_cycles(LOG, PERIOD_US) == 2
    assert count_missed_cycles(LOG, period_us=1e6 * 256 / 48000) == 1


def test_a_failure_is_excused_only_past_the_share():
    cycles = 10_000
    at_limit = round(MAX_MISSED_SHARE * cycles)
    assert not_judged(at_limit, cycles, "assert 1 < 0") is None
    reason = not_judged(at_limit + 1, cycles, "assert 1 < 0")
    assert reason.startswith("not judged: the JACK server missed 101 of its 10000 cycles (1.0%)")
    assert reason.endswith("(failure: assert 1 < 0)")
    assert not_judged(cycles // 2, cycles, AssertionError("stuck\nmore")).endswith("(failure: stuck)")


def test_a_crash_or_hang_is_judged_however_many_cycles_were_missed():
    assert not_judged(10_000, 10_000, AlwaysJudged("session 3: crashed")) is None


def test_only_our_own_late_clients_count_as_dropping_our_events():
    from jackhealth import count_ours_late
    assert count_ours_late(LOG) == 2
    assert count_ours_late(b"JackEngine::XRun: client = jack_midi_clock was not finished, state = Triggered\n") == 0


def test_a_lost_event_is_excused_by_one_dropped_cycle_and_by_nothing_else():
    lost = EventsLost("note-offs of {(9, 36): 1} did not arrive")
    assert not_judged(1, 10_000, lost, dropped=0) is None          # a late driver drops no events
    reason = not_judged(1, 10_000, lost, dropped=1)
    assert reason.startswith("not judged: an event went missing while our JACK clients were late for 1 cycle ")
    assert not_judged(1, 10_000, AssertionError("3 notes late"), dropped=1) is None


def test_too_little_left_after_server_restarts_is_not_judged_whatever_the_share():
    moved = TimelineMoved("the JACK server restarted its timeline under 200 of sidl's ticks and notes")
    assert not_judged(0, 10_000, moved).startswith("not judged: the JACK server restarted its timeline")


def test_the_log_is_read_on_from_where_it_stopped_in_whole_lines(tmp_path):
    log = tmp_path / "jackd.log"
    count = MissedCycles(log)
    assert count() is None                                   # no log: nothing to judge by
    log.write_bytes(LOG + b"JackAudioDriver::ProcessGraph")  # a line still being written
    count.period_us = PERIOD_US
    assert count() == 2 and count.dropped == 2            # sidl-in and sidl-out were late
    with open(log, "ab") as f:
        f.write(b"AsyncMaster: Process error\nJackTimedDriver::Process XRun = 5000 usec\n")
    assert count() == 7 and count.dropped == 2            # 5 ms late: 4 periods; no client named
    assert count() == 7
