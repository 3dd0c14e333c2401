"""Soak: many short randomized sessions of the real ``sidl-live``, counting stuck notes, crashes and hangs.

``python -m sidl.realtime.live.soak --sessions N [--seed S] [--workers W] [--json PATH] [--keep DIR]``
(``--only I``: session I of the seed alone, to look at a failure; ``--keep``: its recordings.)

Each session runs ``python -m sidl.realtime.live.cli`` (a random preset or bank of presets, mode,
tempo, internal clock, ``--send-clock`` or ``--sync``) on the running JACK server, its output
recorded by a real ``jack_midi_dump -a`` (as ``peers`` records it) and its input fed by a test
sender (a JACK port of our own, timed by our own ``Scheduler``). For a second or three, at random
moments: Start / Stop / Continue / Song Position and clock at a random and jumping tempo, Program
Changes (preset switches), mode CCs, CC storms over the whole CC table (with CC 123 and the
pedal), notes played in (with duplicate note-ons and note-offs without note-ons), and the output
port vanishing (the recorder killed and started again under the same name). Then SIGINT, SIGTERM
or a double Ctrl-C.

Counted per session:

* stuck notes: note-ons without their note-off in what the last recorder got (``peers.stuck_notes``,
  per channel and key), and in what a second recorder (``_witness``, never restarted) got too: a
  jack_midi_dump that misses a cycle loses its events (``recorder lost`` counts those). A recorder
  killed mid-session takes its sounding notes with it (a synth that quits is silent), so only the
  one alive at the end is judged;
* crashes: an exit code other than 0 (after a double Ctrl-C also 130, or death by the second
  SIGINT once Python's exit has restored its default handler), or a Traceback on stderr;
* hangs: not exited within ``EXIT_S`` of the signal (then killed);
* unsilenced (reported, not a failure yet): the first recorder heard a note-on before All Notes Off
  on its channel (sidl-live silences its output at start, for what a SIGKILLed run
  left sounding). Seen in 2-3 of 50 sessions on a loaded 2-core box, always with the 16 CCs counted
  as sent ("16 late sends") yet not recorded: what a JACK port writes just after connecting can
  reach no one.

Sessions run ``--workers`` at a time, each worker a process of its own; most of a session is waiting.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass

import mido
import numpy as np

from ..controls import ALL_NOTES_OFF_CC, CC_TABLE, TEMPO_CC
from ..codec.midifile import SUSTAIN_CC
from .clock import PPQN
from .jackmidi import leave_to_exit, midi_port_names
from .peers import PeerError, _stop, _wait_port, is_note_on, need, read_dump, stuck_notes
from .ports import open_output
from .scheduler import Batch, Scheduler

PRESETS = ("drums-gmd", "piano-pop909")
EXIT_S = 10.0             # a session that has not exited this long after its signal hangs
READY_S = 60.0            # sidl-live's start (imports, preset, warm-up) on a loaded machine
PORT_S = 30.0             # a recorder's port appears within this on a loaded machine
EXIT_GUARD_S = 5.0        # a worker whose JACK client could not close ends this long after its session
SETTLE_S = 0.3            # after sidl-live exits, the recorder still gets its last events
ACTIONS = ("cc-storm", "program", "mode", "notes", "panic", "port-loss", "transport")


@dataclass(frozen=True)
class SessionResult:
    index: int
    args: str                 # sidl-live's options
    actions: str              # what was done to it, in order
    ending: str               # SIGINT, SIGTERM or SIGINT x2
    notes: int                # note-ons recorded (all recorders): the session did play
    stuck: int                # note-ons left without a note-off in both recordings (see ``_witness``)
    recorder_lost: int        # ...in the judged recording only: the recorder missed the note-off
    crashed: bool
    hung: bool
    unsilenced: bool
    seconds: float
    rc: int | None
    why: str                  # a crash's last stderr line, or ""


@dataclass(frozen=True)
class Plan:
    """One session, drawn from its own seed: sidl-live's options and what happens when."""
    args: list[str]
    seconds: float                        # played after the banner, then the signal
    midi: list[tuple[float, mido.Message]]  # (seconds after the banner, message) into sidl-live's input
    port_loss: list[tuple[float, float]]  # (when, how long) the recorder is gone
    actions: list[str]
    ending: str


