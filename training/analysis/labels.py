"""Which label each piece carries, and which group it belongs to, per corpus.

A probe needs, for every piece, one label (composer, key, meter ...) and one group: the unit that
must never sit in both a training and a test fold (an ASAP score's performances, a GMD drummer's
session, a POP909 song). Everything here is read from the corpora's own annotations.

    GMD      drummer, style (the part before '/' of info.csv's style), beat_type, meter (time_signature)
    POP909   artist (artists with >= 8 songs), key (the longest key of key_audio.txt),
             meter (index.csv's num_beats_per_measure)
    ASAP     composer (the 10 with most scores), key (the first annotated key signature, named by
             its major key: ASAP annotates signatures, not modes), meter (first time signature)
    folder   whatever a ``file,label`` CSV says; each file is its own group
"""
from __future__ import annotations

import csv
import functools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sidl.realtime.codec.spec import Codec
from sidl.training.alignment import DownbeatShifts
from sidl.training.corpus import Piece, data_root, folder_corpus, load_pieces, read_index

CORPUS_LABELS = {
    "groove": ("drummer", "style", "beat_type", "meter"),
    "pop909": ("artist", "key", "meter"),
    "asap": ("composer", "key", "meter"),
}
MIN_ARTIST_SONGS = 8
TOP_COMPOSERS = 10
PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_PITCH_OF = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


@dataclass(frozen=True)
class Labelled:
    """Pieces with one label and one group each (parallel lists), and what was left out and why."""

    corpus: str
    label: str
    pieces: list            # list[Piece]
    y: list                 # list[str], the label of each piece
    groups: list            # list[str], the group of each piece
    dropped: str            # one phrase: what was left out, for the report


def key_name(tonic: int, minor: bool) -> str:
    """(pitch class 0..11, mode) -> 'F# major' / 'A minor', the spelling mir_eval reads."""
    return f"{PITCH_NAMES[tonic % 12]} {'minor' if minor else 'major'}"


def parse_key(text: str) -> tuple[int, bool] | None:
    """'Gb:maj' / 'c#:min' / 'Bb minor' -> (pitch class, minor); None when it is not a key."""
    name, _, mode = text.replace(" ", ":").partition(":")
    if not name or name[0].upper() not in _PITCH_OF or mode[:3].lower() not in ("maj", "min"):
        return None
    pc = _PITCH_OF[name[0].upper()] + name[1:].count("#") - name[1:].count("b")
    return pc % 12, mode[:3].lower() == "min"


def signature_key(sharps: int) -> str:
    """A key signature (sharps > 0, flats < 0) -> the name of its major key (2 -> 'D major')."""
    return key_name(7 * sharps, False)


def longest_key(path) -> str:
    """key_audio.txt (start s, end s, key) -> the key held longest, as 'F# major' ('' if none)."""
    held: Counter = Counter()
    with open(path) as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 3 and parse_key(fields[2]) is not None:
                held[key_name(*parse_key(fields[2]))] += float(fields[1]) - float(fields[0])
    return held.most_common(1)[0][0] if held else ""


@functools.lru_cache(maxsize=4)      # a report opens each corpus for several probes
def corpus_pieces(data: str, codec: Codec, per_score: int = 0, limit: int = 0) -> list[Piece]:
    """Every piece of a named corpus (all splits) or a folder, encoded with ``codec`` (cached).

    ``per_score`` keeps at most that many ASAP performances of each score (0: all); ``limit``
    keeps every n-th piece so about ``limit`` remain (0: all), for quick runs.
    """
    from sidl.training import asap, groove, pop909
    if data == "groove":
        pieces = groove.groove_corpus(None, codec)
    elif data == "pop909":
        pieces = pop909.pop909_corpus(None, codec)
    elif data == "asap":
        root = data_root() / "asap"
        files, downbeat_s, meters = asap.asap_files(root)
        if per_score:
            seen: Counter = Counter()
            keep = []
            for rel, labels in files:
                seen[labels["folder"]] += 1
                if seen[labels["folder"]] <= per_score:
                    keep.append((rel, labels))
            files = keep
        shifts = DownbeatShifts(root, {rel: downbeat_s[rel] for rel, _ in files})
        pieces = load_pieces("asap", root, codec, files, shifts=shifts,
                             meters={rel: meters[rel] for rel, _ in files})
    else:
        pieces = folder_corpus(data, codec)
    if limit and len(pieces) > limit:
        pieces = [pieces[i] for i in np.linspace(0, len(pieces) - 1, limit).round().astype(int)]
    return pieces


