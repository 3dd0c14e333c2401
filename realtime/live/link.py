"""Ableton Link as the engine's clock (``sidl-live --link``): the session's tempo, its bar phase, its Start and Stop.

A Link session shares a tempo, a beat grid's phase (bars line up modulo a *quantum*) and, among peers
with start/stop sync, whether it is playing and since when. ``LinkClock`` answers the engine's clock
questions (``follows``, ``timeline``, ``position``, ``bpm``, ``lost``) from it:

* one Link beat is a quarter note, as in Ableton Live, and the quantum is a bar in quarters
  (``bar_quarters``: 4 in 4/4, 3 in 6/8), so our bar lines fall on the session's bar lines;
* the song starts on the session's Start: its first bar is the first bar line at or after the
  session's start time, and bars are counted from there (a peer that joins a playing session plays
  the bars it counts from that same Start). While the session is stopped there is no timeline: the
  engine waits, as ``--sync`` waits for MIDI Start. Peers without start/stop sync never start it;
* the session's Stop ends the song: ``lost`` turns true at its stop time, and the engine silences;
* a tempo change by any peer gives a new ``Timeline`` at the next poll (the engine retimes what is
  pending onto it); ``--bpm`` is the tempo we bring, which a session keeps only if we found it: when
  two sessions meet, Link keeps the older one's tempo and phase (if they are within 0.5 s of age, the
  lower random session id's), so sidl joining a band's session never moves the band. After that
  sidl proposes a tempo only when told to (CC 28, ``propose_tempo``): Link then moves every peer's
  tempo, the beat phase kept at that moment.

Link counts microseconds on its own host clock (CLOCK_MONOTONIC_RAW on Linux), not on
``perf_counter``'s: the offset between the two is measured (the tightest of a few back-to-back
readings) and measured again every second, since the two drift apart by the system's clock slew.

The conductor asks ``lost(now)`` once a poll (a millisecond): that is when the session is read.
Reading it is a fraction of a microsecond. Link's own threads do the networking.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from .clock import Timeline, bar_quarters

LINK_PACKAGE = "LinkPython-extern==1.3.0"
OFFSET_EVERY_S = 1.0       # re-measure Link's clock against perf_counter this often
OFFSET_READINGS = 8        # ...taking the tightest of this many back-to-back readings
MOVE_TOL_S = 10e-6         # a session map this close to ours (now and a bar on) is the same map
START_TOL_BEATS = 1e-3     # a start this close after a bar line starts on it (not on the next)


class LinkMissing(Exception):
    """LinkPython-extern is not installed; one line."""


def load_link():
    """The ``link`` module of LinkPython-extern, or LinkMissing saying how to install it."""
    try:
        import link
    except ImportError:
        link = None
    if link is None or not hasattr(link, "Link"):
        raise LinkMissing(f"--link needs Ableton Link for Python: pip install '{LINK_PACKAGE}'")
    return link


# -- pure mappings -------------------------------------------------------------------------------
def host_offset(readings) -> float:
    """``perf_counter`` seconds minus Link seconds, from ``(perf before, Link micros, perf after)``
    readings: the tightest reading's midpoint (the others waited on a preemption)."""
    before, micros, after = min(readings, key=lambda r: r[2] - r[0])
    return 0.5 * (before + after) - micros * 1e-6


def song_origin(start_beat: float, quantum: float) -> float:
    """The Link beat our song starts on: the first bar line (a multiple of the quantum) at or after
    the session's start, ``start_beat`` (Link's own start sits on one, up to rounding)."""
    return math.ceil(start_beat / quantum - START_TOL_BEATS / quantum) * quantum


def session_timeline(t: float, beat: float, origin: float, tempo: float) -> Timeline:
    """The engine's map from one reading of the session: at ``t`` (perf_counter) the Link beat is
    ``beat``; quarter notes count from ``origin``; a Link beat is a quarter note."""
    return Timeline(t, beat - origin, 60.0 / tempo)


