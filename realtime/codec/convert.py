"""One entry point per direction for every codec: a score (notes in beats) <-> the array the model sees.

Each codec module does the real work; this table only dispatches on ``Codec.name`` so corpora,
export and the live engine never branch on codec names themselves.
"""
from __future__ import annotations

import math

import numpy as np

from . import drums

from . import pianogrid
from .spec import Codec
from .notes import NoteArray


def bars_to_steps(codec: Codec, length_beats: float) -> int:
    """Whole bars covering ``length_beats`` (at least one), in grid steps."""
    bar_beats = codec.steps_per_bar / codec.steps_per_beat
    n_bars = max(1, math.ceil(length_beats / bar_beats - 1e-9))
    return n_bars * codec.steps_per_bar


def encode_steps(codec: Codec, notes_in_steps: NoteArray, n_steps: int) -> np.ndarray:
    """Notes timed in grid steps (the live path's unit) -> (n_steps, codec.channels) float32."""
    if codec.name == "drums":
        return drums.encode_drums(notes_in_steps, n_steps)
    if codec.name == "piano-grid":
        return pianogrid.encode_piano_grid(notes_in_steps, n_steps)
    raise ValueError(f"{codec.name} is not a grid codec")


def decode_steps(codec: Codec, x: np.ndarray, quantize: bool = False) -> NoteArray:
    """(steps, channels) array of a grid codec -> notes timed in grid steps, in no particular order."""
    if codec.name == "drums":
        return drums.decode_drums(x, quantize=quantize, ordered=False)
    if codec.name == "piano-grid":
        return pianogrid.decode_piano_grid(x)
    raise ValueError(f"{codec.name} is not a grid codec")


def encode_notes(codec: Codec, notes_in_beats: NoteArray, n_steps: int) -> np.ndarray:
    """Notes timed in beats -> (n_steps, codec.channels) float32 for a grid codec."""
    return encode_steps(codec, notes_in_beats.scaled(codec.steps_per_beat), n_steps)


def decode_notes(codec: Codec, x: np.ndarray, quantize: bool = False) -> NoteArray:
    """(steps, channels) array of a grid codec -> notes timed in beats, sorted by time."""
    return decode_steps(codec, x, quantize).sorted().scaled(1.0 / codec.steps_per_beat)