def read_label_csv(path) -> dict[str, str]:
    """A ``file,label`` CSV (a header row is skipped when its second field is 'label') -> {file: label}."""
    out = {}
    with open(path, newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if not row or row[0].startswith("#"):
                continue
            if len(row) < 2:
                raise ValueError(f"{path}:{n}: expected 'file,label', got {','.join(row)!r}")
            if n == 1 and row[1].strip().lower() == "label":
                continue
            out[row[0].strip()] = row[1].strip()
    if not out:
        raise ValueError(f"{path}: no 'file,label' rows")
    return out


def check_label(data: str, label: str, labels_csv=None) -> None:
    """A ValueError before any corpus is read, when ``data`` cannot carry ``label``."""
    if labels_csv is not None:
        return
    if data not in CORPUS_LABELS:
        if label != "folder":
            raise ValueError(f"{data}: a folder has no {label!r} labels: give --labels FILE.csv (file,label) "
                             f"or --by folder (its sub-folders)")
    elif label not in CORPUS_LABELS[data]:
        raise ValueError(f"{data} has no label {label!r} (it has: {', '.join(CORPUS_LABELS[data])})")


def label_pieces(data: str, pieces: list[Piece], label: str, labels_csv=None) -> Labelled:
    """One label and one group per piece; pieces without the label (or in too small a class) drop out."""
    check_label(data, label, labels_csv)
    named = data if data in CORPUS_LABELS else "folder"
    if labels_csv is not None:
        table = read_label_csv(labels_csv)
        rows = [(p, table.get(p.name, table.get(Path(p.name).name, "")), p.name) for p in pieces]
        return _keep(named, label, rows, f"pieces not in {Path(labels_csv).name}")
    if named == "folder":
        return _keep(named, label, [(p, p.labels.get("folder", ""), p.name) for p in pieces], "")
    return _LABELLERS[named](pieces, label)


def _keep(corpus: str, label: str, rows, why: str) -> Labelled:
    rows = [r for r in rows if r[1]]
    return Labelled(corpus, label, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], why)


def _groove(pieces, label):
    def value(p):
        if label == "style":
            return p.labels["style"].split("/")[0]
        if label == "meter":
            return p.labels["time_signature"].replace("-", "/")
        return p.labels[label]
    # a session folder (drummer1/session2) holds one drummer's takes of one sitting
    return _keep("groove", label, [(p, value(p), str(Path(p.name).parent)) for p in pieces], "")


def _pop909(pieces, label):
    root = data_root() / "pop909" / "POP909"
    if label == "artist":
        # an artist's song count is a fact of the corpus, not of a subset taken for a quick run
        songs = Counter(r["artist"] for r in read_index(root / "index.csv", "POP909"))
        rows = [(p, p.labels["artist"] if songs[p.labels["artist"]] >= MIN_ARTIST_SONGS else "", p.labels["song_id"])
                for p in pieces]
        return _keep("pop909", label, rows, f"artists with fewer than {MIN_ARTIST_SONGS} songs")
    if label == "key":
        rows = [(p, longest_key(root / p.labels["song_id"] / "key_audio.txt"), p.labels["song_id"]) for p in pieces]
        return _keep("pop909", label, rows, "songs without a key annotation")
    return _keep("pop909", label, [(p, str(p.labels["beats_per_measure"]), p.labels["song_id"]) for p in pieces], "")


def _asap(pieces, label):
    if label == "composer":
        scores = Counter(c for c, _ in {(p.labels["composer"], p.labels["folder"]) for p in pieces})
        top = {c for c, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_COMPOSERS]}
        rows = [(p, p.labels["composer"] if p.labels["composer"] in top else "", p.labels["folder"]) for p in pieces]
        return _keep("asap", label, rows, f"composers outside the {TOP_COMPOSERS} with most scores")
    if label == "key":
        rows = [(p, signature_key(int(p.labels["key_signature"])), p.labels["folder"]) for p in pieces]
        return _keep("asap", label, rows, "")
    return _keep("asap", label, [(p, p.labels["time_signature"], p.labels["folder"]) for p in pieces], "")


_LABELLERS = {"groove": _groove, "pop909": _pop909, "asap": _asap}
