"""MIDI through JACK to the frame: the JACK-Client package's ports, for ``--backend jack``.

python-rtmidi's JACK backend writes every outgoing message at frame 0 of the next cycle and stamps
incoming ones with the cycle's time, so timing there is only as good as a period (1.3 ms at 64
frames, 5.3 ms at 256). Here every event keeps its frame:

* incoming events are stamped in JACK's process callback with their absolute frame
  (``last_frame_time`` + the event's offset in the cycle), and ``poll()`` turns each frame into a
  ``perf_counter()`` second through the process's ``FrameClock``;
* outgoing messages are queued by the scheduler a little ahead (``lead_s``) with their due frame
  (the same ``FrameClock``, the other way); the process callback writes each at its offset within
  the cycle that contains that frame.

The ``FrameClock`` is a straight line, frames <-> seconds, that moves only slowly, except to a
dummy server's restarted timeline (see the class). A MIDI clock whose
ticks sit exactly 1000 frames apart (``jack_midi_clock`` at 120 BPM, 48 kHz) is then stamped on an
exact line too, the clock follower fits it without residue, and the notes it predicts go back to
the frames the ticks implied. JACK's own frames -> time map (``jack_frames_to_time``, its DLL) is not
used: on a dummy server under load it bends by a millisecond and more within seconds (measured:
ticks 1000 frames apart, stamped through it, left a 2-second line by 0.8 ms p99). The line is
fitted to when the process callbacks actually run (their earliest), so it stays on wall time.

The lead is a period, a margin, and how far ahead of the line JACK runs a cycle (a cycle must have
its events before it runs): held from what the output callback measures each cycle.

Every note-off and All Notes Off the output writes is written again twice (the *resend*): in the
next cycle, and RESEND_LATER_S later, unless that key (or channel) was struck again since and still
sounds. A JACK graph that stalls loses whole cycles of MIDI now and then, at every reader alike, and a
stall can take several cycles in a row: on this project's dummy server under load, 20-75 of 15,000
note-offs a run (``python -m sidl.realtime.live.bench --resend``; a C client, ``jack_midiseq``, loses
cycles too). A lost note-on is a missing note; a lost note-off is a note stuck until the synth is
reset. A note-off for a key that is silent changes nothing on a synth, so the resend costs six bytes
a note.

The process callback runs on JACK's real-time thread. It only copies bytes between JACK's port
buffer and a preallocated ring of fixed slots (one writer, one reader, no lock: the indices are
plain integers that only their owner side advances, and the GIL orders them), notes when it ran,
and never logs. It does need the GIL: we shorten the interpreter's switch interval so that a busy
Python thread hands it over within a fraction of a period instead of the default 5 ms.
"""
from __future__ import annotations

import sys
import threading
import time

from ..controls import ALL_NOTES_OFF_CC
from .ports import VIRTUAL_IN, VIRTUAL_OUT, PortError, match_port

SLOTS = 4096              # events either ring holds (a power of two); a dense bar of clock + notes is ~200
SLOT_BYTES = 256          # longest message kept (longer sysex in is dropped and counted: nothing here reads it)
LEAD_MARGIN_S = 0.004     # queued this long before its cycle begins: the send thread's wake-up slack
                          # (1.5 ms let 7% of ticks go late on a loaded CI box; a panic waits at most this)
