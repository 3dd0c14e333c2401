"""Export: ONNX parity with torch on real sections, the preset round trip, atomic writes, bad input."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import mido
import numpy as np
import onnxruntime as ort
import pytest
import torch

import presetkit
from sidl.export import onnx as sidl_onnx
from sidl.export import preset as export_mod
from sidl.realtime.compose import Composer
from sidl.realtime.controls import Controls
from sidl.realtime.preset.format import PRESET_FILES
from sidl.realtime.preset import PresetError, load_preset
from sidl.realtime.preset.store import find_presets, install_preset
from sidl.training.checkpoint import load_model

torch.set_num_threads(1)


def real_sections(kind: str, n: int = 6, bars: int = 2) -> list[np.ndarray]:
    """Validation-split sections (bar-aligned) plus one silent bar: silence is where guards matter."""
    pieces = presetkit.pieces(kind, "validation")
    rng = np.random.default_rng(1)
    out = []
    for i in rng.choice(len(pieces), n, replace=False):
        x = pieces[i].x
        steps = pieces[i].codec.steps_per_bar * bars
        start = int(rng.integers(max(1, len(x) // steps))) * steps
        w = x[start:start + steps]
        if len(w) == steps:
            out.append(np.ascontiguousarray(w))
    out.append(np.zeros_like(out[0][:16]))
    return out


@pytest.fixture(scope="module", params=["drums", "piano"])
def exported(request):
    kind = request.param
    folder = presetkit.preset_dir(kind)
    model, codec, _ = load_model(presetkit.run_dir(kind))
    storage = json.loads((folder / "preset.json").read_text())["atoms"]["storage"]
    enc, dec = sidl_onnx.build_modules(model, codec, storage)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sessions = [ort.InferenceSession(str(folder / f), opts, providers=["CPUExecutionProvider"])
                for f in ("encoder.onnx", "decoder.onnx")]
    return kind, folder, model, codec, enc, dec, sessions


def test_onnx_matches_torch_on_real_sections(exported):
    kind, _, model, codec, enc, dec, (s_enc, s_dec) = exported
    worst = {"val": 0.0, "y": 0.0}
    sections = real_sections(kind)
    assert sum(int((x[:, :codec.n_voices] > 0.5).sum()) for x in sections) > 50   # real music in them
    for x in sections:
        for k in range(1, model.cfg.k_max + 1):
            with torch.no_grad():
                t_idx, t_val = enc(torch.from_numpy(x), torch.tensor(k))
                t_y = dec(t_idx, t_val).numpy()
            o_idx, o_val = s_enc.run(None, {"x": x, "k": np.array(k, np.int64)})
            (o_y,) = s_dec.run(None, {"idx": o_idx, "val": o_val})
            assert o_idx.shape == o_val.shape == (k, len(x) // model.cfg.atom_length)
            assert o_y.shape == x.shape and np.isfinite(o_y).all()
            np.testing.assert_array_equal(o_idx, t_idx.numpy())
            worst["val"] = max(worst["val"], float(np.abs(o_val - t_val.numpy()).max()))
            worst["y"] = max(worst["y"], float(np.abs(o_y - t_y).max()))
    print(f"{kind}: max |onnx - torch| val {worst['val']:.2e}, decoded {worst['y']:.2e}")
    assert worst["val"] <= 1e-5 and worst["y"] <= 1e-5


def test_stored_atoms_stay_close_to_the_trained_ones(exported):
    kind, _, model, codec, enc, dec, _ = exported
    stored = dec.atoms().numpy()
    trained = model.atoms.detach().numpy()
    step = np.abs(trained).max(axis=(1, 2), keepdims=True)
    tolerance = step / 127 if dec.atoms.stored.dtype == torch.int8 else 1e-3 * step
    assert np.all(np.abs(stored - trained) <= tolerance * 0.51 + 1e-7)


def test_decoder_reconstructs_what_the_encoder_found(exported):
    """Atoms are real patches: through both graphs, real bars come back, better with more winners."""
    kind, _, model, codec, enc, dec, (s_enc, s_dec) = exported
    n = codec.n_voices
    f1 = {}
    for k in (1, model.cfg.k_max):
        tp = fp = fn = 0
        for x in real_sections(kind)[:-1]:
            idx, val = s_enc.run(None, {"x": x, "k": np.array(k, np.int64)})
            (y,) = s_dec.run(None, {"idx": idx, "val": val})
            t, p = x[:, :n] > 0.5, y[:, :n] > 0.5
            tp += int((t & p).sum()); fp += int((~t & p).sum()); fn += int((t & ~p).sum())
        f1[k] = 2 * tp / max(1, 2 * tp + fp + fn)
    print(f"{kind}: onset/hit F1 by k {f1}")
    # 512 drum patches cover beats well; 96 piano patches (88 keys) only a little
    assert f1[model.cfg.k_max] > {"drums": 0.8, "piano": 0.1}[kind]
    assert f1[model.cfg.k_max] > f1[1]


def test_decoder_cost_grows_with_k_not_atoms(exported):
    """The sparse decoder gathers winners: no tensor in its graph is (n_atoms, ...) except the atoms."""
    import onnx
    _, folder, model, *_ = exported
    g = onnx.load(str(folder / "decoder.onnx")).graph
    big = [i.name for i in g.initializer if int(np.prod(i.dims)) >= model.cfg.n_atoms * 4]
    assert big == ["atoms.stored"]
    assert not any(n.op_type in ("ConvTranspose", "MatMul", "Gemm") for n in g.node)


def test_preset_round_trip(exported, gmd_bars):
    kind, folder, model, codec, enc, dec, _ = exported
    m = json.loads((folder / "preset.json").read_text())
    assert m["schema_version"] == (3 if kind == "drums" else 1) and m["name"] == f"test-{kind}"
    assert m["codec"] == codec.to_dict() and m["k_max"] == model.cfg.k_max == m["k_live"]
    feel = {"kind": "drum-feel", "gain_levels": 32, "timing_levels": 16} if kind == "drums" else {}
    assert m["atoms"] == {"count": model.cfg.n_atoms, "length": 4, "hop": 4, "storage": m["atoms"]["storage"], **feel}
    assert m["meter_prior"]["beats_per_bar"] == 4 and m["meter_prior"]["positions_per_bar"] == 4
    assert m["corpus"]["license"].startswith("CC BY 4.0" if kind == "drums" else "MIT")
    assert m["metrics"] == {"test": {"f1": 0.5}}
    for f in PRESET_FILES:
        assert m["files"][f]["sha256"] == hashlib.sha256((folder / f).read_bytes()).hexdigest()

    p = load_preset(folder)
    A = model.cfg.n_atoms
    assert p.codec == codec and p.k == model.cfg.k_max and p.stride == 4
    assert p.usage.shape == (A, 4) and p.transitions.shape == (A, A) and p.atom_scale.shape == (A,)
    assert p.usage.sum() > 0 and np.all(p.transitions.sum(1) <= 1.01)
    assert (p.transitions.sum(1) > 0.5).sum() > 10           # the corpus has successions
    x = real_sections(kind)[0]
    idx, val = p.encode_bar(x, 2)
    assert idx.shape == val.shape == (len(x) // 4, 2) and idx.dtype == np.int64 and val.dtype == np.float32
    with torch.no_grad():
        t_idx, t_val = enc(torch.from_numpy(x), torch.tensor(2))
    np.testing.assert_array_equal(idx, t_idx.numpy().T)
    y = p.decode_bar(idx, val)
    assert y.shape == x.shape
    with torch.no_grad():
        np.testing.assert_allclose(y, dec(t_idx, t_val).numpy(), atol=1e-5)

    # the engine's composer runs on it, as on the stand-in
    comp = Composer(p)
    bars = gmd_bars if kind == "drums" else [presetkit_notes(codec, x)]
    for mode in ("generate", "simplify", "echo"):
        c = Controls(mode=mode, keep=6, density=1.5, variation=0.3, seed=3)
        for b, played in enumerate(bars[:3]):
            notes = comp.compose(b, played, c)
            assert np.all((notes.start >= -0.5) & (notes.start < codec.steps_per_bar))

    # atoms.mid: one clip per atom, most used first; atoms.png: a sheet with a tile per atom
    mid = mido.MidiFile(folder / "atoms.mid")
    ons = [msg for msg in mido.merge_tracks(mid.tracks) if msg.type == "note_on"]
    assert len(ons) >= model.cfg.n_atoms // 4
    from PIL import Image
    with Image.open(folder / "atoms.png") as im:         # an indexed PNG (export.atoms.palette_png_bytes)
        im.verify()
    with Image.open(folder / "atoms.png") as im:
        pixels = np.asarray(im.convert("RGB"))
    h, w, _ = pixels.shape
    assert w > 100 and h > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 3


def presetkit_notes(codec, x):
    from sidl.realtime.codec.convert import decode_notes
    return decode_notes(codec, x[: codec.steps_per_bar]).scaled(codec.steps_per_beat)


def read_png(data: bytes):
    """Minimal reader for what png_bytes writes (8-bit RGB, filter 0): checks chunk CRCs too."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        n, = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        assert struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0] == zlib.crc32(kind + body)
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, colour = header[:4]
    assert (depth, colour) == (8, 2)
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + 3 * w)
    assert np.all(raw[:, 0] == 0)
    return w, h, raw[:, 1:].reshape(h, w, 3)


