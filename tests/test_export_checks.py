"""Export refuses a run whose ONNX graphs do not reproduce torch, and says what the meter prior skipped."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import presetkit
from sidl.export.preset import export_preset, parity_failure
from sidl.realtime.codec.spec import DRUMS
from sidl.training.checkpoint import save_model
from sidl.training.model import ModelConfig, TCNkWTA

torch.set_num_threads(1)


def untrained_run(path, n_atoms: int = 64):
    """A run whose atoms are still raw corpus beats, some repeated, with no noise: what a run that
    never trained holds. The pursuit meets exact ties there, and the two graphs break them apart."""
    rng = np.random.default_rng(0)
    x = np.concatenate([a[: len(a) // 4 * 4] for a in (p.x for p in presetkit.pieces("drums", "train")[:60])])
    beats = x.reshape(-1, 4, x.shape[1]).transpose(0, 2, 1)
    beats = beats[beats[:, :DRUMS.n_voices].sum((1, 2)) > 0]
    atoms = torch.from_numpy(beats[rng.integers(len(beats), size=n_atoms)].astype(np.float32))
    torch.manual_seed(0)
    model = TCNkWTA(ModelConfig(channels=DRUMS.channels, n_atoms=n_atoms, k_max=4, tcn_channels=(16,)))
    with torch.no_grad():
        model.decoder.weight.copy_(atoms / atoms.flatten(1).norm(dim=1)[:, None, None])
        model.tie_code_to_atoms()
    save_model(path, model, DRUMS, presetkit.CORPUS["drums"], {"seed": 0})
    return path


def test_parity_failure_names_the_figure():
    good = {"max_abs_val": 1.3e-6, "max_abs_decoded": 7e-7, "idx_equal": 1.0}
    assert parity_failure(good) is None
    assert parity_failure({**good, "idx_equal": 0.99}) is None     # identical atoms swapped: same bar
    msg = parity_failure({"max_abs_val": 0.55, "max_abs_decoded": 0.2, "idx_equal": 0.97})
    assert "max |diff| 0.55" in msg and "97.00%" in msg


@pytest.mark.slow
def test_export_refuses_an_untrained_run_and_writes_nothing(tmp_path):
    run = untrained_run(tmp_path / "run")
    said = []
    with pytest.raises(ValueError, match=r"export refused: onnxruntime and torch disagree: max \|diff\| .*--force"):
        export_preset(run, "untrained", tmp_path / "presets", pieces=presetkit.pieces("drums", "validation"),
                      max_positions=200, log=said.append)
    assert list((tmp_path / "presets").iterdir()) == []            # no preset, no temporary folder
    assert any(s.startswith("onnxruntime vs torch") for s in said)
    # the prior's log says which pieces it left out and why (here: the position budget filled first)
    assert any(s.startswith("prior skipped ") and "not needed: 200 code positions were reached first" in s
               for s in said), said


def test_the_prior_says_why_it_skipped_pieces():
    from sidl.export.prior import describe_skipped, sample_windows_counted
    pieces = presetkit.pieces("drums", "validation")           # GMD's validation split mixes meters
    windows, skipped = sample_windows_counted(pieces, DRUMS, 10**7, 4)
    meters = {f"{p.codec.beats_per_bar}/{p.codec.beat_unit}" for p in pieces} - {"4/4"}
    assert meters, "the validation split should hold pieces in other meters"
    assert sum(skipped.values()) + len(windows) == len(pieces)
    for m in meters:
        assert any(why.startswith(f"in {m}, not the preset's 4/4") for why in skipped)
    assert "not the preset's 4/4" in describe_skipped(skipped)
