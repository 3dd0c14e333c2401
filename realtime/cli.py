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
    "style": ("sidl.training.analysis.cli", "style", "Map pieces by their mean sparse code, coloured by a label."),
    "probe": ("sidl.training.analysis.cli", "probe",
              "Cross-validate a label (composer, key, meter...) from the codes against real baselines."),
    "report": ("sidl.training.analysis.cli", "report", "Regenerate docs/results.md and docs/figures/."),
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

from .tools.cli import register as _register_file_tools   # noqa: E402  (typer only; tools load per command)

_register_file_tools(app)
cache = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                    no_args_is_help=True,
                    help="The corpus cache: parsed corpora, in $SIDL_CACHE/corpora (default ~/.cache/sidl).")
app.add_typer(cache, name="cache")


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
    force: bool = typer.Option(False, "--force", help="export even when onnxruntime and torch disagree"),
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
                           log=lambda msg: typer.echo(f"  {msg}", err=True), encoder=encoder, force=force)
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


@presets.command("show", help="What a preset is, its size, load time, integrity and F1 (--json: the whole manifest).")
def show(name: str = typer.Argument(..., help="preset name or folder"),
         as_json: bool = typer.Option(False, "--json", help="the whole manifest, with the check's result")):
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
        broken = None
    except PresetError as e:
        load_ms, broken = None, str(e)
    if as_json:
        typer.echo(json.dumps({**m, "path": str(folder), "verified": broken is None, "problem": broken,
                               "load_ms": None if load_ms is None else round(load_ms, 1)}, indent=2))
    else:
        typer.echo("\n".join(preset_summary(m, folder, load_ms, broken)))
    if broken:
        raise typer.Exit(1)                 # scripts can tell a broken preset from a good one


def preset_summary(m: dict, folder: Path, load_ms: float | None, broken: str | None) -> list[str]:
    """The lines `sidl presets show` prints: what it is, how big, whether it verifies, how well it plays."""
    corpus, a = _section(m, "corpus"), _section(m, "atoms")
    parity = _section(_section(m, "export_check"), "onnxruntime_vs_torch")
    diff = max((v for v in (parity.get("max_abs_val"), parity.get("max_abs_decoded")) if isinstance(v, (int, float))),
               default=None)
    integrity = ("BROKEN: " + broken if broken else "ok: every file matches its sha256, both graphs load and run"
                 + ("" if diff is None else f"; at export onnxruntime matched torch to {diff:.1e}"))
    encoder = m.get("encoder", "pursuit")
    lines = [
        f"{m.get('name')}: {m.get('description') or '(no description)'}",
        f"  codec      {m.get('codec_description') or m.get('codec')}",
        f"  atoms      {a.get('count')} x {a.get('length')} steps, stored as {a.get('storage')}; "
        f"k {m.get('k_live')} live of {m.get('k_max')}; {encoder} encoder"
        + ("; each entry carries its gain and timing levels (drum feel)" if a.get("kind") == "drum-feel" else ""),
        f"  corpus     {corpus.get('name')} ({corpus.get('split')} split), licence: {corpus.get('license')}",
        f"  size       {_kb(folder)}, {folder}",
        f"  load time  " + ("-" if load_ms is None else f"{load_ms:.0f} ms (hash checks and graph sessions included)"),
        f"  integrity  {integrity}",
        f"  meters     {meter_line(m)}",
    ]
    metrics = _section(m, "metrics")
    table = _section(metrics, "pursuit")
    if not table:
        lines.append("  F1         not recorded in this preset's run")
    else:
        drums = bool(_section(metrics, "constant_reference")) or metrics.get("codec") == "drums"
        what = "hit F1" if drums else "onset F1"
        lines.append(f"  {what} of the training run on the {corpus.get('name')} test split "
                     f"({metrics.get('test_pieces', '?')} pieces); * = what this preset plays live:")
        star = {e: "*" if encoder == e else "" for e in ("pursuit", "kwta")}
        lines.append(f"    {'k':<4}{'pursuit' + star['pursuit']:<10}{'k-WTA' + star['kwta']:<9}"
                     f"{'precision':<11}recall (pursuit)")
        nan = float("nan")
        for k, row in table.items():
            al = _section(row, "all")
            kw = _section(_section(_section(metrics, "kwta"), k), "all")
            lines.append(f"    {k:<4}{al.get('f1', nan):<10.3f}{kw.get('f1', nan):<9.3f}"
                         f"{al.get('precision', nan):<11.3f}{al.get('recall', nan):.3f}")
    lines.append(f"  more       sidl presets show {m.get('name')} --json (manifest, files, every metric)")
    return lines


