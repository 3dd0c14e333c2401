"""End to end through a real JACK server: a test client plays MIDI clock and real bars into `sidl in`
and records `sidl out`, with the engine in-process (stand-in model) or the real CLI in a subprocess.

Times on both sides are perf_counter seconds on this machine; the client's messages leave at exact
times (through our own Scheduler), so the ideal grid is known to the microsecond. What we measure
includes JACK's transport both ways: clock in (up to one period, 1.3 ms) and notes out (the same).
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mido
import numpy as np
import pytest

from jackhealth import EventsLost, server_rate_and_period
from sidl.realtime.live.clock import PPQN, InternalClock
from sidl.realtime.controls import Controls
from sidl.realtime.codec.drums import CLASS_NOTES, PITCH_TO_CLASS
from sidl.realtime.live import peers
from sidl.realtime.live.bench import Recorder
from sidl.realtime.live.engine import build_engine, run_live
from sidl.realtime.live.ports import open_input, open_output
from sidl.realtime.live.scheduler import Batch, Scheduler

pytestmark = [pytest.mark.jack, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
GRID_TOL_S = 0.004        # onset error allowed here (two JACK hops + a busy 2-core box); bench has p99


class Client:
    """The test's own JACK clients: a sender into `sidl in` and a recorder of `sidl out`."""

    def __init__(self, send_to="sidl-in:sidl in", record_from="sidl-out:sidl out"):
        self.out = open_output(send_to, "sidl-test-send")
        self.rec = Recorder(record_from, "sidl-test-rec")
        self.sched = Scheduler(self.out, latency_s=self.out.latency_s).start()   # a sample-accurate DAW

    def play(self, times, msgs):
        self.sched.submit(Batch.build(times, [np.nan] * len(msgs), msgs))

    def recorded(self) -> list[tuple[float, list[int]]]:
        """What arrived, stamped with its arrival time."""
        return self.rec.drain()

    def close(self):
        self.sched.close()
        self.out.close()
        self.rec.close()


@contextlib.contextmanager
def engine_on_jack(model, controls, clock=None, **kw):
    """The engine with its virtual ports and threads, as `sidl-live` runs it, plus a test client."""
    inp, out = open_input(None, "sidl-in"), open_output(None, "sidl-out")
    sched = Scheduler(out, latency_s=out.latency_s).start()
    eng, renderer = build_engine(model, controls, channel=9, clock=clock, input_latency_s=inp.latency_s, **kw)
    stop = threading.Event()
    th = threading.Thread(target=run_live, args=(eng, renderer, inp.poll, sched, stop), daemon=True)
    th.start()
    client = Client()
    time.sleep(0.05)                                  # let JACK finish the connections
    try:
        yield eng, client
    finally:
        stop.set()
        th.join()                  # never close ports under the conductor (see bench.onset_error)
        sched.close()
        client.close()
        inp.close()
        out.close()


def clock_track(t0, bpm, n_ticks, start=True):
    """Start (if asked) just before t0, then ticks from t0: position 0 is the first tick."""
    tick_s = 60.0 / bpm / PPQN
    times = list(t0 + np.arange(n_ticks) * tick_s)
    msgs = [mido.Message("clock")] * n_ticks
    if start:
        times, msgs = [t0 - tick_s / 2] + times, [mido.Message("start")] + msgs
    return times, msgs


def sounding_of(recorded, all_notes_off=False) -> set:
    """{(channel, note)} left sounding by a recording, as a receiver reads it: a key's last
    note-on or note-off decides (sidl's JACK output repeats note-offs, and a recorder connected
    mid-run sees note-offs without their note-ons); with ``all_notes_off`` CC 123 / 120 also ends
    every note of its channel, as a General MIDI receiver hears it."""
    on = set()
    for _, d in recorded:
        kind, ch = d[0] & 0xF0, d[0] & 0x0F
        if kind == 0x90 and d[2] > 0:
            on.add((ch, d[1]))
        elif kind == 0x80 or kind == 0x90:
            on.discard((ch, d[1]))
        elif kind == 0xB0 and all_notes_off and d[1] in (120, 123):
            on = {k for k in on if k[0] != ch}
    return on


