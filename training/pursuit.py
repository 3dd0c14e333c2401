"""Sparse coding over a learned dictionary, written once in torch so metrics and ONNX export agree.

The TCN-kWTA encoder learns the atoms; to *choose* the k winners of a bar we refine by pursuit over
those atoms (the paper's shift-invariant model solved greedily, one code position at a time):

    for s in 1..k:   among the atoms best correlated with the residual, pick the one that, added
                     with its best amplitude, leaves the fewest wrong hits/onsets (ties: largest
                     correlation); then refit every chosen amplitude (Gauss-Seidel sweeps, one
                     atom at a time: exportable, no solver needed).

Amplitudes minimise the training loss of the classification channels, squared error clipped at 0
and 1, not plain least squares: on sparse binary targets least squares shrinks a partly matching
atom below the 0.5 decision and the code plays nothing.

Only the classification channels (hits, onsets, holds) drive the code. Feel channels (velocity,
microtiming) are read out by the decoder as ratios to their hit channel, so every atom carries a
feel template that scales with it: y_vel / y_hit is the hit-weighted mean velocity of the atoms
sounding there.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sidl.realtime.codec.spec import Codec


@dataclass(frozen=True)
class ChannelRoles:
    classify: tuple   # channel indices decided by threshold 0.5 (or argmax for events)
    feel: tuple       # ((feel channels, their hit channels, low, high), ...)
    argmax: bool      # events: one token per step, decided by argmax
    clipped_fit: bool = False   # fit amplitudes to the clipped loss (sparse onsets), else least squares
    candidates: int | None = None   # atoms whose decoded errors each pursuit step counts (None: all)
    sweeps: int = 2                 # refit sweeps after each new atom
    first_all: bool = False         # the first atom: count the errors of every atom, not only the
                                    # candidates (k = 1 is then a codebook look-up, as counting is)


def channel_roles(codec: Codec) -> ChannelRoles:
    n = codec.n_voices
    if codec.spec.drum_feel:
        hits = tuple(range(n))
        # Measured on GMD: the first atom chosen among all atoms makes k = 1 the codebook look-up
        # counting does (960 trained atoms, all 129 test pieces: k = 1 F1 0.9336, against 0.9298
        # counting only the 32 best correlated). Later atoms count the errors of those 32 only
        # (1,024 untrained counted atoms, 60 test pieces: 128 or all atoms are within 0.0001), and
        # two refit sweeps instead of one give k = 3 / 4 F1 0.9926 / 0.9971 instead of 0.9917 / 0.9958.
        return ChannelRoles(hits, ((tuple(range(n, 2 * n)), hits, 0.0, 1.0),
                                   (tuple(range(2 * n, 3 * n)), hits, -0.5, 0.5)), False,
                            candidates=32, sweeps=2, first_all=True)
    if codec.is_grid:
        onsets = tuple(range(n))
        # Measured on POP909 (128 atoms): least-squares amplitudes found 1% of onsets at k=1, the
        # clipped fit 9% (F1 0.02 -> 0.16; 0.21 -> 0.58 at k=8). On GMD drums least squares is
        # better (k=4 F1 0.996 vs 0.966), so drums keep it.
        return ChannelRoles(onsets + tuple(range(2 * n, 3 * n)),
                            ((tuple(range(n, 2 * n)), onsets, 0.0, 1.0),), False, clipped_fit=True)
    return ChannelRoles(tuple(range(codec.channels)), (), True)


def classify_mask(roles: ChannelRoles, channels: int) -> torch.Tensor:
    """(C,) bool: the channels that drive the code (what ``pursuit`` takes as ``classify``)."""
    mask = torch.zeros(channels, dtype=torch.bool)
    mask[list(roles.classify)] = True
    return mask


def to_patches(x: torch.Tensor, length: int) -> torch.Tensor:
    """(B, C, T) -> (B*P, C*L) with P = T // L code positions."""
    B, C, T = x.shape
    P = T // length
    return x.reshape(B, C, P, length).permute(0, 2, 1, 3).reshape(B * P, C * length)


def _errors(pred: torch.Tensor, target: torch.Tensor, argmax: bool, length: int) -> torch.Tensor:
    """Wrong decisions per candidate. pred (N, A, Lc) real, target (N, Lc) real -> (N, A)."""
    if argmax:
        N, A, Lc = pred.shape
        p = pred.reshape(N, A, -1, length).argmax(2)             # (N, A, L) token per step
        t = target.reshape(N, 1, -1, length).argmax(2)
        return (p != t).sum(-1).to(pred.dtype)
    return ((pred > 0.5) != (target[:, None, :] > 0.5)).sum(-1).to(pred.dtype)


