"""Measure a preset as it plays: its own ONNX encoder and decoder through onnxruntime, on the test
split of the corpus it was trained on. Numpy and onnxruntime only (no torch), so anyone holding a
preset and the corpus can check its manifest's numbers, atom storage rounding included.

    sidl presets eval drums-gmd
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sidl.realtime.codec.files import json_kind

from sidl.training.corpora import CORPORA, load_corpus
from sidl.training.counted import count_patterns, counted_reconstruction
from sidl.training.metrics import (GRID_TOLERANCE_STEPS, Counts, drum_constant_reference,
                                   drum_template_reference)


def held_out_pieces(preset, limit: int = 0, split: str = "test", corpus_name: str | None = None):
    """The test split (or ``split``) of the corpus named in the preset's manifest, or of
    ``corpus_name`` (how far a preset carries to another corpus); the first ``limit`` (0: all)."""
    if limit < 0:
        raise ValueError(f"--pieces must be >= 0 (0: all test pieces), got {limit}")
    if corpus_name is not None:
        if corpus_name not in CORPORA and not Path(corpus_name).is_dir():
            raise ValueError(f"--corpus {corpus_name!r} is neither a corpus ({', '.join(CORPORA)}) nor a folder")
        pieces, _ = load_corpus(corpus_name, preset.codec, split)
        return pieces[:limit] if limit else pieces
    corpus = preset.manifest.get("corpus", {})
    if not isinstance(corpus, dict):
        raise ValueError(f"preset {preset.name!r}: preset.json's corpus is {json_kind(corpus)}, not an object: "
                         f"its test split cannot be found")
    name = corpus.get("name", "")
    if not isinstance(name, str):
        raise ValueError(f"preset {preset.name!r}: preset.json's corpus name is {json_kind(name)}, not a string: "
                         f"its test split cannot be found")
    pieces, _ = load_corpus(name, preset.codec, split)
    return pieces[:limit] if limit else pieces


def training_pieces(preset):
    """The training split of the preset's corpus: what its references are counted on."""
    return held_out_pieces(preset, 0, "train")


def evaluate_preset(preset, pieces, ks) -> dict:
    """{k: report} for each k, through ``preset.encode_bar`` / ``decode_bar`` on whole pieces."""
    from sidl.realtime.codec.pianogrid import decode_piano_grid
    drums = preset.codec.spec.drum_feel
    out = {}
    for k in ks:
        c = Counts()
        for p in pieces:
            x = p.x[: len(p.x) // preset.stride * preset.stride]
            if not len(x):
                continue
            y = preset.decode_bar(*preset.encode_bar(np.ascontiguousarray(x, np.float32), k))
            if drums:
                c.add_drums(x, y)
            else:
                c.add_notes(decode_piano_grid(x), decode_piano_grid(y), GRID_TOLERANCE_STEPS)
        out[k] = c.report(feel=drums)
    return out


def drum_references(preset, pieces, train, ks) -> dict:
    """What a drum preset is measured against, on the same test ``pieces``, from its corpus's
    training split ``train``: the counted-patterns codebook of the preset's size ({k: report}, hits
    only) and the two feel guesses that need no code (constant, metrical template)."""
    patterns, _ = count_patterns([p.x for p in train], preset.n_atoms, preset.stride)
    silent = np.zeros(preset.codec.channels, np.float32)
    counted = {}
    for k in ks:
        c = Counts()
        for p in pieces:
            y = counted_reconstruction(p.x, patterns, k, silent, preset.stride)
            if len(y):
                c.add_drums(p.x[: len(y)], y)
        counted[k] = c.report(feel=False)
    bars = lambda chosen: [(p.x, p.codec.steps_per_bar) for p in chosen]
    return {"counted": counted, "patterns": len(patterns),
            "constant": drum_constant_reference([p.x for p in train], [p.x for p in pieces]),
            "template": drum_template_reference(bars(train), bars(pieces))}


def with_references(rows: dict, refs: dict) -> dict:
    """Each k's report with the references beside it (the keys ``sidl presets eval --json`` adds)."""
    out = {}
    for k, r in rows.items():
        out[k] = dict(r, counted_f1=refs["counted"][k]["f1"],
                      constant_velocity_error=refs["constant"]["velocity_mae"],
                      constant_offset_error=refs["constant"]["offset_mae"],
                      template_velocity_error=refs["template"]["velocity_mae"],
                      template_offset_error=refs["template"]["offset_mae"])
    return out


def by_meter(preset, pieces, k: int, whole: dict | None = None) -> dict:
    """{"3/4": report, ...}: the pieces of each meter measured apart at ``k`` (one-beat atoms see
    beats, not bars, so a meter only changes what is played in it). ``whole``: the report of all
    ``pieces`` at ``k``, reused when they share one meter."""
    groups: dict = {}
    for p in pieces:
        groups.setdefault(f"{p.codec.beats_per_bar}/{p.codec.beat_unit}", []).append(p)
    if len(groups) == 1 and whole is not None:
        return {m: dict(whole, pieces=len(chosen)) for m, chosen in groups.items()}
    return {m: dict(evaluate_preset(preset, chosen, [k])[k], pieces=len(chosen))
            for m, chosen in sorted(groups.items())}


EVAL_BLOCK_BEATS = 128       # beats encoded at once by piano_rows


def piano_rows(preset, pieces, train, ks) -> dict:
    """A piano preset beside the two references of issue #10, on the same ``pieces``, every k.

    Each row: the preset's onset precision / recall / F1, velocity error on matched notes, note F1
    with offsets and notes per chosen atom; ``baseline_*`` the k loudest onsets per beat;
    ``shapes_*`` as many counted shapes as the preset has atoms, counted on ``train``, placed by
    greedy pursuit."""
    from sidl.realtime.codec.pianogrid import decode_piano_grid
    from sidl.training import piano_eval as pe
    L = preset.stride
    grids = [np.ascontiguousarray(p.x[: len(p.x) // L * L], np.float32) for p in pieces]
    grids = [x for x in grids if len(x)]
    scores = {k: pe.PianoScore() for k in ks}
    for x in grids:
        true = decode_piano_grid(x)
        for k in ks:
            # a long piece in blocks of beats: the pursuit graph's tensors grow with beats x atoms
            # (a 256-shape preset on a whole ASAP piece needed > 18 GB); a note held across a block
            # boundary ends there, which only touches offsets
            decoded, entries = [], 0
            for i in range(0, len(x), EVAL_BLOCK_BEATS * L):
                idx, val = preset.encode_bar(x[i:i + EVAL_BLOCK_BEATS * L], k)
                decoded.append(preset.decode_bar(idx, val))
                entries += int(np.count_nonzero(val))
            scores[k].add(true, decode_piano_grid(np.concatenate(decoded)), entries)
    loud = pe.loudest_rows(grids, ks, L)
    shapes = pe.counted_rows([p.x for p in train], grids, preset.n_atoms, ks, L)
    rows = {}
    for k in ks:
        r = scores[k].report()
        rows[k] = dict(r, baseline_f1=loud[k]["f1"], baseline_precision=loud[k]["precision"],
                       baseline_recall=loud[k]["recall"], shapes_f1=shapes[k]["f1"],
                       shapes_precision=shapes[k]["precision"], shapes_recall=shapes[k]["recall"],
                       shapes_velocity_error=shapes[k]["velocity_error"],
                       shapes_offset_f1=shapes[k]["offset_f1"], shapes_notes_per_atom=shapes[k]["notes_per_atom"])
    return rows
