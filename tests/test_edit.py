"""Edits of sparse bar codes: exact counts, the prior respected, seeds replayed."""
import numpy as np
import pytest

from sidl.realtime.edit import (keep_top_atoms, last_atom, n_active, stitch_bar, swap_atoms,
                                vary_atoms)


def code(rng, positions=4, k=3, n_atoms=20):
    idx = rng.integers(0, n_atoms, (positions, k))
    val = rng.normal(size=(positions, k)).astype(np.float32)
    return idx, val


@pytest.mark.parametrize("n", [0, 1, 5, 12, 40])
def test_keep_top_atoms_keeps_exactly_the_n_strongest(n):
    idx, val = code(np.random.default_rng(0))
    kidx, kval = keep_top_atoms(idx, val, n)
    assert kval.shape == val.shape and np.array_equal(kidx, idx)
    assert n_active(kval) == min(n, 12)
    kept = np.abs(kval[kval != 0])
    dropped = np.abs(val[kval == 0])
    if len(kept) and len(dropped):
        assert kept.min() >= dropped.max()
    assert np.array_equal(kval[kval != 0], val[kval != 0])   # kept values are untouched


def test_keep_top_atoms_ignores_empty_slots():
    idx = np.zeros((2, 2), np.int64)
    val = np.array([[0.5, 0], [0, 0]], np.float32)
    assert n_active(keep_top_atoms(idx, val, 3)[1]) == 1


def test_swap_atoms_permutes_whole_positions():
    rng = np.random.default_rng(1)
    idx, val = code(rng, positions=8)
    sidx, sval = swap_atoms(idx, val, np.random.default_rng(2), amount=1.0)
    rows = {tuple(r) for r in np.concatenate([idx, val], 1)}
    assert {tuple(r) for r in np.concatenate([sidx, sval], 1)} == rows
    assert not np.array_equal(sidx, idx)
    same = swap_atoms(idx, val, np.random.default_rng(2), amount=0.0)
    assert np.array_equal(same[0], idx) and np.array_equal(same[1], val)


def test_vary_atoms_amount_zero_is_identity_and_one_follows_the_prior():
    idx, val = code(np.random.default_rng(3))
    usage = np.zeros((20, 4))
    usage[7, :] = 1.0                         # the prior only likes atom 7
    vidx, vval = vary_atoms(idx, val, np.random.default_rng(4), 0.0, usage)
    assert np.array_equal(vidx, idx) and np.array_equal(vval, val)
    vidx, vval = vary_atoms(idx, val, np.random.default_rng(4), 1.0, usage)
    assert np.all(vidx[val != 0] == 7) and np.array_equal(vval, val)


def test_stitch_bar_density_and_prior():
    rng = np.random.default_rng(5)
    n_atoms, positions = 30, 4
    usage = np.zeros((n_atoms, positions))
    for p in range(positions):
        usage[[p, 10 + p], p] = 1.0           # two atoms allowed per position
    transitions = np.ones((n_atoms, n_atoms))
    idx, val = stitch_bar(rng, usage, transitions, density=1.0)
    assert idx.shape == (4, 1) and n_active(val) == 4
    assert all(idx[p, 0] in (p, 10 + p) for p in range(positions))
    idx, val = stitch_bar(rng, usage, transitions, density=2.0)
    assert n_active(val) == 8
    assert all(sorted(idx[p]) == [p, 10 + p] for p in range(positions))  # no repeats at a position


def test_stitch_bar_fractional_density_averages_out():
    rng = np.random.default_rng(6)
    usage = np.ones((50, 4))
    counts = [n_active(stitch_bar(rng, usage, np.ones((50, 50)), 1.5)[1]) for _ in range(400)]
    assert np.mean(counts) / 4 == pytest.approx(1.5, abs=0.05)
    assert n_active(stitch_bar(rng, usage, np.ones((50, 50)), 0.0)[1]) == 0


def test_stitch_bar_follows_transitions_across_the_bar_line():
    rng = np.random.default_rng(7)
    n_atoms = 6
    usage = np.ones((n_atoms, 4))
    transitions = np.zeros((n_atoms, n_atoms))
    for a in range(n_atoms):
        transitions[a, (a + 1) % n_atoms] = 1.0      # a chain: a -> a+1
    idx, val = stitch_bar(rng, usage, transitions, 1.0, prev=2)
    assert idx[:, 0].tolist() == [3, 4, 5, 0]
    assert last_atom(idx, val) == 0
    idx2, _ = stitch_bar(rng, usage, transitions, 1.0, prev=last_atom(idx, val))
    assert idx2[0, 0] == 1


def test_stitch_bar_is_replayed_by_its_seed_and_uses_scale():
    usage = np.random.default_rng(8).random((40, 4))
    tr = np.random.default_rng(9).random((40, 40))
    scale = np.linspace(0.5, 2.0, 40).astype(np.float32)
    a = stitch_bar(np.random.default_rng(10), usage, tr, 2.5, scale=scale)
    b = stitch_bar(np.random.default_rng(10), usage, tr, 2.5, scale=scale)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    on = a[1] != 0
    assert np.allclose(a[1][on], scale[a[0][on]])


def test_stitch_bar_checks_shapes():
    with pytest.raises(ValueError, match="transitions"):
        stitch_bar(np.random.default_rng(0), np.ones((5, 4)), np.ones((4, 4)), 1.0)
    with pytest.raises(ValueError, match="density"):
        stitch_bar(np.random.default_rng(0), np.ones((5, 4)), np.ones((5, 5)), -1.0)