def same_map(a: Timeline, b: Timeline, t: float, ahead_q: float) -> bool:
    """Do ``a`` and ``b`` put the notes of the next ``ahead_q`` quarters from ``t`` at the same times?"""
    q = b.position(t)
    return all(abs(a.time_of(x) - b.time_of(x)) <= MOVE_TOL_S for x in (q, q + ahead_q))


# -- the clock -------------------------------------------------------------------------------------
class LinkClock:
    """The engine's clock from an Ableton Link session (see the module's docstring).

    ``bpm`` is the tempo we bring to the session; ``on_peers(n)`` (optional) is told the number of
    other peers whenever it changes, from Link's thread. ``close()`` leaves the session."""
    follows = False                 # incoming MIDI clock is ignored: the session is the clock

    def __init__(self, bpm: float, beats_per_bar: int = 4, beat_unit: int = 4, *, on_peers=None,
                 perf=time.perf_counter):
        link = load_link()
        self.bar_q = bar_quarters(beats_per_bar, beat_unit)
        self.quantum = self.bar_q
        self._perf = perf
        self._link = link.Link(float(bpm))
        self._host = self._link.clock()
        if on_peers is not None:
            self._link.setNumPeersCallback(on_peers)
        self._link.startStopSyncEnabled = True
        self._link.enabled = True
        self._bpm = float(bpm)
        self._offset = 0.0
        self._offset_at = -math.inf
        self._origin: float | None = None      # Link beat of our song's start, while it plays
        self._stop_at: float | None = None     # perf_counter time of the session's Stop, once seen
        self._timeline: Timeline | None = None

    # -- reading the session (the conductor's thread) ---------------------------------------------
    def _measure_offset(self, now: float) -> None:
        perf, host = self._perf, self._host
        self._offset = host_offset([(perf(), host.micros(), perf()) for _ in range(OFFSET_READINGS)])
        self._offset_at = now

    def refresh(self, now: float) -> None:
        """Read the session: tempo, playing or not, and our map of it."""
        if now - self._offset_at >= OFFSET_EVERY_S:
            self._measure_offset(now)
        state = self._link.captureAppSessionState()
        micros = self._host.micros()
        self._bpm = state.tempo()
        if not state.isPlaying():
            if self._timeline is not None and self._stop_at is None:
                self._stop_at = state.timeForIsPlaying() * 1e-6 + self._offset
            return
        self._stop_at = None
        if self._origin is None:                 # the session started (or we joined it playing)
            self._origin = song_origin(state.beatAtTime(state.timeForIsPlaying(), self.quantum), self.quantum)
        tl = session_timeline(micros * 1e-6 + self._offset, state.beatAtTime(micros, self.quantum),
                              self._origin, self._bpm)
        if self._timeline is None or not same_map(self._timeline, tl, now, self.bar_q):
            self._timeline = tl                  # a new object only when the map moved: the engine retimes

    # -- the engine's questions -------------------------------------------------------------------
    @property
    def timeline(self) -> Timeline | None:
        """Our map of the session while it plays (None while stopped)."""
        return self._timeline

    @property
    def bpm(self) -> float:
        """The session's tempo (quarter notes a minute)."""
        return self._bpm

    def position(self, t: float) -> float | None:
        tl = self._timeline
        return None if tl is None else tl.position(t)

    def lost(self, now: float) -> bool:
        """Reads the session; True once its Stop time has come while we played (the engine then
        silences and calls ``mark_lost``)."""
        self.refresh(now)
        return self._stop_at is not None and now >= self._stop_at

    def mark_lost(self) -> None:
        """The song is over: wait for the session's next Start."""
        self._timeline, self._origin, self._stop_at = None, None, None

    def propose_tempo(self, bpm: float) -> None:
        """Set the session's tempo from now on (every peer follows; the beat phase is kept at this
        moment). Our next reading of the session gives the new map."""
        state = self._link.captureAppSessionState()
        state.setTempo(float(bpm), self._host.micros())
        self._link.commitAppSessionState(state)

    @property
    def peers(self) -> int:
        return self._link.numPeers()

    def close(self) -> None:
        """Leave the session (the other peers see us go at once, not after a timeout)."""
        self._link.enabled = False
