"""Key finding without learning, and the scores a key estimate is read by.

    krumhansl_key   Krumhansl-Schmuckler: correlate the piece's duration-weighted pitch-class
                    histogram with the Krumhansl-Kessler major and minor profiles at all 12 tonics
    aarden_key      music21's default key finder (Aarden-Essen weights) on the same histogram, when
                    music21 is installed (optional: ``music21_missing()`` says why not)
    key_scores      accuracy, mir_eval.key.weighted_score (1 same key, 0.5 a fifth above, 0.3
                    relative, 0.2 parallel) and a symmetric variant crediting a fifth either way
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
