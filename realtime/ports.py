"""MIDI ports at the edge: pick a backend, find a port by a forgiving name, open it, or make a virtual one.

We drive python-rtmidi directly (mido only supplies message objects elsewhere) for three reasons:
every port gets its own client name (mido's rtmidi backend turns any port with a client name into a
virtual one, and under JACK each rtmidi object is a JACK client of its own); MIDI clock must not be
filtered (rtmidi ignores timing messages by default); and the input callback, which runs on the
backend's real-time thread, must only stamp the raw bytes with ``perf_counter()`` and queue them.

Every failure a user can cause or fix is a ``PortError`` with a one-line message.
"""
from __future__ import annotations

import os
import queue
import re
import socket
import sys
import time

VIRTUAL_IN = "sidl in"
VIRTUAL_OUT = "sidl out"
START_JACK = "start a JACK server (jackd -d dummy -r 48000 -p 64 &) or run .ci/setup-jack.sh"

# Short names a user types -> rtmidi API names. Full mido names ("mido.backends.rtmidi/UNIX_JACK") and
# the API names themselves are accepted too.
BACKENDS = {"jack": "UNIX_JACK", "alsa": "LINUX_ALSA", "coremidi": "MACOSX_CORE", "winmm": "WINDOWS_MM"}
MIDO_PREFIX = "mido.backends.rtmidi/"


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
        return "UNIX_JACK"
    if os.path.exists("/dev/snd/seq"):
        return "LINUX_ALSA"
    raise PortError(f"no MIDI system found (no JACK server, no ALSA sequencer): {START_JACK}")


def _rt(cls_name: str, api: str, client_name: str):
    import rtmidi
    try:
        return getattr(rtmidi, cls_name)(rtapi=getattr(rtmidi, "API_" + api), name=client_name)
    except rtmidi.RtMidiError as e:
        raise PortError(f"cannot open the {api} MIDI system: {e}") from e


# -- names -----------------------------------------------------------------------------------------
def list_ports(backend: str | None = None) -> tuple[list[str], list[str]]:
    """(ports we can read from, ports we can send to) on the backend."""
    api = resolve_backend(backend)
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
    """An open input. Messages arrive on ``queue`` as ``(perf_counter seconds, [bytes])``."""

    def __init__(self, rt, name: str, target: str | None):
        self._rt, self.name, self.target = rt, name, target
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        put, clock = self.queue.put, time.perf_counter

        def on_message(event, _data):         # the backend's RT thread: stamp and hand over only
            put((clock(), event[0]))

        rt.ignore_types(sysex=True, timing=False, active_sense=True)   # keep clock, drop the rest
        rt.set_callback(on_message)

    def alive(self) -> bool:
        """False once the existing port we opened has disappeared (virtual ports are ours)."""
        return self.target is None or self.target in self._rt.get_ports()

    def close(self) -> None:
        self._rt.cancel_callback()
        self._rt.close_port()
        self._rt.delete()


class MidiOutput:
    """An open output with mido-style ``send(msg)``."""

    def __init__(self, rt, name: str, target: str | None):
        self._rt, self.name, self.target = rt, name, target
        self._send = rt.send_message

    def send(self, msg) -> None:
        self._send(msg.bytes())

    def alive(self) -> bool:
        return self.target is None or self.target in self._rt.get_ports()

    def close(self) -> None:
        self._rt.close_port()
        self._rt.delete()


def open_input(match: str | None = None, client_name: str = "sidl-in",
               backend: str | None = None) -> MidiInput:
    """Open the existing input port ``match`` names, or create the virtual port ``sidl in``."""
    rt, target = _open("MidiIn", match, client_name, backend, VIRTUAL_IN, "input")
    return MidiInput(rt, VIRTUAL_IN if target is None else target, target)


def open_output(match: str | None = None, client_name: str = "sidl-out",
                backend: str | None = None) -> MidiOutput:
    """Open the existing output port ``match`` names, or create the virtual port ``sidl out``."""
    rt, target = _open("MidiOut", match, client_name, backend, VIRTUAL_OUT, "output")
    return MidiOutput(rt, VIRTUAL_OUT if target is None else target, target)


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
            return rt, None
        names = rt.get_ports()
        target = match_port(match, names, direction)
        rt.open_port(names.index(target), name=virtual_name)
        return rt, target
    except rtmidi.RtMidiError as e:
        rt.delete()
        raise PortError(f"cannot open MIDI {direction} {match or virtual_name!r}: {e}") from e
    except PortError:
        rt.delete()
        raise
