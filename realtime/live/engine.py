"""The live engine: clock -> bar buffer -> encode -> edit -> decode -> scheduled sends for the next bar.

Four threads, each with one job:

* the MIDI backend's real-time thread only queues incoming messages (inside rtmidi, see ``ports``);
* the conductor (``run_live``, the caller's thread) polls them every millisecond: clock
  messages move the clock, notes go into the bar buffer stamped with their song position, CCs
  change the controls and a Program Change picks a preset of the bank.
  When a bar's input window closes it hands a ``BarJob`` to
* the worker, which composes the next bar (``Composer``: the model's encode/decode, never on the
  input thread) and submits it to
* the ``Scheduler``'s thread, which sends each message at its absolute time.

A bar's input window closes half a grid step before the bar line: a note played there is rounded
by the codec to the next bar's first step anyway, and the half step (62 ms at 120 BPM) is the
worker's budget to prepare bar N+1 before it starts. With ``latency="beat"``, simplify and echo
work the same way one code position (a beat) at a time: each beat played comes back on the next. Bars are counted from the song start: our own
first bar, or the DAW's Start / Song Position Pointer when following its clock (``--sync``).

Policy when late, or when composing a bar fails: that bar is dropped, the clock is kept.
Whatever stops the engine (MIDI Stop, lost clock, CC 123, a mode or preset change, a vanished port,
Ctrl-C) silences every note it started.
"""
from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass, replace

import mido
import numpy as np

from .clock import PPQN, ClockFollower, InternalClock, Timeline, bar_quarters
from ..compose import BarModel, Composer, default_mode
from ..controls import ALL_NOTES_OFF_CC, Controls, apply_cc
from ..codec.midifile import SUSTAIN_CC
from ..codec.notes import NoteArray
from .scheduler import TIE_OFF, TIE_OTHER, TIE_REALTIME, Batch, Scheduler

PANIC, RETIME = "panic", "retime"         # what the conductor must do after feed()/poll()
POLL_S = 0.001                            # the conductor looks at its input this often
TIMING_RING = 1024                        # recent compute times kept for the status line
_NOTE_TIES = np.array([TIE_OTHER, TIE_OFF], np.int8)   # a bar's note-ons, then its note-offs
# Keys of the engine's message table: note-on pitch * 128 + velocity, note-off 16384 + pitch.
# A bar's messages are one fancy index into it.
_OFF_KEY = 128 * 128
_N_KEYS = _OFF_KEY + 128


@dataclass(frozen=True)
class BarJob:
    bar: int                 # the bar to render
    played: NoteArray        # the window that just closed, in steps from the previous window's start
    controls: Controls
    timeline: Timeline       # seconds <-> quarters when the job was made
    reset: bool = False      # forget the groove first (mode or preset change)
    position: int | None = None   # one code position of the bar (a beat), not the whole bar
    composer: Composer | None = None   # with reset: the worker switches to this composer (a preset change)...
    channel: int | None = None    # ...and to this output channel
    epoch: int = 0           # the engine's panic count when the job was made: a later panic voids it


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


