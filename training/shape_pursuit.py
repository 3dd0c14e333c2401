"""Piano shapes (``sidl.training.shapes``) as torch graphs: a greedy pursuit encoder and a sparse decoder.

A code entry places shape ``a`` at step ``dt`` of a beat and transposition ``t`` (its lowest key),
with an amplitude (velocity / 127) and a length (steps), both means over the true notes it covers::

    idx = ((a * L + dt) * K + t) + A * L * K * length        val = amplitude (0: empty slot)

so a preset's graphs keep the (idx, val) interface of every other preset. Export traces exactly
these modules (``sidl.export.shapes``).

Pursuit gain of a placement = onsets it explains (not yet explained) - wrong onsets (cells off the
music), exactly the counting reference's rule. Candidates are anchored on the beat's onsets, so the
work grows with onsets x shapes, never with shapes x transpositions.
"""
from __future__ import annotations

import torch
import torch.nn as nn

K = 88              # keys; a transposition is the shape's lowest key 0..87
BIG = 1.0e4
MAX_ONSETS = 24     # onsets per beat that anchor candidates (more are still scored, not anchored)
RUN_DOUBLINGS = 8   # note lengths are read from the holds up to 2**8 = 256 steps
MAX_LENGTH = 255


class ShapeTables(nn.Module):
    """The dictionary as small integer tables, shared by encoder and decoder."""

    def __init__(self, cells, mask, vel_ratio, len_ratio, steps_per_beat: int):
        super().__init__()
        cells = torch.as_tensor(cells, dtype=torch.long)          # (A, Cmax, 2): step, key offset
        mask = torch.as_tensor(mask, dtype=torch.bool)            # (A, Cmax)
        A, Cmax, _ = cells.shape
        L = steps_per_beat
        self.A, self.Cmax, self.L = A, Cmax, L
        cs, cp = cells[..., 0] * mask, cells[..., 1] * mask
        self.register_buffer("cs", cs)
        self.register_buffer("cp", cp)
        self.register_buffer("cm", mask.float())
        self.register_buffer("vel_ratio", torch.as_tensor(vel_ratio, dtype=torch.float32) * mask)
        self.register_buffer("len_ratio", torch.as_tensor(len_ratio, dtype=torch.float32) * mask)
        n = mask.sum(1).float()
        self.register_buffer("n_cells", n.double())
        self.register_buffer("first_s", cs[:, 0])
        self.register_buffer("first_p", cp[:, 0])
        self.register_buffer("rel", (cs - cs[:, :1]) * K + cp - cp[:, :1])   # cells from the anchor
        ext = torch.where(mask, cs, 0).amax(1) + 1
        span = torch.where(mask, cp, 0).amax(1) + 1
        self.register_buffer("extent", ext)                        # steps a shape spans
        self.register_buffer("span", span)                         # keys a shape spans

    @classmethod
    def of(cls, d) -> "ShapeTables":
        """From a ``sidl.training.shapes.ShapeDictionary``."""
        return cls(d.cells, d.mask, d.vel_ratio, d.len_ratio, d.steps_per_beat)


def note_lengths(onset: torch.Tensor, hold: torch.Tensor) -> torch.Tensor:
    """(T, K) onsets and holds (0/1) -> (T, K) length in steps of the note starting at each onset
    (1 + the run of holds that continue it), by pointer doubling (static shifts, exportable)."""
    cont = hold * (1 - onset)                         # a hold that continues the note before it
    T = onset.shape[0]
    # run[s]: holds continuing the note after step s, counted up to n (1, 2, 4, ...); zero rows past
    # the end keep every shift inside the tensor whatever the window's length
    run = torch.cat([cont[1:], torch.zeros(2 ** RUN_DOUBLINGS + 1, cont.shape[1], dtype=cont.dtype)])
    n = 1
    for _ in range(RUN_DOUBLINGS):
        shifted = torch.cat([run[n:], torch.zeros(n, run.shape[1], dtype=run.dtype)])
        run = run + (run == n).to(run.dtype) * shifted
        n *= 2
    return (1 + run[:T]) * onset


