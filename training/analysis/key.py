"""Key finding without learning, and the scores a key estimate is read by.

    krumhansl_key   Krumhansl-Schmuckler: correlate the piece's duration-weighted pitch-class
                    histogram with the Krumhansl-Kessler major and minor profiles at all 12 tonics
    aarden_key      music21's default key finder (Aarden-Essen weights) on the same histogram, when
                    music21 is installed (optional: ``music21_missing()`` says why not)
    key_scores      accuracy, mir_eval.key.weighted_score (1 same key, 0.5 a fifth above, 0.3
                    relative, 0.2 parallel) and a symmetric variant crediting a fifth either way
    KeyRelative     a learned key profile: features per pitch class (a code's shapes by the pitch class
                    they sit on, or a pitch-class histogram) seen from each candidate tonic, scored by
                    one weight vector per mode, softmax over the 24 (or 12) keys
"""
from __future__ import annotations

import numpy as np

from .labels import key_name, parse_key

# Krumhansl & Kessler (1982) probe-tone ratings, tonic first
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def krumhansl_key(pc_hist: np.ndarray) -> str:
    """(12,) pitch-class weights -> the key whose rotated profile correlates best ('C major' if silent)."""
    h = np.asarray(pc_hist, np.float64)
    if not h.any():
        return key_name(0, False)
    best, best_r = (0, False), -np.inf
    for minor, profile in ((False, KK_MAJOR), (True, KK_MINOR)):
        for tonic in range(12):
            r = np.corrcoef(h, np.roll(profile, tonic))[0, 1]
            if r > best_r:
                best, best_r = (tonic, minor), r
    return key_name(*best)


def music21_missing() -> str:
    """'' when music21 imports, else why it cannot be used (the report states it)."""
    try:
        import music21.analysis.discrete  # noqa: F401
    except ImportError as e:
        return f"music21 is not installed ({e})"
    return ""


def aarden_key(pc_hist: np.ndarray) -> str:
    """music21's AardenEssen analysis of a stream whose notes carry exactly this pitch-class weighting.

    music21 weights each pitch class by quarter lengths, so twelve notes of those lengths give the
    same distribution as the piece itself, without building a stream of every note.
    """
    from music21 import analysis, note, stream
    s = stream.Stream()
    for pc, w in enumerate(np.asarray(pc_hist, np.float64)):
        if w > 0:
            n = note.Note(60 + pc)
            n.quarterLength = float(w)
            s.append(n)
    if not s.notes:
        return key_name(0, False)
    k = analysis.discrete.AardenEssen().getSolution(s)
    return key_name(k.tonic.pitchClass, k.mode == "minor")


def relative_major(key: str) -> str:
    """'B minor' -> 'D major'; a major key is itself (ASAP labels are key signatures)."""
    tonic, minor = parse_key(key)
    return key_name(tonic + 3, False) if minor else key_name(tonic, False)


def key_scores(ref: list, est: list) -> dict:
    """Mean mir_eval weighted score, its symmetric variant, over pieces (plus exact-key accuracy)."""
    import mir_eval
    forward = np.array([mir_eval.key.weighted_score(r, e) for r, e in zip(ref, est)])
    backward = np.array([mir_eval.key.weighted_score(e, r) for r, e in zip(ref, est)])
    return {"weighted_score": float(forward.mean()),
            "weighted_score_symmetric": float(np.maximum(forward, backward).mean())}


KEY_C_GRID = (0.001, 0.01, 0.1)     # L2 strengths KeyRelative chooses from on its training pieces
INNER_FOLDS = 3


def key_index(key: str) -> int:
    """'A minor' -> 21: tonic + 12 for minor (the order of ``KeyRelative``'s candidates)."""
    tonic, minor = parse_key(key)
    return tonic + 12 * minor


