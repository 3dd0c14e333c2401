"""The soak (``python -m sidl.realtime.live.soak``) in CI: 50 randomized sessions of the real sidl-live
on the real JACK server, recorded by ``jack_midi_dump``, with transport, preset and mode switches, CC
storms, notes played in, the output port vanishing and SIGINT / SIGTERM at random moments. The
issue's target is 1,000 sessions with nothing stuck, crashed or hung (the soak command), and CI
running 50 of them (here)."""
from __future__ import annotations

import pytest
from jackhealth import AlwaysJudged

from sidl.realtime.live import soak

pytestmark = [pytest.mark.jack, pytest.mark.slow]


def test_fifty_random_sessions_leave_no_stuck_note_no_crash_no_hang(jack_server):
    # Before the JACK output wrote its note-offs again (``jackmidi``'s resend), 600 sessions (seed 7)
    # left 25 stuck notes in 14: the JACK graph had lost whole cycles of MIDI at both recorders.
    results = soak.soak(50, seed=0, workers=3)
    s = soak.summary(results, 0.0)
    describe = lambda bad: "\n".join(f"session {r.index}: stuck {r.stuck} crashed {r.crashed} hung {r.hung} "
                                     f"rc {r.rc} [{r.args}] [{r.actions}] {r.ending} {r.why}" for r in bad)
    # A crash or a hang is sidl's whatever the server did: judged even when it missed cycles
    # (a stuck note may be a cycle of MIDI the server dropped, so that one is excused then).
    broken = [r for r in results if r.crashed or r.hung]
    if broken:
        raise AlwaysJudged(describe(broken))
    bad = [r for r in results if r.stuck]
    assert not bad, describe(bad)
    assert s["sessions"] == 50 and s["stuck_notes"] == s["crashes"] == s["hangs"] == 0
    # The sessions did play (a soak of a silent sidl-live would prove nothing); one that is only
    # ever switched, panicked or stopped before its first answer may play nothing (4 of 50 here).
    assert s["notes"] > 200 and s["silent_sessions"] <= 12, s


def test_a_note_on_before_all_notes_off_is_unsilenced():
    on, off = [0x99, 36, 100], [0x89, 36, 0]
    assert soak.unsilenced([(0, on), (1, off)])
    assert not soak.unsilenced([(0, [0xB9, 123, 0]), (1, on), (2, off)])
    assert soak.unsilenced([(0, [0xB0, 123, 0]), (1, on)])        # silenced channel 1, played on 10


STOP_LOOP = """
import os, signal, sys, threading
from sidl.realtime.live.cli import SignalStop
for trial in range(200):
    stop = SignalStop()
    signal.signal(signal.SIGALRM, lambda s, f: stop.set())
    signal.setitimer(signal.ITIMER_REAL, 0.003 + (trial % 7) * 0.0007)
    while not stop.wait(0.001):          # the conductor's loop (engine.run_live)
        pass
print("stopped 200 times")
"""


def test_a_signal_landing_in_the_conductors_wait_stops_it():
    # A threading.Event here hung within ~30 of these stops (the signal handler's set() waits for
    # the lock its own thread holds inside wait()): sidl-live never exited after a Ctrl-C.
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", STOP_LOOP], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "stopped 200 times" in out.stdout, out.stderr
