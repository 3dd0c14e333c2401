"""Which meter prior a bar is drawn from in a given meter, and the fallback built by metrical strength.

A preset's main prior is counted in its own meter (4/4 for the shipped presets). A preset may also
carry priors learned from real bars of other meters (``prior.npz``'s ``usage_3_4`` ..., see
``preset.format``). For a meter it has none for, the prior is built from the main one by metrical
strength: each code position of the new bar takes the main meter's position of the same rank

    downbeat -> downbeat, a strong beat (a beat group's first) -> the 4/4's beat 3,
    the last position of the bar -> the 4/4's beat 4, other weak beats -> the 4/4's beat 2

and, where the new position's steps accent differently than that 4/4 position's (compound meters:
the 4th eighth of 6/8 sits in the middle of a one-beat atom), atoms whose hits fall on the new
accents are weighted up (``TILT``). Beats are grouped in twos and threes (5 = 3 + 2, 7 = 2 + 2 + 3);
6/8 and 12/8 count dotted quarters (eighths in threes); 3/8, 2/4 and the like count their own unit.
Everything here runs once, when a ``Composer`` is made: nothing per bar.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .codec.spec import Codec

DOWNBEAT, GROUP, BEAT, HALF, OTHER = 4, 3, 2, 1, 0     # metrical strength of a grid step
# How strongly the fallback prefers atoms whose hits land on its accents. Measured on drums-gmd in
# 6/8 (python -m sidl.export.meters): at 4 the 4th eighth's kick stayed below the 3rd's; at 16 it
# is the bar's second strongest, for the same overlap with real 6/8 bars (within 0.01)
TILT = 16.0
CHOICES = ("auto", "fallback", "cyclic")
METER_TRANSITION_WEIGHT = 0.5   # a learned transition row's share; the rest is the main meter's row


@dataclass(frozen=True)
class BarPrior:
    """The meter prior a composer draws from, and where it came from (said in status lines)."""

    usage: np.ndarray          # (n_atoms, positions) float32
    transitions: np.ndarray    # (n_atoms, n_atoms) float32
    source: str                # "preset" (its own meter), "learned", "fallback" or "cyclic"
    note: str                  # one line: "meter 7/4: no learned prior, fallback from 4/4 by metrical strength"


def beat_groups(n: int) -> list[int]:
    """Beats per group: 2 -> [2], 3 -> [3], 4 -> [2, 2], 5 -> [3, 2], 6 -> [3, 3], 7 -> [2, 2, 3]."""
    if n <= 3:
        return [n]
    if n == 5:
        return [3, 2]
    if n == 6:
        return [3, 3]
    return [2] * (n // 2 - (n % 2)) + ([3] if n % 2 else [])


def is_compound(codec: Codec) -> bool:
    """6/8, 12/8, 9/16 ...: eighths (the unit) grouped in threes, the beat a dotted note."""
    return codec.beat_unit >= 8 and codec.beats_per_bar % 3 == 0 and codec.beats_per_bar > 3


def step_strength(codec: Codec) -> np.ndarray:
    """(steps_per_bar,) int: DOWNBEAT on step 0, GROUP on other group starts, BEAT on beats,
    HALF on the beat's division (the half beat; a compound beat's eighths), OTHER elsewhere."""
    steps = codec.steps_per_bar
    unit = codec.steps_per_beat * 4 / codec.beat_unit          # grid steps per counted unit
    per_beat, division = (3, 3) if is_compound(codec) else (1, 2)
    n_beats = codec.beats_per_bar // per_beat
    beat = unit * per_beat
    level = np.full(steps, OTHER, np.int64)
    sub = beat / division
    for j in range(n_beats * division):
        s = j * sub
        if s == int(s):
            level[int(s)] = HALF
    for b in range(n_beats):
        level[int(round(b * beat))] = BEAT
    # a compound bar of two beats (6/8) accents both: the 1st and the 4th eighth
    groups = [1] * n_beats if per_beat == 3 and n_beats <= 2 else beat_groups(n_beats)
    start = 0
    for g in groups:
        level[int(round(start * beat))] = GROUP
        start += g
    level[0] = DOWNBEAT
    return level


def position_strength(codec: Codec, stride: int) -> np.ndarray:
    """(positions, stride): each code position's step strengths."""
    return step_strength(codec).reshape(-1, stride)


