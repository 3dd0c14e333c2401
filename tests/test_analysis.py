"""sidl style / probe (training/analysis) on real corpus data: grouping, key finding, outputs."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA

from sidl.training.analysis import cv, key as keys, labels as lab, meter  # noqa: E402
from sidl.training.analysis.features import pitch_class_histogram  # noqa: E402
from sidl.training.analysis.probe import folds_share_groups  # noqa: E402


def _sidl(*args, env_extra=None, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "sidl.realtime.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_grouped_folds_never_split_an_asap_score():
    """Every ASAP performance (metadata only): a score folder's performances stay on one side."""
    from sidl.training.asap import asap_files
    files, _, _ = asap_files(DATA / "asap")
    y = np.array([labels["composer"] for _, labels in files])
    groups = np.array([labels["folder"] for _, labels in files])
    keep = np.isin(y, sorted(cv.usable_classes(list(y), list(groups))))
    folds = cv.grouped_folds(y[keep], groups[keep])
    assert len(folds) == cv.N_FOLDS
    assert not folds_share_groups(folds, groups[keep])
    assert sorted(np.concatenate([te for _, te in folds]).tolist()) == list(range(int(keep.sum())))
    # and the check itself catches a fold that does share a group
    assert folds_share_groups([(np.array([0, 1]), np.array([2]))], np.array(["a", "b", "a"]))


def test_gmd_groups_are_sessions():
    from sidl.training.groove import groove_corpus
    pieces = [p for p in groove_corpus("test") if p.labels["drummer"] in ("drummer1", "drummer7")]
    got = lab.label_pieces("groove", pieces, "drummer")
    assert len(got.pieces) == len(pieces)
    assert all(g.startswith(d + "/") for g, d in zip(got.groups, got.y))
    assert {p.name.rsplit("/", 1)[0] for p in pieces} == set(got.groups)


def test_key_names_and_scores():
    assert lab.parse_key("Gb:maj") == (6, False) and lab.parse_key("c#:min") == (1, True)
    assert lab.key_name(*lab.parse_key("Gb:maj")) == "F# major"
    assert lab.signature_key(-3) == "Eb major" and keys.relative_major("C minor") == "Eb major"
    s = keys.key_scores(["C major", "C major", "C major"], ["C major", "G major", "F major"])
    assert s["weighted_score"] == pytest.approx((1 + 0.5 + 0) / 3)          # mir_eval: fifth above only
    assert s["weighted_score_symmetric"] == pytest.approx((1 + 0.5 + 0.5) / 3)


def test_krumhansl_on_scales_and_on_pop909_songs():
    scale = np.zeros(12)
    scale[[0, 2, 4, 5, 7, 9, 11]] = [3, 1, 2, 1, 2.5, 1, 1]                  # C major, tonic and fifth weighted
    assert keys.krumhansl_key(scale) == "C major"
    minor = np.zeros(12)
    minor[[9, 11, 0, 2, 4, 5, 8]] = [3, 1, 2, 1, 2.5, 1, 1]                  # A harmonic minor
    assert keys.krumhansl_key(minor) == "A minor"
    assert keys.krumhansl_key(np.roll(scale, 6)) == "F# major"
    from sidl.realtime.codec.spec import PIANO_GRID
    from sidl.training.pop909 import pop909_corpus
    songs = [f"{i:03d}" for i in range(1, 13)]
    pieces = pop909_corpus(None, PIANO_GRID, songs=songs)
    ref = [lab.longest_key(DATA / "pop909" / "POP909" / p.labels["song_id"] / "key_audio.txt") for p in pieces]
    est = [keys.krumhansl_key(pitch_class_histogram(p.x, p.codec, "duration")) for p in pieces]
    s = keys.key_scores(ref, est)
    assert len(pieces) == 12 and s["weighted_score"] >= 0.6, (ref, est)
    if not keys.music21_missing():
        est21 = [keys.aarden_key(pitch_class_histogram(p.x, p.codec, "duration")) for p in pieces]
        assert keys.key_scores(ref, est21)["weighted_score"] >= 0.6, (ref, est21)


