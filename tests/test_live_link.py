"""sidl-live --link against a real second Ableton Link peer: a helper process (LinkPython) on this
machine starts the session, changes its tempo and stops it; its beat map, printed in perf_counter
seconds, is the grid sidl must land on (``live.linkpeer``). The figures against the issue's targets
(bar phase p99 <= 1 ms, tempo followed within a beat) are the benchmark's:
``python -m sidl.realtime.live.bench --link-timing``.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jackhealth import TimelineMoved
from sidl.realtime.live.clock import PPQN, Timeline
from sidl.realtime.live.link import LinkClock, host_offset, same_map, song_origin
from sidl.realtime.live.linkpeer import SETTLE_S, Peer, grid_error, run_link_session

ROOT = Path(__file__).resolve().parents[1]
GRID_TOL_S = 0.004        # as tests/test_live_jack.py: two JACK hops on a busy 2-core box; bench has p99


def test_the_song_starts_on_the_first_bar_line_at_or_after_the_session_start():
    assert song_origin(-1.7, 4.0) == 0.0
    assert song_origin(8.0, 4.0) == 8.0
    assert song_origin(8.0 + 1e-5, 4.0) == 8.0            # Link's own start on a bar line, rounded
    assert song_origin(8.01, 4.0) == 12.0
    assert song_origin(2.0, 3.0) == 3.0                     # 6/8: a bar is three quarters


def test_the_host_offset_takes_the_tightest_reading():
    readings = [(10.0, 4_000_000, 10.004), (11.0, 4_999_999, 11.000002), (12.0, 6_000_000, 12.5)]
    assert host_offset(readings) == pytest.approx(11.000001 - 4.999999, abs=1e-9)


def test_a_map_moves_only_when_a_note_a_bar_ahead_would_move():
    a = Timeline(100.0, 8.0, 0.5)
    assert same_map(a, Timeline(101.0, 10.0, 0.5), 101.0, 4.0)          # the same line, anchored elsewhere
    assert not same_map(a, Timeline(101.0, 10.0, 0.5 * 120 / 121), 101.0, 4.0)   # 1 BPM faster
    assert not same_map(a, Timeline(100.0001, 8.0, 0.5), 100.0, 4.0)    # 0.1 ms later


def test_events_just_after_a_server_restart_are_counted_settling_not_judged():
    """A session at 120 BPM, sidl's ticks and 16th notes on its grid, but the notes within the
    recorder's settle window 5 ms late (the server restarted its timeline and sidl's frame clock
    has not followed yet): they are counted, left out of the errors, and the rest are judged."""
    from sidl.realtime.live.linkpeer import MOVED_TOL_S, measure
    maps = np.array([[100.0, 0.0, 120.0], [110.0, 20.0, 120.0]])
    tick, t0 = 0.5 / PPQN, 100.0
    events, moved = [(t0, [0xFA])], [0.0]
    for i in range(24 * 16):                              # 16 beats of ticks, a 16th note on every 6th
        t = t0 + i * tick
        restart = 104.0 <= t < 104.3
        events.append((t, [0xF8]))
        moved.append(0.005 if restart else 0.0)
        if i % 6 == 0:
            events += [(t + 0.005 * restart, [0x99, 36, 100]), (t + 0.05, [0x89, 36, 0])]
            moved += [0.005 if restart else 0.0] * 2
    m = measure(events, maps, 0.0, t_change=107.9, new_bpm=120.0, t_stop=108.0, moved=moved)
    late = sum(104.0 <= t0 + i * tick < 104.3 for i in range(0, 24 * 16, 6))
    assert m.settling_notes == late and m.settling == late + sum(104.0 <= t0 + i * tick < 104.3 for i in range(24 * 16))
    assert len(m.note_error_s) == 64 - late and np.max(np.abs(m.note_error_s)) < 1e-9
    assert MOVED_TOL_S < 0.005
    unmarked = measure(events, maps, 0.0, t_change=107.9, new_bpm=120.0, t_stop=108.0)
    assert unmarked.settling == 0 and np.max(np.abs(unmarked.note_error_s)) == pytest.approx(0.005)


def test_the_link_clock_follows_a_real_peers_start_tempo_and_stop():
    """In-process: the clock's bar lines sit on the peer's, a tempo change reaches it within a
    beat, and the session's Stop is ``lost`` at the stop time."""
    peer = Peer(120.0)
    clock = LinkClock(90.0)
    try:
        peer.wait_for(lambda: peer.peers() >= 1 and clock.peers >= 1, 10.0, "no Link session")
        clock.lost(time.perf_counter())
        assert clock.timeline is None                       # stopped: no map, the engine waits
        peer.send("start 0.2")
        peer.wait_for(lambda: peer.events("start"), 5.0, "no start")

        def poll_until(pred, timeout_s=2.0):       # the conductor's poll: lost(now) every millisecond
            deadline = time.perf_counter() + timeout_s
            while not pred():
                assert time.perf_counter() < deadline, "the clock did not follow"
                clock.lost(time.perf_counter())
                time.sleep(0.001)

        poll_until(lambda: clock.timeline is not None)
        tempo = float(peer.maps()[-1][2])                   # the session's (Link's merge rule decides)
        assert clock.bpm == pytest.approx(tempo)
        tl = clock.timeline
        bars = tl.time_of(np.arange(0, 5) * 4.0)
        assert np.all(np.abs(grid_error(peer.maps(), bars, 1 / 4)) < 1e-4)   # on the peer's bar lines
        peer.send("tempo 150")
        t_change = float(peer.wait_for(lambda: peer.events("tempo"), 5.0, "no tempo change")[0][0])
        poll_until(lambda: clock.bpm == pytest.approx(150.0))
        assert time.perf_counter() - t_change < 60 / 150
        assert clock.timeline is not tl
        q = clock.timeline.position(time.perf_counter())
        later = clock.timeline.time_of(np.ceil(q) + np.arange(8))
        time.sleep(0.1)                                     # the peer prints its new map
        assert np.all(np.abs(grid_error(peer.maps(), later, 1.0)) < 1e-4)
        assert np.all(np.abs(np.diff(later) - 0.4) < 1e-6)
        peer.send("stop")
        peer.wait_for(lambda: peer.events("stop"), 5.0, "no stop")
        poll_until(lambda: clock.lost(time.perf_counter()))           # at the session's stop time
        clock.mark_lost()
        clock.lost(time.perf_counter())
        assert clock.timeline is None
    finally:
        clock.close()
        peer.close()