EARLY_WINDOW = 1024       # cycles over which the callback's earliest run is held (1.4 s at 64 frames)
REFRESH_S = 0.1           # how often the frame clock's line is brought closer to the callbacks' times
FIRST_S = 0.1             # the line starts from this long of callbacks (the first port waits for them)
STEP_S = 4e-6             # it moves at most this much a refresh at the current frame (40 us/s)...
STEP_RATE = 2e-6          # ...and its slope at most this fraction: changes a tick fit absorbs
HISTORY = 200             # refreshes (20 s) of callback-time points the line is fitted to
JUMP_S = 0.00025          # every callback of a refresh this far after the line (or a tenth of them
JUMP_REFRESHES = 2        # this far before it), this many refreshes in a row: the line jumps there
EARLY_Q = 10              # a refresh's point: this percentile of how late after the line callbacks ran
DRAIN_S = 1.0             # an output being closed waits this long at most for JACK to take its queue
CLOSE_S = 2.0             # longest a JACK client's close is waited for (see _JackPort.close)
SETTLE_PERIODS = 3        # ...and then this many cycles, for the readers of its port to take the last
SWITCH_INTERVAL_S = 0.0002  # longest a Python thread keeps the GIL while JACK's thread waits for it
RESEND_SLOTS = SLOTS       # note-offs and All Notes Off waiting to be written again, in each of its two queues
RESEND_LATER_S = 0.05      # the second resend: past a stall of several cycles (this VM's last ~10 ms)
_MASK = SLOTS - 1
_U32, _HALF = 0xFFFFFFFF, 0x80000000

_CDEF = """
typedef uint32_t jack_nframes_t;
typedef unsigned char jack_midi_data_t;
typedef struct _jack_client jack_client_t;
typedef struct _jack_port jack_port_t;
typedef struct { jack_nframes_t time; size_t size; jack_midi_data_t *buffer; } jack_midi_event_t;
jack_nframes_t jack_last_frame_time(const jack_client_t *client);
jack_port_t *jack_port_by_name(jack_client_t *client, const char *port_name);
void *jack_port_get_buffer(jack_port_t *port, jack_nframes_t frames);
uint32_t jack_midi_get_event_count(void *port_buffer);
int jack_midi_event_get(jack_midi_event_t *event, void *port_buffer, uint32_t event_index);
void jack_midi_clear_buffer(void *port_buffer);
int jack_midi_event_write(void *port_buffer, jack_nframes_t time, const jack_midi_data_t *data, size_t data_size);
"""
_ffi = None                # cffi (a JACK-Client dependency) and libjack, bound on first use
_lib = None


def _jack():
    """The JACK-Client module and our own binding of the few libjack calls it does not wrap."""
    global _ffi, _lib
    try:
        import cffi
        import jack
    except (ImportError, OSError) as e:        # JACK-Client missing, or libjack not installed
        raise PortError(f"the JACK backend needs the JACK-Client package and libjack ({e}); "
                        f"or use --backend rtmidi-jack") from e
    if _lib is None:
        import ctypes.util
        ffi = cffi.FFI()
        ffi.cdef(_CDEF)
        try:
            _lib = ffi.dlopen("libjack.so.0")
        except OSError:
            _lib = ffi.dlopen(ctypes.util.find_library("jack") or "libjack")
        _ffi = ffi
    return jack


def available() -> bool:
    """Does JACK-Client import here (it loads libjack)?"""
    try:
        _jack()
        return True
    except PortError:
        return False


class _Runs:
    """When one client's process callback ran: (cycle start frame, perf_counter s), written there."""

    def __init__(self):
        self.frames = _ffi.new("uint32_t[]", SLOTS)
        self.times = _ffi.new("double[]", SLOTS)
        self.head = 0
        self.tail = 0


