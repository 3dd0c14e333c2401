"""The worker: composes each bar the conductor hands it and submits its messages to the scheduler.

Everything here belongs to the worker thread. The ``Renderer`` owns the composers (one per preset
of the bank: the model's encode/decode, the groove being varied), the output channel, the table of
ready-made MIDI messages and its own timings. It receives immutable ``BarJob``s and hands the
scheduler immutable ``Batch``es; what the conductor reads back (the status line's figures) is an
immutable ``RenderStats`` it publishes after each bar. Nothing mutable is shared with the conductor.

The ``Worker`` is the thread: it warms the renderer up first (on this thread, where the graph
bindings it makes will be used), says it is ready, then takes jobs until it gets ``None``.
"""
from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable

import mido
import numpy as np

from ..codec.notes import NoteArray
from ..compose import Composer
from .bars import BarJob
from .clock import Timeline
from .scheduler import TIE_OFF, TIE_OTHER, Batch, Scheduler

TIMING_RING = 1024                        # recent compute times kept for the status line
STATS_EVERY = 8                           # bars between two compute percentiles (np.percentile ~30 us)
_NOTE_TIES = np.array([TIE_OTHER, TIE_OFF], np.int8)   # a bar's note-ons, then its note-offs
# Keys of the message table: note-on pitch * 128 + velocity, note-off 16384 + pitch.
# A bar's messages are one fancy index into it.
_OFF_KEY = 128 * 128
_N_KEYS = _OFF_KEY + 128


@dataclass(frozen=True)
class RenderStats:
    """What the worker says about itself, replaced whole after every bar (the conductor reads it)."""
    rendered: int = 0                 # bars (or beats) composed
    atoms_in_use: int = 0             # nonzero code entries of the last one
    compute_p99_ms: float = math.nan  # over the last TIMING_RING, refreshed every STATS_EVERY
    failed: int = 0                   # jobs whose composing raised
    last_error: str = ""              # "bar N: Type: message" of the last failure


class Renderer:
    """Composes jobs into batches; owned by one thread (the worker) once the engine starts.

    ``composers[0]`` plays first; a job whose ``preset`` is set switches to ``composers[preset]``.
    """

    def __init__(self, composers: list[Composer], channel: int, bar_q: float):
        self.composers = composers
        self.composer = composers[0]
        self.channel = channel
        self.bar_q = bar_q
        self.spq = self.composer.codec.steps_per_beat     # grid steps per quarter note
        self.compute_s = np.full(TIMING_RING, np.nan)     # seconds per render(), ring
        self._rendered = 0
        self.stats = RenderStats()                         # what publish() last said
        self._note_ties: dict[int, np.ndarray] = {}       # tie order of n note-ons then n note-offs
        self._clear_messages()

    @property
    def position_q(self) -> float:
        """Quarter notes one code position lasts (a beat for one-beat atoms)."""
        return self.bar_q / self.composer.positions

    def render(self, job: BarJob) -> Batch:
        """Compose bar ``job.bar`` and time it: the compute on the live path, measured."""
        t0 = time.perf_counter()
        if job.reset:
            if job.preset is not None:
                self.composer = self.composers[job.preset]   # a preset change, made on this thread
            if job.channel is not None and job.channel != self.channel:
                self.channel = job.channel
                self._clear_messages()
            self.composer.reset()
        notes = self.composer.compose(job.bar, job.played, job.controls, job.position)
        batch = self._batch(job.bar, job.position, job.timeline, notes)
        self.compute_s[self._rendered % TIMING_RING] = time.perf_counter() - t0
        self._rendered += 1
        return batch

    def publish(self) -> RenderStats:
        """Replace ``stats`` with the figures of the bars rendered so far. The worker calls it once a
        bar is submitted (off the live path: a percentile costs a tenth of a generated drum bar)."""
        s = self.stats
        p99 = self._p99_ms() if s.rendered // STATS_EVERY != self._rendered // STATS_EVERY \
            or s.rendered == 0 else s.compute_p99_ms
        self.stats = RenderStats(self._rendered, self.composer.atoms_in_use, p99, s.failed, s.last_error)
        return self.stats

    def failed(self, job: BarJob, e: Exception) -> None:
        """The policy when composing raises: the bar is dropped (the clock is kept), and said."""
        self.stats = replace(self.stats, failed=self.stats.failed + 1,
                             last_error=f"bar {job.bar}: {type(e).__name__}: {e}")

    def warm_up(self, controls) -> None:
        """Compose and time throwaway bars (generate and simplify, with every preset of the bank)
        before the clock starts, on the thread that will render: the first real bar then pays no
        first-use costs (numpy's lazy imports, this thread's graph bindings, message objects).
        Leaves no trace: composers are reset, the timing ring and stats emptied."""
        tl = Timeline(0.0, 0.0, 0.5)
        played = NoteArray.from_lists([0.0, 4.0], [1.0, 5.0], [38, 60], [100, 80])
        for composer in self.composers:
            for c in (replace(controls, mode="generate", follow=False), replace(controls, mode="simplify")):
                self._batch(0, None, tl, composer.compose(0, played, c))
                if c.mode != "generate" and composer.positions > 1:   # --latency beat: one position
                    composer.compose(0, played.select(played.start < composer.stride), c, 0)
            composer.reset()
        self.compute_s[:] = np.nan
        self._rendered = 0
        self.stats = RenderStats()

    def _p99_ms(self) -> float:
        vals = self.compute_s[~np.isnan(self.compute_s)]
        return float(np.percentile(vals, 99) * 1e3) if len(vals) else math.nan

    def _batch(self, bar: int, position: int | None, timeline: Timeline, notes: NoteArray) -> Batch:
        q0 = bar * self.bar_q
        if position is not None:
            q0 += position * self.position_q
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
        return Batch(timeline.time_of(positions), positions, tuple(self._messages[keys].tolist()), ties[order])

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


class Worker:
    """The worker thread around a ``Renderer``: jobs in through ``put``, batches out to the scheduler.

    ``current_epoch()`` is the conductor's panic count (an int, read under the scheduler's send
    lock): a batch made from a job older than the last panic is not submitted. Each submitted batch
    carries its job's timeline, so the scheduler moves it onto a newer one (a tick of a followed
    clock that came while the bar was composed).
    """

    def __init__(self, renderer: Renderer, scheduler: Scheduler, current_epoch: Callable[[], int],
                 controls, on_first_bar: Callable[[], None] | None = None):
        self.renderer, self.scheduler = renderer, scheduler
        self._current_epoch, self._controls, self._on_first_bar = current_epoch, controls, on_first_bar
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.ready = threading.Event()
        self.warm_up_error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="sidl-worker", daemon=True)

    @property
    def stats(self) -> RenderStats:
        return self.renderer.stats

    def start(self) -> "Worker":
        self._thread.start()
        return self

    def put(self, job: BarJob) -> None:
        self._jobs.put(job)

    def close(self, timeout: float = 1.0) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=timeout)

    def _run(self) -> None:
        try:
            self.renderer.warm_up(self._controls)
        except Exception as e:                  # a preset whose graphs fail on a real bar
            self.warm_up_error = e
            self.ready.set()
            return
        self.ready.set()
        first = self._on_first_bar
        while (job := self._jobs.get()) is not None:
            try:
                batch = self.renderer.render(job)
                self.scheduler.submit(batch, valid=lambda: job.epoch == self._current_epoch(),
                                      timeline=job.timeline)
            except Exception as e:              # the policy: drop the bar, keep the clock
                self.renderer.failed(job, e)
                continue
            self.renderer.publish()
            if first is not None:
                first, _ = None, first()
