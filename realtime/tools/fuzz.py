"""Malformed MIDI files thrown at every file tool: each must end in a valid result or one line.

    sidl tools-fuzz --cases 10000 [--seed S]        (needs hypothesis: pip install hypothesis)

Hypothesis builds Standard MIDI Files from parts and then breaks them: chunk lengths that lie,
truncation anywhere, running status with no status before it, absurd tempos and delta times,
zero, huge and SMPTE divisions, sysex junk, empty tracks, type-2 and unknown formats, garbage after
the last chunk, and plain random bytes. Each case is written to a file and run through reconstruct,
simplify, clean, compress (and decompress of what it wrote, and of a damaged copy), humanize, drumify,
vary, continue and interpolate. A case fails when a tool raises anything but the one-line user errors
(ValueError / OSError, whose message is one line), or takes longer than ``CASE_LIMIT_S``.
"""
from __future__ import annotations

import json
import signal
import tempfile
import time
from pathlib import Path

from .clip import varint

CASE_LIMIT_S = 20.0


def midi_files():
    """A hypothesis strategy of (mostly malformed) MIDI file bytes."""
    from hypothesis import strategies as st

    small = st.integers(0, 127)
    delta = st.one_of(st.integers(0, 480), st.integers(0, 0x0FFFFFFF), st.just(0))
    channel = st.one_of(st.just(9), st.integers(0, 15))
    note = st.builds(lambda d, kind, ch, p, v: varint(d) + bytes((kind | ch, p, v)),
                     delta, st.sampled_from((0x80, 0x90, 0x90, 0x90)), channel,
                     st.one_of(st.sampled_from((36, 38, 42, 46, 49, 51, 60, 64, 67)), small), small)
    running = st.builds(lambda d, a, b: varint(d) + bytes((a, b)), delta, small, small)
    other = st.builds(lambda d, s, a, b: varint(d) + bytes((s, a, b)), delta,
                      st.sampled_from((0xA0, 0xB0, 0xB9, 0xC0, 0xD0, 0xE0, 0xB0)), small, small)
    tempo = st.builds(lambda d, n, body: varint(d) + b"\xff\x51" + bytes((n,)) + body, delta,
                      st.sampled_from((3, 3, 3, 0, 1, 5)),
                      st.one_of(st.binary(min_size=3, max_size=3), st.just(b"\x00\x00\x00"),
                                st.just(b"\x00\x00\x01"), st.just(b"\xff\xff\xff")))
    meter = st.builds(lambda d, n, num, den: varint(d) + b"\xff\x58" + bytes((n, num, den, 24, 8)), delta,
                      st.sampled_from((4, 4, 2, 0, 7)), st.integers(0, 255), st.integers(0, 255))
    sysex = st.builds(lambda d, n, junk, end: varint(d) + b"\xf0" + varint(n) + junk + end, delta,
                      st.integers(0, 300), st.binary(max_size=40), st.sampled_from((b"\xf7", b"")))
    meta = st.builds(lambda d, t, n, body: varint(d) + bytes((0xFF, t)) + varint(n) + body, delta,
                     st.integers(0, 127), st.integers(0, 1000), st.binary(max_size=20))
    junk = st.binary(min_size=1, max_size=8)
    eot = st.just(b"\x00\xff\x2f\x00")
    event = st.one_of(note, note, note, running, other, tempo, meter, sysex, meta, junk, eot)

    sane_tempo = st.builds(lambda d, us: varint(d) + b"\xff\x51\x03" + us.to_bytes(3, "big"), delta,
                           st.integers(1, 0xFFFFFF))
    sane_meter = st.builds(lambda d, num, den: varint(d) + b"\xff\x58\x04" + bytes((num, den, 24, 8)), delta,
                           st.integers(0, 40), st.integers(0, 8))
    sane_event = st.one_of(note, note, note, note, other, sane_tempo, sane_meter)

    @st.composite
    def track(draw, sane: bool):
        body = b"".join(draw(st.lists(sane_event if sane else event, max_size=60)))
        if sane or draw(st.booleans()):
            body += b"\x00\xff\x2f\x00"
        if sane:
            return b"MTrk" + len(body).to_bytes(4, "big") + body
        length = draw(st.one_of(st.just(len(body)), st.just(len(body)), st.integers(0, 0xFFFFFFFF),
                                st.integers(max(0, len(body) - 4), len(body) + 4)))
        return b"MTrk" + length.to_bytes(4, "big") + body

    @st.composite
    def smf(draw):
        sane = draw(st.integers(0, 2)) > 0            # two thirds: well-formed chunks, wild contents
        tracks = draw(st.lists(track(sane), min_size=1 if sane else 0, max_size=4))
        if sane:
            fmt, ntracks, hlen = (0 if len(tracks) == 1 else 1), len(tracks), 6
            division = draw(st.sampled_from((480, 96, 1, 0x7FFF, 0xE728, 384)))
        else:
            fmt = draw(st.one_of(st.sampled_from((0, 1, 1, 2)), st.integers(0, 0xFFFF)))
            ntracks = draw(st.one_of(st.just(len(tracks)), st.integers(0, 0xFFFF)))
            division = draw(st.one_of(st.sampled_from((480, 96, 1, 0, 0x7FFF, 0xE728, 0x8000)), st.integers(0, 0xFFFF)))
            hlen = draw(st.one_of(st.just(6), st.just(6), st.integers(0, 20)))
        data = (b"MThd" + hlen.to_bytes(4, "big") + fmt.to_bytes(2, "big") + ntracks.to_bytes(2, "big")
                + division.to_bytes(2, "big") + b"".join(tracks))
        if not sane and draw(st.integers(0, 4)) == 0:
            data = data[:draw(st.integers(0, len(data)))]
        if not sane and draw(st.integers(0, 6)) == 0:
            data += draw(st.binary(min_size=1, max_size=30))
        return data

    return st.one_of(smf(), smf(), smf(), smf(), st.binary(max_size=200), st.just(b""))


class CaseTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise CaseTimeout()


def tool_calls(job, path: Path, tmp: Path):
    """(name, call) for every tool that reads MIDI, on ``path``."""
    from . import ops

    def compress_roundtrip():
        outputs, _ = ops.op_compress(job, path)
        data = outputs[0][1]
        good, bad = tmp / "case.sidlz", tmp / "bad.sidlz"
        good.write_bytes(data)
        ops.op_decompress(job, good)
        damaged = bytearray(data)
        for i in range(8, len(damaged), 7):
            damaged[i] ^= 0x5A
        bad.write_bytes(bytes(damaged[: max(8, len(damaged) - 3)]))
        try:
            ops.op_decompress(job, bad)
        except ValueError:
            pass

    return [("reconstruct", lambda: ops.op_reconstruct(job, path)),
            ("simplify", lambda: ops.op_simplify(job, path)),
            ("clean", lambda: ops.op_clean(job, path)),
            ("compress+decompress", compress_roundtrip),
            ("humanize", lambda: ops.op_humanize(job, path)),
            ("drumify", lambda: ops.op_drumify(job, path)),
            ("vary", lambda: ops.op_vary(job, path)),
            ("continue", lambda: ops.op_continue(job, path)),
            ("interpolate", lambda: ops.op_interpolate(job, path, path))]


def run_cases(cases: int, seed: int = 0, log=lambda msg: None) -> dict:
    """Fuzz ``cases`` files through every tool; counts and the first failures."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    from .ops import Job

    job = Job(options={"keep": 4, "per": "bar", "pull": 0.5, "n": 1, "variation": 0.5, "seed": 0,
                       "bars": 1, "steps": 1, "curve": False})
    stats = {"cases": 0, "valid_results": 0, "one_line_errors": 0, "failures": 0, "slowest_case_s": 0.0}
    failures: list[dict] = []
    samples: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="sidl-fuzz-"))
    path = tmp / "case.mid"
    old = signal.signal(signal.SIGALRM, _alarm)

    @settings(max_examples=cases, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @hseed(seed)
    @given(midi_files())
    def case(data: bytes):
        stats["cases"] += 1
        path.write_bytes(data)
        t0 = time.perf_counter()
        for name, call in tool_calls(job, path, tmp):
            signal.setitimer(signal.ITIMER_REAL, CASE_LIMIT_S)
            try:
                call()
                stats["valid_results"] += 1
            except (ValueError, OSError) as e:
                if "\n" in str(e).strip():
                    failures.append({"tool": name, "error": "multi-line message", "message": str(e)[:300],
                                     "bytes": data[:200].hex()})
                else:
                    stats["one_line_errors"] += 1
                    kind = str(e).split(": ", 1)[-1][:70]
                    if len(samples) < 12 and kind not in samples:
                        samples.append(kind)
            except CaseTimeout:
                failures.append({"tool": name, "error": f"over {CASE_LIMIT_S} s", "bytes": data[:200].hex()})
            except Exception as e:       # what the fuzzer is for: anything else is a bug
                failures.append({"tool": name, "error": f"{type(e).__name__}: {e}"[:300], "bytes": data[:200].hex()})
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        stats["slowest_case_s"] = max(stats["slowest_case_s"], round(time.perf_counter() - t0, 3))
        if stats["cases"] % 1000 == 0:
            log(f"{stats['cases']} cases, {len(failures)} failures")

    try:
        case()
    finally:
        signal.signal(signal.SIGALRM, old)
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    stats["failures"] = len(failures)
    return stats | {"first_failures": failures[:10], "error_samples": samples}


def main(cases: int = 10_000, seed: int = 0, as_json: bool = False) -> int:
    import sys
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        raise ValueError("tools-fuzz needs hypothesis (pip install hypothesis)") from None
    if cases < 1:
        raise ValueError(f"--cases must be >= 1, got {cases}")
    t0 = time.perf_counter()
    result = run_cases(cases, seed, log=lambda m: print(m, file=sys.stderr))
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if as_json:
        print(json.dumps(result))
    else:
        print(f"{result['cases']} malformed files x 9 tools in {result['seconds']} s: {result['valid_results']} valid "
              f"results, {result['one_line_errors']} one-line errors, {result['failures']} failures "
              f"(slowest case {result['slowest_case_s']} s)")
        for m in result["error_samples"]:
            print(f"  e.g. {m}")
        for f in result["first_failures"]:
            print(f"  FAIL {f['tool']}: {f['error']}  bytes {f['bytes'][:80]}")
    return 1 if result["failures"] else 0