def plan_session(rng: np.random.Generator) -> Plan:
    bank = [list(b) for b in (PRESETS[:1], PRESETS[1:], PRESETS, PRESETS[::-1])][rng.integers(4)]
    args = [a for p in bank for a in ("--preset", p)]
    sync = rng.random() < 0.4
    bpm = float(rng.uniform(160, 300))      # short bars: something happens in every session
    if sync:
        args.append("--sync")
    else:
        args += ["--bpm", f"{bpm:.1f}"] + (["--send-clock"] if rng.random() < 0.3 else [])
    if rng.random() < 0.5:
        args += ["--mode", str(rng.choice(["generate", "simplify", "echo"]))]
    if rng.random() < 0.3:
        args.append("--quantize")
    if rng.random() < 0.2:
        args += ["--latency", "beat"]
    if rng.random() < 0.3:
        args += ["--density", f"{rng.uniform(0.5, 4):.2f}"]
    seconds = float(rng.uniform(1.5, 3.0))
    midi: list[tuple[float, mido.Message]] = []
    if sync:
        midi += _clock_track(rng, bpm, seconds)
    # A player throughout, on the channel the first preset listens to (simplify and echo answer
    # what is played: without it half the sessions would send nothing to count).
    midi += _player(rng, seconds, 9 if bank[0].startswith("drums") else 0)
    actions, port_loss = [], []
    for _ in range(int(rng.integers(2, 6))):
        action = str(rng.choice(ACTIONS))
        t = float(rng.uniform(0.0, seconds))
        actions.append(action)
        if action == "cc-storm":
            ccs = list(CC_TABLE) + [ALL_NOTES_OFF_CC, SUSTAIN_CC, 1, 7, 10]
            n = int(rng.integers(20, 200))
            for k in range(n):
                channel, control = int(rng.integers(16)), int(rng.choice(ccs))
                # a tempo CC keeps the session's short bars (160-187 BPM)
                value = int(rng.integers(100, 128)) if control == TEMPO_CC else int(rng.integers(128))
                midi.append((t + k * 0.0005, mido.Message("control_change", channel=channel,
                                                          control=control, value=value)))
        elif action == "program":
            midi.append((t, mido.Message("program_change", program=int(rng.integers(3)))))
        elif action == "mode":
            midi.append((t, mido.Message("control_change", control=23, value=int(rng.integers(128)))))
        elif action == "panic":
            midi.append((t, mido.Message("control_change", control=ALL_NOTES_OFF_CC, value=0)))
        elif action == "notes":
            midi += _played_notes(rng, t)
        elif action == "port-loss":
            port_loss.append((t, float(rng.uniform(0.0, 0.6))))
        elif action == "transport":
            msg = rng.choice(["start", "stop", "continue", "songpos"])
            midi.append((t, mido.Message("songpos", pos=int(rng.integers(0, 64)))
                         if msg == "songpos" else mido.Message(str(msg))))
    ending = str(rng.choice(["SIGINT", "SIGTERM", "SIGINT x2"], p=[0.45, 0.45, 0.1]))
    return Plan(args, seconds, sorted(midi, key=lambda m: m[0]), sorted(port_loss), actions, ending)


def _clock_track(rng, bpm: float, seconds: float) -> list[tuple[float, mido.Message]]:
    """Start, then clock to the end at ``bpm``, jumping once to another tempo (40..300) at times."""
    out = [(0.05, mido.Message("start"))]
    jump = float(rng.uniform(0.3, seconds)) if rng.random() < 0.5 else seconds
    other = float(rng.uniform(40, 300))
    t = 0.06
    while t < seconds + 0.2:
        out.append((t, mido.Message("clock")))
        t += 60.0 / (bpm if t < jump else other) / PPQN
    return out


def _player(rng, seconds: float, ch: int) -> list[tuple[float, mido.Message]]:
    """Notes every 40..150 ms for the whole session, each held 20..120 ms."""
    out, t = [], float(rng.uniform(0, 0.1))
    while t < seconds:
        key = int(rng.integers(36, 84))
        out += [(t, mido.Message("note_on", channel=ch, note=key, velocity=int(rng.integers(30, 128)))),
                (t + float(rng.uniform(0.02, 0.12)), mido.Message("note_off", channel=ch, note=key))]
        t += float(rng.uniform(0.04, 0.15))
    return out


