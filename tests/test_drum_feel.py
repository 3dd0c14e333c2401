"""Drum feel carried by the code: each entry's gain and timing levels follow what was played."""
import numpy as np
import pytest
import torch

from sidl.realtime.codec.drumfeel import FEEL_CODES, GAINS, OFFSETS, code_atom, feel_levels, pack
from sidl.realtime.codec.drums import N_CLASSES, encode_drums
from sidl.realtime.compose import Composer
from sidl.realtime.controls import Controls
from sidl.realtime.preset import load_preset
from sidl.training.drum_feel import decode_feel, fit_feel

V, O = slice(N_CLASSES, 2 * N_CLASSES), slice(2 * N_CLASSES, 3 * N_CLASSES)


@pytest.fixture(scope="module")
def preset():
    return load_preset("drums-gmd")


@pytest.fixture(scope="module")
def groove(gmd_bars, preset):
    """The eight real GMD bars as one (steps, 27) grid."""
    steps = preset.codec.steps_per_bar
    return np.concatenate([encode_drums(b, steps) for b in gmd_bars])


def test_levels_pack_into_the_entry_and_level_zero_is_the_atom_as_it_is():
    atoms = np.array([0, 5, 959])
    for g, t in ((0, 0), (31, 0), (0, 15), (7, 9)):
        e = pack(atoms, g, t, 960)
        assert np.array_equal(code_atom(e, 960), atoms)
        assert [a.tolist() for a in feel_levels(e, 960)] == [[g] * 3, [t] * 3]
    assert np.array_equal(pack(atoms, 0, 0, 960), atoms)
    assert GAINS[0] == 1.0 and OFFSETS[0] == 0.0 and FEEL_CODES == len(GAINS) * len(OFFSETS)
    assert len(set(GAINS.tolist())) == len(GAINS)
    # timing level 0 keeps the atom's own offsets; the others are absolute means, 0.0 among them
    assert len(set(OFFSETS[1:].tolist())) == len(OFFSETS) - 1 and 0.0 in OFFSETS[1:].tolist()


def test_the_shipped_drum_preset_carries_feel(preset):
    assert preset.feel_codes and preset.manifest["schema_version"] == 3
    assert preset.manifest["atoms"]["kind"] == "drum-feel"


def _hit_feel(preset, x, k):
    """Mean played and decoded velocity and offset over the played hits of ``x``."""
    y = preset.decode_bar(*preset.encode_bar(np.ascontiguousarray(x, np.float32), k))
    hits = x[:, :N_CLASSES] > 0.5
    return y[:, V][hits].mean(), y[:, O][hits].mean(), y


@pytest.mark.parametrize("k", [1, 4])
def test_playing_softer_or_later_is_heard_in_the_decoded_bar(preset, groove, k):
    """The same real groove played at half velocity, and 0.15 steps late: the pattern decodes the
    same, its velocities about halve, its hits move late. Without feel levels they would not move."""
    vel0, off0, y0 = _hit_feel(preset, groove, k)
    soft = groove.copy()
    soft[:, V] *= 0.5
    vel, off, y = _hit_feel(preset, soft, k)
    assert np.array_equal(y[:, :N_CLASSES] > 0.5, y0[:, :N_CLASSES] > 0.5)
    assert 0.4 < vel / vel0 < 0.6
    late = groove.copy()
    hits = late[:, :N_CLASSES] > 0.5
    late[:, O] = np.where(hits, np.clip(late[:, O] + 0.15, -0.5, 0.45), 0.0)
    _, off_late, _ = _hit_feel(preset, late, k)
    assert 0.10 < off_late - off0 < 0.20


def test_feel_levels_bring_the_decoded_velocities_closer_to_the_played_ones(preset, groove):
    """Against the same entries at level 0 (each atom's template): closer on the played hits."""
    idx, val = preset.encode_bar(np.ascontiguousarray(groove, np.float32), 2)
    assert np.any(idx >= preset.n_atoms)                             # levels are in use
    hits = groove[:, :N_CLASSES] > 0.5
    err = lambda y: np.abs(y[:, V][hits] - groove[:, V][hits]).mean() * 127
    with_feel = err(preset.decode_bar(idx, val))
    template = err(preset.decode_bar(code_atom(idx, preset.n_atoms), val))
    print(f"velocity error on played hits: {with_feel:.1f} with feel levels, {template:.1f} without")
    assert with_feel < 0.85 * template


