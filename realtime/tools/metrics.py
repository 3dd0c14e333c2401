"""Scores of one grid against another, and features of bars, as plain dicts of numbers.

Drums are scored on hits: a (step, class) cell hit in both grids is a true positive. Velocity and
offset errors are averaged over the reference's hits (a missed hit counts its whole velocity and
offset). Piano is scored on onsets: a (step, key) cell with an onset in both grids; velocity error
over the matched onsets. Both are what ``sidl presets eval`` reports, on grids made from files.
"""
from __future__ import annotations

import numpy as np


def _prf(tp: int, fp: int, fn: int) -> dict:
    p = tp / max(1, tp + fp)
    r = tp / max(1, tp + fn)
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / max(1e-12, p + r), 4)}


def _same_length(a: np.ndarray, b: np.ndarray):
    n = max(len(a), len(b))
    pad = lambda g: np.pad(g, ((0, n - len(g)), (0, 0)))
    return pad(a), pad(b)


def hit_counts(reference: np.ndarray, other: np.ndarray, n_voices: int) -> dict:
    """Raw sums behind ``hit_scores``, to add over files: tp, fp, fn, hits, found, and the summed
    velocity and offset errors over the reference's hits and over the matched ones."""
    ref, oth = _same_length(reference, other)
    n = n_voices
    th, ph = ref[:, :n] > 0.5, oth[:, :n] > 0.5
    both = th & ph
    vel = np.abs(oth[:, n:2 * n] - ref[:, n:2 * n]) * 127
    off = np.abs(oth[:, 2 * n:] - ref[:, 2 * n:])
    return {"tp": int(both.sum()), "fp": int((~th & ph).sum()), "fn": int((th & ~ph).sum()),
            "hits": int(th.sum()), "vel_err": float(vel[th].sum()), "off_err": float(off[th].sum()),
            "vel_err_matched": float(vel[both].sum())}


def add_counts(total: dict, counts: dict) -> dict:
    for key, value in counts.items():
        total[key] = total.get(key, 0) + value
    return total


def scores_from_counts(c: dict, feel: bool) -> dict:
    """P/R/F1 with, for drums (``feel``), velocity and offset error over the reference's hits (a
    missed hit counts its whole velocity and offset), for piano velocity error over matched onsets."""
    out = _prf(c["tp"], c["fp"], c["fn"])
    if feel:
        out["velocity_mae"] = round(c["vel_err"] / max(1, c["hits"]), 2)
        out["offset_mae"] = round(c["off_err"] / max(1, c["hits"]), 4)
    else:
        out["velocity_mae"] = round(c["vel_err_matched"] / max(1, c["tp"]), 2)
    return out


def hit_scores(reference: np.ndarray, other: np.ndarray, n_voices: int, feel: bool) -> dict:
    """P/R/F1 of ``other``'s hits (drums) or onsets (piano) against ``reference``'s, with feel errors.

    ``reference``, ``other``: (steps, 3 * n_voices) grids (padded to one length)."""
    return scores_from_counts(hit_counts(reference, other, n_voices), feel)


def onset_patterns(grid: np.ndarray, n_voices: int, steps_per_bar: int) -> np.ndarray:
    """(bars, steps_per_bar, n_voices) bool hits of whole bars (a last partial bar dropped)."""
    bars = len(grid) // steps_per_bar
    return grid[:bars * steps_per_bar, :n_voices].reshape(bars, steps_per_bar, n_voices) > 0.5


def syncopation(hits: np.ndarray, steps_per_beat: int) -> np.ndarray:
    """(bars,) share of a bar's hits that fall off the beat's eighth-note grid (the 'e' and 'a' 16ths)."""
    steps = hits.shape[1]
    weak = (np.arange(steps) % max(1, steps_per_beat // 2)) != 0
    total = hits.sum(axis=(1, 2))
    return np.where(total > 0, hits[:, weak].sum(axis=(1, 2)) / np.maximum(1, total), 0.0)


def bar_features(hits: np.ndarray, steps_per_beat: int, class_names) -> dict:
    """Per-bar features: hits of each class, all hits, syncopation. Each value: (bars,) float."""
    f = {f"density {name}": hits[:, :, c].sum(axis=1).astype(float) for c, name in enumerate(class_names)}
    f["density all"] = hits.sum(axis=(1, 2)).astype(float)
    f["syncopation"] = syncopation(hits, steps_per_beat)
    return f


def _kde(samples: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Gaussian kernel density (Scott's bandwidth) of ``samples`` on ``grid``."""
    s = np.asarray(samples, float)
    sd = s.std()
    bw = max(1.06 * sd * len(s) ** (-1 / 5), 1e-3 * max(1.0, np.abs(s).max(initial=0.0)), 1e-3)
    z = (grid[:, None] - s[None, :]) / bw
    return np.exp(-0.5 * z * z).sum(axis=1) / (len(s) * bw * np.sqrt(2 * np.pi))


def overlapping_area(a: np.ndarray, b: np.ndarray, points: int = 512) -> float:
    """Area shared by the kernel densities of two samples (1: same distribution, 0: disjoint)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if not len(a) or not len(b):
        return 0.0
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    pad = max(hi - lo, 1.0) * 0.25
    grid = np.linspace(lo - pad, hi + pad, points)
    return float(np.trapezoid(np.minimum(_kde(a, grid), _kde(b, grid)), grid))


MAX_DISTANCES = 5000     # distances kept for a density (a fixed-seed draw): enough for a smooth KDE


def pairwise(a: np.ndarray, b: np.ndarray | None = None, limit: int = 400, seed: int = 0) -> np.ndarray:
    """Absolute differences between feature values: within ``a`` (b None) or across a and b (at most
    ``limit`` values of each, drawn with a fixed seed)."""
    rng = np.random.default_rng(seed)
    pick = lambda v: v if len(v) <= limit else rng.choice(v, limit, replace=False)
    a = pick(np.asarray(a, float))
    if b is None:
        d = np.abs(a[:, None] - a[None, :])[np.triu_indices(len(a), 1)]
    else:
        d = np.abs(a[:, None] - pick(np.asarray(b, float))[None, :]).ravel()
    return d if len(d) <= MAX_DISTANCES else rng.choice(d, MAX_DISTANCES, replace=False)


def yang_lerch_oa(real: np.ndarray, generated: np.ndarray) -> float:
    """Yang & Lerch (2020): overlap of the real set's intra-set distances with the real-to-generated
    inter-set distances of one feature (1: generated bars vary from real ones as real ones do)."""
    return overlapping_area(pairwise(real), pairwise(real, generated))
