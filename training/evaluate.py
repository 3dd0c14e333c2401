"""Measure a trained dictionary on held-out pieces, at every k the live knob allows.

Two encoders are reported: ``pursuit`` (what presets ship: atoms chosen by pursuit over the learned
dictionary) and ``kwta`` (the TCN's own k-winners-take-all, as trained). Drums are also split by
GMD's beat/fill label, with the constant-guess feel reference beside them.
"""
from __future__ import annotations

import numpy as np
import torch

from sidl.realtime.codec.spec import Codec, codec_spec

from sidl.training.corpus import Piece
from sidl.training.metrics import GRID_TOLERANCE_STEPS, ONSET_TOLERANCE_S, Counts, drum_constant_reference
from sidl.training.drum_feel import decode_feel, fit_feel
from sidl.training.pursuit import WEAK_HIT, channel_roles, classify_mask, pursuit, read_out, sparse_decode



@torch.no_grad()
def encode_decode(model, codec: Codec, x: np.ndarray, k: int, encoder: str = "pursuit",
                  chunk_elements: float = 1e8) -> np.ndarray:
    """(steps, channels) -> reconstruction read out in codec space, through k atoms per position."""
    A, C, L = model.atoms.shape
    T = len(x)
    pad = (-T) % L
    xt = torch.from_numpy(np.concatenate([x, np.zeros((pad, C), np.float32)])).T[None]
    roles = channel_roles(codec)
    if encoder == "kwta":
        y, _ = model(xt, k)
        return read_out(y, roles, model.feel_prior)[0].T[:T].numpy()
    classify = classify_mask(roles, C)
    outs = []
    # pursuit holds (positions, atoms, classified values) temporaries: bound them (~400 MB)
    step = max(1, int(chunk_elements // (A * int(classify.sum()) * L))) * L
    N = codec.n_voices
    for s in range(0, xt.shape[-1], step):
        idx, val = pursuit(xt[..., s:s + step], model.atoms, torch.tensor(k), k, classify, roles)
        if codec.spec.drum_feel:        # each entry's feel levels, as the exported graphs fit them
            atoms = model.atoms
            idx = fit_feel(xt[0, :, s:s + step].T, idx[0], val[0], atoms[:, :N], atoms[:, N:2 * N])
            outs.append(decode_feel(idx, val[0], atoms, model.feel_prior, WEAK_HIT)[None])
            continue
        outs.append(read_out(sparse_decode(idx, val, model.atoms), roles, model.feel_prior, channel_axis=2))
    return torch.cat(outs, 1)[0, :T].numpy()


@torch.no_grad()
def atoms_in_use(model, codec: Codec, pieces: list[Piece], k: int) -> int:
    A, C, L = model.atoms.shape
    roles = channel_roles(codec)
    classify = classify_mask(roles, C)
    used = torch.zeros(A, dtype=torch.bool)
    for p in pieces:
        x = _array(codec, p.x)
        x = x[: len(x) // L * L]
        if not len(x):
            continue
        idx, val = pursuit(torch.from_numpy(x).T[None], model.atoms, torch.tensor(k), k, classify, roles)
        used[idx[val != 0]] = True
    return int(used.sum())


def _array(codec: Codec, x: np.ndarray) -> np.ndarray:
    """Pieces as stored -> (steps, channels); event pieces are token ids."""
    if codec.is_grid:
        return x
    from sidl.realtime.codec.events import one_hot
    return one_hot(x)


def _notes(codec: Codec, x: np.ndarray):
    if codec.is_grid:
        from sidl.realtime.codec.pianogrid import decode_piano_grid
        return decode_piano_grid(x)
    from sidl.realtime.codec.events import decode_performance
    return decode_performance(x)


def evaluate(model, codec: Codec, test: list[Piece], train: list[Piece], k_max: int) -> dict:
    model.eval()
    feel = codec.spec.drum_feel
    tolerance = GRID_TOLERANCE_STEPS if codec.is_grid else ONSET_TOLERANCE_S
    groups = ["all"] + (sorted({p.labels.get("beat_type") for p in test} - {None}) if feel else [])
    out: dict = {"codec": codec.name, "test_pieces": len(test), "atoms": model.cfg.n_atoms}
    if not test:                  # nothing held out (a one-file folder): no figures rather than zeros
        return out
    for encoder in ("pursuit", "kwta"):
        rows = {}
        for k in range(1, k_max + 1):
            counts = {g: Counts() for g in groups}
            for p in test:
                x = _array(codec, p.x)
                y = encode_decode(model, codec, x, k, encoder)
                for g in ("all", p.labels.get("beat_type")):
                    if g in counts:
                        if feel:
                            counts[g].add_drums(x, y)
                        else:
                            counts[g].add_notes(_notes(codec, x), _notes(codec, y), tolerance)
            rows[str(k)] = {g: c.report(feel) for g, c in counts.items()}
        out[encoder] = rows
    out["atoms_in_use"] = {str(k): atoms_in_use(model, codec, test, k) for k in (1, k_max)}
    if feel:
        out["constant_reference"] = drum_constant_reference([p.x for p in train], [p.x for p in test])
    else:
        out["onset_tolerance"] = (f"{GRID_TOLERANCE_STEPS} steps (50 ms at 120 BPM)"
                                  if codec.is_grid else "50 ms")
    return out


def reevaluate(run_dir, eval_pieces: int | None = None, log=None) -> dict:
    """Measure a finished run again with this code and rewrite its metrics.json (keeping the record
    of how it trained): what ``sidl evaluate RUN`` does after the pursuit or the metrics change.
    ``eval_pieces``: first N test pieces, 0 for all; None: as many as the run was measured on.
    A previous metrics.json that cannot be read is replaced (its training record is lost: one line
    on ``log``, stderr by default)."""
    import sys
    from pathlib import Path

    from sidl.realtime.codec.files import write_json_atomic
    from sidl.training.checkpoint import load_model
    from sidl.training.corpora import load_corpus

    if eval_pieces is not None and eval_pieces < 0:
        raise ValueError(f"--eval-pieces must be >= 0 (0: all test pieces), got {eval_pieces}")
    run_dir = Path(run_dir)
    old = run_dir / "metrics.json"
    if old.is_dir():
        raise ValueError(f"{old} is a folder, not a file: move it away to evaluate {run_dir}")
    model, codec, info = load_model(run_dir)
    model.eval()
    if eval_pieces is None:
        stored = info.get("args", {}).get("eval_pieces") or 0
        if isinstance(stored, bool) or not isinstance(stored, int) or stored < 0:
            raise ValueError(f"{run_dir / 'run.json'}: args.eval_pieces must be a whole number >= 0, "
                             f"got {stored!r} (give --eval-pieces)")
        eval_pieces = stored
    name = info.get("corpus", {}).get("name", "")
    test, _ = load_corpus(name, codec, "test")
    train = load_corpus(name, codec, "train")[0] if codec.spec.drum_feel else []   # the constant guess
    previous = _previous_metrics(old, log or sys.stderr)
    metrics = evaluate(model, codec, test[:eval_pieces] if eval_pieces else test, train, model.cfg.k_max)
    if "training" in previous:
        metrics["training"] = previous["training"]
    write_json_atomic(old, metrics)
    return metrics


def _previous_metrics(path, log) -> dict:
    """The metrics.json being replaced, {} when there is none or it cannot be read (said on ``log``)."""
    from sidl.realtime.codec.files import read_json_object
    if not path.exists():
        return {}
    try:
        return read_json_object(path)
    except ValueError as e:
        why = str(e)
    print(f"sidl: {path} is {why}: it will be replaced, and its training record cannot be kept",
          file=log)
    return {}


def summary_table(metrics: dict) -> str:
    """The run's headline numbers as a Markdown table (one row per k)."""
    if not metrics.get("test_pieces"):
        return "no test pieces held out (a folder needs at least 2 MIDI files): nothing measured"
    feel = codec_spec(metrics["codec"]).drum_feel
    head = "| k | F1 | F1 beats | F1 fills | velocity MAE | offset MAE | velocity / offset MAE on found hits | F1 (TCN k-WTA alone) |" if feel \
        else "| k | onset F1 | precision | recall | velocity error (matched) | onset F1 (TCN k-WTA alone) |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for k, row in metrics["pursuit"].items():
        a = row["all"]
        ff = metrics["kwta"][k]["all"]["f1"]
        if feel:
            group = lambda g: f"{row[g]['f1']:.3f}" if g in row else "n/a"    # GMD labels beats and fills
            lines.append(f"| {k} | {a['f1']:.3f} | {group('beat')} | {group('fill')} | {a['velocity_mae']:.1f} | "
                         f"{a['offset_mae']:.3f} | {a['velocity_mae_found']:.1f} / {a['offset_mae_found']:.3f} | {ff:.3f} |")
        else:
            lines.append(f"| {k} | {a['f1']:.3f} | {a['precision']:.3f} | {a['recall']:.3f} | "
                         f"{a['velocity_mae_matched']:.1f} | {ff:.3f} |")
    if feel:
        ref = metrics["constant_reference"]
        lines.append(f"| constant guess | | | | {ref['velocity_mae']:.1f} | {ref['offset_mae']:.3f} | | |")
    return "\n".join(lines)
