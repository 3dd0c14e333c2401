"""Generation in other meters (issue 15): priors learned per meter, the fallback by metrical strength,
and how prior.npz stores them. Real parts: the shipped drums-gmd through onnxruntime, GMD's bars."""
from __future__ import annotations

import hashlib
import io
import json
import shutil

import numpy as np
import pytest

from sidl.export import meters
from sidl.export.prior import export_meter_priors, pieces_by_meter, write_npz
from sidl.realtime.cli import meter_line
from sidl.realtime.compose import Composer
from sidl.realtime.metrical import step_strength
from sidl.realtime.preset import PresetError, load_preset
from sidl.realtime.preset.format import METER_KEY, read_meter_priors
from sidl.realtime.preset.model import open_preset
from sidl.realtime.preset.store import resolve
from sidl.training.groove import groove_corpus

BARS = 256


@pytest.fixture(scope="module")
def preset():
    return load_preset("drums-gmd")


@pytest.fixture(scope="module")
def odd_meters(preset):
    return pieces_by_meter(preset, groove_corpus())


def profile(preset, meter, prior="auto", bars=BARS):
    return meters.hit_profile(meters.generate(preset, meter, prior, bars))


def kick_snare(p):
    return np.concatenate([p["kick"], p["snare"]])


def test_shipped_preset_has_learned_priors_and_says_so(preset):
    assert sorted(preset.meter_priors) == ["3/4", "5/4", "6/8"]
    assert Composer(preset, (3, 4)).prior.source == "learned"
    assert Composer(preset, (4, 4)).prior.source == "preset"
    assert Composer(preset, (7, 4)).prior_note == "meter 7/4: no learned prior, fallback from 4/4 by metrical strength"
    line = meter_line(preset.manifest)
    assert "3/4 (572 bars), 5/4 (52 bars), 6/8 (107 bars)" in line and "5/8 not learned" in line
    assert "fallback from 4/4 by metrical strength" in line


def test_waltz_is_not_the_first_three_beats_of_4_4(preset, odd_meters):
    learned, cyclic = profile(preset, (3, 4)), profile(preset, (3, 4), "cyclic")
    four = profile(preset, (4, 4))
    first_three = {k: v[:12] for k, v in four.items()}
    # the cyclic reading is exactly the 4/4 bar cut short; the learned prior is not
    assert np.abs(kick_snare(cyclic) - kick_snare(first_three)).mean() < 0.03
    assert np.abs(kick_snare(learned) - kick_snare(first_three)).mean() > 0.08
    real = meters.hit_profile(meters.bars_of(odd_meters[0]["3/4"]))
    assert meters.compare(learned, real)["mean"]["l1"] < meters.compare(cyclic, real)["mean"]["l1"] - 0.02


def test_six_eight_accents_the_first_and_fourth_eighth(preset):
    for prior in ("auto", "fallback"):
        kick = profile(preset, (6, 8), prior)["kick"]
        eighths = kick[::2]                       # 6 eighths of 2 grid steps
        assert set(np.argsort(-eighths)[:2]) == {0, 3}, (prior, eighths)
    assert np.abs(kick_snare(profile(preset, (6, 8))) - kick_snare(profile(preset, (3, 4)))).mean() > 0.1


def test_metrical_strength_of_simple_and_compound_meters(preset):
    from sidl.realtime.codec.spec import DRUMS
    beats = {m: step_strength(DRUMS.with_meter(*m))[::4].tolist() for m in [(2, 4), (3, 4), (5, 4), (7, 4)]}
    assert beats == {(2, 4): [4, 2], (3, 4): [4, 2, 2], (5, 4): [4, 2, 2, 3, 2], (7, 4): [4, 2, 3, 2, 3, 2, 2]}
    assert step_strength(DRUMS.with_meter(6, 8))[::2].tolist() == [4, 1, 1, 3, 1, 1]
    for m in [(2, 4), (3, 4), (5, 4), (6, 4), (7, 4), (6, 8), (12, 8), (2, 2)]:
        c = Composer(preset, m)
        assert c.usage.shape == (preset.n_atoms, c.positions) and np.all(np.isfinite(c.usage))


