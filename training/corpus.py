"""Corpora as plain arrays: every piece of a MIDI collection encoded once, cached, cut into sections.

A ``Piece`` is one file as a (steps, channels) float32 array that starts on a bar line, with its
labels. Parsing is cached in one ``.npz`` per (corpus, codec, file list) so a second run does not
re-parse. Unreadable files are reported and skipped: one bad file never stops a run.

The cache is sparse: a beat-grid roll is > 97% zeros (the whole of POP909 on the piano grid was
1.16 GB dense), so a cache file keeps only where the nonzero values are (gaps between their flat
positions) and which value each one is (an index into the few distinct values a codec writes),
compressed; loading rebuilds the dense arrays. It lives in $SIDL_CACHE (default ~/.cache/sidl);
``sidl cache info`` shows it and ``sidl cache clear`` empties it.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sidl.realtime.codec.convert import bars_to_steps, encode_notes
from sidl.realtime.codec.spec import Codec
from sidl.realtime.codec.midifile import MidiFileError, load_midi, read_score
from sidl.realtime.codec.files import NPZ_ERRORS, atomic_write

CACHE_VERSION = 3                 # 3: sparse cache files (see _pack)
MIDI_SUFFIXES = (".mid", ".midi", ".MID", ".MIDI")


def data_root() -> Path:
    """Where the shared corpora live: $SIDL_DATA, else ../shared/data beside the checkout."""
    env = os.environ.get("SIDL_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def cache_root() -> Path:
    """Where parsed corpora are cached: $SIDL_CACHE, else ~/.cache/sidl."""
    return Path(os.environ.get("SIDL_CACHE") or Path.home() / ".cache" / "sidl")


def corpus_cache_dir() -> Path:
    return cache_root() / "corpora"


@dataclass(frozen=True)
class Piece:
    name: str                 # path relative to the corpus root
    x: np.ndarray             # (steps, channels) float32, starts on a bar line, whole bars
    codec: Codec              # with this piece's meter
    labels: dict = field(default_factory=dict)  # e.g. split, drummer, style, beat_type, composer, key


def read_index(path: Path, corpus: str) -> list[dict]:
    """A corpus's CSV index as rows; a missing one says which corpus and where to point SIDL_DATA."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: {corpus} not found (set SIDL_DATA)")
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def encode_file(path, codec: Codec, shift_beats: float = 0.0,
                meter: tuple[int, int] | None = None) -> tuple[np.ndarray, Codec]:
    """One MIDI file -> (array of whole bars, codec carrying the file's first meter).

    ``shift_beats`` moves the music earlier so that a known first downbeat lands on step 0;
    ``meter`` (from annotations) overrides the file's time signature. The event codec has no bars
    and ignores both: its pieces are the whole file.
    """
    score = read_score(load_midi(path), fold_sustain=codec.spec.fold_sustain)
    if not codec.is_grid:
        # Event pieces stay token ids (n_events,) int16: one-hot rows for a whole corpus would
        # not fit in memory (POP909 ~9 GB); batches are one-hot encoded when they are used.
        from sidl.realtime.codec.events import events_from_score
        return events_from_score(score), codec
    num, den = meter or score.meter_at(shift_beats)
    try:
        codec = codec.with_meter(num, den)
        codec.steps_per_bar
    except ValueError:
        codec = codec.with_meter(4, 4)  # a meter off the grid (e.g. 7/16 at 4 steps/beat): count 4/4
    notes = score.notes.scaled(1.0, -shift_beats)
    notes = notes.select(notes.start >= -0.5 / codec.steps_per_beat)
    n_steps = bars_to_steps(codec, score.length_beats - shift_beats)
    return encode_notes(codec, notes, n_steps), codec


def _cache_key(name: str, root: Path, codec: Codec, files: list[tuple[str, dict]]) -> str:
    h = hashlib.sha1()
    h.update(json.dumps([CACHE_VERSION, name, str(root.resolve()), codec.to_dict()]).encode())
    for rel, labels in files:
        st = (root / rel).stat()
        h.update(json.dumps([rel, st.st_size, int(st.st_mtime), labels], sort_keys=True,
                            default=str).encode())
    return h.hexdigest()[:16]


def load_pieces(name: str, root: Path, codec: Codec, files: list[tuple[str, dict]],
                shifts: dict[str, float] | None = None, cache: bool = True,
                log=None, meters: dict[str, tuple[int, int]] | None = None) -> list[Piece]:
    """Encode ``files`` (relative path, labels) under ``root`` with ``codec``, through the cache.

    ``shifts`` (beats) and ``meters`` are per relative path; they are not part of the cache key,
    so a loader should also put what they derive from into the labels.
    """
    root = Path(root)
    path = corpus_cache_dir() / f"{name}-{codec.name}-{_cache_key(name, root, codec, files)}.npz"
    if cache and path.exists():
        cached = _read_cache(path)
        if cached is not None:
            return cached
        print(f"{path}: unreadable corpus cache (empty or corrupt file): rebuilding it", file=log or sys.stderr)
        try:
            path.unlink()
        except OSError:
            pass
    pieces, skipped = [], []
    for rel, labels in files:
        try:
            x, c = encode_file(root / rel, codec, (shifts or {}).get(rel, 0.0),
                               (meters or {}).get(rel))
        except MidiFileError as e:
            skipped.append(str(e))
            continue
        if len(x):
            pieces.append(Piece(rel, x, c, labels))
    for msg in skipped:
        print(f"skipped: {msg}", file=log or sys.stderr)
    if cache and pieces:
        path.parent.mkdir(parents=True, exist_ok=True)
        offsets = np.cumsum([0] + [len(p.x) for p in pieces])
        meta = json.dumps([{"name": p.name, "codec": p.codec.to_dict(), "labels": p.labels}
                           for p in pieces])
        packed = _pack(np.concatenate([p.x for p in pieces]))
        atomic_write(path, lambda tmp: np.savez_compressed(tmp, offsets=offsets, meta=np.array(meta), **packed))
    return pieces


