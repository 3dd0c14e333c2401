"""New material from the live engine's machinery: generate bars, vary a clip, continue it, move between two.

Codes as in ``realtime/edit.py`` (idx, val: (positions, k)); a file's code covers all its positions,
and ``phase`` ((positions,) int) says where in its bar each position sits, so the meter prior is read
at the right place. Randomness comes in as a seed.
"""
from __future__ import annotations

import numpy as np

from ..codec.drumfeel import code_atom

from ..codec.notes import NoteArray
from ..compose import Composer, keep_velocities
from ..controls import Controls
from ..edit import last_atom, prior_cdf, stitch_bar, swap_atoms, vary_atoms
from .code import decode, encode

CLIP_PRIOR_WEIGHT = 4.0      # continue: the clip's own atom statistics against the corpus prior


def generate(preset, bars: int, meter: tuple[int, int], controls: Controls) -> NoteArray:
    """``bars`` bars stitched under the meter prior, bar for bar as sidl-live generates; notes in steps."""
    composer = Composer(preset, meter)
    parts = []
    for bar in range(bars):
        notes = composer.compose(bar, NoteArray.empty(), controls)
        parts.append(notes.scaled(1.0, bar * composer.steps))
    notes = concat(parts)
    start = np.maximum(notes.start, 0.0)                       # an early first hit starts at 0
    return NoteArray(start, np.maximum(notes.end, start + 1e-3), notes.pitch, notes.velocity)


def concat(parts) -> NoteArray:
    if not parts:
        return NoteArray.empty()
    return NoteArray(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("start", "end", "pitch", "velocity")))


def file_usage(preset, phase: np.ndarray) -> np.ndarray:
    """(n_atoms, positions): the meter prior read at each position's place in its bar."""
    return np.ascontiguousarray(preset.usage[:, phase % preset.usage.shape[1]])


def vary(preset, x: np.ndarray, phase: np.ndarray, bar: np.ndarray, variation: float, seed: int,
         k: int | None = None) -> np.ndarray:
    """One variation of a part: atoms replaced (probability ``variation``) by ones the meter prior
    likes at their place, and positions swapped within bars (half as often), played velocities kept
    where both hit. Same length and meter as ``x``."""
    rng = np.random.default_rng(seed)
    idx, val = encode(preset, x, k)
    usage = file_usage(preset, phase)
    for b in np.unique(bar):
        rows = np.nonzero(bar == b)[0]
        idx[rows], val[rows] = swap_atoms(idx[rows], val[rows], rng, variation / 2)
    idx, val = vary_atoms(idx, val, rng, variation, usage, prior_cdf(usage))
    return keep_velocities(decode(preset, idx, val), x, preset.codec.n_voices)


def clip_statistics(preset, idx: np.ndarray, val: np.ndarray, phase: np.ndarray, positions_per_bar: int):
    """The clip's own meter prior: (usage (n_atoms, positions_per_bar), transitions (n_atoms, n_atoms),
    typical value per atom (n_atoms,), atoms per position)."""
    n_atoms = preset.n_atoms
    usage = np.zeros((n_atoms, positions_per_bar))
    idx = preset.entry_atoms(idx)            # a shapes preset's placements are no prior atom (-1)
    used = (val != 0) & (idx >= 0)
    rows, cols = np.nonzero(used)
    np.add.at(usage, (idx[rows, cols], phase[rows] % positions_per_bar), 1.0)
    trans = np.zeros((n_atoms, n_atoms))
    firsts = [int(idx[p][np.argmax(np.abs(val[p]))]) if used[p].any() else -1 for p in range(len(idx))]
    for a, b in zip(firsts, firsts[1:]):
        if a >= 0 and b >= 0:
            trans[a, b] += 1.0
    total = np.zeros(n_atoms)
    np.add.at(total, idx[used], val[used])
    count = np.bincount(idx[used], minlength=n_atoms)
    scale = np.where(count > 0, total / np.maximum(count, 1), preset.atom_scale).astype(np.float32)
    return usage, trans, scale, np.count_nonzero(val) / max(1, len(idx))


