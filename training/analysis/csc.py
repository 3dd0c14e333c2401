"""sidl's drums-gmd beside convolutional sparse coding from SPORCO (issue #12, "Side by side").

    python -m sidl.training.analysis.csc [--atoms N] [--train-bars N] [--test-pieces N] [--json PATH]

A convolutional dictionary is learned with SPORCO (``ConvBPDNDictLearn``) on bars of the GMD
training split: the 9 hit channels of a bar are the channels, atoms are one beat long (the preset's
atom length), started from beats drawn from the training bars. Each test piece is coded by
``ConvBPDN`` (L1, non-negative), then at a budget of k nonzeros per beat the k largest coefficients
of each beat are kept and decoded as the sum of atom placements; a step is a hit where that sum is
above 0.5, the rule sidl's decoder output is read by (``Counts.add_drums``, ``decode_drums``). Hit
F1 / precision / recall come from the same ``Counts`` as ``sidl presets eval drums-gmd``, sidl's on
the same test pieces through ``evaluate_preset``. Encode time: whole pieces, per 4/4 bar.

Only hits are compared (the CSC channels carry no velocity or feel). SPORCO's convolutions are
circular: each piece is coded with one silent beat after it, and coefficients in that beat are
dropped, so nothing wraps from the end of a piece into its start. L1 shrinks amplitudes below
the 0.5 hit threshold, so a second CSC row refits the kept amplitudes by non-negative least squares
(same support): the baseline is not handicapped by its solver's bias.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sidl.realtime.codec.drums import N_CLASSES

KS = (1, 2, 3, 4)
PRESET = "drums-gmd"
HIT_THRESHOLD = 0.5        # as Counts.add_drums and decode_drums read a hit


@dataclass(frozen=True)
class CscSetting:
    """What the CSC baseline is learned and coded with (all of it goes into the JSON)."""
    atoms: int = 960                # the preset's count
    train_bars: int = 300           # non-empty 4/4 training bars, drawn at random (960 atoms: ~3 GB, ~150 s)
    test_pieces: int = 20           # the first N 4/4 pieces of the test split
    learn_iterations: int = 20      # SPORCO dictionary-learning iterations (ADMM, CBPDN + CCMOD)
    code_iterations: int = 100      # ConvBPDN ADMM iterations per test piece
    lmbda: float = 0.2              # L1 weight, coding and learning: the best F1 of 0.02-0.3 on 5 training pieces
    seed: int = 0


def _sporco():
    try:
        import sporco.fft
        from sporco.admm import cbpdn
        from sporco.dictlrn import cbpdndl
    except ImportError as e:
        raise ValueError(f"the CSC baseline needs SPORCO (pip install -e '.[train]'): {e}") from None
    sporco.fft.pyfftw_threads = 1      # the machine is shared: one thread, like torch
    # Every piece has its own length: FFTW_MEASURE would plan anew for each, inside the timing
    sporco.fft.pyfftw_planner_effort = "FFTW_ESTIMATE"
    return cbpdn, cbpdndl


def hit_bars(pieces, steps_per_bar: int) -> np.ndarray:
    """(bars, steps, voices) float64: the hit channels of every non-empty bar of the pieces in the meter."""
    bars = [p.x[: len(p.x) // steps_per_bar * steps_per_bar, :N_CLASSES].reshape(-1, steps_per_bar, N_CLASSES)
            for p in pieces if p.codec.steps_per_bar == steps_per_bar and len(p.x) >= steps_per_bar]
    bars = np.concatenate(bars).astype(np.float64)
    return bars[bars.sum(axis=(1, 2)) > 0]


def _unit_atoms(D: np.ndarray) -> np.ndarray:
    return D / np.maximum(np.linalg.norm(D.reshape(-1, D.shape[-1]), axis=0), 1e-12)


def learn_dictionary(bars: np.ndarray, n_atoms: int, atom_length: int, s: CscSetting) -> np.ndarray:
    """(atom_length, voices, n_atoms) unit-norm atoms learned by SPORCO on ``bars`` (bars, steps, voices).

    Started from beats drawn from the bars (non-silent ones), as sidl starts from frequent beats."""
    _, cbpdndl = _sporco()
    rng = np.random.default_rng(s.seed)
    beats = bars.reshape(-1, atom_length, bars.shape[2])
    beats = beats[beats.sum(axis=(1, 2)) > 0]
    pick = rng.choice(len(beats), n_atoms, replace=n_atoms > len(beats))
    D0 = beats[pick].transpose(1, 2, 0) + 0.01 * rng.standard_normal((atom_length, bars.shape[2], n_atoms))
    S = np.concatenate([bars, np.zeros((len(bars), atom_length, bars.shape[2]))], axis=1).transpose(1, 2, 0)
    opt = cbpdndl.ConvBPDNDictLearn.Options(
        {"Verbose": False, "MaxMainIter": s.learn_iterations,
         "CBPDN": {"rho": 1.0, "AutoRho": {"Enabled": True}, "NonNegCoef": True},
         "CCMOD": {"rho": 1.0, "ZeroMean": False}}, dmethod="cns")
    learn = cbpdndl.ConvBPDNDictLearn(_unit_atoms(D0), S, s.lmbda, opt, dmethod="cns", dimK=1, dimN=1)
    return _unit_atoms(learn.solve().reshape(atom_length, bars.shape[2], n_atoms))


def random_dictionary(n_atoms: int, atom_length: int, voices: int, seed: int = 0) -> np.ndarray:
    """Unit-norm Gaussian atoms of the learned dictionary's shape (what learning must beat)."""
    rng = np.random.default_rng(seed)
    return _unit_atoms(rng.standard_normal((atom_length, voices, n_atoms)))


