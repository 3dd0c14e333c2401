"""Drum feel in the code, in torch: fit each entry's gain and timing levels, and decode with them.

The levels and how they pack into an entry are ``sidl.realtime.codec.drumfeel``'s; written once here
so the exported encoder and decoder, and the training metrics, are the same computation.

Each decoded hit takes its feel from the entry that sounds it loudest (its *owner*: largest
amplitude x hit weight there), so an entry's levels act on the hits it owns and are fit on those
alone: the gain is the level whose scaled template velocities are closest (L1) to the played ones,
the timing level the one closest (L1) to their played offsets. Measured on GMD test (129 pieces,
960-atom preset, velocity / offset error on true hits at k = 1 and 4): the atom templates alone
24.7 / 0.147 and 24.7 / 0.148; owner gains fit by L1 over 32 levels 17.6 and 15.2; a mean gain
instead 19.3 and 17.2 (ghost notes drag a mean); mixing the entries' feel instead of an owner 0.3
worse. Timing by absolute level needs no offset rows in the encoder (they would cost 35 kB).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from sidl.realtime.codec.drumfeel import GAIN_LEVELS, GAINS, OFFSETS

TINY = 1e-6


def _gathered(idx: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(K, P) atoms, (A, V, L) rows -> (K, P, L*V) each entry's rows, time-major as the grid."""
    A, V, L = rows.shape
    return F.embedding(idx, rows.permute(0, 2, 1).reshape(A, L * V))


def _owners(val: torch.Tensor, hits: torch.Tensor) -> torch.Tensor:
    """(K, P) amplitudes, (K, P, L*N) hit rows -> (P, L*N) the slot that sounds each cell loudest."""
    return (val[..., None] * hits).argmax(0)


def fit_feel(x: torch.Tensor, idx: torch.Tensor, val: torch.Tensor, hit_rows: torch.Tensor,
             velocity_rows: torch.Tensor) -> torch.Tensor:
    """The code entries ``idx`` (K, P) of atoms with their feel levels packed in (same shape).

    x (T, 3N) the played drum grid (hits, velocities, offsets), T = P * L; val (K, P) amplitudes
    (0: empty slot); hit_rows, velocity_rows (A, N, L) the atoms' hit and velocity channels. An
    entry that owns no played hit keeps level 0 (the atom as it is).
    """
    K, P = idx.shape
    A, N, L = hit_rows.shape
    H, V = _gathered(idx, hit_rows), _gathered(idx, velocity_rows)          # (K, P, L*N)
    grid = x.reshape(P, L, 3, N)
    played = grid[:, :, 0].reshape(P, L * N) > 0.5
    played_vel, played_off = grid[:, :, 1].reshape(P, L * N), grid[:, :, 2].reshape(P, L * N)
    w = val[..., None] * H
    slots = torch.arange(K, device=idx.device).reshape(K, 1, 1)
    own = ((slots == _owners(val, H)[None]) & (w > 0) & played[None]).to(x.dtype)   # (K, P, L*N)
    owns = own.sum(-1) > 0                                                   # (K, P)
    template = (V / H.clamp_min(TINY)).clamp(0.0, 1.0)
    gains = torch.from_numpy(GAINS).to(x).reshape(-1, 1)                     # (G, 1)
    guess = (gains * template[:, :, None, :]).clamp(0.0, 1.0)                # (K, P, G, L*N)
    # errors rounded so near-equal levels tie exactly, in torch and onnxruntime alike: the first wins
    err = torch.round(((guess - played_vel[None, :, None]).abs() * own[:, :, None]).sum(-1) * 1e4)
    gain = torch.where(owns, err.argmin(-1), 0)
    offsets = torch.from_numpy(OFFSETS[1:]).to(x).reshape(-1, 1)             # levels 1.. (absolute)
    err = torch.round(((offsets - played_off[None, :, None]).abs() * own[:, :, None]).sum(-1) * 1e4)
    timing = torch.where(owns, err.argmin(-1) + 1, 0)
    return idx + A * (gain + GAIN_LEVELS * timing)


def decode_feel(idx: torch.Tensor, val: torch.Tensor, atoms: torch.Tensor, prior: torch.Tensor | None,
                weak: float) -> torch.Tensor:
    """Feel-coded entries idx, val (K, P) -> (P*L, 3N) drum grid: hits summed, each hit's velocity and
    offset its owner's template scaled and shifted by the owner's levels. Where the summed hit
    strength is at most ``weak`` the feel is the channel's ``prior`` (3N,) (as ``read_out``)."""
    K, P = idx.shape
    A, C, L = atoms.shape
    N = C // 3
    atom, levels = idx % A, idx // A
    rows = _gathered(atom, atoms).reshape(K, P, L, 3, N)
    H, V, O = rows[:, :, :, 0], rows[:, :, :, 1], rows[:, :, :, 2]          # (K, P, L, N)
    hits = (val[..., None, None] * H).sum(0)                                 # (P, L, N)
    owner = _owners(val, H.reshape(K, P, L * N)).reshape(1, P, L, N)
    pick = lambda t: t.gather(0, owner)[0]                                   # (K, P, L, N) -> (P, L, N)
    every = lambda t: t[..., None, None].expand(K, P, L, N)                  # (K, P) -> (K, P, L, N)
    gains = torch.from_numpy(GAINS).to(atoms)[levels % GAIN_LEVELS]
    timing = levels // GAIN_LEVELS
    # timing level t > 0 moves the hits the entry sounds so their mean offset is OFFSETS[t]
    sounding = (val[..., None, None] * H > 0.5).to(atoms.dtype)
    mean_off = ((O / H.clamp_min(TINY)).clamp(-0.5, 0.5) * sounding).sum((2, 3)) / sounding.sum((2, 3)).clamp_min(1.0)
    shift = torch.where(timing > 0, torch.from_numpy(OFFSETS).to(atoms)[timing] - mean_off, 0.0)
    Ho = pick(H).clamp_min(TINY)
    vel = (pick(every(gains)) * (pick(V) / Ho).clamp(0.0, 1.0)).clamp(0.0, 1.0)
    off = ((pick(O) / Ho).clamp(-0.5, 0.5) + pick(every(shift))).clamp(-0.5, 0.5)
    feel = torch.stack([vel, off], 2)                                        # (P, L, 2, N)
    if prior is not None:
        feel = torch.where(hits[:, :, None] > weak, feel, prior.reshape(3, N)[1:])
    else:
        feel = torch.where(hits[:, :, None] > weak, feel, 0.0)
    return torch.cat([hits[:, :, None], feel], 2).reshape(P * L, C)
