import numpy as np
import pytest

from sidl.realtime.codec import events as pf
from sidl.realtime.codec.spec import PIANO_EVENTS
from sidl.realtime.codec.midifile import load_midi, read_score
from sidl.realtime.codec.notes import NoteArray
from sidl.training.corpus import data_root

REAL_FILES = ["pop909/POP909/001/001.mid", "pop909/POP909/500/500.mid",
              "asap/Bach/Fugue/bwv_848/Lee01M.mid", "asap/Chopin/Etudes_op_10/3/SunMeiting08.mid"]


def seconds(*rows):
    """(start s, end s, pitch, velocity) rows -> NoteArray in seconds."""
    return NoteArray.from_lists(*zip(*rows))


def one_voice_per_pitch(starts, ends, pitch):
    """Mask of notes no other note of the same pitch overlaps (those keep their exact length)."""
    alone = np.ones(len(starts), bool)
    for p in np.unique(pitch):
        i = np.nonzero(pitch == p)[0]
        i = i[np.argsort(starts[i], kind="stable")]
        clash = starts[i][1:] < ends[i][:-1] - 0.005
        alone[i[:-1][clash]] = False
        alone[i[1:][clash]] = False
    return alone


def test_event_table():
    assert pf.N_EVENTS == 388 == PIANO_EVENTS.n_voices
    assert (pf.NOTE_ON, pf.NOTE_OFF, pf.TIME_SHIFT, pf.VELOCITY) == (0, 128, 256, 356)
    ends = [first + count for _, first, count, _ in pf.EVENT_TABLE]
    assert [first for _, first, _, _ in pf.EVENT_TABLE][1:] == ends[:-1] and ends[-1] == 388
    assert pf.EVENT_NAMES[256] == "time_shift:0" and pf.EVENT_NAMES[387] == "velocity:31"


def test_velocity_bins():
    v = np.arange(1, 128)
    b = pf.velocity_bin(v)
    assert b.min() == 0 and b.max() == 31 and np.all(np.diff(b) >= 0)
    assert np.array_equal(pf.velocity_bin(pf.bin_velocity(b)), b)


def test_events_of_two_notes():
    ids = pf.events_from_notes(seconds((0.0, 0.5, 60, 100), (0.25, 1.6, 64, 100)))
    V = pf.VELOCITY + int(pf.velocity_bin(100))
    assert ids.tolist() == [V, 60, pf.TIME_SHIFT + 24, 64, pf.TIME_SHIFT + 24, pf.NOTE_OFF + 60,
                            pf.TIME_SHIFT + 99, pf.TIME_SHIFT + 9, pf.NOTE_OFF + 64]


def test_offs_before_ons_and_restrike_ends_note():
    ids = pf.events_from_notes(seconds((0.0, 0.1, 60, 64), (0.1, 0.2, 60, 64), (0.15, 0.3, 62, 64),
                                       (0.2, 0.4, 62, 90)))
    d = pf.notes_from_events(ids)
    assert d.start.tolist() == pytest.approx([0.0, 0.1, 0.15, 0.2])
    assert d.end.tolist() == pytest.approx([0.1, 0.2, 0.2, 0.4])
    assert d.pitch.tolist() == [60, 60, 62, 62]


def test_same_step_onsets_keep_louder_and_short_notes_last_10ms():
    d = pf.notes_from_events(pf.events_from_notes(seconds((1.0, 1.001, 60, 20), (1.002, 1.5, 60, 120))))
    assert len(d) == 1 and d.velocity[0] == pf.bin_velocity(pf.velocity_bin(120))
    d = pf.notes_from_events(pf.events_from_notes(seconds((1.0, 1.001, 61, 20))))
    assert d.end[0] - d.start[0] == pytest.approx(0.01)


def test_decode_tolerates_invalid_sequences():
    ids = [pf.NOTE_OFF + 70, pf.NOTE_ON + 60, pf.TIME_SHIFT + 9, pf.NOTE_OFF + 61,
           pf.NOTE_ON + 62, pf.TIME_SHIFT + 4]
    d = pf.notes_from_events(np.array(ids))
    assert d.pitch.tolist() == [60, 62]                       # unmatched offs ignored
    assert d.start.tolist() == pytest.approx([0.0, 0.1]) and d.end.tolist() == pytest.approx([0.15, 0.15])
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(500, 388)).astype(np.float32)   # model scores, not one-hot
    d = pf.decode_performance(noise)
    assert np.all(d.end > d.start) and np.all((d.velocity >= 1) & (d.velocity <= 127))


def test_one_hot_and_shape_checks():
    x = pf.one_hot(np.array([0, 387, 200]))
    assert x.shape == (3, 388) and x.dtype == np.float32 and np.array_equal(x.argmax(1), [0, 387, 200])
    with pytest.raises(ValueError):
        pf.one_hot(np.array([388]))
    with pytest.raises(ValueError, match="388"):
        pf.decode_performance(np.zeros((4, 264)))


@pytest.mark.parametrize("rel", REAL_FILES)
def test_round_trip_on_real_files(rel):
    score = read_score(load_midi(data_root() / rel))
    x = pf.encode_performance(score)
    assert x.shape[1] == 388 and np.all(x.sum(1) == 1)
    d = pf.decode_performance(x)
    # Reference: the score's notes with the codec's one-voice-per-pitch rule (same pitch, same 10 ms:
    # the louder one survives).
    key = np.rint(score.start_s / pf.TIME_STEP_S).astype(np.int64) * 128 + score.notes.pitch
    order = np.lexsort((-score.notes.velocity, key))
    first = np.ones(len(key), bool)
    first[1:] = key[order][1:] != key[order][:-1]
    keep = np.sort(order[first])
    start, end = score.start_s[keep], score.end_s[keep]
    pitch, vel = score.notes.pitch[keep], score.notes.velocity[keep]
    assert len(d) == len(keep)
    ref = np.lexsort((pitch, np.rint(start / pf.TIME_STEP_S)))
    start, end, pitch, vel = start[ref], end[ref], pitch[ref], vel[ref]
    assert np.array_equal(d.pitch, pitch)
    assert np.abs(d.start - start).max() <= 0.005 + 1e-9
    assert np.all(np.abs(pf.velocity_bin(d.velocity) - pf.velocity_bin(vel)) == 0)
    alone = one_voice_per_pitch(start, end, pitch)
    assert alone.mean() > 0.9
    # Ends within 10 ms; notes under 10 ms last exactly 10 ms, which can put their end up to 15 ms off.
    short = end - start < pf.TIME_STEP_S
    assert np.abs(d.end - end)[alone & ~short].max() <= 0.010 + 1e-9
    assert np.all(d.end[short] - d.start[short] == pytest.approx(pf.TIME_STEP_S))
    assert np.all(d.end[~short] <= end[~short] + 0.010 + 1e-9)  # overlapped notes only get shorter


def test_midi_writer(tmp_path):
    score = read_score(load_midi(data_root() / REAL_FILES[2]))
    x = pf.encode_performance(score)
    path = tmp_path / "out.mid"
    pf.midi_from_performance(x).save(path)
    back = read_score(load_midi(path))
    d = pf.decode_performance(x)
    assert len(back.notes) == len(d)
    assert np.abs(back.start_s - d.start).max() < 1e-6 and np.abs(back.end_s - d.end).max() < 1e-6
    assert np.array_equal(back.notes.pitch, d.pitch) and np.array_equal(back.notes.velocity, d.velocity)