class FrameClock:
    """``perf_counter()`` seconds <-> JACK frames (uint32, wrapping) of one server, on a slow line.

    Our ports' callbacks record when they ran (``_Runs``); ``refresh`` (from the ports' own threads,
    never JACK's) reads that and moves the line by at most ``STEP_S`` and ``STEP_RATE`` a refresh, so
    conversions made a bar apart still agree to microseconds (except across a jump, below). It
    starts at the nominal sample rate through the earliest of the first callbacks: a driver's cycles
    wake on its own timeline at that rate, late under load but never early. A dummy driver that falls too far behind starts its
    timeline again later: when even the earliest callback of ``JUMP_REFRESHES`` refreshes in a row
    ran more than ``JUMP_S`` after the line, the line jumps by the smaller of those two lateness
    figures (a load burst leaves on-time callbacks in a refresh; a restart does not; a restart still
    under way is followed again two refreshes later). Sliding ``STEP_S`` a refresh
    instead took minutes, every note on a wall-clock source (the internal clock, Link) that far off:
    measured against the server's timeline (``linkpeer.timeline_times``), Link runs under load
    ended milliseconds late. Callbacks a tenth of a refresh more than ``JUMP_S`` before the line prove the
    line late (callbacks are never early): it jumps back at once. ``jumps`` counts both. A jump is
    a step in every conversion: clock ticks stamped across it move by it (the follower sees a
    phase step), and messages due within it after a forward jump go out on one frame, in order
    (the output never queues before what it holds).
    (A first try, on the tenth-percentile callback at 2 ms, was judged against a recorder on this
    same line, which hid the restarts both lines missed and showed the ones only one followed.)
    """

    def __init__(self, rate: float):
        self.nominal = float(rate)
        self.line: tuple[int, float, float] | None = None   # (anchor frame, its seconds, seconds per frame)
        self.sources: list[_Runs] = []
        self._lock = threading.Lock()     # refresh only (the ports' threads); JACK's thread never takes it
        self._next = 0.0
        self._first: tuple[list[int], list[float]] = ([], [])   # cycles seen before the line starts
        self._points: list[tuple[int, float]] = []     # (frame, earliest callback seconds) per refresh
        self._moved: list[float] = []     # the last refreshes' earliest lateness, each beyond JUMP_S
        self.jumps = 0                    # times the line moved to the server's timeline at once
        # Every (cycle start frame, callback s) that refresh reads, kept when a list: a recorder's
        # reference made after the fact, independent of this line (linkpeer's).
        self.cycles: list[tuple[int, float]] | None = None

    def ready(self) -> bool:
        return self.line is not None

    def unwrap(self, frame: int) -> int:
        f0 = self.line[0]
        d = (frame - f0) & _U32
        return f0 + (d - (1 << 32) if d >= _HALF else d)

    def time_of(self, frame: int) -> float:
        f0, t0, spf = self.line
        d = (frame - f0) & _U32
        return t0 + ((d - (1 << 32)) if d >= _HALF else d) * spf

    def frame_of(self, t: float) -> int:
        f0, t0, spf = self.line
        return round(f0 + (t - t0) / spf) & _U32

    def maybe_refresh(self, now: float) -> None:
        if now >= self._next:
            self.refresh(now)

    def wait_ready(self, timeout_s: float = 2.0) -> None:
        deadline = time.perf_counter() + timeout_s
        while self.line is None:
            if time.perf_counter() > deadline:
                raise PortError("JACK runs no process cycles for sidl (is the server stuck?)")
            time.sleep(0.01)
            self.refresh(time.perf_counter())

    def refresh(self, now: float) -> None:
        import numpy as np
        if not self._lock.acquire(blocking=False):
            return                        # the other thread is at it
        try:
            self._next = now + REFRESH_S
            frames, times = [], []
            for src in list(self.sources):
                head, tail = src.head, src.tail
                if head - tail > SLOTS:
                    tail = head - SLOTS
                for i in range(tail, head):
                    frames.append(src.frames[i & _MASK])
                    times.append(src.times[i & _MASK])
                src.tail = head
            if not frames:
                return
            if self.cycles is not None:
                self.cycles += zip(frames, times)
            if self.line is None:         # the first cycles: the nominal rate, through the earliest
                first_f, first_t = self._first
                first_f += frames
                first_t += times
                if first_t[-1] - first_t[0] < FIRST_S:
                    self._next = now      # (not yet: look again at the next call)
                    return
                self.line = (first_f[-1], first_t[-1], 1.0 / self.nominal)
                self.line = (first_f[-1], first_t[-1] + min(t - self.time_of(fr) for fr, t in zip(first_f, first_t)),
                             1.0 / self.nominal)
                self._first = ([], [])
                return
            f = np.array([self.unwrap(x) for x in frames], np.float64)
            late = np.array(times) - np.array([self.time_of(x) for x in frames])
            k = int(np.argmin(np.abs(late - np.percentile(late, EARLY_Q))))
            f0, t0, spf = self.line
            fn = int(f[-1])                                   # re-anchor at the newest cycle
            tn = t0 + (fn - f0) * spf
            earliest, early = float(late.min()), float(late[k])
            whole = (f[-1] - f[0]) * spf >= REFRESH_S / 2     # a refresh's worth of cycles, not a few
            self._moved = self._moved + [earliest] if earliest > JUMP_S and whole else []
            if len(self._moved) >= JUMP_REFRESHES or (early < -JUMP_S and whole):
                shift = min(self._moved) if early >= -JUMP_S else early
                self.line = (fn, tn + shift, spf)
                i = int(np.argmin(late))
                self._points, self._moved = [(int(f[i]), float(times[i]))], []
                self.jumps += 1
                return
            self._points = (self._points + [(int(f[k]), float(times[k]))])[-HISTORY:]
            if len(self._points) >= 3:
                pf = np.array([p[0] for p in self._points], np.float64) - fn
                pt = np.array([p[1] for p in self._points])
                slope, at = np.polyfit(pf, pt, 1)             # the callbacks' line, at fn
            else:
                slope, at = spf, tn + float(np.percentile(late, EARLY_Q))
            slope = min(max(slope, spf * (1 - STEP_RATE)), spf * (1 + STEP_RATE))
            at = min(max(at, tn - STEP_S), tn + STEP_S)
            self.line = (fn, at, slope)
        finally:
            self._lock.release()


