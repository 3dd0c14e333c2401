"""sidl-live: the command line. It parses, opens the ports, runs the engine, and always silences.

User errors (no MIDI system, no such port, bad arguments, a missing preset) print one line on stderr
and exit with code 2; a port that disappears while running stops the engine, silenced, with code 1.
"""
from __future__ import annotations

import faulthandler
import gc
import signal
import sys
import threading
import time
from typing import Callable, Optional

import mido
import numpy as np
import typer

from ..oneline import run_app
from .clock import InternalClock
from .link import LinkClock, LinkMissing, load_link
from ..compose import Composer, default_mode
from ..controls import ALL_NOTES_OFF_CC, MODES, Controls, cc_help
from .engine import FIRST_BAR_LEAD_S, BankEntry, WarmUpError, build_engine, check_together, run_live, status_line
from .ports import PortError, list_ports, open_input, open_output
from .scheduler import Batch, Scheduler

MAX_BEATS_PER_BAR = 32

DEFAULT_PRESET = "drums-gmd"
SILENCE_S = 0.02     # All Notes Off goes out this long after the ports open, or after loading (before the first bar)


class UsageError(Exception):
    """A bad argument or a missing preset: one line for the user, exit code 2."""


def load_bar_model(name: str):
    """The one place the CLI touches presets: whatever it returns must fit ``compose.BarModel``."""
    try:
        from ..preset import PresetError, load_preset
    except ImportError as e:
        raise UsageError(f"presets are not available in this installation ({e})") from e
    try:
        return load_preset(name)
    except PresetError as e:                  # already says which preset and what is wrong
        raise UsageError(str(e)) from e
    except (OSError, ValueError, KeyError) as e:
        raise UsageError(f"cannot load preset {name!r}: {e}") from e


def parse_meter(text: str) -> tuple[int, int]:
    try:
        num, den = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageError(f"--meter must look like 4/4 or 6/8, got {text!r}") from None
    if not 1 <= num <= MAX_BEATS_PER_BAR or den not in (1, 2, 4, 8, 16, 32):
        raise UsageError(f"bad meter {text!r}: 1..{MAX_BEATS_PER_BAR} beats of 1, 2, 4, 8, 16 or 32")
    return num, den