def _played_notes(rng, t0: float) -> list[tuple[float, mido.Message]]:
    """A handful of notes over half a second: drums (channel 10) or keys, with a few duplicate
    note-ons and note-offs of keys never struck, as a sloppy controller sends them."""
    ch = int(rng.choice([0, 9]))
    out = []
    for _ in range(int(rng.integers(4, 30))):
        t, key = t0 + float(rng.uniform(0, 0.5)), int(rng.integers(36, 96))
        on = mido.Message("note_on", channel=ch, note=key, velocity=int(rng.integers(1, 128)))
        out.append((t, on))
        if rng.random() < 0.15:
            out.append((t + 0.01, on))
        if rng.random() < 0.9:
            out.append((t + float(rng.uniform(0.02, 0.3)), mido.Message("note_off", channel=ch, note=key)))
    for _ in range(int(rng.integers(0, 4))):
        out.append((t0 + float(rng.uniform(0, 0.5)), mido.Message("note_off", channel=ch,
                                                                   note=int(rng.integers(36, 96)))))
    return out


class _Recorder:
    """``jack_midi_dump -a NAME``, restartable under the same name (the output port vanishing)."""

    def __init__(self, ctl, name: str):
        self.ctl, self.name = ctl, name
        self.files: list = []
        self.proc = None
        self.port = self.start()

    def start(self) -> str:
        before = set(midi_port_names(self.ctl))
        out = tempfile.TemporaryFile("w+")
        self.files.append(out)
        err = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([need("jack_midi_dump"), "-a", self.name], stdout=out, stderr=err)
        try:
            return _wait_port(self.ctl, f"{self.name}:input", before, PORT_S)    # (not another session's)
        except PeerError as e:                 # say what the recorder said (a setup failure's why)
            err.seek(0)
            said = " / ".join(err.read().split("\n")[-3:]).strip(" /")
            rc = self.proc.poll()
            raise PeerError(f"{e} (jack_midi_dump {'running' if rc is None else f'exited {rc}'}"
                            f"{': ' + said[-200:] if said else ''})") from None
        finally:
            err.close()

    def stop(self) -> None:
        _stop(self.proc)

    def recordings(self) -> list[list[tuple[int, list[int]]]]:
        got = []
        for f in self.files:
            f.seek(0)
            got.append(read_dump(f.read()))
        return got

    def close(self) -> None:
        _stop(self.proc, signal.SIGKILL)
        for f in self.files:
            f.close()


def _witness(ctl, rec: _Recorder, name: str) -> _Recorder | None:
    """A second ``jack_midi_dump`` on sidl-live's output port (found by its connection to the first),
    never restarted. jack_midi_dump misses a cycle now and then on a loaded box (``peers`` sees its
    frame count slip), and the events of that cycle with it: a note-off one recording lacks and the
    other has was sent, so a note counts as stuck only if both lack its note-off."""
    try:
        sources = [p.name for p in ctl.get_all_connections(rec.port)]
        if not sources:
            return None
        witness = _Recorder(ctl, name)
    except Exception:                          # (jack.JackError: a port went away meanwhile)
        return None
    try:
        ctl.connect(sources[0], witness.port)
        return witness
    except Exception:                          # (jack.JackError: sidl-live already gone)
        witness.close()
        return None


def _note_ons(events: list[tuple[int, list[int]]]) -> int:
    return sum(is_note_on(d) for _, d in events)


def unsilenced(events: list[tuple[int, list[int]]]) -> bool:
    """Did a note-on come before All Notes Off on its channel?"""
    silenced = set()
    for _, d in events:
        if len(d) == 3 and d[0] & 0xF0 == 0xB0 and d[1] == ALL_NOTES_OFF_CC:
            silenced.add(d[0] & 0x0F)
        elif is_note_on(d) and d[0] & 0x0F not in silenced:
            return True
    return False