def test_archive_installs_and_is_found_by_name(tmp_path, monkeypatch):
    folder = presetkit.preset_dir("drums")
    archive = folder.with_name(folder.name + ".sidl")
    with zipfile.ZipFile(archive) as z:
        assert sorted(z.namelist()) == sorted(f"test-drums/{f}" for f in ("preset.json",) + PRESET_FILES)
    monkeypatch.setenv("SIDL_PRESETS", str(tmp_path / "user"))
    target = install_preset(archive)
    assert target == tmp_path / "user" / "test-drums"
    assert find_presets()["test-drums"] == target
    assert load_preset("test-drums").path == target
    assert sorted(os.listdir(tmp_path / "user")) == ["test-drums"]      # no temporary left
    install_preset(folder)                                            # again, from the folder: replaces
    assert sorted(os.listdir(tmp_path / "user")) == ["test-drums"]


def test_export_is_atomic(tmp_path, monkeypatch):
    """A failure after the graphs and the prior are written leaves the old preset, and no temporaries."""
    good = presetkit.preset_dir("drums")
    out = tmp_path / "out"
    out.mkdir()
    shutil.copytree(good, out / "test-drums")
    before = {f: (out / "test-drums" / f).read_bytes() for f in os.listdir(out / "test-drums")}

    def fast_onnx(model, codec, folder, dtype, encoder="pursuit"):   # reuse the session's graphs
        for f in ("encoder.onnx", "decoder.onnx"):
            shutil.copyfile(good / f, Path(folder) / f)
        return sidl_onnx.build_modules(model, codec, dtype, encoder)

    seen = {}

    def broken_png(path, *a):
        seen["files"] = sorted(os.listdir(Path(path).parent))
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_mod, "export_onnx", fast_onnx)
    monkeypatch.setattr(export_mod.atom_media, "write_atoms_png", broken_png)
    for target in ("test-drums", "fresh"):
        with pytest.raises(RuntimeError, match="disk full"):
            export_mod.export_preset(presetkit.run_dir("drums"), target, out, atom_dtype="float16",
                                     pieces=presetkit.pieces("drums", "train"), max_positions=200)
        assert seen["files"] == ["atoms.mid", "decoder.onnx", "encoder.onnx", "prior.npz"]   # mid-way
    assert sorted(os.listdir(out)) == ["test-drums"]
    assert {f: (out / "test-drums" / f).read_bytes() for f in before} == before
    load_preset(out / "test-drums")


