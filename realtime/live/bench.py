"""Benchmark of the live path: python -m sidl.realtime.live.bench [--preset NAME | --model MODULE:FACTORY].

Prints one table:

* compute per bar on the live path (``Renderer.render``: encode -> edit -> decode -> timed batch),
  p50/p99, for each mode (with ``--latency beat``: per beat), back to back; the default mode again
  paced, one bar every 20 ms, as the live worker meets it (cold caches); and the preset's two
  onnxruntime graphs alone;
* output onset error against the ideal grid through JACK: notes recorded by a second JACK client,
  compared with the engine's own grid (internal clock) and with the grid of a MIDI clock we send
  it (``--sync``);
* time from process start to ports open and to the first bar ready, for the real ``sidl-live``.

``--peer-timing`` instead measures the real ``sidl-live`` against real JACK peers (``peers``):
driven by ``jack_midi_clock``, recorded by ``jack_midi_dump``, for each backend and period.

The model is a parameter: a preset name (through ``live.cli.load_bar_model``) or any factory
``module:attr`` / ``path/to/file.py:attr`` returning an object that fits ``compose.BarModel``.
"""
from __future__ import annotations

import argparse
import faulthandler
import importlib
import importlib.util
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import mido
import numpy as np

from .clock import PPQN, InternalClock
from ..compose import default_mode
from ..controls import Controls
from .bars import BarJob
from .engine import build_engine, run_live
from ..codec.notes import NoteArray
from .jackmidi import midi_port_names
from .ports import PortError, jack_running, open_input, open_output, transport_latency_s
from .scheduler import Batch, Scheduler


def load_factory(spec: str):
    """'package.module:attr' or 'path/to/file.py:attr' -> the attribute (a model factory)."""
    where, _, attr = spec.rpartition(":")
    if where.endswith(".py"):
        sys.path.insert(0, str(Path(where).resolve().parent))
        s = importlib.util.spec_from_file_location(Path(where).stem, where)
        module = importlib.util.module_from_spec(s)
        s.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    return getattr(module, attr)


def random_bar(rng: np.random.Generator, codec, n_notes: int = 24) -> NoteArray:
    """A busy played bar: ``n_notes`` notes on random steps and voices, with human timing."""
    from ..codec.drums import CLASS_NOTES
    steps = codec.steps_per_bar
    start = rng.integers(0, steps, n_notes) + rng.uniform(-0.3, 0.3, n_notes)
    # (an older checkout's Codec, met by --compare, has no spec table)
    drums = codec.spec.drum_feel if hasattr(codec, "spec") else codec.name == "drums"
    pitch = rng.choice(CLASS_NOTES, n_notes) if drums else rng.integers(36, 96, n_notes)
    return NoteArray.from_lists(start, start + rng.uniform(0.5, 4, n_notes), pitch,
                                rng.integers(30, 127, n_notes))


BENCH_MODES = ("generate", "generate --follow", "simplify", "echo", "simplify --latency beat")
PACED_S = 0.02        # the paced run's pause between bars


def compute_per_bar(model, n_bars: int = 500, modes=BENCH_MODES, pause_s: float = 0.0) -> dict[str, np.ndarray]:
    """Seconds per ``render`` for each mode, on the worker's code path (no ports).

    Back to back (``pause_s`` 0) this is the code's own cost, caches warm. Live, the worker renders
    one bar and then waits for the next: with ``pause_s`` it sleeps that long before each bar, and
    each bar pays for caches and branch predictors that other work has taken over meanwhile.
    """
    import gc
    gc.collect()
    gc.freeze()                                   # as sidl-live does once it has started
    rng = np.random.default_rng(0)
    clock = InternalClock(120.0)
    out = {}
    for mode in modes:
        per_beat = "beat" in mode
        eng, renderer = build_engine(model, Controls(mode=mode.split()[0], follow="follow" in mode,   # sidl-live's
                                                     latency="beat" if per_beat else "bar"),       # defaults
                                     channel=9, clock=clock)
        played = [random_bar(rng, model.codec) for _ in range(16)]
        positions, stride = renderer.composer.positions, renderer.composer.stride
        times = []
        for b in range(n_bars + 20):
            if per_beat:                          # one job per code position: that beat's notes
                bar, pos = divmod(b, positions)
                job = BarJob(bar, played[bar % 16].window(pos * stride, (pos + 1) * stride), eng.controls,
                             clock.timeline, position=pos)
            else:
                job = BarJob(b, played[b % 16], eng.controls, clock.timeline)
            if pause_s:
                time.sleep(pause_s)
            t0 = time.perf_counter()
            renderer.render(job)
            times.append(time.perf_counter() - t0)
        out[mode] = np.array(times[20:])          # the first bars warm caches up
    return out


def _live_module(package: str, module: str) -> str:
    """Where a live module sits in a checkout: ``live/engine.py`` since the layout of issue #9,
    ``engine.py`` (and ``live.py`` for the command) before it."""
    root = Path(importlib.util.find_spec(f"{package}.realtime").submodule_search_locations[0])
    if (root / "live" / "engine.py").is_file():
        return f"live.{module}"
    return "live" if module == "cli" else module


def is_checkout(folder: Path) -> bool:
    return (folder / "realtime" / "engine.py").is_file() or (folder / "realtime" / "live" / "engine.py").is_file()


