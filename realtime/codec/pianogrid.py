"""Piano beat-grid codec: notes <-> a (steps, 264) grid of onset, velocity and hold per piano key.

Per grid step (``Codec.steps_per_beat`` per quarter note, 4 by default) and per key of the 88-key
piano (MIDI 21..108), three channel blocks::

    [0, 88)      onset     1 on the step a note starts (nearest step)
    [88, 176)    velocity  midi velocity / 127 on the onset step, 0 elsewhere
    [176, 264)   hold      1 on each later step while the note still sounds

A note lasts from its onset step to its release rounded to the nearest step, at least one step.
Pitches off the keyboard move by octaves onto it. A re-strike of a key ends the note sounding there;
two onsets of one key on one step keep the louder. Material already on the grid round-trips exactly.
"""
from __future__ import annotations

import numpy as np

from .spec import PIANO_GRID, Codec
from .notes import NoteArray, one_voice_per_key

LOWEST_KEY = 21            # A0
HIGHEST_KEY = 108          # C8
N_KEYS = HIGHEST_KEY - LOWEST_KEY + 1
ONSET, VELOCITY, HOLD = 0, N_KEYS, 2 * N_KEYS   # first channel of each block
N_CHANNELS = 3 * N_KEYS
assert N_KEYS == PIANO_GRID.n_voices and N_CHANNELS == PIANO_GRID.channels


def fold_to_keyboard(pitch: np.ndarray) -> np.ndarray:
    """MIDI pitches moved by whole octaves into 21..108 (pitches already there are unchanged)."""
    p = np.asarray(pitch, np.int64)
    p = p + 12 * np.maximum(0, -((p - LOWEST_KEY) // 12))     # up until >= 21
    p = p - 12 * np.maximum(0, -((HIGHEST_KEY - p) // 12))    # down until <= 108
    return p.astype(np.int16)


def grid_notes(notes_in_steps: NoteArray, n_steps: int) -> tuple[np.ndarray, ...]:
    """The notes a grid of ``n_steps`` can hold: (onset step, end step, key 0..87, velocity), by key then time.

    Applies the codec's rules: nearest-step onsets and releases (at least one step), octave folding,
    louder of two onsets on one key and step, re-strike ends the sounding note, onsets outside the
    grid dropped, ends clipped to it.
    """
    key = fold_to_keyboard(notes_in_steps.pitch).astype(np.int64) - LOWEST_KEY
    on = np.floor(notes_in_steps.start + 0.5).astype(np.int64)
    off = np.maximum(on + 1, np.floor(notes_in_steps.end + 0.5).astype(np.int64))
    vel = np.asarray(notes_in_steps.velocity, np.int64)
    keep = (on >= 0) & (on < n_steps) & (vel > 0)
    on, off, key, vel = one_voice_per_key(on[keep], off[keep], key[keep], vel[keep])
    return on, np.minimum(off, n_steps), key, vel


def encode_piano_grid(notes_in_steps: NoteArray, n_steps: int) -> np.ndarray:
    """Notes timed in grid steps -> (n_steps, 264) float32: [onset(88), velocity/127(88), hold(88)]."""
    if n_steps < 0:
        raise ValueError("n_steps must be >= 0")
    on, off, key, vel = grid_notes(notes_in_steps, n_steps)
    x = np.zeros((n_steps, N_CHANNELS), np.float32)
    x[on, ONSET + key] = 1.0
    x[on, VELOCITY + key] = vel / 127.0
    # Hold rows on+1 .. off-1: +1/-1 marks, then a running sum down the time axis. Notes of one
    # key never overlap after grid_notes, so no two marks share a cell (plain assignment, not the
    # much slower np.add.at) and the sum stays 0 or 1.
    marks = np.zeros((n_steps + 1, N_KEYS), np.int32)
    long = off > on + 1
    marks[on[long] + 1, key[long]] = 1
    marks[off[long], key[long]] = -1
    x[:, HOLD:] = np.cumsum(marks[:-1], axis=0)
    return x


def decode_piano_grid(x: np.ndarray, threshold: float = 0.5) -> NoteArray:
    """(steps, 264) grid -> notes timed in steps, sorted by time then pitch.

    A note starts on each onset above ``threshold`` and lasts through the following steps whose
    hold is above it, up to the next onset of that key. Holds with no onset before them are ignored.
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != N_CHANNELS:
        raise ValueError(f"piano grid must be (steps, {N_CHANNELS}), got {x.shape}")
    n_steps = len(x)
    onset = x[:, ONSET:ONSET + N_KEYS] > threshold
    sounding = (x[:, HOLD:HOLD + N_KEYS] > threshold) & ~onset   # continues the note before it
    # For every step and key, the first step at or after it that does not continue a note (row
    # n_steps: the grid's end). A reversed running minimum finds them all in one pass.
    stop = np.full((n_steps + 1, N_KEYS), n_steps, np.int64)
    stop[:-1][~sounding] = np.nonzero(~sounding)[0]
    stop = np.minimum.accumulate(stop[::-1], axis=0)[::-1]
    on, key = np.nonzero(onset)                                  # by time, then key
    off = stop[on + 1, key]
    vel = np.clip(np.rint(x[on, VELOCITY + key] * 127.0), 1, 127).astype(np.int16)
    return NoteArray(on.astype(np.float64), off.astype(np.float64), (key + LOWEST_KEY).astype(np.int16), vel)
