"""Honest numbers from plain arrays: hit/onset F1, feel errors, and the constant reference beside them."""
from __future__ import annotations

import numpy as np

from sidl.realtime.codec.drums import N_CLASSES
from sidl.realtime.codec.notes import NoteArray

ONSET_TOLERANCE_S = 0.05     # note-onset matching for performances (seconds)
GRID_TOLERANCE_STEPS = 0.4   # 50 ms at 120 BPM in 16ths: grid onsets must fall on the same step


class Counts:
    """Accumulates true/false positives and feel errors over pieces, then reports."""

    def __init__(self):
        self.tp = self.fp = self.fn = 0
        self.vel_err = self.off_err = 0.0
        self.n_true = 0
        self.vel_err_found = self.off_err_found = 0.0   # on true hits the model also found

    def add_drums(self, true: np.ndarray, pred: np.ndarray) -> None:
        """true, pred: (steps, 27) drum grids (pred already read out)."""
        th = true[:, :N_CLASSES] > 0.5
        ph = pred[:, :N_CLASSES] > 0.5
        self.tp += int((th & ph).sum()); self.fp += int((~th & ph).sum()); self.fn += int((th & ~ph).sum())
        v = slice(N_CLASSES, 2 * N_CLASSES); o = slice(2 * N_CLASSES, 3 * N_CLASSES)
        self.vel_err += float(np.abs(pred[:, v][th] - true[:, v][th]).sum() * 127)
        self.off_err += float(np.abs(pred[:, o][th] - true[:, o][th]).sum())
        self.n_true += int(th.sum())
        both = th & ph
        self.vel_err_found += float(np.abs(pred[:, v][both] - true[:, v][both]).sum() * 127)
        self.off_err_found += float(np.abs(pred[:, o][both] - true[:, o][both]).sum())

    def add_notes(self, true: NoteArray, pred: NoteArray, tolerance: float) -> None:
        """Onset matching, pitch exact, |dt| <= tolerance (same unit as the note times)."""
        matched_true = np.zeros(len(true), bool)
        for i in np.argsort(pred.start, kind="stable"):
            cand = np.nonzero((true.pitch == pred.pitch[i]) & ~matched_true
                              & (np.abs(true.start - pred.start[i]) <= tolerance))[0]
            if len(cand):
                j = cand[np.argmin(np.abs(true.start[cand] - pred.start[i]))]
                matched_true[j] = True
                self.tp += 1
                self.vel_err += abs(int(true.velocity[j]) - int(pred.velocity[i]))
            else:
                self.fp += 1
        self.fn += int((~matched_true).sum())
        self.n_true += len(true)

    def report(self, feel: bool) -> dict:
        p = self.tp / max(1, self.tp + self.fp)
        r = self.tp / max(1, self.tp + self.fn)
        out = {"precision": round(p, 4), "recall": round(r, 4),
               "f1": round(2 * p * r / max(1e-12, p + r), 4), "n_true": self.n_true}
        if feel:
            out["velocity_mae"] = round(self.vel_err / max(1, self.n_true), 2)
            out["offset_mae"] = round(self.off_err / max(1, self.n_true), 4)
            out["velocity_mae_found"] = round(self.vel_err_found / max(1, self.tp), 2)
            out["offset_mae_found"] = round(self.off_err_found / max(1, self.tp), 4)
        else:
            out["velocity_mae_matched"] = round(self.vel_err / max(1, self.tp), 2)
        return out


def drum_constant_reference(train: list[np.ndarray], test: list[np.ndarray]) -> dict:
    """Velocity/offset error of guessing each class's mean training velocity and zero offset."""
    tr = np.concatenate(train)
    th = tr[:, :N_CLASSES] > 0.5
    mean_vel = np.array([tr[:, N_CLASSES + c][th[:, c]].mean() if th[:, c].any() else 0.0
                         for c in range(N_CLASSES)], np.float32)
    c = Counts()
    for x in test:
        guess = x.copy()
        hits = x[:, :N_CLASSES] > 0.5
        guess[:, N_CLASSES:2 * N_CLASSES] = np.where(hits, mean_vel, 0.0)
        guess[:, 2 * N_CLASSES:] = 0.0
        c.add_drums(x, guess)
    r = c.report(feel=True)
    return {"velocity_mae": r["velocity_mae"], "offset_mae": r["offset_mae"]}


def drum_template_reference(train, test) -> dict:
    """Velocity/offset error of a metrical template: each class's mean training velocity and mean
    offset at each step of the bar (a step never hit in training: the class's mean, zero offset).
    ``train``, ``test``: lists of ((steps, 27) grid, steps per bar), as meters differ by piece."""
    bar_max = max(bar for _, bar in list(train) + list(test))
    n = np.zeros((bar_max, N_CLASSES)); vel = np.zeros((bar_max, N_CLASSES)); off = np.zeros((bar_max, N_CLASSES))
    for x, bar in train:
        th = (x[:, :N_CLASSES] > 0.5).astype(np.float64)
        pos = np.arange(len(x)) % bar
        np.add.at(n, pos, th)
        np.add.at(vel, pos, th * x[:, N_CLASSES:2 * N_CLASSES])
        np.add.at(off, pos, th * x[:, 2 * N_CLASSES:3 * N_CLASSES])
    class_vel = vel.sum(0) / np.maximum(1, n.sum(0))
    seen = n > 0
    t_vel = np.where(seen, vel / np.maximum(1, n), class_vel)
    t_off = np.where(seen, off / np.maximum(1, n), 0.0)
    c = Counts()
    for x, bar in test:
        pos = np.arange(len(x)) % bar
        hits = x[:, :N_CLASSES] > 0.5
        guess = x.copy()
        guess[:, N_CLASSES:2 * N_CLASSES] = np.where(hits, t_vel[pos], 0.0)
        guess[:, 2 * N_CLASSES:3 * N_CLASSES] = np.where(hits, t_off[pos], 0.0)
        c.add_drums(x, guess)
    r = c.report(feel=True)
    return {"velocity_mae": r["velocity_mae"], "offset_mae": r["offset_mae"]}