def notes_of(recorded):
    """[(t, note, velocity)] of note-ons, and whether a receiver hears nothing left sounding (All
    Notes Off counts; each test ends with ``every_note_off`` for the note-offs themselves)."""
    ons = [(t, d[1], d[2]) for t, d in recorded if d[0] & 0xF0 == 0x90 and d[2] > 0]
    return ons, not sounding_of(recorded, all_notes_off=True)


def every_note_off(*recordings) -> None:
    """Every note-on got its own note-off (a receiver that ignores All Notes Off hears silence).
    Called last in a test: with All Notes Off heard (``notes_of``) a note-off missing was lost on
    the way (sidl's tracker sends one for every note-on it sent), which a JACK cycle a client
    missed does, so it raises ``EventsLost``, judged by the server's log (see jackhealth)."""
    for rec in recordings:
        left = sounding_of(rec)
        if left:
            raise EventsLost(f"note-offs of {sorted(left)} did not arrive, the All Notes Off after them did; "
                             f"last received {rec[-6:]}")


def play_notes(client, notes, start, q_s):
    """Play ``notes`` (timed in quarters) from ``start``, each held at most a quarter, as a pianist would."""
    times, msgs = [], []
    for s, e, p, v in zip(notes.start, notes.end, notes.pitch, notes.velocity):
        times += [start + s * q_s, start + min(e, s + 1.0) * q_s - 0.005]
        msgs += [mido.Message("note_on", note=int(p), velocity=int(v)), mido.Message("note_off", note=int(p))]
    client.play(times, msgs)


def grid_error(t, t0, step_s):
    k = np.round((np.asarray(t) - t0) / step_s)
    return np.asarray(t) - (t0 + k * step_s), k.astype(int)


def test_synced_echo_lands_real_bars_on_the_grid_and_stop_silences(jack_server, drums, gmd_bars):
    bpm = 180.0
    step_s, bar_s = 60 / bpm / 4, 4 * 60 / bpm
    with engine_on_jack(drums, Controls(mode="echo", quantize=True)) as (eng, client):
        t0 = time.perf_counter() + 0.2
        times, msgs = clock_track(t0, bpm, 4 * 4 * PPQN)
        played = []
        for b, bar in enumerate(gmd_bars[:3]):         # real GMD bars, with their human timing
            for s, p, v in zip(bar.start, bar.pitch, bar.velocity):
                t = t0 + b * bar_s + s * step_s
                played.append((round(s) + 16 * (b + 1), int(CLASS_NOTES[PITCH_TO_CLASS[p]])))
                times += [t, t + step_s / 2]
                msgs += [mido.Message("note_on", channel=9, note=int(p), velocity=int(v)),
                         mido.Message("note_off", channel=9, note=int(p))]
        t_stop = t0 + 4 * bar_s - step_s / 4           # Stop just before bar 4 would start
        client.play(times + [t_stop], msgs + [mido.Message("stop")])
        time.sleep(t_stop - time.perf_counter() + 0.3)
        rec = client.recorded()
    ons, balanced = notes_of(rec)
    # (failed once in a fresh-clone run on 4 December, not reproduced in 7 runs since: the
    # message says which notes were left and what came last, for the next time)
    assert balanced, (sounding_of(rec), [(round(t - t_stop, 4), d) for t, d in rec[-8:]])   # nothing left sounding after Stop
    assert all(t < t_stop + 0.01 for t, _, _ in ons)
    err, k = grid_error([t for t, _, _ in ons], t0, step_s)
    assert len(ons) >= 30 and np.all(k >= 16)          # bar 0 had nothing to echo
    assert np.median(np.abs(err)) < GRID_TOL_S / 2 and np.percentile(np.abs(err), 95) < GRID_TOL_S
    # What came back is what was played, a bar later (the stand-in keeps the 4 loudest per beat).
    echoed = {(int(s), n) for s, (_, n, _) in zip(k, ons)}      # (step since song start, GM note)
    assert echoed <= set(played)
    every_note_off(rec)