def compare_with(old_root: str, preset: str, mode: str, n_bars: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    """Seconds per ``render`` of an older checkout (``git worktree add DIR REV``) and of this code,
    alternated bar by bar in one process, each with its own shipped ``preset``: a comparison the
    machine's noise cannot tilt, as it hits both sides alike."""
    import gc
    import tempfile
    pkg = Path(tempfile.mkdtemp(prefix="sidl-old-")) / "sidl_old"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "realtime").symlink_to(Path(old_root).resolve() / "realtime")   # its presets/ beside it
    sys.path.insert(0, str(pkg.parent))
    sides = []
    for name in ("sidl_old", "sidl"):
        live = importlib.import_module(f"{name}.realtime.{_live_module(name, 'cli')}")
        engine = importlib.import_module(f"{name}.realtime.{_live_module(name, 'engine')}")
        controls = importlib.import_module(f"{name}.realtime.controls")
        clocks = importlib.import_module(f"{name}.realtime.{_live_module(name, 'clock')}")
        load = getattr(live, "load_bar_model", None) or live.load_model     # (its name before #9)
        model, clock = load(preset), clocks.InternalClock(120.0)
        c = controls.Controls(mode=mode.split()[0], follow="follow" in mode)
        if hasattr(engine, "build_engine"):         # since issue #9: the worker's Renderer renders
            _, render = engine.build_engine(model, c, channel=9, clock=clock)
            job = importlib.import_module(f"{name}.realtime.live.bars").BarJob
        else:
            render, job = engine.Engine(model, c, channel=9, clock=clock), engine.BarJob
        played = [random_bar(np.random.default_rng(i), model.codec) for i in range(16)]
        sides.append((render, c, job, clock, played, []))
    gc.collect()
    gc.freeze()
    for b in range(n_bars + 20):
        for render, c, job, clock, played, times in sides:
            j = job(b, played[b % 16], c, clock.timeline)
            t0 = time.perf_counter()
            render.render(j)
            times.append(time.perf_counter() - t0)
    return np.array(sides[0][5][20:]), np.array(sides[1][5][20:])


