"""The corpus cache: sparse on disk, exact on load, moved by SIDL_CACHE, listed and cleared by `sidl cache`."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from sidl.realtime.codec.spec import DRUMS, PIANO_EVENTS, PIANO_GRID
from sidl.training import corpus
from sidl.training.corpus import folder_corpus
from sidl.training.pop909 import pop909_corpus

SONGS = ["001", "002", "500"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SIDL_CACHE", str(tmp_path / "cache"))


def _one_cache_file(tmp_path):
    (path,) = (tmp_path / "cache" / "corpora").glob("*.npz")
    return path


@pytest.mark.parametrize("codec", [PIANO_GRID, PIANO_EVENTS])
def test_the_piano_cache_is_a_small_fraction_of_the_dense_arrays(tmp_path, codec):
    pieces = pop909_corpus(songs=SONGS, codec=codec)
    dense = sum(p.x.nbytes for p in pieces)
    size = _one_cache_file(tmp_path).stat().st_size
    # the piano grid is > 97% zeros: dense it took ~1 kB per step, sparse it is a few bytes per note
    limit = dense / 40 if codec.is_grid else dense
    assert size < limit, (size, dense)


def test_the_drum_cache_is_small_and_loads_back_exactly(tmp_path, monkeypatch):
    root = tmp_path / "gmd"
    root.mkdir()
    for i, f in enumerate(sorted((corpus.data_root() / "groove" / "drummer1" / "session1").glob("*.mid"))[:30]):
        shutil.copy(f, root / f"{i:02d}.mid")
    first = folder_corpus(root, DRUMS)
    dense = sum(p.x.nbytes for p in first)
    assert _one_cache_file(tmp_path).stat().st_size < dense / 10
    monkeypatch.setattr(corpus, "encode_file", lambda *a, **k: pytest.fail("parsed a file on a cache hit"))
    again = folder_corpus(root, DRUMS)
    assert len(again) == len(first) == 30
    for a, b in zip(first, again):
        assert a.x.dtype == b.x.dtype and a.x.shape == b.x.shape
        np.testing.assert_array_equal(a.x, b.x)      # exact: offsets and velocities are not rounded


def test_pack_round_trips_any_values():
    rng = np.random.default_rng(0)
    x = np.where(rng.random((300, 27)) < 0.1, rng.normal(size=(300, 27)), 0).astype(np.float32)
    x[0, 0] = 1.5                                    # a nonzero at flat position 0
    np.testing.assert_array_equal(corpus._unpack(corpus._pack(x)), x)
    empty = np.zeros((0, 264), np.float32)
    assert corpus._unpack(corpus._pack(empty)).shape == (0, 264)


def _sidl(*args, env_cache):
    env = dict(os.environ, SIDL_CACHE=str(env_cache))
    return subprocess.run([sys.executable, "-m", "sidl.realtime.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_sidl_cache_info_and_clear(tmp_path):
    pop909_corpus(songs=SONGS[:2], codec=PIANO_GRID)
    path = _one_cache_file(tmp_path)
    info = _sidl("cache", "info", "--time", env_cache=tmp_path / "cache")
    assert info.returncode == 0, info.stderr
    assert str(tmp_path / "cache" / "corpora") in info.stdout and path.name in info.stdout
    assert "2 pieces, loaded in" in info.stdout
    cleared = _sidl("cache", "clear", env_cache=tmp_path / "cache")
    assert cleared.returncode == 0 and "removed 1 files" in cleared.stdout, cleared
    assert not path.exists()
    assert "0 files" in _sidl("cache", "info", env_cache=tmp_path / "cache").stdout
