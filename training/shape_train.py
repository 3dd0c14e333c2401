"""`sidl train CORPUS --codec piano-grid --transpose`: a dictionary of piano shapes placed at any pitch.

    count shapes on the training split (sidl.training.shapes) -> choose the n that explain the
    training beats best together (facility location on pursuit's gain, sidl.training.shape_select)
    -> fit each shape's feel (velocity and length ratio per cell) on the codes pursuit gives
    -> measure on the test split beside the two references -> run folder (run.json, shapes.npz)

The run folder exports like any other (`sidl export RUN`), into a preset whose graphs are the
pursuit encoder and sparse decoder of ``sidl.training.shape_pursuit``.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from sidl.realtime.codec.files import atomic_write, write_json_atomic

from .checkpoint import read_npz, read_run_info, sidl_version
from .corpora import load_corpus
from .piano_eval import greedy_pursuit, loudest_rows, shape_rows
from .shape_select import covering_dictionary
from .shapes import DEFAULT_SPAN, ShapeDictionary

KIND = "piano-shapes"
FEEL_PIECES = 120            # training pieces the feel templates are fitted on
FEEL_PRIOR = 5.0             # pseudo-count pulling a rarely used cell's ratio towards 1


def fit_feel(d: ShapeDictionary, grids: list[np.ndarray], k_max: int) -> ShapeDictionary:
    """Each shape cell's velocity and length as a ratio to its entry's (closed form, shrunk to 1).

    Fitted on the codes greedy pursuit gives at ``k_max``: for every cell that lands on a true
    note, true velocity / entry amplitude and true length / entry length, averaged in log space.
    """
    from .piano_eval import note_lengths
    A, C = d.mask.shape
    L = d.steps_per_beat
    sums = np.zeros((2, A, C))
    n = np.zeros((A, C))
    for x in grids:
        a, dt, t, v, length = greedy_pursuit(x, d, k_max)
        b, slot = np.nonzero(a >= 0)
        ai = a[b, slot]
        step = (b * L + dt[b, slot])[:, None] + d.cells[ai, :, 0]
        key = t[b, slot][:, None] + d.cells[ai, :, 1]
        ok = d.mask[ai] & (step < len(x))
        step, key = np.where(ok, step, 0), np.where(ok, key, 0)
        hit = ok & (x[step, key] > 0.5)
        tv = x[step, 88 + key] * 127.0
        tl = note_lengths(x)[step, key]
        rv = np.log(np.maximum(tv, 1) / np.maximum(v[b, slot], 1)[:, None])
        rl = np.log(np.maximum(tl, 1) / np.maximum(length[b, slot], 1)[:, None])
        cell = np.broadcast_to(np.arange(C), hit.shape)
        np.add.at(sums[0], (np.broadcast_to(ai[:, None], hit.shape)[hit], cell[hit]), rv[hit])
        np.add.at(sums[1], (np.broadcast_to(ai[:, None], hit.shape)[hit], cell[hit]), rl[hit])
        np.add.at(n, (np.broadcast_to(ai[:, None], hit.shape)[hit], cell[hit]), 1)
    ratio = np.exp(sums / (n + FEEL_PRIOR)).astype(np.float32) * d.mask
    return ShapeDictionary(d.cells, d.mask, ratio[0], ratio[1], d.steps_per_beat)


def train_shapes(a, log=sys.stderr) -> dict:
    """The --transpose path of ``sidl.training.train.train`` (``a``: its TrainArgs)."""
    from .train import CODECS, check_out
    t0 = time.perf_counter()
    if a.codec != "piano-grid":
        raise ValueError(f"--transpose places shapes at any pitch: it needs --codec piano-grid, got {a.codec!r}")
    if a.n_atoms < 2:
        raise ValueError(f"--atoms must be >= 2 with --transpose (the single note plus shapes), got {a.n_atoms}")
    codec = CODECS[a.codec]
    out = Path(a.out)
    check_out(out, False)
    train, corpus = load_corpus(a.corpus, codec, "train")
    if not train:
        raise ValueError(f"{a.corpus}: no training pieces")
    grids = [p.x for p in train]
    L = codec.steps_per_beat
    d = covering_dictionary(grids, a.n_atoms, L, a.span, seed=a.seed)
    print(f"chose {d.n_shapes} shapes on {len(train)} pieces in {time.perf_counter() - t0:.0f} s", file=log)
    rng = np.random.default_rng(a.seed)
    feel_on = [grids[i] for i in rng.permutation(len(grids))[:FEEL_PIECES]]
    d = fit_feel(d, feel_on, a.k_max)
    print(f"fitted feel on {len(feel_on)} pieces, {time.perf_counter() - t0:.0f} s", file=log)
    corpus["split"] = "train"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "shapes.npz", lambda tmp: np.savez(tmp, **d.to_arrays()))
    args = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(a).items()}
    write_json_atomic(out / "run.json", {"kind": KIND, "codec": codec.to_dict(),
                                         "model": {"kind": KIND, "n_atoms": d.n_shapes, "atom_length": L,
                                                   "span": a.span, "k_max": a.k_max,
                                                   "selection": "facility location on pursuit gain"},
                                         "corpus": corpus, "args": args, "sidl_version": sidl_version()})
    test, _ = load_corpus(a.corpus, codec, "test")
    test = test[: a.eval_pieces] if a.eval_pieces else test
    ks = list(range(1, a.k_max + 1))
    tg = [np.ascontiguousarray(p.x[: len(p.x) // L * L]) for p in test]
    metrics = {"codec": codec.name, "kind": KIND, "test_pieces": len(test), "atoms": d.n_shapes,
               "pursuit": {str(k): r for k, r in shape_rows(tg, d, ks).items()},
               "loudest": {str(k): r for k, r in loudest_rows(tg, ks, L).items()},
               "training": {"seconds_total": round(time.perf_counter() - t0, 1), "pieces": len(train)}}
    write_json_atomic(out / "metrics.json", metrics)
    return metrics


def is_shape_run(run_dir) -> bool:
    path = Path(run_dir) / "run.json"
    return path.exists() and read_run_info(run_dir).get("kind") == KIND


def load_shapes(run_dir) -> tuple[ShapeDictionary, dict]:
    info = read_run_info(run_dir)
    z = read_npz(Path(run_dir) / "shapes.npz", "shape dictionary")
    try:
        return ShapeDictionary.from_arrays(z), info
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{run_dir}: shapes.npz is not a shape dictionary ({e})") from e
