"""Timing against a real second Ableton Link peer: ``python -m sidl.realtime.live.bench --link-timing``.

A helper process (``PEER_SCRIPT``, LinkPython) is the other peer: it starts the session, changes
the tempo and stops it when told on stdin, and prints its own beat map in ``perf_counter`` seconds
("map T BEAT TEMPO": at T its beat is BEAT) whenever it changes and every 50 ms, so the grid a
listener of that peer hears is known without trusting anything of sidl's. The real ``sidl-live
--link --send-clock --quantize`` plays into a JACK port of ours (frame-accurate, ``--backend jack``):
its MIDI clock says where it puts every 24th of a beat (its Start and every 96th tick its bar lines),
its notes sit on its 16ths. Errors are each against the peer's nearest line of the same grid.

``perf_counter`` is CLOCK_MONOTONIC, one clock for every process on the machine, so the peer's map
and our recording share a time axis; Link itself counts on CLOCK_MONOTONIC_RAW, and the peer measures
the offset (as ``link.LinkClock`` does).
"""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace

import numpy as np

from .clock import PPQN
from .jackmidi import JUMP_REFRESHES, JUMP_S, LEAD_MARGIN_S, REFRESH_S
from .link import song_origin

FOLLOW_TOL_S = 0.001       # a tick this close to the peer's grid is on it (the Link target: p99 <= 1 ms)
QUANTUM = 4.0              # 4/4: a bar of four quarter-note beats
PEER_HEAD_START_S = 1.0    # the helper's session is this much older than sidl's (Link's tie window: 0.5 s)

PEER_SCRIPT = r"""
import sys, time, threading, link
bpm, quantum = float(sys.argv[1]), float(sys.argv[2])
l = link.Link(bpm); l.startStopSyncEnabled = True; l.enabled = True
clk = l.clock()
def offset():
    r = min(((time.perf_counter(), clk.micros(), time.perf_counter()) for _ in range(16)), key=lambda r: r[2] - r[0])
    return 0.5 * (r[0] + r[2]) - r[1] * 1e-6
off = offset()
lock = threading.Lock()
def say(*words):
    with lock:
        print(*words, flush=True)
def show():
    s = l.captureAppSessionState(); m = clk.micros()
    say("map", repr(m * 1e-6 + off), repr(s.beatAtTime(m, quantum)), repr(s.tempo()), int(s.isPlaying()), l.numPeers())
def ticker():
    global off
    while True:
        time.sleep(0.05); off = offset(); show()
threading.Thread(target=ticker, daemon=True).start()
say("ready")
for line in sys.stdin:
    cmd = line.split()
    s = l.captureAppSessionState(); now = clk.micros()
    if cmd[0] == "start":                 # the session starts on the bar line after now + cmd[1] s
        s.setIsPlayingAndRequestBeatAtTime(True, now + int(float(cmd[1]) * 1e6), 0.0, quantum)
        l.commitAppSessionState(s)
        s = l.captureAppSessionState()
        say("start", repr(s.timeForIsPlaying() * 1e-6 + off), repr(s.beatAtTime(s.timeForIsPlaying(), quantum)))
    elif cmd[0] == "tempo":
        s.setTempo(float(cmd[1]), now)
        l.commitAppSessionState(s)
        say("tempo", repr(now * 1e-6 + off), cmd[1])
    elif cmd[0] == "stop":
        s.setIsPlaying(False, now)
        l.commitAppSessionState(s)
        say("stop", repr(now * 1e-6 + off))
    elif cmd[0] == "quit":
        break
    show()
l.enabled = False
"""