def meter_line(m: dict) -> str:
    """Which meters have a learned prior and what the others get (issue 15), from the manifest."""
    codec, prior = _section(m, "codec"), _section(m, "meter_prior")
    own = f"{codec.get('beats_per_bar', 4)}/{codec.get('beat_unit', 4)}"
    other = _section(prior, "other_meters")
    learned = _section(other, "meters")
    parts = [f"{own} its own prior"]
    if learned:
        parts.append("learned from " + str(other.get("corpus")) + ": " + ", ".join(
            f"{meter} ({r.get('bars', '?') if isinstance(r, dict) else '?'} bars)"
            for meter, r in learned.items()))
    parts += [f"{meter} not learned ({why})" for meter, why in _section(other, "not_learned").items()]
    parts.append(f"other meters: no learned prior, fallback from {own} by metrical strength")
    return "; ".join(parts)


@presets.command("meter-priors", help="Learn a preset's priors for other meters from a corpus's bars in "
                                      "them; rewrites its prior.npz and preset.json (needs the training extras).")
def meter_priors(name: str = typer.Argument(..., help="preset name or folder"),
                 corpus: str = typer.Option("groove", "--corpus", help="corpus name (groove) or a MIDI folder"),
                 transitions: bool = typer.Option(False, "--transitions",
                                                  help="also store each meter's transitions (bigger preset)")):
    from .preset.store import resolve
    folder = resolve(name)
    try:
        from sidl.export.prior import export_meter_priors
        from sidl.training.corpora import load_corpus
    except ImportError as e:
        raise ValueError(f"meter-priors needs the training extras (pip install -e '.[train]'): {e}") from None
    from .preset.format import manifest_codec, read_manifest
    codec = manifest_codec(read_manifest(folder, name), name)
    pieces, _ = load_corpus(corpus, codec, None)
    export_meter_priors(folder, pieces, corpus, transitions, log=lambda msg: typer.echo(f"  {msg}", err=True))
    typer.echo(f"{folder} ({_kb(folder)}): {meter_line(read_manifest(folder, name))}")


@presets.command("install", help="Verify a preset folder or .sidl archive and install it into the user folder.")
def install(path: Path = typer.Argument(..., help="preset folder or NAME.sidl archive")):
    from .preset.store import install_preset
    typer.echo(f"installed {install_preset(path)}")


@presets.command("eval", help="Measure a preset through its own ONNX graphs on its corpus's test split.")
def eval_preset(name: str = typer.Argument(..., help="preset name or folder"),
                pieces: int = typer.Option(0, help="evaluate on the first N test pieces only (0: all)"),
                split: str = typer.Option("test", help="test, or validation (GMD holds its 3/4 and 6/8 "
                                                       "there: the test split is all 4/4)"),
                as_json: bool = typer.Option(False, "--json", help="print the figures as one JSON object"),
                folder: Optional[Path] = typer.Option(None, "--folder", help="piano: measure on every MIDI "
                                                      "file of DIR instead of the test split"),
                corpus: Optional[str] = typer.Option(None, "--corpus", help="measure on this corpus's split "
                                                     "(groove, pop909, asap) instead of the preset's own")):
    from sidl.export import evaluate as ev   # numpy + onnxruntime only
    from .preset import load_preset
    if folder is not None and corpus is not None:
        raise ValueError("--folder and --corpus do not go together: measure on one or the other")
    p = load_preset(name)
    if not p.codec.spec.drum_feel:           # piano: beside the two references of issue #10
        return piano_eval(p, ev, pieces, split, folder, as_json, corpus)
    if split not in ("test", "validation"):
        raise ValueError(f"--split must be test or validation, got {split!r}")
    test = ev.held_out_pieces(p, pieces, split, corpus)
    ks = range(1, p.k_max + 1)
    rows = ev.evaluate_preset(p, test, ks)
    drums = p.codec.spec.drum_feel
    refs = ev.drum_references(p, test, ev.training_pieces(p), ks) if drums else None
    meters = ev.by_meter(p, test, 1, rows[1])
    if as_json:
        rows = ev.with_references(rows, refs) if drums else rows
        typer.echo(json.dumps({"preset": p.name, "encoder": p.manifest.get("encoder", "pursuit"),
                               "split": split, "test_pieces": len(test),
                               "k": {str(k): r for k, r in rows.items()}, "k1_by_meter": meters}))
        return
    typer.echo(f"{p.name}: {'hit' if drums else 'onset'} F1 through onnxruntime, "
               f"{p.manifest.get('encoder', 'pursuit')} encoder, {len(test)} {split} pieces")
    typer.echo("k   F1      precision  recall" + ("   velocity MAE  offset MAE  counted F1" if drums else ""))
    for k, r in rows.items():
        extra = (f"   {r['velocity_mae']:<13.1f} {r['offset_mae']:<11.3f} {refs['counted'][k]['f1']:.4f}"
                 if drums else "")
        typer.echo(f"{k:<3} {r['f1']:.4f}  {r['precision']:.4f}     {r['recall']:.4f}{extra}")
    if drums:
        c, t = refs["constant"], refs["template"]
        typer.echo(f"counted F1: the {refs['patterns']} most frequent one-beat hit patterns of the training "
                   f"split, greedy OR-pursuit (gain = hits explained - wrong hits)")
        typer.echo(f"feel references on true hits: constant guess {c['velocity_mae']:.1f} / {c['offset_mae']:.3f}, "
                   f"metrical template {t['velocity_mae']:.1f} / {t['offset_mae']:.3f} (velocity MAE / offset MAE)")
    if len(meters) > 1:
        typer.echo("k = 1 F1 by meter: " + ", ".join(f"{m} {r['f1']:.4f} ({r['pieces']} piece{'s' * (r['pieces'] != 1)})"
                                                   for m, r in meters.items()))


