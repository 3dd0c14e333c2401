"""Piano simplification measured note by note, with the two references of issue #10 beside it.

Rows per k (atoms per beat): onset precision / recall / F1 (pitch exact, same grid step), velocity
error on matched notes, note F1 with offsets (onset on the step, release within one step or 20% of
the note's length) and notes per chosen atom (how many onsets an average kept entry carries).

References, on the same pieces: the k loudest onsets of each beat (a note list, never a wrong
note) and the counted shapes placed at any pitch and step by greedy pursuit (gain = onsets
explained - wrong onsets). Numpy only: ``sidl presets eval`` runs it without torch.
"""
from __future__ import annotations

import numpy as np

from sidl.realtime.codec.notes import NoteArray
from sidl.realtime.codec.pianogrid import LOWEST_KEY, N_KEYS, decode_piano_grid

from .metrics import GRID_TOLERANCE_STEPS, Counts
from .shapes import ShapeDictionary, beat_onsets, counted_dictionary, loudest_notes

OFFSET_SHARE = 0.2           # a release may miss by one step or 20% of the note's length


def add_offsets(c: Counts, true: NoteArray, pred: NoteArray) -> None:
    """Note matching with offsets: same step and pitch, release within max(1, 20% of length) steps."""
    free = {}
    for j in range(len(true)):
        free.setdefault((int(round(true.start[j])), int(true.pitch[j])), []).append(j)
    for i in range(len(pred)):
        js = free.get((int(round(pred.start[i])), int(pred.pitch[i])), [])
        hit = next((j for j in js if abs(pred.end[i] - true.end[j])
                    <= max(1.0, OFFSET_SHARE * (true.end[j] - true.start[j]))), None)
        if hit is None:
            c.fp += 1
        else:
            js.remove(hit)
            c.tp += 1
    c.fn += sum(len(js) for js in free.values())
    c.n_true += len(true)


class PianoScore:
    """Onsets, offsets and notes per entry, accumulated over pieces."""

    def __init__(self):
        self.onsets, self.offsets = Counts(), Counts()
        self.notes = self.entries = 0

    def add(self, true: NoteArray, pred: NoteArray, entries: int) -> None:
        self.onsets.add_notes(true, pred, GRID_TOLERANCE_STEPS)
        add_offsets(self.offsets, true, pred)
        self.notes += len(pred)
        self.entries += entries

    def report(self) -> dict:
        r = self.onsets.report(feel=False)
        return {"f1": r["f1"], "precision": r["precision"], "recall": r["recall"],
                "velocity_error": r["velocity_mae_matched"], "offset_f1": self.offsets.report(False)["f1"],
                "notes_per_atom": round(self.notes / max(1, self.entries), 3), "n_true": r["n_true"]}


def loudest_rows(grids: list[np.ndarray], ks, steps_per_beat: int) -> dict:
    """{k: report} of the k-loudest-onsets rule (true velocities and lengths kept)."""
    scores = {k: PianoScore() for k in ks}
    for x in grids:
        true = decode_piano_grid(x)
        for k in ks:
            kept = loudest_notes(true, k, steps_per_beat)
            scores[k].add(true, kept, len(kept))
    return {k: s.report() for k, s in scores.items()}


PURSUIT_CHUNK = 64           # beats pursued at once: the placement tensors grow with beats x shapes


