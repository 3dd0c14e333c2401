"""What the file tools do to a part, as pure functions of grids, codes and notes (all timed in steps).

    x, y  : (steps, channels) float32 grids of the preset's codec (hit/onset, velocity, feel blocks)
    notes : NoteArray timed in grid steps

``reconstruct`` and ``simplify`` are the live engine's echo and simplify on a whole file; ``clean``
keeps the notes the dictionary explains and moves them to where their atoms put them; ``humanize``
gives every note the velocity (and, for drums, the microtiming) the atoms decode for it; ``drumify``
chooses, beat by beat, the atoms whose collapsed onset pattern best covers a tap track.
"""
from __future__ import annotations

import numpy as np

from ..codec.convert import encode_steps
from ..codec.drumfeel import code_atom
from ..codec.drums import PITCH_TO_CLASS
from ..codec.notes import NoteArray
from ..codec.pianogrid import LOWEST_KEY, fold_to_keyboard
from ..compose import keep_velocities
from ..edit import keep_top_atoms
from .code import decode, encode

# log typicality below which a note is a stray, by drum_feel (chosen on the validation splits of GMD
# and POP909: 9 drum classes spread their hits over fewer voices than 88 keys do)
CLEAN_THRESHOLD = {True: -11.0, False: -16.0}
REGRID_MARGIN = 0.06        # steps: a note this close to the half step may belong to the other step
REGRID_EVIDENCE = 3.0       # how much better (in spreads of the player's offsets) the other step must fit
REGRID_PRIOR = 0.5          # weight of the typicality difference between the two steps
DRUMIFY_PRIOR_WEIGHT = 0.3  # weight of log meter prior against onset matches


def reconstruct(preset, x: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y, idx, val): the part through the dictionary with ``k`` winners per position."""
    idx, val = encode(preset, x, k)
    return decode(preset, idx, val), idx, val


def keep_per_group(idx: np.ndarray, val: np.ndarray, group: np.ndarray, keep: int):
    """``keep_top_atoms`` applied to each group of positions (bars or beats) on its own."""
    out = np.zeros_like(val)
    for g in np.unique(group):
        rows = group == g
        out[rows] = keep_top_atoms(idx[rows], val[rows], keep)[1]
    return idx, out


def simplify(preset, x: np.ndarray, keep: int, group: np.ndarray, k: int | None = None):
    """(y, idx, kept val): the ``keep`` strongest atoms of each group, played velocities kept where
    the simplified part still hits (as live simplify does)."""
    idx, val = encode(preset, x, k)
    idx, val = keep_per_group(idx, val, group, keep)
    y = decode(preset, idx, val)
    return keep_velocities(y, x, preset.codec.n_voices), idx, val


def note_cells(preset, notes: NoteArray) -> tuple[np.ndarray, np.ndarray]:
    """(step, voice) of each note on the codec's grid (voice -1: the codec has no place for it)."""
    step = np.floor(notes.start + 0.5).astype(np.int64)
    if preset.codec.spec.drum_feel:
        voice = PITCH_TO_CLASS[np.clip(notes.pitch, 0, 127)].astype(np.int64)
    else:
        voice = fold_to_keyboard(notes.pitch).astype(np.int64) - LOWEST_KEY
    return step, voice


def voice_typicality(preset) -> np.ndarray:
    """(stride, n_voices): how often each voice hits at each step of a code position across the
    preset's atoms (each decoded alone, weighted by how often the meter prior uses it)."""
    hits = atom_patterns(preset)[:, :, :preset.codec.n_voices] > 0.5          # (n_atoms, stride, voices)
    weight = preset.usage.sum(axis=1).astype(np.float64)
    return (hits * weight[:, None, None]).sum(axis=0) / max(weight.sum(), 1e-12)


def clean(preset, notes: NoteArray, n_steps: int, threshold: float | None = None,
          pull: float = 0.0, typicality: np.ndarray | None = None) -> tuple[NoteArray, dict]:
    """The notes the dictionary and the part itself explain; doubled notes merged.

    A note's score is log(how often the preset's atoms hit its voice at its step of the beat) +
    log(how often the part itself does): a stray hit (a voice where neither the atoms nor this
    player put one) scores below ``threshold`` and is dropped. Two notes of one voice on one step
    keep the louder. Drum hits jittered over the half step go back to their step (``regrid``).
    ``pull`` in 0..1 moves each kept drum hit that far toward the offset its atoms decode on its
    cell (0: timing as played); a drum-feel preset decodes them at the beat's own fitted timing
    level, so the hits of a laid-back beat tighten around its lateness, not onto the grid.
    Velocities and lengths stay as played."""
    n, stride = preset.codec.n_voices, preset.stride
    typ = voice_typicality(preset) if typicality is None else typicality
    threshold = CLEAN_THRESHOLD[preset.codec.spec.drum_feel] if threshold is None else threshold
    step, voice = note_cells(preset, notes)
    ok = (voice >= 0) & (step >= 0) & (step < n_steps)
    v, phase = np.maximum(voice, 0), step % stride
    own = np.zeros((stride, n))
    np.add.at(own, (phase[ok], v[ok]), 1.0)
    own /= max(1, int(ok.sum()))
    score = np.log(typ[phase, v] + 1e-4) + np.log(own[phase, v] + 1e-4)
    keep = ok & (score >= threshold)
    # doubled notes: of two on one (step, voice), the louder stays
    order = np.lexsort((-notes.velocity, v, step))
    dup = np.zeros(len(notes), bool)
    same = (step[order][1:] == step[order][:-1]) & (v[order][1:] == v[order][:-1])
    dup[order[1:][same]] = True
    keep &= ~dup
    start = notes.start.copy()
    if preset.codec.spec.drum_feel:
        step, moved = regrid(notes, step, voice, phase, score, typ, own, stride)
        start[moved] = notes.start[moved]
        start = np.where(moved, np.clip(notes.start - step, -0.5, 0.5 - 1e-6) + step, start)
    if pull and preset.codec.spec.drum_feel and keep.any():
        y = decode(preset, *encode(preset, encode_steps(preset.codec, notes.select(keep), n_steps)))
        s, vv = step[keep], v[keep]
        start[keep] = s + (1 - pull) * (notes.start[keep] - s) + pull * np.clip(y[s, 2 * n + vv], -0.5, 0.5 - 1e-6)
    length = notes.end - notes.start
    out = NoteArray(start, start + length, notes.pitch, notes.velocity).select(keep)
    return out, {"dropped": int(len(notes) - keep.sum()), "doubled": int((dup & ok).sum()),
                 "regridded": int(moved.sum()) if preset.codec.spec.drum_feel else 0}


