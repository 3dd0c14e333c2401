"""The counted-patterns codebook: what a drum dictionary must beat without learning anything.

Count every one-beat hit pattern (9 classes x 4 steps, binary) of a training split, keep the N most
frequent, and code each beat of a test piece by greedy OR-pursuit: add the pattern whose hits,
ORed into what is already chosen, explain the most new true hits minus new wrong hits, while that
gain is positive, up to k patterns. Numpy only, so `sidl presets eval` can print it beside a preset.
"""
from __future__ import annotations

import numpy as np

from sidl.realtime.codec.drums import N_CLASSES
from sidl.realtime.codec.spec import DRUMS

STEPS = DRUMS.steps_per_beat   # one beat of 16ths: the counted patterns are one-beat atoms


def beat_patterns(x: np.ndarray, steps: int = STEPS) -> np.ndarray:
    """(T, >= 9) drum grid -> (T // steps, 9 * steps) bool: each beat's hits, class-major."""
    T = len(x) // steps * steps
    h = x[:T, :N_CLASSES] > 0.5
    return h.reshape(-1, steps, N_CLASSES).transpose(0, 2, 1).reshape(-1, N_CLASSES * steps)


def count_patterns(pieces, n: int, steps: int = STEPS) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` most frequent non-empty beat patterns of ``pieces`` ((T, 27) arrays), most frequent
    first, and how often each occurs: ((m, 9 * steps) bool, (m,) int), m <= n. Ties: the pattern
    read as the smaller binary number first, so the codebook is the same on every machine."""
    beats = np.concatenate([beat_patterns(x, steps) for x in pieces])
    beats = beats[beats.any(1)]
    keys, counts = np.unique(np.packbits(beats, axis=1), axis=0, return_counts=True)
    order = np.lexsort((np.arange(len(keys)), -counts))[:n]   # stable: np.unique sorted the keys
    patterns = np.unpackbits(keys[order], axis=1)[:, : N_CLASSES * steps].astype(bool)
    return patterns, counts[order]


def with_single_hits(patterns: np.ndarray, n: int | None = None) -> np.ndarray:
    """``patterns`` (m, D) unique bool rows, most frequent first -> ``min(n, m + missing)`` rows
    (``n`` default m) holding every single hit (one class at one step): the single hits already
    there keep their place, the single hits missing go at the end, and where the ``n`` rows leave
    no room for them the least frequent other patterns make it.

    With every single hit in it a dictionary can always add the one hit a beat still misses, as
    piano's single-note shape does. Measured on GMD (the 960 atoms of `drums-gmd`, trained 3 epochs,
    all 129 test pieces): its 36 least frequent atoms replaced by the 36 single hits took k = 4 hit
    F1 from 0.9970 to 0.9994, k = 1 from 0.9343 to 0.9335."""
    m, cells = patterns.shape
    n = m if n is None else n
    if n < cells:
        raise ValueError(f"{n} atoms cannot hold the {cells} single hits")
    single = patterns.sum(1) == 1
    other_rank = np.cumsum(~single) - 1
    keep = single | (other_rank < n - cells)
    present = np.zeros(cells, bool)
    present[patterns[single].argmax(1)] = True
    return np.concatenate([patterns[keep], np.eye(cells, dtype=bool)[~present]])


def or_pursuit(beats: np.ndarray, patterns: np.ndarray, k: int) -> np.ndarray:
    """(M, D) bool beats, (N, D) bool codebook -> (M, D) bool union of up to k chosen patterns each.

    Gain of a pattern = true hits it adds minus wrong hits it adds; a beat stops when no pattern
    gains (an empty beat plays nothing). Ties go to the more frequent pattern (lower index)."""
    X = beats.astype(np.float32)
    P = patterns.astype(np.float32)
    U = np.zeros_like(X)
    for _ in range(k):
        new_true = (X * (1 - U)) @ P.T
        new_wrong = ((1 - X) * (1 - U)) @ P.T
        gain = new_true - new_wrong
        j = gain.argmax(1)
        g = gain[np.arange(len(X)), j]
        U = np.where((g > 0)[:, None], np.maximum(U, P[j]), U)
    return U > 0.5


def counted_reconstruction(x: np.ndarray, patterns: np.ndarray, k: int, feel: np.ndarray,
                           steps: int = STEPS) -> np.ndarray:
    """(T, 27) piece -> (T', 27) its counted-codebook reconstruction, T' = whole beats; feel
    channels filled with ``feel`` (27,) on every step (the codec only reads them where a hit plays)."""
    U = or_pursuit(beat_patterns(x, steps), patterns, k)
    T = U.shape[0] * steps
    y = np.tile(feel.astype(np.float32), (T, 1))
    y[:, :N_CLASSES] = U.reshape(-1, N_CLASSES, steps).transpose(0, 2, 1).reshape(T, N_CLASSES)
    return y
