"""Train a TCN-kWTA dictionary on a corpus, then fit the atoms' feel and measure them.

    sections -> batches -> TCN-kWTA autoencoder (k drawn per batch, so one dictionary serves every k)
             -> atoms renormalised each step, dead atoms restarted on the worst-reconstructed windows
             -> feel refit (closed form) -> metrics on the test split -> run folder

Runs data-parallel under ``torchrun`` (DDP, gloo): every rank draws its own batches, all ranks
share the k of each step, and dead-atom resampling uses usage summed over ranks and rank 0's
windows, broadcast, so the ranks stay identical.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from sidl.realtime.codec.drums import N_CLASSES
from sidl.realtime.codec.spec import DRUMS, PIANO_EVENTS, PIANO_GRID, Codec

from sidl.training import checkpoint as ckpt
from sidl.training.corpora import load_corpus
from sidl.training.corpus import sections
from sidl.training.evaluate import evaluate
from sidl.training.model import ModelConfig, TCNkWTA
from sidl.training.progress import TrainingProgress
from sidl.training.pursuit import channel_roles, classify_mask, pursuit, to_patches

INITS = ("counted", "windows")
CODECS = {"drums": DRUMS, "piano-grid": PIANO_GRID, "piano-events": PIANO_EVENTS}
# A time-budgeted run with fewer steps than this has barely moved its atoms from their start
# (one-beat corpus windows, which a pursuit encoder already fits well): its figures say little.
MIN_TRAINED_STEPS = 100


@dataclass
class TrainArgs:
    corpus: str = "groove"            # groove | pop909 | asap | a folder of MIDI files
    codec: str = "drums"
    out: str = "runs/drums"
    n_atoms: int = 512
    atom_length: int = 4
    hop: int = 4
    tcn: tuple = (64, 64)
    k_max: int = 4
    k_start: int = 4                  # k schedule: the most winners drawn decays k_start -> k_end
    k_end: int = 4                    # over the first half of training
    k_random: bool = True             # draw k in 1..k(t) per batch (one dictionary for every k)
    k1_share: float = 0.0             # > 0: probability of k = 1 in those draws (the rest uniform);
                                      # 0: uniform. One atom per beat is the hardest case to serve.
    nonneg: bool = False
    lifetime: float = 0.0             # lifetime sparsity rate in training (0: off)
    minutes: float = 5.0              # minutes of the training loop (loading, refit and evaluation come on top)
    epochs: int = 0                   # > 0: stop after this many epochs instead (deterministic)
    batch: int = 64
    section_bars: int = 4
    lr: float = 3e-3
    seed: int = 0
    threads: int = 2
    resample_every: int = 200
    init: str = "auto"                # atoms start as "counted" (the most frequent one-beat hit
                                      # patterns: drums only) or random "windows"; auto: counted for drums
    transpose: bool = False           # piano: shapes placed at any pitch and step (training/shape_train.py)
    span: int = 37                    # --transpose: semitones a shape may cover
    max_sections: int = 0             # > 0: use only this many training sections (tests, smoke runs)
    eval_pieces: int = 0              # > 0: evaluate on this many test pieces only
    resume: bool = False

    def __post_init__(self):
        """Reject what the command line can get wrong, before anything is loaded or written."""
        if self.codec not in CODECS:
            raise ValueError(f"--codec must be one of {', '.join(CODECS)}, got {self.codec!r}")
        if min(self.batch, self.section_bars, self.atom_length, self.hop, self.n_atoms) < 1:
            raise ValueError("--batch, --atoms, --atom-length, --hop and the section length must be >= 1")
        if self.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {self.threads}")
        if self.epochs < 0:
            raise ValueError(f"--epochs must be >= 0 (0: train for --minutes), got {self.epochs}")
        if not self.minutes >= 0 or not self.epochs and not self.minutes > 0:   # NaN fails both
            raise ValueError(f"--minutes must be > 0 (or give --epochs), got {self.minutes}")
        if not 0 < self.lr < math.inf:
            raise ValueError(f"--lr must be a positive number, got {self.lr}")
        if self.eval_pieces < 0:
            raise ValueError(f"--eval-pieces must be >= 0 (0: all test pieces), got {self.eval_pieces}")
        if self.max_sections < 0:
            raise ValueError(f"--max-sections must be >= 0 (0: all), got {self.max_sections}")
        drums = CODECS[self.codec].spec.drum_feel
        if self.init == "auto":
            self.init = "counted" if drums else "windows"
        if self.init not in INITS:
            raise ValueError(f"--init must be one of auto, {', '.join(INITS)}, got {self.init!r}")
        if self.init == "counted" and not drums:
            raise ValueError(f"--init counted counts drum hit patterns: not for --codec {self.codec}")


def k_for_step(progress: float, rng: np.random.Generator, a: TrainArgs) -> int:
    """Winners per code position this step: k(t) decays linearly over the first half of training."""
    hi = a.k_start + (a.k_end - a.k_start) * min(1.0, progress / 0.5)
    hi = max(1, min(a.k_max, int(round(hi))))
    if not a.k_random:
        return hi
    if a.k1_share > 0 and hi > 1:
        return 1 if rng.random() < a.k1_share else int(rng.integers(2, hi + 1))
    return int(rng.integers(1, hi + 1))


def reconstruction_loss(y: torch.Tensor, x: torch.Tensor, codec: Codec) -> torch.Tensor:
    """Hits/onsets/holds as classification (squared error clipped at 0 and 1: the decision is at 0.5
    and confident outputs cost nothing), feel as regression on true hits, events as cross-entropy.
    Feel templates are refit in closed form for the ratio read-out after training."""
    roles = channel_roles(codec)
    if roles.argmax:
        return F.cross_entropy(y, x.argmax(1))
    cls = list(roles.classify)
    yc, xc = y[:, cls], x[:, cls]
    loss = torch.where(xc > 0.5, F.relu(1 - yc), F.relu(yc)).pow(2).sum() / yc.numel()
    for feel, hits, lo, hi in roles.feel:
        f, h = list(feel), list(hits)
        true_hit = x[:, h] > 0.5
        loss = loss + ((y[:, f] - x[:, f]).pow(2) * true_hit).sum() / yc.numel()
    return loss


def model_input(batch: torch.Tensor, codec: Codec) -> torch.Tensor:
    """Sections as stored -> (B, C, T) float input. Event sections are token ids, one-hot here."""
    if codec.is_grid:
        return batch
    return F.one_hot(batch.long() + 1, codec.channels + 1)[..., 1:].permute(0, 2, 1).float()  # -1 -> silence


def beat_windows(data: torch.Tensor, length: int) -> torch.Tensor:
    """(N, C, T) sections -> (M, C, L) non-silent atom-long windows, to seed the atoms."""
    w = to_patches(data, length)
    w = w[w.abs().sum(1) > 0]
    return w.reshape(-1, data.shape[1], length)


@torch.no_grad()
def resample_dead(model: TCNkWTA, usage: torch.Tensor, x: torch.Tensor, y: torch.Tensor, world: int,
                  keep: int = 0) -> int:
    """Restart unused atoms on the windows this batch reconstructs worst (what the dictionary lacks).

    The first ``keep`` atoms are never restarted: counted patterns the k-WTA encoder does not pick
    are still the codebook the pursuit encoder looks beats up in.
    Under DDP each rank sees other windows, so rank 0's choice is broadcast: ranks stay identical.
    """
    dead = (usage == 0).nonzero().flatten()
    dead = dead[dead >= keep]
    if len(dead):
        L = model.cfg.atom_length
        residual = to_patches(x - y, L)                                  # (B*P, C*L)
        worst = (residual ** 2).sum(1).topk(min(len(dead), len(residual))).indices
        dead = dead[: len(worst)]
        model.decoder.weight[dead] = to_patches(x, L)[worst].reshape(len(worst), x.shape[1], L)
        model.normalize_atoms(dead)
        model.tie_code_to_atoms(dead)
    if world > 1:
        for p in (model.decoder.weight, model.code.weight, model.code.bias):
            dist.broadcast(p.data, 0)
    return len(dead)


@torch.no_grad()
def refit_feel(model: TCNkWTA, codec: Codec, data: torch.Tensor, k_max: int,
               strength: float = 5.0, max_windows: int = 16384, seed: int = 0,
               work_budget: float = 1e10) -> None:
    """Closed-form feel templates for the codes the pursuit encoder actually produces.

    For each feel channel f with hit channel h, atoms' f-weights solve a ridge regression so that
    sum_i a_i d_f,i ~= v_true * sum_i a_i d_h,i on true hits, pulled towards the voice's mean feel
    (so rarely used atoms fall back to a sensible template, not to silence).
    """
    roles = channel_roles(codec)
    if not roles.feel:
        return
    A, C, L = model.atoms.shape
    windows = beat_windows(data, L)
    # Pursuit work grows with atoms x classified values x k^2: bound it so big codecs refit in seconds.
    n_cls = len(roles.classify) * L
    max_windows = int(min(max_windows, work_budget / (A * n_cls * k_max * (k_max + 1) / 2)))
    g = torch.Generator().manual_seed(seed)
    if len(windows) > max_windows:
        windows = windows[torch.randperm(len(windows), generator=g)[:max_windows]]
    x = windows                                                        # (N, C, L) one position each
    classify = classify_mask(roles, C)
    codes = [pursuit(x, model.atoms, torch.tensor(k), k_max, classify, roles)   # every k the knob allows
             for k in range(1, k_max + 1)]
    I = torch.cat([i[:, :, 0] for i, _ in codes])                       # (M, k_max) atom per slot
    V = torch.cat([v[:, :, 0] for _, v in codes])                       # (M, k_max) amplitude, 0 = unused
    X = x.repeat(k_max, 1, 1)                                          # (M, C, L)
    W = model.decoder.weight                                           # (A, C, L)
    for feel, hits, lo, hi in roles.feel:
        for fc, hc in zip(feel, hits):
            true_hit = X[:, hc] > 0.5                                  # (M, L)
            mean = float((X[:, fc][true_hit]).mean()) if true_hit.any() else 0.0
            model.feel_prior[fc] = mean
            for l in range(L):
                m = true_hit[:, l]
                if not m.any():
                    continue
                Im, Vm = I[m], V[m]
                strength_h = (Vm * W[Im, hc, l]).sum(1)                  # decoded hit strength
                target = X[m, fc, l] * strength_h
                # Normal equations of the sparse code matrix, accumulated from its k nonzeros per row.
                gram = strength * torch.eye(A)
                rhs = strength * mean * W[:, hc, l]
                for a in range(k_max):
                    rhs.index_add_(0, Im[:, a], Vm[:, a] * target)
                    for b in range(k_max):
                        gram.index_put_((Im[:, a], Im[:, b]), Vm[:, a] * Vm[:, b], accumulate=True)
                W[:, fc, l] = torch.linalg.solve(gram, rhs)
    model.normalize_atoms()


# counted_atoms: single hits join a dictionary of at least this many times their number (144 for
# drums). A choice, not a measurement: in a 32-atom dictionary they would be more than all the rest.
SINGLE_HITS_FROM = 4


@torch.no_grad()
def counted_atoms(model: TCNkWTA, pieces: list[np.ndarray]) -> int:
    """Start the atoms as the most frequent one-beat hit patterns of ``pieces`` ((T, 27) drum grids)
    with every single hit among them (`with_single_hits`; only in a dictionary of at least
    ``SINGLE_HITS_FROM`` times as many atoms as single hits), each hit at its class's mean velocity,
    no offset (the feel refit replaces both after training). Atoms beyond the patterns found keep
    what they held. Returns how many atoms were set.

    Measured on GMD (1,024 atoms, no single hits, no training at all, pursuit encoder, one refit
    sweep): hit F1 0.936 / 0.978 / 0.991 / 0.996 at k = 1..4, where the same patterns by OR-pursuit
    give 0.934 / 0.974 / 0.977 / 0.977. With the single hits, 960 atoms, trained 3 epochs: 0.933 /
    0.983 / 0.997 / 0.999 (README, drums).
    """
    from sidl.training.counted import count_patterns, with_single_hits
    A, C, L = model.atoms.shape
    n = N_CLASSES
    patterns = count_patterns(pieces, A, L)[0]
    if A >= SINGLE_HITS_FROM * n * L:
        patterns = with_single_hits(patterns, A)
    hits = torch.from_numpy(patterns.reshape(-1, n, L).astype(np.float32))     # (m, 9, L)
    every = np.concatenate(pieces)
    on = every[:, :n] > 0.5
    mean_vel = torch.tensor([every[on[:, c], n + c].mean() if on[:, c].any() else 0.0
                             for c in range(n)], dtype=torch.float32)
    atoms = torch.zeros(len(hits), C, L)
    atoms[:, :n] = hits
    atoms[:, n:2 * n] = hits * mean_vel[None, :, None]
    model.decoder.weight[: len(hits)] = atoms
    return len(hits)


def _world() -> tuple[int, int]:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if not dist.is_initialized():
            dist.init_process_group("gloo")
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


RUN_FILES = ("run.json", "model.npz", "checkpoint.npz")


def check_out(out: Path, resume: bool) -> None:
    """--out must not hold a run unless it is resumed: a finished run is never replaced by accident."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    if resume:
        if not (out / "checkpoint.npz").exists():
            raise FileNotFoundError(f"{out / 'checkpoint.npz'}: nothing to resume")
    elif any((out / f).exists() for f in RUN_FILES):
        raise ValueError(f"{out} already holds a run: use --resume to continue it, or another --out")


