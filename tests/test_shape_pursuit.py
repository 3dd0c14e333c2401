"""The piano preset's numpy pursuit gives exactly its encoder graph's codes, and is refused when not."""
import numpy as np
import pytest

from sidl.realtime.codec.spec import PIANO_GRID
from sidl.realtime.preset import load_preset
from sidl.realtime.preset import pursuit as shape_pursuit
from sidl.realtime.preset.model import numpy_pursuit
from sidl.training.pop909 import pop909_corpus

SPB = PIANO_GRID.steps_per_bar


@pytest.fixture(scope="module", params=["piano-pop909", "piano-asap"])
def preset(request):
    """Both shipped piano presets: their longest shapes (11 and 12 cells) sum in two and three
    packets, the two longer orders of ``eigen_sum_columns``."""
    return load_preset(request.param)


@pytest.fixture(scope="module")
def windows():
    """Real POP909 test bars (every 7th bar of 30 songs) and three whole songs (long windows)."""
    songs = [np.ascontiguousarray(p.x[: len(p.x) // SPB * SPB], np.float32) for p in pop909_corpus("test")[:30]]
    bars = [s[b: b + SPB] for s in songs for b in range(0, len(s) - SPB, 7 * SPB)]
    return bars, songs[:3]


def test_the_shipped_piano_preset_encodes_with_the_numpy_pursuit(preset):
    assert preset.pursuit is not None


def test_numpy_pursuit_equals_the_encoder_graph_on_real_bars_at_every_k(preset, windows):
    bars, songs = windows
    assert len(bars) > 300
    for x in bars + songs:
        for k in range(1, preset.k_max + 1):
            got, want = preset.pursuit.encode(x, k), preset.run_encoder(x, k)
            assert np.array_equal(got[0], want[0]) and got[0].dtype == want[0].dtype
            assert np.array_equal(got[1], want[1]) and got[1].dtype == want[1].dtype   # bit for bit


def test_the_tables_read_without_onnx_are_the_graphs_initializers(preset):
    import onnx
    from onnx import numpy_helper
    data = (preset.path / "encoder.onnx").read_bytes()
    ours = shape_pursuit.read_initializers(data, shape_pursuit.TABLES)
    theirs = {t.name: numpy_helper.to_array(t) for t in onnx.load_from_string(data).graph.initializer}
    for name in shape_pursuit.TABLES:
        assert ours[name].dtype == theirs[name].dtype and np.array_equal(ours[name], theirs[name])


def test_a_pursuit_that_does_not_reproduce_the_graph_is_refused(preset, monkeypatch):
    """Summing a placement's velocities left to right (not in onnxruntime's order) changes the
    last bit of some amplitudes: the load check sees it and the preset keeps its graph."""
    data = (preset.path / "encoder.onnx").read_bytes()
    assert numpy_pursuit(preset, data) is not None
    left_to_right = shape_pursuit.eigen_sum_columns(preset.pursuit.Cmax)[1]
    monkeypatch.setattr(shape_pursuit, "eigen_sum_columns", lambda C: np.tile(left_to_right, (4, 1)))
    assert numpy_pursuit(preset, data) is None
    monkeypatch.undo()
    assert numpy_pursuit(preset, b"not an onnx model") is None
