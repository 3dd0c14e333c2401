"""Timing against real JACK peers: ``sidl-live`` driven by Debian's ``jack_midi_clock`` and recorded
by ``jack_midi_dump``, measured in frames (``python -m sidl.realtime.live.bench --peer-timing``).

Both peers count in the JACK graph's frames: ``jack_midi_clock`` puts each tick at its exact frame,
``jack_midi_dump -a`` prints each event's frame (cycle start + offset), ticks and notes in one file.
So nothing here trusts sidl's own clock or timestamps: a note's error is its frame minus the frame
of the nearest tick, both as the recorder saw them (with ``--quantize`` every note belongs on a 16th,
which is a tick).

Errors are taken against each nearby tick, not a counted grid: under xruns ``jack_midi_clock``
itself drops a tick, moves its phase by a period, or sends two ticks a period apart (all seen on a
loaded 2-core machine), and a counted grid would then be a tick off for the rest of the run. Ticks
are still numbered, by time, to say whether the nearest one is a 16th's: a note that is not is
counted apart (``off_16th``: sidl's position a tick away from the clock master's after such a glitch).

``jack_midi_dump`` itself slips: its frame numbers are its own count of the frames its callback was
given, so a cycle it misses (seen 27 times in 8 s on a loaded CI box) moves every later event a
period earlier. Such slips are found (``_undo_recorder_slips``) and taken out before tick spacing
is judged (``recorder_slips`` counts them); notes are measured against ticks as recorded, which a
slip moves alike. A tick sidl sends late is not mistaken for one: the ticks after it keep their line.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

import numpy as np

from .clock import PPQN
from .jackmidi import midi_port_names

PEER_BPM = 120.0
TICKS_PER_16TH = PPQN // 4
SLIP_FRAMES = 1          # an interval this close to whole periods short may be the recorder's slip...
SLIP_WINDOW = 12         # ...if the ticks on either side of it, this many, show the step
SETTLE_S = 0.3           # after sidl-live exits, the recorder still gets (and prints) its last events
_LINE = re.compile(r"^\s*(\d+):((?: [0-9a-f]{2})+)")


class PeerError(Exception):
    """A peer program is missing or did not come up; one line."""


def need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise PeerError(f"{program} is not installed (Debian: jackd2, jack-midi-clock; or .ci/setup-jack.sh)")
    return path


def read_dump(text: str) -> list[tuple[int, list[int]]]:
    """``jack_midi_dump -a`` lines ("  73920: f8", "1379696: 99 2a 3a note on ...") -> [(frame, bytes)]."""
    events = []
    for line in text.replace("\0", "").splitlines():
        m = _LINE.match(line)
        if m:
            events.append((int(m.group(1)), [int(b, 16) for b in m.group(2).split()]))
    return events


@dataclass(frozen=True)
class PeerTiming:
    """What one recording says, in seconds (frames / sample rate)."""
    errors: np.ndarray        # note-on frame minus its 16th's tick, notes after the first beat
    first_beat: np.ndarray    # the same for the first beat after Start (it waits for the first tick)
    off_16th: int             # note-ons whose nearest tick is not a 16th's (by the ticks' numbering)
    on_period: float          # share of note-ons on a period boundary (frame % period == 0)
    tick_jitter: np.ndarray   # |interval - mean interval| between consecutive ticks, after the first beat
    ticks: int
    tick_glitches: int        # tick intervals off the mean by more than half a period (an xrun's mark)
    frames_per_tick: float    # the recorded ticks' mean spacing after the first beat (nominal: rate * 60 / bpm / 24)
    stuck: int                # note-ons left without a note-off at the end
    recorder_slips: int = 0   # cycles jack_midi_dump missed (its frame count fell a period behind), undone


def is_note_on(d: list[int]) -> bool:
    """A recorded message that starts a note (a note-on of velocity 0 is a note-off)."""
    return len(d) == 3 and d[0] & 0xF0 == 0x90 and d[2] > 0


def measure(events: list[tuple[int, list[int]]], rate: int, period: int) -> PeerTiming:
    """Onset errors of the note-ons in ``events`` against the MIDI clock ticks recorded with them."""
    starts = [f for f, d in events if d[0] in (0xFA, 0xFB)]
    t0 = starts[0] if starts else -1
    ticks = np.array([f for f, d in events if d == [0xF8] and f >= t0], np.int64)
    notes = np.array([f for f, d in events if is_note_on(d) and f >= t0], np.int64)
    if len(ticks) < 8:
        raise PeerError(f"only {len(ticks)} clock ticks recorded")
    # Each tick's number, counted as a follower counts them, except that a gap of two ticks or more
    # (well over 1.75) is a dropped tick. Gaps are judged against the recorded median (the nominal
    # rate * 60 / bpm / 24 frames is not what a clock on another time base delivers: sidl's own clock
    # runs on the machine's clock, and a dummy JACK server's frames do not keep to it).
    gaps = np.diff(ticks)
    per = gaps / np.median(gaps)
    index = np.concatenate([[0], np.cumsum(np.where(per < 1.75, 1, np.round(per))).astype(np.int64)])
    steady = index > PPQN                                  # after the first beat (the start may bunch up)
    # Notes are measured against ticks as recorded (a slip moves a note and its tick alike); the
    # spacing of ticks with the recorder's slips undone.
    spaced, slips = _undo_recorder_slips(ticks, gaps, period)
    ideal = float(np.polyfit(index[steady], spaced[steady], 1)[0]) if steady.sum() > 2 else float(np.median(gaps))
    # Notes after the last tick have nothing to be measured against (the clock stopped before
    # their 16th came): left out.
    notes = notes[notes <= ticks[-1] + ideal / 2]
    at = np.clip(np.searchsorted(ticks, notes), 1, len(ticks) - 1)
    nearest = np.where(notes - ticks[at - 1] <= ticks[at] - notes, at - 1, at)
    err = (notes - ticks[nearest]) / rate
    on_16th = index[nearest] % TICKS_PER_16TH == 0
    first = index[nearest] < PPQN                           # the first beat after Start
    step = (np.diff(index) == 1) & steady[1:]
    jitter = np.abs(np.diff(spaced)[step] - ideal) / rate
    glitches = int((np.abs(np.diff(spaced)[steady[1:]] - ideal) > period / 2).sum())
    return PeerTiming(err[~first], err[first], int((~on_16th[~first]).sum()),
                      float(np.mean(notes % period == 0)) if len(notes) else float("nan"),
                      jitter, len(ticks), glitches, ideal, stuck_notes(events), slips)


def _undo_recorder_slips(ticks: np.ndarray, gaps: np.ndarray, period: int) -> tuple[np.ndarray, int]:
    """Tick frames with the recorder's missed cycles added back (see the module's note), and how many.

    A slip is an interval short by whole periods, to a frame, after which the ticks stay that much
    early: at the spacing of the intervals around it, the ``SLIP_WINDOW`` ticks after it sit that much
    before where those before it put them. (A sender that puts ticks on period boundaries, as rtmidi's JACK
    ports do, has intervals a period short too, but its ticks keep to their line.)"""
    if len(gaps) < 2 * SLIP_WINDOW:
        return ticks, 0
    dev = gaps - np.median(gaps)
    k = np.round(dev / period)
    candidate = (k < 0) & (np.abs(dev - k * period) <= SLIP_FRAMES)
    if not candidate.any():
        return ticks, 0
    slip = np.zeros_like(candidate)
    for i in np.nonzero(candidate)[0]:
        lo, hi = max(0, i + 1 - SLIP_WINDOW), min(len(ticks), i + 1 + SLIP_WINDOW)
        around = np.delete(gaps[lo:hi - 1], i - lo)              # the window's other intervals
        if len(around) == 0:
            continue
        resid = ticks[lo:hi] - np.arange(lo, hi) * around.mean()   # against the local spacing
        step = np.median(resid[i + 1 - lo:]) - np.median(resid[:i + 1 - lo])
        slip[i] = abs(step - k[i] * period) < period / 4
    shift = np.concatenate([[0], np.cumsum(np.where(slip, -k, 0))]) * period
    return ticks + shift.astype(np.int64), int(slip.sum())


def stuck_notes(events: list[tuple[int, list[int]]]) -> int:
    """Note-ons in ``events`` left without a note-off (per channel and key; an off too many is not
    counted against a later on)."""
    sounding: dict[tuple[int, int], int] = {}
    for _, d in events:
        if len(d) == 3 and d[0] & 0xE0 == 0x80:             # note-on or note-off
            key = (d[0] & 0x0F, d[1])
            on = is_note_on(d)
            sounding[key] = sounding.get(key, 0) + 1 if on else max(0, sounding.get(key, 0) - 1)
    return sum(sounding.values())


# -- running the peers ------------------------------------------------------------------------------
def _jack():
    import jack
    return jack


def _wait_port(client, suffix: str, before: set[str], timeout_s: float = 5.0) -> str:
    """The full name of a port ending in ``suffix`` that was not there ``before``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        new = [n for n in midi_port_names(client) if n.endswith(suffix) and n not in before]
        if new:
            return new[0]
        time.sleep(0.05)
    raise PeerError(f"no JACK port *{suffix} appeared within {timeout_s:g} s")