def build_app(load: Callable[[str], object] = load_bar_model) -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)

    @app.command(help="Real-time MIDI from a shift-invariant dictionary preset. "
                      "Live controls: " + cc_help())
    def live(
        port: Optional[str] = typer.Option(
            None, help="input port to open (substring match); default: a virtual 'sidl in'"),
        out: Optional[str] = typer.Option(
            None, help="output port to open (substring match); default: a virtual 'sidl out'. On start "
                       "sidl-live first sends All Notes Off (CC 123) on all 16 channels there: notes a "
                       "killed run (SIGKILL) left sounding stop"),
        list_ports_: bool = typer.Option(False, "--list-ports", help="print the MIDI ports and exit"),
        backend: Optional[str] = typer.Option(
            None, help="jack, alsa, coremidi, winmm or a mido backend name; default: automatic"),
        preset: list[str] = typer.Option(
            [DEFAULT_PRESET], metavar="NAME", help="preset name or folder; repeat it to load several, and MIDI "
                                   "Program Change 1, 2, ... switches between them live"),
        mode: Optional[str] = typer.Option(
            None, help="generate | simplify | echo; default: generate for drums, simplify for piano"),
        bpm: float = typer.Option(120.0, help="tempo of the internal clock"),
        meter: str = typer.Option("4/4", help="time signature"),
        send_clock: bool = typer.Option(
            False, "--send-clock", help="send MIDI clock, start and stop so a DAW can follow"),
        sync: bool = typer.Option(
            False, "--sync", help="follow incoming MIDI clock, start, stop, continue and song position"),
        link: bool = typer.Option(
            False, "--link", help="join an Ableton Link session: its tempo, bars on its phase, start and stop "
                                  "with it (--bpm: our tempo if we start the session; needs LinkPython-extern)"),
        follow: bool = typer.Option(
            False, "--follow", help="generate: answer what is played with a variation of it"),
        keep: int = typer.Option(8, help="simplify / follow: atoms kept per bar"),
        latency: str = typer.Option(
            "bar", help="simplify / echo: 'bar' plays each bar on the next bar, 'beat' each beat on the "
                        "next beat (one-beat atoms; keep counts per beat as keep / beats)"),
        density: float = typer.Option(
            1.0, help="generate: atoms per beat (1: one whole-beat atom, as the meter prior counts them)"),
        variation: float = typer.Option(0.2, help="generate: 0..1"),
        seed: int = typer.Option(0),
        fill_every: int = typer.Option(0, help="generate: a fill every N bars (0: none)"),
        quantize: bool = typer.Option(False, "--quantize", help="no microtiming: every note on the grid"),
        channel: Optional[int] = typer.Option(
            None, help="output channel 1..16; default 10 for drums, 1 for piano"),
        in_channel: Optional[int] = typer.Option(
            None, help="listen to notes, CCs and Program Changes on this channel 1..16 only; default: "
                        "all (a drum preset hears notes on channel 10 only)"),
    ):
        if list_ports_:
            inputs, outputs = list_ports(backend)
            if not inputs and not outputs:
                typer.echo(no_ports_hint(backend))
                return 0
            typer.echo("inputs:\n" + "".join(f"  {n}\n" for n in inputs) +
                       "outputs:\n" + "".join(f"  {n}\n" for n in outputs), nl=False)
            return 0
        if sync and send_clock:
            raise UsageError("--sync and --send-clock do not go together: follow a clock or be one")
        if sync and link:
            raise UsageError("--sync and --link do not go together: follow MIDI clock or a Link session")
        if link:
            try:
                load_link()
            except LinkMissing as e:
                raise UsageError(str(e)) from None
        if mode is not None and mode not in MODES:
            raise UsageError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
        if channel is not None and not 1 <= channel <= 16:
            raise UsageError("--channel must be in 1..16")
        if in_channel is not None and not 1 <= in_channel <= 16:
            raise UsageError("--in-channel must be in 1..16")
        meter_ = parse_meter(meter)
        t_start = time.perf_counter()
        try:
            InternalClock(bpm, *meter_)          # validates the tempo before anything loads
            bank = tuple(BankEntry(m, mode, (channel - 1) if channel is not None else default_channel(m.codec))
                         for m in (load(name) for name in preset))
            first = bank[0]
            check_bank([e.model for e in bank], meter_)   # before any port opens
            controls = Controls(mode=mode or default_mode(first.model.codec), follow=follow, keep=keep,
                                density=density, variation=variation, seed=seed, fill_every=fill_every,
                                quantize=quantize, latency=latency)
        except ValueError as e:
            raise UsageError(str(e)) from None
        return session(first.model, controls, None if sync else bpm, meter_, first.channel, port, out,
                       backend, send_clock, t_start, bank if len(bank) > 1 else (),
                       None if in_channel is None else in_channel - 1, link)

    return app


def no_ports_hint(backend: str | None) -> str:
    """What --list-ports says when the backend has no port at all: which one, and what to do."""
    from .ports import resolve_backend
    asked = backend or "automatic"
    return (f"the {resolve_backend(backend)} MIDI backend (--backend {asked}) has no MIDI ports. "
            "Start sidl-live without --port/--out and it creates virtual ports 'sidl in' / 'sidl out' "
            "(not on Windows: create one with loopMIDI); or start a JACK MIDI client (a synth, a DAW), "
            "or enable the IAC Driver in macOS's Audio MIDI Setup.")


LOG_EVERY_BARS = 4      # off a terminal, one status line per this many bars


def live_status(engine, renderer, scheduler, now: float) -> str:
    """The engine's status line (tempo, bar:beat, mode, atoms per bar, compute and send-lateness
    p99, bars dropped), from what the worker last published."""
    return status_line(engine, renderer.stats, scheduler, now)


def bars_played(engine, now: float) -> int:
    import math
    q = engine.song_q(now)
    return 0 if q is None else max(0, math.floor(q / engine.bar_q))


