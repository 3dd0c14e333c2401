"""Pure edits of a bar's sparse code: keep the strongest atoms, swap or mutate them, or stitch a new bar.

A bar's code is what ``encode_bar`` returns: the k winning atoms at each code position,

    idx : (positions, k) int64     atom index (0 .. n_atoms-1); a drum-feel preset's encoder packs
                                   gain and timing levels above it (realtime/codec/drumfeel.py),
                                   (keep and swap carry them with the entry; vary and
                                   stitch draw plain atoms, played at level 0)
    val : (positions, k) float32   activation; 0 means "no atom here"

One code position covers ``stride`` grid steps (a beat for the shipped presets), so ``positions`` is
``steps_per_bar / stride``. Every edit keeps the (positions, k) shape, because the sparse decoder's
input shape is fixed; a dropped atom simply gets value 0. Randomness is always passed in as a
``numpy.random.Generator`` so a seed replays a session exactly.

The meter prior (from the preset) is two arrays:

    usage       : (n_atoms, positions) float   how often each atom starts at each position of the bar
    transitions : (n_atoms, n_atoms)   float   how often atom j follows atom i at the next position
"""
from __future__ import annotations

import math

import numpy as np

_FLOOR = 1e-6   # every atom stays possible, so a sparse prior never leaves nothing to draw


def n_active(val: np.ndarray) -> int:
    """Atoms in use (nonzero values) in a code."""
    return int(np.count_nonzero(val))


def keep_top_atoms(idx: np.ndarray, val: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the ``n`` strongest atoms (largest |value|) of the whole bar; zero the rest."""
    if n < 0:
        raise ValueError("n must be >= 0")
    flat = np.abs(val).ravel()
    out = np.zeros_like(val)
    if n > 0:
        # Stable order: among equal values the earlier position wins, so results are repeatable.
        top = np.argsort(-flat, kind="stable")[:n]
        top = top[flat[top] > 0]
        out.ravel()[top] = val.ravel()[top]
    return idx.copy(), out


def swap_atoms(idx: np.ndarray, val: np.ndarray, rng: np.random.Generator,
               amount: float) -> tuple[np.ndarray, np.ndarray]:
    """Exchange whole code positions: about ``amount * positions / 2`` random pairs swap their atoms."""
    idx, val = idx.copy(), val.copy()
    positions = idx.shape[0]
    n_swaps = int(rng.binomial(positions // 2, np.clip(amount, 0.0, 1.0))) if positions > 1 else 0
    for _ in range(n_swaps):
        a = int(rng.integers(positions))
        b = (a + 1 + int(rng.integers(positions - 1))) % positions    # any other position
        idx[[a, b]] = idx[[b, a]]
        val[[a, b]] = val[[b, a]]
    return idx, val


def prior_cdf(usage: np.ndarray) -> np.ndarray:
    """(positions, n_atoms): each position's running sum of atom usage, what ``vary_atoms`` draws from.

    A composer computes it once per preset; computed per bar it was a fifth of the live compute."""
    return np.ascontiguousarray(np.cumsum(usage + _FLOOR, axis=0).T)


def vary_atoms(idx: np.ndarray, val: np.ndarray, rng: np.random.Generator, amount: float,
               usage: np.ndarray, cdf: np.ndarray | None = None,
               scale: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Replace each atom in use, with probability ``amount``, by one the meter prior likes there.

    The replacement keeps the original's value, so a played bar keeps its dynamics and density;
    with ``scale`` (n_atoms,) it takes its own typical value instead, as ``stitch_bar`` gives one
    (generated bars: then every beat of one atom is one the preset has decoded already).
    ``cdf`` is ``prior_cdf(usage)`` when the caller keeps it.
    """
    idx, val = idx.copy(), val.copy()
    positions, k = idx.shape
    # A bar holds a handful of atoms: plain Python over them costs less than numpy calls would.
    draws = rng.random((positions, k)).ravel().tolist()
    for i, (u, v) in enumerate(zip(draws, val.ravel().tolist())):
        if u < amount and v != 0:
            if cdf is None:
                cdf = prior_cdf(usage)
            row = cdf[(i // k) % len(cdf)]
            a = min(int(np.searchsorted(row, rng.random() * row[-1], side="right")), len(row) - 1)
            idx.flat[i] = a
            if scale is not None:
                val.flat[i] = scale[a]
    return idx, val


def stitch_bar(rng: np.random.Generator, usage: np.ndarray, transitions: np.ndarray, density: float,
               prev: int | None = None, scale: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A new bar drawn from the meter prior: ``density`` atoms per code position on average.

    The first atom at each position is drawn from usage at that position times the transition from
    the previous position's first atom (``prev`` carries it across bar lines); further atoms at the
    same position come from usage alone, without repeats. ``scale`` (n_atoms,) gives each atom its
    typical value (1.0 when absent).
    Returns idx, val of shape (positions, ceil(density)) (at least one column).
    """
    if density < 0:
        raise ValueError("density must be >= 0")
    n_atoms, positions = usage.shape
    if transitions.shape != (n_atoms, n_atoms):
        raise ValueError(f"transitions must be ({n_atoms}, {n_atoms}), got {transitions.shape}")
    k = max(1, math.ceil(density))
    idx = np.zeros((positions, k), np.int64)
    val = np.zeros((positions, k), np.float32)
    whole, frac = int(math.floor(density)), density - math.floor(density)
    for p in range(positions):
        count = min(k, whole + int(rng.random() < frac))
        weights = usage[:, p].astype(np.float64) + _FLOOR
        for j in range(count):
            w = weights * (transitions[prev] + _FLOOR) if (j == 0 and prev is not None) else weights
            a = _draw(rng, w)
            idx[p, j] = a
            val[p, j] = 1.0 if scale is None else scale[a]
            weights = weights.copy()
            weights[a] = 0.0                  # no atom twice at one position
            if j == 0:
                first = a
        if count:
            prev = first
    return idx, val


def last_atom(idx: np.ndarray, val: np.ndarray) -> int | None:
    """The strongest atom of the last position that has one (to continue a bar with stitch_bar)."""
    mags, atoms = np.abs(val).tolist(), idx.tolist()         # a few positions: Python lists
    for p in range(len(mags) - 1, -1, -1):
        m = max(mags[p], default=0.0)
        if m > 0:
            return int(atoms[p][mags[p].index(m)])
    return None


def _draw(rng: np.random.Generator, weights: np.ndarray) -> int:
    total = weights.sum()
    if not total > 0:
        return int(rng.integers(len(weights)))
    # Inverse CDF on one uniform: cheaper than rng.choice(p=...) and needs no normalized copy.
    return int(min(np.searchsorted(np.cumsum(weights), rng.random() * total, side="right"),
                   len(weights) - 1))
