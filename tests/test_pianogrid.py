import numpy as np
import pytest

from sidl.realtime.codec import pianogrid as pg
from sidl.realtime.codec.spec import Codec
from sidl.realtime.codec.convert import decode_notes, encode_notes
from sidl.realtime.codec.spec import PIANO_GRID
from sidl.realtime.codec.midifile import load_midi, read_score
from sidl.realtime.codec.notes import NoteArray
from sidl.training.alignment import seconds_to_beats
from sidl.training.corpus import data_root
from sidl.training.pop909 import read_beats

ASAP_FILES = ["Bach/Fugue/bwv_848/midi_score.mid", "Bach/Fugue/bwv_848/Lee01M.mid",
              "Chopin/Etudes_op_10/3/midi_score.mid"]
POP909_SONGS = ["001", "100", "500", "909"]


def notes(*rows):
    """(start, end, pitch, velocity) rows -> NoteArray in steps."""
    return NoteArray.from_lists(*zip(*rows)) if rows else NoteArray.empty()


def same_notes(a: NoteArray, b: NoteArray) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("start", "end", "pitch", "velocity"))


def pop909_notes_in_steps(song: str) -> NoteArray:
    """A POP909 song's notes in steps with its first downbeat on step 0 (as the loader aligns it)."""
    folder = data_root() / "pop909" / "POP909" / song
    score = read_score(load_midi(folder / f"{song}.mid"))
    first_s, _ = read_beats(folder / "beat_midi.txt")
    shift = seconds_to_beats(score.tempos, first_s)
    return score.notes.scaled(PIANO_GRID.steps_per_beat, -shift * PIANO_GRID.steps_per_beat)


def test_layout_onset_velocity_hold():
    x = pg.encode_piano_grid(notes((1, 4, 60, 127), (2, 3, 21, 64)), 8)
    assert x.shape == (8, 264) and x.dtype == np.float32
    k = 60 - 21
    assert np.nonzero(x[:, k])[0].tolist() == [1]
    assert x[1, 88 + k] == pytest.approx(1.0)
    assert np.nonzero(x[:, 176 + k])[0].tolist() == [2, 3]          # held after the onset step
    assert x[2, 88] == pytest.approx(64 / 127) and x[:, 176].sum() == 0   # one-step note: no hold
    assert x.sum() == pytest.approx(2 + 1 + 64 / 127 + 2)


def test_rounding_to_nearest_step_and_minimum_length():
    d = pg.decode_piano_grid(pg.encode_piano_grid(notes((0.4, 0.45, 60, 80), (1.6, 3.4, 62, 80)), 8))
    assert d.start.tolist() == [0, 2] and d.end.tolist() == [1, 3]


def test_restrike_ends_previous_note_and_louder_onset_wins():
    x = pg.encode_piano_grid(notes((0, 8, 60, 50), (3, 5, 60, 90), (3, 6, 60, 40)), 10)
    d = pg.decode_piano_grid(x)
    assert d.start.tolist() == [0, 3] and d.end.tolist() == [3, 5]
    assert d.velocity.tolist() == [50, 90]


def test_pitches_fold_by_octaves_onto_the_keyboard():
    assert pg.fold_to_keyboard(np.array([0, 9, 20, 21, 108, 109, 120, 127])).tolist() == \
        [24, 21, 32, 21, 108, 97, 108, 103]
    d = pg.decode_piano_grid(pg.encode_piano_grid(notes((0, 1, 12, 70), (1, 2, 127, 70)), 4))
    assert d.pitch.tolist() == [24, 103]


def test_notes_outside_the_grid_drop_and_ends_clip():
    d = pg.decode_piano_grid(pg.encode_piano_grid(notes((-1, 2, 60, 70), (2, 99, 61, 70), (9, 10, 62, 70)), 6))
    assert d.pitch.tolist() == [61] and d.end.tolist() == [6]


def test_decode_ignores_orphan_holds_and_uses_threshold():
    x = np.zeros((6, 264), np.float32)
    x[0:3, 176 + 5] = 1.0                        # hold with no onset
    x[2, 10], x[2, 88 + 10], x[3:5, 176 + 10] = 0.7, 0.5, 0.6
    d = pg.decode_piano_grid(x)
    assert len(d) == 1 and (d.start[0], d.end[0], d.pitch[0], d.velocity[0]) == (2, 5, 31, 64)
    assert len(pg.decode_piano_grid(x, threshold=0.8)) == 0


def test_bad_shape_is_rejected():
    with pytest.raises(ValueError, match="264"):
        pg.decode_piano_grid(np.zeros((4, 27), np.float32))


def test_dispatch_through_codecs_with_other_steps_per_beat():
    codec = Codec("piano-grid", pg.N_KEYS, 3, 3, 4)
    beats = NoteArray.from_lists([0, 1 / 3, 2], [1, 2, 2 + 2 / 3], [60, 64, 67], [90, 80, 70])
    back = decode_notes(codec, encode_notes(codec, beats, codec.steps_per_bar))
    assert np.allclose(back.start, beats.start) and np.allclose(back.end, beats.end)
    assert back.pitch.tolist() == [60, 64, 67] and back.velocity.tolist() == [90, 80, 70]


@pytest.mark.parametrize("rel", ASAP_FILES)
def test_exact_round_trip_of_quantized_asap_files(rel):
    score = read_score(load_midi(data_root() / "asap" / rel))
    steps = score.notes.scaled(PIANO_GRID.steps_per_beat)
    n_steps = int(np.ceil(steps.end.max())) + 1
    x = pg.encode_piano_grid(steps, n_steps)
    quantized = pg.decode_piano_grid(x)
    assert len(quantized) > 0.9 * len(steps)
    x2 = pg.encode_piano_grid(quantized, n_steps)
    assert np.array_equal(x, x2)
    assert same_notes(pg.decode_piano_grid(x2), quantized)


@pytest.mark.parametrize("song", POP909_SONGS)
def test_pop909_is_near_grid_and_round_trips(song):
    steps = pop909_notes_in_steps(song)
    n_steps = int(np.ceil(steps.end.max())) + 1
    x = pg.encode_piano_grid(steps, n_steps)
    decoded = pg.decode_piano_grid(x)
    # Most onsets sit on the 16th grid once the first downbeat is step 0; every one of those comes back.
    on_grid = np.abs(steps.start - np.rint(steps.start)) < 0.02
    assert on_grid.mean() > 0.7
    on_grid &= steps.start > -0.5                  # pickups before the first downbeat fall off the grid
    want = {(int(np.rint(s)), int(p)) for s, p in zip(steps.start[on_grid], steps.pitch[on_grid])}
    got = {(int(s), int(p)) for s, p in zip(decoded.start, decoded.pitch)}
    assert want <= got
    # And once quantized, the song is a fixed point of the codec.
    assert np.array_equal(pg.encode_piano_grid(decoded, n_steps), x)
    assert same_notes(pg.decode_piano_grid(pg.encode_piano_grid(decoded, n_steps)), decoded)
