"""`sidl train`: parse, then call sidl.training.train (torch is imported only when it runs)."""
from __future__ import annotations

import sys
from typing import Optional

import typer


def train(
    corpus: str = typer.Argument(..., help="groove | pop909 | asap | a folder of MIDI files"),
    codec: str = typer.Option("drums", help="drums | piano-grid | piano-events"),
    out: str = typer.Option("runs/run", help="run folder (checkpoints, model, metrics)"),
    atoms: int = typer.Option(512, help="dictionary size"),
    atom_length: int = typer.Option(4, help="grid steps per atom (4 = one beat of 16ths)"),
    hop: int = typer.Option(4, help="code stride in steps; = atom length tiles time (the meter prior)"),
    tcn: str = typer.Option("64,64", help="TCN hidden widths, comma separated ('' for none)"),
    layers: Optional[str] = typer.Option(None, help="the paper's notation, e.g. 27,8,16,32,1000,27 "
                                                   "(overrides --atoms and --tcn)"),
    k_max: int = typer.Option(4, help="most atoms per code position the dictionary serves"),
    k_start: Optional[int] = typer.Option(None, help="k schedule start (default k-max)"),
    k_end: Optional[int] = typer.Option(None, help="k schedule end (default k-max)"),
    k_random: bool = typer.Option(True, help="draw k in 1..k(t) per batch"),
    k1_share: float = typer.Option(0.0, help="probability of k = 1 in the per-batch draws (0: uniform)"),
    nonneg: bool = typer.Option(False, help="non-negative codes"),
    lifetime: float = typer.Option(0.0, help="lifetime sparsity: each atom keeps its top fraction of "
                                             "activations per batch in training (0: off)"),
    minutes: float = typer.Option(5.0, help="minutes of training (loading, feel refit and evaluation "
                                            "take extra: about a minute for GMD)"),
    epochs: int = typer.Option(0, help="stop after N epochs instead of the time budget"),
    batch: int = typer.Option(64),
    lr: float = typer.Option(3e-3),
    seed: int = typer.Option(0),
    threads: int = typer.Option(2, help="torch CPU threads"),
    max_sections: int = typer.Option(0, help="use only N training sections (smoke runs)"),
    eval_pieces: int = typer.Option(0, help="evaluate on only N test pieces"),
    resume: bool = typer.Option(False, help="continue the run in --out from its checkpoint"),
    init: str = typer.Option("auto", help="atoms start as 'counted' (the most frequent one-beat hit "
                                          "patterns, drums) or random 'windows'; auto: counted for drums"),
    transpose: bool = typer.Option(False, help="piano-grid: shapes placed at any pitch and step "
                                               "(counted on the training split, see README)"),
    span: int = typer.Option(37, help="--transpose: semitones a shape may cover"),
):
    """Learn a shift-invariant dictionary from MIDI; writes OUT/{run.json, model.npz, metrics.json}."""
    try:
        from sidl.training.evaluate import summary_table
        from sidl.training.train import TrainArgs, train as run
    except ImportError as e:
        print(f"sidl: training needs the 'train' extra (pip install 'sidl[train]'): {e}", file=sys.stderr)
        raise typer.Exit(2)
    try:
        if layers:      # the paper's notation, checked by the model's own parser
            from sidl.training.model import ModelConfig
            cfg = ModelConfig.from_layers([int(v) for v in layers.split(",")])
            atoms, tcn_widths = cfg.n_atoms, cfg.tcn_channels
        else:
            tcn_widths = tuple(int(v) for v in tcn.split(",") if v.strip())
    except ValueError as e:
        print(f"sidl: --layers/--tcn: {e}", file=sys.stderr)
        raise typer.Exit(2)
    try:
        args = TrainArgs(corpus=corpus, codec=codec, out=out, n_atoms=atoms, atom_length=atom_length, hop=hop,
                     tcn=tcn_widths, k_max=k_max, k_start=k_start or k_max, k_end=k_end or k_max,
                     k_random=k_random, k1_share=k1_share, nonneg=nonneg, lifetime=lifetime, minutes=minutes, epochs=epochs, batch=batch, lr=lr,
                     seed=seed, threads=threads, max_sections=max_sections, eval_pieces=eval_pieces,
                     resume=resume, init=init, transpose=transpose, span=span)
        metrics = run(args)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"sidl: {e}", file=sys.stderr)
        raise typer.Exit(2)
    if metrics and metrics.get("kind") == "piano-shapes":
        from sidl.training.piano_eval import rows_table
        print(rows_table(metrics))
        return
    if metrics:
        t = metrics["training"]
        print(f"trained {t['steps']} steps ({t['epochs']} epochs) in {t['seconds_training']:.0f} s; "
              f"{t['seconds_total']:.0f} s in all")
        if t.get("warning"):      # said before and after the table: never read as a result
            print(f"sidl: WARNING: {t['warning']}", file=sys.stderr)
        print(summary_table(metrics))
        if t.get("warning"):
            print(f"sidl: WARNING: {t['warning']}", file=sys.stderr)
        print(f"run written to {out}")


def evaluate(
    run_dir: str = typer.Argument(..., help="training run folder (run.json, model.npz)"),
    eval_pieces: Optional[int] = typer.Option(None, help="evaluate on only N test pieces (0: all); "
                                                         "default: as many as the run was measured on"),
    threads: int = typer.Option(2, help="torch CPU threads"),
):
    """Measure a run again with this code (test split of its corpus) and rewrite its metrics.json."""
    try:
        import torch

        from sidl.training.evaluate import reevaluate, summary_table
    except ImportError as e:
        print(f"sidl: evaluation needs the 'train' extra (pip install 'sidl[train]'): {e}", file=sys.stderr)
        raise typer.Exit(2)
    from pathlib import Path
    if threads < 1:
        print(f"sidl: --threads must be >= 1, got {threads}", file=sys.stderr)
        raise typer.Exit(2)
    if eval_pieces is not None and eval_pieces < 0:
        print(f"sidl: --eval-pieces must be >= 0 (0: all test pieces), got {eval_pieces}", file=sys.stderr)
        raise typer.Exit(2)
    if not (Path(run_dir) / "run.json").is_file():
        print(f"sidl: {run_dir}: not a training run (no run.json)", file=sys.stderr)
        raise typer.Exit(2)
    torch.set_num_threads(threads)
    try:
        metrics = reevaluate(run_dir, eval_pieces)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"sidl: {e}", file=sys.stderr)
        raise typer.Exit(2)
    print(summary_table(metrics))
    print(f"metrics written to {Path(run_dir) / 'metrics.json'}")


def main():
    typer.run(train)
if __name__ == "__main__":
    main()
