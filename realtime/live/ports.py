"""MIDI ports at the edge: pick a backend, find a port by a forgiving name, open it, or make a virtual one.

We drive python-rtmidi directly (mido only supplies message objects elsewhere) for three reasons:
every port gets its own client name (mido's rtmidi backend turns any port with a client name into a
virtual one, and under JACK each rtmidi object is a JACK client of its own); MIDI clock must not be
filtered (rtmidi ignores timing messages by default); and inputs are polled, not called back.

Why polled: a Python callback runs on the backend's real-time thread and must take the GIL there.
Whenever another Python thread holds it, JACK sees the client miss its period (an xrun), and in JACK's
asynchronous mode a reader that misses its period can read a port buffer already being rewritten:
wrong or doubled notes. Without a callback, rtmidi's real-time thread only fills rtmidi's own
lock-free queue with each message and its time since the previous one; ``MidiInput.poll()`` drains it
from an ordinary thread and turns those delta times back into ``perf_counter()`` seconds.

Every failure a user can cause or fix is a ``PortError`` with a one-line message.
"""
from __future__ import annotations

import ctypes
import functools
import math
import os
import re
import socket
import sys
import time

VIRTUAL_IN = "sidl in"
VIRTUAL_OUT = "sidl out"
START_JACK = "start a JACK server (jackd -d dummy -r 48000 -p 64 &) or run .ci/setup-jack.sh"

# Short names a user types -> rtmidi API names, or JACK_API: our own frame-accurate JACK ports
# (``jackmidi``, through the JACK-Client package; rtmidi's JACK backend is the fallback when it is
# missing, and stays reachable as "rtmidi-jack"). Full mido names ("mido.backends.rtmidi/UNIX_JACK")
# and the rtmidi API names themselves are accepted too.
JACK_API = "JACK"
BACKENDS = {"jack": JACK_API, "rtmidi-jack": "UNIX_JACK", "alsa": "LINUX_ALSA", "coremidi": "MACOSX_CORE",
            "winmm": "WINDOWS_MM"}
MIDO_PREFIX = "mido.backends.rtmidi/"
CLOSE_WAIT_S = 0.1        # an rtmidi JACK output waits this long before its port goes (see close)
ORIGIN_DRIFT = 0.004      # how fast input timestamps may re-anchor on a drifting sample clock (0.4%)
INPUT_QUEUE = 4096        # messages rtmidi holds between polls (a bar of dense clock + notes is ~200)


class PortError(Exception):
    """A MIDI system or port problem the user can fix; the message is one line."""


# -- backend ---------------------------------------------------------------------------------------
def jack_running() -> bool:
    """Is a JACK server up? Connects to its socket: silent, and no JACK client is created."""
    server = os.environ.get("JACK_DEFAULT_SERVER", "default")
    uid = os.getuid() if hasattr(os, "getuid") else 0
    for path in (f"/dev/shm/jack_{server}_{uid}_0", f"/dev/shm/jack-{uid}/{server}/jack_0"):
        if os.path.exists(path):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                return True
            except OSError:
                pass
            finally:
                s.close()
    return False


def resolve_backend(name: str | None = None) -> str:
    """Backend name (short, mido-style or rtmidi API) or None for automatic -> rtmidi API name."""
    if name in (None, "", "auto"):
        name = os.environ.get("MIDO_BACKEND") or _auto_backend()
    api = BACKENDS.get(name.lower(), name)
    if api == JACK_API:
        if not jack_running():
            raise PortError(f"no JACK server is running: {START_JACK}")
        from . import jackmidi
        if jackmidi.available():
            return JACK_API
        api = "UNIX_JACK"                       # no JACK-Client here: rtmidi's JACK ports, period-aligned
    if api.startswith("mido.backends."):
        if not api.startswith(MIDO_PREFIX):
            raise PortError(f"backend {name!r} is not supported: use an rtmidi backend "
                            f"({', '.join(BACKENDS)})")
        api = api[len(MIDO_PREFIX):]
    import rtmidi
    compiled = {rtmidi.get_api_name(a).lower(): a for a in rtmidi.get_compiled_api()}
    known = [n[4:] for n in dir(rtmidi) if n.startswith("API_")]
    if api not in known:
        raise PortError(f"unknown MIDI backend {name!r} (use one of: {', '.join(BACKENDS)})")
    if getattr(rtmidi, "API_" + api) not in compiled.values():
        raise PortError(f"backend {name!r} is not built into python-rtmidi here "
                        f"(available: {', '.join(compiled) or 'none'})")
    if api == "UNIX_JACK" and not jack_running():
        raise PortError(f"no JACK server is running: {START_JACK}")
    if api == "LINUX_ALSA" and not os.path.exists("/dev/snd/seq"):
        raise PortError("ALSA has no sequencer device (/dev/snd/seq): load snd-seq, or " + START_JACK)
    return api