def test_tempo_change_is_followed_within_a_beat_and_lost_clock_silences(jack_server, drums):
    fast, slow = 200.0, 140.0
    with engine_on_jack(drums, Controls(density=4.0, quantize=True, variation=0.0)) as (eng, client):
        t0 = time.perf_counter() + 0.2
        times, msgs = clock_track(t0, fast, 8 * PPQN)          # two bars fast
        t_change = t0 + 8 * 60 / fast
        t2, m2 = clock_track(t_change, slow, 8 * PPQN, start=False)   # two bars slow, then silence
        client.play(times + t2, msgs + m2)
        t_last_tick = t2[-1]
        time.sleep(t_last_tick - time.perf_counter() + 2 * 60 / slow + 0.3)
        rec = client.recorded()
        assert eng.clock.bpm == pytest.approx(slow, rel=0.01)
        assert eng.timeline is None                    # clock lost: stopped
    ons, balanced = notes_of(rec)
    assert balanced                                    # lost clock -> silence
    t_ons = np.array([t for t, _, _ in ons])
    assert len(t_ons[t_ons < t_change]) > 10
    assert t_ons.max() < t_last_tick + 2 * 60 / slow + 0.01
    # From one beat after Start, as the benchmark measures: the first beat waits on the first tick.
    before = t_ons[(t_ons > t0 + 60 / fast) & (t_ons < t_change - 0.002)]
    err_fast, _ = grid_error(before, t0, 60 / fast / 4)
    after = t_ons[t_ons > t_change + 60 / slow]        # one beat after the change
    err_slow, _ = grid_error(after, t_change, 60 / slow / 4)
    assert len(after) > 10
    assert np.percentile(np.abs(err_fast), 95) < GRID_TOL_S
    assert np.percentile(np.abs(err_slow), 95) < GRID_TOL_S
    every_note_off(rec)


def test_a_garbage_stream_is_ignored_while_the_clock_is_followed(jack_server, drums):
    """Malformed bytes between the ticks (what a buggy client can send through JACK): counted and
    ignored; bars stay on the grid and Stop leaves nothing sounding."""
    bpm = 200.0
    with engine_on_jack(drums, Controls(density=4.0, quantize=True, variation=0.0)) as (eng, client):
        t0 = time.perf_counter() + 0.2
        times, msgs = clock_track(t0, bpm, 3 * 4 * PPQN)
        t_stop = times[-1] + 60 / bpm / PPQN / 2
        client.play(times + [t_stop], msgs + [mido.Message("stop")])
        rng = np.random.default_rng(3)
        garbage = open_output("sidl-in:sidl in", "sidl-test-garbage")   # a second client: one writer per port
        try:
            while time.perf_counter() < t_stop - 0.05:    # garbage all along, from this thread
                data = rng.integers(0, 256, int(rng.integers(1, 4))).tolist()
                if data[0] < 0x80 or (data[0] not in (0xF0, 0xF7) and any(b > 127 for b in data[1:])):
                    garbage.send_bytes(data)           # status-less, or data bytes >= 128
                time.sleep(0.002)
        finally:
            garbage.close()
        time.sleep(t_stop - time.perf_counter() + 0.3)
        rec = client.recorded()
        assert eng.ignored > 50
    ons, balanced = notes_of(rec)
    assert balanced and all(t < t_stop + 0.01 for t, _, _ in ons)
    t_ons = np.array([t for t, _, _ in ons])
    err, _ = grid_error(t_ons[t_ons > t0 + 60 / bpm], t0, 60 / bpm / 4)
    # Every onset on one 16th grid, bar after bar, whatever the garbage. Its phase against the sender
    # is looser here: in one CI run all onsets came 12-14 ms late together (the grid held), and
    # quiet runs are within 0.2 ms; the phase is the synced-echo test's claim, without garbage.
    assert len(err) > 20 and np.percentile(np.abs(err - np.median(err)), 95) < GRID_TOL_S
    assert abs(np.median(err)) < 5 * GRID_TOL_S
    every_note_off(rec)


