"""Sending MIDI at absolute times: a batch format, a note tracker, and the send thread.

The worker prepares each bar as a ``Batch`` (messages sorted by absolute ``perf_counter`` seconds,
plus their musical positions in quarter notes so a moving external clock can retime what is still
pending). The ``Scheduler`` thread sleeps until about a millisecond before the next message, spins
the rest, and sends. Everything it sent passes through a ``NoteTracker``, so ``panic()`` and
``close()`` can always switch off every note still sounding.

The send loop does nothing else: no logging, no formatting, and no allocation it can avoid (the
pending messages are kept as plain lists, prepared by ``submit`` on the caller's thread). It asks for
a low real-time priority (refused without the rights; then it is an ordinary thread), and it never
spins holding the GIL: python-rtmidi's input callback runs on JACK's real-time thread and needs the
GIL, so a thread that kept it would make JACK miss its period.

An output is anything with ``send(msg: mido.Message)``; ``RecordingOutput`` is the twin that tests
use: it records ``(t, msg)``. An output that can place a message at a due time itself (the JACK
ports of ``jackmidi``, to the frame) also has ``send_at(msg, t)`` and ``lead_s``: each message is
then handed over ``lead_s`` before its time, with its time.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import mido
import numpy as np

from ..controls import ALL_NOTES_OFF_CC
from .clock import Timeline

SPIN_S = 0.001            # sleep until this long before an event, then spin: timed waits overshoot
RT_PRIORITY = 1           # the lowest real-time slot: above ordinary threads, below JACK (10) and its clients
LATE_RING = 4096          # recent send lateness values kept for the status line and the benchmark
RESILENCE_S = 0.01        # close sends All Notes Off again at least this much (and 3 periods) later


class Output(Protocol):
    def send(self, msg: mido.Message) -> None: ...


class RecordingOutput:
    """The recording twin of a MIDI output: keeps ``(t, msg)`` for every message sent."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.sent: list[tuple[float, mido.Message]] = []

    def send(self, msg: mido.Message) -> None:
        self.sent.append((self.clock(), msg))

    def messages(self, type_: str | None = None) -> list[mido.Message]:
        return [m for _, m in self.sent if type_ is None or m.type == type_]


TIE_REALTIME, TIE_OFF, TIE_OTHER = 0, 1, 2


def _order(msg: mido.Message) -> int:
    """Tie-break for equal times: clock first, then note-offs (so a re-strike works), then the rest."""
    if msg.is_realtime:
        return TIE_REALTIME
    if msg.type == "note_off" or (msg.type == "note_on" and msg.velocity == 0):
        return TIE_OFF
    return TIE_OTHER


@dataclass(frozen=True)
class Batch:
    """Messages to send, sorted by time (ties: realtime, note-offs, others)."""
    times: np.ndarray       # (n,) float64, perf_counter seconds
    positions: np.ndarray   # (n,) float64, quarter notes since song start; NaN = never retimed
    messages: tuple         # (n,) mido.Message
    ties: np.ndarray        # (n,) int8, each message's ``_order``: kept, so merging never recomputes it

    @classmethod
    def build(cls, times, positions, messages, ties=None) -> "Batch":
        """Sort into a batch; ``ties`` (n,) gives each message's ``_order`` if the caller knows it."""
        times = np.asarray(times, np.float64)
        positions = np.asarray(positions, np.float64)
        if not (len(times) == len(positions) == len(messages)):
            raise ValueError("times, positions and messages must have equal length")
        if ties is None:
            ties = np.array([_order(m) for m in messages], np.int8)
        ties = np.asarray(ties, np.int8)
        order = np.lexsort((ties, times))
        return cls(times[order], positions[order], tuple([messages[i] for i in order.tolist()]), ties[order])

    @classmethod
    def empty(cls) -> "Batch":
        return cls(np.zeros(0), np.zeros(0), (), np.zeros(0, np.int8))

    def __len__(self) -> int:
        return len(self.times)

    def select(self, mask: np.ndarray) -> "Batch":
        """The messages where ``mask`` is true, in order."""
        return Batch(self.times[mask], self.positions[mask],
                     tuple(m for m, keep in zip(self.messages, mask.tolist()) if keep), self.ties[mask])

    def merged(self, other: "Batch") -> "Batch":
        if not len(other):
            return self
        if not len(self):
            return other
        if (other.times[0], other.ties[0]) >= (self.times[-1], self.ties[-1]):
            # The usual case, a new bar after what is pending: both are sorted, so is their concatenation.
            return Batch(np.concatenate([self.times, other.times]), np.concatenate([self.positions, other.positions]),
                         self.messages + other.messages, np.concatenate([self.ties, other.ties]))
        return Batch.build(np.concatenate([self.times, other.times]),
                           np.concatenate([self.positions, other.positions]),
                           self.messages + other.messages, np.concatenate([self.ties, other.ties]))

    def retimed(self, timeline: Timeline) -> "Batch":
        fixed = np.isnan(self.positions)
        times = np.where(fixed, self.times, timeline.time_of(self.positions))
        return Batch.build(times, self.positions, self.messages, self.ties)