_clocks: dict[str, FrameClock] = {}


def _clock_for(rate: float) -> FrameClock:
    """One frame clock per JACK server in this process: every port converts on the same line."""
    import os
    server = os.environ.get("JACK_DEFAULT_SERVER", "default")
    clock = _clocks.get(server)
    if clock is None or clock.nominal != rate:
        clock = _clocks[server] = FrameClock(rate)
    return clock


class _Ring:
    """Fixed slots of encoded bytes with their frames: written by one side, read by the other."""

    def __init__(self):
        self.data = _ffi.new("unsigned char[]", SLOTS * SLOT_BYTES)
        self.slot = [self.data + i * SLOT_BYTES for i in range(SLOTS)]   # made once: no cdata per event
        self.frames = _ffi.new("uint32_t[]", SLOTS)
        self.sizes = _ffi.new("uint32_t[]", SLOTS)
        self.head = 0                # events written so far (only the writer moves it)
        self.tail = 0                # events read so far (only the reader moves it)


class _JackPort:
    """One JACK client with one MIDI port of ours, optionally connected to an existing port."""

    def __init__(self, client_name: str, own_name: str, is_input: bool):
        jack = _jack()
        try:
            self._client = jack.Client(client_name, no_start_server=True)
        except jack.JackError as e:
            raise PortError(f"cannot open a JACK client {client_name!r}: {e}") from e
        ports = self._client.midi_inports if is_input else self._client.midi_outports
        self._port = ports.register(own_name)
        self.own = self._port.name                        # "sidl-in:sidl in"
        self._cptr = _ffi.cast("jack_client_t *", int(jack._ffi.cast("uintptr_t", self._client._ptr)))
        self._pptr = _lib.jack_port_by_name(self._cptr, self.own.encode())
        self.clock = _clock_for(self._client.samplerate)
        self.period_s = self._client.blocksize / self._client.samplerate
        self.ring = _Ring()
        self._runs = _Runs()
        self.xruns = 0
        self.close_timed_out = False         # JACK did not let the client close within CLOSE_S
        self._shut = False
        self._client.set_shutdown_callback(self._on_shutdown)
        self._client.set_xrun_callback(self._on_xrun)
        self._client.set_process_callback(self._process)
        if sys.getswitchinterval() > SWITCH_INTERVAL_S:
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        self._client.activate()
        self.clock.sources.append(self._runs)
        self.target: str | None = None
        self.gone: float | None = None       # perf_counter s since the connected port is missing
        self.reconnects = 0
        self._jack = jack
        try:
            self.clock.wait_ready()
        except PortError:
            self.close()
            raise

    def _ran(self, start: int, now: float) -> None:
        """(JACK's thread) note when this cycle ran, for the frame clock."""
        runs = self._runs
        h = runs.head
        runs.frames[h & _MASK] = start
        runs.times[h & _MASK] = now
        runs.head = h + 1

    def _on_shutdown(self, status, reason) -> None:
        self._shut = True

    def _on_xrun(self, delay_usecs) -> None:
        self.xruns += 1

    def connect(self, match: str, direction: str) -> None:
        """Connect our port to the existing port that ``match`` names (see ``ports.match_port``)."""
        names = [n for n in midi_port_names(self._client, is_input=direction == "output")
                 if not n.startswith(self._client.name + ":")]
        self.target = match_port(match, names, direction)
        self._match, self._direction = match, direction
        try:
            if direction == "input":
                self._client.connect(self.target, self.own)
            else:
                self._client.connect(self.own, self.target)
        except self._jack.JackError as e:
            raise PortError(f"cannot connect to JACK port {self.target!r}: {e}") from e

    def alive(self) -> bool:
        """False once the JACK server has gone. The port we connected to may vanish (a DAW
        restarted, an interface unplugged): then ``gone`` holds since when, and each call looks for
        a port matching the name given at open and connects to it again (the engine asks every
        0.25 s, so it plays again within that of the port reappearing)."""
        if self._shut:
            return False
        if self.target is None:
            return True
        if self.gone is None:
            try:
                self._client.get_port_by_name(self.target)
                return True
            except self._jack.JackError:
                self.gone = time.perf_counter()
        try:
            self.connect(self._match, self._direction)
            self.gone = None
            self.reconnects += 1
        except PortError:
            pass                             # not back yet
        return True

    def close(self) -> None:
        """Close the client; an output first lets JACK take what is queued (the note-offs of a
        panic sent just before) and write their resends, for up to ``DRAIN_S``."""
        if isinstance(self, JackMidiOutput) and not self._shut:
            deadline = time.perf_counter() + DRAIN_S
            while ((self.ring.tail != self.ring.head or self._later_tail != self._later_head)
                   and time.perf_counter() < deadline and not self._shut):
                time.sleep(0.002)
            # Taken into a cycle's buffer is not yet read by the ports we feed, whose callbacks on a
            # loaded box may run after ours returns (a stop on CI once ended with note-ons whose
            # note-offs the recorder never got): a few cycles more before the port goes.
            time.sleep(max(SETTLE_PERIODS * self.period_s, 0.005))
        if self._runs in self.clock.sources:
            self.clock.sources.remove(self._runs)
        if not self._shut:
            try:
                self._client.deactivate()
            except self._jack.JackError:
                pass
        # jack_client_close once blocked for good (1 of 1,000 soak sessions, after everything was
        # sent and silenced; cause unknown): wait CLOSE_S at most, then leave the client to the
        # process's exit, where the server drops it. The client's __del__ must not try again.
        closer = threading.Thread(target=self._client.close, name="sidl-jack-close", daemon=True)
        closer.start()
        closer.join(CLOSE_S)
        if closer.is_alive():
            self.close_timed_out = True
            leave_to_exit(self._client)