def _active(X: torch.Tensor, Y: torch.Tensor, clipped: bool) -> torch.Tensor:
    """Which values the training loss still penalises (1.0) at the current reconstruction Y.

    Hits are squared errors clipped at 0 and 1: a true hit already at or above 1, or a silent value
    at or below 0, costs nothing, so amplitudes are fit on the rest (plain least squares would shrink
    a partly matching atom below the 0.5 decision). Without ``clipped``: plain least squares.
    """
    if not clipped:
        return torch.ones_like(X)
    on = X > 0.5
    return (~((on & (Y >= 1.0)) | (~on & (Y <= 0.0)))).to(X.dtype)


def pursuit(x: torch.Tensor, atoms: torch.Tensor, k: torch.Tensor, k_max: int,
            classify: torch.Tensor | None, roles: ChannelRoles):
    """Choose up to k atoms per code position.

    x: (B, C, T) with T a multiple of the atom length L; atoms: (A, C, L); k: 0-d int64 tensor
    (1 <= k <= k_max, a run-time input of the exported encoder); classify: (C,) bool, the channels
    the code must explain (None: all of them); roles: how to decide (argmax), how to fit
    (clipped_fit, sweeps) and how many candidates to count errors for (counting them for every
    atom is the (positions, atoms, values) tensor that made pursuit cost milliseconds live).
    Returns idx (B, k_max, P) int64 and val (B, k_max, P) float; slots s >= k have val 0.
    """
    argmax, clipped_fit, sweeps = roles.argmax, roles.clipped_fit, roles.sweeps
    B, C, T = x.shape
    A, _, L = atoms.shape
    X, D = to_patches(x, L), atoms.reshape(A, C * L)               # (N, C*L), (A, C*L)
    if classify is not None:                                       # explain the classified values only
        mask = classify.repeat_interleave(L)
        X, D = X[:, mask], D[:, mask]
    norm2 = (D * D).sum(1).clamp_min(1e-8)                         # (A,)
    N = X.shape[0]
    M = A if roles.candidates is None else min(roles.candidates, A)
    # Candidates tied on correlation (a silent position: all 0) are ranked by atom index, in torch
    # and onnxruntime alike, so the exported graph picks the atoms the metrics were measured with.
    order_bias = torch.arange(A, dtype=x.dtype, device=x.device) * 1e-7
    idx = torch.zeros(N, k_max, dtype=torch.long, device=x.device)
    amp = torch.zeros(N, k_max, dtype=x.dtype, device=x.device)
    Y = torch.zeros_like(X)
    taken = torch.zeros(N, A, dtype=x.dtype, device=x.device)
    slots = torch.arange(k_max, device=x.device)
    for s in range(k_max):
        active = k > s
        if clipped_fit:
            W = _active(X, Y, True)                                # (N, Lc) terms the loss still sees
            c = ((X - Y) * W) @ D.T / (W @ (D * D).T).clamp_min(1e-8)   # (N, A) each candidate's amplitude
        else:
            c = (X - Y) @ D.T / norm2
        corr = (c * norm2.sqrt()).abs()                            # (N, A) how much each atom explains
        if M < A and not (s == 0 and roles.first_all):
            cand = (corr - order_bias - 1e9 * taken).topk(M, 1).indices   # (N, M), best first
            cc, Dc, co, tk = c.gather(1, cand), _rows(D, cand), corr.gather(1, cand), taken.gather(1, cand)
        else:
            cand, cc, Dc, co, tk = None, c, D[None], corr, taken
        err = _errors(Y[:, None, :] + cc[:, :, None] * Dc, X, argmax, L)
        err = err - 1e-3 * co / (co.amax(1, keepdim=True) + 1e-8) + 1e9 * tk   # no atom twice at one position
        j = err.argmin(1, keepdim=True)                            # (N, 1) among the candidates
        a_j = cc.gather(1, j)
        j = j if cand is None else cand.gather(1, j)               # (N, 1) atom index
        new_idx = torch.where(slots == s, j, idx)
        new_amp = torch.where(slots == s, a_j, amp)
        Ds = _rows(D, new_idx[:, : s + 1])                         # (N, s+1, Lc)
        a = _refit(X, Ds, new_amp[:, : s + 1], sweeps if (s or clipped_fit) else 0, clipped_fit)
        idx = torch.where(active, new_idx, idx)
        amp = torch.where(active, torch.cat([a, new_amp[:, s + 1:]], dim=1), amp)
        Y = torch.where(active, (a[:, :, None] * Ds).sum(1), Y)
        taken = torch.where(active, taken.scatter(1, j, 1.0), taken)
    P = T // L
    idx = idx.reshape(B, P, k_max).permute(0, 2, 1)
    amp = amp.reshape(B, P, k_max).permute(0, 2, 1)
    return idx, amp


