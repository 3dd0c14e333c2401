"""The file tools as ``sidl`` commands: parse, run each file through one op, write, print a line.

``register(app)`` adds them to the ``sidl`` app. IN is a MIDI file or a folder (its ``.mid``/``.midi``
files, recursively, one summary line each); a bad file is reported and skipped. Exit status: 0 all
files done, 1 any file failed, 2 bad usage (one line on stderr, before any work).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional

import typer

MIDI_SUFFIXES = (".mid", ".midi")

IN_ARG = typer.Argument(..., help="a .mid file or a folder of them")
OUT_OPT = typer.Option(None, "-o", "--out", help="output file or folder (default: beside the input)")
PRESET_OPT = typer.Option(None, "-p", "--preset", help="preset (default: drums-gmd for drums, piano-pop909 otherwise)")
CHANNEL_OPT = typer.Option(None, "--channel", help="MIDI channel 1..16 to read (drum presets: 10)")
FORCE_OPT = typer.Option(False, "--force", help="allow writing over the input file")
JSON_OPT = typer.Option(False, "--json", help="one JSON object per file instead of the table")
K_OPT = typer.Option(None, "--k", help="winners per code position (default: the preset's live k)")


def input_files(path: Path, suffixes=MIDI_SUFFIXES) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        if not files:
            raise ValueError(f"{path}: no {'/'.join(suffixes)} files in this folder")
        return files
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    return [path]


def output_path(src: Path, root_in: Path, out: Optional[Path], command: str, suffix: str, ext: str) -> Path:
    """Where the output for ``src`` goes: OUT itself (a file name with ``ext``, one input), or inside
    OUT (a folder) keeping the input's relative path, or beside the input as NAME.COMMAND.ext."""
    name = f"{src.stem}{suffix}{ext}" if out is not None else f"{src.stem}.{command}{suffix}{ext}"
    if out is None:
        return src.with_name(name)
    if out.suffix.lower() in (ext, *MIDI_SUFFIXES) and not root_in.is_dir() and not suffix:
        return out
    rel = src.relative_to(root_in).parent if root_in.is_dir() else Path()
    return out / rel / name


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def write_output(dest: Path, data, src: Optional[Path], force: bool) -> None:
    from ..codec.files import write_bytes_atomic
    if src is not None and _same(src, dest) and not force:
        raise ValueError(f"{dest}: would overwrite the input (use --force)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(dest, data)


def summary(record: dict) -> str:
    parts = [str(record["file"])] if record.get("file") else []
    for key in ("notes_in", "notes_out", "f1", "precision", "recall", "velocity_mae", "offset_mae",
                "bits_per_bar", "gzip_bits_per_bar", "dropped", "taps", "taps_covered"):
        if record.get(key) is not None:
            parts.append(f"{key} {record[key]}")
    if record.get("unmapped"):
        parts.append(f"ignored {record['unmapped']} notes of {record['unmapped_drums']} unmapped drums (kept as they were)")
    if record.get("out"):
        parts.append(f"-> {record['out']}")
    return "  ".join(parts)


def run_files(command: str, op, job, inputs: Path, out: Optional[Path], force: bool, as_json: bool,
              ext: str = ".mid", suffixes=MIDI_SUFFIXES) -> int:
    """Every input through ``op``: write its outputs, print its line; the exit status."""
    files = input_files(inputs, suffixes)
    if out is not None and len(files) > 1 and out.suffix.lower() in (ext, *MIDI_SUFFIXES):
        raise ValueError(f"{out}: a folder of inputs needs a folder for -o, not a file name")
    failed = 0
    for src in files:
        try:
            outputs, record = op(job, src)
            written = []
            for suffix, data in outputs:
                dest = output_path(src, inputs, out, command, suffix, ext)
                write_output(dest, data, src, force)
                written.append(str(dest))
            record["out"] = written[0] if len(written) == 1 else written
            curve = record.pop("curve", None)
            if curve is not None:
                record["curve"] = curve
                if not as_json:
                    typer.echo("keep  notes  f1      precision  recall")
                    for row in curve:
                        typer.echo(f"{row['keep']:<5} {row['notes']:<6} {row['f1']:.4f}  {row['precision']:.4f}     {row['recall']:.4f}")
                if job.options.get("curve_png"):
                    from .curve import write_curve_png
                    png = Path(written[0]).with_suffix(".curve.png")
                    write_curve_png(png, curve, str(src))
                    record["curve_png"] = str(png)
            typer.echo(json.dumps(record) if as_json else summary(record))
        except Exception as e:   # one bad file is one line, the next file still runs
            failed += 1
            msg = " ".join(str(e).split()) or type(e).__name__
            if not isinstance(e, (ValueError, OSError)):
                msg = f"{src}: {type(e).__name__}: {msg}"
            elif str(src) not in msg:
                msg = f"{src}: {msg}"
            if as_json:
                typer.echo(json.dumps({"file": str(src), "error": msg}))
            else:
                typer.echo(f"FAILED {msg}", err=True)
    return 1 if failed else 0


def _job(preset, channel, k, **options):
    from .ops import Job
    if channel is not None and not 1 <= channel <= 16:
        raise ValueError(f"--channel must be 1..16, got {channel}")
    if k is not None and k < 1:
        raise ValueError(f"--k must be >= 1, got {k}")
    job = Job(preset=preset, channel=channel, k=k, options=options)
    if preset:
        job.load(preset)           # a missing or broken preset is bad usage (exit 2), before any file
    return job


def parse_meter(text: str) -> tuple[int, int]:
    try:
        num, den = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--meter must look like 4/4, got {text!r}") from None
    if not 1 <= num <= 32 or den not in (1, 2, 4, 8, 16, 32):
        raise ValueError(f"--meter {text}: numerator 1..32, denominator a power of two up to 32")
    return num, den


def register(app: typer.Typer) -> None:
    """Add the file tools to ``app``."""

    @app.command("reconstruct", help="Encode and decode through the dictionary; score OUT against IN.")
    def reconstruct(inputs: Path = IN_ARG, out: Optional[Path] = OUT_OPT, preset: Optional[str] = PRESET_OPT,
                    k: Optional[int] = K_OPT, channel: Optional[int] = CHANNEL_OPT,
                    force: bool = FORCE_OPT, as_json: bool = JSON_OPT):
        from .ops import op_reconstruct
        raise typer.Exit(run_files("reconstruct", op_reconstruct, _job(preset, channel, k), inputs, out, force, as_json))

    @app.command("simplify", help="Keep the N strongest atoms per bar or beat.")
    def simplify(inputs: Path = IN_ARG, keep: int = typer.Option(..., "--keep", help="atoms kept per bar/beat"),
                 per: str = typer.Option("bar", "--per", help="bar or beat"),
                 curve: bool = typer.Option(False, "--curve", help="print F1 and notes kept for N = 1..max, write a PNG"),
                 out: Optional[Path] = OUT_OPT, preset: Optional[str] = PRESET_OPT, k: Optional[int] = K_OPT,
                 channel: Optional[int] = CHANNEL_OPT, force: bool = FORCE_OPT, as_json: bool = JSON_OPT):
        from .ops import op_simplify
        if keep < 1:
            raise ValueError(f"--keep must be >= 1, got {keep}")
        if per not in ("bar", "beat"):
            raise ValueError(f"--per must be bar or beat, got {per!r}")
        if curve:
            from .curve import check_matplotlib
            check_matplotlib()
        job = _job(preset, channel, k, keep=keep, per=per, curve=curve, curve_png=curve)
        raise typer.Exit(run_files("simplify", op_simplify, job, inputs, out, force, as_json))

    @app.command("clean", help="Drop notes the dictionary and the part cannot explain (strays, doubles).")
    def clean(inputs: Path = IN_ARG, pull: float = typer.Option(0.0, "--pull", help="0..1: move kept drum hits toward their atoms' timing"),
              out: Optional[Path] = OUT_OPT, preset: Optional[str] = PRESET_OPT, channel: Optional[int] = CHANNEL_OPT,
              force: bool = FORCE_OPT, as_json: bool = JSON_OPT):
        from .ops import op_clean
        if not 0.0 <= pull <= 1.0:
            raise ValueError(f"--pull must be in 0..1, got {pull}")
        raise typer.Exit(run_files("clean", op_clean, _job(preset, channel, None, pull=pull), inputs, out, force, as_json))

    @app.command("compress", help="Write the part as its sparse code (.sidlz).")
    def compress(inputs: Path = IN_ARG, out: Optional[Path] = OUT_OPT, preset: Optional[str] = PRESET_OPT,
                 k: Optional[int] = K_OPT, channel: Optional[int] = CHANNEL_OPT, force: bool = FORCE_OPT,
                 as_json: bool = JSON_OPT):
        from .ops import op_compress
        raise typer.Exit(run_files("compress", op_compress, _job(preset, channel, k), inputs, out, force, as_json,
                                   ext=".sidlz"))

    @app.command("decompress", help="A .sidlz file back to MIDI (with the preset it was made with).")
    def decompress(inputs: Path = typer.Argument(..., help="a .sidlz file or a folder of them"),
                   out: Optional[Path] = OUT_OPT, preset: Optional[str] = PRESET_OPT, force: bool = FORCE_OPT,
                   as_json: bool = JSON_OPT):
        from .ops import op_decompress
        raise typer.Exit(run_files("decompress", op_decompress, _job(preset, None, None), inputs, out, force,
                                   as_json, suffixes=(".sidlz",)))

    @app.command("generate", help="New bars stitched under the meter prior, as sidl-live generates.")
    def generate(kind: str = typer.Argument("drums", help="drums or piano (chooses the default preset)"),
                 bars: int = typer.Option(8, "--bars"), meter: str = typer.Option("4/4", "--meter"),
                 bpm: float = typer.Option(120.0, "--bpm"), density: float = typer.Option(1.0, "--density"),
                 variation: float = typer.Option(0.2, "--variation"), seed: int = typer.Option(0, "--seed"),
                 fill_every: int = typer.Option(0, "--fill-every"),
                 out: Path = typer.Option(..., "-o", "--out", help="output .mid"),
                 preset: Optional[str] = PRESET_OPT, as_json: bool = JSON_OPT):
        from .ops import op_generate
        if kind not in ("drums", "piano"):
            raise ValueError(f"generate drums or piano, not {kind!r}")
        if not 1 <= bars <= 10_000:
            raise ValueError(f"--bars must be 1..10000, got {bars}")
        if not 10 <= bpm <= 1000:
            raise ValueError(f"--bpm must be 10..1000, got {bpm}")
        from ..controls import Controls
        Controls(density=density, variation=variation, seed=seed, fill_every=fill_every)   # checks the ranges
        job = _job(preset, None, None, bars=bars, meter=parse_meter(meter), bpm=bpm, density=density,
                   variation=variation, seed=seed, fill_every=fill_every)
        outputs, record = op_generate(job, kind)
        write_output(out, outputs[0][1], None, True)
        record["out"] = str(out)
        typer.echo(json.dumps(record) if as_json else summary(record))

    @app.command("vary", help="N variations of a clip, each keeping its length and meter.")
    def vary(inputs: Path = IN_ARG, n: int = typer.Option(8, "-n"), variation: float = typer.Option(0.3, "--variation"),
             seed: int = typer.Option(0, "--seed"), out: Optional[Path] = OUT_OPT, preset: Optional[str] = PRESET_OPT,
             k: Optional[int] = K_OPT, channel: Optional[int] = CHANNEL_OPT, force: bool = FORCE_OPT,
             as_json: bool = JSON_OPT):
        from .ops import op_vary
        if not 1 <= n <= 1000 or not 0 <= variation <= 1 or seed < 0:
            raise ValueError("-n must be 1..1000, --variation 0..1, --seed >= 0")
        job = _job(preset, channel, k, n=n, variation=variation, seed=seed)
        raise typer.Exit(run_files("vary", op_vary, job, inputs, out, force, as_json))

    @app.command("continue", help="The clip followed by bars stitched from its own atoms.")
    def continue_(inputs: Path = IN_ARG, bars: int = typer.Option(4, "--bars"), seed: int = typer.Option(0, "--seed"),
                  out: Optional[Path] = OUT_OPT, preset: Optional[str] = PRESET_OPT, k: Optional[int] = K_OPT,
                  channel: Optional[int] = CHANNEL_OPT, force: bool = FORCE_OPT, as_json: bool = JSON_OPT):
        from .ops import op_continue
        if not 1 <= bars <= 10_000 or seed < 0:
            raise ValueError("--bars must be 1..10000 and --seed >= 0")
        raise typer.Exit(run_files("continue", op_continue, _job(preset, channel, k, bars=bars, seed=seed),
                                   inputs, out, force, as_json))

    @app.command("interpolate", help="Clips between two clips of one length, by moving code entries.")
    def interpolate(a: Path = typer.Argument(..., help="first clip (.mid)"),
                    b: Path = typer.Argument(..., help="second clip (.mid), as long as the first"),
                    steps: int = typer.Option(3, "--steps"), out: Optional[Path] = OUT_OPT,
                    preset: Optional[str] = PRESET_OPT, k: Optional[int] = K_OPT,
                    channel: Optional[int] = CHANNEL_OPT, force: bool = FORCE_OPT, as_json: bool = JSON_OPT):
        from .ops import op_interpolate
        if not 1 <= steps <= 100:
            raise ValueError(f"--steps must be 1..100, got {steps}")
        if a.is_dir() or b.is_dir():
            raise ValueError("interpolate takes two .mid files")
        input_files(a), input_files(b)
        job = _job(preset, channel, k, steps=steps)
        raise typer.Exit(run_files("interpolate", lambda j, src: op_interpolate(j, src, b), job, a, out,
                                   force, as_json))

    @app.command("humanize", help="Quantized, flat notes get the atoms' velocity and microtiming.")
    def humanize(inputs: Path = IN_ARG, out: Optional[Path] = OUT_OPT, preset: Optional[str] = PRESET_OPT,
                 k: Optional[int] = K_OPT, channel: Optional[int] = CHANNEL_OPT, force: bool = FORCE_OPT,
                 as_json: bool = JSON_OPT):
        from .ops import op_humanize
        raise typer.Exit(run_files("humanize", op_humanize, _job(preset, channel, k), inputs, out, force, as_json))

    @app.command("drumify", help="Any rhythm becomes a drum groove whose hits follow its onsets.")
    def drumify(inputs: Path = IN_ARG, out: Optional[Path] = OUT_OPT, preset: Optional[str] = PRESET_OPT,
                channel: Optional[int] = typer.Option(None, "--channel", help="channel 1..16 to follow (default: all)"),
                force: bool = FORCE_OPT, as_json: bool = JSON_OPT):
        from .ops import op_drumify
        raise typer.Exit(run_files("drumify", op_drumify, _job(preset, channel, None), inputs, out, force, as_json))

    @app.command("tools-fuzz", help="Throw malformed MIDI files at every file tool (needs hypothesis).")
    def tools_fuzz(cases: int = typer.Option(10_000, "--cases"), seed: int = typer.Option(0, "--seed"),
                   as_json: bool = JSON_OPT):
        from .fuzz import main as fuzz_main
        raise typer.Exit(fuzz_main(cases, seed, as_json))

    @app.command("tools-report", help="Measure every file tool on the shipped presets' test splits (reads ../shared/data).")
    def tools_report(pieces: int = typer.Option(0, "--pieces", help="test files per corpus (0: all)"),
                     as_json: bool = JSON_OPT, markdown: Optional[Path] = typer.Option(None, "--markdown", help="also write the tables here")):
        from .bench import main as bench_main
        raise typer.Exit(bench_main(pieces, as_json, markdown))
