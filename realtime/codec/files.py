"""Files sidl writes and reads, with one rule each: writes go through a temporary name, and a file
that cannot be read is one line naming it.

``atomic_write(path, write)``: ``write(tmp)`` fills a temporary file beside ``path``, which is then
renamed over it; an interrupted or failing write leaves the old file (or nothing), never half a file.
MIDI files, atom sheets, checkpoints, corpus caches, manifests and archives all go through it.

``read_json_object(path, what)``: a JSON object, or a ``ValueError`` saying in one line what is wrong.

``NPZ_ERRORS``: what a damaged .npz raises. Reading an archive sidl wrote can fail in many ways when
the file is not what it was: empty (EOFError), truncated (BadZipFile, zlib.error), not an npz at all
(ValueError: numpy then suggests ``allow_pickle``, which no caller passes on), a bare .npy (no context
manager: AttributeError), a member stored with a compression the zipfile module lacks
(NotImplementedError), an encrypted one (RuntimeError), a missing key (KeyError). Callers catch
``NPZ_ERRORS`` and say which file.
"""
from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import Callable

NPZ_ERRORS = (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, IndexError,
              RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error)
JSON_ERRORS = (OSError, UnicodeDecodeError, ValueError, RecursionError)   # RecursionError: nested too deeply


def atomic_write(path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path`` (same suffix, so numpy and mido keep
    it), then rename it to ``path``. The temporary file is removed whatever happens."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_bytes_atomic(path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_json_atomic(path, obj) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8"))


def json_kind(value) -> str:
    """What a JSON value is, in words, for error messages."""
    if value is None:
        return "null"
    return {str: "a string", int: "a number", float: "a number", bool: "true/false", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def read_json_object(path, what: str = "") -> dict:
    """The JSON object in ``path``, or a ValueError: ``PATH: not readable JSON (...)`` / ``... not an object``.
    ``what`` names the file's role in the message (e.g. "metrics")."""
    path = Path(path)
    label = f"{path}{f' ({what})' if what else ''}"
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except JSON_ERRORS as e:
        why = "nested too deeply" if isinstance(e, RecursionError) else f"{type(e).__name__}: {' '.join(str(e).split())[:120]}"
        raise ValueError(f"{label} is not readable JSON ({why})") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{label} must hold a JSON object, not {json_kind(obj)}")
    return obj