def _stop(proc: subprocess.Popen, sig=signal.SIGINT, timeout_s: float = 5.0) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def dummy_server(period: int, rate: int = 48000):
    """A JACK dummy server of our own at ``period`` frames, its name in JACK_DEFAULT_SERVER meanwhile."""
    name = f"sidl-peer-{period}-{os.getpid()}"
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([need("jackd"), "-n", name, "-d", "dummy", "-r", str(rate), "-p", str(period)],
                            stdout=log, stderr=log, start_new_session=True)
    old = os.environ.get("JACK_DEFAULT_SERVER")
    os.environ["JACK_DEFAULT_SERVER"] = name
    try:
        from .ports import jack_running
        deadline = time.monotonic() + 10
        while not jack_running():
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise PeerError(f"jackd -d dummy -p {period} did not start: "
                                f"{log.read().decode(errors='replace').strip().splitlines()[-1:]}")
            time.sleep(0.05)
        yield name
    finally:
        if old is None:
            os.environ.pop("JACK_DEFAULT_SERVER", None)
        else:
            os.environ["JACK_DEFAULT_SERVER"] = old
        _stop(proc, signal.SIGTERM)
        log.close()


def sidl_live_command(preset: str) -> list[str]:
    return [sys.executable, "-m", "sidl.realtime.live.cli", "--preset", preset]