class NoteTracker:
    """Which notes are sounding on which channel, counting re-strikes of one key."""

    def __init__(self):
        self.counts = np.zeros((16, 128), np.int32)
        self.used = np.zeros(16, bool)          # channels we ever sent a note on

    def update(self, msg: mido.Message) -> None:
        t = msg.type
        if t == "note_on" and msg.velocity > 0:
            self.counts[msg.channel, msg.note] += 1
            self.used[msg.channel] = True
        elif t == "note_off" or t == "note_on":
            if self.counts[msg.channel, msg.note] > 0:
                self.counts[msg.channel, msg.note] -= 1

    def sounding(self) -> int:
        return int(self.counts.sum())

    def note_offs(self) -> list[mido.Message]:
        """One note-off per note-on still sounding."""
        offs = []
        for ch, note in zip(*np.nonzero(self.counts)):
            offs += [mido.Message("note_off", channel=int(ch), note=int(note))] * int(self.counts[ch, note])
        return offs

    def clear(self) -> None:
        self.counts[:] = 0


def _all_notes_off(channels) -> list[mido.Message]:
    return [mido.Message("control_change", channel=int(ch), control=ALL_NOTES_OFF_CC, value=0) for ch in channels]


def _try_realtime_priority() -> bool:
    """Ask for a real-time (FIFO) slot for the calling thread, as audio threads do: on a busy machine
    an ordinary thread can wake a millisecond or more after its timer. Fine to be refused."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
        return True
    except (AttributeError, OSError):
        return False


class Scheduler:
    """A thread that sends each pending message at its absolute time on ``clock``."""

    LATE_S = 0.005          # a send this late after its time is counted late: about where a
                            # drummer hears a flam (the live target is 1.5 ms p99)

    def __init__(self, output: Output, clock: Callable[[], float] = time.perf_counter,
                 spin_s: float = SPIN_S, latency_s: float = 0.0):
        self.output = output
        self.clock = clock
        self.spin_s = spin_s
        # The transport delivers this long after we send (JACK: at the next period, on average half
        # a period away), so messages leave this much early and arrive centred on their time.
        self.latency_s = latency_s
        self._send_at = getattr(output, "send_at", None)
        self.tracker = NoteTracker()
        self._silenced = np.zeros(16, bool)      # channels a panic silenced (close repeats it there)
        self.error: Exception | None = None     # set if the output failed; the thread then stops
        self.lateness = np.full(LATE_RING, np.nan)  # seconds each message went out after its time
        self._n_sent = 0
        self.notes_sent = 0                         # note-ons sent (for sidl-live's summary at stop)
        self.late_sends = 0                         # messages sent more than LATE_S after their time
        self._cond = threading.Condition()
        self._pending = Batch.empty()
        self._times: list[float] = []           # the pending batch as lists: the loop's fast view
        self._msgs: list[mido.Message] = []
        self._i = 0
        self._closed = False
        self._timeline: Timeline | None = None  # the last map given to retime (None: none since a panic)
        self._thread: threading.Thread | None = None

    # -- control (any thread) ---------------------------------------------------------------
    def start(self) -> "Scheduler":
        self._thread = threading.Thread(target=self._run, name="sidl-send", daemon=True)
        self._thread.start()
        return self

    def submit(self, batch: Batch, valid: Callable[[], bool] | None = None,
               timeline: Timeline | None = None) -> None:
        """Add messages; they are merged in time order with what is still pending. ``valid`` is
        checked under the send lock (the engine's panic count: a bar made before a panic is dropped).
        ``timeline`` is the map the batch was timed with: if a newer one came by ``retime`` since
        (a followed clock ticked while the bar was composed), the batch moves onto it."""
        with self._cond:
            if valid is None or valid():
                if timeline is not None and self._timeline is not None and timeline is not self._timeline:
                    batch = batch.retimed(self._timeline)
                self._set_pending(self._remaining().merged(batch))

    def retime(self, timeline: Timeline) -> None:
        """Move pending messages that have positions onto a new seconds <-> quarters map."""
        with self._cond:
            self._timeline = timeline
            if self._i < len(self._times):
                self._set_pending(self._remaining().retimed(timeline))

    def cancel(self) -> None:
        """Drop everything pending (notes already sounding keep sounding: see ``panic``)."""
        with self._cond:
            self._set_pending(Batch.empty())

    def panic(self) -> None:
        """Cancel the notes pending and silence now: a note-off per sounding note, CC 123 on used
        channels. Pending clock stays: a DAW following our clock counts every tick."""
        with self._cond:
            self._timeline = None                # a new song or position: the next retime says where
            p = self._remaining()
            self._set_pending(p.select(p.ties == TIE_REALTIME))
            msgs = self.tracker.note_offs()
            self._send_all(msgs + _all_notes_off(np.nonzero(self.tracker.used)[0]))
            self.tracker.clear()
            self._silenced |= self.tracker.used   # (close says All Notes Off there once more)
            self.tracker.used[:] = False        # silenced: a second panic has nothing to say

    def send_now(self, msg: mido.Message) -> None:
        """Send one message at once, in order with the send thread (MIDI Stop on the way out)."""
        with self._cond:
            try:
                self.output.send(msg)
                self.tracker.update(msg)
            except Exception as e:
                self.error = self.error or e

    def close(self) -> None:
        """Stop the thread and always silence what is sounding.

        Silence first, then wait for the thread: an interrupt during the wait (a second Ctrl-C)
        then leaves nothing sounding. The second panic covers a send that was in flight. All Notes
        Off goes out once more a few periods later: a JACK client that misses a cycle (a loaded box)
        loses that cycle's events, and the last silencing must not hang on one cycle.
        Once this returns the thread never sends again, even if the join timed out (it checks
        ``_closed`` under the lock before each send), so the caller may delete the port."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self.panic()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        self.panic()
        with self._cond:
            again = np.nonzero(self._silenced)[0]
            self._silenced[:] = False
        # (rtmidi's JACK latency is half a period; the frame-accurate output says its period)
        period_s = getattr(self.output, "period_s", 2 * self.latency_s)
        time.sleep(max(RESILENCE_S, 3 * period_s) if len(again) else 0.0)
        with self._cond:
            self._send_all(_all_notes_off(again))

    def _send_all(self, msgs: list) -> None:
        """Send at once, in order (the caller holds the lock); a vanished port ends it: nothing left
        to silence there."""
        for msg in msgs:
            try:
                self.output.send(msg)
            except Exception as e:
                self.error = self.error or e
                break

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._times) - self._i

    def recent_lateness(self) -> np.ndarray:
        """Lateness (seconds) of up to the last ``LATE_RING`` messages sent."""
        n = min(self._n_sent, LATE_RING)
        return self.lateness[:n].copy() if self._n_sent <= LATE_RING else self.lateness.copy()

    # -- sending ---------------------------------------------------------------------------------
    def send_due(self, now: float) -> int:
        """Send every pending message due by ``now`` (+ latency); the caller holds the lock (or is a test)."""
        sent = 0
        times, msgs, i, n = self._times, self._msgs, self._i, len(self._times)
        send_at = self._send_at
        now += self.latency_s + self._lead()
        while i < n and times[i] <= now:
            msg = msgs[i]
            if send_at is not None:
                send_at(msg, times[i] - self.latency_s)
            else:
                self.output.send(msg)
            self.tracker.update(msg)
            late = now - times[i]
            self.lateness[self._n_sent % LATE_RING] = late
            self._n_sent += 1
            if late > self.LATE_S:
                self.late_sends += 1
            if msg.type == "note_on" and msg.velocity:
                self.notes_sent += 1
            i += 1
            sent += 1
        self._i = i
        return sent

    def _run(self) -> None:
        _try_realtime_priority()
        clock, cond, sleep = self.clock, self._cond, time.sleep
        while True:
            with cond:
                while not self._closed and self._i >= len(self._times):
                    cond.wait()
                if self._closed:
                    return
                t_next = self._times[self._i] - self.latency_s - self._lead()
                wait = t_next - clock() - self.spin_s
                if wait > 0:
                    cond.wait(wait)             # submit/retime/cancel wake us early: look again
                    continue
            while clock() < t_next:             # spin the last stretch, outside the lock,
                sleep(0)                        # letting go of the GIL: JACK's RT thread may need it
            with cond:
                if self._closed:                # closed during the spin: the port may be deleted
                    return                      # as soon as close() returns, so never touch it again
                try:
                    self.send_due(clock())
                except Exception as e:          # the port went away: stop; the engine sees .error
                    self.error = e
                    self._closed = True
                    return

    def _lead(self) -> float:
        """How early a message is handed to an output that places it itself (it may change: read it)."""
        return self.output.lead_s if self._send_at is not None else 0.0

    def _remaining(self) -> Batch:
        p = self._pending
        i = self._i
        return Batch(p.times[i:], p.positions[i:], p.messages[i:], p.ties[i:])

    def _set_pending(self, batch: Batch) -> None:
        self._pending = batch
        self._times = batch.times.tolist()
        self._msgs = list(batch.messages)
        self._i = 0
        self._cond.notify()
