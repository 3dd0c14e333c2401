"""Groove MIDI Dataset (Magenta, CC BY 4.0): 1,150 drum performances with splits and labels."""
from __future__ import annotations

from pathlib import Path

from sidl.realtime.codec.spec import DRUMS, Codec

from sidl.training.corpus import Piece, data_root, load_pieces, read_index

LICENSE = "CC BY 4.0 (Groove MIDI Dataset, Google Magenta)"


def groove_corpus(split: str | None = None, codec: Codec = DRUMS, root=None,
                  cache: bool = True) -> list[Piece]:
    """Pieces of GMD, optionally one split ('train', 'validation', 'test'), labelled from info.csv."""
    root = Path(root) if root else data_root() / "groove"
    rows = read_index(root / "info.csv", "Groove MIDI Dataset")
    files = [(r["midi_filename"], {k: r[k] for k in ("split", "drummer", "style", "bpm",
                                                     "beat_type", "time_signature")})
             for r in rows]
    pieces = load_pieces("groove", root, codec, files, cache=cache)
    return [p for p in pieces if split is None or p.labels["split"] == split]
