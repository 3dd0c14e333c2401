"""What a piece is, as numbers: its mean sparse code (through the preset's own encoder), and the
plain statistics a code has to beat.

Codes come from ``preset.encode_bar`` on the whole piece, as ``sidl presets eval`` runs it: idx and
val (positions, k), one code position per atom length (a beat for the shipped presets).

    mean_code              (n_atoms,)              mean amplitude of each atom per code position
    mean_code_by_position  (n_atoms * P,)          the same, apart for each of the P positions of a bar
    code_by_pitch_class    (n_atoms, 12)           a shapes code's |amplitude| per shape and pitch class it sits on
    pitch_class_features   (2, 12)                 onset and duration pitch-class histograms (what key statistics know)
    piano_statistics       (12 + 1 + 12,)          pitch-class histogram, onsets per beat, interval histogram
    drum_statistics        (n_classes * steps_per_bar,)  hits per bar of each class at each step of a 4/4 bar
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sidl.realtime.codec.pianogrid import LOWEST_KEY

MAX_BARS = 256          # a piece's first 256 bars: enough for its statistics, bounded encode time
QUICK_BARS = 32         # ... and for quick runs (the piano shapes encoder takes ~10 ms a bar here)


@dataclass(frozen=True)
class Codes:
    """One piece's code: (positions, k) atom indices and amplitudes, and the one-atom code (positions,)."""

    idx: np.ndarray
    val: np.ndarray
    top_atom: np.ndarray     # (positions,) int64, the k = 1 code (what the meter prior was counted on)
    pitch_class: np.ndarray | None = None   # (positions, k) key of each entry mod 12 (shapes presets)


def piece_steps(preset, x: np.ndarray, max_bars: int = MAX_BARS) -> np.ndarray:
    """The part of a piece the preset encodes: whole code positions, at most ``max_bars`` 4/4 bars."""
    n = min(len(x), max_bars * 4 * preset.codec.steps_per_beat) // preset.stride * preset.stride
    return np.ascontiguousarray(x[:n], np.float32)


def encode_piece(preset, x: np.ndarray, k: int | None = None, max_bars: int = MAX_BARS) -> Codes:
    """Encode a piece (its first ``max_bars``) through the preset's own graph at ``k`` (default k_max).
    ``idx`` holds atoms (``code_atoms``), ``pitch_class`` the key of each entry for shapes presets;
    the one-atom code is each position's strongest entry (one encoder run instead of two)."""
    x = piece_steps(preset, x, max_bars)
    idx, val = preset.encode_bar(x, k or preset.k_max)
    atoms, pitch_class = code_atoms(preset, idx)
    top = atoms[np.arange(len(atoms)), np.argmax(np.abs(val), axis=1)].copy()
    return Codes(atoms, val, top, pitch_class)


def key_profile(c: Codes) -> np.ndarray | None:
    """(12,) float32 |amplitude| per pitch class of the placed shapes' keys (shapes presets), else None."""
    if c.pitch_class is None:
        return None
    out = np.bincount(c.pitch_class.ravel(), weights=np.abs(c.val).ravel(), minlength=12)
    return (out / max(out.sum(), 1e-12)).astype(np.float32)


def code_by_pitch_class(c: Codes, n_atoms: int) -> np.ndarray:
    """(n_atoms, 12) float32, sums to 1: how much of the code each shape carries at each pitch class
    of its lowest key (shapes presets; what ``key.KeyRelative`` reads key from)."""
    out = np.zeros((n_atoms, 12), np.float64)
    if c.pitch_class is not None:
        np.add.at(out, (c.idx.ravel(), c.pitch_class.ravel()), np.abs(c.val).ravel())
    return (out / max(out.sum(), 1e-12)).astype(np.float32)


