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


# .ci/setup-jack.sh starts the dummy server with its output here: its "XRun" lines are cycles the
# server itself missed, which on a contended VM (CPU steal) come by the thousand and take the live
# timing tests' sub-period tolerances with them. The summary says how many came during the run.
JACKD_LOG = Path(os.environ.get("TMPDIR", "/tmp")) / "sidl-jackd.log"
_XRUNS_AT_START = pytest.StashKey[tuple]()    # (the log's xruns, monotonic s) when the run began


def _server_xruns() -> int | None:
    try:
        return JACKD_LOG.read_text(errors="replace").count("XRun")
    except OSError:
        return None


def pytest_sessionstart(session):
    session.config.stash[_XRUNS_AT_START] = (_server_xruns(), time.monotonic())


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    start, t0 = config.stash.get(_XRUNS_AT_START, (None, 0.0))
    now = _server_xruns()
    if start is not None and now is not None and now >= start:
        seconds = time.monotonic() - t0
        terminalreporter.write_line(f"JACK server ({JACKD_LOG}): {now - start} xruns during these "
                                    f"{seconds:.0f} s ({(now - start) / max(seconds, 1):.1f} a second)")


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
