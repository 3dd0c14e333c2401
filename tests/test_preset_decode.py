"""The shipped presets' decoding on the live path: positions decoded once and reused, exactly."""
import numpy as np
import pytest

from sidl.realtime.live.clock import InternalClock
from sidl.realtime.controls import Controls
from sidl.realtime.edit import stitch_bar, vary_atoms
from sidl.realtime.live.bars import BarJob
from sidl.realtime.live.engine import build_engine
from sidl.realtime.codec.notes import NoteArray
from sidl.realtime.preset import Preset, load_preset


@pytest.fixture(scope="module", params=["drums-gmd", "piano-pop909"])
def preset(request):
    return load_preset(request.param)


def test_reused_positions_decode_exactly_as_the_graph(preset):
    """Random codes (repeats, empty slots, negative amplitudes, fresh and seen positions) against a
    graph run on the whole bar each time."""
    rng = np.random.default_rng(0)
    pool = rng.integers(0, preset.n_atoms, (6, 3))                 # a few positions that come back
    for _ in range(200):
        positions, k = int(rng.integers(1, 9)), int(rng.integers(1, 4))
        idx = np.where(rng.random((positions, 1)) < 0.5, pool[rng.integers(0, 6, positions)][:, :k],
                       rng.integers(0, preset.n_atoms, (positions, k)))
        val = rng.choice([0.0, 0.5, 1.0, -0.7], (positions, k)).astype(np.float32)
        assert np.array_equal(preset.decode_bar(idx, val), preset.run_decoder(idx, val))


def test_generated_beats_of_one_atom_never_run_the_graph(preset, monkeypatch):
    """Each atom at its typical amplitude is decoded at load; generate at density 1 (the default)
    draws, varies and plays only such beats, so no bar runs the decoder graph."""
    runs = []
    real = Preset.run_decoder
    monkeypatch.setattr(Preset, "run_decoder", lambda self, i, v: runs.append(len(i)) or real(self, i, v))
    clock = InternalClock(120.0)
    e, r = build_engine(preset, Controls(mode="generate", variation=0.5), channel=9, clock=clock)
    notes = 0
    for bar in range(300):
        notes += len(r.render(BarJob(bar, NoteArray.empty(), e.controls, clock.timeline))) // 2
    assert runs == [] and notes > 300


def test_vary_with_scale_gives_replacements_their_own_typical_value():
    rng = np.random.default_rng(3)
    usage = rng.random((40, 4))
    scale = np.linspace(0.5, 1.5, 40).astype(np.float32)
    idx, val = stitch_bar(rng, usage, np.ones((40, 40)), 2.0, None, scale)
    new_idx, new_val = vary_atoms(idx, val, rng, 1.0, usage, scale=scale)
    assert (new_idx != idx).any()
    np.testing.assert_array_equal(new_val, np.where(val != 0, scale[new_idx], 0))
    kept_idx, kept_val = vary_atoms(idx, val, np.random.default_rng(3), 1.0, usage)   # a played bar
    np.testing.assert_array_equal(kept_val, val)