def _auto_backend() -> str:
    if sys.platform == "darwin":
        return "MACOSX_CORE"
    if sys.platform.startswith("win"):
        return "WINDOWS_MM"
    if jack_running():
        return JACK_API                         # (rtmidi's when JACK-Client is missing: resolve_backend)
    if os.path.exists("/dev/snd/seq"):
        return "LINUX_ALSA"
    raise PortError(f"no MIDI system found (no JACK server, no ALSA sequencer): {START_JACK}")


@functools.lru_cache(maxsize=None)
def transport_latency_s(api: str) -> float:
    """Mean delay between sending a message and its delivery, where the backend tells us.

    JACK delivers MIDI at the start of the next period, so on average half a period late; we ask the
    server for its period through libjack (already loaded by rtmidi). Other backends deliver at once.
    """
    if api != "UNIX_JACK":                  # (JACK_API stamps and sends each event at its own frame)
        return 0.0
    try:
        lib = ctypes.CDLL("libjack.so.0")
    except OSError:
        return 0.0
    lib.jack_client_open.restype = ctypes.c_void_p
    lib.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    for f in (lib.jack_get_buffer_size, lib.jack_get_sample_rate):
        f.argtypes, f.restype = [ctypes.c_void_p], ctypes.c_uint32
    lib.jack_client_close.argtypes = [ctypes.c_void_p]
    status = ctypes.c_int(0)
    client = lib.jack_client_open(b"sidl-probe", 1, ctypes.byref(status))   # 1 = JackNoStartServer
    if not client:
        return 0.0
    try:
        return 0.5 * lib.jack_get_buffer_size(client) / lib.jack_get_sample_rate(client)
    finally:
        lib.jack_client_close(client)


def _rt(cls_name: str, api: str, client_name: str):
    import rtmidi
    try:
        extra = {"queue_size_limit": INPUT_QUEUE} if cls_name == "MidiIn" else {}
        return getattr(rtmidi, cls_name)(rtapi=getattr(rtmidi, "API_" + api), name=client_name, **extra)
    except rtmidi.RtMidiError as e:
        raise PortError(f"cannot open the {api} MIDI system: {e}") from e


# -- names -----------------------------------------------------------------------------------------
def list_ports(backend: str | None = None) -> tuple[list[str], list[str]]:
    """(ports we can read from, ports we can send to) on the backend."""
    api = resolve_backend(backend)
    if api == JACK_API:
        from . import jackmidi
        return jackmidi.list_ports()
    mi, mo = _rt("MidiIn", api, "sidl-list"), _rt("MidiOut", api, "sidl-list")
    try:
        return mi.get_ports(), mo.get_ports()
    finally:
        mi.delete()
        mo.delete()


def _norm(name: str) -> list[str]:
    """Lowercase words without the word "driver" ("IAC Driver Bus 1" -> ["iac", "bus", "1"])."""
    return [w for w in re.split(r"[^0-9a-z]+", name.lower()) if w and w != "driver"]


def match_port(query: str, names: list[str], direction: str = "input") -> str:
    """The port in ``names`` that ``query`` means: exact, a whole client or port name, substring,
    then all words present; ties between equally good and equally long names are an error."""
    q = _norm(query)
    if not q:
        raise PortError(f"empty MIDI {direction} port name")
    qs = " ".join(q)
    scored = []
    for name in names:
        n = _norm(name)
        ns = " ".join(n)
        parts = {" ".join(_norm(part)) for part in name.split(":")}   # JACK: "client:port"
        if ns == qs:
            rank = 0
        elif qs in parts:
            rank = 1                          # the whole client or port name
        elif f" {qs} " in f" {ns} ":
            rank = 2                          # whole words in a row ("bus 1" in "iac bus 1")
        elif qs in ns:
            rank = 3
        elif set(q) <= set(n):
            rank = 4
        else:
            continue
        scored.append((rank, len(ns), name))
    if not scored:
        raise PortError(f"no MIDI {direction} port matches {query!r}; available: "
                        f"{', '.join(repr(n) for n in names) or 'none'}")
    scored.sort()
    if len(scored) > 1 and scored[0][:2] == scored[1][:2]:
        raise PortError(f"{query!r} matches several MIDI {direction} ports: "
                        f"{', '.join(repr(s[2]) for s in scored if s[:2] == scored[0][:2])}")
    return scored[0][2]


