"""A user's own folder of MIDI files: found recursively, bad files reported and skipped, cached."""
import shutil

import numpy as np
import pytest

from sidl.realtime.grid import DRUMS
from sidl.training.corpus import data_root, folder_corpus, load_corpus, sections

SRC = ["drummer1/eval_session/1_funk-groove1_138_beat_4-4.mid", "drummer1/session1/105_funk_95_fill_4-4.mid"]


def test_folder_of_midi_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SIDL_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "mine"
    (root / "sub").mkdir(parents=True)
    for i, rel in enumerate(SRC):
        shutil.copy(data_root() / "groove" / rel, root / ("sub" if i else ".") / f"take{i}.mid")
    (root / "broken.mid").write_bytes(b"not midi at all")
    pieces = folder_corpus(root, DRUMS)
    assert sorted(p.name for p in pieces) == ["sub/take1.mid", "take0.mid"]
    assert "broken.mid" in capsys.readouterr().err
    again = folder_corpus(root, DRUMS)                        # from the cache: same arrays
    for a, b in zip(pieces, again):
        np.testing.assert_array_equal(a.x, b.x)
    s = sections(pieces, 64)
    assert s.shape[1:] == (64, 27) and len(s) >= 2            # the short fill is kept, padded


def test_missing_or_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        folder_corpus(tmp_path / "nope", DRUMS)
    with pytest.raises(FileNotFoundError, match="no .mid"):
        folder_corpus(tmp_path, DRUMS)


def test_folder_splits_hold_out_every_tenth_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SIDL_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "many"
    root.mkdir()
    for i in range(10):
        shutil.copy(data_root() / "groove" / SRC[0], root / f"t{i:02d}.mid")
    train, _ = load_corpus(str(root), DRUMS, "train")
    test, _ = load_corpus(str(root), DRUMS, "test")
    val, _ = load_corpus(str(root), DRUMS, "validation")
    assert (len(train), len(val), len(test)) == (8, 1, 1)