# ------------------------------------------------------------------------------------ bad input


def one_line(e: PresetError, name: str) -> str:
    msg = str(e)
    assert "\n" not in msg and msg.startswith(f"preset '{name}': "), msg
    return msg


def rewrite_manifest(folder: Path, change) -> None:
    m = json.loads((folder / "preset.json").read_text())
    change(m)
    (folder / "preset.json").write_text(json.dumps(m))


def test_missing_file(tmp_path):
    folder = presetkit.copy_preset("drums", tmp_path)
    (folder / "decoder.onnx").unlink()
    with pytest.raises(PresetError) as e:
        load_preset(folder)
    assert "missing decoder.onnx" in one_line(e.value, "test-drums")


def test_hash_mismatch(tmp_path):
    folder = presetkit.copy_preset("drums", tmp_path)
    data = bytearray((folder / "prior.npz").read_bytes())
    data[len(data) // 2] ^= 1
    (folder / "prior.npz").write_bytes(bytes(data))
    with pytest.raises(PresetError) as e:
        load_preset(folder)
    assert "sha256 mismatch for prior.npz" in one_line(e.value, "test-drums")


def test_unknown_schema_version(tmp_path):
    folder = presetkit.copy_preset("drums", tmp_path)
    rewrite_manifest(folder, lambda m: m.update(schema_version=99))
    with pytest.raises(PresetError) as e:
        load_preset(folder)
    assert "unknown schema version 99" in one_line(e.value, "test-drums")


def test_unknown_codec(tmp_path):
    folder = presetkit.copy_preset("piano", tmp_path)
    rewrite_manifest(folder, lambda m: m["codec"].update(name="banjo-tab"))
    with pytest.raises(PresetError) as e:
        load_preset(folder)
    assert "unknown codec 'banjo-tab'" in one_line(e.value, "test-piano")
    rewrite_manifest(folder, lambda m: m["codec"].update(name="piano-events"))
    with pytest.raises(PresetError) as e:
        load_preset(folder)
    assert "has no bars" in one_line(e.value, "test-piano")


@pytest.mark.parametrize("graph", ["encoder.onnx", "decoder.onnx"])
def test_truncated_onnx(tmp_path, graph):
    """Truncated after export, with a manifest hash to match (a broken exporter, not a bad download)."""
    folder = presetkit.copy_preset("drums", tmp_path)
    data = (folder / graph).read_bytes()[:3000]
    (folder / graph).write_bytes(data)
    rewrite_manifest(folder, lambda m: m["files"][graph].update(sha256=hashlib.sha256(data).hexdigest()))
    with pytest.raises(PresetError) as e:
        load_preset(folder)
    assert f"{graph} is not a loadable ONNX model" in one_line(e.value, "test-drums")


def evil_archive(path: Path, member: str) -> Path:
    good = presetkit.preset_dir("drums")
    with zipfile.ZipFile(path, "w") as z:
        for f in ("preset.json",) + PRESET_FILES:
            z.write(good / f, f"test-drums/{f}")
        z.writestr(member, "gotcha")
    return path


@pytest.mark.parametrize("member", ["../escaped.txt", "test-drums/../../escaped.txt", "/tmp/escaped.txt",
                                    "test-drums\\..\\..\\escaped.txt"])
def test_archive_path_traversal(tmp_path, member):
    user = tmp_path / "deep" / "user"
    archive = evil_archive(tmp_path / "evil.sidl", member)
    with pytest.raises(PresetError) as e:
        install_preset(archive, dest=user)
    assert f"archive member {member!r} escapes the preset folder" in one_line(e.value, "evil.sidl")
    assert not list(tmp_path.rglob("escaped.txt")) and os.listdir(user) == []


def test_archive_symlink_is_refused(tmp_path):
    archive = evil_archive(tmp_path / "link.sidl", "test-drums/readme")
    with zipfile.ZipFile(archive, "a") as z:
        info = zipfile.ZipInfo("test-drums/link")
        info.external_attr = (0o120777 << 16)
        z.writestr(info, "/etc/passwd")
    with pytest.raises(PresetError) as e:
        install_preset(archive, dest=tmp_path / "user")
    assert "is a symbolic link" in one_line(e.value, "link.sidl")


def test_not_found_and_archive_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("SIDL_PRESETS", str(tmp_path))
    with pytest.raises(PresetError) as e:
        load_preset("no-such-preset")
    assert "not found" in one_line(e.value, "no-such-preset")
    archive = presetkit.preset_dir("drums").with_name("test-drums.sidl")
    with pytest.raises(PresetError, match="install it first"):
        load_preset(archive)


def test_nothing_is_unpickled(tmp_path):
    """A prior.npz holding an object array (pickle) is refused, even with a matching hash."""
    folder = presetkit.copy_preset("drums", tmp_path)
    buf = io.BytesIO()
    np.savez(buf, usage=np.array([{"evil": 1}], dtype=object), scale=np.zeros(1),
             next_atom=np.zeros((1, 1)), next_p=np.zeros((1, 1)))
    (folder / "prior.npz").write_bytes(buf.getvalue())
    rewrite_manifest(folder, lambda m: m["files"]["prior.npz"].update(
        sha256=hashlib.sha256(buf.getvalue()).hexdigest()))
    with pytest.raises(PresetError) as e:
        load_preset(folder)
    assert "prior.npz is not a readable prior" in one_line(e.value, "test-drums")


def test_cli_errors_are_one_line_exit_2(tmp_path):
    env = dict(os.environ, SIDL_PRESETS=str(tmp_path))
    folder = presetkit.copy_preset("drums", tmp_path / "broken")
    (folder / "atoms.png").write_bytes(b"not a png")
    cases = [(["presets", "show", "nope"], "preset 'nope': not found"),
             (["presets", "install", str(tmp_path / "missing.sidl")], "no such file or folder"),
             (["presets", "export-atoms", str(folder), str(tmp_path / "atoms")], "sha256 mismatch for atoms.png"),
             (["export", str(tmp_path), "--name", "x"], "not a training run"),
             (["export", str(presetkit.run_dir("drums")), "--name", "a/b"], "a preset name is"),
             (["presets", "show"], "Missing argument")]
    for args, expect in cases:
        r = subprocess.run([sys.executable, "-m", "sidl.realtime.cli", *args], capture_output=True,
                           text=True, env=env, timeout=120)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.count("\n") == 1 and expect in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_cli_presets_commands(tmp_path):
    env = dict(os.environ, SIDL_PRESETS=str(tmp_path / "user"))

    def sidl(*args):
        r = subprocess.run([sys.executable, "-m", "sidl.realtime.cli", *args], capture_output=True,
                           text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout

    archive = presetkit.preset_dir("piano").with_name("test-piano.sidl")
    assert "installed" in sidl("presets", "install", str(archive))
    assert "test-piano" in sidl("presets", "list")
    shown = sidl("presets", "show", "test-piano")
    assert "MIT" in shown and "integrity  ok" in shown and "kB" in shown and "load time" in shown
    assert len(shown.splitlines()) < 30                              # a summary; the rest is behind --json
    manifest = json.loads(sidl("presets", "show", "test-piano", "--json"))
    assert manifest["verified"] and manifest["metrics"] == {"test": {"f1": 0.5}} and "files" in manifest
    out = sidl("presets", "export-atoms", "test-piano", str(tmp_path / "atoms"))
    assert "96 clips" in out and "atoms-all-1.png" in out
    w, h, pixels = read_png((tmp_path / "atoms" / "atoms-all-1.png").read_bytes())
    assert w > 100 and h > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 3
    assert (tmp_path / "atoms" / "atoms.mid").stat().st_size > 100
    assert len(list((tmp_path / "atoms" / "clips").glob("*.mid"))) == 96


def test_auto_storage_fits_the_size_targets():
    """float32 while it fits, then float16, then int8 (drum encoders also store velocity rows)."""
    from sidl.realtime.codec.spec import DRUMS, PIANO_GRID
    assert export_mod.choose_atom_dtype(64, 4, DRUMS) == "float32"
    assert export_mod.choose_atom_dtype(448, 4, DRUMS) == "float16"
    assert export_mod.choose_atom_dtype(512, 4, DRUMS) == "int8"
    assert export_mod.choose_atom_dtype(128, 4, PIANO_GRID) == "float16"
    assert export_mod.choose_atom_dtype(400, 4, PIANO_GRID) == "int8"
    drums = json.loads((presetkit.preset_dir("drums") / "preset.json").read_text())
    assert sum(v["bytes"] for v in drums["files"].values()) < 300_000      # 512 atoms, int8
    assert drums["export_check"]["onnxruntime_vs_torch"]["max_abs_decoded"] <= 1e-5
