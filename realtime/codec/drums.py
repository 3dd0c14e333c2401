"""Drum codec: notes <-> a (steps, 27) grid of hit, velocity and microtiming per drum class.

Per 16th-note step (``DRUMS.steps_per_beat`` = 4), for each of 9 classes: hit (0/1), velocity / 127,
and offset from the step in steps, in [-0.5, 0.5). Two hits of one class on one step keep the loudest.
Decoding writes each class's canonical General MIDI note (for channel 10).
"""
from __future__ import annotations

import numpy as np

from .notes import NoteArray

# (class name, canonical GM note, other notes folded into it). Covers the Roland TD-11 map of GMD.
DRUM_CLASSES = (
    ("kick", 36, (35,)),
    ("snare", 38, (37, 40)),
    ("closed hat", 42, (22, 44)),
    ("open hat", 46, (26,)),
    ("low tom", 43, (58,)),
    ("mid tom", 47, (45,)),
    ("high tom", 50, (48,)),
    ("crash", 49, (52, 55, 57)),
    ("ride", 51, (53, 59)),
)
N_CLASSES = len(DRUM_CLASSES)
CLASS_NAMES = tuple(c[0] for c in DRUM_CLASSES)
CLASS_NOTES = np.array([c[1] for c in DRUM_CLASSES], np.int16)
PITCH_TO_CLASS = np.full(128, -1, np.int16)
for _i, (_name, _note, _others) in enumerate(DRUM_CLASSES):
    PITCH_TO_CLASS[[_note, *_others]] = _i
DRUM_CHANNEL = 9          # "channel 10" in the 1-based numbering DAWs show
HIT_LENGTH_STEPS = 0.5    # decoded drum notes last half a step; drums ignore note length
MIN_HIT_STEPS = 0.05      # ...a late one less, down to this (6 ms at 120 BPM)
_FEEL_LO = np.array([1 / 127, -0.5], np.float32)   # velocity (rounds to >= 1), offset in steps
_FEEL_HI = np.array([1.0, 0.5], np.float32)


def encode_drums(notes: NoteArray, n_steps: int) -> np.ndarray:
    """Notes timed in steps -> (n_steps, 27) float32 grid. Unknown pitches and notes outside are dropped."""
    x = np.zeros((n_steps, 3 * N_CLASSES), np.float32)
    cls = PITCH_TO_CLASS[np.minimum(np.maximum(notes.pitch, 0), 127)]   # ufuncs: np.clip's wrapper is slow
    step = np.floor(notes.start + 0.5).astype(np.int64)
    keep = (cls >= 0) & (step >= 0) & (step < n_steps) & (notes.velocity > 0)
    cls, step, vel = cls[keep], step[keep], notes.velocity[keep]
    offset = (notes.start[keep] - step).astype(np.float32)
    # Loudest hit wins when a class is struck twice on one step: write in rising velocity order.
    order = np.argsort(vel, kind="stable")
    cls, step, vel, offset = cls[order], step[order], vel[order], offset[order]
    x[step, cls] = 1.0
    x[step, N_CLASSES + cls] = vel / 127.0
    x[step, 2 * N_CLASSES + cls] = np.minimum(np.maximum(offset, -0.5), 0.5 - 1e-6)
    return x


def decode_drums(x: np.ndarray, threshold: float = 0.5, quantize: bool = False,
                 ordered: bool = True) -> NoteArray:
    """(steps, 27) grid -> notes timed in steps, canonical GM pitches, sorted by time.

    Notes last half a step, a late one only until the next half step (at least ``MIN_HIT_STEPS``).

    ``ordered=False`` skips the sort for callers that order events themselves (the live scheduler).
    """
    if x.ndim != 2 or x.shape[1] != 3 * N_CLASSES:
        raise ValueError(f"drum grid must be (steps, {3 * N_CLASSES}), got {x.shape}")
    # Few numpy calls: this runs for every bar on the live path, where each call costs more than
    # its arithmetic. Velocity and offset of every hit are read and clamped together.
    step, cls = np.nonzero(x[:, :N_CLASSES] > threshold)
    feel = x.reshape(len(x), 3, N_CLASSES)[step, 1:, cls]            # (hits, 2): velocity, offset
    np.minimum(np.maximum(feel, _FEEL_LO, out=feel), _FEEL_HI, out=feel)
    vel = np.rint(feel[:, 0] * 127.0).astype(np.int16)                # 1..127 after the clamp
    if quantize:
        start = step.astype(np.float64)
        end = start + HIT_LENGTH_STEPS
    else:
        start = step + feel[:, 1]                                     # int64 + float32: float64
        # A late hit ends by the half step, where the next step's earliest hit may start, so a
        # re-strike does not begin before the previous note's note-off (unless the first is more
        # than 0.45 steps late: notes last at least MIN_HIT_STEPS). In float64, to the exact half.
        end = np.maximum(np.minimum(start + HIT_LENGTH_STEPS, step + HIT_LENGTH_STEPS), start + MIN_HIT_STEPS)
    notes = NoteArray(start, end, CLASS_NOTES[cls], vel)
    return notes.sorted() if ordered else notes