def test_a_key_profile_learned_in_two_keys_finds_all_twenty_four_on_pop909():
    """KeyRelative shares one profile per mode across tonics: trained on 60 real songs each turned to
    C major or C minor, it names the keys of 40 other songs as they are (mostly not C)."""
    from sidl.realtime.codec.spec import PIANO_GRID
    from sidl.training.analysis.features import pitch_class_features
    from sidl.training.pop909 import pop909_corpus
    pieces = pop909_corpus(None, PIANO_GRID, songs=[f"{i:03d}" for i in range(1, 101)])
    ref = [lab.longest_key(DATA / "pop909" / "POP909" / p.labels["song_id"] / "key_audio.txt") for p in pieces]
    f = np.stack([pitch_class_features(p.x, p.codec) for p in pieces])
    train = range(60)
    turned = np.stack([np.roll(f[i], -lab.parse_key(ref[i])[0], axis=1) for i in train])
    as_c = [lab.key_name(0, lab.parse_key(ref[i])[1]) for i in train]
    model = keys.KeyRelative(modes=2).fit(turned, as_c, list(train))
    test = list(range(60, len(pieces)))
    est = model.predict(f[test])
    truth = [ref[i] for i in test]
    assert sum(not k.startswith("C ") for k in truth) >= 30
    assert keys.key_scores(truth, list(est))["weighted_score"] >= 0.8, list(zip(truth, est))


