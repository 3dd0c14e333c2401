"""Bar lines from beat annotations: where an annotated first downbeat falls in a MIDI file's beats.

Corpus annotations give the first downbeat in seconds; ``load_pieces`` wants a shift in the file's
own beats (quarter notes), which only the file's tempo map can give. ``DownbeatShifts`` reads that
map when a file is actually encoded, so a cache hit parses nothing.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from sidl.realtime.codec.midifile import load_midi, read_score


def seconds_to_beats(tempos: tuple, seconds: float) -> float:
    """A time in seconds -> beats (quarter notes) through a tempo map ((beat, us per quarter), ...)."""
    if seconds < 0:
        raise ValueError("seconds must be >= 0")
    beats = np.array([b for b, _ in tempos], np.float64)
    sec_per_beat = np.array([us for _, us in tempos], np.float64) / 1e6
    seg_start_s = np.concatenate([[0.0], np.cumsum(np.diff(beats) * sec_per_beat[:-1])])
    i = int(np.searchsorted(seg_start_s, seconds, side="right")) - 1
    return float(beats[i] + (seconds - seg_start_s[i]) / sec_per_beat[i])


class DownbeatShifts(Mapping):
    """relative path -> beats of its first downbeat, read from the file's tempo map on first use.

    Pass it as ``load_pieces(shifts=...)``. A file that cannot be read raises ``MidiFileError`` on
    lookup, which ``load_pieces`` reports and skips like any other bad file.
    """

    def __init__(self, root, downbeat_s: dict[str, float]):
        self._root = Path(root)
        self._downbeat_s = dict(downbeat_s)
        self._beats: dict[str, float] = {}

    def __getitem__(self, rel: str) -> float:
        if rel not in self._beats:
            seconds = self._downbeat_s[rel]          # KeyError for files without an annotation
            tempos = read_score(load_midi(self._root / rel)).tempos
            self._beats[rel] = seconds_to_beats(tempos, seconds)
        return self._beats[rel]

    def __iter__(self):
        return iter(self._downbeat_s)

    def __len__(self) -> int:
        return len(self._downbeat_s)

