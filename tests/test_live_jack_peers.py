"""The real sidl-live against real JACK peers: Debian's jack_midi_clock drives it, jack_midi_dump
records it, and timing is read in frames from the recording (``sidl.realtime.live.peers``).

With the frame-accurate backend (``--backend jack``) notes land at their frame inside a cycle, not on
period boundaries as rtmidi's JACK ports put them, and on the clock master's ticks.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import jack
import numpy as np
import pytest

from sidl.realtime.live import peers

pytestmark = [pytest.mark.jack, pytest.mark.slow]
# The target is p99 <= 0.25 ms (the benchmark); a busy 2-core box gets more room here (p95 0.54 ms
# once at load 2.5, jack_midi_clock itself glitching), still below rtmidi's period (1.3 ms at 64
# frames, p99 6-8 ms measured) and on_period says apart whether notes went back to period boundaries.
TOL_S = 0.001


def test_dump_reading_and_tick_numbers_across_a_dropped_tick():
    # 48 kHz, 120 BPM: a tick every 1000 frames; tick 7 is missing (an xrun), notes on 16ths 0, 1, 2.
    ticks = [100 + 1000 * i for i in range(20) if i != 7]
    lines = ["      36: fa"] + [f"{f:8d}: f8" for f in ticks]
    lines += ["     103: 99 24 64 note on  (channel  9): pitch  36, velocity 100",
              "    6090: 99 26 50 note on  (channel  9): pitch  38, velocity  80",
              "   12100: 99 2a 50 note on  (channel  9): pitch  42, velocity  80",
              "   12500: 89 24 00 note off (channel  9): pitch  36, velocity   0",
              "   12600: 89 26 00 note off (channel  9): pitch  38, velocity   0"]
    events = peers.read_dump("\n".join(sorted(lines, key=lambda s: int(s.split(":")[0]))) + "\n\0\0")
    m = peers.measure(events, rate=48000, period=64)
    assert m.ticks == 19 and m.frames_per_tick == pytest.approx(1000.0)
    # 16th 2 is tick 12, after the gap: still matched to its own tick (a counted grid would be a tick off).
    assert np.allclose(m.first_beat * 48000, [3, -10, 0])
    assert m.stuck == 1                                   # pitch 42 never got its note-off
    assert m.on_period == 0.0



def _ticks_dump(frames, notes=()):
    lines = ["      36: fa"] + [f"{f:8d}: f8" for f in frames] + [f"{f:8d}: 99 24 64" for f in notes]
    return peers.read_dump("\n".join(sorted(lines, key=lambda s: int(s.split(":")[0]))) + "\n")


def test_the_recorders_missed_cycles_are_not_counted_as_sidls_tick_jitter():
    # What CI's jack_midi_dump printed: ticks 1000 frames apart, but from tick 60 and tick 130 on
    # everything two periods (128 frames) early: the dump missed two cycles and counts its own frames.
    frames = np.array([100 + 1000 * i for i in range(200)])
    frames[60:] -= 128
    frames[130:] -= 128
    notes = frames[::6] + 3                                      # each 16th's note, 3 frames after its tick
    m = peers.measure(_ticks_dump(frames, notes), rate=48000, period=64)
    assert m.recorder_slips == 2 and m.tick_glitches == 0
    assert m.frames_per_tick == pytest.approx(1000.0) and np.max(m.tick_jitter) < 1e-9
    assert np.allclose(m.errors * 48000, 3)                     # notes measured as recorded, tick by tick
    # A tick sidl writes 128 frames late is sidl's: one interval long, the next short, both seen.
    late = np.array([100 + 1000 * i for i in range(200)])
    late[90] += 128
    m = peers.measure(_ticks_dump(late), rate=48000, period=64)
    assert m.tick_glitches == 2 and np.max(m.tick_jitter) * 48000 == pytest.approx(128, abs=0.1)
    # Ticks put on period boundaries (rtmidi's JACK ports) have intervals a period short, not slips.
    quantized = (100 + 500 * np.arange(200)) // 64 * 64
    m = peers.measure(_ticks_dump(quantized), rate=48000, period=64)
    assert m.recorder_slips == 0 and m.frames_per_tick == pytest.approx(500.0, abs=0.5)

def _run(backend, sync, seconds=8.0):
    events, rate, period, log = peers.run_session(peers.sidl_live_command("drums-gmd"), backend, sync, seconds)
    return peers.measure(events, rate, period), period, log


def test_synced_to_jack_midi_clock_notes_land_on_its_ticks_between_period_boundaries(jack_server):
    events, rate, period, log = peers.run_session(peers.sidl_live_command("drums-gmd"), "jack", True, 8.0)
    m = peers.measure(events, rate, period)
    assert "in 'jack_midi_clock" in log and "Traceback" not in log
    assert len(m.errors) > 40                              # 8 s of 16ths, after the first beat
    assert m.on_period < 0.5                               # ticks fall anywhere in a cycle, and so do notes
    assert np.percentile(np.abs(m.errors), 95) < TOL_S
    assert abs(np.mean(m.errors)) < TOL_S / 2
    # Transport Stop silences: all-notes-off follows the clock master's Stop. (Note-offs are not
    # counted here: on a loaded 2-core box, load 9, one run in three ended with 3 or 4 note-ons
    # whose note-offs the recorder never got; not explained yet, see issue 13.)
    stop = next(f for f, d in events if d == [0xFC])
    assert any(d[:2] == [0xB9, 123] for f, d in events if f >= stop)


def test_internal_clock_sends_ticks_and_notes_to_the_frame(jack_server):
    m, period, log = _run("jack", sync=False)
    assert len(m.errors) > 40 and m.stuck == 0             # SIGINT at the end silences
    assert m.on_period < 0.5
    assert np.percentile(np.abs(m.errors), 95) < TOL_S     # notes on the ticks sidl itself sends
    assert np.percentile(m.tick_jitter, 95) < TOL_S        # ticks evenly spaced, to the frame


def test_an_output_port_that_vanishes_is_waited_for_and_played_to_again_when_it_returns(jack_server, tmp_path):
    """The recorder sidl-live plays to quits (a DAW restarted) and comes back under the same name:
    sidl-live keeps running, and notes reach the new one within a second of its port appearing."""
    ctl = jack.Client("sidl-test-recon-ctl", no_start_server=True)
    name, rate = f"sidl-test-recon-{os.getpid()}", ctl.samplerate   # the same name both times

    def recorder(path):
        before = {p.name for p in ctl.get_ports(is_midi=True)}
        proc = subprocess.Popen([peers.need("jack_midi_dump"), "-a", name], stdout=open(path, "w"),
                                stderr=subprocess.DEVNULL)
        return proc, peers._wait_port(ctl, f"{name}:input", before)

    first, port = recorder(tmp_path / "first.txt")
    time.sleep(0.5)                                        # let jack_midi_dump finish starting
    live = subprocess.Popen([sys.executable, "-m", "sidl.realtime.live.cli", "--preset", "drums-gmd",
                             "--backend", "jack", "--bpm", "120", "--quantize", "--out", port],
                            stderr=subprocess.PIPE, text=True)
    second = None
    try:
        time.sleep(4.0)                                    # start-up and a bar or two
        first.send_signal(signal.SIGINT)
        first.wait(timeout=5)
        time.sleep(1.0)                                    # sidl-live plays to nowhere meanwhile
        assert live.poll() is None, live.stderr.read()
        second, _ = recorder(tmp_path / "second.txt")
        time.sleep(2.0)
        assert live.poll() is None, live.stderr.read()
    finally:
        live.send_signal(signal.SIGINT)
        _, err = live.communicate(timeout=10)
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGINT)
                p.wait(timeout=5)
        ctl.close()
    assert live.returncode == 0 and "disappeared" not in err and "Traceback" not in err
    got = peers.read_dump((tmp_path / "second.txt").read_text())
    ons = [f for f, d in got if d[0] & 0xF0 == 0x90 and len(d) == 3 and d[2] > 0]
    assert len(ons) > 10 and ons[0] / rate < 1.0          # frames since the new recorder started
    assert peers.stuck_notes(got) == 0                     # SIGINT at the end silenced the new one


def _record_through_jack_output(tmp_path, resend: bool, script) -> tuple[list, int, int]:
    """``script(out, t0)`` sends through a frame-accurate JACK output into jack_midi_dump; -> what
    the recorder heard (absolute frames), the period and the sample rate."""
    import mido
    from sidl.realtime.live import jackmidi
    ctl = jack.Client(f"sidl-test-resend-ctl-{int(resend)}", no_start_server=True)
    name = f"sidl-test-resend-{os.getpid()}-{int(resend)}"
    before = {p.name for p in ctl.get_ports(is_midi=True)}
    path = tmp_path / f"resend-{int(resend)}.txt"
    rec = subprocess.Popen([peers.need("jack_midi_dump"), "-a", name], stdout=open(path, "w"),
                           stderr=subprocess.DEVNULL)
    out = None
    try:
        port = peers._wait_port(ctl, f"{name}:input", before)
        out = jackmidi.JackMidiOutput(f"sidl-test-resend-out-{int(resend)}", resend=resend)
        ctl.connect(out.own, port)
        time.sleep(0.3)
        script(out, mido, time.perf_counter() + 0.1)
    finally:                                               # (closing waits for the later resends)
        if out is not None:
            out.close()
        time.sleep(0.2)
        rec.send_signal(signal.SIGINT)
        rec.wait(timeout=5)
        period, rate = ctl.blocksize, ctl.samplerate
        ctl.close()
    return peers.read_dump(path.read_text()), period, rate


def _collapsed(events) -> list[tuple]:
    """The recorded sequence a synth acts on: a note-off (or All Notes Off) for what is silent dropped."""
    sounding, seq = set(), []
    for _, d in events:
        kind, ch = d[0] & 0xF0, d[0] & 0x0F
        if kind == 0x90 and d[2]:
            sounding.add((ch, d[1]))
            seq.append(("on", ch, d[1]))
        elif kind in (0x80, 0x90):
            if (ch, d[1]) in sounding:
                sounding.discard((ch, d[1]))
                seq.append(("off", ch, d[1]))
        elif kind == 0xB0 and d[1] == 123:
            if any(c == ch for c, _ in sounding):
                sounding -= {(c, k) for c, k in sounding if c == ch}
                seq.append(("all off", ch))
    return seq


def _resend_script(out, mido, t0):
    on = lambda ch, k, t: out.send_at(mido.Message("note_on", channel=ch, note=k, velocity=90), t0 + t)
    off = lambda ch, k, t: out.send_at(mido.Message("note_off", channel=ch, note=k), t0 + t)
    on(0, 60, 0.000); off(0, 60, 0.010)                   # a short note
    on(0, 62, 0.100); off(0, 62, 0.110)                   # a key struck again 10 ms after its note-off...
    on(0, 62, 0.120); off(0, 62, 0.400)                   # ...and held: no resend may cut it
    on(1, 64, 0.500)                                       # a channel silenced by All Notes Off
    out.send_at(mido.Message("control_change", channel=1, control=123, value=0), t0 + 0.550)


def test_note_offs_are_written_again_next_cycle_and_later_without_cutting_a_re_strike(jack_server, tmp_path):
    """A stalling JACK graph loses whole cycles of MIDI (``bench --resend``): the output writes each
    note-off and All Notes Off again in the next cycle and RESEND_LATER_S later, so one lost cycle,
    or a stall of several, cannot leave a note stuck; a re-strike still sounding is never cut."""
    from sidl.realtime.live.jackmidi import RESEND_LATER_S
    got, period, rate = _record_through_jack_output(tmp_path, True, _resend_script)
    plain, _, _ = _record_through_jack_output(tmp_path, False, _resend_script)
    sent = [("on", 0, 60), ("off", 0, 60), ("on", 0, 62), ("off", 0, 62), ("on", 0, 62), ("off", 0, 62),
            ("on", 1, 64), ("all off", 1)]
    assert _collapsed(plain) == sent and _collapsed(got) == sent
    assert peers.stuck_notes([e for e in got if e[1][0] & 0x0F == 0]) == 0   # (channel 1: All Notes Off's)
    offs = lambda ev, k: [f for f, d in ev if d[0] & 0xF0 in (0x80, 0x90) and d[1] == k
                          and (d[0] & 0xF0 == 0x80 or d[2] == 0)]
    assert len(offs(plain, 60)) == 1
    first, *again = offs(got, 60)
    assert len(again) == 2
    assert 0 < again[0] - first <= period                                   # the next cycle
    assert abs(again[1] - first - RESEND_LATER_S * rate) < period           # and later
    # Key 62: the first note-off's later resend falls while the re-strike sounds (it came 10 ms
    # after), so it is not written (its next-cycle one came before the re-strike); the held note's
    # own note-off is, three times.
    strikes = [f for f, d in got if d[0] == 0x90 and d[1] == 62 and d[2]]
    assert len(strikes) == 2
    between = [f for f in offs(got, 62) if strikes[1] <= f]
    assert len(offs(got, 62)) == 2 + 3 and len(between) == 3
    assert (between[0] - strikes[1]) / rate > 0.25                          # not cut before its time
    all_off = [f for f, d in got if d[0] == 0xB1 and d[1] == 123]
    assert len(all_off) == 3 and len([f for f, d in plain if d[0] == 0xB1 and d[1] == 123]) == 1