def piano_eval(p, ev, pieces: int, split: str, folder, as_json: bool, corpus: str | None = None) -> None:
    """`sidl presets eval` of a piano preset: every k, the preset beside k-loudest and counted shapes."""
    if split not in ("test", "validation"):
        raise ValueError(f"--split must be test or validation, got {split!r}")
    if folder is None:
        test = ev.held_out_pieces(p, pieces, split, corpus)
        where = f"{split} split of {corpus or p.manifest['corpus']['name']}"
    else:
        from sidl.training.corpus import folder_corpus
        test, where = folder_corpus(folder, p.codec), str(folder)
        test = test[:pieces] if pieces else test
    ks = range(1, p.k_max + 1)
    rows = ev.piano_rows(p, test, ev.training_pieces(p), ks)
    if as_json:
        typer.echo(json.dumps({"preset": p.name, "pieces": len(test), "on": where,
                               "rows": [dict(k=k, **r) for k, r in rows.items()]}))
        return
    typer.echo(f"{p.name}: onset F1 through onnxruntime on {len(test)} pieces ({where}); beside it "
               f"k loudest onsets per beat and {p.n_atoms} counted shapes (training split, greedy pursuit)")
    typer.echo("k   F1      prec    recall  vel err  offset F1  notes/atom | loudest F1  prec   | shapes F1  prec    notes/atom")
    for k, r in rows.items():
        typer.echo(f"{k:<3} {r['f1']:.4f}  {r['precision']:.4f}  {r['recall']:.4f}  {r['velocity_error']:<8.2f} "
                   f"{r['offset_f1']:<10.4f} {r['notes_per_atom']:<10.2f} | {r['baseline_f1']:.4f}      "
                   f"{r['baseline_precision']:.4f} | {r['shapes_f1']:.4f}     {r['shapes_precision']:.4f}  "
                   f"{r['shapes_notes_per_atom']:.2f}")


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
    clips = media.write_atom_clips(out / "clips", p.codec, decoded, order)
    try:
        media.write_atoms_png(out / "atoms.png", p.codec, decoded, order, p.usage)
        pages = media.write_dictionary_pngs(out, p.codec, decoded, order, p.usage)
        pictures = f"atoms.png (the most used), {', '.join(f.name for f in pages)} (every atom), "
    except ImportError:                 # the runtime alone has no matplotlib: clips still export
        pictures = "no pictures (they need matplotlib: pip install -e '.[train]'), "
    typer.echo(f"{out}: atoms.mid, {pictures}{len(clips)} clips in clips/ (most used first)")


@cache.command("info", help="Where the corpus cache is, its files and their sizes.")
def cache_info(time_loads: bool = typer.Option(False, "--time", help="also load each file and time it")):
    import time

    from sidl.training.corpus import cache_files, corpus_cache_dir, read_cache_file   # numpy only
    files = cache_files()
    typer.echo(f"{corpus_cache_dir()}: {len(files)} files, {sum(f.stat().st_size for f in files) / 1e6:.1f} MB "
               f"(move it with SIDL_CACHE; empty it with `sidl cache clear`)")
    for f in files:
        line = f"  {f.stat().st_size / 1e6:8.2f} MB  {f.name}"
        if time_loads:
            t0 = time.perf_counter()
            pieces = read_cache_file(f)
            line += (f"  {len(pieces)} pieces, loaded in {time.perf_counter() - t0:.3f} s" if pieces is not None
                     else "  unreadable (rebuilt on next use)")
        typer.echo(line)


@cache.command("clear", help="Delete the cached corpora (they are parsed again when next used).")
def cache_clear():
    from sidl.training.corpus import cache_files, corpus_cache_dir
    files = cache_files()
    freed = 0
    for f in files:
        size = f.stat().st_size
        f.unlink(missing_ok=True)
        freed += size
    typer.echo(f"{corpus_cache_dir()}: removed {len(files)} files, {freed / 1e6:.1f} MB")


def _kb(folder: Path) -> str:
    from .preset.store import folder_bytes
    return f"{folder_bytes(folder) / 1000:.1f} kB"


def _section(manifest: dict, key: str) -> dict:
    """A manifest entry that should be an object; {} if a hand-edited file made it anything else."""
    v = manifest.get(key)
    return v if isinstance(v, dict) else {}


if __name__ == "__main__":
    app()
