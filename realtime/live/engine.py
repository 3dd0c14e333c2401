"""The live engine: clock -> bar buffer -> encode -> edit -> decode -> scheduled sends for the next bar.

Four threads, each with one job and its own state:

* the MIDI backend's real-time thread only queues incoming messages (inside rtmidi, see ``ports``);
* the conductor (``run_live``, the caller's thread) owns the ``Engine``: the transport, the clock,
  the controls and the bar buffer. It polls the input every millisecond: clock messages move the
  clock, notes go into the bar buffer stamped with their song position, CCs change the controls
  and a Program Change picks a preset of the bank. When a bar's input window closes it hands an
  immutable ``BarJob`` to
* the worker (``render.Worker``), which owns the ``Renderer``: the composers (the model's encode and
  decode, never on the input thread), the output channel and the message table. It submits an
  immutable ``Batch`` to
* the ``Scheduler``'s thread, which sends each message at its absolute time.

A bar's input window closes half a grid step before the bar line: a note played there is rounded
by the codec to the next bar's first step anyway, and the half step (62 ms at 120 BPM) is the
worker's budget to prepare bar N+1 before it starts. With ``latency="beat"``, simplify and echo
work the same way one code position (a beat) at a time: each beat played comes back on the next.
Bars are counted from the song start: our own first bar, or the DAW's Start / Song Position
Pointer when following its clock (``--sync``).

Policy when late, or when composing a bar fails: that bar is dropped, the clock is kept.
Whatever stops the engine (MIDI Stop, lost clock, CC 123, a mode or preset change, a vanished port,
Ctrl-C) silences every note it started: each goes through ``Engine.reset(reason)``.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, replace

import mido
import numpy as np

from ..codec.midifile import SUSTAIN_CC
from ..codec.spec import Codec
from ..compose import BarModel, Composer, default_mode
from ..controls import ALL_NOTES_OFF_CC, TEMPO_CC, Controls, apply_cc, tempo_of_cc
from .bars import BarBuffer, BarJob
from .clock import PPQN, ClockFollower, InternalClock, Timeline, bar_quarters
from .render import Renderer, RenderStats, Worker
from .scheduler import TIE_REALTIME, Batch, Scheduler

PANIC, RETIME = "panic", "retime"         # what the conductor must do after feed()/poll()
POLL_S = 0.001                            # the conductor looks at its input this often
FIRST_BAR_LEAD_S = 0.05                   # an internal clock's first bar: this long after the worker is ready


@dataclass(frozen=True)
class Reset:
    """What one kind of reset forgets, besides voiding the jobs made before it (every reset does)."""
    position: bool      # where the next job is: counted again from the song position
    song: bool          # --send-clock: the song is over, a new one starts with Start
    played: bool        # the notes in the bar buffer
    groove: bool        # the worker forgets the groove it was varying (the next job says so)


RESETS = {
    "panic": Reset(position=False, song=False, played=False, groove=False),      # CC 123
    "relocate": Reset(position=True, song=False, played=True, groove=False),     # SPP or Start while playing
    "stop": Reset(position=True, song=True, played=True, groove=False),          # MIDI Stop, clock lost
    "mode": Reset(position=False, song=False, played=False, groove=True),        # mode, follow or latency
    "preset": Reset(position=False, song=False, played=False, groove=True),      # Program Change
}


def check_together(first: Composer, other: Composer) -> None:
    """Presets played together (a bank) share a grid, and an atom length (``--latency beat`` counts
    jobs in code positions); ValueError naming the one that does not."""
    a, b = first.model.codec.steps_per_beat, other.model.codec.steps_per_beat
    name = getattr(other.model, "name", other.model.codec.name)
    if a != b:
        raise ValueError(f"{name} has {b} steps per beat, not {a}: presets played together must share a grid")
    if first.stride != other.stride:
        raise ValueError(f"{name} has atoms of {other.stride} steps, not {first.stride}: presets played "
                         f"together must share an atom length")


@dataclass(frozen=True)
class BankEntry:
    """A preset a MIDI Program Change can switch to: its model, its mode (None: the preset's
    default) and its output channel (0-based)."""
    model: BarModel
    mode: str | None
    channel: int


@dataclass(frozen=True)
class Slot:
    """What the conductor knows of a preset it can switch to: plain facts, never the model."""
    name: str
    codec: Codec             # in the engine's meter
    positions: int           # code positions per bar
    mode: str                # its mode on a switch
    channel: int
    reads_channel: int | None = None   # the only channel its notes are heard on, unless --in-channel


def build_engine(model: BarModel, controls: Controls, *, channel: int, clock, meter: tuple[int, int] = (4, 4),
                 send_clock: bool = False, bank: tuple[BankEntry, ...] = (), input_latency_s: float = 0.0,
                 in_channel: int | None = None) -> tuple["Engine", Renderer]:
    """The conductor's ``Engine`` and the worker's ``Renderer`` for ``model`` (and a bank of presets a
    Program Change selects). Every preset is checked and its composer built here, before any thread
    starts; from then on the composers belong to the renderer and the engine keeps only facts."""
    if not 0 <= channel <= 15 or not (in_channel is None or 0 <= in_channel <= 15) \
            or any(not 0 <= e.channel <= 15 for e in bank):
        raise ValueError("channel must be in range 0..15")
    composers = [Composer(model, meter)]
    for entry in bank:
        found = next((c for c in composers if c.model is entry.model), None)
        composers.append(found or Composer(entry.model, meter))
        check_together(composers[0], composers[-1])
    slots = tuple(Slot(getattr(c.model, "name", c.model.codec.name), c.codec, c.positions,
                       (e.mode if e is not None else None) or default_mode(c.model.codec),
                       e.channel if e is not None else channel, c.codec.spec.reads_channel)
                  for c, e in zip(composers, (None,) + tuple(bank)))
    engine = Engine(slots, controls, clock=clock if clock is not None else ClockFollower(*meter),
                    meter=meter, send_clock=send_clock, input_latency_s=input_latency_s, in_channel=in_channel)
    return engine, Renderer(composers, channel, bar_quarters(*meter))


class Engine:
    """The conductor's state: bars in, jobs out, on injected time (``feed``, ``poll``, ``due``, ``take_clock``).

    ``slots[0]`` is the preset playing first; ``slots[1 + n]`` is what Program Change n selects.
    """

    def __init__(self, slots: tuple[Slot, ...], controls: Controls, *, clock: InternalClock | ClockFollower,
                 meter: tuple[int, int] = (4, 4), send_clock: bool = False, input_latency_s: float = 0.0,
                 in_channel: int | None = None):
        self.slots = slots
        self.slot = 0                              # the preset playing (or asked for, at the next job)
        self.in_channel = in_channel               # None: notes and controls from every channel
        self.controls = controls
        self.clock = clock
        self.send_clock = send_clock
        self.bar_q = bar_quarters(*meter)
        self.spq = slots[0].codec.steps_per_beat  # grid steps per quarter note (shared by the bank)
        self.half_q = 0.5 / self.spq              # the input window closes this early
        # ...and is taken this long after it closes: input is stamped back by the transport's
        # latency, so a note played just before the close is only seen a little after it.
        self.input_slack_s = input_latency_s + 2 * POLL_S
        self.buffer = BarBuffer()
        self.dropped = 0                          # bars skipped because we were late
        self.ignored = 0                          # malformed incoming messages
        self.epoch = 0                            # resets so far: jobs made before the last one are void
        self._next: int | None = None            # the next job, counted in jobs of _job_q from the song start
        self._job_q = self.bar_q                  # quarters one job covers: a bar, or a code position
        self._started = False                     # --send-clock: Start queued since the song start
        self._song_ended = False                  # --send-clock: a song we queued Start for ended; Stop is owed
        self._ticked: int | None = None           # --send-clock: ticks made so far, up to this one
        self._cut: tuple[float, float] | None = None   # quarters covered by the jobs cut since the song start
        self._polled: Timeline | None = None     # a clock that moves by itself: its map at the last poll
        self._change: dict = {}                   # what the next job tells the worker: reset, preset, channel
        self._clock_msg, self._start_msg = mido.Message("clock"), mido.Message("start")

    @property
    def codec(self) -> Codec:
        return self.slots[self.slot].codec

    @property
    def timeline(self) -> Timeline | None:
        return self.clock.timeline

    def song_q(self, t: float) -> float | None:
        """Quarter notes since the song start at ``t`` (None while stopped)."""
        return self.clock.position(t) if self.clock.timeline is not None else None

    @property
    def position_q(self) -> float:
        """Quarter notes one code position lasts (a beat for one-beat atoms)."""
        return self.bar_q / self.slots[self.slot].positions

    def current_epoch(self) -> int:
        return self.epoch

    # -- input ----------------------------------------------------------------------------------
    def feed(self, t: float, data: list[int]) -> str | None:
        """One incoming MIDI message (raw bytes, stamped ``t``); returns PANIC, RETIME or None.

        Anything malformed (empty, no status byte, too short, a data byte >= 128: what a buggy
        client can put on a JACK port) is ignored and counted in ``ignored``."""
        if not data or data[0] < 0x80:
            self.ignored += 1
            return None
        status = data[0]
        if status >= 0xF0:
            if status >= 0xF8 and len(data) != 1:   # real-time messages are one byte
                self.ignored += 1
                return None
            return self._clock_message(status, t, data) if self.clock.follows else None
        if self.in_channel is not None and status & 0x0F != self.in_channel:
            return None                            # another instrument's channel (clock is not channelled)
        kind = status & 0xF0
        if kind in (0x80, 0x90) and self.in_channel is None and self.slots[self.slot].reads_channel is not None \
                and status & 0x0F != self.slots[self.slot].reads_channel:
            return None                            # a drum preset hears drums (channel 10), not the bass
        need = 2 if kind == 0xC0 or kind == 0xD0 else 3
        if len(data) < need or data[1] > 127 or data[need - 1] > 127:
            self.ignored += 1
            return None
        if kind == 0x90 and data[2] > 0:
            q = self.song_q(t)
            if q is not None:
                self.buffer.note_on(q, data[1], data[2])
        elif kind == 0x80 or kind == 0x90:
            q = self.song_q(t)
            if q is not None:
                self.buffer.note_off(q, data[1])
        elif kind == 0xC0:
            if data[1] + 1 < len(self.slots):      # Program Change n: the bank's n-th preset
                return self.change(preset=data[1] + 1)
        elif kind == 0xB0:
            if data[1] == ALL_NOTES_OFF_CC:
                return self.reset("panic")
            if data[1] == SUSTAIN_CC:
                self.buffer.pedal(self.song_q(t), data[2] >= 64)
                return None
            if data[1] == TEMPO_CC:
                self.set_tempo(tempo_of_cc(data[2]), t)
                return None
            new = apply_cc(self.controls, data[1], data[2])
            changed_mode = (new.mode, new.follow, new.latency) != (self.controls.mode, self.controls.follow,
                                                                   self.controls.latency)
            self.controls = new
            if changed_mode:
                return self.reset("mode")
        return None

    def _clock_message(self, status: int, t: float, data: list[int]) -> str | None:
        f = self.clock
        if status == 0xF8:
            f.feed("clock", t)
            return RETIME if f.running else None
        if status == 0xFB and f.running:           # Continue while playing: nothing to continue
            return None
        if status == 0xFA or status == 0xFB:
            playing = f.running or f.armed         # (a second Start before the first tick too)
            f.feed("start" if status == 0xFA else "continue", t)
            self._next = None                      # due() picks the bar from the expected position
            return self.reset("relocate") if playing else None   # a restart without Stop: start over
        if status == 0xFC:
            f.feed("stop", t)
            return self.reset("stop")
        if status == 0xF2 and len(data) == 3 and data[1] < 0x80 and data[2] < 0x80:
            playing, before = f.running or f.armed, f.next_tick
            f.feed("songpos", t, data[1] | (data[2] << 7))
            if playing and f.next_tick != before:  # a jump while playing (a DAW's loop): start over there
                return self.reset("relocate")
        return None

    def poll(self, now: float) -> str | None:
        """Housekeeping between messages: a followed clock silent for two beats stops us (so does
        an Ableton Link session's Stop); a clock that moves by itself (Link: a peer changed the
        tempo) returns RETIME, as a followed clock's tick does through ``feed``."""
        if self.clock.lost(now):
            self.clock.mark_lost()
            return self.reset("stop")
        if not self.clock.follows:
            tl, before = self.clock.timeline, self._polled
            self._polled = tl
            if tl is not None and before is not None and tl != before:
                return RETIME
        return None

    # -- resets -------------------------------------------------------------------------------
    def reset(self, reason: str) -> str:
        """The one way anything is silenced: jobs made before now are void (a bar the worker is
        composing is not submitted), and ``RESETS[reason]`` says what else is forgotten. The caller
        then panics the scheduler, so nothing from before a reset plays after it."""
        r = RESETS[reason]
        self.epoch += 1
        if r.position:
            self._next = None
        if r.song:
            self._song_ended = self._song_ended or self._started
            self._started, self._ticked, self._cut = False, None, None
        if r.played:
            self.buffer.clear()
        if r.groove:
            self._change["reset"] = True
        return PANIC

    def change(self, *, preset: int | None = None, controls: Controls | None = None,
               channel: int | None = None) -> str:
        """Switch to the bank's preset ``preset`` (with its mode and channel unless given), change the
        controls or the output channel; silences (returns PANIC). The worker swaps in the preset and
        the channel at its next job."""
        if preset is not None:
            if not 0 <= preset < len(self.slots):
                raise ValueError(f"no preset {preset} in the bank (0..{len(self.slots) - 1})")
            slot = self.slots[preset]
            self.slot = self._change["preset"] = preset
            controls = controls or replace(self.controls, mode=slot.mode)
            channel = slot.channel if channel is None else channel
        if channel is not None:
            if not 0 <= channel <= 15:
                raise ValueError("channel must be in range 0..15")
            self._change["channel"] = channel
        if controls is not None:
            self.controls = controls
        return self.reset("preset" if preset is not None else "mode")

    # -- jobs -----------------------------------------------------------------------------------
    def job_quarters(self, c: Controls) -> float:
        """Quarter notes one job covers: a bar; or, when simplify / echo answer each beat on the next
        (``latency="beat"``), one code position (a beat for one-beat atoms)."""
        if c.latency == "beat" and c.mode in ("simplify", "echo"):
            return self.position_q
        return self.bar_q

    def set_tempo(self, bpm: float, t: float) -> None:
        """A player's tempo (CC 28): the internal clock takes it from ``t`` on, a Link session is
        proposed it now (every peer follows), a followed MIDI clock's master keeps its own. The next
        ``poll`` sees the new map and returns RETIME, which moves what is pending onto it."""
        c = self.clock
        if isinstance(c, InternalClock):
            if bpm == c.bpm:
                return
            if self._song_not_begun(c):
                # (a controller's dump on connect, during the warm-up): the song still starts on
                # its first bar line, which start_no_earlier may move.
                self.clock = replace(c, bpm=bpm)
            else:
                self.clock = c.with_tempo(bpm, t)
        elif hasattr(c, "propose_tempo"):
            c.propose_tempo(bpm)

    def _song_not_begun(self, c: InternalClock) -> bool:
        """No job cut yet and the clock still anchored on the song's first bar line."""
        return self._cut is None and c.start_q == 0.0

    def start_no_earlier(self, t: float) -> None:
        """An internal clock whose song has not started yet starts at ``t`` if it would start before
        (the next ``poll`` retimes the scheduler). A followed or Link clock keeps its master's time."""
        c = self.clock
        if isinstance(c, InternalClock) and self._song_not_begun(c) and c.start_s < t:
            self.clock = replace(c, start_s=t)

    def due(self, now: float) -> list[BarJob]:
        """Jobs (bars, or beats) whose input window has closed by ``now``, ready for the worker."""
        tl = self.timeline
        if tl is None:
            return []
        job_q = self.job_quarters(self.controls)
        if self._next is None or job_q != self._job_q:      # started, or the job length changed
            self._job_q = job_q
            self._next = max(0, math.ceil((self.song_q(now) - self.half_q) / job_q - 1e-9))   # not before the start
        per_bar = round(self.bar_q / job_q)
        jobs = []
        while True:
            n = self._next
            close_q = n * job_q - self.half_q
            if tl.time_of(close_q) + self.input_slack_s > now:
                return jobs
            played = self.buffer.take(close_q - job_q, close_q, (n - 1) * job_q, self.spq)
            self._next = n + 1
            self._cut = (n * job_q if self._cut is None else self._cut[0], (n + 1) * job_q)
            if tl.time_of(n * job_q + self.half_q) < now:      # already half a step in: drop it
                self.dropped += 1
                continue
            bar, position = (n, None) if per_bar == 1 else divmod(n, per_bar)
            change, self._change = self._change, {}
            jobs.append(BarJob(bar, played, self.controls, tl, change.get("reset", False), position,
                               change.get("preset"), change.get("channel"), self.epoch))

    @property
    def song_started(self) -> bool:
        """--send-clock: we queued Start for a song that has not ended (on the way out, Stop is owed;
        a Start still pending then is dropped, and the Stop after it does nothing to a DAW)."""
        return self._started

    def take_song_end(self) -> bool:
        """--send-clock: True once after a song we queued Start for ended while we ran on (an Ableton
        Link session's Stop): the caller drops the ticks still queued past its end and sends MIDI
        Stop now, so a DAW following our clock stops with the session, and starts again on our next
        Start."""
        ended, self._song_ended = self._song_ended, False
        return ended

    def take_clock(self) -> Batch | None:
        """--send-clock: the ticks (24 a quarter, after Start at the song start) up to the end of the
        last job cut, or None. Made here, apart from composing, so a dropped or failed bar, a panic
        or a change of job length (bar <-> beat) never drops, repeats or skips a tick."""
        tl = self.timeline
        if not self.send_clock or tl is None or self._cut is None:
            return None
        first = round(self._cut[0] * PPQN) if self._ticked is None else self._ticked
        last = round(self._cut[1] * PPQN)
        if last <= first:
            return None
        self._ticked = last
        positions = np.arange(first, last) / PPQN
        msgs = [self._clock_msg] * len(positions)
        if not self._started:
            self._started = True
            positions, msgs = np.concatenate([[first / PPQN], positions]), [self._start_msg] + msgs
        return Batch(tl.time_of(positions), positions, tuple(msgs), np.full(len(msgs), TIE_REALTIME, np.int8))