class BarBuffer:
    """Notes played into the input, stamped with song position in quarter notes.

    The sustain pedal (CC 64) holds released notes until it lifts, as the piano codec expects.
    """

    def __init__(self):
        self.start: list[float] = []
        self.end: list[float] = []
        self.pitch: list[int] = []
        self.velocity: list[int] = []
        self._open: dict[int, int] = {}     # pitch -> index of its sounding note
        self._held: list[int] = []          # released under the pedal: end when it lifts
        self._pedal = False

    def note_on(self, q: float, pitch: int, velocity: int) -> None:
        self._open[pitch] = len(self.start)
        self.start.append(q)
        self.end.append(math.nan)
        self.pitch.append(pitch)
        self.velocity.append(velocity)

    def note_off(self, q: float, pitch: int) -> None:
        i = self._open.pop(pitch, None)
        if i is not None:
            if self._pedal:
                self._held.append(i)
            else:
                self.end[i] = q

    def pedal(self, q: float | None, down: bool) -> None:
        """Pedal up or down at song position ``q`` (None while stopped: only its state changes)."""
        if self._pedal and not down and q is not None:
            for i in self._held:
                self.end[i] = q
        if not down:
            self._held = []
        self._pedal = down

    def take(self, q0: float, q1: float, origin_q: float, steps_per_quarter: int) -> NoteArray:
        """Notes starting in [q0, q1) in steps from ``origin_q``; they (and anything older) leave."""
        start = np.array(self.start)
        m = (start >= q0) & (start < q1)
        end = np.array(self.end)[m]
        end = np.where(np.isnan(end), q1, np.minimum(end, q1))   # still held: cut at the window end
        notes = NoteArray((start[m] - origin_q) * steps_per_quarter, (end - origin_q) * steps_per_quarter,
                          np.array(self.pitch, np.int16)[m], np.array(self.velocity, np.int16)[m])
        keep = [i for i, s in enumerate(self.start) if s >= q1]
        self.start, self.end = [self.start[i] for i in keep], [self.end[i] for i in keep]
        self.pitch, self.velocity = [self.pitch[i] for i in keep], [self.velocity[i] for i in keep]
        self._open = {p: keep.index(i) for p, i in self._open.items() if i in keep}
        self._held = [keep.index(i) for i in self._held if i in keep]
        return notes

    def clear(self) -> None:
        """Forget every note; the pedal stays where the foot is."""
        pedal = self._pedal
        self.__init__()
        self._pedal = pedal