def test_a_transposed_piece_moves_its_shapes_code_by_the_same_interval(tmp_path):
    """The shapes code is shift-invariant in pitch: two semitones up, each shape sits two pitch
    classes higher (what the key profile reads)."""
    from sidl.realtime.preset import load_preset
    from sidl.training.analysis.features import code_by_pitch_class, encode_piece, piece_steps
    from sidl.training.pop909 import pop909_corpus
    preset = load_preset("piano-pop909")
    (p,) = pop909_corpus(None, preset.codec, songs=["003"])
    x = piece_steps(preset, p.x, 16)
    n = preset.codec.n_voices
    up = np.zeros_like(x)
    for block in range(x.shape[1] // n):                     # onsets, velocities, holds: each by key
        up[:, block * n + 2: (block + 1) * n] = x[:, block * n: (block + 1) * n - 2]
    assert not x[:, [b * n + k for b in range(3) for k in (n - 2, n - 1)]].any()   # nothing falls off the top
    a, b = (code_by_pitch_class(encode_piece(preset, v, max_bars=16), preset.n_atoms) for v in (x, up))
    moved = np.roll(a, 2, axis=1)
    assert float((moved * b).sum() / np.sqrt((moved ** 2).sum() * (b ** 2).sum())) > 0.98


def test_meter_from_prior_and_autocorrelation_on_gmd():
    """4/4 GMD beats: both label-free answers prefer 4 beats to 3 on most pieces."""
    from sidl.realtime.preset import load_preset
    from sidl.training.analysis.features import encode_piece, piece_steps
    from sidl.training.groove import groove_corpus
    preset = load_preset("drums-gmd")
    pieces = [p for p in groove_corpus("test") if p.labels["beat_type"] == "beat"
              and p.labels["time_signature"] == "4-4"][:12]
    cand = {"3/4": 3, "4/4": 4}
    prior = [meter.prior_meter(encode_piece(preset, piece_steps(preset, p.x)).top_atom, preset.usage, cand)
             for p in pieces]
    auto = [meter.autocorrelation_meter(meter.onset_envelope(p.x, 9), cand, preset.stride) for p in pieces]
    assert prior.count("4/4") >= 9 and auto.count("4/4") >= 9, (prior, auto)


@pytest.fixture(scope="module")
def labelled_folder(tmp_path_factory):
    """24 real GMD files of two styles in a user folder, with a file,label CSV."""
    root = tmp_path_factory.mktemp("styles")
    rows = list(csv.DictReader(open(DATA / "groove" / "info.csv")))
    chosen = []
    for style in ("rock", "jazz"):
        chosen += [r for r in rows if r["style"].startswith(style + "/") and r["beat_type"] == "beat"][:12]
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label"])
        for i, r in enumerate(chosen):
            name = f"{i:02d}_{Path(r['midi_filename']).name}"      # basenames repeat across sessions
            shutil.copy(DATA / "groove" / r["midi_filename"], root / name)
            w.writerow([name, r["style"].split("/")[0]])
    return root


def test_probe_json_keys_and_confusion_png(labelled_folder, tmp_path):
    png = tmp_path / "confusion.png"
    r = _sidl("probe", str(labelled_folder), "--label", "style", "--labels", str(labelled_folder / "labels.csv"),
              "-p", "drums-gmd", "--confusion", str(png), "--json", env_extra={"SIDL_CACHE": str(tmp_path / "c")})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for k in ("label", "pieces", "groups", "classes", "accuracy", "balanced_accuracy", "baselines"):
        assert k in out
    assert out["pieces"] == 24 and out["groups"] == 24 and out["classes"] == ["jazz", "rock"]
    assert set(out["baselines"]) == {"chance", "majority", "statistics", "codes_lda", "statistics_lda"}
    for b in out["baselines"].values():
        assert {"accuracy", "balanced_accuracy"} <= set(b)
    assert out["baselines"]["chance"]["accuracy"] == 0.5
    assert 0 <= out["accuracy"] <= 1 and png.stat().st_size > 5000


def test_style_writes_map_codes_and_silhouettes(labelled_folder, tmp_path):
    r = _sidl("style", str(labelled_folder), "--by", "style", "--labels", str(labelled_folder / "labels.csv"),
              "-p", "drums-gmd", "-o", str(tmp_path / "out"), "--json", env_extra={"SIDL_CACHE": str(tmp_path / "c")})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert -1 <= out["silhouette_codes"] <= 1 and -1 <= out["silhouette_statistics"] <= 1
    assert out["most_similar"][0]["cosine"] >= out["most_dissimilar"][0]["cosine"]
    rows = list(csv.reader(open(tmp_path / "out" / "codes.csv")))
    from sidl.realtime.preset import load_preset
    n_atoms = load_preset("drums-gmd").n_atoms
    assert len(rows) == 25 and rows[0][:3] == ["file", "style", "group"] and len(rows[0]) == 5 + n_atoms
    assert (tmp_path / "out" / "style-folder-style.png").stat().st_size > 10000


@pytest.mark.parametrize("args, says", [
    (["probe", "groove", "--label", "composer", "-p", "drums-gmd"], "no label 'composer'"),
    (["probe", "asap", "--label", "composer", "-p", "drums-gmd"], "does not fit asap"),
    (["probe", "nowhere", "--label", "style", "-p", "drums-gmd"], "not a corpus"),
    (["style", "groove", "--by", "style", "-p", "no-such-preset", "-o", "x"], "no-such-preset"),
])
def test_bad_input_is_one_line(args, says):
    r = _sidl(*args, timeout=120)
    assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_the_lda_reader_reads_a_rare_features_share_and_unknown_readers_are_refused():
    """Two classes told apart only by a rare atom's small share, beside 39 common atoms' noise: the
    LDA reader (square roots, shrinkage) tells held-out rows apart by it."""
    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b"], 60)
    X = rng.gamma(2.0, 1.0, (120, 40))
    X[:, 0] = np.where(y == "a", 0.0004, 0.0025) * rng.uniform(0.8, 1.2, 120)
    folds = [(np.r_[0:45, 60:105], np.r_[45:60, 105:120])]
    pred = cv.cross_val_predict(X, y, folds, reader="lda")
    assert (pred[folds[0][1]] == y[folds[0][1]]).mean() >= 0.9
    with pytest.raises(ValueError, match="one of logistic, lda"):
        cv.linear_classifier(reader="svm")