def code_atoms(preset, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Code entries -> (atom of each entry, its key's pitch class or None).

    Most presets' entries are atom indices. A piano-shapes preset (schema 2) packs shape, step,
    key (t, from A0) and length into one entry, ((a * L + dt) * K + t) + A * L * K * length (see
    ``sidl.training.shape_pursuit``); entries below A stand for a shape at its typical place.
    """
    if getattr(preset, "feel_codes", False):          # a drum-feel entry: its atom at some gain, timing
        return preset.entry_atoms(idx), None
    if not getattr(preset, "shapes", False):
        return idx, None
    atoms = preset.manifest.get("atoms", {})
    A, L, K = preset.n_atoms, int(atoms.get("length", preset.stride)), int(atoms["transpositions"])
    place = idx % (A * L * K)
    packed = idx >= A
    atom = np.where(packed, place // (L * K), idx)
    pitch_class = np.where(packed, (place % K + LOWEST_KEY) % 12, 0)       # key t counts from A0
    return atom, pitch_class


def mean_code(c: Codes, n_atoms: int) -> np.ndarray:
    """(n_atoms,) float32: each atom's summed |amplitude| over the piece, per code position."""
    out = np.zeros(n_atoms, np.float64)
    np.add.at(out, c.idx.ravel(), np.abs(c.val).ravel())
    return (out / max(len(c.idx), 1)).astype(np.float32)


def mean_code_by_position(c: Codes, n_atoms: int, positions_per_bar: int) -> np.ndarray:
    """(n_atoms * positions_per_bar,) float32: mean |amplitude| of each atom at each position of a bar."""
    out = np.zeros((positions_per_bar, n_atoms), np.float64)
    pos = np.repeat(np.arange(len(c.idx)) % positions_per_bar, c.idx.shape[1])
    np.add.at(out, (pos, c.idx.ravel()), np.abs(c.val).ravel())
    bars = max(len(c.idx) / positions_per_bar, 1.0)
    return (out / bars).ravel().astype(np.float32)


def onsets(x: np.ndarray, n_voices: int) -> np.ndarray:
    """(steps, n_voices) bool: the hit / onset block of a grid array."""
    return x[:, :n_voices] > 0.5


def piano_statistics(x: np.ndarray, codec) -> np.ndarray:
    """(25,) float32: pitch-class histogram of onsets (12, sums to 1), onsets per beat (1), and the
    histogram of intervals mod 12 between notes struck on one step (12, sums to 1)."""
    on = onsets(x, codec.n_voices)
    steps, keys = np.nonzero(on)
    pitch = keys + LOWEST_KEY
    pc = np.bincount(pitch % 12, minlength=12).astype(np.float64)
    beats = max(len(x) / codec.steps_per_beat, 1.0)
    both = on.T.astype(np.float64) @ on.astype(np.float64)        # (keys, keys) steps struck together
    i, j = np.triu_indices(codec.n_voices, 1)
    intervals = np.bincount((j - i) % 12, weights=both[i, j], minlength=12)
    return np.concatenate([pc / max(pc.sum(), 1), [len(pitch) / beats],
                           intervals / max(intervals.sum(), 1)]).astype(np.float32)


def drum_statistics(x: np.ndarray, codec) -> np.ndarray:
    """(n_voices * 4 * steps_per_beat,) float32: hits per bar of each class at each step of a 4/4 bar."""
    bar = 4 * codec.steps_per_beat
    on = onsets(x, codec.n_voices).astype(np.float64)
    n = len(on) // bar * bar or len(on)
    folded = np.zeros((bar, codec.n_voices))
    np.add.at(folded, np.arange(n) % bar, on[:n])
    return (folded / max(n / bar, 1.0)).T.ravel().astype(np.float32)


def pitch_class_histogram(x: np.ndarray, codec, weight: str = "onsets") -> np.ndarray:
    """(12,) float64: onsets per pitch class, or ``weight='duration'`` steps sounding (onset or hold)."""
    n = codec.n_voices
    grid = x[:, :n] > 0.5
    if weight == "duration":
        grid = grid | (x[:, 2 * n:3 * n] > 0.5)
    per_key = grid.sum(axis=0).astype(np.float64)
    return np.bincount((np.arange(n) + LOWEST_KEY) % 12, weights=per_key, minlength=12)


def pitch_class_features(x: np.ndarray, codec) -> np.ndarray:
    """(2, 12) float32: onset and duration-weighted pitch-class histograms, each summing to 1."""
    rows = [pitch_class_histogram(x, codec, w) for w in ("onsets", "duration")]
    return np.stack([r / max(r.sum(), 1e-12) for r in rows]).astype(np.float32)


def statistics(x: np.ndarray, codec) -> np.ndarray:
    """The plain-statistics baseline of a codec: drum hits per step of a bar, or piano histograms."""
    return drum_statistics(x, codec) if codec.spec.drum_feel else piano_statistics(x, codec)
