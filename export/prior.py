"""The meter prior of a preset: which atoms the corpus uses where in the bar, and what follows what.

The exported pursuit encoder is run over (a seeded subset of) the training corpus with k = 1;
from the codes it gives

    usage       (n_atoms, positions_per_bar)  how often atom a sounds at code position p of a bar
                                              (uses per bar: a column sums to the mean atoms there)
    transitions (n_atoms, n_atoms)            row i: how often atom j is the strongest at the next
                                              code position when i is the strongest here
                                              (row-normalised, zero rows for atoms never strongest)
    scale       (n_atoms,)                    typical value of each atom (signed median |value|)

``prior.npz`` stores them compactly (float16, and only the ``top`` strongest transitions of each
row as index/probability pairs); ``sidl.realtime.preset`` expands them back with numpy alone.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from sidl.realtime.codec.spec import Codec

USED = 1e-6            # |value| above which an atom counts as used
TOP_TRANSITIONS = 16   # stored per row of the transition matrix
CHUNK_ELEMENTS = 1 << 25   # pursuit's (positions, atoms, patch) temporaries per chunk, ~128 MB
PRIOR_WORK = 2.5e9         # positions x atoms x patch x k_max counted over: ~15 s on one core
WINDOW_BARS = 16           # bars taken from each piece, so the prior sees many pieces


@dataclass(frozen=True)
class MeterPrior:
    usage: np.ndarray          # (n_atoms, positions_per_bar) float32
    transitions: np.ndarray    # (n_atoms, n_atoms) float32, rows sum to 1 or 0
    scale: np.ndarray          # (n_atoms,) float32
    positions: int             # code positions the statistics were counted over
    pieces: int                # corpus pieces they came from
    skipped: dict = field(default_factory=dict)   # why the other pieces were not counted: reason -> pieces


def prior_positions(n_atoms: int, patch: int, k_max: int, work: float = PRIOR_WORK) -> int:
    """Code positions to count over: pursuit costs ~ n_atoms * patch * k_max per position."""
    return int(np.clip(work // (n_atoms * patch * k_max), 1_000, 100_000))


def sample_windows(pieces, codec: Codec, max_positions: int, length: int, seed: int = 0,
                   window_bars: int = WINDOW_BARS) -> list[np.ndarray]:
    """Up to ``window_bars`` bars from each piece in the preset's meter, pieces in a seeded order,
    each from a seeded bar line, until ``max_positions`` code positions: (steps, channels) arrays.
    """
    return sample_windows_counted(pieces, codec, max_positions, length, seed, window_bars)[0]


def sample_windows_counted(pieces, codec: Codec, max_positions: int, length: int, seed: int = 0,
                           window_bars: int = WINDOW_BARS) -> tuple[list[np.ndarray], dict]:
    """``sample_windows`` and why each piece left out was left out: {reason: number of pieces}."""
    bar = codec.steps_per_bar
    if bar % length:
        raise ValueError(f"a bar of {bar} steps is not a whole number of {length}-step atoms")
    meter = (codec.beats_per_bar, codec.beat_unit, codec.steps_per_beat)
    rng = np.random.default_rng(seed)
    out, left = [], max_positions * length
    skipped = Counter()
    order = rng.permutation(len(pieces))
    for n, i in enumerate(order):
        c = pieces[i].codec
        if (c.beats_per_bar, c.beat_unit, c.steps_per_beat) != meter:
            skipped[f"in {c.beats_per_bar}/{c.beat_unit}, not the preset's "
                    f"{codec.beats_per_bar}/{codec.beat_unit}"] += 1
            continue
        x = pieces[i].x
        n_bars = len(x) // bar
        take = min(n_bars, window_bars, left // bar)
        if take <= 0:
            skipped["shorter than one bar"] += 1
            continue
        first = int(rng.integers(n_bars - take + 1)) * bar
        out.append(x[first:first + take * bar])
        left -= take * bar
        if left < bar:
            if len(order) - n - 1:
                skipped[f"not needed: {max_positions} code positions were reached first"] = len(order) - n - 1
            break
    if not out:
        raise ValueError(f"no corpus piece in {codec.beats_per_bar}/{codec.beat_unit} to count the prior on")
    return out, dict(skipped)


@torch.no_grad()
def encode_windows(encoder, windows, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Run the torch pursuit encoder over each window, in chunks; (idx, val) each (positions, k)."""
    L = encoder.length
    per_position = encoder.atoms.stored.shape[0] * encoder.atoms.stored[0].numel()
    chunk = max(1, CHUNK_ELEMENTS // per_position) * L
    kt = torch.tensor(k, dtype=torch.long)
    codes = []
    for x in windows:
        parts = [encoder(torch.from_numpy(np.ascontiguousarray(x[s:s + chunk])), kt)
                 for s in range(0, len(x), chunk)]
        idx = torch.cat([p[0] for p in parts], dim=1).T.numpy()
        val = torch.cat([p[1] for p in parts], dim=1).T.numpy()
        codes.append((idx, val))
    return codes


def count_prior(codes, n_atoms: int, positions_per_bar: int) -> MeterPrior:
    """Statistics of codes (idx, val) each (positions, k), every code starting on a bar line."""
    usage = np.zeros((n_atoms, positions_per_bar), np.float64)
    trans = np.zeros((n_atoms, n_atoms), np.float64)
    values = [[] for _ in range(n_atoms)]
    total = 0
    for idx, val in codes:
        P = len(idx)
        used = np.abs(val) > USED
        pos = np.broadcast_to((np.arange(P) % positions_per_bar)[:, None], idx.shape)
        np.add.at(usage, (idx[used], pos[used]), 1.0)
        strongest = idx[np.arange(P), np.abs(val).argmax(1)]
        has = used.any(1)
        pair = has[:-1] & has[1:]
        np.add.at(trans, (strongest[:-1][pair], strongest[1:][pair]), 1.0)
        order = np.argsort(idx[used], kind="stable")
        a, v = idx[used][order], val[used][order]
        for atom, chunk in zip(*_split_by(a, v)):
            values[atom].append(chunk)
        total += P
    usage /= max(1.0, total / positions_per_bar)               # uses per bar
    rows = trans.sum(1, keepdims=True)
    trans = np.divide(trans, rows, out=np.zeros_like(trans), where=rows > 0)
    return MeterPrior(usage.astype(np.float32), trans.astype(np.float32),
                      typical_values(values), total, len(codes))


def _split_by(keys: np.ndarray, values: np.ndarray):
    """Sorted keys -> (unique keys, list of their values)."""
    if len(keys) == 0:
        return [], []
    cut = np.nonzero(np.diff(keys))[0] + 1
    return keys[np.r_[0, cut]], np.split(values, cut)


def typical_values(values) -> np.ndarray:
    """Per atom: median |value| with the sign most of its uses have; unused atoms get the overall median."""
    med = np.full(len(values), np.nan, np.float32)
    for a, chunks in enumerate(values):
        if chunks:
            v = np.concatenate(chunks)
            med[a] = np.median(np.abs(v)) * (1.0 if v.sum() >= 0 else -1.0)
    fallback = np.nanmedian(np.abs(med)) if np.isfinite(med).any() else 1.0
    return np.where(np.isfinite(med), med, fallback).astype(np.float32)


def meter_prior(encoder, codec: Codec, pieces, k: int, max_positions: int | None = None,
                seed: int = 0) -> MeterPrior:
    """Count the meter prior of ``encoder`` (a torch ``PursuitEncoder``) over corpus ``pieces``."""
    if max_positions is None:
        a = encoder.atoms.stored
        max_positions = prior_positions(a.shape[0], a[0].numel(), encoder.k_max)
    windows, skipped = sample_windows_counted(pieces, codec, max_positions, encoder.length, seed)
    codes = encode_windows(encoder, windows, k)
    prior = count_prior(codes, encoder.atoms.stored.shape[0], codec.steps_per_bar // encoder.length)
    return replace(prior, skipped=skipped)


def describe_skipped(skipped: dict) -> str:
    """'13 pieces in 6/8, not the preset's 4/4; 2 shorter than one bar' (empty when none were)."""
    return "; ".join(f"{n} piece{'s' * (n != 1)} {why}" for why, n in skipped.items())


def prior_arrays(prior: MeterPrior, top: int = TOP_TRANSITIONS) -> dict:
    """What prior.npz holds: float16 usage and scale, each transition row's ``top`` entries."""
    n = prior.transitions.shape[0]
    top = min(top, n)
    nxt = np.argsort(-prior.transitions, axis=1, kind="stable")[:, :top]
    p = np.take_along_axis(prior.transitions, nxt, axis=1)
    return {"usage": prior.usage.astype(np.float16), "scale": prior.scale.astype(np.float16),
            "next_atom": nxt.astype(np.uint16 if n <= 1 << 16 else np.int32),
            "next_p": p.astype(np.float16)}
