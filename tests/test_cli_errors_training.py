"""User mistakes in `sidl train / evaluate / export / presets eval`: one line `sidl: ...`, exit 2, and
nothing lost (no traceback, no half-written or empty folder, no overwritten run or metrics).

Commands run in-process through the real `sidl` app; the runs are tiny and untrained (made here in
milliseconds), on a three-file folder corpus (one piece each for train, validation and test).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sidl.realtime.codec.spec import DRUMS
from sidl.training.checkpoint import save_checkpoint, save_model
from sidl.training.corpus import data_root
from sidl.training.model import ModelConfig, TCNkWTA

FILES = ["drummer1/eval_session/1_funk-groove1_138_beat_4-4.mid", "drummer1/session1/105_funk_95_fill_4-4.mid",
         "drummer1/session1/103_funk_95_fill_4-4.mid"]
TINY = ["--atoms", "16", "--tcn", "8", "--k-max", "2", "--epochs", "1", "--max-sections", "8",
        "--batch", "8", "--threads", "1"]


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("SIDL_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "corpus"
    root.mkdir()
    for i, rel in enumerate(FILES):
        shutil.copy(data_root() / "groove" / rel, root / f"{i}.mid")
    return root


def tiny_model() -> TCNkWTA:
    torch.manual_seed(0)
    return TCNkWTA(ModelConfig(channels=DRUMS.channels, n_atoms=16, k_max=2, tcn_channels=(8,)))


@pytest.fixture
def run(tmp_path, corpus):
    """A finished (untrained) run on the folder corpus, with the metrics of how it trained."""
    path = tmp_path / "run"
    save_model(path, tiny_model(), DRUMS, {"name": str(corpus), "license": "user data", "split": "train"},
               {"eval_pieces": 0})
    (path / "metrics.json").write_text(json.dumps({"test_pieces": 1, "training": {"steps": 7}}))
    return path


def sidl(capsys, *args) -> tuple[int, str]:
    """Run `sidl ARGS` in this process: (exit code, stderr)."""
    from sidl.realtime.cli import app
    with pytest.raises(SystemExit) as e:
        app([str(a) for a in args])
    return e.value.code, capsys.readouterr().err


def one_line_error(code: int, err: str, expect: str) -> None:
    assert code == 2, err
    assert err.startswith("sidl: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert expect in err, err


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ------------------------------------------------------------------------------------ sidl train


@pytest.mark.parametrize("option, expect", [
    (["--eval-pieces", "-1"], "--eval-pieces must be >= 0"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--threads", "-1"], "--threads must be >= 1"),
    (["--tcn", "0"], "every TCN width must be a whole number >= 1"),
    (["--tcn", "16,0"], "every TCN width must be a whole number >= 1"),
    (["--codec", "foo"], "--codec must be one of drums, piano-grid, piano-events"),
    (["--epochs", "-1"], "--epochs must be >= 0"),
    (["--epochs", "0", "--minutes", "-1"], "--minutes must be > 0"),
    (["--epochs", "0", "--minutes", "0"], "--minutes must be > 0"),
    (["--lr", "0"], "--lr must be a positive number"),
    (["--lr", "-0.1"], "--lr must be a positive number"),
    (["--max-sections", "-1"], "--max-sections must be >= 0"),
])
def test_train_rejects_bad_options_before_the_corpus_loads(tmp_path, capsys, option, expect):
    out = tmp_path / "out"
    # A corpus that does not exist: a bad option is reported first, and no --out folder is made.
    code, err = sidl(capsys, "train", tmp_path / "no-such-corpus", "--out", out, *TINY, *option)
    one_line_error(code, err, expect)
    assert not out.exists()


def test_failed_train_leaves_no_empty_out_folder(tmp_path, capsys):
    out = tmp_path / "out"
    code, err = sidl(capsys, "train", tmp_path / "no-such-corpus", "--out", out, *TINY)
    one_line_error(code, err, "no such folder")
    assert not out.exists()


@pytest.mark.parametrize("existing", ["run.json", "model.npz", "checkpoint.npz"])
def test_train_never_replaces_a_run_without_resume(tmp_path, capsys, corpus, existing):
    out = tmp_path / "out"
    out.mkdir()
    (out / existing).write_bytes(b"a finished run")
    code, err = sidl(capsys, "train", corpus, "--out", out, *TINY)
    one_line_error(code, err, f"{out} already holds a run: use --resume to continue it, or another --out")
    assert snapshot(out) == {existing: b"a finished run"}


def _checkpoint(folder: Path) -> None:
    model = tiny_model()
    opt = torch.optim.Adam(model.parameters())
    rng = np.random.default_rng(0).bit_generator.state
    save_checkpoint(folder, model, opt, {"step": 1, "epoch": 1, "elapsed": 1.0, "resampled": 0, "rng": rng,
                                         "k_rng": rng, "usage": [0.0] * 16, "history": []})


@pytest.mark.parametrize("option, expect", [
    (["--atoms", "32"], "checkpoint.npz was trained with --atoms 16 (this run asks for 32)"),
    (["--tcn", "8,8"], "checkpoint.npz was trained with --tcn 8 (this run asks for 8,8)"),
    (["--atom-length", "8", "--hop", "8"], "--atom-length 4 (this run asks for 8)"),
])
def test_resume_with_other_settings_names_the_setting(tmp_path, capsys, corpus, option, expect):
    out = tmp_path / "out"
    out.mkdir()
    _checkpoint(out)
    before = snapshot(out)
    code, err = sidl(capsys, "train", corpus, "--out", out, "--resume", *TINY, *option)
    one_line_error(code, err, expect)
    assert snapshot(out) == before


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_resume_from_a_corrupt_checkpoint_is_one_line(tmp_path, capsys, corpus, damage):
    out = tmp_path / "out"
    out.mkdir()
    _checkpoint(out)
    ck = out / "checkpoint.npz"
    ck.write_bytes({"empty": b"", "truncated": ck.read_bytes()[:2000], "garbage": b"not a zip at all\n" * 40}[damage])
    before = snapshot(out)
    code, err = sidl(capsys, "train", corpus, "--out", out, "--resume", *TINY)
    one_line_error(code, err, f"{ck} is not a readable sidl checkpoint (empty or corrupt file)")
    assert "allow_pickle" not in err
    assert snapshot(out) == before


# -------------------------------------------------------------------------- sidl evaluate / export


@pytest.mark.parametrize("option, expect", [
    (["--eval-pieces", "-1"], "--eval-pieces must be >= 0"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--threads", "-1"], "--threads must be >= 1"),
])
def test_evaluate_rejects_bad_options_and_keeps_metrics(capsys, run, option, expect):
    before = snapshot(run)
    code, err = sidl(capsys, "evaluate", run, *option)
    one_line_error(code, err, expect)
    assert snapshot(run) == before


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
@pytest.mark.parametrize("command", [["evaluate"], ["export", "--name", "x", "--out", "EXP"]])
def test_corrupt_model_npz_is_one_line_naming_the_file(tmp_path, capsys, run, damage, command):
    model = run / "model.npz"
    model.write_bytes({"empty": b"", "truncated": model.read_bytes()[:3000], "garbage": b"garbage\n" * 100}[damage])
    before = snapshot(run)
    code, err = sidl(capsys, command[0], run, *[str(tmp_path / a) if a == "EXP" else a for a in command[1:]])
    one_line_error(code, err, f"{model} is not a readable sidl model (empty or corrupt file)")
    assert "allow_pickle" not in err
    assert snapshot(run) == before and not (tmp_path / "EXP").exists()


@pytest.mark.parametrize("field, value", [("corpus", None), ("corpus", "groove"), ("corpus", 3),
                                          ("args", None), ("args", "x"), ("args", [1])])
@pytest.mark.parametrize("command", [["evaluate"], ["export", "--name", "x", "--out", "EXP"]])
def test_run_json_fields_that_are_not_objects(tmp_path, capsys, run, field, value, command):
    info = json.loads((run / "run.json").read_text())
    info[field] = value
    (run / "run.json").write_text(json.dumps(info))
    before = snapshot(run)
    code, err = sidl(capsys, command[0], run, *[str(tmp_path / a) if a == "EXP" else a for a in command[1:]])
    one_line_error(code, err, f"run.json: its '{field}' field must be an object")
    assert snapshot(run) == before and not (tmp_path / "EXP").exists()      # checked before exporting


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "", "\xff"])
def test_evaluate_replaces_an_unreadable_metrics_json(capsys, run, text):
    (run / "metrics.json").write_text(text, encoding="latin-1")
    code, err = sidl(capsys, "evaluate", run)
    assert code == 0, err
    assert err.count("\n") == 1 and "metrics.json" in err and "training record cannot be kept" in err, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_pieces"] == 1 and "pursuit" in metrics and "training" not in metrics
    metrics["training"] = {"steps": 7}                  # a readable one keeps its training record
    (run / "metrics.json").write_text(json.dumps(metrics))
    code, err = sidl(capsys, "evaluate", run)
    assert code == 0 and err == "", err
    assert json.loads((run / "metrics.json").read_text())["training"] == {"steps": 7}


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "3"])
def test_export_checks_metrics_json_first(tmp_path, capsys, run, text):
    (run / "metrics.json").write_text(text)
    code, err = sidl(capsys, "export", run, "--name", "x", "--out", tmp_path / "exp")
    one_line_error(code, err, f"{run / 'metrics.json'}")
    assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize("n", ["0", "-1"])
def test_export_rejects_prior_positions_below_one_first(tmp_path, capsys, run, n):
    code, err = sidl(capsys, "export", run, "--name", "x", "--out", tmp_path / "exp", "--prior-positions", n)
    one_line_error(code, err, "--prior-positions must be >= 1")
    assert not (tmp_path / "exp").exists()


def test_export_archive_onto_a_folder_is_refused_first(tmp_path, capsys, run):
    exp = tmp_path / "exp"
    (exp / "y.sidl").mkdir(parents=True)
    (exp / "y").mkdir()
    (exp / "y" / "keep.txt").write_text("the previous preset")
    code, err = sidl(capsys, "export", run, "--name", "y", "--archive", "--out", exp)
    one_line_error(code, err, f"{exp / 'y.sidl'} is a folder, not an archive path")
    assert sorted(p.name for p in exp.iterdir()) == ["y", "y.sidl"]
    assert (exp / "y" / "keep.txt").read_text() == "the previous preset"


# -------------------------------------------------------------------------------- sidl presets eval


def test_preset_eval_rejects_negative_pieces_and_a_corpus_that_is_not_an_object(corpus):
    from sidl.export.evaluate import held_out_pieces
    preset = SimpleNamespace(name="p", codec=DRUMS, manifest={"corpus": {"name": str(corpus)}})
    assert len(held_out_pieces(preset, 0)) == 1
    with pytest.raises(ValueError, match="--pieces must be >= 0"):
        held_out_pieces(preset, -1)
    for value, kind in ((None, "null"), ("groove", "a string"), (3, "a number")):
        preset = SimpleNamespace(name="p", codec=DRUMS, manifest={"corpus": value})
        with pytest.raises(ValueError, match=f"preset 'p': preset.json's corpus is {kind}, not an object"):
            held_out_pieces(preset, 0)
