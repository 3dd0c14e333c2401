"""POP909 (Music X Lab, MIT): 909 pop songs arranged for piano, bar-aligned from their beat annotations.

Each song folder ``POP909/NNN/`` holds ``NNN.mid`` (tracks MELODY, BRIDGE, PIANO, merged here),
``key_audio.txt`` (start s, end s, key such as ``Gb:maj``) and ``beat_midi.txt`` (time s, beat flag,
downbeat flag), whose rows fall on the MIDI file's quarter notes. The first downbeat becomes step 0
and the spacing of downbeats gives the meter (most songs: four quarters, 4/4), which the files' own
time signatures (often 1/4) do not.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sidl.realtime.codec.spec import PIANO_GRID, Codec

from sidl.training.alignment import DownbeatShifts
from sidl.training.corpus import Piece, data_root, load_pieces, read_index
from sidl.training.splits import split_of

LICENSE = "MIT (POP909, Music X Lab, NYU Shanghai)"


def read_beats(path) -> tuple[float, int]:
    """beat_midi.txt -> (first downbeat in seconds, quarter notes per bar: the commonest spacing)."""
    rows = np.loadtxt(path, ndmin=2)
    if rows.shape[1] < 3 or len(rows) == 0:
        raise ValueError(f"{path}: expected rows of (time, beat, downbeat)")
    down = np.nonzero(rows[:, 2] == 1)[0]
    if len(down) == 0:
        raise ValueError(f"{path}: no downbeat")
    gaps, counts = np.unique(np.diff(down), return_counts=True)
    quarters = int(gaps[np.argmax(counts)]) if len(gaps) else 4
    return float(rows[down[0], 0]), quarters


def read_first_key(path) -> str:
    """key_audio.txt -> its first key, e.g. 'Gb:maj' ('' if the file lists none)."""
    with open(path) as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 3:
                return fields[2]
    return ""


def pop909_files(root, split: str | None = None, songs=None
                 ) -> tuple[list[tuple[str, dict]], dict[str, float], dict[str, tuple[int, int]]]:
    """(relative path, labels) per song, with first-downbeat seconds and meters per path.

    ``split`` and ``songs`` (song ids such as '001') choose songs before their annotations are read.
    """
    root = Path(root)
    rows = read_index(root / "POP909" / "index.csv", "POP909")
    files, downbeat_s, meters = [], {}, {}
    for r in rows:
        song = r["song_id"]
        if (songs is not None and song not in songs) or (split and split_of(int(song)) != split):
            continue
        folder = root / "POP909" / song
        rel = f"POP909/{song}/{song}.mid"
        first_s, quarters = read_beats(folder / "beat_midi.txt")
        labels = {
            "song_id": song, "name": r["name"], "artist": r["artist"],
            "key": read_first_key(folder / "key_audio.txt"),
            "beats_per_measure": int(r["num_beats_per_measure"]),
            "quarters_per_bar": quarters, "first_downbeat_s": round(first_s, 6),
            "split": split_of(int(song)),
        }
        files.append((rel, labels))
        downbeat_s[rel] = first_s
        meters[rel] = (quarters, 4)
    return files, downbeat_s, meters


def pop909_corpus(split: str | None = None, codec: Codec = PIANO_GRID, root=None,
                  cache: bool = True, songs: list[str] | None = None) -> list[Piece]:
    """Pieces of POP909 (optionally one split, or only some song ids such as '001'), any piano codec."""
    root = Path(root) if root else data_root() / "pop909"
    files, downbeat_s, meters = pop909_files(root, split, songs)
    if codec.is_grid:
        return load_pieces("pop909", root, codec, files, shifts=DownbeatShifts(root, downbeat_s),
                           meters=meters, cache=cache)
    return load_pieces("pop909", root, codec, files, cache=cache)
