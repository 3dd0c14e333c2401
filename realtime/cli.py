"""sidl: the main command line (presets, export; training is added by ``sidl.training.cli``).

Thin: each command parses, calls one library function and prints. Commands that need torch
(``export``, ``train``) import it inside their body, so ``sidl presets ...`` runs without it.
User errors (a bad argument, a missing or broken preset or run) print one line on stderr and exit 2.
"""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from .oneline import run_app

ATOM_STORAGE = ("auto", "float32", "float16", "int8")

# Commands that live with the stage they drive, bound when first asked for (by name, or for the
# help listing): realtime/ imports nothing from training/ or export/ when it loads.
LAZY_COMMANDS = {
    "train": ("sidl.training.cli", "train", "Learn a shift-invariant dictionary from MIDI (needs torch)."),
    "evaluate": ("sidl.training.cli", "evaluate",
                 "Measure a training run again with this code; rewrites its metrics.json (needs torch)."),
}


class LazyGroup(TyperGroup):
    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def get_command(self, ctx, name):
        if name in LAZY_COMMANDS and name not in self.commands:
            module, attr, help_text = LAZY_COMMANDS[name]
            one = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
            one.command(name, help=help_text)(getattr(importlib.import_module(module), attr))
            self.add_command(typer.main.get_command(one), name)
        return super().get_command(ctx, name)


class OneLineErrors(typer.Typer):
    """A Typer app whose user errors end as one line on stderr and exit code 2, never a traceback."""

    def __call__(self, *args, **kwargs):
        kwargs.setdefault("prog_name", "sidl")
        # ValueError covers PresetError, missing run folders and bad options; OSError unreadable files
        run_app(lambda: super(OneLineErrors, self).__call__(*args, standalone_mode=False, **kwargs),
                "sidl", (ValueError, OSError))


app = OneLineErrors(cls=LazyGroup, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                    no_args_is_help=True, help="Real-time MIDI from shift-invariant dictionaries.")
presets = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                      no_args_is_help=True, help="List, inspect and install presets.")
app.add_typer(presets, name="presets")


@app.command("export", help="Export a training run as a preset folder (needs torch and onnx).")
def export(
    run_dir: Path = typer.Argument(..., help="training run folder (run.json, model.npz, metrics.json)"),
    name: str = typer.Option(..., "--name", help="preset name, e.g. drums-gmd"),
    out: Optional[Path] = typer.Option(None, "--out", help="where NAME/ goes; default: the user preset folder"),
    archive: bool = typer.Option(False, "--archive", help="also write NAME.sidl, a single-file archive"),
    description: str = typer.Option("", "--description", help="one line shown by `sidl presets show`"),
    k_live: Optional[int] = typer.Option(None, "--k-live", help="winners per position used live; default k_max"),
    atoms: str = typer.Option("auto", "--atoms", help="atom storage: auto (fit the size budget), float32, float16, int8"),
    prior_positions: Optional[int] = typer.Option(None, "--prior-positions",
                                                  help="code positions the meter prior is counted on"),
    encoder: str = typer.Option("pursuit", "--encoder",
                                help="pursuit (best reconstruction) or kwta (the TCN alone: fastest live)"),
):
    from .preset.format import check_name
    from .preset.store import user_preset_dir
    check_name(name)
    if atoms not in ATOM_STORAGE:
        raise ValueError(f"--atoms must be one of {', '.join(ATOM_STORAGE)}, got {atoms!r}")
    if encoder not in ("pursuit", "kwta"):
        raise ValueError(f"--encoder must be pursuit or kwta, got {encoder!r}")
    if not (Path(run_dir) / "run.json").is_file():
        raise ValueError(f"{run_dir}: not a training run (no run.json)")
    try:
        from sidl.export.preset import export_preset
    except ImportError as e:
        raise ValueError(f"export needs the training extras (pip install -e '.[train]'): {e}") from None
    folder = export_preset(run_dir, name, out or user_preset_dir(), description, archive=archive,
                           k_live=k_live, atom_dtype=atoms, max_positions=prior_positions,
                           log=lambda msg: typer.echo(f"  {msg}", err=True), encoder=encoder)
    typer.echo(f"{folder} ({_kb(folder)})")
    if archive:
        typer.echo(str(folder.with_name(folder.name + ".sidl")))


@presets.command("list", help="Presets found (user folder first, then the shipped ones).")
def list_presets():
    from .preset import PresetError
    from .preset.store import find_presets, preset_dirs
    from .preset.format import manifest_codec, read_manifest
    found = find_presets()
    if not found:
        typer.echo("no presets (looked in " + ", ".join(str(d) for d in preset_dirs()) + ")")
        return
    for name, folder in found.items():
        try:
            m = read_manifest(folder)
            codec = manifest_codec(m, name)
            a = _section(m, "atoms")
            what = (f"{codec.name:<10} {a.get('count')} atoms x {a.get('length')} steps, "
                    f"k {m.get('k_live')}/{m.get('k_max')}, {_kb(folder)}")
        except PresetError as e:
            what = f"broken: {e}"
        typer.echo(f"{name:<16} {what}   {folder}")