def train(a: TrainArgs, log=sys.stderr) -> dict:
    if a.transpose:
        from sidl.training.shape_train import train_shapes
        return train_shapes(a, log)
    t_start = time.perf_counter()
    codec = CODECS[a.codec]
    out = Path(a.out)
    # Everything a user can get wrong is checked before the corpus loads, and --out is only made
    # once it has: a failed command leaves no folder behind and never touches a finished run.
    cfg = ModelConfig(codec.channels, a.n_atoms, a.atom_length, a.hop, tuple(a.tcn), 3, a.k_max, a.nonneg,
                      a.lifetime)
    check_out(out, a.resume)
    torch.set_num_threads(a.threads)
    rank, world = _world()
    torch.manual_seed(a.seed)
    model = TCNkWTA(cfg)
    saved = ckpt.read_checkpoint(out, model) if a.resume else None

    train_pieces, corpus_info = load_corpus(a.corpus, codec, "train")
    val_pieces, _ = load_corpus(a.corpus, codec, "validation")
    if not train_pieces:
        raise ValueError(f"{a.corpus}: no training pieces")
    section_steps = (codec.steps_per_bar * a.section_bars) if codec.is_grid else 16 * a.section_bars * 4
    data = torch.from_numpy(sections(train_pieces, section_steps))
    val = torch.from_numpy(sections(val_pieces or train_pieces[:4], section_steps))[:512]
    if codec.is_grid:                                                  # (N, T, C) -> (N, C, T)
        data, val = data.permute(0, 2, 1).contiguous(), val.permute(0, 2, 1)
    if a.max_sections:
        data = data[: a.max_sections]
    val = model_input(val, codec)
    corpus_info["split"] = "train"
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)

    windows = beat_windows(model_input(data[:4096], codec), a.atom_length)
    init_gen = torch.Generator().manual_seed(a.seed + 1)                # identical on every rank
    with torch.no_grad():                                               # atoms start as real windows
        model.decoder.weight.copy_(windows[torch.randint(len(windows), (a.n_atoms,), generator=init_gen)])
        counted = counted_atoms(model, [p.x for p in train_pieces]) if a.init == "counted" else 0
        model.normalize_atoms()
        model.tie_code_to_atoms()
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)

    steps_per_epoch = max(1, math.ceil(len(data) / (a.batch * world)))
    total_steps = a.epochs * steps_per_epoch if a.epochs else 0
    budget = a.minutes * 60                     # the training loop's own time: loading, refit and
                                                # evaluation come on top, so --minutes 1 trains a minute
    loop = {"step": 0, "epoch": 0, "elapsed": 0.0, "resampled": 0,
            "rng": np.random.default_rng([a.seed, rank]).bit_generator.state,
            "k_rng": np.random.default_rng([a.seed, 99]).bit_generator.state,
            "usage": [0.0] * a.n_atoms, "history": []}
    if a.resume:
        loop = ckpt.load_checkpoint(out, model, opt, saved)
        print(f"resumed at epoch {loop['epoch']}, step {loop['step']}", file=log)
    rng = np.random.default_rng(); rng.bit_generator.state = loop["rng"]
    k_rng = np.random.default_rng(); k_rng.bit_generator.state = loop["k_rng"]
    usage = torch.tensor(loop["usage"])

    t0 = time.perf_counter() - loop["elapsed"]
    shown = (TrainingProgress(total_steps or budget, "steps" if total_steps else "s", log) if rank == 0
             else None)
    done = False
    while not done:
        model.train()
        epoch_loss = 0.0
        for _ in range(steps_per_epoch):
            elapsed = time.perf_counter() - t0
            progress = loop["step"] / total_steps if total_steps else elapsed / max(budget, 1e-9)
            k = k_for_step(progress, k_rng, a)
            x = model_input(data[torch.from_numpy(rng.integers(0, len(data), a.batch))], codec)
            y, z = net(x, k)
            loss = reconstruction_loss(y, x, codec)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.normalize_atoms()
                usage += (z != 0).sum((0, 2)).float()
            loop["step"] += 1
            epoch_loss += loss.item()
            if shown:
                shown.step(loop["step"] if total_steps else elapsed)
            if loop["step"] % a.resample_every == 0:
                if world > 1:
                    dist.all_reduce(usage)
                loop["resampled"] += resample_dead(model, usage, x, y.detach(), world, counted)
                usage.zero_()
            if total_steps and loop["step"] >= total_steps or not total_steps and elapsed >= budget:
                done = True
                break
        loop["epoch"] += 1
        model.eval()
        with torch.no_grad():
            vy, _ = model(val, a.k_max)
            val_loss = float(reconstruction_loss(vy, val, codec))
        loop["elapsed"] = time.perf_counter() - t0
        loop["history"].append({"epoch": loop["epoch"], "train_loss": round(epoch_loss / steps_per_epoch, 5),
                                "val_loss": round(val_loss, 5)})
        if rank == 0:
            shown.epoch(loop["step"] if total_steps else loop["elapsed"], _epoch_line(loop))
            loop["rng"] = rng.bit_generator.state
            loop["k_rng"] = k_rng.bit_generator.state
            loop["usage"] = usage.tolist()
            ckpt.save_checkpoint(out, model, opt, loop)
    if rank == 0:
        shown.close()

    refit_feel(model, codec, data, a.k_max, seed=a.seed)
    if world > 1:
        import hashlib
        digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in model.state_dict().values()))
        (out / f"rank{rank}.sha256").write_text(digest.hexdigest() + "\n")
        dist.barrier()
        if rank != 0:
            dist.destroy_process_group()
            return {}
    args = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(a).items()}
    ckpt.save_model(out, model, codec, corpus_info, args)
    test_pieces, _ = load_corpus(a.corpus, codec, "test")
    if a.eval_pieces:
        test_pieces = test_pieces[: a.eval_pieces]
    metrics = evaluate(model, codec, test_pieces, train_pieces, a.k_max)
    metrics["training"] = {"steps": loop["step"], "epochs": loop["epoch"], "seconds_training": round(loop["elapsed"], 1),
                           "seconds_total": round(time.perf_counter() - t_start, 1), "world_size": world,
                           "atoms_resampled": loop["resampled"], "history": loop["history"][-5:]}
    if not total_steps and loop["step"] < MIN_TRAINED_STEPS:
        metrics["training"]["warning"] = (
            f"only {loop['step']} training steps in {loop['elapsed']:.0f} s (fewer than {MIN_TRAINED_STEPS}): "
            f"these figures are close to those of the untrained atoms; train for more --minutes")
    ckpt.write_json_atomic(out / "metrics.json", metrics)
    if world > 1:
        dist.destroy_process_group()
    return metrics


def _epoch_line(loop) -> str:
    h = loop["history"][-1]
    return f"epoch {h['epoch']} step {loop['step']} loss {h['train_loss']:.4f} val {h['val_loss']:.4f}"