class JackMidiInput(_JackPort):
    """An input port polled like ``ports.MidiInput``: ``poll()`` -> ``[(perf_counter s, [bytes])]``,
    each stamped with its own frame. ``latency_s`` is 0: the stamp is the frame's time itself."""

    latency_s = 0.0

    def __init__(self, client_name: str):
        self.lost = 0                # events dropped: the ring full, or a sysex too long
        _jack()
        self._event = _ffi.new("jack_midi_event_t *")
        super().__init__(client_name, VIRTUAL_IN, is_input=True)
        self.name = self.own

    def _process(self, nframes: int) -> None:
        # JACK's real-time thread: copy events into the ring, nothing else.
        start = _lib.jack_last_frame_time(self._cptr)
        self._ran(start, time.perf_counter())
        buf = _lib.jack_port_get_buffer(self._pptr, nframes)
        n = _lib.jack_midi_get_event_count(buf)
        if not n:
            return
        ring, ev = self.ring, self._event
        head = ring.head
        for i in range(n):
            if _lib.jack_midi_event_get(ev, buf, i):
                break
            size = ev.size
            if size > SLOT_BYTES or head - ring.tail >= SLOTS:
                self.lost += 1
                continue
            s = head & _MASK
            _ffi.memmove(ring.slot[s], ev.buffer, size)
            ring.frames[s] = (start + ev.time) & _U32
            ring.sizes[s] = size
            head += 1
        ring.head = head

    def poll(self) -> list[tuple[float, list[int]]]:
        return self._drain(self.clock.time_of)

    def poll_frames(self) -> list[tuple[int, list[int]]]:
        """As ``poll``, each event with its JACK frame (uint32, as the server counts) for a time."""
        return self._drain(int)

    def _drain(self, stamp) -> list:
        self.clock.maybe_refresh(time.perf_counter())
        ring = self.ring
        tail, head = ring.tail, ring.head
        if tail == head:
            return []
        unpack = _ffi.unpack
        got = []
        while tail != head:
            s = tail & _MASK
            got.append((stamp(ring.frames[s]), list(unpack(ring.slot[s], ring.sizes[s]))))
            tail += 1
        ring.tail = tail
        return got