# -- ports -----------------------------------------------------------------------------------------
class MidiInput:
    """An open input, polled. ``poll()`` returns what arrived since the last poll as
    ``[(perf_counter seconds, [bytes]), ...]``, each stamped with when it was most likely sent
    (its arrival, from the backend's own delta times, minus the transport's mean latency).

    Poll every few milliseconds: the delta times fix the spacing exactly, but where the sequence
    sits in time is learnt from how soon after an arrival a poll comes (the engine polls each ms).
    """

    def __init__(self, rt, name: str, target: str | None, api: str):
        self._rt, self.name, self.target, self.api = rt, name, target, api
        self.latency_s = transport_latency_s(api)
        # Nothing is filtered in rtmidi: a message it drops takes its delta time with it, and every
        # later timestamp would come early by that much (a keyboard's active sensing, every 300 ms,
        # or a DAW's sysex). The engine ignores what it does not use.
        rt.ignore_types(sysex=False, timing=False, active_sense=False)
        self._since_first = -1.0     # seconds from the first message to the last, summed deltas
        self._origin = math.inf      # perf_counter time of the first message: best bound so far
        self._last_poll = 0.0        # perf_counter time of the last poll that got messages

    def poll(self) -> list[tuple[float, list[int]]]:
        get = self._rt.get_message
        got = []
        while (m := get()) is not None:
            data, delta = m
            self._since_first = 0.0 if self._since_first < 0 else self._since_first + delta
            got.append((self._since_first, data))
        if not got:
            return got
        # Each message arrived before this poll, so origin <= now - since_first: the tightest bound
        # wins. The backend's delta times run on its own sample clock, which can drift from
        # perf_counter (a dummy JACK server on a busy VM ran 0.3% slow): then the bounds rise, and
        # the origin follows them up, by at most ORIGIN_DRIFT of the time since the last poll.
        now = time.perf_counter()
        bound = now - self._since_first
        if bound < self._origin or self._origin == math.inf:
            self._origin = bound
        else:
            self._origin = min(bound, self._origin + ORIGIN_DRIFT * (now - self._last_poll))
        self._last_poll = now
        base = self._origin - self.latency_s
        return [(base + s, data) for s, data in got]

    def alive(self) -> bool:
        """False once the port we opened has disappeared, or the JACK server under it."""
        return _alive(self)

    def close(self) -> None:
        self._rt.close_port()
        self._rt.delete()


class MidiOutput:
    """An open output with mido-style ``send(msg)``; ``latency_s`` is for the Scheduler."""

    def __init__(self, rt, name: str, target: str | None, api: str):
        self._rt, self.name, self.target, self.api = rt, name, target, api
        self.latency_s = transport_latency_s(api)
        self._send = rt.send_message

    def send(self, msg) -> None:
        self._send(msg.bytes())

    def send_bytes(self, data: list[int]) -> None:
        """Raw bytes, unchecked: what any client can put on a port (the tests send garbage so)."""
        self._send(data)

    def alive(self) -> bool:
        return _alive(self)

    def close(self) -> None:
        # rtmidi's JACK port writes what it was sent at the next process cycle: wait for a few
        # cycles first, or the last note-offs (a stop's silencing) are deleted with the port. 20 ms
        # was not always enough on a loaded CI box, whose dummy server's cycles come late.
        if self.api == "UNIX_JACK":
            time.sleep(max(CLOSE_WAIT_S, 8 * self.latency_s))
        self._rt.close_port()
        self._rt.delete()


def _alive(port) -> bool:
    if port.api == "UNIX_JACK" and not jack_running():
        return False
    return port.target is None or port.target in port._rt.get_ports()   # virtual ports are ours


def open_input(match: str | None = None, client_name: str = "sidl-in",
               backend: str | None = None) -> MidiInput:
    """Open the existing input port ``match`` names, or create the virtual port ``sidl in``."""
    if resolve_backend(backend) == JACK_API:
        from . import jackmidi
        return jackmidi.open_input(match, client_name)
    rt, target, api = _open("MidiIn", match, client_name, backend, VIRTUAL_IN, "input")
    return MidiInput(rt, VIRTUAL_IN if target is None else target, target, api)


def open_output(match: str | None = None, client_name: str = "sidl-out",
                backend: str | None = None) -> MidiOutput:
    """Open the existing output port ``match`` names, or create the virtual port ``sidl out``;
    with JACK_API, one that also takes due times (``send_at``, see ``jackmidi``)."""
    if resolve_backend(backend) == JACK_API:
        from . import jackmidi
        return jackmidi.open_output(match, client_name)
    rt, target, api = _open("MidiOut", match, client_name, backend, VIRTUAL_OUT, "output")
    return MidiOutput(rt, VIRTUAL_OUT if target is None else target, target, api)


def _open(cls_name, match, client_name, backend, virtual_name, direction):
    import rtmidi
    api = resolve_backend(backend)
    if match is None and api == "WINDOWS_MM":
        flag = "--port" if direction == "input" else "--out"
        raise PortError(f"Windows has no virtual MIDI ports: create a loopback port such as loopMIDI "
                        f"and pass it with {flag}")
    rt = _rt(cls_name, api, client_name)
    try:
        if match is None:
            rt.open_virtual_port(virtual_name)
            return rt, None, api
        names = rt.get_ports()
        target = match_port(match, names, direction)
        rt.open_port(names.index(target), name=virtual_name)
        return rt, target, api
    except rtmidi.RtMidiError as e:
        rt.delete()
        raise PortError(f"cannot open MIDI {direction} {match or virtual_name!r}: {e}") from e
    except PortError:
        rt.delete()
        raise