def run_session(index: int, seed: int, keep: str | None = None) -> SessionResult:
    """One session (plan ``(seed, index)``); ``keep``: a folder where a failed session's recordings
    (``session-I-K.dump``, jack_midi_dump's text) and stderr are written."""
    import jack
    plan = plan_session(np.random.default_rng([seed, index]))
    tag = f"{os.getpid()}-{index}"
    t_begin = time.perf_counter()
    ctl = jack.Client(f"soak-ctl-{tag}", no_start_server=True)
    rec = sender = sched = live = witness = None
    err = tempfile.TemporaryFile("w+")
    hung = False
    try:
        rec = _Recorder(ctl, f"soak-rec-{tag}")
        sender = open_output(None, f"soak-send-{tag}", "jack")
        sched = Scheduler(sender, latency_s=sender.latency_s).start()
        env = {k: v for k, v in os.environ.items() if k != "MIDO_BACKEND"}
        env["OMP_NUM_THREADS"] = "1"
        live = subprocess.Popen([sys.executable, "-m", "sidl.realtime.live.cli", *plan.args,
                                 "--port", sender.own, "--out", rec.port], stdout=subprocess.DEVNULL,
                                stderr=err, env=env)
        deadline = time.monotonic() + READY_S
        while True:                                    # ready once the banner is out (handlers set)
            err.seek(0)
            if "ports open" in err.read():
                break
            if live.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        t0 = time.perf_counter()
        witness = _witness(ctl, rec, f"soak-wit-{tag}")
        if plan.midi and live.poll() is None:
            sched.submit(Batch.build([t0 + t for t, _ in plan.midi], [np.nan] * len(plan.midi),
                                     [m for _, m in plan.midi]))
        for at, gone_s in plan.port_loss:
            _sleep_until(t0 + at)
            rec.stop()
            time.sleep(gone_s)
            rec.port = rec.start()
        _sleep_until(t0 + plan.seconds)
        if live.poll() is None:
            live.send_signal(signal.SIGTERM if plan.ending == "SIGTERM" else signal.SIGINT)
            if plan.ending == "SIGINT x2":
                time.sleep(0.05)
                if live.poll() is None:
                    live.send_signal(signal.SIGINT)
            try:
                live.wait(timeout=EXIT_S)
            except subprocess.TimeoutExpired:
                hung = True
                live.send_signal(signal.SIGUSR1)           # its threads' stacks, for the report
                time.sleep(0.5)
                live.kill()
                live.wait()
        time.sleep(SETTLE_S)
        rec.stop()
        recordings = rec.recordings()
        witnessed = None
        if witness is not None:
            witness.stop()
            witnessed = witness.recordings()[0]
        err.seek(0)
        text = err.read()
        # A second Ctrl-C: 130 (a KeyboardInterrupt), or killed by it once Python's exit has put
        # the default handler back (after silencing and closing the ports).
        ok_rc = (0, 130, -signal.SIGINT) if plan.ending == "SIGINT x2" else (0,)
        crashed = live.returncode not in ok_rc or "Traceback" in text
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        why = ""
        if crashed or hung:
            tb = [ln for ln in lines if "Error" in ln or "error" in ln]
            why = (tb or lines or ["(no output)"])[-1].strip()
        # A note-off missing from one recording only was sent: its recorder missed a cycle.
        heard = stuck_notes(recordings[-1])
        # (a witness that heard nothing proves nothing: then the first recorder's count stands)
        stuck = heard if not witnessed or not _note_ons(witnessed) else min(heard, stuck_notes(witnessed))
        recorder_lost = heard - stuck
        if keep is not None and (stuck or crashed or hung or unsilenced(recordings[0])):
            os.makedirs(keep, exist_ok=True)
            for k, f in enumerate(rec.files):
                f.seek(0)
                with open(os.path.join(keep, f"session-{index}-{k}.dump"), "w") as g:
                    g.write(f.read())
            if witness is not None:
                witness.files[0].seek(0)
                with open(os.path.join(keep, f"session-{index}-witness.dump"), "w") as g:
                    g.write(witness.files[0].read())
            with open(os.path.join(keep, f"session-{index}.stderr"), "w") as g:
                g.write(text)
        return SessionResult(index, " ".join(plan.args), ",".join(plan.actions), plan.ending,
                             sum(_note_ons(r) for r in recordings), stuck, recorder_lost, crashed, hung, unsilenced(recordings[0]),
                             time.perf_counter() - t_begin, live.returncode, why)
    finally:
        if live is not None and live.poll() is None:
            live.kill()
            live.wait()
        if sched is not None:
            sched.close()
        if sender is not None:
            sender.close()
        if rec is not None:
            rec.close()
        if witness is not None:
            witness.close()
        if sender is not None and sender.close_timed_out:
            # The sender's jack_client_close is stuck (see jackmidi's close) and holds libjack's
            # lock, so closing ctl would block this worker for good, and the server with it (it
            # waits on the stuck client): leave both to this process's exit, which the pool
            # makes right after the session (max_tasks_per_child=1), and where the server drops
            # them. The guard ends the process should libjack's exit block on that lock too.
            leave_to_exit(ctl)
            threading.Timer(EXIT_GUARD_S, os._exit, (0,)).start()
        else:
            ctl.close()
        err.close()


def _sleep_until(t: float) -> None:
    wait = t - time.perf_counter()
    if wait > 0:
        time.sleep(wait)


