"""Port names, backend choice and opening ports, on a real JACK server where it matters."""
import time

import mido
import pytest

from sidl.realtime.live import ports
from sidl.realtime.live.ports import PortError, match_port, open_input, open_output, resolve_backend

MAC = ["IAC Driver Bus 1", "IAC Driver Bus 2", "Network Session 1"]


@pytest.mark.parametrize("query, want", [
    ("IAC Bus 1", "IAC Driver Bus 1"),
    ("iac driver bus 2", "IAC Driver Bus 2"),
    ("bus 2", "IAC Driver Bus 2"),
    ("network", "Network Session 1"),
    ("session network", "Network Session 1"),        # all words present, any order
])
def test_match_port_forgives_case_and_the_word_driver(query, want):
    assert match_port(query, MAC) == want


def test_match_port_prefers_exact_over_substring():
    names = ["sidl-in:sidl in", "other:sidl in 2"]
    assert match_port("sidl in", names) == "sidl-in:sidl in"
    assert match_port("sidl-in:sidl in", names) == "sidl-in:sidl in"


def test_match_port_errors_list_what_exists():
    with pytest.raises(PortError, match=r"no MIDI input port matches 'Bus 9'; available: 'IAC Driver Bus 1'"):
        match_port("Bus 9", MAC)
    with pytest.raises(PortError, match="several"):
        match_port("IAC", MAC)
    with pytest.raises(PortError, match="available: none"):
        match_port("x", [], "output")


def test_backend_names():
    with pytest.raises(PortError, match="unknown MIDI backend"):
        resolve_backend("fluxmidi")
    with pytest.raises(PortError, match="not supported"):
        resolve_backend("mido.backends.portmidi")
    with pytest.raises(PortError, match="not built into python-rtmidi"):
        resolve_backend("winmm")


def test_no_midi_system_says_what_to_start(monkeypatch):
    monkeypatch.setenv("JACK_DEFAULT_SERVER", "sidl-no-such-server")   # a JACK server that is not there
    monkeypatch.delenv("MIDO_BACKEND", raising=False)
    monkeypatch.setattr(ports.os.path, "exists", lambda p: False)      # and no /dev/snd/seq
    with pytest.raises(PortError, match=r"no MIDI system found .*jackd -d dummy -r 48000 -p 64"):
        resolve_backend(None)
    with pytest.raises(PortError, match="no JACK server is running"):
        resolve_backend("jack")


def test_windows_virtual_ports_point_to_loopmidi(monkeypatch):
    monkeypatch.setattr(ports, "resolve_backend", lambda backend: "WINDOWS_MM")
    with pytest.raises(PortError, match="loopMIDI and pass it with --out"):
        open_output(None)


@pytest.mark.jack
def test_backend_names_resolve_on_a_running_jack(jack_server, monkeypatch):
    assert resolve_backend("jack") == ports.JACK_API        # frame-accurate ports (JACK-Client)
    assert resolve_backend("rtmidi-jack") == resolve_backend("UNIX_JACK") == resolve_backend(jack_server) == "UNIX_JACK"
    assert resolve_backend(None) == "UNIX_JACK"             # MIDO_BACKEND is set by the fixture
    monkeypatch.delenv("MIDO_BACKEND")
    assert resolve_backend(None) == ports.JACK_API          # automatic: JACK runs, JACK-Client imports


@pytest.mark.jack
def test_virtual_ports_existing_ports_and_a_disappearing_port(jack_server):
    inp = open_input(None, "sidl-test-vin")
    src = open_output("sidl test vin", "sidl-test-src")     # the existing port, by a loose name
    try:
        assert src.target == "sidl-test-vin:sidl in"
        ins, outs = ports.list_ports()
        assert "sidl-test-vin:sidl in" in outs
        time.sleep(0.05)
        t0 = time.perf_counter()
        for msg in (mido.Message("clock"), mido.Message("note_on", channel=9, note=36, velocity=99)):
            src.send(msg)
        got = []
        deadline = time.monotonic() + 1.0
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.002)
            got += inp.poll()
        assert [d for _, d in got] == [[0xF8], [0x99, 36, 99]]   # clock is not filtered
        assert all(0 <= t - t0 < 0.05 for t, _ in got)
        assert src.alive()
    finally:
        inp.close()
    deadline = time.monotonic() + 1.0
    while src.alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not src.alive()
    src.close()


