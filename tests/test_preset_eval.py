"""The shipped presets, measured as they play (their ONNX graphs through onnxruntime) on real test pieces."""
from sidl.realtime.preset import load_preset
from sidl.export.evaluate import evaluate_preset, held_out_pieces


def test_shipped_drum_preset_reconstructs_held_out_grooves():
    p = load_preset("drums-gmd")
    rows = evaluate_preset(p, held_out_pieces(p, limit=12), [1, 4])
    assert rows[1]["f1"] > 0.8 and rows[4]["f1"] > 0.98           # the targets: 0.85 / 0.99 on all 129
    assert rows[4]["velocity_mae"] < 28.6                          # under the constant-guess reference


def test_shipped_piano_preset_keeps_strong_notes_with_few_atoms():
    p = load_preset("piano-pop909")
    rows = evaluate_preset(p, held_out_pieces(p, limit=4), [2, 8])
    assert rows[8]["f1"] > rows[2]["f1"] > 0.2
    assert rows[2]["precision"] > 0.5                              # few atoms: mostly real notes