def status_line(engine: Engine, stats: RenderStats, scheduler: Scheduler, now: float) -> str:
    """tempo, bar:beat, atoms in use, compute p99 and send lateness p99; one line, no newline."""
    q = engine.song_q(now)
    tl = engine.timeline
    if q is None or tl is None:
        where = "stopped" if engine.clock.follows else "starting"
        bpm = engine.clock.bpm
    else:
        bar = math.floor(q / engine.bar_q)
        beat = (q - bar * engine.bar_q) * engine.codec.beat_unit / 4
        where, bpm = f"bar {bar + 1:4d}:{int(beat) + 1}", tl.bpm
    late = scheduler.recent_lateness()
    late_ms = float(np.percentile(late, 99) * 1e3) if len(late) else math.nan
    return (f"{bpm:6.1f} bpm  {where}  {engine.controls.mode}  atoms/bar {stats.atoms_in_use:2d}"
            f"  compute p99 {stats.compute_p99_ms:.2f} ms  send late p99 {late_ms:.2f} ms"
            f"  dropped {engine.dropped}" + (f"  failed {stats.failed}" if stats.failed else "")
            + (f"  ignored {engine.ignored}" if engine.ignored else ""))


class WarmUpError(RuntimeError):
    """The worker could not compose its throwaway bars: a preset whose graphs fail on a real bar."""


