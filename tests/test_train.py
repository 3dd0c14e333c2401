"""Training runs: a tiny real-data run writes its run folder, resumes exactly, and trains under DDP."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from sidl.training.checkpoint import load_model
from sidl.training.pursuit import channel_roles, pursuit
from sidl.realtime.codec.spec import DRUMS
from sidl.training.train import TrainArgs, train

TINY = dict(corpus="groove", codec="drums", n_atoms=32, tcn=(16,), max_sections=96, batch=16,
            eval_pieces=3, threads=1, resample_every=5)


def _weights(run):
    with np.load(run / "model.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.mark.slow
def test_tiny_run_writes_model_and_metrics(tmp_path):
    m = train(TrainArgs(out=str(tmp_path), epochs=2, **TINY))
    for name in ("run.json", "model.npz", "metrics.json", "checkpoint.npz"):
        assert (tmp_path / name).exists()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert set(saved["pursuit"]) == {"1", "2", "3", "4"}
    f1 = [saved["pursuit"][k]["all"]["f1"] for k in "1234"]
    assert f1[3] > f1[0] > 0.3                                     # more atoms, better reconstruction
    model, codec, info = load_model(tmp_path)
    assert codec == DRUMS and info["corpus"]["name"] == "groove" and "CC BY" in info["corpus"]["license"]
    assert m["training"]["epochs"] == 2


@pytest.mark.slow
def test_resume_continues_to_the_same_weights(tmp_path):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    train(TrainArgs(out=str(straight), epochs=3, **TINY))
    train(TrainArgs(out=str(broken), epochs=1, **TINY))            # "interrupted" after one epoch
    train(TrainArgs(out=str(broken), epochs=3, resume=True, **TINY))
    a, b = _weights(straight), _weights(broken)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.slow
def test_two_rank_ddp_run_ends_with_identical_weights(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "sidl.training.cli", "groove", "--out", str(tmp_path), "--atoms", "32", "--tcn", "16",
           "--epochs", "2", "--max-sections", "64", "--batch", "16", "--eval-pieces", "2", "--threads", "1"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    h0, h1 = ((tmp_path / f"rank{i}.sha256").read_text() for i in (0, 1))
    assert h0 == h1
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["training"]["world_size"] == 2


def test_pursuit_uses_exactly_k_atoms_and_more_atoms_fit_better():
    torch.manual_seed(0)
    atoms = torch.randn(40, 27, 4)
    atoms /= atoms.flatten(1).norm(dim=1)[:, None, None]
    x = torch.zeros(1, 27, 16)
    x[0, :9] = (torch.rand(9, 16) > 0.7).float()
    roles = channel_roles(DRUMS)
    cls = torch.zeros(27, dtype=torch.bool)
    cls[list(roles.classify)] = True
    errs = []
    for k in (1, 2, 4):
        idx, val = pursuit(x, atoms, torch.tensor(k), 4, cls, roles)
        assert ((val != 0).sum(1) <= k).all() and (val[:, k:] == 0).all()
        for p in range(4):
            assert len(set(idx[0, :k, p].tolist())) == k           # no atom chosen twice at a position
        y = torch.einsum("kp,kpcl->cpl", val[0], atoms[idx[0]]).reshape(27, 16)
        errs.append(int(((y[:9] > 0.5) != (x[0, :9] > 0.5)).sum()))
    assert errs[0] >= errs[1] >= errs[2]


@pytest.mark.slow
def test_minutes_is_the_training_time(tmp_path):
    """--minutes budgets the training loop itself: a short budget trains for that long (it used to
    reserve a minute for evaluation first, and a one-minute run trained one step)."""
    m = train(TrainArgs(out=str(tmp_path), minutes=0.1, **TINY))
    t = m["training"]
    assert 6.0 <= t["seconds_training"] < 20 and t["steps"] > 20, t
    assert t["seconds_total"] >= t["seconds_training"]