def atom_accents(model, stride: int) -> np.ndarray | None:
    """(n_atoms, stride): each atom's hits x velocity per step at its typical value, summed over
    voices each divided by how often it hits in the whole dictionary (the sparse voices, kick and
    snare, mark the meter; the hats that hit every step would only blur it).

    None when the model cannot say (no decoder or not a grid codec): then the fallback maps
    positions only."""
    n_atoms = model.usage.shape[0]
    scale = getattr(model, "atom_scale", None)
    scale = np.ones(n_atoms, np.float32) if scale is None else np.asarray(scale, np.float32)
    try:
        y = model.decode_bar(np.arange(n_atoms, dtype=np.int64)[:, None], scale[:, None])
    except Exception:           # a stand-in without a whole-dictionary decode: positions only
        return None
    n = model.codec.n_voices
    if y.shape != (n_atoms * stride, model.codec.channels):
        return None
    hits = (y[:, :n] > 0.5) * np.clip(y[:, n:2 * n], 0.0, 1.0)
    rarity = 1.0 / (hits.mean(0) + 1e-3)
    return (hits * rarity).sum(1).reshape(n_atoms, stride).astype(np.float32)


def fallback_usage(usage: np.ndarray, source: Codec, target: Codec, stride: int,
                   accents: np.ndarray | None) -> np.ndarray:
    """The ``target`` meter's usage (n_atoms, positions) built from ``source``'s by metrical strength."""
    src, dst = position_strength(source, stride), position_strength(target, stride)
    src_top, dst_top = src.max(1), dst.max(1)
    src_last = np.arange(len(src)) == len(src) - 1
    out = np.empty((usage.shape[0], len(dst)), np.float32)
    for p, pattern in enumerate(dst):
        last = p == len(dst) - 1
        # the source position of the same rank: same strongest level, the bar's last one for the last
        cost = np.abs(src_top - dst_top[p]) + 0.5 * (src_last != last)
        q = int(np.argmin(cost))
        column = usage[:, q].astype(np.float64)
        shift = (pattern - src[q]) / DOWNBEAT
        if accents is not None and np.any(shift):
            fit = accents @ shift / (accents.sum(1) + 1e-6)
            tilted = column * np.exp(TILT * fit)
            column = tilted * (column.sum() / max(tilted.sum(), 1e-12))
        out[:, p] = column
    return out


def blend_transitions(learned: np.ndarray, main: np.ndarray, weight: float = METER_TRANSITION_WEIGHT):
    """Rows a meter's bars reached: ``weight`` of their own row, the rest the main meter's; other
    rows the main meter's (a few hundred bars reach a few hundred of the atoms)."""
    seen = learned.sum(1, keepdims=True) > 0
    return np.where(seen, weight * learned + (1 - weight) * main, main).astype(np.float32)


def cyclic_usage(usage: np.ndarray, positions: int) -> np.ndarray:
    """How composers read a prior in another meter before issue 15: position p uses p mod 4."""
    return np.ascontiguousarray(usage[:, np.arange(positions) % usage.shape[1]])


def choose_prior(model, codec: Codec, stride: int, how: str = "auto") -> BarPrior:
    """The prior bars in ``codec``'s meter are drawn from.

    ``how``: "auto" (the preset's own meter, else a learned prior, else the fallback), "fallback"
    (by metrical strength even where a learned one exists) or "cyclic" (the old reading, to compare).
    """
    if how not in CHOICES:
        raise ValueError(f"prior must be one of {', '.join(CHOICES)}, got {how!r}")
    own = model.codec
    positions = codec.steps_per_bar // stride
    meter = codec.meter
    if (codec.beats_per_bar, codec.beat_unit) == (own.beats_per_bar, own.beat_unit):
        return BarPrior(np.ascontiguousarray(model.usage, np.float32), model.transitions, "preset",
                        f"meter {meter}: the preset's own prior")
    if how == "cyclic":
        return BarPrior(cyclic_usage(model.usage, positions), model.transitions, "cyclic",
                        f"meter {meter}: the {own.meter} prior read cyclically")
    learned = (getattr(model, "meter_priors", None) or {}).get(meter)
    if how == "auto" and learned is not None:
        usage, transitions = learned
        return BarPrior(np.ascontiguousarray(usage, np.float32), model.transitions if transitions is None
                        else blend_transitions(transitions, model.transitions), "learned",
                        f"meter {meter}: learned prior" + ("" if transitions is not None
                                                           else f" (transitions of {own.meter})"))
    usage = fallback_usage(model.usage, own, codec, stride, atom_accents(model, stride))
    return BarPrior(usage, model.transitions, "fallback",
                    f"meter {meter}: no learned prior, fallback from {own.meter} by metrical strength")
