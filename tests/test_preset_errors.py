"""Broken presets, archives and sidl-live arguments found by a review: one line each, nothing lost.

Every case starts from a copy of the shipped drums-gmd preset (no torch needed), damaged in one way,
with the manifest's sha256 updated where the damage is meant to get past the hash check.
"""
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from sidl.realtime.preset import PresetError, load_preset
from sidl.realtime.preset.store import install_preset, shipped_preset_dir


def copy_shipped(tmp_path: Path, name: str = "drums-gmd") -> Path:
    folder = tmp_path / name
    shutil.copytree(shipped_preset_dir() / name, folder)
    return folder


def rewrite_manifest(folder: Path, change) -> None:
    m = json.loads((folder / "preset.json").read_text())
    change(m)
    (folder / "preset.json").write_text(json.dumps(m))


def replace_file(folder: Path, name: str, data: bytes) -> None:
    """Write ``data`` as ``name`` with a matching sha256 (damage past the hash check)."""
    (folder / name).write_bytes(data)
    rewrite_manifest(folder, lambda m: m["files"][name].update(sha256=hashlib.sha256(data).hexdigest()))


def one_line_error(folder: Path) -> str:
    with pytest.raises(PresetError) as e:
        load_preset(folder)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"preset '{folder.name}': "), msg
    return msg


@pytest.mark.parametrize("value", [float("inf"), "abc", None, [512], 512.7, True])
def test_atom_count_must_be_a_whole_number(tmp_path, value):
    folder = copy_shipped(tmp_path)
    rewrite_manifest(folder, lambda m: m["atoms"].update(count=value))
    assert f"atoms.count must be a whole number, got {value!r}" in one_line_error(folder)


def test_a_manifest_nested_too_deeply_is_one_line_and_does_not_break_the_list(tmp_path):
    user = tmp_path / "user"
    folder = copy_shipped(user)
    (folder / "preset.json").write_text("[" * 100_000 + "]" * 100_000)
    assert "nested too deeply" in one_line_error(folder)
    r = subprocess.run([sys.executable, "-m", "sidl.realtime.cli", "presets", "list"], capture_output=True,
                       text=True, env=dict(os.environ, SIDL_PRESETS=str(user)), timeout=60)
    assert r.returncode == 0 and "broken" in r.stdout and "Traceback" not in r.stderr


@pytest.mark.parametrize("make, says", [
    (lambda: b"", "empty file"),
    (lambda: b"PK\x05\x06" + b"\0" * 18, "prior.npz is not a readable prior"),
    (lambda: b"garbage, not numpy at all", "not an .npz archive"),
])
def test_an_unreadable_prior_says_so(tmp_path, make, says):
    folder = copy_shipped(tmp_path)
    replace_file(folder, "prior.npz", make())
    assert says in one_line_error(folder)


def test_prior_members_that_are_not_numeric_arrays(tmp_path):
    folder = copy_shipped(tmp_path)
    with np.load(folder / "prior.npz") as z:
        arrays = dict(z)
    buf = io.BytesIO()                                  # members without .npy: numpy hands back bytes
    with zipfile.ZipFile(buf, "w") as zf:
        for key in arrays:
            zf.writestr(key, b"raw bytes")
    replace_file(folder, "prior.npz", buf.getvalue())
    assert "is not a numeric array" in one_line_error(folder)
    buf = io.BytesIO()
    np.savez(buf, **{**arrays, "usage": np.full(arrays["usage"].shape, "a")})
    replace_file(folder, "prior.npz", buf.getvalue())
    assert "prior.npz: usage is not a numeric array" in one_line_error(folder)


def test_a_bad_codec_description_is_said_once(tmp_path):
    folder = copy_shipped(tmp_path)
    rewrite_manifest(folder, lambda m: m["codec"].update(beats_per_bar="four"))
    msg = one_line_error(folder)
    assert msg.count("bad codec description") == 1


def _zip(path: Path, members: dict) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def test_archives_extract_only_the_preset_files_and_refuse_huge_members(tmp_path):
    folder = copy_shipped(tmp_path)
    files = {f"drums-gmd/{p.name}": p.read_bytes() for p in folder.iterdir()}
    dest = tmp_path / "user"
    with pytest.raises(PresetError, match="holds no single preset"):
        install_preset(_zip(tmp_path / "empty.sidl", {}), dest)
    extra = {**files, "drums-gmd/notes.txt": b"x" * 1000, "drums-gmd/sub/encoder.onnx": b"not this one"}
    installed = install_preset(_zip(tmp_path / "extra.sidl", extra), dest)
    assert sorted(p.name for p in installed.iterdir()) == sorted(p.name for p in folder.iterdir())
    load_preset(installed)
    big = {**files, "drums-gmd/atoms.png": b"\0" * (101 * 10**6)}      # a few hundred kB zipped
    with pytest.raises(PresetError, match="more than a preset file can be"):
        install_preset(_zip(tmp_path / "big.sidl", big), dest)
    assert not [p for p in dest.iterdir() if p.name.startswith(".install-")]
    load_preset(installed)                                               # the earlier install is intact


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, **(env or {})))


def test_presets_show_exits_1_on_a_broken_preset(tmp_path):
    folder = copy_shipped(tmp_path)
    (folder / "atoms.png").write_bytes(b"damaged")
    r = run_cli("-m", "sidl.realtime.cli", "presets", "show", str(folder))
    assert r.returncode == 1 and "BROKEN" in r.stdout
    ok = run_cli("-m", "sidl.realtime.cli", "presets", "show", "drums-gmd")
    assert ok.returncode == 0 and "integrity  ok" in ok.stdout
    assert "hit F1" in ok.stdout and "load time" in ok.stdout
    f1 = json.loads(run_cli("-m", "sidl.realtime.cli", "presets", "show", "drums-gmd", "--json").stdout)[
        "metrics"]["pursuit"]["1"]["all"]["f1"]
    assert f"    1   {f1:.3f}" in ok.stdout                    # the F1 table, read from the manifest


@pytest.mark.parametrize("args, says", [
    (["--meter", "99999999999999/4"], "bad meter '99999999999999/4'"),
    (["--meter", "7/8"], "does not fit this preset's atoms of 4 steps"),      # before any port opens
    (["--preset", "nope"], "sidl-live: preset 'nope': not found"),
    (["--preset", ""], "no preset named"),
    (["--seed", "-1"], "seed must be >= 0"),
])
def test_sidl_live_argument_errors_come_before_the_ports(args, says):
    # A port that cannot exist: had the ports been opened first, this would be the error instead.
    r = run_cli("-m", "sidl.realtime.live.cli", "--port", "no such port anywhere", *args)
    assert r.returncode == 2 and says in r.stderr and r.stderr.count("\n") == 1, r.stderr