def encode(D: np.ndarray, hits: np.ndarray, s: CscSetting) -> np.ndarray:
    """(steps, atoms) non-negative coefficients of ``hits`` (steps, voices) by ConvBPDN.

    Coefficient (t, m) places atom m on steps t .. t + length - 1."""
    cbpdn, _ = _sporco()
    L = D.shape[0]
    S = np.concatenate([hits, np.zeros((L, hits.shape[1]))])
    opt = cbpdn.ConvBPDN.Options({"Verbose": False, "MaxMainIter": s.code_iterations, "RelStopTol": 1e-3,
                                  "AuxVarObj": False, "NonNegCoef": True})
    X = cbpdn.ConvBPDN(D, S, s.lmbda, opt, dimK=0, dimN=1).solve()
    return X.reshape(len(S), D.shape[2])[: len(hits)]


def keep_per_beat(X: np.ndarray, k: int, steps_per_beat: int) -> np.ndarray:
    """The k largest coefficients of each beat (all its steps and atoms), the rest zero."""
    T, M = X.shape
    beats = X[: T // steps_per_beat * steps_per_beat].reshape(T // steps_per_beat, steps_per_beat * M)
    top = np.argpartition(-beats, min(k, beats.shape[1] - 1), axis=1)[:, :k]
    kept = np.zeros_like(beats)
    rows = np.arange(len(beats))[:, None]
    kept[rows, top] = beats[rows, top]
    out = np.zeros_like(X)
    out[: len(kept) * steps_per_beat] = kept.reshape(-1, M)
    return out


def decode(D: np.ndarray, X: np.ndarray) -> np.ndarray:
    """(steps, voices): the sum of atom placements, cut at the piece's end (no wrap)."""
    L = D.shape[0]
    y = np.zeros((len(X) + L, D.shape[1]))
    t, m = np.nonzero(X)
    for j in range(L):
        np.add.at(y, t + j, X[t, m][:, None] * D[j, :, m])
    return y[: len(X)]


def refit(D: np.ndarray, X: np.ndarray, hits: np.ndarray) -> np.ndarray:
    """``X`` with its nonzero amplitudes refitted to ``hits`` by non-negative least squares.

    L1 coding shrinks every amplitude toward zero, and a hit is read at 0.5: without the refit the
    baseline would lose hits to the shrinkage, not to its dictionary (the usual debiasing step)."""
    from scipy.optimize import nnls
    t, m = np.nonzero(X)
    if not len(t):
        return X
    L, V = D.shape[:2]
    A = np.zeros((len(X) + L, V, len(t)))
    cols = np.arange(len(t))
    for j in range(L):
        A[t + j, :, cols] = D[j, :, m].reshape(len(t), V)
    A = A[: len(X)].reshape(len(X) * V, len(t))
    amp, _ = nnls(A, hits.reshape(-1), maxiter=50 * len(t))
    out = np.zeros_like(X)
    out[t, m] = amp
    return out


def _drum_grid(hits: np.ndarray) -> np.ndarray:
    """Hit channels into a (steps, 27) grid for ``Counts.add_drums`` (velocity and feel left 0)."""
    y = np.zeros((len(hits), 3 * N_CLASSES), np.float32)
    y[:, :N_CLASSES] = hits
    return y


def csc_reports(D: np.ndarray, pieces, ks, s: CscSetting, steps_per_beat: int) -> tuple[dict, dict]:
    """({variant: {k: hit report}}, {variant: encode seconds per 4/4 bar}) of the CSC coder on
    whole ``pieces``. Variants: "l1" (ConvBPDN, then the k largest per beat) and "refit" (the
    same support, amplitudes refitted; its time includes the ConvBPDN solve)."""
    from sidl.training.metrics import Counts
    counts = {v: {k: Counts() for k in ks} for v in ("l1", "refit")}
    spent = {"l1": 0.0, "refit": 0.0}
    bars = 0
    for p in pieces:
        x = p.x[: len(p.x) // D.shape[0] * D.shape[0]]
        if not len(x):
            continue
        hits = x[:, :N_CLASSES].astype(np.float64)
        t0 = time.perf_counter()
        X = encode(D, hits, s)
        spent["l1"] += time.perf_counter() - t0
        bars += len(x) / (4 * steps_per_beat)
        for k in ks:
            kept = keep_per_beat(X, k, steps_per_beat)
            t0 = time.perf_counter()
            fitted = refit(D, kept, hits)
            spent["refit"] += (time.perf_counter() - t0) / len(ks)     # per k: the mean over budgets
            for v, code in (("l1", kept), ("refit", fitted)):
                y = decode(D, code)
                counts[v][k].add_drums(x, _drum_grid((y > HIT_THRESHOLD).astype(np.float32)))
    spent["refit"] += spent["l1"]
    return ({v: {k: _hit_fields(c.report(feel=False)) for k, c in cs.items()} for v, cs in counts.items()},
            {v: t / max(bars, 1) for v, t in spent.items()})


def _hit_fields(r: dict) -> dict:
    return {f: r[f] for f in ("f1", "precision", "recall")}


def compare(preset, train, test, s: CscSetting, ks=KS) -> dict:
    """Everything the table and the JSON show: CSC learned on ``train`` beside ``preset`` on ``test``."""
    from sidl.export.evaluate import evaluate_preset
    from sidl.training.analysis.sidebyside import encode_ms_per_bar
    codec = preset.codec
    bars = hit_bars(train, codec.steps_per_bar)
    rng = np.random.default_rng(s.seed)
    bars = bars[rng.choice(len(bars), min(s.train_bars, len(bars)), replace=False)]
    t0 = time.perf_counter()
    D = learn_dictionary(bars, s.atoms, preset.stride, s)
    learn_s = time.perf_counter() - t0
    csc, csc_s = csc_reports(D, test, ks, s, codec.steps_per_beat)
    sidl = {k: _hit_fields(r) for k, r in evaluate_preset(preset, test, ks).items()}
    sidl_ms = {k: encode_ms_per_bar(preset, test, k) for k in ks}
    csc_ms = 1e3 * csc_s["l1"]          # the ConvBPDN solve alone: the faster CSC coder
    best = {k: max(csc[v][k]["f1"] for v in csc) for k in ks}
    return {
        "setting": dict(asdict(s), atom_length=preset.stride, train_bars_used=len(bars),
                        preset_atoms=preset.n_atoms, test_bars=int(sum(len(p.x) for p in test) // codec.steps_per_bar),
                        sidl_encoder="numpy pursuit" if preset.pursuit is not None else "encoder.onnx"),
        "learn_seconds": round(learn_s, 1),
        "sidl": {str(k): r for k, r in sidl.items()},
        "csc": {str(k): r for k, r in csc["l1"].items()},
        "csc_refit": {str(k): r for k, r in csc["refit"].items()},
        "encode_ms_per_bar": {"sidl": {str(k): round(v, 4) for k, v in sidl_ms.items()},
                              "csc": round(csc_ms, 3), "csc_refit": round(1e3 * csc_s["refit"], 3)},
        "speedup": {str(k): round(csc_ms / max(v, 1e-9), 1) for k, v in sidl_ms.items()},
        "targets": {"sidl_f1_at_least_csc": all(sidl[k]["f1"] >= best[k] for k in ks),
                    "encode_100x_faster": all(csc_ms >= 100 * v for v in sidl_ms.values())},
    }


def table(r: dict) -> str:
    s = r["setting"]
    ms = r["encode_ms_per_bar"]
    lines = [f"drums-gmd against SPORCO CSC: {s['atoms']} atoms of {s['atom_length']} steps"
             + ("" if s["atoms"] == s["preset_atoms"] else f" (the preset has {s['preset_atoms']})")
             + f", learned on {s['train_bars_used']} training bars ({s['learn_iterations']} iterations, "
             f"{r['learn_seconds']} s); lambda {s['lmbda']}, {s['code_iterations']} ConvBPDN iterations",
             f"test: the first {s['test_pieces']} 4/4 test pieces ({s['test_bars']} bars); hit F1 / P / R "
             f"on the 16th grid; sidl encoder: {s['sidl_encoder']}; CSC refit: same support, NNLS amplitudes",
             f"{'k':>2}  {'sidl':>21}   {'CSC (L1)':>21}   {'CSC refit':>21}   "
             f"{'sidl ms/bar':>11}{'speedup':>9}",
             ]
    cell = lambda c: f"{c['f1']:>7.4f}{c['precision']:>7.3f}{c['recall']:>7.3f}"
    for k in r["sidl"]:
        lines.append(f"{k:>2}  {cell(r['sidl'][k])}   {cell(r['csc'][k])}   {cell(r['csc_refit'][k])}   "
                     f"{ms['sidl'][k]:>11.4f}{r['speedup'][k]:>8.0f}x")
    lines.append(f"CSC encode: {ms['csc']:.2f} ms/bar (ConvBPDN), {ms['csc_refit']:.2f} ms/bar with the refit; "
                 f"speedup: CSC (ConvBPDN) over sidl; whole pieces per call, timings under load")
    t = r["targets"]
    lines.append(f"targets: sidl F1 >= both CSC at every k: {'met' if t['sidl_f1_at_least_csc'] else 'MISSED'}; "
                 f">= 100x faster to encode: {'met' if t['encode_100x_faster'] else 'MISSED'}")
    return "\n".join(lines)


def run(s: CscSetting) -> dict:
    from sidl.realtime.preset import load_preset
    from sidl.training.corpora import load_corpus
    preset = load_preset(PRESET)
    train, _ = load_corpus("groove", preset.codec, "train")
    test, _ = load_corpus("groove", preset.codec, "test")
    test = [p for p in test if p.codec.steps_per_bar == preset.codec.steps_per_bar][: s.test_pieces]
    return compare(preset, train, test, s)


def main(argv=None) -> int:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    d = CscSetting()
    ap = argparse.ArgumentParser(prog="python -m sidl.training.analysis.csc", description=__doc__.splitlines()[0])
    ap.add_argument("--atoms", type=int, default=d.atoms, help=f"CSC atoms (default {d.atoms}, the preset's)")
    ap.add_argument("--train-bars", type=int, default=d.train_bars, help="training bars CSC learns on")
    ap.add_argument("--test-pieces", type=int, default=d.test_pieces, help="first N 4/4 test pieces")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    a = ap.parse_args(argv)
    for name in ("atoms", "train_bars", "test_pieces"):
        if getattr(a, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if a.json is not None and not a.json.parent.is_dir():
        ap.error(f"--json {a.json}: no folder {a.json.parent}")
    try:
        r = run(CscSetting(atoms=a.atoms, train_bars=a.train_bars, test_pieces=a.test_pieces))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table(r))
    if a.json:
        try:
            a.json.write_text(json.dumps(r, indent=2) + "\n")
        except OSError as e:
            print(f"error: --json {a.json}: {e.strerror}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