def test_a_tempo_cc_proposes_the_tempo_to_the_session_and_the_peer_follows(drums):
    """CC 28 = 73 (133 BPM) to an engine on a Link clock: the other peer's session moves to 133
    BPM, within a beat, and our clock reads the new tempo back."""
    from sidl.realtime.controls import Controls
    from sidl.realtime.live.engine import build_engine
    peer = Peer(120.0)
    clock = LinkClock(120.0)
    try:
        peer.wait_for(lambda: peer.peers() >= 1 and clock.peers >= 1, 10.0, "no Link session")
        e, _ = build_engine(drums, Controls(), channel=9, clock=clock)
        t = time.perf_counter()
        assert e.feed(t, [0xB9, 28, 73]) is None
        peer.wait_for(lambda: peer.maps()[-1][2] == pytest.approx(133.0) and peer.maps()[-1][0] > t,
                      5.0, "the peer's session kept its tempo")
        assert time.perf_counter() - t < 60 / 133 + 0.05 + 0.1    # (the peer prints its map every 50 ms)
        clock.lost(time.perf_counter())
        assert clock.bpm == pytest.approx(133.0)
    finally:
        clock.close()
        peer.close()


@pytest.mark.jack
@pytest.mark.slow
def test_sidl_live_link_plays_on_the_peers_bars_follows_its_tempo_and_stops(jack_server):
    # (From a fresh clone it once ended with 2 notes sounding, the recorder 54 xruns behind: cycles
    # the JACK graph lost, which the JACK output's note-off resend now covers. CI once found notes
    # 1.1-4.3 ms early: the recorder then stamped through a frame clock of its own, started before
    # a server restart that sidl's, started after it, never saw; it now stamps the server's timeline.)
    """The real ``sidl-live --link --preset drums-gmd --send-clock --quantize`` (~12 s): its first
    bar is the session's first, every bar line its MIDI clock marks and every note sits on the
    peer's grid, a tempo change mid-bar is followed within a beat, and the session's Stop silences
    and sends MIDI Stop (a DAW following sidl's clock stops with the session). Ticks and notes
    within SETTLE_S of the dummy server restarting its timeline are left out (``settling``)."""
    m, log = run_link_session("drums-gmd")
    assert "Link session: 1 other peer" in log, log
    assert m.session_bpm == pytest.approx(180.0, abs=0.01)        # sidl (--bpm 100) adopted the band's tempo
    assert m.start_bar == 0, (m.start_bar, log)
    assert m.notes_after_stop == 0 and m.sounding == 0
    # (measured 15-40 ms, 1-3 ticks: the JACK output never queues before what it holds already;
    # before, the ticks ran on to the end of the bar and Stop came only when sidl-live quit)
    assert m.midi_stop_s < 0.1 and m.ticks_after_stop <= 6, (m.midi_stop_s, m.ticks_after_stop)
    if len(m.note_error_s) < 40 <= len(m.note_error_s) + m.settling_notes:
        raise TimelineMoved(f"the JACK server restarted its timeline under {m.settling_notes} of sidl's notes "
                            f"(its frame clock follows within {SETTLE_S:.1f} s): {len(m.note_error_s)} left to "
                            f"judge, {len(m.note_error_s) + m.settling_notes} played")
    assert abs(m.start_error_s) < GRID_TOL_S, (m.start_error_s, log)
    assert len(m.bar_error_s) >= 3 and np.all(np.abs(m.bar_error_s) < GRID_TOL_S), m.bar_error_s
    assert np.percentile(np.abs(m.tick_error_s), 99) < GRID_TOL_S
    assert len(m.note_error_s) >= 40 and np.percentile(np.abs(m.note_error_s), 99) < GRID_TOL_S
    assert m.follow_s < m.beat_s, (m.follow_s, m.beat_s)


@pytest.mark.parametrize("code, says", [
    ("import sys; sys.modules['link'] = None", "--link needs Ableton Link for Python: pip install 'LinkPython-extern"),
    ("", "--sync and --link do not go together"),
])
def test_link_user_errors_are_one_line_and_exit_2(code, says):
    """Without LinkPython (the import blocked), and with --sync: one line, exit 2, before any port."""
    args = ["--link"] + (["--sync"] if not code else [])
    r = subprocess.run([sys.executable, "-c", f"{code or 'pass'}; sys = __import__('sys'); "
                        f"from sidl.realtime.live.cli import main; main(sys.argv[1:])", *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and says in r.stderr, r.stderr