class JackMidiOutput(_JackPort):
    """An output like ``ports.MidiOutput`` that also takes due times: ``send_at(msg, t)``.

    The scheduler calls ``send_at`` ``lead_s`` before ``t`` (the callback for the cycle holding
    ``t``'s frame runs up to a period before ``t``); ``send``/``send_bytes`` mean "now". The ring
    stays in frame order (JACK requires it): a message never goes before one queued earlier, so a
    panic's note-offs always follow the note-ons already queued. One thread sends at a time (the
    scheduler's, under its lock); a lock here, never taken by JACK's thread, covers any other caller.
    """

    latency_s = 0.0

    def __init__(self, client_name: str, resend: bool = True):
        self.late = 0                # events whose frame had passed when their cycle came (sent at once)
        self.resent = 0              # note-offs / All Notes Off written again (see the module doc)
        self._last = None            # frame of the last message queued
        # The resend, JACK's thread only: note-offs to write again (3 bytes each), next cycle's and the
        # later ones (with their frames, in frame order), and what was struck since.
        _jack()
        self._next = _ffi.new("unsigned char[]", RESEND_SLOTS * 3)
        self._next_n = 0
        self._later = _ffi.new("unsigned char[]", RESEND_SLOTS * 3)
        self._later_frames = _ffi.new("uint32_t[]", RESEND_SLOTS)
        self._later_head = self._later_tail = 0
        self._later_frames_d = 0     # RESEND_LATER_S in frames, once the rate is known (until then: next cycle)
        self._resend_max = RESEND_SLOTS if resend else 0   # (off: only for the benchmark's comparison)
        self._struck = bytearray(16 * 128)   # (channel, key): its note-ons written and not yet off
        self._struck_ch = bytearray(16)      # channel: a note-on written after its last All Notes Off
        self._silent = bytes(128)            # a channel's keys after All Notes Off (copied, never made there)
        self._early = [0.0, 0.0]     # the callback's earliest run before its cycle's time: this window, the last
        self._cycles = 0
        self._send_lock = threading.Lock()
        super().__init__(client_name, VIRTUAL_OUT, is_input=False)
        self._later_frames_d = round(RESEND_LATER_S * self._client.samplerate)
        self.name = self.own

    @property
    def lead_s(self) -> float:
        """How long before its time the scheduler hands a message over (read before each hand-over)."""
        return self.period_s + LEAD_MARGIN_S + max(self._early)

    def send(self, msg) -> None:
        self._queue(msg.bytes(), None)

    def send_bytes(self, data: list[int]) -> None:
        """Raw bytes, unchecked, now."""
        self._queue(data, None)

    def send_at(self, msg, t: float) -> None:
        """Queue ``msg`` for perf_counter second ``t`` (its frame)."""
        self._queue(msg.bytes(), t)

    def _queue(self, data, t: float | None) -> None:
        if self._shut:
            raise PortError("the JACK server has shut down")
        size = len(data)
        if not 0 < size <= SLOT_BYTES:
            raise PortError(f"cannot send a MIDI message of {size} bytes through JACK (at most {SLOT_BYTES})")
        now = time.perf_counter()
        clock = self.clock
        ring = self.ring
        with self._send_lock:
            frame = clock.frame_of(now if t is None else t)
            if self._last is not None and (frame - self._last) & _U32 >= _HALF:
                frame = self._last                       # never before what is queued already
            head = ring.head
            if head - ring.tail >= SLOTS:
                raise PortError("JACK is not taking MIDI from sidl (its output queue is full)")
            s = head & _MASK
            _ffi.memmove(ring.slot[s], bytes(data), size)
            ring.frames[s] = frame
            ring.sizes[s] = size
            self._last = frame
            ring.head = head + 1
        # The line is brought closer after the message is queued, not before: a refresh (numpy over
        # the cycles since the last) then never delays the message it would have converted, which
        # goes out on a line at most a refresh older.
        clock.maybe_refresh(now)

    def _process(self, nframes: int) -> None:
        # JACK's real-time thread: write the events due in this cycle at their offsets, nothing else.
        start = _lib.jack_last_frame_time(self._cptr)
        now = time.perf_counter()
        self._ran(start, now)
        line = self.clock.line
        if line is not None:
            d = (start - line[0]) & _U32
            early = line[1] + (d - (1 << 32) if d >= _HALF else d) * line[2] - now
            held = self._early
            if early > held[0]:
                held[0] = early
        self._cycles += 1
        if not self._cycles & (EARLY_WINDOW - 1):
            held = self._early
            held[1], held[0] = held[0], 0.0
        buf = _lib.jack_port_get_buffer(self._pptr, nframes)
        _lib.jack_midi_clear_buffer(buf)
        write = _lib.jack_midi_event_write
        struck, struck_ch = self._struck, self._struck_ch
        nxt, n_next, resend_max = self._next, self._next_n, self._resend_max
        if n_next:                                       # last cycle's note-offs again, first, at 0
            for e in range(0, 3 * n_next, 3):
                if self._sounds(nxt, e):
                    continue                             # struck again since: a resend would cut it
                if write(buf, 0, nxt + e, 3):
                    break
                self.resent += 1
            n_next = 0
        later, later_frames = self._later, self._later_frames
        tail, head = self._later_tail, self._later_head
        while tail != head:                              # and those of RESEND_LATER_S ago
            s = tail % RESEND_SLOTS
            if (later_frames[s] - start) & _U32 < _HALF and (later_frames[s] - start) & _U32 >= nframes:
                break                                    # (a later cycle's)
            tail += 1
            if self._sounds(later, 3 * s):
                continue
            if write(buf, 0, later + 3 * s, 3):
                break
            self.resent += 1
        self._later_tail = tail
        ring = self.ring
        tail, head = ring.tail, ring.head
        if tail != head:
            frames, sizes, slot = ring.frames, ring.sizes, ring.slot
            later_d, later_head = self._later_frames_d, self._later_head
            floor = 0
            while tail != head:
                s = tail & _MASK
                offset = (frames[s] - start) & _U32
                if offset >= _HALF:                      # its frame has passed: now, counted late
                    offset = floor
                    self.late += 1
                elif offset >= nframes:                  # a later cycle's (the ring is in frame order)
                    break
                elif offset < floor:
                    offset = floor
                data = slot[s]
                if write(buf, offset, data, sizes[s]):   # the port buffer is full: the rest next cycle
                    break
                floor = offset
                tail += 1
                if sizes[s] != 3:
                    continue
                st = data[0]                             # what the resend needs to know
                kind, ch = st & 0xF0, st & 0x0F
                if kind == 0x90 and data[2]:
                    k = (ch << 7) | data[1]
                    if struck[k] < 255:
                        struck[k] += 1
                    struck_ch[ch] = 1
                    continue
                if kind == 0x80 or kind == 0x90:
                    k = (ch << 7) | data[1]
                    if struck[k]:
                        struck[k] -= 1
                    if struck[k]:                        # a re-strike still sounds: no resend
                        continue
                elif kind == 0xB0 and data[1] == ALL_NOTES_OFF_CC:
                    struck[ch << 7:(ch + 1) << 7] = self._silent
                    struck_ch[ch] = 0
                else:
                    continue
                if n_next < resend_max:
                    _ffi.memmove(nxt + 3 * n_next, data, 3)
                    n_next += 1
                if later_head - self._later_tail < resend_max:
                    ls = later_head % RESEND_SLOTS
                    _ffi.memmove(later + 3 * ls, data, 3)
                    later_frames[ls] = (start + offset + later_d) & _U32
                    later_head += 1
            ring.tail = tail
            self._later_head = later_head
        self._next_n = n_next

    def _sounds(self, msg, e: int) -> bool:
        """Whether the note-off (or All Notes Off) at ``msg[e:e+3]`` would now cut a re-strike."""
        st = msg[e]
        ch = st & 0x0F
        if (st & 0xF0) == 0xB0:
            return bool(self._struck_ch[ch])
        return bool(self._struck[(ch << 7) | msg[e + 1]])