# The recorder is a process of its own, started afresh for each run. Its stamps are not its frame
# clock's (``jackmidi.FrameClock``, the line sidl-live converts with too: a reference sharing it would
# agree with sidl wherever both are off wall time, seen 10 ms after a dummy server restarted its
# timeline) but, after the fact, when the server's timeline put each event's frame
# (``timeline_times``, from every cycle the recorder's callback saw). It prints each event as
# "T MOVED BYTES..." (MOVED: how far the timeline moved just before, ``timeline_moved``) and
# "line_off S": how far its own frame clock was off that timeline at worst.
RECORDER_SCRIPT = r"""
import sys, threading
import numpy as np
from sidl.realtime.live.linkpeer import timeline_moved, timeline_times
from sidl.realtime.live.ports import open_input
port = open_input(None, sys.argv[1], "jack")
port.clock.cycles = []
got, done = [], threading.Event()
def wait():
    sys.stdin.read()
    done.set()
threading.Thread(target=wait, daemon=True).start()
print("ready", port.name, flush=True)
def poll():
    return [(f, port.clock.time_of(f), d) for f, d in port.poll_frames()]
while not done.wait(0.001):
    got += poll()
got += poll()
port.clock.refresh(float("inf"))
print("xruns", port.xruns)
port.close()
cycles = np.array(port.clock.cycles, np.float64).reshape(-1, 2)
frames = np.array([f for f, _, _ in got], np.float64)
times = timeline_times(cycles[:, 0], cycles[:, 1], frames, port.clock.nominal)
moved = timeline_moved(cycles[:, 0], cycles[:, 1], frames, port.clock.nominal)
off = np.abs(np.array([t for _, t, _ in got]) - times)
print("line_off", repr(float(off.max()) if len(off) else 0.0))
print("\n".join(f"{float(t)!r} {float(m)!r} " + " ".join(map(str, d)) for t, m, (_, _, d) in zip(times, moved, got)), flush=True)
"""

TIMELINE_WINDOW_S = 0.5     # a late run of the callback shorter than this never moves the timeline
# sidl's frame clock follows a restarted timeline within this: JUMP_REFRESHES refreshes, the one
# that sees it, one more for refreshes that come only with a send or a poll, and the lead messages
# are queued with; an event sent sooner after a restart is off by the restart
SETTLE_S = (JUMP_REFRESHES + 2) * REFRESH_S + LEAD_MARGIN_S
MOVED_TOL_S = JUMP_S        # a restart smaller than this the frame clock slides to instead


def _unwrap(frames: np.ndarray, to: float) -> np.ndarray:
    """uint32 JACK frames as float64 near ``to`` (they wrap every 24.8 h at 48 kHz)."""
    d = (frames.astype(np.int64) - int(to)) % (1 << 32)
    return to + np.where(d >= 1 << 31, d - (1 << 32), d)


def timeline_times(cycle_frames: np.ndarray, cycle_times: np.ndarray, frames: np.ndarray,
                   rate: float, window_s: float = TIMELINE_WINDOW_S) -> np.ndarray:
    """When the server's timeline put each frame (perf_counter s), from (cycle start frame, when
    the process callback ran) of every cycle a client saw: at the nominal rate, through the
    earliest callbacks around it. A callback runs late (load, the GIL), never early, so the earliest
    are on the timeline; a dummy driver that fell behind starts its timeline again later, so a frame
    takes the later of the earliest before it and the earliest after it (each within ``window_s``):
    after a restart the earlier cycles no longer speak for it, and a late run shorter than the window
    has on-time cycles on both sides."""
    if len(frames) == 0:
        return np.zeros(0)
    if len(cycle_frames) == 0:
        raise ValueError("no JACK cycles were seen")
    f = _unwrap(np.asarray(cycle_frames), float(cycle_frames[0]))
    order = np.argsort(f, kind="stable")
    f, base = f[order], np.asarray(cycle_times, np.float64)[order] - f[order] / rate
    q = _unwrap(np.asarray(frames), float(f[0]))
    w = window_s * rate
    lo, mid, hi = (np.searchsorted(f, q - w), np.searchsorted(f, q, side="right"),
                   np.searchsorted(f, q + w, side="right"))
    out = np.empty(len(q))
    for i, (a, m, b) in enumerate(zip(lo, mid, hi)):
        before = base[a:m].min() if m > a else -np.inf
        after = base[m:b].min() if b > m else -np.inf
        out[i] = max(before, after)
    if np.any(np.isinf(out)):
        raise ValueError("a frame has no JACK cycle within the window")
    return out + q / rate


