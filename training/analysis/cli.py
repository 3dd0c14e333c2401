"""``sidl style``, ``sidl probe`` and ``sidl report``: bound lazily by ``sidl.realtime.cli``.

Thin: parse, check the inputs, call one function, print. Bad input ends as one line (exit 2).
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Optional

import typer

from .labels import CORPUS_LABELS

LABEL_HELP = "drummer|style|beat_type|meter (groove), artist|key|meter (pop909), composer|key|meter (asap)"


def _setup(preset_name: str):
    """One thread for every numeric library (the machine is shared), quiet warnings, the preset."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    try:
        import matplotlib  # noqa: F401
        import sklearn  # noqa: F401
        from threadpoolctl import threadpool_limits
    except ImportError as e:
        raise ValueError(f"analysis needs the train extra (pip install -e '.[train]'): {e}") from None
    threadpool_limits(1)
    from sidl.realtime.preset import load_preset
    return load_preset(preset_name)


def _check_data(data: str, labels: Optional[Path]) -> None:
    if data not in CORPUS_LABELS and not Path(data).is_dir():
        raise ValueError(f"{data}: not a corpus ({', '.join(CORPUS_LABELS)}) nor a folder")
    if labels is not None and not labels.is_file():
        raise ValueError(f"{labels}: no such labels file")


def style(
    data: str = typer.Argument(..., help="groove, pop909, asap or a folder of MIDI files"),
    by: str = typer.Option(..., "--by", help="the label to colour by: " + LABEL_HELP + "; folder for sub-folders"),
    labels: Optional[Path] = typer.Option(None, "--labels", help="CSV of file,label (for any folder)"),
    preset: str = typer.Option(..., "-p", "--preset", help="preset name or folder (its encoder makes the codes)"),
    out: Path = typer.Option(..., "-o", "--out", help="folder for the PNG, codes.csv and the JSON summary"),
    quick: bool = typer.Option(False, "--quick", help="a subset of the corpus (seconds, not minutes)"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
):
    from . import style as maps
    _check_data(data, labels)
    p = _setup(preset)
    r = maps.run_style(data, by, p, out, labels, quick)
    typer.echo(json.dumps(r, indent=2) if as_json else "\n".join(maps.summary_lines(r)))


def probe(
    data: str = typer.Argument(..., help="groove, pop909, asap or a folder of MIDI files"),
    label: str = typer.Option(..., "--label", help=LABEL_HELP),
    labels: Optional[Path] = typer.Option(None, "--labels", help="CSV of file,label (for any folder)"),
    preset: str = typer.Option(..., "-p", "--preset", help="preset name or folder (its encoder makes the codes)"),
    confusion: Optional[Path] = typer.Option(None, "--confusion", help="write the codes' confusion matrix PNG here"),
    quick: bool = typer.Option(False, "--quick", help="a subset of the corpus (seconds, not minutes)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
):
    from . import plots
    from .probe import run_probe, summary_lines
    _check_data(data, labels)
    p = _setup(preset)
    r = run_probe(data, label, p, labels, quick, log=lambda m: typer.echo(m, err=True))
    png = confusion or Path(f"probe-{Path(data).name}-{label}.png")
    plots.confusion_png(png, r["classes"], r["confusion"],
                        f"{data} {label}: linear probe on {p.name} codes (accuracy {r['accuracy']:.3f})")
    r["confusion_png"] = str(png)
    typer.echo(json.dumps(r, indent=2) if as_json else "\n".join(summary_lines(r) + [f"confusion matrix: {png}"]))


def report(
    quick: bool = typer.Option(False, "--quick", help="subsets of the corpora: under 10 minutes"),
    docs: Path = typer.Option(Path("docs"), "--docs", help="where results.md and figures/ go"),
):
    from .report import build_report
    _setup("drums-gmd")
    path = build_report(docs, quick, log=lambda m: typer.echo(m, err=True))
    typer.echo(str(path))