def open_input(match: str | None = None, client_name: str = "sidl-in") -> JackMidiInput:
    port = JackMidiInput(client_name)
    try:
        if match is not None:
            port.connect(match, "input")
            port.name = port.target
    except Exception:
        port.close()
        raise
    return port


def open_output(match: str | None = None, client_name: str = "sidl-out") -> JackMidiOutput:
    port = JackMidiOutput(client_name)
    try:
        if match is not None:
            port.connect(match, "output")
            port.name = port.target
    except Exception:
        port.close()
        raise
    return port


def leave_to_exit(client) -> None:
    """Never close this JACK-Client ``client`` (nor let its __del__ try): the server drops it when
    the process exits. For a client whose close is stuck, and one closed after it in the same
    process, which would wait on the lock the stuck close holds. The client is kept, too: the server
    still sends it notifications (an xrun, a port going) through its callbacks, and a collected
    client's callbacks are freed memory in JACK's thread (a segfault on a loaded box)."""
    _LEFT_TO_EXIT.append(client)
    client._ptr = _jack()._ffi.NULL


_LEFT_TO_EXIT: list = []   # JACK-Client clients never closed: alive, with their callbacks, until exit


def midi_port_names(client, is_input: bool | None = None) -> list[str]:
    """The names of JACK's MIDI input ports, output ports, or (``None``) both, seen by ``client`` (a
    ``jack.Client``). Names only: JACK-Client's ``get_ports`` looks each listed name up again and
    raised when another client's port had vanished in between (the soak on CI: sessions starting
    and stopping side by side failed to start)."""
    jack = _jack()
    lib, ffi = jack._lib, jack._ffi
    flags = 0 if is_input is None else lib.JackPortIsInput if is_input else lib.JackPortIsOutput
    found = ffi.gc(lib.jack_get_ports(client._ptr, b"", b"8 bit raw midi", flags), lib.jack_free)
    names = []
    if found:
        i = 0
        while found[i]:
            names.append(ffi.string(found[i]).decode(errors="replace"))
            i += 1
    return names


def list_ports() -> tuple[list[str], list[str]]:
    """(ports we can read from, ports we can send to) on the running JACK server."""
    jack = _jack()
    try:
        client = jack.Client("sidl-list", no_start_server=True)
    except jack.JackError as e:
        raise PortError(f"cannot open a JACK client: {e}") from e
    try:
        return midi_port_names(client, is_input=False), midi_port_names(client, is_input=True)
    finally:
        client.close()