class ShapeEncoder(nn.Module):
    """x (steps, 264) float32, k () int64 -> idx, val (k, beats): greedy pursuit's k picks.

    Candidates are the placements whose anchor (a shape's first cell) sits on an onset of the beat:
    onsets x shapes of them, each with its cells listed once, all recounted at every pick (exact
    greedy). Scores are integers with a unique tie-break, in float64, so torch and onnxruntime
    pick the same entries.
    """

    def __init__(self, tables: ShapeTables, k_max: int):
        super().__init__()
        self.tables, self.k_max = tables, k_max

    def forward(self, x: torch.Tensor, k: torch.Tensor):
        tb, L, A = self.tables, self.tables.L, self.tables.A
        T = x.shape[0]
        NB = T // L
        onset = (x[:, :K] > 0.5).float()
        vel = x[:, K:2 * K] * onset
        length = note_lengths(onset, (x[:, 2 * K:3 * K] > 0.5).float())
        O = onset.reshape(NB, L * K)
        V = vel.reshape(NB, L * K)
        Ln = length.reshape(NB, L * K)
        # the beat's onsets, in a fixed order (later cells weigh less), as many as the busiest beat has
        n_on = (x[: NB * L, :K] > 0.5).reshape(NB, L * K).sum(1).max().item()     # an integer tensor
        torch._check(n_on >= 0)
        n_on = min(max(n_on, 1), MAX_ONSETS)
        order = torch.arange(L * K, 0, -1, dtype=x.dtype) / (L * K)
        top, pos = (O * (1 + order)).topk(n_on, dim=1)                    # (NB, N)
        s, p = (pos // K)[..., None], (pos % K)[..., None]               # (NB, N, 1)
        dt, t = s - tb.first_s, p - tb.first_p                            # (NB, N, A): anchor = first cell
        ok = ((top > 0.5)[..., None] & (dt >= 0) & (t >= 0)
              & (dt + tb.extent <= L) & (t + tb.span <= K)).reshape(NB, -1)   # (NB, NC), NC = N * A
        NC = ok.shape[1]
        cells = (pos[..., None, None] + tb.rel).reshape(NB, NC, -1)        # (NB, NC, Cmax) grid cells
        cm = tb.cm.expand(n_on, A, tb.Cmax).reshape(1, NC, -1) * ok[..., None].float()
        cells = torch.where(cm > 0, cells, torch.zeros_like(cells))
        n = tb.n_cells.repeat(n_on)[None].double()                        # (1, NC)
        in_music = (O.gather(1, cells.reshape(NB, -1)).reshape(cells.shape) * cm).sum(2).double()
        wrong = n - in_music
        tie = torch.arange(NC, dtype=torch.float64) * 1e-6 + torch.where(ok, 0.0, BIG * 64).double()
        # score = 64 * (explained - wrong) - wrong - tie: integer gain first, fewer wrong onsets next
        base = -65 * wrong - tie
        R = O
        cells_flat = cells.reshape(NB, -1)
        idx, val, dur = [], [], []
        for slot in range(self.k_max):
            # every candidate recounted against what is still unexplained: exact greedy
            expl = (R.gather(1, cells_flat).reshape(cells.shape) * cm).sum(2).double()   # (NB, NC)
            score = base + 64 * expl
            best = score.argmax(1, keepdim=True)                          # (NB, 1) candidate = onset * A + shape
            gain = (expl.gather(1, best) - wrong.gather(1, best))[:, 0]
            active = (gain > 0.5) & (k > slot)
            c = best[:, 0]
            a = c % A
            j = (a * L + dt.reshape(NB, -1).gather(1, best)[:, 0]) * K + t.reshape(NB, -1).gather(1, best)[:, 0]
            Cm = cells.shape[2]
            cell = cells.gather(1, best[..., None].expand(NB, 1, Cm))[:, 0]  # (NB, Cmax)
            cmask = cm.expand(NB, NC, Cm).gather(1, best[..., None].expand(NB, 1, Cm))[:, 0]
            true = O.gather(1, cell) * cmask
            hits = true.sum(1).clamp_min(1.0)
            v = (V.gather(1, cell) * true).sum(1) / hits
            d = (Ln.gather(1, cell) * true).sum(1) / hits
            # explained cells leave R; padding slots write the anchor cell's same value (no clash)
            cell = torch.where(cmask > 0, cell, cell[:, :1])
            R = R.scatter(1, cell, R.gather(1, cell) * (1 - active.to(R.dtype))[:, None])
            idx.append(torch.where(active, j, torch.zeros_like(j)))
            val.append(torch.where(active, v, torch.zeros_like(v)))
            dur.append(torch.where(active, d, torch.zeros_like(d)))
        n_k = k.item()
        torch._check(n_k >= 1)
        torch._check(n_k <= self.k_max)
        places = tb.A * L * K
        code = torch.stack(idx) + places * torch.stack(dur).round().clamp(1, MAX_LENGTH).long()
        return code[:n_k], torch.stack(val)[:n_k]


class ShapeDecoder(nn.Module):
    """idx, val (k, beats) -> y (steps, 264): the placed shapes' notes on the piano grid.

    Gathers only the k entries' cells, so the cost grows with k. Two entries sounding one cell
    average their velocities; holds run from each onset for its length (clipped to the window).
    """

    def __init__(self, tables: ShapeTables):
        super().__init__()
        self.tables = tables

    def forward(self, idx: torch.Tensor, val: torch.Tensor):
        tb, L = self.tables, self.tables.L
        places = tb.A * L * K
        idx, dur = idx % places, (idx // places).float()              # placement, length
        NB = idx.shape[1]
        T = NB * L
        a = idx // (L * K)
        dt = (idx // K) % L
        t = idx % K
        beat = torch.arange(NB, dtype=idx.dtype)[None, :]
        live = (val > 0).float()[..., None] * tb.cm[a]                  # (k, NB, Cmax)
        step = beat[..., None] * L + dt[..., None] + tb.cs[a]
        key = t[..., None] + tb.cp[a]
        cell = torch.where(live > 0, step * K + key, torch.zeros_like(step)).reshape(-1)
        w = live.reshape(-1)
        count = torch.zeros(T * K).scatter_add(0, cell, w)
        vsum = torch.zeros(T * K).scatter_add(0, cell, (val[..., None] * tb.vel_ratio[a] * live).reshape(-1))
        onset = count.clamp(max=1.0)
        velocity = (vsum / count.clamp_min(1.0)).clamp(0.0, 1.0)
        # a one-step entry stays one step (so a beat of such entries never reaches the next beat)
        n = torch.where(dur[..., None] > 1, torch.clamp(torch.round(dur[..., None] * tb.len_ratio[a]), min=1.0),
                        torch.ones_like(tb.len_ratio[a]))
        end = torch.clamp(step + n.long(), max=T)
        long = live * (n > 1).float()
        marks = torch.zeros((T + 1) * K)
        marks = marks.scatter_add(0, torch.where(long > 0, (step + 1) * K + key, torch.zeros_like(step)).reshape(-1), long.reshape(-1))
        marks = marks.scatter_add(0, torch.where(long > 0, end * K + key, torch.zeros_like(step)).reshape(-1), -long.reshape(-1))
        hold = torch.cumsum(marks.reshape(T + 1, K)[:T], 0).clamp(0.0, 1.0)
        return torch.cat([onset.reshape(T, K), velocity.reshape(T, K), hold], 1)
