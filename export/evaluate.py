"""Measure a preset as it plays: its own ONNX encoder and decoder through onnxruntime, on the test
split of the corpus it was trained on. Numpy and onnxruntime only (no torch), so anyone holding a
preset and the corpus can check its manifest's numbers, atom storage rounding included.

    sidl presets eval drums-gmd
"""
from __future__ import annotations

import numpy as np

from sidl.realtime.codec.files import json_kind

from sidl.training.corpora import load_corpus
from sidl.training.metrics import GRID_TOLERANCE_STEPS, Counts


def held_out_pieces(preset, limit: int = 0):
    """The test split of the corpus named in the preset's manifest (the first ``limit``; 0: all)."""
    if limit < 0:
        raise ValueError(f"--pieces must be >= 0 (0: all test pieces), got {limit}")
    corpus = preset.manifest.get("corpus", {})
    if not isinstance(corpus, dict):
        raise ValueError(f"preset {preset.name!r}: preset.json's corpus is {json_kind(corpus)}, not an object: "
                         f"its test split cannot be found")
    name = corpus.get("name", "")
    if not isinstance(name, str):
        raise ValueError(f"preset {preset.name!r}: preset.json's corpus name is {json_kind(name)}, not a string: "
                         f"its test split cannot be found")
    pieces, _ = load_corpus(name, preset.codec, "test")
    return pieces[:limit] if limit else pieces


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
