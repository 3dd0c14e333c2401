"""sidl beside other ways of doing its job: the note/hit-list rule, a convolutional sparse coder,
published model sizes, and the live path against a bare numpy decode of the same preset.

All through the Preset API (``load_preset``, ``encode_bar``, ``decode_bar``): the presets on disk
may be re-exported at any time, and what is measured is what plays.
"""
from __future__ import annotations

import time

import numpy as np

# Published sizes, for scale (not measured here): GrooVAE (Gillick et al. 2019) and Magenta's
# Performance RNN checkpoint.
PUBLISHED = {"GrooVAE": {"parameters": 4_000_000, "bytes": None},
             "Performance RNN": {"parameters": None, "bytes": 25_000_000}}
CSC_ITERATIONS = 50       # ADMM iterations of sporco's ConvBPDN per bar
CSC_LAMBDA = 0.1


def keep_loudest(x: np.ndarray, codec, k: int) -> np.ndarray:
    """The hit-list rule: in every beat keep only the k loudest onsets (velocity and feel kept exact)."""
    n, spb = codec.n_voices, codec.steps_per_beat
    T = len(x) // spb * spb
    y = np.zeros_like(x[:T])
    on = x[:T, :n] > 0.5
    vel = np.where(on, x[:T, n:2 * n], -1.0).reshape(T // spb, spb * n)
    order = np.argsort(-vel, axis=1)[:, :k]                              # (beats, k) cells
    beat = np.repeat(np.arange(T // spb), k)
    cell = order.ravel()
    step, voice = beat * spb + cell // n, cell % n
    keep = on[step, voice]
    step, voice = step[keep], voice[keep]
    for block in range(3):
        y[step, block * n + voice] = x[step, block * n + voice]
    if not codec.spec.drum_feel:                                          # a kept note keeps its hold
        held = x[:T, 2 * n:] > 0.5
        kept = np.zeros_like(on)
        kept[step, voice] = True
        t = np.arange(T)[:, None]
        last_onset = np.maximum.accumulate(np.where(on, t, -1), axis=0)          # (T, n) per key
        last_break = np.maximum.accumulate(np.where(~on & ~held, t, -1), axis=0)
        from_kept = kept[np.maximum(last_onset, 0), np.arange(n)[None, :]] & (last_onset >= 0)
        run = from_kept & (last_onset > last_break) & held
        y[:, 2 * n:] = np.where(run, x[:T, 2 * n:], 0)
    return y


def quality_against_sparsity(preset, pieces, ks) -> dict:
    """{method: {k: F1}} on ``pieces``: sidl through its graphs and the hit-list rule; encode ms per bar."""
    from sidl.export.evaluate import evaluate_preset
    from sidl.realtime.codec.pianogrid import decode_piano_grid
    from sidl.training.metrics import GRID_TOLERANCE_STEPS, Counts
    drums = preset.codec.spec.drum_feel
    t0 = time.perf_counter()
    sidl = evaluate_preset(preset, pieces, ks)
    rule = {}
    for k in ks:
        c = Counts()
        for p in pieces:
            x = p.x[: len(p.x) // preset.stride * preset.stride]
            y = keep_loudest(x, preset.codec, k)
            if drums:
                c.add_drums(x[:len(y)], y)
            else:
                c.add_notes(decode_piano_grid(x[:len(y)]), decode_piano_grid(y), GRID_TOLERANCE_STEPS)
        rule[k] = c.report(feel=drums)["f1"]
    return {"sidl": {k: r["f1"] for k, r in sidl.items()}, "hit-list rule": rule,
            "seconds": time.perf_counter() - t0}


def encode_ms_per_bar(preset, pieces, k: int, max_bars: int = 400) -> float:
    """Milliseconds per 4/4 bar in the preset's encoder at ``k``, whole pieces at a time."""
    bar = 4 * preset.codec.steps_per_beat
    spent, bars = 0.0, 0
    for p in pieces:
        x = np.ascontiguousarray(p.x[: len(p.x) // bar * bar], np.float32)
        if not len(x):
            continue
        t0 = time.perf_counter()
        preset.encode_bar(x, k)
        spent += time.perf_counter() - t0
        bars += len(x) // bar
        if bars >= max_bars:
            break
    return 1e3 * spent / max(bars, 1)


def preset_atoms(preset) -> np.ndarray:
    """(n_atoms, stride, channels) float32: each atom decoded alone at unit amplitude."""
    idx = np.arange(preset.n_atoms, dtype=np.int64)[:, None]
    y = preset.run_decoder(idx, np.ones((preset.n_atoms, 1), np.float32))
    return y.reshape(preset.n_atoms, preset.stride, -1)


def csc_ms_per_bar(preset, pieces, n_bars: int = 2) -> tuple[float | None, str]:
    """sporco's ConvBPDN on real bars with a dictionary of the preset's shape (its own atoms).

    Learning a convolutional dictionary with sporco on the training split was not done (it takes
    hours here), so only encode time is compared: ADMM iterations on the same atoms.
    """
    try:
        from sporco.admm import cbpdn
    except ImportError as e:
        return None, f"sporco is not installed ({e})"
    D = preset_atoms(preset).transpose(1, 2, 0).astype(np.float64)          # (length, channels, atoms)
    D /= np.maximum(np.linalg.norm(D.reshape(-1, D.shape[2]), axis=0), 1e-12)
    bar = 4 * preset.codec.steps_per_beat
    x = np.concatenate([p.x[: len(p.x) // bar * bar] for p in pieces])[: n_bars * bar].astype(np.float64)
    opt = cbpdn.ConvBPDN.Options({"Verbose": False, "MaxMainIter": CSC_ITERATIONS, "RelStopTol": 1e-3,
                                  "AuxVarObj": False})
    t0 = time.perf_counter()
    cbpdn.ConvBPDN(D, x, CSC_LAMBDA, opt, dimK=0, dimN=1).solve()
    return 1e3 * (time.perf_counter() - t0) / (len(x) / bar), (
        f"sporco ConvBPDN, {CSC_ITERATIONS} ADMM iterations, lambda {CSC_LAMBDA}, on {len(x) // bar} test bars, "
        f"with the preset's own {preset.n_atoms} atoms (no sporco-learned dictionary: see the text)")


def preset_size(preset) -> dict:
    """Bytes on disk and parameters (ONNX initializers; the atoms are the decoder's)."""
    from sidl.realtime.preset.store import folder_bytes
    out = {"bytes": folder_bytes(preset.path), "parameters": None}
    try:
        import onnx
    except ImportError:
        return out
    total = 0
    for name in ("encoder.onnx", "decoder.onnx"):
        model = onnx.load(str(preset.path / name))
        total += sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    out["parameters"] = total
    return out


def live_against_floor(preset, n_bars: int = 300) -> dict:
    """Per-bar compute of the live engine (its default mode) against a bare numpy sparse decode.

    The floor: gather the k live atoms of every code position of a bar and sum them, amplitude
    weighted, from a table of atoms decoded at unit amplitude (no feel, no MIDI): what any sparse
    decoder must at least do.
    """
    from sidl.realtime.compose import default_mode
    from sidl.realtime.live.bench import compute_per_bar
    mode = default_mode(preset.codec)
    live = compute_per_bar(preset, n_bars, modes=(mode,))[mode]
    D = preset_atoms(preset)
    P, k = preset.codec.steps_per_bar // preset.stride, preset.k
    rng = np.random.default_rng(0)
    idx = rng.integers(0, preset.n_atoms, (P, k))
    val = rng.uniform(0.5, 1.5, (P, k)).astype(np.float32)
    floor = []
    for _ in range(n_bars + 20):
        t0 = time.perf_counter()
        (D[idx] * val[:, :, None, None]).sum(axis=1).reshape(P * preset.stride, -1)
        floor.append(time.perf_counter() - t0)
    floor = np.array(floor[20:])
    return {"mode": mode, "live_p50_ms": 1e3 * float(np.median(live)), "floor_p50_ms": 1e3 * float(np.median(floor)),
            "ratio_p50": float(np.median(live) / np.median(floor))}
