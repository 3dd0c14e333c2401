"""What sidl-live prints off a terminal (a log file, a service): a status line per 4 bars, one line
at stop, and a hint when --list-ports finds no port. The real CLI, through a real JACK server."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sidl.realtime.live.cli import no_ports_hint

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.jack, pytest.mark.slow]


def test_off_a_terminal_sidl_live_logs_every_4_bars_and_sums_up_at_stop(jack_server):
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "live_standin.py"), "--bpm", "240",
                             "--density", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    try:
        deadline = time.monotonic() + 40      # two bar groups are 8 s at 240 BPM; a busy box is slower
        while sum("atoms/bar" in ln for ln in lines) < 2 and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=10)
    finally:
        proc.kill()
    lines += rest.splitlines()
    err = "\n".join(lines)
    assert proc.returncode == 0, err
    ready = [ln for ln in lines if "first bar ready" in ln]
    assert len(ready) == 1 and ready[0].startswith("sidl-live: first bar ready in "), err   # a line of its own
    status = [ln for ln in lines if "atoms/bar" in ln]
    assert len(status) >= 2, err
    bars = [int(re.search(r"bar +(\d+):", ln).group(1)) for ln in status]
    assert all(b2 - b1 == 4 for b1, b2 in zip(bars, bars[1:])) and all(b % 4 == 1 for b in bars), bars
    assert "\r" not in err                    # no redrawn line in a log
    (summary,) = [ln for ln in lines if ln.startswith("sidl-live: played ")]
    m = re.fullmatch(r"sidl-live: played (\d+) bars, (\d+) notes, (\d+) late sends \(more than 5 ms\), "
                     r"(\d+) bars dropped", summary)
    assert m, summary
    assert int(m.group(1)) >= bars[-1] - 1 and int(m.group(2)) > 16 * 4, summary   # "bar 9:1": 8 played


def test_list_ports_without_ports_says_which_backend_and_what_to_do(jack_server):
    hint = no_ports_hint("rtmidi-jack")
    assert "UNIX_JACK MIDI backend (--backend rtmidi-jack) has no MIDI ports" in hint
    assert "without --port/--out" in hint and "virtual ports 'sidl in' / 'sidl out'" in hint
    assert "JACK MIDI client" in hint and "IAC Driver" in hint
