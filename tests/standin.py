"""A tiny pure-numpy stand-in for a preset: a dictionary of single-hit atoms.

Atom ``a = s * n_voices + v`` is one hit of voice ``v`` on step ``s`` of a code position
(``stride`` steps). Encoding keeps, per position, the ``k`` loudest hits (value = velocity / 127);
decoding writes them back. So echo reconstructs exactly up to k hits per position, simplify keeps
the loudest notes, and the timing of everything is known exactly, which is what the engine tests
need. For drums it adds a fixed "learned feel": off-beat 16ths are ``feel`` steps late, so
``--quantize`` has something to remove. The real preset (ONNX, from ``sidl.realtime.preset``)
has the same attributes and drops in.
"""
from __future__ import annotations

import numpy as np

from sidl.realtime.codec.spec import DRUMS, PIANO_GRID, Codec


class ImpulseModel:
    def __init__(self, codec: Codec = DRUMS, stride: int = 4, k: int = 4, feel: float = 0.1, seed: int = 0):
        self.codec, self.stride, self.k = codec, stride, k
        self.n_voices = codec.n_voices
        self.feel = feel if codec.name == "drums" else 0.0
        n_atoms = stride * self.n_voices
        positions = codec.steps_per_bar // stride
        rng = np.random.default_rng(seed)
        self.usage = rng.random((n_atoms, positions)) ** 4      # a peaky meter prior
        self.transitions = rng.random((n_atoms, n_atoms)) ** 4
        self.atom_scale = np.full(n_atoms, 0.8, np.float32)

    def encode_bar(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        nv, st = self.n_voices, self.stride
        positions = x.shape[0] // st
        hit = x[: positions * st, :nv] > 0.5
        score = np.where(hit, x[: positions * st, nv:2 * nv], 0.0).reshape(positions, st * nv)
        idx = np.argsort(-score, axis=1, kind="stable")[:, :k]
        val = np.take_along_axis(score, idx, axis=1).astype(np.float32)
        return idx.astype(np.int64), val

    def decode_bar(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        nv, st = self.n_voices, self.stride
        positions = idx.shape[0]
        y = np.zeros((positions * st, 3 * nv), np.float32)
        p, j = np.nonzero(val != 0)
        s, v = np.divmod(idx[p, j], nv)
        step = p * st + s
        y[step, v] = 1.0
        y[step, nv + v] = np.clip(np.abs(val[p, j]), 0.0, 1.0)
        if self.codec.name == "drums":
            y[step, 2 * nv + v] = np.where(step % 2 == 1, self.feel, 0.0)
        return y


def drum_model() -> ImpulseModel:
    return ImpulseModel(DRUMS)


def piano_model() -> ImpulseModel:
    return ImpulseModel(PIANO_GRID, k=6)