def _rows(D: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """D[index] for index (N, n): (N, n, D.shape[1]), written as one gather (exports lean)."""
    return D.index_select(0, index.reshape(-1)).reshape(index.shape[0], index.shape[1], D.shape[1])


def _refit(X: torch.Tensor, Ds: torch.Tensor, a: torch.Tensor, sweeps: int, clipped: bool) -> torch.Tensor:
    """Refit the amplitudes ``a`` (N, n) of the chosen atoms ``Ds`` (N, n, Lc) to ``X`` (N, Lc).

    Gauss-Seidel sweeps, one atom at a time (exportable, no solver). Least squares works on the
    n x n Gram matrix, so a sweep costs a few tiny ops; the clipped loss re-weights every value
    at every update. A single atom's least-squares amplitude is already its best (sweeps=0).
    """
    n = Ds.shape[1]
    unit = torch.eye(n, dtype=a.dtype, device=a.device)
    if not clipped:
        G = Ds @ Ds.transpose(1, 2)                                # (N, n, n)
        b = (Ds @ X[:, :, None])[..., 0]                           # (N, n)
        for _ in range(sweeps):
            for i in range(n):
                step = (b[:, i] - (G[:, i] * a).sum(1)) / G[:, i, i].clamp_min(1e-8)
                a = a + step[:, None] * unit[i]
        return a
    for _ in range(sweeps):
        for i in range(n):
            y = (a[:, :, None] * Ds).sum(1)
            w = _active(X, y, True)
            d = Ds[:, i]
            step = ((X - y) * w * d).sum(-1) / (w * d * d).sum(-1).clamp_min(1e-8)
            a = a + step[:, None] * unit[i]
    return a


def sparse_decode(idx: torch.Tensor, val: torch.Tensor, atoms: torch.Tensor) -> torch.Tensor:
    """(..., K, P) atom indices and amplitudes -> (..., P*L, C) linear sum of atoms (tiling, hop == L).

    Gathers only the K winning atoms per position, so the cost grows with K, not the dictionary.
    Time-major, as the live path reads a bar, and written so that the exported decoder (no leading
    axes) has no shape arithmetic: gather, scale, sum, one constant reshape. The atoms' (A, L*C)
    rows are a constant that onnxruntime folds at load.
    """
    A, C, L = atoms.shape
    rows = atoms.permute(0, 2, 1).reshape(A, L * C)                 # each atom: L steps of C channels
    g = (F.embedding(idx, rows) * val.unsqueeze(-1)).sum(-3)        # (..., P, L*C): a plain Gather
    return g.reshape(*idx.shape[:-2], -1, C)                        # (..., T, C)


WEAK_HIT = 0.1   # below this summed hit strength the ratio is noise: read the channel's prior


def read_out(y: torch.Tensor, roles: ChannelRoles, prior: torch.Tensor | None = None,
             channel_axis: int = 1) -> torch.Tensor:
    """Linear sum (B, C, T), or any layout with C at ``channel_axis`` -> codec array: hits as
    summed, feel = ratio to its hit.

    Where atoms barely sound at a hit channel, feel falls back to ``prior`` (C,), the channel's
    mean feel, so a near-miss still carries a sensible velocity. The codec ignores feel where no
    hit passes 0.5, so filling it everywhere changes no note. Written over all channels at once
    (each channel's hit channel is itself unless it is a feel channel): a handful of graph ops.
    """
    if not roles.feel:
        return y
    C = y.shape[channel_axis]
    hit_of, lo, hi, is_feel = list(range(C)), [0.0] * C, [0.0] * C, [False] * C
    for feel, hits, low, high in roles.feel:
        for f, h in zip(feel, hits):
            hit_of[f], lo[f], hi[f], is_feel[f] = h, low, high, True
    shape = [1] * y.dim()
    shape[channel_axis] = C
    col = lambda v, dtype=y.dtype: torch.tensor(v, dtype=dtype, device=y.device).reshape(shape)
    strength = y.index_select(channel_axis, torch.tensor(hit_of, device=y.device))
    ratio = torch.minimum(torch.maximum(y / strength.clamp_min(WEAK_HIT), col(lo)), col(hi))
    fallback = torch.zeros((), dtype=y.dtype, device=y.device) if prior is None else prior.reshape(shape)
    feel = torch.where(strength > WEAK_HIT, ratio, fallback)
    return torch.where(col(is_feel, torch.bool), feel, y)