def timeline_moved(cycle_frames: np.ndarray, cycle_times: np.ndarray, frames: np.ndarray,
                   rate: float, settle_s: float = SETTLE_S) -> np.ndarray:
    """How far the server's timeline (``timeline_times``) moved in the ``settle_s`` before each
    frame: a dummy driver restarting it that much later, which a frame clock following it
    (``jackmidi.FrameClock``) has not caught up with yet."""
    if len(frames) == 0:
        return np.zeros(0)
    first = _unwrap(np.asarray(cycle_frames[:1]), float(cycle_frames[0]))[0]
    q = _unwrap(np.asarray(frames), first)
    back = np.maximum(q - settle_s * rate, first)
    now = timeline_times(cycle_frames, cycle_times, frames, rate) - q / rate
    before = timeline_times(cycle_frames, cycle_times, back.astype(np.int64) & 0xFFFFFFFF, rate) - back / rate
    return now - before


class LinkPeerError(Exception):
    """The helper peer or sidl-live did not come up; one line."""


class Peer:
    """The helper Link peer: ``send("start 1.0")``, ``events(kind)``; its maps as arrays."""

    def __init__(self, bpm: float, quantum: float = QUANTUM):
        self.proc = subprocess.Popen([sys.executable, "-c", PEER_SCRIPT, str(bpm), str(quantum)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1)
        self.lines: list[list[str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_for(lambda: self.events("ready"), 10.0, "the helper Link peer did not start")

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.split())

    def send(self, command: str) -> None:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def events(self, kind: str) -> list[list[str]]:
        return [w[1:] for w in list(self.lines) if w and w[0] == kind]

    def peers(self) -> int:
        maps = self.events("map")
        return int(maps[-1][4]) if maps else 0

    def wait_for(self, pred, timeout_s: float, what: str):
        deadline = time.monotonic() + timeout_s
        while not (got := pred()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise LinkPeerError(f"{what} (peer: {self.proc.poll()=}, "
                                    f"{(self.proc.stderr.read() if self.proc.poll() is not None else '')[-300:]})")
            time.sleep(0.02)
        return got

    def maps(self) -> np.ndarray:
        """(n, 3): perf_counter seconds, the peer's beat there, its tempo; in time order."""
        m = np.array([[float(w[0]), float(w[1]), float(w[2])] for w in self.events("map")])
        return m[np.argsort(m[:, 0])]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(timeout=3)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


# -- measuring (pure) -----------------------------------------------------------------------------
def peer_beat(maps: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The peer's beat at each time ``t`` and its tempo there, from the last map line before it.
    (The peer's map is linear between its own tempo changes, each printed at once.)"""
    i = np.clip(np.searchsorted(maps[:, 0], t, side="right") - 1, 0, len(maps) - 1)
    t0, b0, tempo = maps[i, 0], maps[i, 1], maps[i, 2]
    return b0 + (t - t0) * tempo / 60.0, tempo


def grid_error(maps: np.ndarray, t: np.ndarray, per_beat: float) -> np.ndarray:
    """Seconds from each ``t`` to the peer's nearest line of a grid ``per_beat`` lines a beat
    (1 / QUANTUM: bar lines); positive = late."""
    beat, tempo = peer_beat(maps, np.asarray(t, np.float64))
    return (beat - np.round(beat * per_beat) / per_beat) * 60.0 / tempo


@dataclass(frozen=True)
class LinkTiming:
    bar_error_s: np.ndarray     # each bar line sidl's clock marks, against the peer's nearest bar line
    tick_error_s: np.ndarray    # each clock tick against the peer's 24-a-beat grid (the beat after the change excluded)
    note_error_s: np.ndarray    # each note-on (--quantize) against the peer's 16ths (the beat after the change excluded)
    start_error_s: float        # sidl's MIDI Start against the peer's nearest bar line
    start_bar: int              # ...which is this bar of the session (0: its first)
    session_bpm: float          # the session's tempo when it started (the peer's, if sidl adopted it)
    follow_s: float             # after the peer's tempo change: until a whole beat of sidl's ticks is on its grid
    beat_s: float               # one beat at the new tempo (the follow target)
    notes_after_stop: int       # note-ons later than the session's Stop (+ one JACK period's slack)
    sounding: int               # notes left sounding when sidl-live exits
    tick_glitches: int = 0      # ticks doubled or missing as recorded
    midi_stop_s: float = math.inf   # sidl's MIDI Stop after the session's Stop (inf: none before sidl-live was quit)
    ticks_after_stop: int = 0   # clock ticks later than the session's Stop (+ one JACK period's slack)
    recorder_xruns: int = 0     # xruns our recorder saw (a dummy server may restart its timeline at each)
    recorder_line_off_s: float = 0.0   # how far a frame clock (sidl's kind) was off the server's timeline
                                       # at worst, as the recorder's own: what a shared reference would hide
    settling: int = 0           # ticks and note-ons left out of the errors: within SETTLE_S after the
                                # server restarted its timeline by more than MOVED_TOL_S
    settling_notes: int = 0     # ...of them note-ons before the session's Stop (note_error_s has the rest)


def measure(events, maps: np.ndarray, origin_beat: float, t_change: float, new_bpm: float,
            t_stop: float, t_quit: float = math.inf, moved=None) -> LinkTiming:
    """``events``: (perf_counter s, bytes) that sidl-live sent, as recorded; ``origin_beat``: the
    peer's beat of the session's first bar line; ``t_quit``: when sidl-live was told to quit (it
    sends Stop on the way out too); ``moved``: for each event, how far the server's timeline moved
    in the SETTLE_S before it: an event after a restart of more than MOVED_TOL_S is left out of the
    grid errors (``settling`` counts them; its lateness is the server's restart, not yet followed)."""
    from .peers import is_note_on as is_on, stuck_notes
    # (an event's time stands for it below: events at one time share a frame, so a moved figure)
    unsettled = [True] * len(events) if moved is None else [m <= MOVED_TOL_S for m in moved]  # (NaN: settling)
    settling = sum(not u for u, (_, d) in zip(unsettled, events) if d == [0xF8] or is_on(d))
    settling_notes = sum(not u for u, (t, d) in zip(unsettled, events) if is_on(d) and t < t_stop)
    on_time = {t for u, (t, _) in zip(unsettled, events) if u}

    def judged(times: np.ndarray) -> np.ndarray:
        """Of ``times``, those of events not settling after a server restart (a mask)."""
        return np.array([t in on_time for t in times], bool)
    starts = [t for t, d in events if d == [0xFA]]
    ticks = np.array([t for t, d in events if d == [0xF8]])
    if not starts or len(ticks) < PPQN * 2:
        raise LinkPeerError(f"sidl-live sent {len(starts)} Start and {len(ticks)} clock ticks: it did not play")
    ticks = ticks[ticks >= starts[0] - 0.002]
    # Ticks lost or doubled as recorded (xruns on a loaded box), by their spacing at the peer's tempo:
    # counted in tick_glitches; a doubled one is dropped.
    tick_s = 60.0 / peer_beat(maps, ticks)[1] / PPQN
    gaps = np.diff(ticks) / tick_s[1:]
    # (a tick can come early just after a tempo change: the new map's next tick; only one within a
    # quarter tick of the last is a doubled one)
    steps = np.where(gaps < 0.25, 0, np.maximum(1, np.round(gaps))).astype(int)
    keep = np.concatenate([[True], steps > 0])
    ticks = ticks[keep]
    # Bar lines: the ticks at the peer's bar lines. (Counting every 96th tick from Start shifts all
    # later bars by a tick when the recorder drops or squeezes one under xruns; that sidl starts on
    # the session's first bar line is start_bar and start_error_s.)
    beat = peer_beat(maps, ticks)[0]
    bars = ticks[np.round(beat * PPQN).astype(np.int64) % int(QUANTUM * PPQN) == 0]
    tick_err = grid_error(maps, ticks, PPQN)
    judged_ticks = judged(ticks)
    after = ticks > t_change
    # The first tick after the change from which a whole beat of ticks sits on the peer's grid (a
    # glitch of the transport seconds later is no slowness to follow: tick_error_s has it; a tick
    # settling after a server restart is no evidence either way, but the run starts on a judged one).
    on = (np.abs(tick_err) <= FOLLOW_TOL_S) | ~judged_ticks
    runs = np.convolve(on.astype(int), np.ones(PPQN, int), "valid") == PPQN    # runs[i]: ticks i..i+23 on it
    first = next((i for i in np.nonzero(after & judged_ticks)[0] if i < len(runs) and runs[i]), None)
    follow = float(ticks[first] - t_change) if first is not None else float("inf")
    settle = t_change + 60.0 / new_bpm              # ticks within a beat of the change: counted in follow_s
    steady = ~((ticks > t_change) & (ticks < settle))
    ons = np.array([t for t, d in events if is_on(d)])
    glitches = int((steps == 0).sum() + (steps > 1).sum())
    stops = [t for t, d in events if d == [0xFC] and t_stop - 0.002 <= t < t_quit]
    notes = ons[(ons < t_stop) & ~((ons > t_change) & (ons < settle))] if len(ons) else ons
    return LinkTiming(grid_error(maps, bars[judged(bars)], 1 / QUANTUM), tick_err[steady & judged_ticks],
                      grid_error(maps, notes[judged(notes)], 4.0) if len(notes) else np.zeros(0),
                      float(grid_error(maps, np.array(starts[:1]), 1 / QUANTUM)[0]),
                      int(np.round((peer_beat(maps, np.array(starts[:1]))[0][0] - origin_beat) / QUANTUM)),
                      float(peer_beat(maps, np.array(starts[:1]))[1][0]),
                      follow, 60.0 / new_bpm,
                      int((ons > t_stop + 0.002).sum()), stuck_notes(events), glitches,
                      midi_stop_s=stops[0] - t_stop if stops else math.inf,
                      ticks_after_stop=int((ticks > t_stop + 0.002).sum()), settling=settling,
                      settling_notes=settling_notes)


# -- running it ---------------------------------------------------------------------------------------
def run_link_session(preset: str = "drums-gmd", bpm: float = 180.0, new_bpm: float = 140.0,
                     bars_before: float = 3.4, bars_after: float = 3.0) -> tuple[LinkTiming, str]:
    """The helper peer starts a session at ``bpm``; the real ``sidl-live --link`` joins, plays
    ``bars_before`` bars, the peer changes the tempo to ``new_bpm`` (mid-bar), ``bars_after`` bars
    later it stops the session. Returns the figures and sidl-live's stderr."""
    tag = f"{os.getpid()}-{threading.get_ident() % 10000}"
    env = {k: v for k, v in os.environ.items() if k != "MIDO_BACKEND"}
    errf = tempfile.TemporaryFile("w+")
    peer = Peer(bpm)
    t_peer = time.monotonic()
    rec = live = None
    try:
        rec = subprocess.Popen([sys.executable, "-c", RECORDER_SCRIPT, f"sidl-link-rec-{tag}"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        ready = rec.stdout.readline().split()
        if ready[:1] != ["ready"]:
            raise LinkPeerError(f"the recorder did not start ({rec.poll()=})")
        # Link merges two sessions into the older one's, unless their ages are within 0.5 s (then
        # the lower random session id wins): make the peer's clearly older, so sidl joins an
        # existing session and must adopt its tempo, as it would join a band's.
        time.sleep(max(0.0, t_peer + PEER_HEAD_START_S - time.monotonic()))
        live = subprocess.Popen([sys.executable, "-m", "sidl.realtime.live.cli", "--preset", preset, "--link",
                                 "--bpm", "100", "--send-clock", "--quantize", "--backend", "jack",
                                 "--out", ready[1]], stdout=subprocess.DEVNULL, stderr=errf, env=env)

        def log():
            errf.seek(0)
            return errf.read()
        deadline = time.monotonic() + 60
        while "ports open" not in log():
            if live.poll() is not None or time.monotonic() > deadline:
                raise LinkPeerError(f"sidl-live did not start: {log().strip().splitlines()[-1:] or live.poll()}")
            time.sleep(0.05)
        peer.wait_for(lambda: peer.peers() >= 1, 10.0, "sidl-live's Link did not join the peer's session")
        time.sleep(0.5)                                   # sidl's worker warms up meanwhile
        peer.send("start 0.3")
        t_start, beat = (float(x) for x in peer.wait_for(lambda: peer.events("start"), 5.0, "no start")[0])
        # The session's tempo: ours, or sidl's --bpm if Link's merge kept that (the older session
        # wins unless the two are within 0.5 s; then the lower session id does).
        tempo = float(peer.maps()[-1][2])
        origin = song_origin(beat, QUANTUM)
        t_bar0 = t_start + (origin - beat) * 60 / tempo              # the session's first bar line
        time.sleep(max(0.0, t_bar0 + bars_before * QUANTUM * 60 / tempo - time.perf_counter()))
        peer.send(f"tempo {new_bpm:g}")
        t_change = float(peer.wait_for(lambda: peer.events("tempo"), 5.0, "no tempo change")[0][0])
        time.sleep(max(0.0, t_change + bars_after * QUANTUM * 60 / new_bpm - time.perf_counter()))
        peer.send("stop")
        t_stop = float(peer.wait_for(lambda: peer.events("stop"), 5.0, "no stop")[0][0])
        time.sleep(0.5)                                   # sidl sees the stop and silences
        t_quit = time.perf_counter()
        live.send_signal(signal.SIGINT)
        live.wait(timeout=10)
        time.sleep(0.1)                                   # its last messages cross JACK
        out, _ = rec.communicate("", timeout=10)
        lines = [line.split() for line in out.splitlines() if line.strip()]
        said = {w[0]: w[1] for w in lines if w[0] in ("xruns", "line_off")}
        got = [(float(w[0]), [int(x) for x in w[2:]]) for w in lines if w[0] not in said]
        moved = [float(w[1]) for w in lines if w[0] not in said]
        return replace(measure(got, peer.maps(), origin, t_change, new_bpm, t_stop, t_quit, moved),
                       recorder_xruns=int(said.get("xruns", -1)),
                       recorder_line_off_s=float(said.get("line_off", "nan"))), log()
    finally:
        for proc in (live, rec):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        peer.close()
        errf.close()


def run_map_session(bpm: float = 180.0, new_bpm: float = 140.0, bars_before: float = 3.4,
                    bars_after: float = 3.0, poll_s: float = 0.001) -> tuple[np.ndarray, float, float]:
    """The same session without JACK or sidl-live: ``link.LinkClock`` in this process, polled as the
    conductor polls it. Returns the seconds by which each bar line its maps put inside the span they
    were current differs from the peer's, the time from the peer's tempo change until the clock had
    the new tempo, and one beat at that tempo: the Link side of the timing alone."""
    from .link import LinkClock
    peer = Peer(bpm)
    time.sleep(PEER_HEAD_START_S)
    clock = LinkClock(100.0)
    seen: list[tuple[float, object]] = []            # (when a map became current, the map or None)
    done = threading.Event()

    def conduct():
        while not done.wait(poll_s):
            now = time.perf_counter()
            if clock.lost(now):
                clock.mark_lost()
            if not seen or clock.timeline is not seen[-1][1]:
                seen.append((now, clock.timeline))

    th = threading.Thread(target=conduct, daemon=True)
    try:
        peer.wait_for(lambda: peer.peers() >= 1, 10.0, "no Link session")
        th.start()
        time.sleep(0.3)
        peer.send("start 0.3")
        t_start, beat = (float(x) for x in peer.wait_for(lambda: peer.events("start"), 5.0, "no start")[0])
        tempo = float(peer.maps()[-1][2])
        t_bar0 = t_start + (song_origin(beat, QUANTUM) - beat) * 60 / tempo
        time.sleep(max(0.0, t_bar0 + bars_before * QUANTUM * 60 / tempo - time.perf_counter()))
        peer.send(f"tempo {new_bpm:g}")
        t_change = float(peer.wait_for(lambda: peer.events("tempo"), 5.0, "no tempo change")[0][0])
        time.sleep(max(0.0, t_change + bars_after * QUANTUM * 60 / new_bpm - time.perf_counter()))
        peer.send("stop")
        peer.wait_for(lambda: peer.events("stop"), 5.0, "no stop")
        time.sleep(0.2)
        done.set()
        th.join()
        maps = peer.maps()
    finally:
        done.set()
        clock.close()
        peer.close()
    errors = []
    follow = float("inf")
    for (t0, tl), (t1, _) in zip(seen, seen[1:] + [(time.perf_counter(), None)]):
        if tl is None:
            continue
        if t0 > t_change and abs(tl.bpm - new_bpm) < 1e-3 and follow == float("inf"):
            follow = t0 - t_change
        q0, q1 = tl.position(t0), tl.position(t1)
        bars = np.arange(np.ceil(q0 / QUANTUM), np.floor(q1 / QUANTUM) + 1) * QUANTUM
        errors += list(grid_error(maps, tl.time_of(bars), 1 / QUANTUM))
    return np.array(errors), follow, 60.0 / new_bpm
