"""How many note-offs a stalling JACK graph loses, with and without the JACK output's resend.

``python -m sidl.realtime.live.bench --resend [--seconds S] [--load N] [--runs R] [--json PATH]``

A JACK server that falls behind (a loaded machine, a VM's late timer) loses whole process cycles of
MIDI now and then, at every reader alike. This sends short notes (one every 2 ms, a note-off 0.7 ms
after each note-on, keys and channels in turn) through sidl's frame-accurate JACK output, recorded
by two real ``jack_midi_dump`` clients, and counts the notes each recorder heard start and never
stop (``peers.stuck_notes``). Runs alternate the resend off and on, so the machine's load hits both alike;
``--load N`` adds N busy processes, since a quiet machine may lose nothing in a run. The same with a
C client as the sender (``jack_midiseq``, no sidl at all) is the ``C sender`` row: JACK, not Python,
is what loses the cycles.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

from .jackmidi import midi_port_names
from .peers import PeerError, _stop, _wait_port, need, stuck_notes
from .soak import _Recorder

NOTE_GAP_S = 0.002        # a note every 2 ms: some note-off in most cycles at period 64
NOTE_LEN_S = 0.0007       # note-off this long after its note-on (the next cycle, or the same)


@dataclass(frozen=True)
class LossRun:
    sender: str           # "sidl, resend off" / "sidl, resend on" / "C sender"
    notes: int            # note-ons sent
    stuck: tuple          # notes heard starting and never stopping, per recorder
    resent: int           # note-offs written again
    late: int             # events whose frame had passed when their cycle came
    xruns: int            # xruns the sender's client was told of


class _Recording:
    """Two ``jack_midi_dump`` recorders (the soak's) and a control client: ``with _Recording(tag) as
    rec:`` feed ``rec.ports``; after the block ``rec.stuck`` holds each recorder's stuck notes."""

    def __init__(self, tag: str):
        import jack
        self.ctl = jack.Client(f"sidl-loss-ctl-{tag}", no_start_server=True)
        self._recorders, self.stuck = [], []
        try:
            for i in range(2):
                self._recorders.append(_Recorder(self.ctl, f"sidl-loss-rec{i}-{tag}"))
        except BaseException:
            self._close()
            raise
        self.ports = [r.port for r in self._recorders]

    def __enter__(self) -> "_Recording":
        return self

    def __exit__(self, kind, *_) -> None:
        for r in self._recorders:
            r.stop()
        if kind is None:
            self.stuck = [stuck_notes(r.recordings()[0]) for r in self._recorders]
        self._close()

    def _close(self) -> None:
        for r in self._recorders:
            r.close()
        self.ctl.close()


def sidl_run(seconds: float, resend: bool) -> LossRun:
    """Short notes through ``jackmidi.JackMidiOutput`` (``resend`` on or off) into two recorders.
    A stall long enough to fill the output's queue holds the sender back (a note is skipped, not
    queued without limit), as the live scheduler's bar does."""
    import mido
    from . import jackmidi
    with _Recording(f"{os.getpid()}-{int(resend)}") as rec:
        out = jackmidi.JackMidiOutput(f"sidl-loss-out-{os.getpid()}-{int(resend)}", resend=resend)
        try:
            for p in rec.ports:
                rec.ctl.connect(out.own, p)
            time.sleep(0.3)
            n = skipped = 0
            t0 = time.perf_counter() + 0.05
            while time.perf_counter() - t0 < seconds:
                due = t0 + n * NOTE_GAP_S
                while time.perf_counter() < due - out.lead_s:
                    time.sleep(0.0005)
                key, ch = n % 128, (n // 128) % 16
                n += 1
                if out.ring.head - out.ring.tail > jackmidi.SLOTS // 2:
                    skipped += 1                          # (JACK has stalled: let it catch up)
                    continue
                out.send_at(mido.Message("note_on", channel=ch, note=key, velocity=100), due)
                out.send_at(mido.Message("note_off", channel=ch, note=key), due + NOTE_LEN_S)
            time.sleep(0.3)
        finally:
            out.close()                                   # (after the resends: see close)
        time.sleep(0.3)                                   # the recorders take the last cycles
    return LossRun(f"sidl, resend {'on' if resend else 'off'}", n - skipped, tuple(rec.stuck),
                   out.resent, out.late, out.xruns)


def c_run(seconds: float) -> LossRun:
    """The same recorders fed by Debian's ``jack_midiseq`` (a C client): one note a cycle at period
    64, looped over 100 keys; stuck notes counted the same way."""
    tag = f"{os.getpid()}-c"
    with _Recording(tag) as rec:
        period, rate = rec.ctl.blocksize, rec.ctl.samplerate
        before = set(midi_port_names(rec.ctl))
        name = f"sidl-loss-seq-{tag}"
        args = []
        for i in range(100):                          # note on at each cycle's start, off mid-cycle
            args += [str(period * i), str(20 + i), str(period // 2)]
        seq = subprocess.Popen([need("jack_midiseq"), name, str(100 * period), *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            seq_port = _wait_port(rec.ctl, f"{name}:out", before)
            t0 = time.perf_counter()
            for p in rec.ports:
                rec.ctl.connect(seq_port, p)
            time.sleep(seconds)
            for p in rec.ports:
                rec.ctl.disconnect(seq_port, p)
            wall = time.perf_counter() - t0
            time.sleep(0.2)
        finally:
            _stop(seq, signal.SIGTERM)
    # (a disconnect in mid-note leaves one sounding at each recorder: not a loss)
    stuck = tuple(max(0, s - 1) for s in rec.stuck)
    return LossRun("C sender", int(wall * rate / period), stuck, 0, 0, 0)


def loss_table(seconds: float, runs: int, load: int, json_path: str | None = None) -> list[dict]:
    """The --resend table: ``runs`` rounds of (resend off, resend on, C sender), under ``load`` busy processes."""
    from .ports import jack_running
    if not jack_running():
        raise PeerError("no JACK server is running (jackd -d dummy -r 48000 -p 64 &, or .ci/setup-jack.sh)")
    need("jack_midi_dump"), need("jack_midiseq")
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)]
    rows = []
    try:
        print(f"lost note-offs through a stalling JACK graph: {seconds:g} s a run, {load} busy process(es), "
              f"a note every {NOTE_GAP_S * 1000:g} ms, two jack_midi_dump recorders")
        print(f"{'sender':>18s} {'notes':>6s} {'stuck A':>7s} {'stuck B':>7s} {'resent':>7s} {'late':>6s} {'xruns':>6s}")
        for _ in range(runs):
            for r in (sidl_run(seconds, False), sidl_run(seconds, True), c_run(seconds)):
                print(f"{r.sender:>18s} {r.notes:6d} {r.stuck[0]:7d} {r.stuck[1]:7d} {r.resent:7d} {r.late:6d} {r.xruns:6d}")
                rows.append(asdict(r))
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    if json_path:
        from ..codec.files import write_json_atomic
        write_json_atomic(json_path, rows)
    return rows
