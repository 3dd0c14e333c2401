"""TCN-kWTA autoencoder: the decoder's transposed-conv kernels are the dictionary of atoms.

    x (B, C, T) -> TCN -> code conv (stride = atom hop) -> scores (B, A, T/hop)
      -> k-winners-take-all across atoms at each position -> sparse code z (B, A, T/hop)
      -> ConvTranspose1d(A -> C, kernel = atom length, stride = hop) -> x_hat (B, C, T)

The decoder is linear and bias-free, so a bar is exactly the sum of its (atom, position, amplitude)
triples; atoms are kept at unit norm as in dictionary learning, so amplitudes carry the loudness.
"""
from __future__ import annotations

import math
from numbers import Integral
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class ModelConfig:
    channels: int                     # codec channels in and out (27 for drums)
    n_atoms: int = 512
    atom_length: int = 4              # grid steps per atom (one beat of 16ths by default)
    hop: int = 4                      # stride of the code layer; == atom_length tiles time (meter prior)
    tcn_channels: tuple = (64, 64)    # hidden widths of the dilated conv encoder (dilation 1, 2, 4, ...)
    kernel_size: int = 3
    k_max: int = 4                    # most winners per code position the dictionary is trained for
    nonneg: bool = False              # ReLU before k-WTA: atoms only add, never cancel
    lifetime: float = 0.0             # > 0: in training, each atom keeps only its top fraction of
                                      # activations over the batch (Makhzani & Frey's lifetime sparsity)

    def __post_init__(self):
        if min(self.channels, self.n_atoms, self.atom_length, self.hop, self.kernel_size) < 1:
            raise ValueError("channels, atoms, atom length, hop and kernel size must be >= 1")
        if any(isinstance(w, bool) or not isinstance(w, Integral) or w < 1 for w in self.tcn_channels):
            raise ValueError(f"every TCN width must be a whole number >= 1, got {list(self.tcn_channels)}")
        if self.atom_length % self.hop:
            raise ValueError("atom_length must be a multiple of hop")
        if not 1 <= self.k_max <= self.n_atoms:
            raise ValueError("k_max must be in 1..n_atoms")
        if not 0.0 <= self.lifetime < 1.0:
            raise ValueError("lifetime must be in [0, 1)")

    @classmethod
    def from_layers(cls, layers, **kw) -> "ModelConfig":
        """The paper's notation: [in, tcn..., atoms, out], e.g. [1, 8, 16, 32, 1000, 1]."""
        if len(layers) < 3 or layers[0] != layers[-1]:
            raise ValueError("layers must read [channels, hidden..., n_atoms, channels]")
        return cls(channels=layers[0], n_atoms=layers[-2], tcn_channels=tuple(layers[1:-2]), **kw)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tcn_channels"] = list(self.tcn_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        d["tcn_channels"] = tuple(d["tcn_channels"])
        return cls(**d)


def kwta(scores: torch.Tensor, k: int, nonneg: bool = False) -> torch.Tensor:
    """Keep the k largest activations across atoms (dim 1) at each position; zero the rest.

    scores: (B, A, P). Winners are ranked by magnitude (by value when nonneg, after a ReLU). The
    mask is a constant, so gradients reach only the winners' scores.
    """
    if nonneg:
        scores = F.relu(scores)
    rank = scores if nonneg else scores.abs()
    idx = rank.topk(k, dim=1).indices                       # (B, k, P)
    mask = torch.zeros_like(scores).scatter_(1, idx, 1.0)
    return scores * mask


def lifetime_wta(z: torch.Tensor, rate: float) -> torch.Tensor:
    """Keep, for each atom (dim 1), only its ceil(rate * B * P) largest activations over the batch.

    z: (B, A, P) codes after k-WTA. Spreads the work across atoms: no atom may win everywhere, so
    rarely used atoms get winners (and gradients) of their own.
    """
    B, A, P = z.shape
    n = max(1, math.ceil(rate * B * P))
    flat = z.permute(1, 0, 2).reshape(A, B * P).abs()               # (A, B*P)
    threshold = flat.topk(n, dim=1).values[:, -1]                    # (A,) each atom's n-th largest
    keep = z.abs() >= threshold[None, :, None]
    return z * keep


class TCN(nn.Module):
    """Dilated, non-causal 1-D convs with residual connections (a whole bar is known when it is encoded)."""

    def __init__(self, c_in: int, widths, kernel_size: int):
        super().__init__()
        self.layers = nn.ModuleList()
        c = c_in
        for i, w in enumerate(widths):
            d = 2 ** i
            self.layers.append(nn.Conv1d(c, w, kernel_size, dilation=d, padding=d * (kernel_size - 1) // 2))
            c = w
        self.out_channels = c

    def forward(self, x):                                   # (B, C, T) -> (B, W, T)
        for conv in self.layers:
            y = F.relu(conv(x))
            x = y + x if y.shape == x.shape else y
        return x


class TCNkWTA(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tcn = TCN(cfg.channels, cfg.tcn_channels, cfg.kernel_size)
        # The code layer also sees the raw input: initialised as a matched filter of the atoms, it
        # starts as the first step of a pursuit and the TCN learns what correlation alone gets wrong.
        self.code = nn.Conv1d(cfg.channels + self.tcn.out_channels, cfg.n_atoms,
                              cfg.atom_length, stride=cfg.hop)
        self.decoder = nn.ConvTranspose1d(cfg.n_atoms, cfg.channels, cfg.atom_length,
                                          stride=cfg.hop, bias=False)
        # Each channel's mean feel (e.g. a drum class's mean velocity), read out where no atom sounds
        # strongly enough to carry a template of its own. Set by the trainer's feel refit.
        self.register_buffer("feel_prior", torch.zeros(cfg.channels))
        with torch.no_grad():
            self.normalize_atoms()
            self.tie_code_to_atoms()

    @property
    def atoms(self) -> torch.Tensor:
        """(A, C, L): atom a is the pattern ``atoms[a]`` over C channels and L steps."""
        return self.decoder.weight

    @torch.no_grad()
    def normalize_atoms(self, which=None):
        w = self.decoder.weight if which is None else self.decoder.weight[which]
        n = w.flatten(1).norm(dim=1).clamp_min(1e-8)
        w = w / n[:, None, None]
        if which is None:
            self.decoder.weight.copy_(w)
        else:
            self.decoder.weight[which] = w

    @torch.no_grad()
    def tie_code_to_atoms(self, which=None):
        which = slice(None) if which is None else which
        c = self.cfg.channels
        self.code.weight[which] = 0.0
        self.code.weight[which, :c] = self.decoder.weight[which]
        self.code.bias[which] = 0.0

    def scores(self, x):                                    # (B, C, T) -> (B, A, T/hop)
        return self.code(torch.cat([x, self.tcn(x)], dim=1))

    def encode(self, x, k: int):
        z = kwta(self.scores(x), k, self.cfg.nonneg)
        if self.training and self.cfg.lifetime > 0:
            z = lifetime_wta(z, self.cfg.lifetime)
        return z

    def decode(self, z):                                    # (B, A, P) -> (B, C, P*hop + L - hop)
        return self.decoder(z)

    def forward(self, x, k: int):
        z = self.encode(x, k)
        return self.decode(z)[..., : x.shape[-1]], z