class Engine:
    """Bars in, bars out, on injected time. Conductor: ``feed``, ``poll``, ``due``; worker: ``render``."""

    def __init__(self, model: BarModel, controls: Controls, *, channel: int,
                 clock: InternalClock | None, meter: tuple[int, int] = (4, 4), send_clock: bool = False,
                 bank: tuple[BankEntry, ...] = (), input_latency_s: float = 0.0, in_channel: int | None = None):
        if not 0 <= channel <= 15 or not (in_channel is None or 0 <= in_channel <= 15):
            raise ValueError("channel must be in range 0..15")
        self.in_channel = in_channel              # None: notes and controls from every channel
        self.composer = Composer(model, meter)
        self.controls = controls
        self.channel = channel
        self.internal = clock
        self.follower = None if clock is not None else ClockFollower(*meter)
        self.send_clock = send_clock
        self.bar_q = bar_quarters(*meter)
        self.spq = self.codec.steps_per_beat      # grid steps per quarter note
        self.half_q = 0.5 / self.spq             # the input window closes this early
        # ...and is taken this long after it closes: input is stamped back by the transport's
        # latency, so a note played just before the close is only seen a little after it.
        self.input_slack_s = input_latency_s + 2 * POLL_S
        # Program Change n selects bank[n]: each preset is checked and its composer built now, so a
        # switch on the conductor only hands the worker a ready composer.
        self._bank: tuple[tuple[BankEntry, Composer], ...] = ()     # (_composer_for reads it)
        self._bank = tuple((e, self._composer_for(e.model)) for e in bank)
        self.buffer = BarBuffer()
        self.dropped = 0                          # bars skipped because we were late
        self.ignored = 0                          # malformed incoming messages
        self.failed = 0                           # bars whose composing raised (see last_error)
        self.last_error = ""
        self.compute_s = np.full(TIMING_RING, np.nan)   # seconds per render(), ring
        self._n_rendered = 0
        self._next: int | None = None            # the next job, counted in jobs of _job_q from the song start
        self._job_q = self.bar_q                  # quarters one job covers: a bar, or a code position
        self._started = False                     # --send-clock: Start sent since the song start
        self._ticked: int | None = None           # --send-clock: ticks made so far, up to this one
        self.epoch = 0                            # panics so far: jobs made before the last one are void
        self._clock_out: list[Batch] = []         # --send-clock: ticks for the conductor to submit
        self._reset = False
        self._new_composer: Composer | None = None     # a change the next job carries to the worker
        self._new_channel: int | None = None
        self._clock_msg, self._start_msg = mido.Message("clock"), mido.Message("start")
        self._note_ties: dict[int, np.ndarray] = {}   # tie order of n note-ons then n note-offs
        self._clear_messages()

    @property
    def codec(self):
        return self.composer.codec

    @property
    def timeline(self) -> Timeline | None:
        return self.internal.timeline if self.internal is not None else self.follower.timeline

    def position(self, t: float) -> float | None:
        tl = self.timeline
        if tl is None:
            return None
        return self.follower.position(t) if self.follower is not None else tl.position(t)

    # -- conductor ----------------------------------------------------------------------------
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
            return self._clock_message(status, t, data)
        if self.in_channel is not None and status & 0x0F != self.in_channel:
            return None                            # another instrument's channel (clock is not channelled)
        kind = status & 0xF0
        need = 2 if kind == 0xC0 or kind == 0xD0 else 3
        if len(data) < need or data[1] > 127 or data[need - 1] > 127:
            self.ignored += 1
            return None
        if kind == 0x90 and data[2] > 0:
            q = self.position(t)
            if q is not None:
                self.buffer.note_on(q, data[1], data[2])
        elif kind == 0x80 or kind == 0x90:
            q = self.position(t)
            if q is not None:
                self.buffer.note_off(q, data[1])
        elif kind == 0xC0:
            return self._program(data[1])
        elif kind == 0xB0:
            if data[1] == ALL_NOTES_OFF_CC:
                return self._panic()
            if data[1] == SUSTAIN_CC:
                self.buffer.pedal(self.position(t), data[2] >= 64)
                return None
            new = apply_cc(self.controls, data[1], data[2])
            changed_mode = (new.mode, new.follow, new.latency) != (self.controls.mode, self.controls.follow,
                                                                   self.controls.latency)
            self.controls = new
            if changed_mode:
                self._reset = True
                return self._panic()
        return None

    def _panic(self) -> str:
        """Every PANIC goes through here: jobs made before it are void (a bar the worker is composing
        now is not submitted), so nothing from before the panic plays after it."""
        self.epoch += 1
        return PANIC

    def _program(self, number: int) -> str | None:
        """Program Change: switch to the bank's preset ``number`` (others are ignored)."""
        if number >= len(self._bank):
            return None
        entry, _ = self._bank[number]
        mode = entry.mode or default_mode(entry.model.codec)
        return self.change(model=entry.model, controls=replace(self.controls, mode=mode),
                           channel=entry.channel)

    def _clock_message(self, status: int, t: float, data: list[int]) -> str | None:
        f = self.follower
        if f is None:                              # internal clock: incoming clock is ignored
            return None
        if status == 0xF8:
            f.feed("clock", t)
            return RETIME if f.running else None
        if status == 0xFB and f.running:           # Continue while playing: nothing to continue
            return None
        if status == 0xFA or status == 0xFB:
            playing = f.running or f.armed         # (a second Start before the first tick too)
            f.feed("start" if status == 0xFA else "continue", t)
            self._next = None                      # due() picks the bar from the expected position
            if playing:                            # a restart without Stop: what was played is gone
                return self._relocated()
            return None
        if status == 0xFC:
            f.feed("stop", t)
            return self._stopped()
        if status == 0xF2 and len(data) == 3 and data[1] < 0x80 and data[2] < 0x80:
            playing, before = f.running or f.armed, f.next_tick
            f.feed("songpos", t, data[1] | (data[2] << 7))
            if playing and f.next_tick != before:  # a jump while playing (a DAW's loop): start over there
                return self._relocated()
        return None

    def _relocated(self) -> str:
        """The song position jumped while playing: silence, and count bars from the new position."""
        self._next = None
        self.buffer.clear()
        return self._panic()

    def poll(self, now: float) -> str | None:
        """Housekeeping between messages: a clock silent for two beats stops us."""
        if self.follower is not None and self.follower.lost(now):
            self.follower.mark_lost()
            return self._stopped()
        return None

    def _stopped(self) -> str:
        self._next = None
        self._started, self._ticked = False, None
        self.buffer.clear()
        return self._panic()

    def job_quarters(self, c: Controls) -> float:
        """Quarter notes one job covers: a bar; or, when simplify / echo answer each beat on the next
        (``latency="beat"``), one code position (a beat for one-beat atoms)."""
        if c.latency == "beat" and c.mode in ("simplify", "echo"):
            return self.position_q
        return self.bar_q

    @property
    def position_q(self) -> float:
        """Quarter notes one code position lasts (a beat for one-beat atoms)."""
        return self.bar_q / self.composer.positions

    def due(self, now: float) -> list[BarJob]:
        """Jobs (bars, or beats) whose input window has closed by ``now``, ready for the worker."""
        tl = self.timeline
        if tl is None:
            return []
        job_q = self.job_quarters(self.controls)
        if self._next is None or job_q != self._job_q:      # started, or the job length changed
            self._job_q = job_q
            self._next = max(0, math.ceil((self.position(now) - self.half_q) / job_q - 1e-9))   # not before the start
        per_bar = round(self.bar_q / job_q)
        jobs = []
        while True:
            n = self._next
            close_q = n * job_q - self.half_q
            if tl.time_of(close_q) + self.input_slack_s > now:
                return jobs
            played = self.buffer.take(close_q - job_q, close_q, (n - 1) * job_q, self.spq)
            self._next = n + 1
            if self.send_clock:                    # made here, apart from composing: never dropped
                self._clock_out.append(self._clock_ticks(n * job_q, (n + 1) * job_q, tl))
            if tl.time_of(n * job_q + self.half_q) < now:      # already half a step in: drop it
                self.dropped += 1
                continue
            bar, position = (n, None) if per_bar == 1 else divmod(n, per_bar)
            jobs.append(BarJob(bar, played, self.controls, tl, self._reset, position,
                               self._new_composer, self._new_channel, self.epoch))
            self._reset, self._new_composer, self._new_channel = False, None, None

    def _clock_ticks(self, q0: float, q1: float, tl: Timeline) -> Batch:
        """--send-clock: 24 ticks a quarter over [q0, q1), after Start at the song start. Ticks
        continue from the last one made, so a change of job length (bar <-> beat) neither repeats
        nor skips any."""
        first = round(q0 * PPQN) if self._ticked is None else self._ticked
        self._ticked = max(first, round(q1 * PPQN))
        positions = np.arange(first, self._ticked) / PPQN
        msgs = [self._clock_msg] * len(positions)
        if not self._started:
            self._started = True
            positions, msgs = np.concatenate([[first / PPQN], positions]), [self._start_msg] + msgs
        return Batch(tl.time_of(positions), positions, tuple(msgs), np.full(len(msgs), TIE_REALTIME, np.int8))

    def take_clock(self) -> Batch | None:
        """The outgoing clock made by ``due`` since the last call (None if none), for the scheduler."""
        made, self._clock_out = self._clock_out, []
        if not made:
            return None
        out = made[0]
        for b in made[1:]:
            out = out.merged(b)
        return out

    def warm_up(self) -> None:
        """Compose and time throwaway bars (generate and simplify, with every preset of the bank)
        before the clock starts: the first real bar then pays no first-use costs (numpy's lazy
        imports, graph bindings, message objects), which took 15 ms here, half the first bar's
        window at 240 BPM. Leaves no trace: composers are reset, the timing ring emptied."""
        tl = Timeline(0.0, 0.0, 0.5)
        played = NoteArray.from_lists([0.0, 4.0], [1.0, 5.0], [38, 60], [100, 80])
        for composer in [self.composer] + [c for _, c in self._bank]:
            for c in (replace(self.controls, mode="generate", follow=False), replace(self.controls, mode="simplify")):
                self._batch(BarJob(0, played, c, tl), composer.compose(0, played, c))
            composer.reset()
        self.compute_s[:] = np.nan
        self._n_rendered = 0

    # -- worker ---------------------------------------------------------------------------------
    def render(self, job: BarJob) -> Batch:
        """Compose bar ``job.bar`` and time it: the compute on the live path, measured."""
        t0 = time.perf_counter()
        if job.reset:
            if job.composer is not None:
                self.composer = job.composer        # a preset change, made on this thread
            if job.channel is not None:
                self.channel = job.channel
                self._clear_messages()
            self.composer.reset()
        notes = self.composer.compose(job.bar, job.played, job.controls, job.position)
        batch = self._batch(job, notes)
        self.compute_s[self._n_rendered % TIMING_RING] = time.perf_counter() - t0
        self._n_rendered += 1
        return batch

    def _batch(self, job: BarJob, notes: NoteArray) -> Batch:
        q0 = job.bar * self.bar_q
        if job.position is not None:
            q0 += job.position * self.position_q
        n = len(notes)
        positions = np.concatenate((notes.start, notes.end))
        np.divide(positions, self.spq, out=positions)
        positions += q0
        keys = np.concatenate((notes.pitch * 128 + notes.velocity, notes.pitch + _OFF_KEY))
        ties = self._note_ties.get(n)
        if ties is None:
            ties = self._note_ties[n] = np.repeat(_NOTE_TIES, n)
        order = np.lexsort((ties, positions))
        positions, keys = positions[order], keys[order]
        if not self._made[keys].all():
            self._make_messages(keys)
        return Batch(job.timeline.time_of(positions), positions, tuple(self._messages[keys].tolist()),
                     ties[order])

    def _make_messages(self, keys: np.ndarray) -> None:
        """Fill the message table for ``keys`` (mido validates every new message, ~5 us each: a
        session's notes come from a small set, so each is made once)."""
        for key in sorted(set(keys[~self._made[keys]].tolist())):   # (np.unique imports numpy.ma: 25 ms)
            if key >= _OFF_KEY:
                msg = mido.Message("note_off", channel=self.channel, note=key - _OFF_KEY, velocity=0)
            else:
                msg = mido.Message("note_on", channel=self.channel, note=key >> 7, velocity=key & 127)
            self._messages[key] = msg
            self._made[key] = True

    def _clear_messages(self) -> None:
        """A new output channel: every note message is made again."""
        self._messages = np.empty(_N_KEYS, object)
        self._made = np.zeros(_N_KEYS, bool)

    def _composer_for(self, model: BarModel) -> Composer:
        """A composer for ``model`` in our meter: ours or the bank's, or a new one (same grid only)."""
        if self.composer.model is model:
            return self.composer
        for entry, composer in self._bank:
            if entry.model is model:
                return composer
        composer = Composer(model, (self.codec.beats_per_bar, self.codec.beat_unit))
        check_together(self.composer, composer)
        return composer

    def change(self, *, model: BarModel | None = None, controls: Controls | None = None,
               channel: int | None = None) -> str:
        """Swap the preset, the controls or the output channel; the caller panics (every note-on
        gets its note-off). The model and channel are swapped in by the worker, at its next bar."""
        if model is not None:     # built or found here (errors reach the caller)
            self._new_composer = self._composer_for(model)
        if channel is not None:
            if not 0 <= channel <= 15:
                raise ValueError("channel must be in range 0..15")
            self._new_channel = channel
        if controls is not None:
            self.controls = controls
        self._reset = True
        return self._panic()

    # -- figures for the status line ----------------------------------------------------------
    def compute_p99_ms(self) -> float:
        vals = self.compute_s[~np.isnan(self.compute_s)]
        return float(np.percentile(vals, 99) * 1e3) if len(vals) else math.nan