@pytest.mark.jack
def test_timestamps_do_not_drift_when_a_keyboard_sends_active_sensing_and_sysex(jack_server):
    """Notes sent at known times, with active sensing (0xFE) and a sysex between them, as a hardware
    keyboard or a DAW sends: every note keeps its time. (rtmidi drops a filtered message's delta
    time, which made every later timestamp early by the gaps it carried.)"""
    inp = open_input(None, "sidl-test-as-in")
    src = open_output("sidl-test-as-in:sidl in", "sidl-test-as-src")
    try:
        time.sleep(0.05)
        sent, got = [], []

        def wait(seconds):                                      # polled each millisecond, as the engine does
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                time.sleep(0.001)
                got.extend(inp.poll())

        for i in range(30):
            src.send_bytes([0xFE])                              # active sensing
            if i % 10 == 5:
                src.send_bytes([0xF0, 0x7E, 0x7F, 0x06, 0x01, 0xF7])   # a sysex (identity request)
            wait(0.012)
            sent.append(time.perf_counter())
            src.send_bytes([0x90, 60, 100])
            wait(0.008)
        wait(0.05)
    finally:
        src.close()
        inp.close()
    notes = [t for t, d in got if d[0] == 0x90]
    assert len(notes) == len(sent)
    err = [t - s for t, s in zip(notes, sent)]
    # Each arrives within a JACK period or two of its send, the last as well as the first.
    assert max(abs(e) for e in err) < 0.004, err


def test_a_jack_client_close_that_blocks_is_given_up_after_a_while(jack_server):
    # jack_client_close once blocked for good in the soak (1 of 1,000 sessions, after everything
    # was silenced): sidl-live must still exit. Here a real output's close is made to block.
    import threading
    import jack
    from sidl.realtime.live import jackmidi
    out = jackmidi.JackMidiOutput("sidl-test-close-hang")
    client, ptr, release = out._client, out._client._ptr, threading.Event()
    client.close = lambda: release.wait(30)
    t0 = time.perf_counter()
    out.close()
    waited = time.perf_counter() - t0
    try:
        assert out.close_timed_out and jackmidi.CLOSE_S <= waited < jackmidi.CLOSE_S + 1.5
        assert client._ptr == jack._ffi.NULL                 # its __del__ will not try again
    finally:
        release.set()
        client._ptr = ptr
        jack.Client.close(client)
    quick = jackmidi.JackMidiOutput("sidl-test-close-ok")
    quick.close()
    assert not quick.close_timed_out


def test_connecting_while_other_clients_ports_come_and_go(jack_server):
    # The soak on CI: sidl-live's start failed with "cannot list JACK's MIDI ports: Port ... not
    # available" while other sessions' ports vanished (JACK-Client looked each listed name up again).
    import threading
    import jack
    from sidl.realtime.live import jackmidi
    target, churn = jack.Client("sidl-test-churn-target"), jack.Client("sidl-test-churn")
    target.midi_inports.register("in")
    target.activate()
    churn.activate()
    stop = threading.Event()

    def come_and_go():
        while not stop.is_set():
            for p in [churn.midi_inports.register(f"p{i}") for i in range(20)]:
                p.unregister()

    threading.Thread(target=come_and_go, daemon=True).start()
    out = jackmidi.JackMidiOutput("sidl-test-churn-out")
    try:
        for _ in range(200):                                # (before the fix: ~15% of these failed)
            out.connect("sidl-test-churn-target:in", "output")
            out._client.disconnect(out.own, out.target)
        assert out.target == "sidl-test-churn-target:in"
    finally:
        stop.set()
        time.sleep(0.05)
        out.close()
        churn.close()
        target.close()