def run_live(engine: Engine, renderer: Renderer, poll, scheduler: Scheduler, stop: threading.Event, *,
             watch=(), status=None, status_every_s: float = 0.25, clock=time.perf_counter,
             on_first_bar=None, log=None) -> str | None:
    """Conduct until ``stop`` is set; returns why it ended early (a vanished port, a failed output).

    The renderer is handed to a new worker thread, which warms it up there first (WarmUpError if
    that fails, within a status period). ``poll()`` returns the ``(t, raw bytes)`` that arrived since its last call;
    ``watch`` are ports with ``alive()``; ``status`` is a text stream for the one-line status
    (None: quiet); ``on_first_bar()`` is called by the worker once the first bar is scheduled;
    ``log`` (a text stream, None: quiet) gets one line whenever composing a bar fails with a new
    error. The scheduler is silenced on the way out, whatever the reason.
    """
    # The worker warms up while the conductor already listens: input is never left unread (a
    # followed clock's ticks are stamped as they are polled); jobs due meanwhile wait in its queue.
    worker = Worker(renderer, scheduler, engine.current_epoch, engine.controls, on_first_bar).start()
    # An internal clock's first bar waits for the warm-up: bars handed to a worker still warming up
    # (~300 ms for a cold preset) went out late. Followed and Link clocks keep their master's time.
    held = isinstance(engine.clock, InternalClock)
    stop_msg = mido.Message("stop")              # --send-clock: made here, not when a song ends
    next_status = clock()
    reason = None
    logged = ""                                  # the last composing error written to ``log``
    waiting: list[str] = []                      # ports gone that their backend waits for (JACK)
    try:
        while not stop.wait(POLL_S):
            retime = False
            for t, data in poll():
                act = engine.feed(t, data)
                if act == PANIC:
                    scheduler.panic()
                retime = retime or act == RETIME
            if retime and engine.timeline is not None:
                scheduler.retime(engine.timeline)
            now = clock()
            if held and worker.ready.is_set():
                held = False
                engine.start_no_earlier(now + FIRST_BAR_LEAD_S)    # (poll retimes the scheduler)
            act = engine.poll(now)
            if act == PANIC:
                scheduler.panic()
            elif act == RETIME:
                scheduler.retime(engine.timeline)
            if engine.take_song_end():
                scheduler.cancel()                  # the ticks queued past the song's end
                scheduler.send_now(stop_msg)
            for job in () if held else engine.due(now):
                worker.put(job)
            if (ticks := engine.take_clock()) is not None:
                scheduler.submit(ticks)
            if now >= next_status:
                next_status = now + status_every_s
                if (e := worker.warm_up_error) is not None:
                    raise WarmUpError(f"{type(e).__name__}: {e}") from e
                if scheduler.error is not None:
                    reason = f"MIDI output failed: {scheduler.error}"
                    break
                gone = [p.name for p in watch if not p.alive()]
                if gone:
                    reason = f"MIDI port {gone[0]!r} disappeared"
                    break
                now_waiting = [p.name for p in watch if getattr(p, "gone", None) is not None]
                if now_waiting and not waiting:  # a port to reconnect: silence what was sounding
                    engine.reset("panic")
                    scheduler.panic()
                    if log is not None:
                        log.write(("\n" if status is not None else "") +
                                  f"sidl-live: MIDI port {now_waiting[0]!r} is gone; waiting for it\n")
                        log.flush()
                elif waiting and not now_waiting and log is not None:
                    log.write(("\n" if status is not None else "") + f"sidl-live: MIDI port {waiting[0]!r} is back\n")
                    log.flush()
                waiting = now_waiting
                stats = worker.stats
                why = stats.last_error.partition(": ")[2]      # without "bar N": once per kind of failure
                if log is not None and why != logged:
                    logged = why
                    log.write(("\n" if status is not None else "") +
                              f"sidl-live: a bar was dropped ({stats.last_error})\n")
                    log.flush()
                if status is not None:
                    status.write("\r" + status_line(engine, stats, scheduler, now))
                    status.flush()
    finally:
        worker.close()
        if engine.song_started:                    # a Start we queued gets its Stop
            scheduler.cancel()
            scheduler.send_now(stop_msg)
        scheduler.panic()
        if status is not None:
            status.write("\n")
    return reason