def soak(sessions: int, seed: int = 0, workers: int = 3, progress=None, keep: str | None = None) -> list[SessionResult]:
    """Run ``sessions`` sessions, ``workers`` at a time; ``progress(result)`` after each."""
    need("jack_midi_dump")
    from .ports import jack_running
    if not jack_running():
        raise PeerError("no JACK server is running (jackd -d dummy -r 48000 -p 64 &, or .ci/setup-jack.sh)")
    # Worker processes, not threads: libjack deadlocked (and wedged the whole JACK server) when one
    # process's threads opened and closed clients at once; one session at a time per process is
    # what every JACK client program does.
    results: list[SessionResult] = []
    # One session per process: a client whose close is stuck is only dropped by the server when its
    # process exits (see run_session).
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               max_tasks_per_child=1)
    try:
        futures = {pool.submit(run_session, i, seed, keep): i for i in range(sessions)}
        for future in as_completed(futures):
            try:
                r = future.result()
            except Exception as e:            # our own recorder or sender failed: no verdict on sidl-live
                r = SessionResult(futures[future], "", "", "", 0, 0, 0, False, False, False, 0.0, None,
                                  f"soak setup failed: {type(e).__name__}: {e}")
            results.append(r)
            if progress is not None:
                progress(r)
    finally:                                  # Ctrl-C: the sessions running finish, no new ones start
        pool.shutdown(wait=True, cancel_futures=True)
    return sorted(results, key=lambda r: r.index)


def summary(results: list[SessionResult], wall_s: float) -> dict:
    return {"sessions": len(results), "notes": sum(r.notes for r in results),
            "recorder_lost": sum(r.recorder_lost for r in results),
            "silent_sessions": sum(r.notes == 0 for r in results), "stuck_notes": sum(r.stuck for r in results),
            "sessions_with_stuck": sum(r.stuck > 0 for r in results),
            "crashes": sum(r.crashed for r in results), "hangs": sum(r.hung for r in results),
            "unsilenced": sum(r.unsilenced for r in results),
            "setup_failed": sum(r.why.startswith("soak setup failed") for r in results), "seconds": round(wall_s, 1),
            "session_s_p50": round(float(np.median([r.seconds for r in results])), 2) if results else None}


def table(s: dict) -> str:
    head = ("sessions", "stuck notes", "crashes", "hangs", "unsilenced", "setup failed", "notes",
            "recorder lost", "seconds")
    row = (s["sessions"], s["stuck_notes"], s["crashes"], s["hangs"], s["unsilenced"], s["setup_failed"],
           s["notes"], s["recorder_lost"], s["seconds"])
    return "  ".join(f"{h:>12}" for h in head) + "\n" + "  ".join(f"{v:>12}" for v in row)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m sidl.realtime.live.soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=50, help="sessions to run (the issue's target: 1000)")
    ap.add_argument("--seed", type=int, default=0, help="session i draws its plan from (seed, i)")
    ap.add_argument("--workers", type=int, default=3, help="sessions run at a time")
    ap.add_argument("--json", metavar="PATH", help="also write the summary and every session as JSON")
    ap.add_argument("--keep", metavar="DIR", help="write each failed session's recordings and stderr here")
    ap.add_argument("--only", type=int, metavar="I", help="run session I of the seed alone (to look at a failure)")
    ap.add_argument("--quiet", action="store_true", help="no line per failed session")
    a = ap.parse_args(argv)

    done = []

    def progress(r: SessionResult) -> None:
        done.append(r)
        if not a.quiet and len(done) % 50 == 0:
            print(f"{len(done)} sessions: stuck {sum(x.stuck for x in done)}, crashed {sum(x.crashed for x in done)}, "
                  f"hung {sum(x.hung for x in done)}, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        if not a.quiet and (r.stuck or r.crashed or r.hung or r.unsilenced or r.why):
            print(f"session {r.index}: stuck {r.stuck} (recorder lost {r.recorder_lost}) crashed {r.crashed} hung {r.hung} "
                  f"unsilenced {r.unsilenced} rc {r.rc} [{r.args}] [{r.actions}] {r.ending} {r.why}",
                  file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    try:
        if a.only is not None:
            results = [run_session(a.only, a.seed, a.keep)]
            progress(results[0])
        else:
            results = soak(a.sessions, a.seed, a.workers, progress, a.keep)
    except PeerError as e:
        print(f"soak: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:                 # stopped early: the table says how many ran
        results = sorted(done, key=lambda r: r.index)
        print(f"soak: interrupted after {len(results)} of {a.sessions} sessions", file=sys.stderr)
    s = summary(results, time.perf_counter() - t0)
    print(table(s))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"summary": s, "sessions": [asdict(r) for r in results]}, f, indent=1)


if __name__ == "__main__":
    main()