def test_simplify_plays_fewer_notes_keeping_the_strongest(jack_server, piano):
    from sidl.realtime.codec.midifile import load_midi, read_score
    from conftest import DATA
    score = read_score(load_midi(DATA / "pop909" / "POP909" / "001" / "001.mid"))
    bpm = 150.0
    q_s = 60 / bpm
    start = time.perf_counter() + 0.3
    keep = 4
    with engine_on_jack(piano, Controls(mode="simplify", keep=keep, quantize=True),
                        clock=InternalClock(bpm, start_s=start)) as (eng, client):
        src = score.notes.window(32.0, 40.0)           # two real bars of POP909, played into bars 0-1
        play_notes(client, src, start, q_s)
        time.sleep(start + 3 * 4 * q_s - time.perf_counter() + 0.1)
        rec = client.recorded()
    ons, balanced = notes_of(rec)
    assert balanced
    for b in (0, 1):                                   # bar b played -> bar b+1 out
        played = src.select((src.start >= 4 * b - 0.125) & (src.start < 4 * b + 3.875))
        got = [(p, v) for t, p, v in ons if start + (b + 1) * 4 * q_s - 0.01 <= t < start + (b + 2) * 4 * q_s - 0.01]
        assert 0 < len(got) <= keep < len(played)
        loudest = sorted(played.velocity.tolist())[-keep]
        assert all(v >= loudest for _, v in got)       # the strongest notes, their velocities kept
        assert all((p, v) in set(zip(played.pitch.tolist(), played.velocity.tolist())) for p, v in got)
    every_note_off(rec)


def test_beat_latency_simplify_answers_each_played_beat_on_the_next(jack_server):
    """The shipped piano-pop909 preset with --latency beat semantics: two real POP909 bars played
    into `sidl in`; what comes out of each beat was played in the beat before it, two atoms a beat."""
    from sidl.realtime.codec.midifile import load_midi, read_score
    from sidl.realtime.preset import load_preset
    from conftest import DATA
    score = read_score(load_midi(DATA / "pop909" / "POP909" / "001" / "001.mid"))
    bpm = 120.0
    q_s = 60 / bpm
    start = time.perf_counter() + 0.3
    controls = Controls(mode="simplify", keep=8, quantize=True, latency="beat")
    with engine_on_jack(load_preset("piano-pop909"), controls, clock=InternalClock(bpm, start_s=start)) as (eng, client):
        src = score.notes.window(32.0, 40.0)
        play_notes(client, src, start, q_s)
        time.sleep(start + 9 * q_s - time.perf_counter() + 0.1)
        rec = client.recorded()
    ons, balanced = notes_of(rec)
    assert balanced and ons
    beats = np.floor((np.array([t for t, _, _ in ons]) - start) / q_s + 0.01).astype(int)
    assert beats.min() >= 1 and beats.max() <= 8       # nothing before the first beat was played
    answered = 0
    for j in range(1, 9):
        out = {p for (_, p, _), b in zip(ons, beats) if b == j}
        before = set(src.select((src.start >= j - 1.125) & (src.start < j - 0.125)).pitch.tolist())
        answered += len(out & before)
        assert len(out) <= max(len(before), 1) + 2     # simplified: about two atoms' notes
    assert answered >= 0.7 * len(ons)                  # what it plays was played in the beat before
    every_note_off(rec)


