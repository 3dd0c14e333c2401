"""Shared fixtures: the stand-in model, real drum bars from GMD, and a JACK server for `jack` tests."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))   # tests/standin.py, importable as `standin`

from jackhealth import JACKD_LOG, MAX_MISSED_SHARE, MissedCycles, not_judged  # noqa: E402
from standin import drum_model, piano_model  # noqa: E402

DATA = Path(os.environ.get("SIDL_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
JACK_BACKEND = "mido.backends.rtmidi/UNIX_JACK"


@pytest.fixture
def drums():
    return drum_model()


@pytest.fixture
def piano():
    return piano_model()


@pytest.fixture(scope="session")
def gmd_bars():
    """Eight real 4/4 bars of a GMD rock beat, as note arrays in steps from each bar's start."""
    from sidl.realtime.codec.midifile import load_midi, read_score
    path = DATA / "groove" / "drummer1" / "session1" / "102_funk_95_beat_4-4.mid"
    if not path.exists():
        pytest.fail(f"GMD data missing at {path}: set SIDL_DATA to the shared data folder")
    score = read_score(load_midi(path), fold_sustain=False)
    steps = score.notes.scaled(4.0)
    return [steps.window(16.0 * b - 0.5, 16.0 * b + 15.5).scaled(1.0, -0.5) for b in range(1, 9)]


# Live tests are judged only while the JACK server keeps its clock (see jackhealth.py).
_MISSED_AT_START = pytest.StashKey[tuple]()   # (cycles missed as logged, monotonic s) when the run began
_NOT_JUDGED = pytest.StashKey[list]()         # [(test id, why it was not judged)]
_WORST = pytest.StashKey[tuple]()             # (share of cycles missed, test id): the most in one test
_MISSED_IN_TEST = pytest.StashKey[tuple]()    # on an item: (cycles missed, cycles run, of them dropped)
server_missed_cycles = MissedCycles()


def pytest_sessionstart(session):
    session.config.stash[_MISSED_AT_START] = (server_missed_cycles(), time.monotonic())
    session.config.stash[_NOT_JUDGED] = []
    session.config.stash[_WORST] = (0.0, "")


def _uses_jack(item) -> bool:
    return "jack_server" in getattr(item, "fixturenames", ())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    before, t0 = (server_missed_cycles(), time.monotonic()) if _uses_jack(item) else (None, 0.0)
    dropped_before = server_missed_cycles.dropped
    yield
    if before is not None:
        after = server_missed_cycles()
        if after is not None:
            cycles = max(1, round((time.monotonic() - t0) * 1e6 / server_missed_cycles.period_us))
            missed = (after - before, cycles)
            item.stash[_MISSED_IN_TEST] = (*missed, server_missed_cycles.dropped - dropped_before)
            item.config.stash[_WORST] = max(item.config.stash[_WORST], (missed[0] / missed[1], item.nodeid))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    missed = item.stash.get(_MISSED_IN_TEST, None)
    if call.when != "call" or not report.failed or missed is None:
        return
    missed, cycles, dropped = missed
    reason = not_judged(missed, cycles, call.excinfo.value if call.excinfo else "?", dropped)
    if reason is not None:
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] + 1, reason)
        item.config.stash[_NOT_JUDGED].append((item.nodeid, reason))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    start, t0 = config.stash.get(_MISSED_AT_START, (None, 0.0))
    now = server_missed_cycles()
    if start is not None and now is not None and now >= start:
        seconds = time.monotonic() - t0
        terminalreporter.write_line(f"JACK server ({JACKD_LOG}): {now - start} cycles missed during these "
                                    f"{seconds:.0f} s ({(now - start) / max(seconds, 1):.1f} a second)")
    worst, nodeid = config.stash.get(_WORST, (0.0, ""))
    if nodeid:
        terminalreporter.write_line(f"JACK tests: the most cycles missed in one was {worst:.2%} ({nodeid})")
    skipped = config.stash.get(_NOT_JUDGED, [])
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} JACK tests failed while the server missed more than {MAX_MISSED_SHARE:.0%} "
            f"of its cycles, or lost an event while it dropped a cycle's, and are reported as skipped "
            f"(not judged) for it:", red=True)
        for nodeid, reason in skipped:
            terminalreporter.write_line(f"  {nodeid}: {reason}", red=True)


def _jack_running() -> bool:
    from sidl.realtime.live.ports import jack_running
    return jack_running()


@pytest.fixture(scope="session")
def jack_server():
    """A running JACK server (a dummy one started here if none runs) and MIDO_BACKEND set to JACK."""
    proc = None
    if not _jack_running():
        jackd = shutil.which("jackd")
        if jackd is None:
            pytest.fail("jackd is not installed: run .ci/setup-jack.sh")
        proc = subprocess.Popen([jackd, "-d", "dummy", "-r", "48000", "-p", "64"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not _jack_running():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("could not start jackd -d dummy")
            time.sleep(0.05)
    old = os.environ.get("MIDO_BACKEND")
    os.environ["MIDO_BACKEND"] = JACK_BACKEND
    yield JACK_BACKEND
    if old is None:
        os.environ.pop("MIDO_BACKEND", None)
    else:
        os.environ["MIDO_BACKEND"] = old
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=5)
