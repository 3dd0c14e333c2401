"""ASAP (Foscarin et al. 2020, CC BY-NC-SA 4.0): 1,067 expressive piano performances of 222 pieces.

Performances are the ``midi_performance`` files of ``metadata.csv``; each has a TSV
``*_annotations.txt`` of (time s, time s, label) where the label is ``b``, ``db`` or ``bR`` (beat,
downbeat, beat of unknown position), optionally followed by ``,time signature,key signature``
(e.g. ``db,4/4,2``; key signatures count sharps, negative for flats). The first downbeat becomes
step 0. Splits go by piece (composer and title), so every performance of a score lands in one split.

Performance files run at one fixed MIDI tempo, so a grid codec's beats are the file's clock beats,
not the played ones; the event codec is the natural fit for this corpus.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sidl.realtime.codec.spec import PIANO_EVENTS, Codec

from sidl.training.alignment import DownbeatShifts
from sidl.training.corpus import Piece, data_root, load_pieces, read_index
from sidl.training.splits import split_by_name

LICENSE = ("CC BY-NC-SA 4.0 (ASAP dataset, Foscarin et al. 2020; performances from MAESTRO): "
           "non-commercial use only, share-alike; presets trained on it inherit these terms")


@dataclass(frozen=True)
class Annotations:
    first_downbeat_s: float      # seconds in the performance
    time_signature: tuple        # (numerator, denominator) of the first annotated time signature
    key_signature: int           # first annotated key signature: sharps > 0, flats < 0


def read_annotations(path) -> Annotations:
    """Parse an ASAP ``*_annotations.txt``: first downbeat, first time signature, first key signature."""
    downbeat, meter, key = None, None, None
    with open(path) as f:
        for n, line in enumerate(f, 1):
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 3:
                continue
            try:
                t = float(cols[0])
            except ValueError:
                raise ValueError(f"{path}:{n}: bad time {cols[0]!r}") from None
            kind, *extra = cols[2].split(",")
            if kind == "db" and downbeat is None:
                downbeat = t
            if len(extra) >= 1 and extra[0] and meter is None:
                num, _, den = extra[0].partition("/")
                meter = (int(num), int(den))
            if len(extra) >= 2 and extra[1] and key is None:
                key = int(extra[1])
    if downbeat is None:
        raise ValueError(f"{path}: no downbeat annotated")
    return Annotations(downbeat, meter or (4, 4), 0 if key is None else key)


def asap_files(root, split: str | None = None, composers=None, limit: int | None = None
               ) -> tuple[list[tuple[str, dict]], dict[str, float], dict[str, tuple[int, int]]]:
    """(relative path, labels) per performance, with first-downbeat seconds and meters per path."""
    root = Path(root)
    rows = read_index(root / "metadata.csv", "ASAP")
    files, downbeat_s, meters = [], {}, {}
    for r in rows:
        piece_split = split_by_name(f"{r['composer']}/{r['title']}")
        if (split and piece_split != split) or (composers and r["composer"] not in composers):
            continue
        rel = r["midi_performance"]
        ann = read_annotations(root / r["performance_annotations"])
        labels = {
            "composer": r["composer"], "title": r["title"], "folder": r["folder"],
            "time_signature": f"{ann.time_signature[0]}/{ann.time_signature[1]}",
            "key_signature": ann.key_signature, "first_downbeat_s": round(ann.first_downbeat_s, 6),
            "split": piece_split,
        }
        files.append((rel, labels))
        downbeat_s[rel] = ann.first_downbeat_s
        meters[rel] = ann.time_signature
        if limit is not None and len(files) >= limit:
            break
    return files, downbeat_s, meters


def asap_corpus(split: str | None = None, codec: Codec = PIANO_EVENTS, root=None,
                cache: bool = True, composers=None, limit: int | None = None) -> list[Piece]:
    """Performances of ASAP (optionally one split, some composers, the first ``limit``), any piano codec."""
    root = Path(root) if root else data_root() / "asap"
    files, downbeat_s, meters = asap_files(root, split, composers, limit)
    if codec.is_grid:
        return load_pieces("asap", root, codec, files, shifts=DownbeatShifts(root, downbeat_s),
                           meters=meters, cache=cache)
    return load_pieces("asap", root, codec, files, cache=cache)
