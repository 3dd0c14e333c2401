"""Whether the JACK server kept its clock while a live test ran, read from the server's own log.

.ci/setup-jack.sh starts the dummy server with its output in ``JACKD_LOG``. A cycle the server could
not run on time leaves a line there: "ProcessGraphAsyncMaster: Process error" when some client was not
done (its events in that cycle are dropped; a "JackEngine::XRun" line per late client follows), or
"JackTimedDriver::Process XRun = N usec" when the dummy driver itself woke late and restarted its
timeline N usec later: by the ten thousand at ~10 usec (timer slack, harmless), but late by a good part
of a period its frames stop being a clock. While cycles are missed by the hundred (CPU steal; no
real-time scheduling on a loaded box) what the live tests assert (notes on a clock master's ticks to
the frame, p99s under a millisecond, every note-off delivered) cannot hold for any sender.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

JACKD_LOG = Path(os.environ.get("TMPDIR", "/tmp")) / "sidl-jackd.log"
# The live tests judge 99th percentiles and "every note": once more than one cycle in a hundred was
# missed, those are the server's. A JACK test that fails past this share is reported as skipped, "not
# judged", with the share and its failure; one that fails below it fails.
MAX_MISSED_SHARE = 0.01
_DRIVER_LATE = re.compile(rb"JackTimedDriver::Process XRun = (\d+) usec")
_CLIENTS_LATE = b"ProcessGraphAsyncMaster: Process error"
_OURS_LATE = re.compile(rb"JackEngine::XRun: client = sidl\S* was not finished")


def count_missed_cycles(log_text: bytes, period_us: float) -> int:
    """Cycles missed in this stretch of the server's log: one per cycle whose clients were late, and the
    periods a driver late by half a period or more lost."""
    late_us = [int(m.group(1)) for m in _DRIVER_LATE.finditer(log_text)]
    return count_dropped_cycles(log_text) + sum(max(1, round(us / period_us)) for us in late_us
                                               if us > period_us / 2)


class AlwaysJudged(AssertionError):
    """A failure that no server trouble explains (a crash, a hang): never reported as not judged."""


class EventsLost(AssertionError):
    """Events sidl sent that a recorder never got, while later ones did (a note-off missing, the All
    Notes Off after it there): a cycle one of our clients (sidl's or a recorder) was late for drops
    them, so such a failure is not judged once the server logged one while the test ran, whatever
    the share; with none logged it fails."""


class TimelineMoved(AssertionError):
    """Too little of a wall-clock test left to judge: most of its events came just after the dummy
    server restarted its timeline later (which sidl's frame clock follows within a fraction of a
    second, ``linkpeer.SETTLE_S``; measured by the recorder, not by sidl). Never judged."""


def count_dropped_cycles(log_text: bytes) -> int:
    """Cycles in this stretch of the log whose late clients' events were dropped."""
    return log_text.count(_CLIENTS_LATE)


def count_ours_late(log_text: bytes) -> int:
    """Late-client lines naming one of sidl's or the tests' own clients (all named "sidl..."): a
    cycle whose events on the way from sidl to a recorder could be dropped."""
    return len(_OURS_LATE.findall(log_text))


def not_judged(missed: int, cycles: int, failure: str | BaseException, dropped: int = 0) -> str | None:
    """Why a failure is not sidl's to answer for (the reason a skip reports), or None when it is.
    ``failure``: the exception (an ``AlwaysJudged`` one is always sidl's) or its first line;
    ``dropped``: times one of our clients was late for a cycle (its events there dropped)."""
    if isinstance(failure, AlwaysJudged):
        return None
    if isinstance(failure, TimelineMoved):
        return f"not judged: {str(failure).strip().splitlines()[0][:200]}"
    lost = isinstance(failure, EventsLost)
    if isinstance(failure, BaseException):
        failure = str(failure).strip().splitlines()[0][:160] if str(failure).strip() else type(failure).__name__
    if lost and dropped > 0:
        return (f"not judged: an event went missing while our JACK clients were late for {dropped} "
                f"cycle{'s' * (dropped > 1)} (their events dropped) during this test (failure: {failure})")
    share = missed / max(cycles, 1)
    if share <= MAX_MISSED_SHARE:
        return None
    return (f"not judged: the JACK server missed {missed} of its {cycles} cycles ({share:.1%}) while this "
            f"ran (failure: {failure})")


class MissedCycles:
    """Cycles missed so far as the log tells it, read on from where the last call stopped."""

    def __init__(self, log: Path = JACKD_LOG):
        self.log, self.offset, self.count = log, 0, 0
        self.dropped = 0                              # late-client lines naming our clients (sidl...)
        self.period_us: float | None = None

    def __call__(self) -> int | None:
        try:
            with open(self.log, "rb") as f:
                f.seek(self.offset)
                text = f.read()
        except OSError:
            return None
        text = text[:text.rfind(b"\n") + 1]          # whole lines only; the rest next time
        self.offset += len(text)
        if self.period_us is None:
            self.period_us = _period_us()
        self.count += count_missed_cycles(text, self.period_us)
        self.dropped += count_ours_late(text)
        return self.count


def server_rate_and_period() -> tuple[int, int] | None:
    """The running JACK server's sample rate and period (frames), or None when none answers."""
    import jack
    try:
        client = jack.Client("sidl-test-rate", no_start_server=True)
    except jack.JackError:
        return None
    try:
        return client.samplerate, client.blocksize
    finally:
        client.close()


def _period_us() -> float:
    rate_and_period = server_rate_and_period()
    if rate_and_period is None:
        return 1e6 * 64 / 48000                       # what .ci/setup-jack.sh starts
    rate, period = rate_and_period
    return 1e6 * period / rate
