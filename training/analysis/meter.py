"""Beats per bar without a classifier: from onset periodicity, and from the preset's meter prior.

Both pick one of the candidate meters (the classes of the labels), each known by its code
positions per bar (beats of the grid in one bar), for pieces whose step 0 is a bar line.

    autocorrelation_meter   the candidate whose bar lag peaks highest in the onset autocorrelation,
                            measured against the lags a beat either side
    prior_meter             sidl's answer: the candidate under which the piece's one-atom code is
                            most likely under the preset's per-position atom usage (its meter prior)
"""
from __future__ import annotations

import numpy as np

UNIFORM_SHARE = 0.01       # of each position's atom distribution, spread evenly (no atom is impossible)


def onset_envelope(x: np.ndarray, n_voices: int) -> np.ndarray:
    """(steps,) float64: onsets per step."""
    return (x[:, :n_voices] > 0.5).sum(axis=1).astype(np.float64)


def autocorrelation_meter(envelope: np.ndarray, candidates: dict, steps_per_position: int) -> str:
    """candidates {name: positions per bar} -> the name whose bar lag stands out most."""
    e = envelope - envelope.mean()
    n = len(e)

    def r(lag):
        return float(e[:n - lag] @ e[lag:]) / (n - lag) if 0 < lag < n else 0.0
    best, best_score = None, -np.inf
    for name, positions in candidates.items():
        if positions <= 0:
            continue
        lag = positions * steps_per_position
        score = r(lag) - 0.5 * (r(lag - steps_per_position) + r(lag + steps_per_position))
        if score > best_score:
            best, best_score = name, score
    return best


def prior_column(j: int, positions: int, prior_positions: int) -> int:
    """Which column of the preset's prior stands for position ``j`` of a ``positions``-long bar:
    the downbeat is the downbeat, the rest spread over the prior's other positions in order."""
    if j == 0:
        return 0
    return max(1, j * prior_positions // positions)


def prior_log_likelihood(top_atom: np.ndarray, usage: np.ndarray, positions: int) -> float:
    """Mean log P(atom | position in a ``positions``-long bar) of a one-atom code, under ``usage``."""
    u = usage.astype(np.float64)                                        # (n_atoms, prior_positions)
    p = (1 - UNIFORM_SHARE) * u / np.maximum(u.sum(axis=0, keepdims=True), 1e-12) + UNIFORM_SHARE / len(u)
    logp = np.log(p)
    cols = np.array([prior_column(j, positions, usage.shape[1]) for j in range(positions)])
    pos = cols[np.arange(len(top_atom)) % positions]
    return float(logp[top_atom, pos].mean()) if len(top_atom) else 0.0


def prior_meter(top_atom: np.ndarray, usage: np.ndarray, candidates: dict) -> str:
    """candidates {name: positions per bar} -> the name under which the code is most likely."""
    fits = {name: n for name, n in candidates.items() if n > 0}
    return max(fits, key=lambda name: prior_log_likelihood(top_atom, usage, fits[name]))