def placements(on: np.ndarray, d: ShapeDictionary):
    """Every placement of every shape anchored on an onset of each beat.

    ``on``: (beats, steps_per_beat * 88) bool onsets. Returns, each (beats, N, A) with N the most
    onsets a beat has: ``ok`` (the anchor is an onset and the shape fits the beat and the keyboard),
    ``cells`` (beats, N, A, Cmax) flat grid index of each cell (0 where masked), ``cm`` the cell
    mask, ``dt``/``t`` the placement's step and lowest key, ``in_music`` cells landing on onsets.
    """
    L = d.steps_per_beat
    NB = len(on)
    n_on = max(1, int(on.sum(1).max())) if NB else 1
    pos = np.argsort(~on, axis=1, kind="stable")[:, :n_on]                # onsets first, in grid order
    present = np.take_along_axis(on, pos, 1)
    cs, cp = d.cells[..., 0] * d.mask, d.cells[..., 1] * d.mask
    extent = np.where(d.mask, cs, 0).max(1) + 1
    span = np.where(d.mask, cp, 0).max(1) + 1
    s, p = (pos // N_KEYS)[..., None], (pos % N_KEYS)[..., None]
    dt, t = s - cs[:, 0], p - cp[:, 0]                                    # (NB, N, A)
    ok = present[..., None] & (dt >= 0) & (t >= 0) & (dt + extent <= L) & (t + span <= N_KEYS)
    rel = (cs - cs[:, :1]) * N_KEYS + cp - cp[:, :1]                      # (A, Cmax)
    cells = pos[..., None, None] + rel                                    # (NB, N, A, Cmax)
    cm = d.mask[None, None] & ok[..., None]
    cells = np.where(cm, cells, 0)
    rows = np.arange(NB)[:, None, None, None]
    in_music = (on[rows, cells] & cm).sum(-1)
    return ok, cells, cm, dt, t, in_music


def greedy_pursuit(x: np.ndarray, d: ShapeDictionary, k_max: int):
    """Greedy placement of shapes on a piano grid, every beat at once.

    Each pick takes the placement (shape, step, transposition) anchored on an onset of the beat
    with the largest gain = onsets newly explained - cells off the music (ties: fewer wrong, then
    lower onset, then lower shape), and stops when no gain is positive. Returns per beat and slot
    shape, step, lowest key, velocity (mean of the true notes covered) and length in steps (their
    mean), all (beats, k_max), with shape -1 for an empty slot.
    """
    L = d.steps_per_beat
    on = beat_onsets(x, L).reshape(-1, L * N_KEYS)
    NB = len(on)
    vel = x[: NB * L, N_KEYS:2 * N_KEYS].reshape(NB, -1) * 127.0
    length = note_lengths(x[: NB * L]).reshape(NB, -1)     # of the whole piece: notes cross chunks
    parts = [_pursue(on[i:i + PURSUIT_CHUNK], vel[i:i + PURSUIT_CHUNK], length[i:i + PURSUIT_CHUNK], d, k_max)
             for i in range(0, max(NB, 1), PURSUIT_CHUNK)]
    return tuple(np.concatenate(arrays) for arrays in zip(*parts))


def _pursue(on, vel, length, d: ShapeDictionary, k_max: int):
    """greedy_pursuit on a block of beats: onsets, velocities and lengths, each (beats, L * 88)."""
    NB = len(on)
    out_a = np.full((NB, k_max), -1, np.int64)
    out_dt, out_t = np.zeros((NB, k_max), np.int64), np.zeros((NB, k_max), np.int64)
    out_v, out_len = np.zeros((NB, k_max), np.float32), np.zeros((NB, k_max), np.float32)
    if NB == 0:
        return out_a, out_dt, out_t, out_v, out_len
    ok, cells, cm, dt, t, in_music = placements(on, d)
    rows = np.arange(NB)[:, None, None, None]
    wrong = d.mask.sum(1) - in_music
    R = on.copy()
    flat = lambda a: a.reshape(NB, -1)
    for slot in range(k_max):
        expl = (R[rows, cells] & cm).sum(-1)
        gain = np.where(ok, expl - wrong, -1).astype(np.float64) - 1e-3 * wrong
        c = flat(gain).argmax(1)
        g = flat(gain)[np.arange(NB), c]
        act = g > 0.5
        b = np.nonzero(act)[0]
        n_i, a_i = np.unravel_index(c[b], ok.shape[1:])
        cc = cells[b, n_i, a_i]
        m = d.mask[a_i]
        true = on[b[:, None], cc] & m
        hits = np.maximum(1, true.sum(1))
        out_a[b, slot] = a_i
        out_dt[b, slot], out_t[b, slot] = dt[b, n_i, a_i], t[b, n_i, a_i]
        out_v[b, slot] = (vel[b[:, None], cc] * true).sum(1) / hits
        out_len[b, slot] = (length[b[:, None], cc] * true).sum(1) / hits
        R[b[:, None], np.where(m, cc, cc[:, :1])] = False
    return out_a, out_dt, out_t, out_v, out_len


def note_lengths(x: np.ndarray) -> np.ndarray:
    """(steps, 264) grid -> (steps, 88) length in steps of the note starting at each onset (0 elsewhere)."""
    notes = decode_piano_grid(x)
    out = np.zeros((len(x), N_KEYS), np.float32)
    out[notes.start.astype(np.int64), notes.pitch.astype(np.int64) - LOWEST_KEY] = notes.end - notes.start
    return out


def placed_notes(d: ShapeDictionary, a, dt, t, v, length, k: int) -> tuple[NoteArray, int]:
    """The notes of the first k slots of each beat (a cell two entries share: the first one's)."""
    L = d.steps_per_beat
    a, dt, t, v, length = (arr[:, :k] for arr in (a, dt, t, v, length))
    b, slot = np.nonzero(a >= 0)
    ai = a[b, slot]
    m = d.mask[ai]
    start = (b * L + dt[b, slot])[:, None] + d.cells[ai, :, 0]
    key = t[b, slot][:, None] + d.cells[ai, :, 1]
    vel = np.clip(np.rint(v[b, slot][:, None] * d.vel_ratio[ai]), 1, 127)
    entry_len = np.maximum(1, np.rint(length[b, slot]))[:, None]        # as the code packs it
    dur = np.where(entry_len > 1, np.maximum(1, np.rint(entry_len * d.len_ratio[ai])), 1)
    start, key, vel, dur = start[m], key[m], vel[m], dur[m]
    _, first = np.unique(key * (len(a) + 1) * L + start, return_index=True)   # by key, then time
    start, key, vel, end = start[first], key[first], vel[first], start[first] + dur[first]
    # a key struck again ends the note sounding there, as on the grid
    later = np.r_[key[1:] == key[:-1], False]
    end = np.where(later, np.minimum(end, np.r_[start[1:], 0]), end)
    notes = NoteArray(start.astype(np.float64), end.astype(np.float64),
                      (key + LOWEST_KEY).astype(np.int16), vel.astype(np.int16))
    return notes.sorted(), len(b)


def shape_rows(grids: list[np.ndarray], d: ShapeDictionary, ks) -> dict:
    """{k: report} of greedy pursuit over the shapes ``d`` (one pursuit per piece serves every k)."""
    scores = {k: PianoScore() for k in ks}
    for x in grids:
        true = decode_piano_grid(x)
        code = greedy_pursuit(x, d, max(ks))
        for k in ks:
            notes, entries = placed_notes(d, *code, k)
            scores[k].add(true, notes, entries)
    return {k: s.report() for k, s in scores.items()}


def counted_rows(train: list[np.ndarray], test: list[np.ndarray], n_shapes: int, ks, steps_per_beat: int) -> dict:
    """{k: report} of the counted-shapes reference: ``n_shapes`` counted on ``train``, scored on ``test``."""
    return shape_rows(test, counted_dictionary(train, n_shapes, steps_per_beat), ks)


def rows_table(metrics: dict) -> str:
    """A shape run's metrics.json as the table `sidl train --transpose` prints."""
    lines = [f"{metrics['atoms']} shapes, {metrics['test_pieces']} test pieces "
             f"({metrics['training']['seconds_total']:.0f} s in all)",
             "k   F1      precision  recall  velocity err  offset F1  notes/atom  | loudest F1"]
    for k, r in metrics["pursuit"].items():
        lo = metrics["loudest"][k]
        lines.append(f"{k:<3} {r['f1']:.4f}  {r['precision']:.4f}     {r['recall']:.4f}  "
                     f"{r['velocity_error']:<13.2f}{r['offset_f1']:<11.4f}{r['notes_per_atom']:<11.2f} | {lo['f1']:.4f}")
    return "\n".join(lines)
