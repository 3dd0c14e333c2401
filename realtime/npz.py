"""What a damaged .npz raises, in one place: presets, checkpoints and corpus caches all read them.

Reading an archive sidl wrote can fail in many ways when the file is not what it was: empty
(EOFError), truncated (BadZipFile, zlib.error), not an npz at all (ValueError: numpy then suggests
``allow_pickle``, which no caller passes on), a bare .npy (no context manager: AttributeError), a
member stored with a compression the zipfile module lacks (NotImplementedError), an encrypted one
(RuntimeError), a missing key (KeyError). Callers catch ``NPZ_ERRORS`` and say which file.
"""
from __future__ import annotations

import zipfile
import zlib

NPZ_ERRORS = (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, IndexError,
              RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error)