def _pack(x: np.ndarray) -> dict[str, np.ndarray]:
    """A dense array as its nonzeros: gaps between their flat positions and a palette index each.

    Exact: the palette holds every distinct nonzero value (a few hundred at most for the grid
    codecs: velocities and offsets are quantised), so nothing is rounded.
    """
    flat = np.flatnonzero(x)
    palette, which = np.unique(x.reshape(-1)[flat], return_inverse=True)
    gaps = np.diff(flat, prepend=0)
    return {"shape": np.array(x.shape, np.int64), "dtype": np.array(x.dtype.str), "palette": palette,
            "gaps": gaps.astype(np.uint32 if not len(gaps) or gaps.max() < 2**32 else np.int64),
            "which": which.astype(np.uint8 if len(palette) <= 256 else np.uint32)}


def _unpack(z) -> np.ndarray:
    """The dense array ``_pack`` stored (ValueError/IndexError if the parts do not fit together)."""
    x = np.zeros(tuple(int(n) for n in z["shape"]), np.dtype(str(z["dtype"])))
    gaps, which = z["gaps"], z["which"]
    if len(gaps) != len(which):
        raise ValueError("corpus cache: positions and values differ in length")
    x.reshape(-1)[np.cumsum(gaps, dtype=np.int64)] = z["palette"][which]
    return x


def cache_files() -> list[Path]:
    """The corpus cache's files, largest first (what ``sidl cache info`` lists)."""
    folder = corpus_cache_dir()
    files = [f for f in folder.glob("*.npz") if f.is_file()] if folder.is_dir() else []
    return sorted(files, key=lambda f: -f.stat().st_size)


def read_cache_file(path: Path) -> list[Piece] | None:
    """The pieces one cache file holds (None when it cannot be read): for ``sidl cache info --time``."""
    return _read_cache(Path(path))


def _read_cache(path: Path) -> list[Piece] | None:
    """The pieces a cache file holds; None when it is empty, truncated or inconsistent (rebuild it)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            x, offsets = _unpack(z), z["offsets"]
        if (not isinstance(meta, list) or offsets.ndim != 1 or len(offsets) != len(meta) + 1
                or len(meta) and (offsets[0] != 0 or offsets[-1] != len(x) or np.any(np.diff(offsets) < 0))):
            return None
        pieces = [Piece(m["name"], x[offsets[i]:offsets[i + 1]], Codec.from_dict(m["codec"]), m["labels"])
                  for i, m in enumerate(meta)]
    except NPZ_ERRORS:
        return None
    return pieces if pieces and all(isinstance(p.labels, dict) and isinstance(p.name, str)
                                    for p in pieces) else None


def folder_corpus(root, codec: Codec, cache: bool = True) -> list[Piece]:
    """Every MIDI file under a user's folder (recursively); labels carry the sub-folder."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix in MIDI_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{root}: no .mid/.midi files found")
    return load_pieces("folder", root, codec,
                       [(f, {"folder": str(Path(f).parent)}) for f in files], cache=cache)


def sections(pieces: list[Piece], n_steps: int) -> np.ndarray:
    """Cut pieces into (n_sections, n_steps, channels) windows; the last one of a piece is zero-padded.

    ``n_steps`` should be a whole number of bars so sections start on bar lines. Short pieces (fills)
    become one padded section instead of being dropped.
    Event pieces (token ids) give (n_sections, n_steps) int16 windows padded with -1 (no event).
    """
    out = []
    for p in pieces:
        for s in range(0, len(p.x), n_steps):
            w = p.x[s:s + n_steps]
            if len(w) < n_steps:
                pad = np.full((n_steps - len(w),) + w.shape[1:], -1 if w.ndim == 1 else 0, w.dtype)
                w = np.concatenate([w, pad])
            out.append(w)
    if not out:
        raise ValueError("no sections: the corpus is empty")
    return np.stack(out)


def folder_split(i: int, n: int) -> str:
    """The split of a user folder's ``i``-th of ``n`` readable pieces (a folder has no split of its own).

    Every 10th piece goes to validation (i % 10 == 3) and to test (i % 10 == 7). A folder of fewer
    than 8 pieces holds out its last piece for test and, from 3 pieces on, the one before for
    validation, so a small folder still gets measured on music it did not learn.
    """
    if n >= 8:
        return {3: "validation", 7: "test"}.get(i % 10, "train")
    if n >= 2 and i == n - 1:
        return "test"
    if n >= 3 and i == n - 2:
        return "validation"
    return "train"
