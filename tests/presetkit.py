"""Tiny training runs and the presets exported from them, made once per test session.

The runs are not trained: their atoms are real corpus patches (a beat of GMD drums, a beat of
POP909 piano), normalised, with the code layer tied to them, so pursuit finds music in real bars,
atoms.mid has notes and the meter prior has structure, in seconds instead of a training run.
"""
from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from sidl.realtime.codec.spec import DRUMS, PIANO_GRID

ROOT = Path(tempfile.mkdtemp(prefix="sidl-presets-"))
atexit.register(shutil.rmtree, ROOT, True)

# (codec, n_atoms, k_max, atom storage, code positions the prior counts)
KINDS = {
    "drums": (DRUMS, 512, 4, "float16", 3000),      # the shipped drum dictionary's size
    "piano": (PIANO_GRID, 96, 3, "int8", 300),
}
CORPUS = {
    "drums": {"name": "groove", "license": "CC BY 4.0 (Groove MIDI Dataset, Google Magenta)", "split": "train"},
    "piano": {"name": "pop909", "license": "MIT (POP909, Music X Lab, NYU Shanghai)", "split": "train"},
}


@functools.lru_cache(maxsize=None)
def pieces(kind: str, split: str):
    if kind == "drums":
        from sidl.training.groove import groove_corpus
        return groove_corpus(split)
    from sidl.training.pop909 import pop909_corpus
    return pop909_corpus(split)


def patch_atoms(kind: str, n_atoms: int, length: int = 4, seed: int = 0) -> torch.Tensor:
    """(n_atoms, channels, length): distinct non-silent training patches, slightly noisy, at unit norm."""
    rng = np.random.default_rng(seed)
    xs = [p.x for p in pieces(kind, "train")[:60]]
    x = np.concatenate([a[: len(a) // length * length] for a in xs])
    n_voices = x.shape[1] // 3
    patches = x.reshape(-1, length, x.shape[1]).transpose(0, 2, 1)           # (P, C, L)
    patches = patches[patches[:, :n_voices].sum((1, 2)) > 0]
    patches = patches[rng.permutation(len(patches))[:20_000]]
    patches = np.unique(patches.reshape(len(patches), -1), axis=0)
    pick = rng.choice(len(patches), n_atoms, replace=False)
    a = patches[pick].reshape(n_atoms, x.shape[1], length)
    # Trained atoms are continuous: a little noise everywhere, so no two atoms tie exactly on a bar.
    a = a + rng.normal(0.0, 0.03, a.shape).astype(np.float32)
    a = torch.from_numpy(a.astype(np.float32))
    return a / a.flatten(1).norm(dim=1)[:, None, None]


@functools.lru_cache(maxsize=None)
def run_dir(kind: str) -> Path:
    from sidl.training.checkpoint import save_model
    from sidl.training.model import ModelConfig, TCNkWTA
    codec, n_atoms, k_max, _, _ = KINDS[kind]
    torch.manual_seed(0)
    model = TCNkWTA(ModelConfig(channels=codec.channels, n_atoms=n_atoms, k_max=k_max,
                                tcn_channels=(16,)))
    with torch.no_grad():
        model.decoder.weight.copy_(patch_atoms(kind, n_atoms))
        model.tie_code_to_atoms()
        n = codec.n_voices
        model.feel_prior[n:2 * n] = 0.6                  # mean velocity, read where atoms barely sound
        if kind == "drums":
            model.feel_prior[2 * n:] = 0.05              # mean microtiming
    path = ROOT / "runs" / kind
    save_model(path, model, codec, CORPUS[kind], {"seed": 0})
    (path / "metrics.json").write_text(json.dumps({"test": {"f1": 0.5}}))
    return path


@functools.lru_cache(maxsize=None)
def preset_dir(kind: str) -> Path:
    """Exported once per session (with its .sidl archive beside it) under ROOT/presets."""
    from sidl.export.preset import export_preset
    _, _, _, storage, positions = KINDS[kind]
    return export_preset(run_dir(kind), f"test-{kind}", ROOT / "presets", f"test {kind} preset",
                         archive=True, atom_dtype=storage, pieces=pieces(kind, "train"),
                         max_positions=positions)


def copy_preset(kind: str, dest: Path) -> Path:
    """A private copy to break (the session's preset stays intact)."""
    src = preset_dir(kind)
    return Path(shutil.copytree(src, dest / src.name))