def test_the_decoder_graph_matches_the_torch_decoder_on_packed_entries(preset):
    """Random atoms at random levels, empty slots and negative amplitudes: the preset's ONNX graph
    and the torch code (on the graph's own atoms) decode alike."""
    import onnx
    from onnx import numpy_helper
    init = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(preset.path / "decoder.onnx")).graph.initializer}
    atoms = torch.from_numpy(init["atoms.stored"].astype(np.float32) * init["atoms.scale"])
    rng = np.random.default_rng(3)
    for _ in range(20):
        positions, k = int(rng.integers(1, 9)), int(rng.integers(1, 5))
        idx = pack(rng.integers(0, preset.n_atoms, (positions, k)), rng.integers(0, len(GAINS), (positions, k)),
                   rng.integers(0, len(OFFSETS), (positions, k)), preset.n_atoms)
        val = rng.choice([0.0, 0.6, 1.2, -0.4], (positions, k)).astype(np.float32)
        got = preset.run_decoder(idx, val)
        assert np.array_equal(preset.decode_bar(idx, val), got)          # reused positions too
        y_hits = preset.decode_bar(code_atom(idx, preset.n_atoms), val)[:, :N_CLASSES]
        np.testing.assert_allclose(got[:, :N_CLASSES], y_hits, atol=1e-6)  # levels never move hits
        ref = decode_feel(torch.from_numpy(idx.T.copy()), torch.from_numpy(val.T.copy()), atoms, None, 0.1).numpy()
        strong = np.tile(ref[:, :N_CLASSES] > 0.1, 3)                   # feel where a hit sounds
        np.testing.assert_allclose(got[strong], ref[strong], atol=1e-5)


def test_fit_feel_leaves_entries_that_own_no_played_hit_at_level_zero():
    atoms = torch.zeros(3, 27, 4)
    atoms[1, 0, 0] = atoms[1, N_CLASSES, 0] = 1.0                     # kick on the beat at velocity 1
    x = torch.zeros(8, 27)
    x[0, 0], x[0, N_CLASSES] = 1.0, 0.5                               # played: a half-velocity kick
    idx = torch.tensor([[1, 1], [2, 0]])                               # slot 2 is empty at position 0
    val = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    packed = fit_feel(x, idx, val, atoms[:, :N_CLASSES], atoms[:, V])
    gain, timing = feel_levels(packed.numpy(), 3)
    assert abs(GAINS[gain[0, 0]] - 0.5) < 0.05 and timing[0, 0] > 0
    assert packed[0, 1] == 1 and packed[1, 0] == 2 and packed[1, 1] == 0


def test_the_prior_continues_from_the_atom_of_a_packed_entry(preset, gmd_bars):
    """After a played bar the prior continues from its last atom (what a fill or a switch to
    generate stitches from), not from nowhere, although the encoder packed feel levels above it."""
    comp = Composer(preset)
    comp.compose(0, gmd_bars[0], Controls(mode="simplify"))
    assert comp._prev_atom is not None and 0 <= comp._prev_atom < preset.n_atoms


def test_interpolating_two_takes_of_one_groove_keeps_every_beat(preset, groove):
    """A softer, later take of the same groove: its entries carry other feel levels, yet pair with
    the first take's by atom, so the way between them keeps the groove's hits, beat for beat."""
    from sidl.realtime.tools.create import interpolate
    other = groove.copy()
    other[:, V] *= 0.6
    hits = other[:, :N_CLASSES] > 0.5
    other[:, O] = np.where(hits, np.clip(other[:, O] + 0.15, -0.5, 0.45), 0.0)
    a = preset.decode_bar(*preset.encode_bar(np.ascontiguousarray(groove, np.float32), preset.k))
    (mid,) = interpolate(preset, groove, other, 1)
    assert np.array_equal(mid[:, :N_CLASSES] > 0.5, a[:, :N_CLASSES] > 0.5)


def test_the_meter_prior_counts_a_packed_entry_as_its_atom(preset, groove):
    from sidl.export.prior import count_prior
    idx, val = preset.encode_bar(np.ascontiguousarray(groove, np.float32), 1)
    assert np.any(idx >= preset.n_atoms)
    packed = count_prior([(idx, val)], preset.n_atoms, 4, preset.entry_atoms)
    plain = count_prior([(code_atom(idx, preset.n_atoms), val)], preset.n_atoms, 4)
    assert np.array_equal(packed.usage, plain.usage) and packed.usage.sum() > 0
    with pytest.raises(ValueError, match="not atoms"):
        count_prior([(idx, val)], preset.n_atoms, 4)
