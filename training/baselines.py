"""Reference runs: dense dictionary learning on one-beat patches (scikit-learn), scored like sidl.

    python -m sidl.training.baselines --out training/reference

MiniBatchDictionaryLearning (100 atoms) on every one-beat patch (4 steps x 27) of the GMD train
split, codes by OMP with k nonzeros per beat: the same shift-invariant model (one atom per beat
slot) solved by pursuit over a dictionary learned without an autoencoder. Scored by
``sidl.training.metrics`` on the same test pieces, beats and fills apart, so the rows compare
directly with a run's metrics.json. Needs the dev extra (scikit-learn).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import typer

from sidl.realtime.codec.spec import DRUMS

from sidl.training.groove import groove_corpus
from sidl.training.metrics import Counts, drum_constant_reference

L = DRUMS.steps_per_beat


def _patches(x: np.ndarray) -> np.ndarray:
    T = len(x) // L * L
    return x[:T].reshape(-1, L * x.shape[1])


def run_baseline(alpha: float, n_atoms: int = 100, k_max: int = 4, max_iter: int = 3, seed: int = 0) -> dict:
    from sklearn.decomposition import MiniBatchDictionaryLearning
    from sklearn.linear_model import orthogonal_mp_gram
    train, test = groove_corpus("train"), groove_corpus("test")
    t0 = time.perf_counter()
    model = MiniBatchDictionaryLearning(n_components=n_atoms, alpha=alpha, batch_size=256,
                                        max_iter=max_iter, random_state=seed)
    model.fit(np.concatenate([_patches(p.x) for p in train]))
    fit_s = time.perf_counter() - t0
    D = model.components_.astype(np.float64)
    gram = D @ D.T
    rows = {}
    for k in range(1, k_max + 1):
        counts = {g: Counts() for g in ("all", "beat", "fill")}
        for p in test:
            P = _patches(p.x).astype(np.float64)
            codes = orthogonal_mp_gram(gram, (P @ D.T).T, n_nonzero_coefs=k).T
            y = (codes @ D).astype(np.float32).reshape(-1, p.x.shape[1])
            x = p.x[: len(y)]
            for g in ("all", p.labels["beat_type"]):
                counts[g].add_drums(x, y)
        rows[str(k)] = {g: c.report(feel=True) for g, c in counts.items()}
    return {"codec": "drums", "method": f"MiniBatchDictionaryLearning({n_atoms} atoms, alpha={alpha}, "
                                         f"max_iter={max_iter}) + OMP on one-beat patches",
            "test_pieces": len(test), "atoms": n_atoms, "pursuit": rows, "fit_seconds": round(fit_s, 1),
            "constant_reference": drum_constant_reference([p.x for p in train], [p.x for p in test])}


def main(out: Path = typer.Option(Path("training/reference"), help="folder for the reference JSON files")):
    out.mkdir(parents=True, exist_ok=True)
    for alpha in (1.0, 0.2):
        m = run_baseline(alpha)
        (out / f"baseline-dl-alpha{alpha}.json").write_text(json.dumps(m, indent=2) + "\n")
        f1 = " ".join(f"{m['pursuit'][k]['all']['f1']:.3f}" for k in "1234")
        print(f"alpha {alpha}: F1 at k=1..4: {f1}  (fit {m['fit_seconds']} s)")


if __name__ == "__main__":
    typer.run(main)