def continuation(preset, x: np.ndarray, phase: np.ndarray, bars: int, positions_per_bar: int, seed: int,
                 k: int | None = None) -> np.ndarray:
    """``bars`` new bars after the part: stitched from its last atom under a prior that mixes the
    clip's own atom use and transitions (weight ``CLIP_PRIOR_WEIGHT``) with the preset's."""
    rng = np.random.default_rng(seed)
    idx, val = encode(preset, x, k)
    c_usage, c_trans, scale, density = clip_statistics(preset, idx, val, phase, positions_per_bar)
    norm = lambda a, axis: a / np.maximum(a.sum(axis=axis, keepdims=True), 1e-12)
    usage = norm(file_usage(preset, np.arange(positions_per_bar)), 0) + CLIP_PRIOR_WEIGHT * norm(c_usage, 0)
    trans = norm(preset.transitions.astype(np.float64), 1) + CLIP_PRIOR_WEIGHT * norm(c_trans, 1)
    atoms = preset.entry_atoms(idx)
    prev = last_atom(atoms, np.where(atoms >= 0, val, 0))
    out = []
    for _ in range(bars):
        b_idx, b_val = stitch_bar(rng, usage, trans, float(min(density, 4.0)), prev, scale)
        prev = last_atom(b_idx, b_val) if last_atom(b_idx, b_val) is not None else prev
        out.append(decode(preset, b_idx, b_val))
    return np.concatenate(out)


def interpolation_codes(idx_a, val_a, idx_b, val_b, t: float, atom_of=None) -> tuple[np.ndarray, np.ndarray]:
    """The code a fraction ``t`` (0: A, 1: B) of the way from A's code to B's, position by position.

    Entries are matched by atom (``atom_of(entry)``, default the entry itself; a drum-feel
    preset's entries pack feel levels above the atom): an atom both codes use at a position keeps
    one entry whose value moves linearly from A's to B's, with A's feel levels until halfway and
    B's after. A's other entries leave weakest first (by |value| over the whole clip), B's other
    entries arrive strongest first, each set in proportion to ``t``.
    """
    atom_of = atom_of or (lambda entry: entry)
    positions = len(idx_a)
    shared, only_a, only_b = [], [], []                       # (position, entry, value[, value])
    for p in range(positions):
        a = {int(atom_of(i)): (int(i), float(v)) for i, v in zip(idx_a[p], val_a[p]) if v}
        b = {int(atom_of(i)): (int(i), float(v)) for i, v in zip(idx_b[p], val_b[p]) if v}
        shared += [(p, a[i][0] if t < 0.5 else b[i][0], a[i][1], b[i][1]) for i in a if i in b]
        only_a += [(p, *a[i]) for i in a if i not in b]
        only_b += [(p, *b[i]) for i in b if i not in a]
    only_a.sort(key=lambda e: abs(e[2]))                     # weakest first: they leave first
    only_b.sort(key=lambda e: -abs(e[2]))                    # strongest first: they arrive first
    entries = [(p, i, (1 - t) * va + t * vb) for p, i, va, vb in shared]
    entries += only_a[int(round(t * len(only_a))):]
    entries += only_b[:int(round(t * len(only_b)))]
    width = max(1, int(np.bincount([e[0] for e in entries], minlength=1).max()) if entries else 1)
    idx = np.zeros((positions, width), np.int64)
    val = np.zeros((positions, width), np.float32)
    fill = np.zeros(positions, np.int64)
    for p, i, v in entries:
        idx[p, fill[p]], val[p, fill[p]] = i, v
        fill[p] += 1
    return idx, val


def interpolate(preset, xa: np.ndarray, xb: np.ndarray, steps: int, k: int | None = None) -> list[np.ndarray]:
    """``steps`` grids strictly between two parts of one length (A first)."""
    if len(xa) != len(xb):
        raise ValueError("clips of different lengths")
    ca, cb = encode(preset, xa, k), encode(preset, xb, k)
    # a drum-feel entry is its atom at some feel levels: the two takes' entries pair by atom
    atom_of = (lambda e: code_atom(e, preset.n_atoms)) if getattr(preset, "feel_codes", False) else None
    return [decode(preset, *interpolation_codes(*ca, *cb, (s + 1) / (steps + 1), atom_of)) for s in range(steps)]