def regrid(notes: NoteArray, step, voice, phase, score, typ, own, stride):
    """(step, moved): drum hits within ``REGRID_MARGIN`` of the half step go to the neighbouring step
    when their offset there fits this player's feel for the voice (median and spread of the part's
    own offsets) clearly better, typicality of the two places counted too: jitter that pushed a
    hit over the half step is undone, a hit that fits where it is stays."""
    v = np.maximum(voice, 0)
    frac = notes.start - step
    med, spread = np.zeros(typ.shape[1]), np.ones(typ.shape[1])
    for c in np.unique(voice[voice >= 0]):
        o = frac[voice == c]
        if len(o) >= 8:
            med[c] = np.median(o)
            spread[c] = max(0.05, float(np.median(np.abs(o - med[c]))))
    alt = step + np.where(frac >= 0, 1, -1)
    alt_score = np.log(typ[alt % stride, v] + 1e-4) + np.log(own[alt % stride, v] + 1e-4)
    fit_here = np.abs(frac - med[v]) / spread[v]
    fit_there = np.abs(notes.start - alt - med[v]) / spread[v]
    moved = ((voice >= 0) & (np.abs(frac) > 0.5 - REGRID_MARGIN)
             & (fit_there + REGRID_PRIOR * (score - alt_score) + REGRID_EVIDENCE < fit_here))
    return np.where(moved, alt, step), moved


def humanize(preset, notes: NoteArray, n_steps: int, k: int | None = None) -> NoteArray:
    """Every note kept, with the velocity (drums: and offset) the atoms decode on its cell."""
    n = preset.codec.n_voices
    x = encode_steps(preset.codec, notes, n_steps)
    idx, val = encode(preset, x, k)
    if getattr(preset, "feel_codes", False):     # the atoms' own feel, not the levels of a flat take
        idx = code_atom(idx, preset.n_atoms)
    y = decode(preset, idx, val)
    step, voice = note_cells(preset, notes)
    ok = (voice >= 0) & (step >= 0) & (step < n_steps)
    s, v = step[ok], voice[ok]
    vel = notes.velocity.copy()
    decoded = np.rint(y[s, n + v] * 127)
    # a cell the atoms leave silent (velocity < 1) keeps its played velocity
    vel[ok] = np.where(decoded >= 1, np.minimum(decoded, 127), vel[ok]).astype(np.int16)
    start = notes.start.copy()
    if preset.codec.spec.drum_feel:
        start[ok] = s + np.clip(y[s, 2 * n + v], -0.5, 0.5 - 1e-6)
    length = notes.end - notes.start
    return NoteArray(start, start + length, notes.pitch, vel)


def atom_patterns(preset) -> np.ndarray:
    """(n_atoms, stride, channels): each atom decoded alone at its typical amplitude."""
    a = np.arange(preset.n_atoms, dtype=np.int64)[:, None]
    y = decode(preset, a, preset.atom_scale.astype(np.float32)[:, None])
    return y.reshape(preset.n_atoms, preset.stride, preset.codec.channels)


def drumify(preset, taps: np.ndarray, position_prior: np.ndarray, max_atoms: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A drum grid whose hits follow ``taps`` ((steps,) bool, steps a multiple of the stride).

    Greedy pursuit per code position over the atoms' collapsed onset patterns (a step is an onset
    when any voice of the atom hits there): the atom covering most taps with fewest extra or missing
    onsets, plus the meter prior's log usage at that position (``position_prior``: (n_atoms,
    positions) usage read for each position of the file), then a second atom for taps left over."""
    n, stride = preset.codec.n_voices, preset.stride
    collapsed = (atom_patterns(preset)[:, :, :n] > 0.5).any(axis=2)           # (n_atoms, stride)
    sounding = collapsed.any(axis=1)
    prior = np.log(position_prior / np.maximum(position_prior.sum(axis=0, keepdims=True), 1e-12) + 1e-6)
    t = taps.reshape(-1, stride)
    positions = len(t)
    idx = np.zeros((positions, max_atoms), np.int64)
    val = np.zeros((positions, max_atoms), np.float32)
    c = collapsed.astype(np.int64)
    for p in range(positions):
        left = t[p].copy()
        covered = np.zeros(stride, bool)
        for j in range(max_atoms):
            if not left.any():
                break
            match = c @ left.astype(np.int64)
            extra = c @ (~left & ~covered).astype(np.int64)
            score = match - extra - (left.sum() - match) + DRUMIFY_PRIOR_WEIGHT * prior[:, p]
            score[~sounding] = -np.inf
            a = int(np.argmax(score))
            if j and match[a] - extra[a] <= 0:
                break
            idx[p, j], val[p, j] = a, preset.atom_scale[a]
            covered |= collapsed[a]
            left &= ~collapsed[a]
    return decode(preset, idx, val), idx, val
