"""A user's own folder of MIDI files: found recursively, bad files reported and skipped, cached."""
import shutil

import mido
import numpy as np
import pytest

from sidl.realtime.codec.spec import DRUMS
from sidl.training.corpora import load_corpus
from sidl.training.corpus import data_root, folder_corpus, sections

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


def test_garbled_delta_time_is_skipped_not_allocated(tmp_path, monkeypatch, capsys):
    """A corrupt delta time parses as an event 1e14 beats away: skipped with one line, not a
    petabyte grid (MemoryError) that ends the whole training."""
    monkeypatch.setenv("SIDL_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "mine"
    root.mkdir()
    shutil.copy(data_root() / "groove" / SRC[0], root / "good.mid")
    mid = mido.MidiFile(root / "good.mid")
    track = mid.tracks[-1]
    # The largest delta MIDI can store (2^28 - 1 ticks) before the last note: ~5e5 beats away.
    track.insert(len(track) - 1, mido.Message("note_on", note=36, velocity=90, time=(1 << 28) - 1))
    mid.save(root / "garbled.mid")
    pieces = folder_corpus(root, DRUMS)
    assert [p.name for p in pieces] == ["good.mid"]
    err = capsys.readouterr().err
    assert "garbled.mid" in err and "corrupt delta times" in err


@pytest.mark.parametrize("n, want", [(1, (1, 0, 0)), (2, (1, 0, 1)), (5, (3, 1, 1)), (7, (5, 1, 1))])
def test_small_folders_still_hold_out_a_test_piece(tmp_path, monkeypatch, n, want):
    monkeypatch.setenv("SIDL_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "few"
    root.mkdir()
    for i in range(n):
        shutil.copy(data_root() / "groove" / SRC[0], root / f"t{i:02d}.mid")
    got = tuple(len(load_corpus(str(root), DRUMS, split)[0]) for split in ("train", "validation", "test"))
    assert got == want
    assert len(load_corpus(str(root), DRUMS, None)[0]) == n


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


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_a_corrupt_corpus_cache_is_rebuilt(tmp_path, monkeypatch, capsys, damage):
    monkeypatch.setenv("SIDL_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "mine"
    root.mkdir()
    for i, rel in enumerate(SRC):
        shutil.copy(data_root() / "groove" / rel, root / f"take{i}.mid")
    pieces = folder_corpus(root, DRUMS)
    (cache,) = (tmp_path / "cache").rglob("*.npz")
    data = cache.read_bytes()
    cache.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "garbage": b"garbage\n" * 50}[damage])
    capsys.readouterr()
    again = folder_corpus(root, DRUMS)
    assert [p.name for p in again] == [p.name for p in pieces]
    for a, b in zip(pieces, again):
        np.testing.assert_array_equal(a.x, b.x)
    err = capsys.readouterr().err
    assert err.count("\n") <= 1 and "Traceback" not in err, err
    assert cache.read_bytes() == data                     # rebuilt: the next run reads it again