class KeyRelative:
    """Key as a learned profile over pitch-class features, equivariant under transposition.

    ``f`` (pieces, D, 12): D features at each pitch class (for a shapes code: each shape's summed
    |amplitude| at each pitch class of its lowest key). Candidate key (tonic t, mode m) scores
    w_m . standardised(roll(f, -t)): one weight vector per mode, shared by all twelve tonics, so each
    piece teaches every key (a plain 24-class classifier sees ~1/24 of the pieces per class).
    Softmax over candidates, L2, L-BFGS; C is chosen among ``KEY_C_GRID`` by grouped inner
    cross-validation on the training pieces alone. ``modes`` 1: major keys only (ASAP's signatures).
    """

    def __init__(self, modes: int = 2, c_grid=KEY_C_GRID):
        self.modes, self.c_grid = modes, tuple(c_grid)

    @staticmethod
    def rotations(f: np.ndarray) -> np.ndarray:
        """(pieces, D, 12) -> (pieces, 12, D * 12): row t is the piece seen from tonic t."""
        return np.stack([np.roll(f, -t, axis=2).reshape(len(f), -1) for t in range(12)], 1)

    def _fit_c(self, R: np.ndarray, truth: np.ndarray, C: float):
        from scipy.optimize import minimize
        n, _, D = R.shape
        flat = R.reshape(-1, D)
        mu, sd = flat.mean(0), flat.std(0) + 1e-6
        Z = (R - mu) / sd
        M = self.modes
        rows = np.arange(n)

        def loss(w):
            logits = np.einsum("ntd,md->nmt", Z, w.reshape(M, D)).reshape(n, M * 12)
            logits -= logits.max(1, keepdims=True)
            p = np.exp(logits)
            p /= p.sum(1, keepdims=True)
            value = -np.log(p[rows, truth] + 1e-300).sum() + 0.5 / C * float(w @ w)
            p[rows, truth] -= 1
            grad = np.einsum("nmt,ntd->md", p.reshape(n, M, 12), Z).ravel() + w / C
            return value, grad
        w = minimize(loss, np.zeros(M * D), jac=True, method="L-BFGS-B", options={"maxiter": 500}).x
        return mu, sd, w.reshape(M, D)

    def _scores(self, model, R: np.ndarray) -> np.ndarray:
        mu, sd, W = model
        return np.einsum("ntd,md->nmt", (R - mu) / sd, W).reshape(len(R), -1)

    def fit(self, f: np.ndarray, keys: list, groups: list) -> "KeyRelative":
        R, truth, g = self.rotations(np.asarray(f, np.float64)), np.array([key_index(k) for k in keys]), np.asarray(groups)
        if self.modes == 1 and (truth >= 12).any():
            raise ValueError("KeyRelative(modes=1) is for major keys only")
        self.C = self.c_grid[0] if len(self.c_grid) == 1 else self._choose_c(R, truth, g)
        self.model = self._fit_c(R, truth, self.C)
        return self

    def _choose_c(self, R, truth, groups) -> float:
        from sklearn.model_selection import GroupKFold
        n_groups = len(set(groups.tolist()))
        if n_groups < INNER_FOLDS:
            return self.c_grid[len(self.c_grid) // 2]
        loglik = np.zeros(len(self.c_grid))
        for tr, te in GroupKFold(n_splits=INNER_FOLDS).split(R, truth, groups):
            for i, C in enumerate(self.c_grid):
                s = self._scores(self._fit_c(R[tr], truth[tr], C), R[te])
                s -= s.max(1, keepdims=True)
                loglik[i] += float((s[np.arange(len(te)), truth[te]] - np.log(np.exp(s).sum(1))).sum())
        return self.c_grid[int(np.argmax(loglik))]

    def predict(self, f: np.ndarray) -> np.ndarray:
        best = self._scores(self.model, self.rotations(np.asarray(f, np.float64))).argmax(1)
        return np.array([key_name(b % 12, b >= 12) for b in best])


def cross_val_key(f: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: list, modes: int = 2) -> np.ndarray:
    """Each piece's key predicted by a ``KeyRelative`` that never saw its group (the probe's folds)."""
    pred = np.empty(len(y), dtype=object)
    for tr, te in folds:
        pred[te] = KeyRelative(modes).fit(f[tr], list(y[tr]), list(groups[tr])).predict(f[te])
    return pred.astype(str)