def test_export_command_reproduces_the_shipped_prior(tmp_path):
    shipped = resolve("drums-gmd")
    copy = tmp_path / "drums-gmd"
    shutil.copytree(shipped, copy)
    export_meter_priors(copy, groove_corpus(), "groove")
    assert (copy / "prior.npz").read_bytes() == (shipped / "prior.npz").read_bytes()
    assert (copy / "preset.json").read_bytes() == (shipped / "preset.json").read_bytes()
    assert sum(f.stat().st_size for f in shipped.iterdir()) <= 300_000


def rewrite_prior(folder, arrays, write=write_npz):
    """Replace a preset copy's prior.npz and its sha256 in preset.json."""
    write(folder / "prior.npz", arrays)
    m = json.loads((folder / "preset.json").read_text())
    m["files"]["prior.npz"]["sha256"] = hashlib.sha256((folder / "prior.npz").read_bytes()).hexdigest()
    (folder / "preset.json").write_text(json.dumps(m, indent=2) + "\n")


def shipped_arrays():
    with np.load(resolve("drums-gmd") / "prior.npz") as z:
        return {k: z[k] for k in z.files}


def test_an_old_prior_without_meter_arrays_still_loads(tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(resolve("drums-gmd"), copy)
    main = {k: a for k, a in shipped_arrays().items() if not METER_KEY.match(k)}
    rewrite_prior(copy, main, lambda path, arrays: np.savez_compressed(path, **arrays))   # as exports wrote it
    old = open_preset(copy, "old")
    assert old.meter_priors == {}
    c = Composer(old, (3, 4))
    assert c.prior.source == "fallback" and c.prior_note.startswith("meter 3/4: no learned prior")


@pytest.mark.parametrize("change, problem", [
    (lambda a: a.update(usage_3_4=a["usage_3_4"][:, :2]), r"usage has shape \(960, 2\)"),
    (lambda a: a.update(usage_3_4=np.full_like(a["usage_3_4"], np.nan)), "finite numbers"),
    (lambda a: a.update(usage_3_3=a["usage_3_4"]), "bad meter 3/3"),
    (lambda a: a.update(next_atom_6_8=a["next_atom"]), "next_atom / next_p both or neither"),
    (lambda a: a.update(next_atom_6_8=a["next_atom"] + 5000, next_p_6_8=a["next_p"]), "atoms that do not exist"),
    (lambda a: a.update(usage_7_8=np.zeros((960, 3), np.float16)), "not a whole number|needs"),
    (lambda a: a.update(usage_5_4=np.array([{}], dtype=object)), "not readable .an object array"),
])
def test_a_broken_meter_prior_is_one_line(preset, change, problem):
    arrays = shipped_arrays()
    change(arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays)            # (np.load never unpickles: the object array is refused)
    with pytest.raises(PresetError, match=problem) as e:
        read_meter_priors(buf.getvalue(), preset.n_atoms, preset.codec, preset.stride, "drums-gmd")
    assert "\n" not in str(e.value) and str(e.value).startswith("preset 'drums-gmd': prior.npz")


def test_a_broken_meter_prior_stops_the_load(tmp_path):
    copy = tmp_path / "broken"
    shutil.copytree(resolve("drums-gmd"), copy)
    arrays = shipped_arrays()
    arrays["usage_6_8"] = arrays["usage_6_8"][:5]
    rewrite_prior(copy, arrays)
    with pytest.raises(PresetError, match="the 6/8 prior: usage has shape"):
        open_preset(copy, "broken")


def test_benchmark_scores_learned_against_cyclic(preset, odd_meters):
    r = meters.evaluate_meter(preset, "6/8", odd_meters[0]["6/8"], 32)
    assert r["files"] == 5 and r["bars"] == 107
    for ref in ("pooled", "loo"):
        assert set(r[ref]) == set(meters.METHODS)
        assert all(0 <= r[ref][m]["mean"]["overlap"] <= 1 for m in meters.METHODS)
    single = meters.evaluate_meter(preset, "5/4", odd_meters[0]["5/4"], 16)
    assert single["loo"]["learned"] is None and single["loo"]["cyclic"] is not None