def status_line(engine: Engine, scheduler: Scheduler, now: float) -> str:
    """tempo, bar:beat, atoms in use, compute p99 and send lateness p99; one line, no newline."""
    q = engine.position(now)
    tl = engine.timeline
    if q is None or tl is None:
        where = "stopped" if engine.follower is not None else "starting"
        bpm = engine.follower.bpm if engine.follower is not None else engine.internal.bpm
    else:
        bar = math.floor(q / engine.bar_q)
        beat = (q - bar * engine.bar_q) * engine.codec.beat_unit / 4
        where, bpm = f"bar {bar + 1:4d}:{int(beat) + 1}", tl.bpm
    late = scheduler.recent_lateness()
    late_ms = float(np.percentile(late, 99) * 1e3) if len(late) else math.nan
    return (f"{bpm:6.1f} bpm  {where}  {engine.controls.mode}  atoms {engine.composer.atoms_in_use:2d}"
            f"  compute p99 {engine.compute_p99_ms():.2f} ms  send late p99 {late_ms:.2f} ms"
            f"  dropped {engine.dropped}" + (f"  failed {engine.failed}" if engine.failed else "")
            + (f"  ignored {engine.ignored}" if engine.ignored else ""))


def run_live(engine: Engine, poll, scheduler: Scheduler, stop: threading.Event, *,
             watch=(), status=None, status_every_s: float = 0.25, clock=time.perf_counter,
             on_first_bar=None, log=None) -> str | None:
    """Conduct until ``stop`` is set; returns why it ended early (a vanished port, a failed output).

    ``poll()`` returns the ``(t, raw bytes)`` that arrived since its last call; ``watch`` are ports with
    ``alive()``; ``status`` is a text stream for the one-line status (None: quiet);
    ``on_first_bar()`` is called by the worker once the first bar is scheduled; ``log`` (a text
    stream, None: quiet) gets one line whenever composing a bar fails with a new error.
    The scheduler is silenced on the way out, whatever the reason.
    """
    jobs: queue.SimpleQueue = queue.SimpleQueue()

    def work():
        first = on_first_bar
        while (job := jobs.get()) is not None:
            try:
                batch = engine.render(job)
                # Under the send lock, so a panic (epoch first, then scheduler.panic) either comes
                # before this check or cancels what it submitted.
                scheduler.submit(batch, valid=lambda: job.epoch == engine.epoch)
            except Exception as e:              # the policy: drop the bar, keep the clock
                engine.failed += 1
                engine.last_error = f"bar {job.bar}: {type(e).__name__}: {e}"
                continue
            tl = engine.timeline
            if engine.follower is not None and tl is not None and tl is not job.timeline:
                scheduler.retime(tl)            # a tick came while we composed: catch up now
            if first is not None:
                first, _ = None, first()

    worker = threading.Thread(target=work, name="sidl-worker", daemon=True)
    worker.start()
    next_status = clock()
    reason = None
    logged = ""                                  # the last composing error written to ``log``
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
            if engine.poll(now) == PANIC:
                scheduler.panic()
            for job in engine.due(now):
                jobs.put(job)
            if engine.send_clock and (ticks := engine.take_clock()) is not None:
                scheduler.submit(ticks)
            if now >= next_status:
                next_status = now + status_every_s
                if scheduler.error is not None:
                    reason = f"MIDI output failed: {scheduler.error}"
                    break
                gone = [p.name for p in watch if not p.alive()]
                if gone:
                    reason = f"MIDI port {gone[0]!r} disappeared"
                    break
                why = engine.last_error.partition(": ")[2]      # without "bar N": once per kind of failure
                if log is not None and why != logged:
                    logged = why
                    log.write(("\n" if status is not None else "") +
                              f"sidl-live: a bar was dropped ({engine.last_error})\n")
                    log.flush()
                if status is not None:
                    status.write("\r" + status_line(engine, scheduler, now))
                    status.flush()
    finally:
        jobs.put(None)
        worker.join(timeout=1.0)
        if engine.send_clock:
            scheduler.cancel()
            scheduler.send_now(mido.Message("stop"))
        scheduler.panic()
        if status is not None:
            status.write("\n")
    return reason
