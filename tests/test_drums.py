"""Drum codec: reversible on real GMD files, loudest hit wins, meters honoured, GM notes on decode."""
import numpy as np

from sidl.realtime.codec.drums import CLASS_NOTES, DRUM_CHANNEL, N_CLASSES, decode_drums, encode_drums
from sidl.realtime.codec.spec import DRUMS
from sidl.realtime.codec.midifile import load_midi, midi_from_notes, read_score
from sidl.realtime.codec.notes import NoteArray
from sidl.training.corpus import data_root, encode_file

GMD = data_root() / "groove"
FILES = ["drummer1/eval_session/1_funk-groove1_138_beat_4-4.mid", "drummer1/session1/105_funk_95_fill_4-4.mid",
         "drummer1/eval_session/10_soul-groove10_102_beat_4-4.mid"]


def test_round_trip_on_real_gmd_files():
    for rel in FILES:
        x, codec = encode_file(GMD / rel, DRUMS)
        assert x.shape[1] == 27 and len(x) % codec.steps_per_bar == 0
        assert x[:, :N_CLASSES].sum() > 10
        again = encode_drums(decode_drums(x), len(x))
        np.testing.assert_allclose(again, x, atol=1e-5)


def test_round_trip_through_a_midi_file_at_another_tempo(tmp_path):
    x, codec = encode_file(GMD / FILES[0], DRUMS)
    notes = decode_drums(x).scaled(1 / codec.steps_per_beat)
    path = tmp_path / "out.mid"
    midi_from_notes(notes, bpm=97.0, channel=DRUM_CHANNEL).save(path)
    y, _ = encode_file(path, DRUMS)
    n = min(len(x), len(y))                     # the original may end with empty bars
    assert not x[n:, :N_CLASSES].any() and not y[n:, :N_CLASSES].any()
    np.testing.assert_allclose(y[:n], x[:n], atol=2e-3)   # offsets within a tick of 480 per beat
    score = read_score(load_midi(path), fold_sustain=False)
    assert set(np.unique(score.channel)) == {DRUM_CHANNEL}
    assert set(np.unique(score.notes.pitch)) <= set(CLASS_NOTES.tolist())


def test_two_hits_of_one_class_on_a_step_keep_the_loudest():
    notes = NoteArray.from_lists([0.1, -0.2, 4.0], [0.5, 0.3, 4.5], [38, 40, 36], [50, 110, 90])
    x = encode_drums(notes, 8)
    assert x[0, 1] == 1 and round(x[0, N_CLASSES + 1] * 127) == 110
    assert np.isclose(x[0, 2 * N_CLASSES + 1], -0.2, atol=1e-6)
    assert x[4, 0] == 1 and x[:, :N_CLASSES].sum() == 2


def test_meter_sets_steps_per_bar_on_a_real_six_eight_file():
    import csv
    rows = list(csv.DictReader(open(GMD / "info.csv")))
    rel = next(r["midi_filename"] for r in rows if r["time_signature"] == "6-8")
    x, codec = encode_file(GMD / rel, DRUMS)
    assert (codec.beats_per_bar, codec.beat_unit) == (6, 8)
    assert codec.steps_per_bar == 12 and len(x) % 12 == 0


def test_quantize_drops_microtiming():
    notes = NoteArray.from_lists([2.3], [2.8], [42], [64])
    x = encode_drums(notes, 4)
    assert np.isclose(decode_drums(x).start[0], 2.3, atol=1e-6)
    assert decode_drums(x, quantize=True).start[0] == 2.0


def test_a_late_hit_ends_before_the_next_hit_of_its_drum_can_start():
    """Steps 3 (0.45 late) and 4 (0.45 early) of one class: the first note ends by step 3.5, so the
    second never starts under it (on, on, off, off cuts it short on receivers that honour note-off)."""
    x = np.zeros((8, 3 * N_CLASSES), np.float32)
    x[[3, 4], 0] = 1.0
    x[[3, 4], N_CLASSES] = 0.8
    x[3, 2 * N_CLASSES], x[4, 2 * N_CLASSES] = 0.45, -0.45
    first, second = decode_drums(x).select(np.array([0])), decode_drums(x).select(np.array([1]))
    assert first.end[0] <= second.start[0] and first.end[0] - first.start[0] >= 0.05 - 1e-6
    assert decode_drums(x, quantize=True).end.tolist() == [3.5, 4.5]


def test_a_late_hit_ends_exactly_by_the_half_step():
    """In float64: a late hit's note-off lands at or before the next step's earliest hit (float32
    arithmetic put it 1.5e-8 steps after, sending the next note-on first)."""
    x = np.zeros((16, 3 * N_CLASSES), np.float32)
    x[[7, 8], 0], x[[7, 8], N_CLASSES] = 1.0, 0.8
    for off in np.linspace(0.01, 0.45, 45, dtype=np.float32):
        x[7, 2 * N_CLASSES], x[8, 2 * N_CLASSES] = off, -0.7           # clamped to -0.5: at 7.5
        notes = decode_drums(x)
        assert notes.end[0] <= notes.start[1] == 7.5
