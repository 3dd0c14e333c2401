"""k-WTA layer, model configs and the k schedule."""
import numpy as np
import pytest
import torch

from sidl.training.model import ModelConfig, TCNkWTA, kwta, lifetime_wta
from sidl.training.train import TrainArgs, k_for_step

torch.set_num_threads(1)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_kwta_keeps_exactly_k_per_position(k):
    s = torch.randn(3, 50, 7)
    z = kwta(s, k)
    assert ((z != 0).sum(1) == k).all()
    top = s.abs().topk(k, dim=1).values.min(1).values           # the k-th largest magnitude
    assert (z.abs().amax(1) >= top).all()
    kept = z != 0
    assert torch.equal(z[kept], s[kept])                          # winners pass unchanged


def test_kwta_gradients_reach_only_winners():
    s = torch.randn(2, 20, 5, requires_grad=True)
    z = kwta(s, 3)
    z.sum().backward()
    assert torch.equal(s.grad != 0, z.detach() != 0)


def test_nonneg_kwta_never_keeps_negative_codes():
    s = -torch.rand(1, 10, 4)
    assert (kwta(s, 2, nonneg=True) == 0).all()


def test_papers_layer_notation_builds_its_model():
    cfg = ModelConfig.from_layers([1, 8, 16, 32, 1000, 1])
    m = TCNkWTA(cfg)
    assert cfg.n_atoms == 1000 and cfg.tcn_channels == (8, 16, 32)
    y, z = m(torch.randn(2, 1, 64), 3)
    assert y.shape == (2, 1, 64) and ((z != 0).sum(1) == 3).all()
    norms = m.atoms.flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)


def test_decoder_is_a_sum_of_atoms():
    m = TCNkWTA(ModelConfig(27, n_atoms=16))
    z = torch.zeros(1, 16, 2)
    z[0, 3, 0], z[0, 5, 1] = 2.0, -1.0
    y = m.decode(z)[0]
    assert torch.allclose(y[:, :4], 2 * m.atoms[3]) and torch.allclose(y[:, 4:], -m.atoms[5])


def test_k_schedule_decays_then_holds_and_random_draws_stay_in_range():
    rng = np.random.default_rng(0)
    paper = TrainArgs(k_max=4, k_start=4, k_end=1, k_random=False)
    ks = [k_for_step(p, rng, paper) for p in np.linspace(0, 1, 11)]
    assert ks[0] == 4 and ks[-1] == 1 and ks == sorted(ks, reverse=True)
    assert all(k == 1 for k in ks[5:])                              # decays over the first half
    mixed = TrainArgs(k_max=4, k_start=4, k_end=4, k_random=True)
    draws = {k_for_step(0.7, rng, mixed) for _ in range(200)}
    assert draws == {1, 2, 3, 4}


def test_lifetime_sparsity_caps_each_atoms_wins_per_batch_in_training_only():
    z = kwta(torch.randn(4, 30, 8), 3)
    kept = lifetime_wta(z, 0.05)                                   # ceil(0.05 * 32) = 2 per atom
    assert ((kept != 0).sum((0, 2)) <= 2).all() and (kept != 0).sum() > 0
    m = TCNkWTA(ModelConfig(27, n_atoms=30, tcn_channels=(8,), lifetime=0.05))
    x = torch.randn(4, 27, 32)
    m.train()
    assert ((m.encode(x, 3) != 0).sum((0, 2)) <= 2).all()
    m.eval()                                                       # inference: plain k-WTA
    assert ((m.encode(x, 3) != 0).sum(1) == 3).all()


def test_k1_share_sets_how_often_one_atom_per_beat_is_trained():
    rng = np.random.default_rng(1)
    a = TrainArgs(k_max=4, k_start=4, k_end=4, k_random=True, k1_share=0.4)
    draws = np.array([k_for_step(0.5, rng, a) for _ in range(4000)])
    assert abs((draws == 1).mean() - 0.4) < 0.03
    assert set(np.unique(draws)) == {1, 2, 3, 4}


@pytest.mark.parametrize("widths", [(0,), (16, 0), (16, -1)])
def test_every_tcn_width_must_be_at_least_one(widths):
    with pytest.raises(ValueError, match="every TCN width must be a whole number >= 1"):
        ModelConfig(channels=27, tcn_channels=widths)
    ModelConfig(channels=27, tcn_channels=())           # no TCN at all is allowed