def _wait_for(pred, timeout):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _spawn_live(*args, shipped=False):
    """The real `sidl-live` command line in a subprocess: on the stand-in model, or on the shipped
    presets (onnxruntime) with ``shipped``."""
    entry = ["-m", "sidl.realtime.live.cli"] if shipped else [str(ROOT / "tests" / "live_standin.py")]
    return subprocess.Popen([sys.executable, *entry, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _exited(proc, timeout=10.0) -> str:
    """stderr once ``proc`` has exited; if it hangs instead, fail with every thread's stack."""
    try:
        return proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)               # sidl-live dumps its stacks (faulthandler)
        time.sleep(0.5)
        proc.kill()
        pytest.fail(f"sidl-live did not exit within {timeout} s:\n{proc.communicate()[1][-6000:]}")


def _terminate(proc) -> str:
    """SIGTERM, as Ctrl-C or a service manager sends it; stderr once it has exited."""
    proc.send_signal(signal.SIGTERM)
    err = _exited(proc)
    time.sleep(0.05)                                   # the last note-offs cross JACK
    return err


def test_sigterm_leaves_nothing_sounding_with_existing_ports(jack_server):
    """The real CLI on --port/--out (loose names of our test client's ports), sending clock, killed."""
    src = open_output(None, "sidl-test-src")
    sink = open_input(None, "sidl-test-sink")
    dump = subprocess.Popen(["jack_midi_dump", "-a", "sidl-test-dump"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    proc = _spawn_live("--port", "sidl-test-src", "--out", "sidl test sink", "--bpm", "240",
                       "--density", "4", "--quantize", "--send-clock")
    rec = []
    try:
        assert _wait_for(lambda: rec.extend(sink.poll()) or rec or proc.poll() is not None, 5.0), "no output"
        assert proc.poll() is None, proc.stderr.read()
        subprocess.run(["jack_connect", "sidl-out:sidl out", "sidl-test-dump:input"], check=True)
        time.sleep(0.9)                                # a bar and a half at 240 BPM
        err = _terminate(proc)
        assert proc.returncode == 0, err
        assert "first bar ready" in err
        time.sleep(0.05)
        rec += sink.poll()
    finally:
        proc.kill()
        dump.send_signal(signal.SIGINT)
        dumped, _ = dump.communicate(timeout=5)
        src.close()
        sink.close()
    dumped_notes = [(f, d) for f, d in peers.read_dump(dumped)
                    if d and (d[0] & 0xE0 == 0x80 or d[0] & 0xF0 == 0xB0)]
    ons, balanced = notes_of(rec)
    assert len(ons) > 8 and balanced, (f"left sounding: {sounding_of(rec)} at our sink, "
                                       f"{sounding_of(dumped_notes)} at jack_midi_dump; sidl-live said: {err[-800:]}")
    # --send-clock: Start first, then 24 ticks a beat at 240 BPM, and Stop on the way out.
    realtime = [(t, d[0]) for t, d in rec if d[0] >= 0xF8]
    assert realtime[0][1] == 0xFA and realtime[-1][1] == 0xFC
    assert sum(b == 0xF8 for _, b in realtime) > 48
    # Tick spacing in frames, as jack_midi_dump (an independent JACK client) printed them: sidl's
    # 240 BPM is 500 frames a tick at 48 kHz (rtmidi's ports put each on the period boundary before it,
    # so intervals are 448 or 512). A dummy server that wakes late restarts its timeline later (on a
    # busy VM by milliseconds, a few times a second): the interval across it is off by more than a
    # period, and the ticks on either side are fitted with one spacing but each run its own offset.
    rate, period = server_rate_and_period()
    ticks = np.array([f for f, d in peers.read_dump(dumped) if d == [0xF8]], np.int64)[PPQN:]
    nominal = rate * 60 / 240 / PPQN
    runs = np.split(np.arange(len(ticks)), np.nonzero(np.abs(np.diff(ticks) - nominal) > period)[0] + 1)
    runs = [r for r in runs if len(r) > 2]
    assert sum(map(len, runs)) > PPQN, f"{len(ticks)} ticks, runs {[len(r) for r in runs]}"
    k = np.concatenate([r - r.mean() for r in runs])
    f = np.concatenate([ticks[r] - ticks[r].mean() for r in runs])
    assert float(k @ f / (k @ k)) == pytest.approx(nominal, rel=1e-3)
    # The dump (from its connection on) saw the same: every note-on, its note-off.
    assert sum(d[0] & 0xF0 == 0x90 and d[2] > 0 for _, d in dumped_notes) > 4
    assert not sounding_of(dumped_notes, all_notes_off=True), sounding_of(dumped_notes, all_notes_off=True)
    every_note_off(rec, dumped_notes)


def test_a_disappearing_port_stops_and_silences(jack_server):
    sink = open_input(None, "sidl-test-sink")
    proc = _spawn_live("--out", "sidl-test-sink", "--bpm", "240", "--density", "4")
    try:
        assert _wait_for(lambda: sink.poll() or proc.poll() is not None, 5.0), "no output"
    finally:
        sink.close()                                   # the port goes away under sidl-live
    err = _exited(proc)
    assert proc.returncode == 1
    assert "'sidl-test-sink:sidl in' disappeared; stopped and silenced" in err


def test_cli_without_a_port_match_is_one_line_and_exit_2(jack_server):
    proc = _spawn_live("--port", "no such port here")
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 2
    assert err.count("\n") == 1 and err.startswith("sidl-live: no MIDI input port matches 'no such port here'")


def test_the_jack_server_going_away_stops_sidl_live(jack_server):
    """A JACK server of its own (named), stopped under a running sidl-live: exit 1, one line why."""
    env_server = "sidl-test-down"
    jackd = subprocess.Popen(["jackd", "-n", env_server, "-d", "dummy", "-r", "48000", "-p", "64"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _wait_for(lambda: os.path.exists(f"/dev/shm/jack_{env_server}_{os.getuid()}_0"), 5.0)
        proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "live_standin.py"), "--bpm", "240"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "JACK_DEFAULT_SERVER": env_server})
        line = proc.stderr.readline()
        assert "ports open" in line, line + proc.stderr.read()
        jackd.terminate()
        jackd.wait(timeout=5)
        err = _exited(proc)
    finally:
        jackd.kill()
    assert proc.returncode == 1
    assert "disappeared; stopped and silenced" in err


def test_follows_a_real_jack_midi_clock_client(jack_server):
    """Debian's jack_midi_clock (driven by JACK transport) as the DAW; sidl-live opens it by name."""
    bpm = 150.0
    step_s = 60 / bpm / 4
    mclk = subprocess.Popen(["jack_midi_clock", "-b", str(bpm), "-B"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    proc = None
    try:
        assert _wait_for(lambda: "jack_midi_clock:mclk_out" in
                         subprocess.run(["jack_lsp"], capture_output=True, text=True).stdout, 5.0)
        proc = _spawn_live("--sync", "--port", "midi clock", "--quantize", "--density", "4")
        assert "ports open" in proc.stderr.readline()
        rec = Recorder("sidl-out:sidl out", "sidl-test-rec")
        try:
            subprocess.run(["jack_transport"], input="play\n", capture_output=True, text=True, timeout=5)
            time.sleep(2.5)
            subprocess.run(["jack_transport"], input="stop\nlocate 0\n", capture_output=True, text=True, timeout=5)
            t_stopped = time.perf_counter()
            time.sleep(0.3)
            got = rec.drain()
        finally:
            rec.close()
        err = _terminate(proc)
        assert proc.returncode == 0, err
    finally:
        mclk.terminate()
        mclk.wait(timeout=5)
        if proc is not None:
            proc.kill()
    ons, balanced = notes_of(got)
    assert balanced and len(ons) > 10                  # the transport's Stop silenced everything
    assert any(d[:2] == [0xB9, 123] for _, d in got)
    assert all(t < t_stopped + 0.01 for t, _, _ in ons)
    t = np.sort([t for t, _, _ in ons])
    t = t[np.concatenate([[True], np.diff(t) > 0.002])]   # one onset per chord
    ioi = np.diff(t)
    err = ioi - np.round(ioi / step_s) * step_s       # every onset on the clock's 16th grid
    assert np.all(np.round(ioi / step_s) >= 1) and np.percentile(np.abs(err), 90) < GRID_TOL_S
    every_note_off(got)


@pytest.mark.parametrize("args, says", [
    (["--meter", "7/8"], "meter 7/8 does not fit this preset's atoms of 4 steps"),
    (["--meter", "4-4"], "--meter must look like 4/4 or 6/8"),
    (["--bpm", "fast"], "Invalid value for '--bpm'"),
    (["--sync", "--send-clock"], "--sync and --send-clock do not go together"),
    (["--preset", "nope"], "no stand-in preset 'nope'"),
])
def test_cli_user_errors_are_one_line_and_exit_2(jack_server, args, says):
    proc = _spawn_live(*args)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 2 and err.count("\n") == 1 and says in err, err


def test_the_shipped_drum_preset_plays_on_the_grid_and_stops_clean(jack_server):
    """The real `sidl-live` on the shipped drums-gmd preset (ONNX): on the 16th grid, silent after SIGTERM."""
    bpm = 240.0
    step_s = 60 / bpm / 4
    proc = _spawn_live("--preset", "drums-gmd", "--bpm", str(bpm), "--quantize", shipped=True)
    try:
        line = proc.stderr.readline()
        assert "generate on drums-gmd" in line, line + proc.stderr.read()
        rec = Recorder("sidl-out:sidl out", "sidl-test-rec")
        try:
            time.sleep(2.2)                                # two bars and a bit
            err = _terminate(proc)
            got = rec.drain()
        finally:
            rec.close()
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    ons, balanced = notes_of(got)
    assert len(ons) >= 8 and balanced
    t = np.sort([t for t, _, _ in ons])
    t = t[np.concatenate([[True], np.diff(t) > 0.002])]
    ioi = np.diff(t)
    err = ioi - np.round(ioi / step_s) * step_s
    assert np.percentile(np.abs(err), 90) < GRID_TOL_S
    every_note_off(got)


def test_program_change_switches_between_shipped_presets_without_stuck_notes(jack_server):
    """Two real presets loaded; Program Change 2 from a JACK client turns the drummer into the
    piano simplifier at the next bar: drums (channel 10) stop balanced, played piano comes back on
    channel 1."""
    bpm = 240.0                                       # a bar is a second
    proc = _spawn_live("--preset", "drums-gmd", "--preset", "piano-pop909", "--bpm", str(bpm), "--quantize",
                       shipped=True)
    try:
        lines = [proc.stderr.readline(), proc.stderr.readline()]
        assert "1 = drums-gmd, 2 = piano-pop909" in lines[1], "".join(lines) + proc.stderr.read()
        client = Client()
        try:
            time.sleep(1.5)                            # a bar of drums and a half
            t_switch = time.perf_counter()
            client.play([t_switch], [mido.Message("program_change", program=1)])
            beat_s = 60 / bpm
            chord = [60, 64, 67]                       # C major on every beat for two bars
            times = [t_switch + 0.1 + i * beat_s for i in range(8)]
            client.play([t for t in times for _ in chord] + [t + beat_s / 2 for t in times for _ in chord],
                        [mido.Message("note_on", note=n, velocity=90) for _ in times for n in chord] +
                        [mido.Message("note_off", note=n) for _ in times for n in chord])
            time.sleep(3.2)
            err = _terminate(proc)
            got = client.recorded()
        finally:
            client.close()
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    drums = [(t, d) for t, d in got if d[0] & 0x0F == 9]
    piano = [(t, d) for t, d in got if d[0] & 0x0F == 0]
    d_ons, d_balanced = notes_of(drums)
    p_ons, p_balanced = notes_of(piano)
    assert d_ons and d_balanced and max(t for t, _, _ in d_ons) < t_switch + 0.01
    assert p_ons and p_balanced and min(t for t, _, _ in p_ons) > t_switch
    assert {n for _, n, _ in p_ons} <= set(chord)      # the played chord, simplified: nothing invented
    every_note_off(drums, piano)


def test_the_benchmark_prints_every_row(jack_server):
    """The README's benchmark command runs end to end (a stand-in model, a few bars): no row rots."""
    r = subprocess.run([sys.executable, "-m", "sidl.realtime.live.bench", "--model",
                        str(ROOT / "tests" / "standin.py") + ":drum_model", "--bars", "40", "--jack-bars", "2"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    for row in ("compute per bar, generate ", "compute per beat, simplify --latency beat",
                "generate, a bar every 20 ms", "yardstick", "onset error |t - grid|",
                "onset error, MIDI clock in", "start -> first bar ready"):
        assert row in r.stdout, (row, r.stdout)
