"""``sidl probe``: what a linear classifier reads from the mean codes, against what plain statistics,
the majority class, chance and (for key and meter) classic label-free methods get, on the same folds.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from . import cv, features, key as keys, meter as meters
from .labels import Labelled, check_label, corpus_pieces, label_pieces, parse_key

CORPUS_FAMILY = {"groove": True, "pop909": False, "asap": False}   # corpus -> drums?
QUICK_PIECES = {"groove": 400, "pop909": 200, "asap": 0}
QUICK_PER_SCORE, FULL_PER_SCORE = 1, 3


@dataclass(frozen=True)
class Encoded:
    """A labelled corpus through one preset: codes and statistics features, row by row."""

    labelled: object           # labels.Labelled, restricted to usable classes
    codes: np.ndarray          # (pieces, features) mean code (per atom, or per atom x position)
    stats: np.ndarray          # (pieces, features) the statistics baseline
    pc_hist: np.ndarray        # (pieces, 12) duration-weighted pitch classes (piano; zeros for drums)
    code_keys: np.ndarray      # (pieces, atoms, 12) the code by shape and pitch class (shapes presets)
    stat_keys: np.ndarray      # (pieces, 2, 12) onset and duration pitch-class histograms (piano)
    envelope: list             # per piece (steps,) onsets per step
    top_atom: list             # per piece (positions,) the one-atom code
    positions: np.ndarray      # (pieces,) the piece's own bar length in code positions
    encode_s: float            # seconds spent in the preset's encoder
    bars: int                  # 4/4 bars encoded in all


def check_corpus(data: str, preset) -> None:
    drums = CORPUS_FAMILY.get(data)
    if drums is not None and drums != preset.codec.spec.drum_feel:
        raise ValueError(f"preset {preset.name!r} ({preset.codec.name}) does not fit {data} "
                         f"({'drums' if drums else 'piano'}): use {'drums-gmd' if drums else 'piano-pop909'}")


def load_labelled(data: str, label: str, preset, labels_csv=None, quick: bool = False,
                  min_groups: int = cv.MIN_GROUPS):
    check_corpus(data, preset)
    check_label(data, label, labels_csv)
    per_score = QUICK_PER_SCORE if quick else FULL_PER_SCORE
    # GMD's few odd meters sit in one or two sessions each: a subset would lose them, so meter uses all
    limit = QUICK_PIECES.get(data, 0) if quick and not (data == "groove" and label == "meter") else 0
    pieces = corpus_pieces(data, preset.codec, per_score=per_score, limit=limit)
    lab = label_pieces(data, pieces, label, labels_csv)
    keep = cv.usable_classes(lab.y, lab.groups, min_groups)
    rows = [i for i, c in enumerate(lab.y) if c in keep]
    small = len(set(lab.y) - keep)
    dropped = "; ".join(filter(None, [lab.dropped, f"{small} classes with fewer than {min_groups} groups" if small else ""]))
    if len(keep) < 2:
        raise ValueError(f"{data} --label {label}: {len(keep)} class(es) with at least {min_groups} groups "
                         f"({len(lab.pieces)} labelled pieces): nothing to tell apart")
    return Labelled(lab.corpus, lab.label, [lab.pieces[i] for i in rows], [lab.y[i] for i in rows],
                     [lab.groups[i] for i in rows], dropped)


# (preset object, piece name) -> what one piece gives; a report probes one corpus many times
_PIECE_ROWS: dict = {}


def piece_rows(preset, p, max_bars: int = features.MAX_BARS) -> tuple:
    """One piece's (mean code, mean code by position, statistics, pitch classes, envelope, top atoms,
    encode seconds, steps, code by pitch class, pitch-class features), computed once per preset,
    piece and length in a process."""
    key = (id(preset), p.name, max_bars)
    if key not in _PIECE_ROWS:
        codec = preset.codec
        x = features.piece_steps(preset, p.x, max_bars)
        t0 = time.perf_counter()
        c = features.encode_piece(preset, x, max_bars=max_bars)
        seconds = time.perf_counter() - t0
        # a shapes preset's code also says where each shape sits on the keyboard: its keys' pitch classes
        profile = features.key_profile(c)
        extra = [] if profile is None else [profile]
        _PIECE_ROWS[key] = (np.concatenate([features.mean_code(c, preset.n_atoms), *extra]),
                            np.concatenate([features.mean_code_by_position(c, preset.n_atoms,
                                                                           preset.usage.shape[1]), *extra]),
                            features.statistics(x, codec),
                            np.zeros(12) if codec.spec.drum_feel else features.pitch_class_histogram(x, codec, "duration"),
                            meters.onset_envelope(x, codec.n_voices), c.top_atom, seconds, len(x),
                            features.code_by_pitch_class(c, preset.n_atoms),
                            np.zeros((2, 12), np.float32) if codec.spec.drum_feel
                            else features.pitch_class_features(x, codec))
    return _PIECE_ROWS[key]


def encode_labelled(lab, preset, by_position: bool, quick: bool = False) -> Encoded:
    """Every piece through the preset's encoder, and its statistics, on the same steps."""
    max_bars = features.QUICK_BARS if quick else features.MAX_BARS
    rows = [piece_rows(preset, p, max_bars) for p in lab.pieces]
    positions = [p.codec.steps_per_bar // preset.stride if p.codec.steps_per_bar % preset.stride == 0 else 0
                 for p in lab.pieces]
    return Encoded(lab, np.stack([r[1] if by_position else r[0] for r in rows]), np.stack([r[2] for r in rows]),
                   np.stack([r[3] for r in rows]), np.stack([r[8] for r in rows]), np.stack([r[9] for r in rows]),
                   [r[4] for r in rows], [r[5] for r in rows], np.array(positions),
                   sum(r[6] for r in rows), sum(r[7] for r in rows) // (4 * preset.codec.steps_per_beat))


def meter_candidates(enc: Encoded) -> dict:
    """{class: code positions per bar}: each meter class's commonest bar length among its pieces."""
    y = np.array(enc.labelled.y)
    out = {}
    for c in sorted(set(y.tolist())):
        vals, counts = np.unique(enc.positions[y == c], return_counts=True)
        out[c] = int(vals[np.argmax(counts)])
    return out


def run_probe(data: str, label: str, preset, labels_csv=None, quick: bool = False, seed: int = 0, log=None) -> dict:
    """The probe's numbers (see the module doc) and the folds, as plain data."""
    t_start = time.perf_counter()
    lab = load_labelled(data, label, preset, labels_csv, quick)
    by_position = preset.codec.spec.drum_feel or label == "meter"
    enc = encode_labelled(lab, preset, by_position, quick)
    if log:
        log(f"{len(lab.pieces)} pieces, {len(set(lab.groups))} groups, {len(set(lab.y))} classes; "
            f"encoded {enc.bars} bars in {enc.encode_s:.1f} s")
    y, groups = np.array(lab.y), np.array(lab.groups)
    classes = sorted(set(lab.y))
    folds = cv.grouped_folds(y, groups, seed=seed)
    notes = []
    predictions = {"codes": cv.cross_val_predict(enc.codes, y, folds, seed),
                   "majority": cv.majority_predict(y, folds),
                   "statistics": cv.cross_val_predict(enc.stats, y, folds, seed)}
    if label != "key":       # (key has its own reader, below) the other linear reader, on the same folds
        predictions["codes_lda"] = cv.cross_val_predict(enc.codes, y, folds, seed, "lda")
        predictions["statistics_lda"] = cv.cross_val_predict(enc.stats, y, folds, seed, "lda")
        notes.append("*_lda: square-root features, shrinkage LDA (cv.linear_classifier); the first rows: "
                     "standardised logistic regression")
    n_features = {"codes": int(enc.codes.shape[1]), "statistics": int(enc.stats.shape[1])}
    if label == "key" and not preset.codec.spec.drum_feel and all(parse_key(c) for c in classes):
        # Keys are one profile at twelve tonics: the codes' answer and the statistics' are each a
        # key-relative profile learned on the training folds (KeyRelative); the per-class linear
        # classifier on the same features stays as a baseline.
        modes = 1 + any(parse_key(c)[1] for c in classes)
        if getattr(preset, "shapes", False):          # (other codes do not say where a shape sits)
            predictions["codes_linear"] = predictions["codes"]
            predictions["codes"] = keys.cross_val_key(enc.code_keys, y, groups, folds, modes)
            n_features["codes"] = int(np.prod(enc.code_keys.shape[1:]))
        predictions["statistics_linear"] = predictions["statistics"]
        predictions["statistics"] = keys.cross_val_key(enc.stat_keys, y, groups, folds, modes)
        n_features["statistics"] = int(np.prod(enc.stat_keys.shape[1:]))
        who = "codes and statistics" if "codes_linear" in predictions else "statistics (these codes do not say where a shape sits)"
        notes.append(f"{who}: a key profile learned on the training folds, one weight vector per "
                     "mode over the features seen from each candidate tonic (key.KeyRelative); *_linear: a "
                     "per-class linear classifier on the same rows as other labels use")
    if label == "key" and not preset.codec.spec.drum_feel:
        as_label = keys.relative_major if data == "asap" else (lambda k: k)
        predictions["krumhansl"] = np.array([as_label(keys.krumhansl_key(h)) for h in enc.pc_hist])
        missing = keys.music21_missing()
        if missing:
            notes.append(f"music21 baseline skipped: {missing}")
        else:
            predictions["music21_aarden"] = np.array([as_label(keys.aarden_key(h)) for h in enc.pc_hist])
    if label == "meter":
        cand = meter_candidates(enc)
        steps_per_position = preset.stride
        predictions["autocorrelation"] = np.array([meters.autocorrelation_meter(e, cand, steps_per_position)
                                                   for e in enc.envelope])
        predictions["sidl_prior"] = np.array([meters.prior_meter(t, preset.usage, cand) for t in enc.top_atom])
        notes.append("meter candidates (code positions per bar): " + ", ".join(f"{k}: {v}" for k, v in cand.items()))

    def scored(pred):
        s = cv.scores(y, pred, classes)
        if label == "key" and all(parse_key(c) for c in classes):
            s.update(keys.key_scores(list(y), list(pred)))
        return s
    result = {"label": label, "corpus": data, "preset": preset.name, "pieces": len(y),
              "groups": len(set(lab.groups)), "classes": classes, "folds": len(folds),
              "features": n_features,
              **scored(predictions["codes"]),
              "baselines": {"chance": {**cv.chance_scores(classes)}}}
    if label == "key" and "weighted_score" in result:
        result["baselines"]["chance"].update(weighted_score=None, weighted_score_symmetric=None)
    for name, pred in predictions.items():
        if name != "codes":
            result["baselines"][name] = scored(pred)
    result.update(dropped=lab.dropped, notes=notes, encode_ms_per_bar=1e3 * enc.encode_s / max(enc.bars, 1),
                  seconds=round(time.perf_counter() - t_start, 1), quick=quick)
    return result


def folds_share_groups(folds, groups) -> bool:
    """True if any group sits in a training and a test fold at once (never, for grouped_folds)."""
    g = np.asarray(groups)
    return any(set(g[tr].tolist()) & set(g[te].tolist()) for tr, te in folds)


def summary_lines(r: dict) -> list[str]:
    """The probe as a small table of text lines."""
    key_cols = "weighted_score" in r
    head = f"{'method':<18} {'accuracy':>9} {'balanced':>9}" + (f" {'weighted':>9} {'symmetric':>9}" if key_cols else "")
    lines = [f"{r['corpus']} --label {r['label']}: {r['pieces']} pieces, {r['groups']} groups, "
             f"{len(r['classes'])} classes, {r['folds']}-fold grouped CV, preset {r['preset']}", head]

    def row(name, s):
        extra = ""
        if key_cols:
            w, ws = s.get("weighted_score"), s.get("weighted_score_symmetric")
            extra = f" {w:>9.3f} {ws:>9.3f}" if w is not None else f" {'-':>9} {'-':>9}"
        return f"{name:<18} {s['accuracy']:>9.3f} {s['balanced_accuracy']:>9.3f}{extra}"
    lines.append(row("sidl codes", r))
    lines += [row(n, s) for n, s in r["baselines"].items()]
    lines += [f"note: {n}" for n in r["notes"]]
    if r["dropped"]:
        lines.append(f"left out: {r['dropped']}")
    lines.append(f"{r['seconds']} s ({r['encode_ms_per_bar']:.2f} ms per bar in the encoder)")
    return lines