@presets.command("show", help="A preset's manifest, metrics and size (and whether it verifies).")
def show(name: str = typer.Argument(..., help="preset name or folder")):
    from .preset import PresetError, load_preset
    from .preset.format import read_manifest
    from .preset.store import resolve
    folder = resolve(name)
    m = read_manifest(folder, name)
    try:
        import time
        t0 = time.perf_counter()
        load_preset(folder)
        load_ms = (time.perf_counter() - t0) * 1e3
        status = f"ok (files match their sha256, graphs load and run; loaded in {load_ms:.0f} ms)"
    except PresetError as e:
        status = f"BROKEN: {e}"
    corpus, a, mp = _section(m, "corpus"), _section(m, "atoms"), _section(m, "meter_prior")
    lines = [
        f"name        {m.get('name')}",
        f"description {m.get('description') or '-'}",
        f"path        {folder}",
        f"codec       {m.get('codec_description') or m.get('codec')}",
        f"atoms       {a.get('count')} x {a.get('length')} steps, hop {a.get('hop')}, stored as {a.get('storage')}",
        f"k           {m.get('k_live')} live, {m.get('k_max')} max",
        f"meter prior {mp.get('beats_per_bar')}/{mp.get('beat_unit')}, {mp.get('steps_per_beat')} steps per beat, "
        f"{mp.get('positions_per_bar')} positions per bar",
        f"corpus      {corpus.get('name')} ({corpus.get('split')} split), license: {corpus.get('license')}",
        f"sidl        {m.get('sidl_version')}",
        f"size        {_kb(folder)}",
        f"status      {status}",
        "files:",
    ]
    lines += [f"  {f:<14} {_section(m['files'], f).get('bytes', 0)!s:>9} B  "
              f"sha256 {str(_section(m['files'], f).get('sha256') or '')[:16]}…" for f in _section(m, "files")]
    lines += ["metrics:"] + ["  " + line for line in json.dumps(m.get("metrics", {}), indent=2).splitlines()]
    typer.echo("\n".join(lines))
    if status.startswith("BROKEN"):
        raise typer.Exit(1)                 # scripts can tell a broken preset from a good one


@presets.command("install", help="Verify a preset folder or .sidl archive and install it into the user folder.")
def install(path: Path = typer.Argument(..., help="preset folder or NAME.sidl archive")):
    from .preset.store import install_preset
    typer.echo(f"installed {install_preset(path)}")


@presets.command("eval", help="Measure a preset through its own ONNX graphs on its corpus's test split.")
def eval_preset(name: str = typer.Argument(..., help="preset name or folder"),
                pieces: int = typer.Option(0, help="evaluate on the first N test pieces only (0: all)")):
    from sidl.export.evaluate import evaluate_preset, held_out_pieces   # numpy + onnxruntime only
    from .preset import load_preset
    p = load_preset(name)
    rows = evaluate_preset(p, held_out_pieces(p, pieces), range(1, p.k_max + 1))
    drums = p.codec.spec.drum_feel
    typer.echo(f"{p.name}: {'hit' if drums else 'onset'} F1 through onnxruntime, "
               f"{p.manifest.get('encoder', 'pursuit')} encoder")
    typer.echo("k   F1      precision  recall" + ("   velocity MAE  offset MAE" if drums else ""))
    for k, r in rows.items():
        extra = f"   {r['velocity_mae']:<13.1f} {r['offset_mae']:.3f}" if drums else ""
        typer.echo(f"{k:<3} {r['f1']:.4f}  {r['precision']:.4f}     {r['recall']:.4f}{extra}")


@presets.command("export-atoms", help="Write a preset's atoms to DIR: atoms.mid, atoms.png and one clip per atom.")
def export_atoms(name: str = typer.Argument(..., help="preset name or folder"),
                 out: Path = typer.Argument(..., help="folder to write into")):
    from sidl.export import atoms as media   # numpy + mido only, no torch

    from .preset import load_preset
    p = load_preset(name)
    decoded = media.decoded_atoms(p.decode_bar, p.atom_scale, p.stride, p.codec.n_voices)
    order = media.usage_order(p.usage)
    out.mkdir(parents=True, exist_ok=True)
    media.write_atoms_midi(out / "atoms.mid", p.codec, decoded, order)
    media.write_atoms_png(out / "atoms.png", p.codec, decoded, order)
    clips = media.write_atom_clips(out / "clips", p.codec, decoded, order)
    typer.echo(f"{out}: atoms.mid, atoms.png, {len(clips)} clips in clips/ (most used first)")


def _kb(folder: Path) -> str:
    from .preset.store import folder_bytes
    return f"{folder_bytes(folder) / 1000:.1f} kB"


def _section(manifest: dict, key: str) -> dict:
    """A manifest entry that should be an object; {} if a hand-edited file made it anything else."""
    v = manifest.get(key)
    return v if isinstance(v, dict) else {}


if __name__ == "__main__":
    app()