def run_session(launch: list[str], backend: str, sync: bool, seconds: float,
                bpm: float = PEER_BPM) -> tuple[list[tuple[int, list[int]]], int, int, str]:
    """Run ``launch`` (a sidl-live command line) against real peers for ``seconds`` of playing.

    ``sync``: ``jack_midi_clock -b BPM -B`` drives ``--sync --quantize`` through the JACK transport,
    and the recorder hears the clock and sidl's notes. Otherwise sidl plays on its internal clock
    with ``--send-clock``, and the recorder hears sidl's clock and notes. Returns the recorded
    events, the sample rate, the period and sidl-live's stderr.
    """
    jack = _jack()
    tag = f"{os.getpid()}-{threading.get_ident() % 10000}"
    ctl = jack.Client(f"sidl-peer-ctl-{tag}", no_start_server=True)
    rate, period = ctl.samplerate, ctl.blocksize
    out = tempfile.NamedTemporaryFile("w+", suffix=".txt")
    err = tempfile.TemporaryFile("w+")
    procs: list[subprocess.Popen] = []
    try:
        before = set(midi_port_names(ctl))
        dump_name = f"sidl-peer-dump-{tag}"
        procs.append(subprocess.Popen([need("jack_midi_dump"), "-a", dump_name], stdout=out,
                                      stderr=subprocess.DEVNULL))
        dump_in = _wait_port(ctl, ":input", before)
        args = launch + ["--backend", backend, "--quantize", "--out", dump_in]
        if sync:
            ctl.transport_stop()
            ctl.transport_frame = 0
            procs.append(subprocess.Popen([need("jack_midi_clock"), "-b", f"{bpm:g}", "-B", dump_in],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            args += ["--sync", "--port", _wait_port(ctl, ":mclk_out", before)]
        else:
            args += ["--bpm", f"{bpm:g}", "--send-clock"]
        env = {k: v for k, v in os.environ.items() if k != "MIDO_BACKEND"}
        live = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, env=env)
        procs.insert(0, live)
        deadline = time.monotonic() + 60
        while True:                                         # ready once the banner is out
            err.seek(0)
            text = err.read()
            if "ports open" in text:
                break
            if live.poll() is not None or time.monotonic() > deadline:
                raise PeerError(f"sidl-live did not start: {text.strip().splitlines()[-1:] or live.poll()}")
            time.sleep(0.05)
        if sync:
            time.sleep(1.0)                                 # warm-up done, the transport at frame 0
            ctl.transport_start()
        time.sleep(seconds)
        if sync:
            ctl.transport_stop()
            time.sleep(0.3)
        _stop(live)
        time.sleep(SETTLE_S)                                # its last note-offs reach the recorder
        for p in procs[1:]:
            _stop(p)
        out.seek(0)
        err.seek(0)
        return read_dump(out.read()), rate, period, err.read()
    finally:
        for p in procs:
            _stop(p, signal.SIGKILL)
        if sync:
            ctl.transport_stop()
        ctl.close()
        out.close()
        err.close()