def first_bars(load, mode: str, n_starts: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Seconds of the first bar each of ``n_starts`` fresh starts renders, as sidl-live starts (the
    preset loaded anew, its caches cold, the renderer warmed up on its own worker thread), and of
    the same bar rendered again right after (the groove reset, so both do the same work). A first
    bar that costs more pays first-use costs (graph bindings are per thread) the warm-up missed."""
    from .render import Worker
    from .scheduler import RecordingOutput
    firsts, seconds = [], []
    for i in range(n_starts):
        model = load()
        clock = InternalClock(120.0)
        controls = Controls(mode=mode.split()[0], follow="follow" in mode)
        engine, renderer = build_engine(model, controls, channel=9, clock=clock)
        sched = Scheduler(RecordingOutput())
        worker = Worker(renderer, sched, engine.current_epoch, controls).start()
        worker.ready.wait(10.0)
        played = random_bar(np.random.default_rng(i), model.codec)
        for again in (False, True):
            worker.put(BarJob(0, played, controls, clock.timeline, reset=again))
        worker.close(timeout=5.0)
        firsts.append(renderer.compute_s[0])
        seconds.append(renderer.compute_s[1])
    return np.array(firsts), np.array(seconds)


def machine_cold_factor(n: int = 300, pause_s: float = PACED_S) -> tuple[np.ndarray, np.ndarray]:
    """Seconds of a fixed pure-Python loop back to back, and after ``pause_s`` of sleep: how much
    this machine alone slows any code that wakes up (the paced row's yardstick)."""
    def loop():
        s = 0
        for i in range(300):
            s += i * i
        return s
    out = []
    for pause in (0.0, pause_s):
        times = []
        for _ in range(n + 20):
            if pause:
                time.sleep(pause)
            t0 = time.perf_counter()
            loop()
            times.append(time.perf_counter() - t0)
        out.append(np.array(times[20:]))
    return out[0], out[1]


def graph_per_bar(model, n_bars: int = 500) -> dict[str, np.ndarray]:
    """Seconds per call of the preset's two graphs alone (onnxruntime, k = the live k), on busy bars."""
    from ..codec.convert import encode_steps
    rng = np.random.default_rng(1)
    bars = [encode_steps(model.codec, random_bar(rng, model.codec), model.codec.steps_per_bar) for _ in range(16)]
    codes = [model.encode_bar(x, model.k) for x in bars]
    decode = getattr(model, "run_decoder", model.decode_bar)     # a preset's graph, not its reuse
    encode = getattr(model, "run_encoder", model.encode_bar)     # the graph, not a numpy pursuit
    enc, dec = [], []
    for b in range(n_bars + 20):
        t0 = time.perf_counter()
        encode(bars[b % 16], model.k)
        t1 = time.perf_counter()
        decode(*codes[b % 16])
        enc.append(t1 - t0)
        dec.append(time.perf_counter() - t1)
    return {"encoder alone": np.array(enc[20:]), "decoder alone": np.array(dec[20:])}


class Recorder:
    """A JACK client that records a port: ``(arrival seconds, [bytes])``, polled every millisecond.

    Polling often matters: an input's timestamps are only as good as its most prompt poll (see
    ``ports.MidiInput``). Arrival is the raw arrival, the transport's latency added back.
    """

    def __init__(self, source: str, client_name: str):
        self.port = open_input(source, client_name)
        self.got: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.001):
            self.got += [(t + self.port.latency_s, d) for t, d in self.port.poll()]

    def drain(self) -> list:
        got, self.got = self.got, []
        return got

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.port.close()


def onset_error(model, bpm: float = 240.0, n_bars: int = 8,
                sync: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Seconds between each note-on a JACK client receives and its ideal grid time, and each
    note's grid position in quarter notes from the start."""
    inp, out = open_input(None, "sidl-bench-in"), open_output(None, "sidl-bench-out")
    sched = Scheduler(out, latency_s=out.latency_s).start()
    start = time.perf_counter() + 0.3
    clock = None if sync else InternalClock(bpm, start_s=start)
    eng, renderer = build_engine(model, Controls(mode="generate", density=4.0, quantize=True, variation=0.5),
                                 channel=9, clock=clock, input_latency_s=inp.latency_s)
    stop = threading.Event()            # (run_live warms the renderer up on its worker, as sidl-live does)
    th = threading.Thread(target=run_live, args=(eng, renderer, inp.poll, sched, stop), daemon=True)
    rec = Recorder("sidl-bench-out:sidl out", "sidl-bench-rec")
    sender = None
    th.start()
    try:
        if sync:                                   # a DAW's clock, sent at exact times
            sender_port = open_output("sidl-bench-in:sidl in", "sidl-bench-clock")
            sender = (sender_port, Scheduler(sender_port, latency_s=sender_port.latency_s).start())
            n = int(n_bars * 4 * PPQN)
            times = np.concatenate([[start - 0.5 * 60 / bpm / PPQN], start + np.arange(n) * 60 / bpm / PPQN])
            msgs = [mido.Message("start")] + [mido.Message("clock")] * n
            sender[1].submit(Batch.build(times, [np.nan] * len(msgs), msgs))
        time.sleep(start + n_bars * 4 * 60 / bpm - time.perf_counter() + 0.2)
    finally:
        stop.set()
        # No timeout: the conductor polls ``inp`` and silences through ``sched`` until it returns,
        # and closing an rtmidi port under it is a use-after-free (a segfault on a loaded machine,
        # where a 2 s join could expire).
        th.join()
        sched.close()
        if sender is not None:
            sender[1].close()
            sender[0].close()
        inp.close()
        out.close()
    step_s = 60 / bpm / model.codec.steps_per_beat
    from .peers import is_note_on
    t = np.array([t for t, d in rec.drain() if is_note_on(d)])
    rec.close()
    t = t[t < start + n_bars * 4 * 60 / bpm - step_s]  # sync: the last bar may be cut by the clock's end
    k = np.round((t - start) / step_s)
    return t - (start + k * step_s), k / model.codec.steps_per_beat


def transport_loss(n: int = 20000, spacing_s: float = 0.001) -> tuple[int, int | None]:
    """Send ``n`` clock messages, one per ``spacing_s``, from one JACK client to two receivers:
    ours (rtmidi, as sidl-live reads) and Debian's ``jack_midi_dump`` when installed. Returns how
    many each got: what the MIDI system itself loses, apart from anything sidl does."""
    import shutil
    import tempfile
    dump, dump_out = None, None
    if shutil.which("jack_midi_dump") and shutil.which("jack_connect"):
        dump_out = tempfile.NamedTemporaryFile("w+", suffix=".txt")
        dump = subprocess.Popen(["jack_midi_dump", "sidl-bench-dump"], stdout=dump_out, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    inp, out = open_input(None, "sidl-bench-loss-in"), open_output(None, "sidl-bench-loss-out")
    got = 0
    try:
        time.sleep(0.2)
        if dump is not None:
            subprocess.run(["jack_connect", "sidl-bench-loss-out:sidl out", "sidl-bench-dump:input"], check=False)
        subprocess.run(["jack_connect", "sidl-bench-loss-out:sidl out", "sidl-bench-loss-in:sidl in"], check=False)
        time.sleep(0.3)
        t_next = time.perf_counter()
        for i in range(n):
            out.send_bytes([0xF8])
            t_next += spacing_s
            while time.perf_counter() < t_next:
                time.sleep(0)
            if i % 50 == 0:
                got += sum(1 for _, d in inp.poll() if d == [0xF8])
        time.sleep(0.5)
        got += sum(1 for _, d in inp.poll() if d == [0xF8])
    finally:
        inp.close()
        out.close()
        if dump is not None:
            dump.terminate()
            dump.wait()
    if dump_out is None:
        return got, None
    dump_out.seek(0)
    return got, sum(1 for line in dump_out if line.strip().lower().endswith("f8"))


def startup(launch: list[str], timeout_s: float = 20.0) -> tuple[float, float]:
    """Seconds from spawning ``sidl-live`` to its "ports open" and "first bar ready" lines."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(launch, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    t_open = t_ready = float("nan")
    try:
        deadline = t0 + timeout_s
        while time.perf_counter() < deadline:
            line = proc.stderr.readline()
            if not line:
                raise RuntimeError(f"sidl-live exited early (code {proc.wait()})")
            if "ports open" in line:
                t_open = time.perf_counter() - t0
            if "first bar ready" in line:
                t_ready = time.perf_counter() - t0
                break
    finally:
        proc.terminate()
        proc.wait(timeout=5)
    return t_open, t_ready


def peer_timing(preset: str, backends: list[str], periods: list[int], seconds: float,
                json_path: str | None = None) -> list[dict]:
    """The --peer-timing table: for each period, backend and clock (--sync, internal), onset error
    p50/p99/mean against jack_midi_clock's (or sidl's own sent) ticks, and the sent ticks' jitter."""
    from . import peers
    for program in ("jackd", "jack_midi_clock", "jack_midi_dump"):
        peers.need(program)
    rows = []

    def run_all(period_label):
        for backend in backends:
            for sync in (True, False):
                events, rate, period, log = peers.run_session(peers.sidl_live_command(preset), backend, sync, seconds)
                m = peers.measure(events, rate, period)
                rows.append({"period": period, "rate": rate, "backend": backend,
                             "clock": "--sync (jack_midi_clock)" if sync else "internal (--send-clock)",
                             "notes": len(m.errors), "first_beat_notes": len(m.first_beat), "off_16th": m.off_16th,
                             "p50_ms": _stat(np.abs(m.errors), 50), "p99_ms": _stat(np.abs(m.errors), 99),
                             "mean_ms": float(np.mean(m.errors) * 1e3) if len(m.errors) else None,
                             "on_period_boundary": m.on_period, "ticks": m.ticks, "tick_glitches": m.tick_glitches,
                             "recorder_slips": m.recorder_slips, "frames_per_tick": m.frames_per_tick,
                             "tick_jitter_p99_ms": None if sync else _stat(m.tick_jitter, 99),
                             "stuck_notes": m.stuck, "when_utc": time.strftime("%H:%M:%S", time.gmtime()),
                             "load_1min": os.getloadavg()[0]})
                print(_peer_row(rows[-1]), flush=True)

    print(f"sidl-live --preset {preset} against real JACK peers, {seconds:g} s a run at {peers.PEER_BPM:g} BPM, "
          f"--quantize; error = note frame - the nearest tick's frame, as jack_midi_dump recorded them; "
          f"notes after the first beat")
    print(f"{'period':>6s} {'backend':12s} {'clock':26s} {'notes':>5s} {'p50 ms':>7s} {'p99 ms':>7s} "
          f"{'mean ms':>8s} {'on period':>9s} {'tick jit p99':>12s} {'glitches':>8s} {'off 16th':>8s} {'stuck':>5s} {'dump slips':>10s}")
    if periods:
        for p in periods:
            with peers.dummy_server(p):
                run_all(p)
    else:
        if not jack_running():
            raise PortError("--peer-timing needs a JACK server (jackd -d dummy -r 48000 -p 64 &), or --periods")
        run_all(None)
    if json_path:
        from ..codec.files import write_json_atomic
        write_json_atomic(json_path, rows)
    return rows


def link_timing(preset: str, runs: int, periods: list[int], json_path: str | None = None) -> list[dict]:
    """The --link-timing table: the real ``sidl-live --link`` against a second Ableton Link peer
    (``linkpeer``), per run: bar phase error (each bar line sidl's MIDI clock marks against the peer's),
    clock-tick and note errors against the peer's grid, and how long a tempo change takes to follow."""
    from . import linkpeer, peers
    from .link import load_link
    load_link()
    rows = []

    def run_all():
        for _ in range(runs):
            m, _log = linkpeer.run_link_session(preset)
            import jack
            ctl = jack.Client("sidl-link-bench-rate", no_start_server=True)
            period = ctl.blocksize
            ctl.close()
            rows.append({"period": period, "bars": len(m.bar_error_s),
                         "bar_p50_ms": _stat(np.abs(m.bar_error_s), 50), "bar_p99_ms": _stat(np.abs(m.bar_error_s), 99),
                         "bar_mean_ms": float(np.mean(m.bar_error_s) * 1e3),
                         "ticks": len(m.tick_error_s), "tick_p50_ms": _stat(np.abs(m.tick_error_s), 50),
                         "tick_p99_ms": _stat(np.abs(m.tick_error_s), 99),
                         "tick_max_ms": float(np.abs(m.tick_error_s).max() * 1e3), "session_bpm": m.session_bpm,
                         "start_bar": m.start_bar,
                         "notes": len(m.note_error_s), "note_p99_ms": _stat(np.abs(m.note_error_s), 99),
                         "start_ms": m.start_error_s * 1e3, "follow_ms": m.follow_s * 1e3, "beat_ms": m.beat_s * 1e3,
                         "notes_after_stop": m.notes_after_stop, "ticks_after_stop": m.ticks_after_stop,
                         "midi_stop_ms": m.midi_stop_s * 1e3 if math.isfinite(m.midi_stop_s) else None, "stuck_notes": m.sounding,
                         "recorder_xruns": m.recorder_xruns,
                         "recorder_line_off_ms": m.recorder_line_off_s * 1e3, "settling": m.settling, "tick_glitches": m.tick_glitches, "when_utc": time.strftime("%H:%M:%S", time.gmtime()), "load_1min": os.getloadavg()[0]})
            r = rows[-1]
            print(f"{r['period']:6d} {r['bars']:4d} {r['bar_p50_ms']:7.3f} {r['bar_p99_ms']:7.3f} {r['bar_mean_ms']:8.3f} "
                  f"{r['ticks']:5d} {r['tick_p50_ms']:7.3f} {r['tick_p99_ms']:7.3f} {r['tick_max_ms']:8.3f} {r['notes']:5d} "
                  f"{r['note_p99_ms']:7.3f} {r['start_ms']:8.3f} {r['start_bar']:4d} {r['session_bpm']:7.1f} {r['follow_ms']:9.1f} {r['beat_ms']:7.1f} {r['notes_after_stop']:10d} "
                  f"{r['ticks_after_stop']:11d} {'n/a' if r['midi_stop_ms'] is None else format(r['midi_stop_ms'], '7.1f'):>7s} {r['stuck_notes']:5d} {r['tick_glitches']:8d} {r['recorder_xruns']:6d} {r['recorder_line_off_ms']:8.3f} {r['settling']:8d}", flush=True)

    print(f"sidl-live --link --preset {preset} --send-clock --quantize --backend jack against a second Link peer "
          f"(LinkPython): it starts the session at 180 BPM, changes to 140 mid-bar 3.4 bars in, stops 3 bars "
          f"later; errors (ms) against the peer's own grid (+ = late), its map printed in perf_counter seconds; "
          f"bar/bpm: the session bar sidl started on and the session's tempo then (sidl brings 100); "
          f"stop ms: sidl's MIDI Stop after the session's Stop; the recording is stamped on the server's "
          f"timeline (each frame through the recorder's earliest callbacks around it, linkpeer.timeline_times), "
          f"line off: how far a frame clock like sidl's (the recorder's own) was off it at worst; settling: ticks "
          f"and notes left out, sent within {linkpeer.SETTLE_S:.1f} s of the server restarting its timeline later by "
          f"more than {linkpeer.MOVED_TOL_S * 1e3:.2f} ms (sidl's frame clock has not followed it yet)")
    print(f"{'period':>6s} {'bars':>4s} {'bar p50':>7s} {'bar p99':>7s} {'bar mean':>8s} {'ticks':>5s} {'tick p50':>7s} "
          f"{'tick p99':>7s} {'tick max':>8s} {'notes':>5s} {'note p99':>7s} {'start ms':>8s} {'bar':>4s} {'bpm':>7s} "
          f"{'follow ms':>9s} {'beat ms':>7s} "
          f"{'after stop':>10s} {'ticks after':>11s} {'stop ms':>7s} {'stuck':>5s} {'glitches':>8s} {'xruns':>6s} {'line off':>8s} {'settling':>8s}")
    if periods:
        for p in periods:
            with peers.dummy_server(p):
                run_all()
    else:
        if not jack_running():
            raise PortError("--link-timing needs a JACK server (jackd -d dummy -r 48000 -p 64 &), or --periods")
        run_all()
    # The Link side alone (no JACK, no sidl-live): LinkClock's maps against the peer's, in this process.
    for _ in range(runs):
        err, follow, beat = linkpeer.run_map_session()
        rows.append({"what": "LinkClock map, no JACK", "bars": len(err), "bar_p50_ms": _stat(np.abs(err), 50),
                     "bar_p99_ms": _stat(np.abs(err), 99), "bar_mean_ms": float(np.mean(err) * 1e3),
                     "follow_ms": follow * 1e3, "beat_ms": beat * 1e3, "load_1min": os.getloadavg()[0]})
        r = rows[-1]
        print(f"{'map':>6s} {r['bars']:4d} {r['bar_p50_ms']:7.3f} {r['bar_p99_ms']:7.3f} {r['bar_mean_ms']:8.3f} "
              f"{'':91s} {r['follow_ms']:9.1f} {r['beat_ms']:7.1f}   (LinkClock's own map, no JACK: bar lines "
              f"it would play at, against the peer's)", flush=True)
    if json_path:
        from ..codec.files import write_json_atomic
        write_json_atomic(json_path, rows)
    return rows


FLOOD_RATE = 10_000       # messages a second into sidl-live's input, --flood
FLOOD_CCS = (1, 7, 10, 11, 64, 71, 74)   # CCs a controller sends; none of sidl's own (20-28, 123): the
                                         # music must stay the same for its timing to be compared


def flood_messages(rng: np.random.Generator, n: int) -> list[list[int]]:
    """``n`` raw messages of what a broken or busy rig puts on a port: notes on channel 10 (duplicate
    note-ons, note-offs without note-ons), controller CCs, sysex, clock (an absurd rate at 10,000
    messages a second), Song Position storms, Start / Continue / Stop without clock, Program
    Changes, and data bytes without a status."""
    kinds = rng.choice(10, n, p=[.2, .15, .15, .05, .2, .08, .05, .05, .05, .02])
    out = []
    for k in kinds.tolist():
        key, val = int(rng.integers(35, 82)), int(rng.integers(128))
        out.append([[0x99, key, max(1, val)], [0x89, key, 0], [0xB9, int(rng.choice(FLOOD_CCS)), val],
                    [0xF0, 0x7E, 0x7F, 0x06, 0x01] + [int(b) for b in rng.integers(0, 128, 11)] + [0xF7],
                    [0xF8], [0xF2, val, int(rng.integers(128))], [int(rng.choice([0xFA, 0xFB, 0xFC]))],
                    [0xC9, val], [0x99, key, 0], [val & 0x7F, key]][k])
    return out


def _rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None


def flood_run(preset: str, seconds: float, flood: bool, rate: int = FLOOD_RATE) -> dict:
    """One run of the real ``sidl-live --preset P --quantize --send-clock`` on its internal clock (JACK
    backend), recorded by ``jack_midi_dump``, its input flooded at ``rate`` messages/s (or quiet):
    onset errors of its notes against its own sent ticks (``peers.measure``), its RSS over the run,
    and how much of the flood our sender got out."""
    import signal
    import tempfile
    import jack
    from . import peers
    ctl = jack.Client(f"sidl-flood-ctl-{os.getpid()}", no_start_server=True)
    rate_hz, period = ctl.samplerate, ctl.blocksize
    rec_out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    dump = live = sender = None
    stop = threading.Event()
    sent = [0, 0]                                          # sent, refused (the sender's queue full)
    try:
        before = set(midi_port_names(ctl))
        name = f"sidl-flood-rec-{os.getpid()}"
        dump = subprocess.Popen([peers.need("jack_midi_dump"), "-a", name], stdout=rec_out, stderr=subprocess.DEVNULL)
        dump_in = peers._wait_port(ctl, f"{name}:input", before, 30.0)
        sender = open_output(None, f"sidl-flood-send-{os.getpid()}", "jack")
        env = {k: v for k, v in os.environ.items() if k != "MIDO_BACKEND"}
        live = subprocess.Popen(peers.sidl_live_command(preset) + [
            "--backend", "jack", "--quantize", "--send-clock", "--bpm", f"{peers.PEER_BPM:g}",
            "--port", sender.own, "--out", dump_in], stdout=subprocess.DEVNULL, stderr=err, env=env)
        deadline = time.monotonic() + 60
        while True:
            err.seek(0)
            if "first bar ready" in err.read():
                break
            if live.poll() is not None or time.monotonic() > deadline:
                raise peers.PeerError("sidl-live did not start")
            time.sleep(0.05)
        time.sleep(0.5)
        rss = [_rss_kb(live.pid)]

        def flooding():
            msgs = flood_messages(np.random.default_rng(0), 50_000)
            i, per_ms = 0, rate / 1000.0
            t0 = time.perf_counter()
            while not stop.is_set():
                due = int((time.perf_counter() - t0) * 1000 * per_ms)
                while sent[0] + sent[1] < due:
                    try:
                        sender.send_bytes(msgs[i % len(msgs)])
                        sent[0] += 1
                    except PortError:                      # JACK did not take the last ones yet
                        sent[1] += 1
                    i += 1
                time.sleep(0.001)

        flooder = threading.Thread(target=flooding, daemon=True)
        t_flood = time.perf_counter()
        if flood:
            flooder.start()
        t_end = t_flood + seconds
        while time.perf_counter() < t_end:
            time.sleep(min(1.0, max(0.0, t_end - time.perf_counter())))
            rss.append(_rss_kb(live.pid))
        stop.set()
        if flood:
            flooder.join()
        flood_s = time.perf_counter() - t_flood
        peers._stop(live)
        time.sleep(peers.SETTLE_S)
        peers._stop(dump)
        rec_out.seek(0)
        events = peers.read_dump(rec_out.read())
        err.seek(0)
        log = err.read()
        m = peers.measure(events, rate_hz, period)
        rss = [r for r in rss if r is not None]
        return {"flood": flood, "rate_sent_per_s": sent[0] / flood_s if flood else 0.0, "refused": sent[1],
                "seconds": seconds, "notes": len(m.errors), "p50_ms": _stat(np.abs(m.errors), 50),
                "p99_ms": _stat(np.abs(m.errors), 99),
                "mean_ms": float(np.mean(m.errors) * 1e3) if len(m.errors) else None,
                "tick_jitter_p99_ms": _stat(m.tick_jitter, 99), "stuck_notes": m.stuck,
                "rss_start_mb": rss[0] / 1024, "rss_end_mb": rss[-1] / 1024, "rss_max_mb": max(rss) / 1024,
                # MB a minute, fitted over the run's second half (after warm-up): bounded is ~0
                "rss_growth_mb_per_min": float(np.polyfit(np.arange(len(rss))[len(rss) // 2:],
                                                           np.array(rss[len(rss) // 2:]) / 1024, 1)[0] * 60)
                if len(rss) >= 6 else None,
                "rc": live.returncode, "traceback": "Traceback" in log,
                "summary": next((ln for ln in log.splitlines() if "played" in ln), ""),
                "load_1min": os.getloadavg()[0]}
    finally:
        stop.set()
        for proc in (live, dump):
            if proc is not None:
                peers._stop(proc, signal.SIGKILL)
        if sender is not None:
            sender.close()
        ctl.close()
        rec_out.close()
        err.close()


def flood_timing(preset: str, seconds: float, json_path: str | None = None) -> list[dict]:
    """The --flood table: the same sidl-live run quiet and flooded, alternated (quiet, flood, quiet,
    flood would be fairer on a loaded box; one of each is what fits in a CI-sized run)."""
    rows = []
    print(f"sidl-live --preset {preset} --quantize --send-clock, {seconds:g} s a run, recorded by jack_midi_dump; "
          f"error = note frame - sidl's own nearest tick's frame; flood: {FLOOD_RATE} messages/s into its input")
    print(f"{'input':>6s} {'sent/s':>7s} {'refused':>7s} {'notes':>5s} {'p50 ms':>7s} {'p99 ms':>7s} {'mean ms':>8s} "
          f"{'tick jit p99':>12s} {'stuck':>5s} {'RSS start MB':>12s} {'end MB':>7s} {'MB/min':>7s} {'rc':>3s}")
    for flood in (False, True):
        r = flood_run(preset, seconds, flood)
        rows.append(r)
        def f(key, width, digits=3):
            return f"{float('nan') if r[key] is None else r[key]:{width}.{digits}f}"
        print(f"{'flood' if flood else 'quiet':>6s} {r['rate_sent_per_s']:7.0f} {r['refused']:7d} {r['notes']:5d} "
              f"{f('p50_ms', 7)} {f('p99_ms', 7)} {f('mean_ms', 8)} {f('tick_jitter_p99_ms', 12)} "
              f"{r['stuck_notes']:5d} {r['rss_start_mb']:12.1f} {r['rss_end_mb']:7.1f} "
              f"{f('rss_growth_mb_per_min', 7, 2)} {r['rc']:3d}", flush=True)
    if json_path:
        from ..codec.files import write_json_atomic
        write_json_atomic(json_path, rows)
    return rows


def _stat(x: np.ndarray, q: float) -> float | None:
    return float(np.percentile(x, q) * 1e3) if len(x) else None


def _peer_row(r: dict) -> str:
    f = lambda v, w=7: f"{v:{w}.3f}" if v is not None else f"{'n/a':>{w}s}"   # noqa: E731
    return (f"{r['period']:6d} {r['backend']:12s} {r['clock']:26s} {r['notes']:5d} {f(r['p50_ms'])} {f(r['p99_ms'])} "
            f"{f(r['mean_ms'], 8)} {r['on_period_boundary'] * 100:8.0f}% {f(r['tick_jitter_p99_ms'], 12)} "
            f"{r['tick_glitches']:8d} {r['off_16th']:8d} {r['stuck_notes']:5d} {r['recorder_slips']:10d}")


def _ms(x: np.ndarray, q: float) -> str:
    return f"{np.percentile(x, q) * 1e3:7.3f}" if len(x) else "    n/a"


def main(argv: list[str] | None = None) -> None:
    # A crash in native code (rtmidi, JACK, onnxruntime) prints every thread's Python stack on
    # stderr instead of dying silently with signal 11.
    faulthandler.enable(all_threads=True)
    ap = argparse.ArgumentParser(prog="python -m sidl.realtime.live.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", help="a preset name, loaded as sidl-live loads it")
    ap.add_argument("--model", help="a factory MODULE:ATTR or FILE.py:ATTR returning a model")
    ap.add_argument("--bars", type=int, default=500, help="bars for the compute timing")
    ap.add_argument("--jack-bars", type=int, default=8, help="bars (at 240 BPM) for each onset run")
    ap.add_argument("--compare", metavar="DIR", help="only compare compute per bar with an older checkout in "
                    "DIR (git worktree add DIR REV), alternating bar by bar; needs --preset")
    ap.add_argument("--mode", default=None, help="with --compare: the mode (default: the preset's)")
    ap.add_argument("--transport", type=int, metavar="N", default=0,
                    help="only check the MIDI system: send N clock messages 1 ms apart, count arrivals")
    ap.add_argument("--peer-timing", action="store_true",
                    help="only time sidl-live (--preset) against jack_midi_clock, recorded by jack_midi_dump")
    ap.add_argument("--periods", default="", help="with --peer-timing: JACK periods to run, each on a dummy "
                    "server of our own (e.g. 64,256); default: the running server")
    ap.add_argument("--backends", default="jack,rtmidi-jack", help="with --peer-timing: backends to compare")
    ap.add_argument("--seconds", type=float, default=20.0, help="with --peer-timing, --flood or --resend: seconds played per run")
    ap.add_argument("--link-timing", action="store_true",
                    help="only time sidl-live --link (--preset, default drums-gmd) against a second Ableton Link peer")
    ap.add_argument("--runs", type=int, default=3, help="with --link-timing: sessions to run (each ~12 s); with --resend: rounds")
    ap.add_argument("--json", metavar="PATH", help="with --peer-timing, --link-timing, --flood or --resend: also write the figures as JSON")
    ap.add_argument("--flood", action="store_true",
                    help=f"only time sidl-live (--preset, default drums-gmd) with {FLOOD_RATE} messages/s of "
                         f"notes, CCs, sysex and clock into its input against a quiet run (--seconds each, --json)")
    ap.add_argument("--resend", action="store_true",
                    help="only count note-offs a stalling JACK graph loses, through the JACK output with its "
                         "resend off and on and from a C sender (--seconds and --runs, --load, --json)")
    ap.add_argument("--load", type=int, default=1, help="with --resend: busy processes running meanwhile")
    args = ap.parse_args(argv)
    if args.resend:
        from .cycleloss import loss_table
        from .peers import PeerError
        try:
            loss_table(args.seconds, args.runs, args.load, args.json)
        except (PeerError, PortError) as e:
            ap.exit(2, f"resend: {e}\n")
        return
    if args.peer_timing:
        if not args.preset:
            ap.error("--peer-timing needs --preset")
        try:
            periods = [int(p) for p in args.periods.split(",") if p.strip()]
        except ValueError:
            ap.error(f"--periods must be numbers like 64,256, got {args.periods!r}")
        backends = [b.strip() for b in args.backends.split(",") if b.strip()]
        from .peers import PeerError
        try:
            peer_timing(args.preset, backends, periods, args.seconds, args.json)
        except (PeerError, PortError) as e:
            ap.exit(2, f"peer timing: {e}\n")
        return
    if args.flood:
        from .peers import PeerError
        try:
            flood_timing(args.preset or "drums-gmd", args.seconds, args.json)
        except (PeerError, PortError) as e:
            ap.exit(2, f"flood: {e}\n")
        return
    if args.link_timing:
        from .link import LinkMissing
        from .linkpeer import LinkPeerError
        try:
            periods = [int(p) for p in args.periods.split(",") if p.strip()]
        except ValueError:
            ap.error(f"--periods must be numbers like 64,256, got {args.periods!r}")
        from .peers import PeerError
        try:
            link_timing(args.preset or "drums-gmd", args.runs, periods, args.json)
        except (LinkMissing, LinkPeerError, PeerError, PortError) as e:
            ap.exit(2, f"link timing: {e}\n")
        return
    if args.transport:
        if not jack_running():
            ap.error("--transport needs a JACK server (jackd -d dummy -r 48000 -p 64 &)")
        os.environ.setdefault("MIDO_BACKEND", "mido.backends.rtmidi/UNIX_JACK")
        ours, dump = transport_loss(args.transport)
        print(f"sent {args.transport} clock messages 1 ms apart through JACK: sidl's input got {ours}"
              + (f", jack_midi_dump got {dump}" if dump is not None else ""))
        return
    if bool(args.preset) == bool(args.model):
        ap.error("give exactly one of --preset or --model")
    if args.compare:
        if not args.preset:
            ap.error("--compare needs --preset")
        if not is_checkout(Path(args.compare)):
            ap.error(f"--compare: {args.compare} is not a sidl checkout (no realtime/live/engine.py)")
        from .cli import load_bar_model
        mode = args.mode or default_mode(load_bar_model(args.preset).codec)
        old, new = compare_with(args.compare, args.preset, mode, args.bars)
        print(f"compute per bar, {args.preset}, {mode}, alternated bar by bar ({len(new)} bars each)")
        for what, secs in ((f"{args.compare}", old), ("this checkout", new)):
            print(f"  {what:40s} p50 {_ms(secs, 50)} ms  p99 {_ms(secs, 99)} ms")
        return
    if args.preset:
        from .cli import load_bar_model
        model = load_bar_model(args.preset)
        launch = [sys.executable, "-m", "sidl.realtime.live.cli", "--preset", args.preset]
        name = args.preset
    else:
        factory = load_factory(args.model)
        model = factory()
        where, _, attr = args.model.rpartition(":")
        loader = (f"import importlib.util,sys; s=importlib.util.spec_from_file_location('m', {where!r}); "
                  f"sys.path.insert(0, {str(Path(where).resolve().parent)!r}); "
                  f"m=importlib.util.module_from_spec(s); s.loader.exec_module(m)"
                  if where.endswith(".py") else f"import importlib; m=importlib.import_module({where!r})")
        launch = [sys.executable, "-c", f"{loader}; from sidl.realtime.live import cli as live; "
                  f"live.main(sys.argv[1:], load=lambda name: m.{attr}())", "--preset", args.model]
        name = args.model
    codec = model.codec
    print(f"sidl live benchmark: {name} ({codec.name}, default mode {default_mode(codec)}), "
          f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    rows = []
    for mode, secs in compute_per_bar(model, args.bars).items():
        unit = "beats" if "beat" in mode else "bars"
        rows.append((f"compute per {unit[:-1]}, {mode}", _ms(secs, 50), _ms(secs, 99), f"{len(secs)} {unit}"))
    default = default_mode(codec)
    paced = compute_per_bar(model, min(args.bars, 300), (default,), PACED_S)[default]
    rows.append((f"  {default}, a bar every {PACED_S * 1e3:.0f} ms (cold, as live)", _ms(paced, 50), _ms(paced, 99),
                 f"{len(paced)} bars"))
    warm, cold = machine_cold_factor(min(args.bars, 300))
    rows.append((f"  yardstick: a Python loop, paced / back to back", f"{np.median(cold) / np.median(warm):7.1f}x",
                 f"{np.percentile(cold, 99) / np.percentile(warm, 99):7.1f}x", "this machine's wake-up cost"))
    load = (lambda: load_bar_model(args.preset)) if args.preset else factory
    modes = [default] + (["simplify"] if default != "simplify" else [])
    for mode in modes:
        first, second = first_bars(load, mode)
        rows.append((f"  {mode}: first live bar, then again", _ms(first, 50), _ms(second, 50),
                     f"{len(first)} starts; median ratio {np.median(first / second):.2f}x (both columns p50)"))
    for what, secs in graph_per_bar(model, args.bars).items():
        rows.append((f"  onnxruntime {what}, k = {model.k}", _ms(secs, 50), _ms(secs, 99), f"{len(secs)} bars"))
    if not jack_running():
        print("onset error and startup need a JACK server: jackd -d dummy -r 48000 -p 64 & "
              "(or .ci/setup-jack.sh); measuring compute only")
    else:
        os.environ.setdefault("MIDO_BACKEND", "mido.backends.rtmidi/UNIX_JACK")
        period_ms = 2e3 * transport_latency_s("UNIX_JACK")
        print(f"JACK period {period_ms:.2f} ms; onset runs: {args.jack_bars} bars at 240 BPM, "
              f"generate, density 4, quantized")
        for sync in (False, True):
            err, q = onset_error(model, n_bars=args.jack_bars, sync=sync)
            err = np.abs(err)
            if not sync:
                rows.append(("onset error |t - grid|, internal clock", _ms(err, 50), _ms(err, 99),
                             f"{len(err)} notes"))
                continue
            # The first downbeat after Start waits for the DAW's first tick: reported apart.
            rows.append(("onset error, MIDI clock in (--sync)", _ms(err[q >= 1], 50), _ms(err[q >= 1], 99),
                         f"{int((q >= 1).sum())} notes after the first beat"))
            rows.append(("  the first beat after Start", _ms(err[q < 1], 50), _ms(err[q < 1], 99),
                         f"{int((q < 1).sum())} notes"))
        try:
            t_open, t_ready = startup(launch + ["--bpm", "120", "--quantize"])
            rows.append(("start -> ports open (process)", f"{t_open * 1e3:7.1f}", "",
                         "spawn to 'ports open'"))
            rows.append(("start -> first bar ready (process)", f"{t_ready * 1e3:7.1f}", "",
                         "spawn to 'first bar ready'"))
        except (RuntimeError, PortError) as e:
            print(f"startup not measured: {e}")
    print(f"{'what':44s} {'p50 ms':>8s} {'p99 ms':>8s}  n")
    for what, p50, p99, n in rows:
        print(f"{what:44s} {p50:>8s} {p99:>8s}  {n}")


if __name__ == "__main__":
    main()