class StatusLog:
    """A thread that follows the song's bar count for the summary at stop and, when ``out`` is
    given (off a terminal), writes one status line whenever ``every_bars`` more bars have played:
    a log file gets a line per bar group, not a redrawn line that never ends."""

    def __init__(self, engine, renderer, scheduler, out=None, every_bars: int = LOG_EVERY_BARS,
                 poll_s: float = 0.05):
        self.engine, self.renderer, self.scheduler, self.out = engine, renderer, scheduler, out
        self.every_bars, self.poll_s = every_bars, poll_s
        self.bars = 0                      # most bars seen played (a followed clock's Stop resets the song)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sidl-status-log", daemon=True)

    def start(self) -> "StatusLog":
        self._thread.start()
        return self

    def _run(self) -> None:
        logged = 0
        while not self._stop.wait(self.poll_s):
            now = time.perf_counter()
            bars = bars_played(self.engine, now)
            self.bars = max(self.bars, bars)
            if self.out is not None and bars // self.every_bars > logged:
                logged = bars // self.every_bars
                line = live_status(self.engine, self.renderer, self.scheduler, now).lstrip()
                print(f"sidl-live: {line}", file=self.out, flush=True)
            elif bars < logged * self.every_bars:          # a new song (Start, a jump): count again
                logged = bars // self.every_bars

    def close(self) -> str:
        """Stop following; the one summary line sidl-live prints at stop."""
        self._stop.set()
        self._thread.join(timeout=1.0)
        self.bars = max(self.bars, bars_played(self.engine, time.perf_counter()))
        sched, failed = self.scheduler, self.renderer.stats.failed
        return (f"sidl-live: played {self.bars} bars, {sched.notes_sent} notes, {sched.late_sends} late sends "
                f"(more than {sched.LATE_S * 1e3:g} ms), {self.engine.dropped} bars dropped"
                + (f", {failed} failed" if failed else ""))


def check_bank(models, meter: tuple[int, int]) -> None:
    """Every preset fits the meter and can play beside the first (the engine's rule), before ports open."""
    composers = [Composer(m, meter) for m in models]
    for c in composers[1:]:
        check_together(composers[0], c)


def default_channel(codec) -> int:
    """Drums on channel 10 (General MIDI), anything else on channel 1 (0-based numbers)."""
    return codec.spec.channel


def silence_at(t: float) -> Batch:
    """All Notes Off on every channel at ``t``: a run killed with SIGKILL could send no note-offs,
    so whatever it left sounding on this output stops when the next one starts. Not sent at once:
    JACK applies a new connection at a later cycle, and what a port writes before that reaches no
    one (sent right after opening, they were lost in 7 of 50 soak sessions; see ``live.soak``)."""
    msgs = [mido.Message("control_change", channel=ch, control=ALL_NOTES_OFF_CC, value=0) for ch in range(16)]
    return Batch.build([t] * 16, [np.nan] * 16, msgs)


class SignalStop:
    """A stop flag a signal handler may set: ``run_live`` polls ``wait(timeout)`` as a ``threading.Event``.

    Not an Event: ``Event.set()`` takes the Event's lock, and a handler runs on the main thread in
    the middle of whatever it was doing, there ``stop.wait()`` holding that very lock for a moment:
    a Ctrl-C landing then deadlocked sidl-live for good (seen on a plain SIGINT; in a loop of such
    stops, one in ~30). Here nothing takes a lock; the conductor sleeps its poll period."""

    def __init__(self):
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float) -> bool:
        if not self._set:
            time.sleep(timeout)
        return self._set


