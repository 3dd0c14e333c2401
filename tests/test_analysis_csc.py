"""The SPORCO convolutional sparse coding baseline (python -m sidl.training.analysis.csc), tiny."""
import json

import numpy as np

from sidl.realtime.preset import load_preset
from sidl.training.analysis import csc
from sidl.training.corpora import load_corpus

TINY = csc.CscSetting(atoms=8, train_bars=40, test_pieces=2, learn_iterations=10, code_iterations=50)


def test_learned_dictionary_beats_random_and_json_has_the_fields(tmp_path):
    preset = load_preset(csc.PRESET)
    train, _ = load_corpus("groove", preset.codec, "train")
    test, _ = load_corpus("groove", preset.codec, "test")
    test = [p for p in test if p.codec.steps_per_bar == 16][:2]

    bars = csc.hit_bars(train, 16)[: TINY.train_bars]
    learned = csc.learn_dictionary(bars, TINY.atoms, preset.stride, TINY)
    assert learned.shape == (preset.stride, 9, TINY.atoms)
    random = csc.random_dictionary(TINY.atoms, preset.stride, 9)
    variants, seconds = csc.csc_reports(learned, test, csc.KS, TINY, preset.codec.steps_per_beat)
    theirs = csc.csc_reports(random, test, [4], TINY, preset.codec.steps_per_beat)[0]
    assert seconds["l1"] > 0 and seconds["refit"] > seconds["l1"]
    for k in csc.KS:
        assert all(0.0 <= variants[v][k]["f1"] <= 1.0 for v in ("l1", "refit"))
    for v in ("l1", "refit"):
        assert variants[v][4]["f1"] > theirs[v][4]["f1"] + 0.1     # learning found the grooves' beats
        assert variants[v][4]["f1"] >= variants[v][1]["f1"]       # more nonzeros per beat: no worse

    out = tmp_path / "csc.json"
    assert csc.main(["--atoms", "8", "--train-bars", "40", "--test-pieces", "2", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["setting"]["atoms"] == 8 and r["setting"]["train_bars_used"] == 40
    assert r["setting"]["atom_length"] == preset.stride and r["setting"]["test_pieces"] == 2
    for method in ("sidl", "csc", "csc_refit"):
        assert set(r[method]) == {"1", "2", "3", "4"}
        for row in r[method].values():
            assert set(row) == {"f1", "precision", "recall"}
            assert all(0.0 <= v <= 1.0 for v in row.values())
    assert r["encode_ms_per_bar"]["csc"] > 0 and r["encode_ms_per_bar"]["csc_refit"] > 0
    assert set(r["encode_ms_per_bar"]["sidl"]) == {"1", "2", "3", "4"}
    assert set(r["speedup"]) == {"1", "2", "3", "4"}
    assert set(r["targets"]) == {"sidl_f1_at_least_csc", "encode_100x_faster"}
    assert np.isfinite(r["learn_seconds"])


def test_decode_places_atoms_where_sporco_does():
    from sporco.admm import cbpdn
    preset = load_preset(csc.PRESET)
    train, _ = load_corpus("groove", preset.codec, "train")
    hits = csc.hit_bars(train, 16)[:3].reshape(-1, 9)
    D = csc.random_dictionary(6, preset.stride, 9, seed=1)
    silent = np.concatenate([hits, np.zeros((preset.stride, 9))])     # as encode pads
    opt = cbpdn.ConvBPDN.Options({"Verbose": False, "MaxMainIter": 30, "NonNegCoef": True})
    solver = cbpdn.ConvBPDN(D, silent, 0.05, opt, dimK=0, dimN=1)
    X = solver.solve().reshape(len(silent), 6)
    theirs = solver.reconstruct().reshape(len(silent), 9)
    X[len(hits):] = 0           # the padding beat's coefficients, dropped by encode
    np.testing.assert_allclose(csc.decode(D, X[: len(hits)]), solver.reconstruct(X.reshape(solver.X.shape))
                               .reshape(len(silent), 9)[: len(hits)], atol=1e-9)
    assert np.abs(theirs[: len(hits)]).max() > 0.1       # something was placed