def session(model, controls, bpm, meter, channel, port, out, backend, send_clock, t_start,
            bank=(), in_channel=None, link=False) -> int:
    """Open, run until a signal, close: every note-on we sent gets its note-off on the way out.

    ``bpm`` None means follow the incoming MIDI clock; ``bank``: presets a Program Change selects;
    ``in_channel`` (0-based, None: all): the one input channel listened to; ``link``: join an
    Ableton Link session, ``bpm`` the tempo we bring to it.
    """
    inp = open_input(port, "sidl-in", backend)
    try:
        outp = open_output(out, "sidl-out", backend)
    except PortError:
        inp.close()
        raise
    t_open = time.perf_counter()
    # The internal clock's first bar starts a moment from now, or once the worker has warmed up
    # (``run_live`` holds it back till then).
    if link:
        lead = "\n" if sys.stderr.isatty() else ""          # off the redrawn status line
        clock = LinkClock(bpm, *meter, on_peers=lambda n: print(
            f"{lead}sidl-live: Link session: {n} other peer{'' if n == 1 else 's'}", file=sys.stderr, flush=True))
    else:
        clock = None if bpm is None else InternalClock(bpm, *meter, start_s=t_open + FIRST_BAR_LEAD_S)
    try:
        engine, renderer = build_engine(model, controls, channel=channel, clock=clock, meter=meter,
                                        send_clock=send_clock, bank=bank, input_latency_s=inp.latency_s,
                                        in_channel=in_channel)
    except Exception as e:                   # a bank that does not fit: one line
        inp.close()
        outp.close()
        raise UsageError(str(e) if isinstance(e, ValueError) else f"cannot play: {type(e).__name__}: {e}") from None
    # Everything loaded so far lives until exit: take it out of the garbage collector's sweeps,
    # which otherwise pause every thread (the send thread included) for longer as the heap grows.
    gc.collect()
    gc.freeze()
    stop = SignalStop()

    def on_signal(signum, _frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    scheduler = Scheduler(outp, latency_s=outp.latency_s).start()
    # (SILENCE_S from now if loading took longer: a message due the moment it is handed over is
    # already late for an output that queues ahead, as the JACK backend does; the first bar is later)
    scheduler.submit(silence_at(max(t_open, time.perf_counter()) + SILENCE_S))
    err = sys.stderr
    old = {}
    try:
        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        waiting = ("waiting for MIDI clock Start" if clock is None else
                   f"Link at {clock.bpm:g} BPM, waiting for the session's Start (start/stop sync)" if link
                   else f"{clock.bpm:g} BPM")
        print(f"sidl-live: {controls.mode} on {codec_name(model, meter)}, in {inp.name!r}, out {outp.name!r}, "
              f"{waiting}; ports open in {(t_open - t_start) * 1e3:.0f} ms", file=err, flush=True)
        if bank:
            print("sidl-live: Program Change switches preset: " + ", ".join(
                f"{i + 1} = {getattr(e.model, 'name', e.model.codec.name)}" for i, e in enumerate(bank)),
                file=err, flush=True)
        prior = renderer.composers[0].prior      # (read before the worker thread starts)
        if prior.source != "preset":             # another meter than the preset's: say whose prior
            print(f"sidl-live: {prior.note}", file=err, flush=True)
        tty = err.isatty()
        # On a terminal the status line is redrawn in place: the ready message first clears it, so
        # the two never share a line. Elsewhere a thread logs one line per LOG_EVERY_BARS bars.
        ready = "\r\x1b[K" if tty else ""
        status_log = StatusLog(engine, renderer, scheduler, None if tty else err).start()
        try:
            reason = run_live(engine, renderer, inp.poll, scheduler, stop, watch=(inp, outp),
                              status=err if tty else None, log=err,
                              on_first_bar=lambda: print(f"{ready}sidl-live: first bar ready in "
                                                         f"{(time.perf_counter() - t_start) * 1e3:.0f} ms",
                                                         file=err, flush=True))
        except WarmUpError as e:             # a preset whose graphs fail on a real bar: one line
            raise UsageError(f"cannot play: {e}") from None
        finally:
            summary = status_log.close()
    finally:
        for s in old:                # from here on a signal must not cut the silencing short
            signal.signal(s, signal.SIG_IGN)
        scheduler.close()            # silences whatever is still sounding
        if link:
            clock.close()
        inp.close()
        outp.close()
        for s, h in old.items():
            signal.signal(s, h)
    print(summary, file=err, flush=True)
    unclosed = [p.name for p in (inp, outp) if getattr(p, "close_timed_out", False)]
    if unclosed:                     # (after the silencing: nothing is left sounding)
        print(f"sidl-live: JACK did not let {unclosed[0]!r} close; leaving it to the exit", file=err)
    if reason:
        print(f"sidl-live: {reason}; stopped and silenced", file=err)
        return 1
    return 0


def codec_name(model, meter: tuple[int, int]) -> str:
    return f"{getattr(model, 'name', model.codec.name)} ({model.codec.name}, {meter[0]}/{meter[1]})"


def main(argv: list[str] | None = None, load: Callable[[str], object] = load_bar_model) -> None:
    """Entry point of ``sidl-live``; ``load`` is injectable so tests can run the real CLI on a stand-in."""
    app = build_app(load)
    faulthandler.enable(all_threads=True)    # a native crash (rtmidi, JACK) prints every thread's stack
    if hasattr(signal, "SIGUSR1"):
        # `kill -USR1 PID` prints every thread's stack to stderr: what to attach to a report of a hang.
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    run_app(lambda: app(args=argv, standalone_mode=False, prog_name="sidl-live"), "sidl-live",
            (PortError, UsageError))

if __name__ == "__main__":
    main()
