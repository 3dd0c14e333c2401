import csv
import io

import numpy as np
import pytest

import sidl.training.alignment as alignment
import sidl.training.corpus as corpus
from sidl.realtime.codec import pianogrid as pg
from sidl.realtime.codec import events as pf
from sidl.realtime.codec.spec import DRUMS, PIANO_EVENTS, PIANO_GRID
from sidl.realtime.codec.midifile import load_midi, midi_from_notes, read_score
from sidl.realtime.codec.notes import NoteArray
from sidl.training.alignment import DownbeatShifts, seconds_to_beats
from sidl.training.asap import LICENSE as ASAP_LICENSE
from sidl.training.asap import asap_corpus, asap_files, read_annotations
from sidl.training.corpus import data_root, load_pieces, sections
from sidl.training.pop909 import pop909_corpus, pop909_files, read_beats

SONGS = ["001", "002", "500"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SIDL_CACHE", str(tmp_path / "cache"))


def test_seconds_to_beats_follows_tempo_changes():
    tempos = ((0.0, 500_000), (4.0, 1_000_000))        # 4 beats at 0.5 s, then 1 s per beat
    assert seconds_to_beats(tempos, 1.0) == pytest.approx(2.0)
    assert seconds_to_beats(tempos, 3.0) == pytest.approx(5.0)


# --- POP909 -------------------------------------------------------------------------------------

def test_pop909_labels_meter_and_split():
    files, downbeat_s, meters = pop909_files(data_root() / "pop909", songs=SONGS)
    labels = dict(files)["POP909/001/001.mid"]
    assert labels["key"] == "Gb:maj" and labels["artist"] == "新乐尘符" and labels["name"] == "123我爱你"
    assert labels["beats_per_measure"] == 2 and labels["split"] in ("train", "validation", "test")
    assert meters["POP909/001/001.mid"] == (4, 4)
    assert downbeat_s["POP909/001/001.mid"] == pytest.approx(0.055333, abs=1e-6)
    assert [lab["song_id"] for _, lab in files] == SONGS


def test_pop909_split_is_90_5_5():
    files, _, _ = pop909_files(data_root() / "pop909")
    splits = [lab["split"] for _, lab in files]
    assert len(files) == 909
    assert 0.04 < splits.count("test") / 909 < 0.06 and 0.04 < splits.count("validation") / 909 < 0.06


def test_pop909_bar_alignment_puts_first_downbeat_on_step_0():
    for p in pop909_corpus(songs=SONGS, codec=PIANO_GRID):
        folder = data_root() / "pop909" / "POP909" / p.labels["song_id"]
        rows = np.loadtxt(folder / "beat_midi.txt")
        first = np.nonzero(rows[:, 2] == 1)[0][0]
        score = read_score(load_midi(folder / f"{p.labels['song_id']}.mid"))
        onsets = {(int(s), int(k)) for s, k in zip(*np.nonzero(p.x[:, :88]))}
        checked = 0
        for i in range(first, len(rows)):                # beat rows are the file's quarter notes
            at = np.abs(score.start_s - rows[i, 0]) < 1e-3
            for pitch in score.notes.pitch[at]:
                assert (4 * (i - first), int(pitch) - 21) in onsets
                checked += 1
        assert checked > 100
        assert p.codec.steps_per_bar == 16 and len(p.x) % 16 == 0


def test_pop909_shift_matches_annotation_rows():
    # beat_midi.txt rows sit on the MIDI quarter notes: row k after the first downbeat is beat k.
    folder = data_root() / "pop909" / "POP909" / "500"
    shifts = DownbeatShifts(data_root() / "pop909", {"POP909/500/500.mid": read_beats(folder / "beat_midi.txt")[0]})
    rows = np.loadtxt(folder / "beat_midi.txt")
    score = read_score(load_midi(folder / "500.mid"))
    beats = [seconds_to_beats(score.tempos, t) for t in rows[:, 0]]
    assert np.allclose(np.diff(beats), 1.0, atol=1e-6)
    assert shifts["POP909/500/500.mid"] == pytest.approx(beats[0], abs=1e-9)


def test_pop909_events_pieces_and_sections():
    pieces = pop909_corpus(songs=SONGS, codec=PIANO_EVENTS)
    assert len(pieces) == 3
    for p in pieces:
        assert p.x.ndim == 1 and p.x.dtype == np.int16 and p.x.min() >= 0 and p.x.max() < 388 and p.codec == PIANO_EVENTS
        assert p.labels["key"]
    s = sections(pieces, 512)
    assert s.shape[1:] == (512,) and len(s) == sum(-(-len(p.x) // 512) for p in pieces)


def test_pop909_grid_pieces_are_fixed_points_of_the_codec():
    for p in pop909_corpus(songs=SONGS[:2]):
        assert np.array_equal(pg.encode_piano_grid(pg.decode_piano_grid(p.x), len(p.x)), p.x)


# --- ASAP ---------------------------------------------------------------------------------------

def test_asap_annotations_and_labels():
    root = data_root() / "asap"
    ann = read_annotations(root / "Bach/Fugue/bwv_846/Shi05M_annotations.txt")
    assert ann.first_downbeat_s == pytest.approx(4.924479) and ann.time_signature == (4, 4)
    assert ann.key_signature == 0
    files, downbeat_s, meters = asap_files(root, limit=4)
    for rel, labels in files:
        assert {"composer", "title", "time_signature", "key_signature", "split"} <= set(labels)
        assert meters[rel] == tuple(int(v) for v in labels["time_signature"].split("/"))
    assert "non-commercial" in ASAP_LICENSE.lower()


def test_asap_split_by_piece():
    files, _, _ = asap_files(data_root() / "asap")
    assert len(files) == 1067
    split_of = {}
    for _, lab in files:
        assert split_of.setdefault((lab["composer"], lab["title"]), lab["split"]) == lab["split"]
    assert set(split_of.values()) == {"train", "validation", "test"}


def test_asap_grid_and_events_with_first_downbeat_on_step_0():
    grid = asap_corpus(codec=PIANO_GRID, limit=3)
    events = asap_corpus(codec=PIANO_EVENTS, limit=3)
    assert [p.name for p in grid] == [p.name for p in events] and len(grid) == 3
    for g, e in zip(grid, events):
        score = read_score(load_midi(data_root() / "asap" / g.name))
        at = np.abs(score.start_s - g.labels["first_downbeat_s"]) < 0.03   # notes played on the downbeat
        assert at.any()
        for pitch in score.notes.pitch[at]:
            assert g.x[0, int(pitch) - 21] == 1.0
        assert (g.codec.beats_per_bar, g.codec.beat_unit) == (4, 4) and len(g.x) % 16 == 0
        assert len(pf.notes_from_events(e.x)) > 0.95 * len(score.notes)


# --- corpus mechanics ----------------------------------------------------------------------------

def test_cache_hit_on_second_load(monkeypatch, tmp_path):
    first = pop909_corpus(songs=SONGS[:2], codec=PIANO_GRID)
    assert list((tmp_path / "cache" / "corpora").glob("pop909-piano-grid-*.npz"))

    def no_parsing(*args, **kwargs):
        raise AssertionError("parsed a MIDI file on a cache hit")
    monkeypatch.setattr(corpus, "encode_file", no_parsing)
    monkeypatch.setattr(alignment, "read_score", no_parsing)
    second = pop909_corpus(songs=SONGS[:2], codec=PIANO_GRID)
    assert [p.name for p in second] == [p.name for p in first]
    for a, b in zip(first, second):
        assert np.array_equal(a.x, b.x) and a.codec == b.codec and a.labels == b.labels


def _good_and_bad_files(root):
    good = NoteArray.from_lists([0, 1, 2], [1, 2, 4], [60, 64, 67], [80, 90, 100])
    midi_from_notes(good, bpm=120).save(root / "good.mid")
    (root / "bad.mid").write_bytes(b"MThd this is not a midi file at all" * 3)
    return [("bad.mid", {}), ("good.mid", {})]


@pytest.mark.parametrize("codec", [PIANO_GRID, PIANO_EVENTS])
def test_corrupt_file_is_skipped_with_one_line(tmp_path, codec):
    files = _good_and_bad_files(tmp_path)
    log = io.StringIO()
    shifts = DownbeatShifts(tmp_path, {"bad.mid": 0.5, "good.mid": 0.5}) if codec.is_grid else None
    pieces = load_pieces("test", tmp_path, codec, files, shifts=shifts, log=log, cache=False)
    assert [p.name for p in pieces] == ["good.mid"]
    lines = log.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("skipped: ") and "bad.mid" in lines[0]
    if codec.is_grid:                                          # shifted by 0.5 s = 1 beat = 4 steps
        assert np.nonzero(pieces[0].x[:, :88])[0].tolist() == [0, 4]


def test_short_groove_fills_are_kept_as_padded_sections():
    root = data_root() / "groove"
    with open(root / "info.csv", newline="") as f:
        fills = sorted((r for r in csv.DictReader(f) if r["beat_type"] == "fill"),
                       key=lambda r: float(r["duration"]))[:4]
    files = [(r["midi_filename"], {"beat_type": r["beat_type"]}) for r in fills]
    pieces = load_pieces("groove-test", root, DRUMS, files, cache=False)
    assert len(pieces) == 4 and all(len(p.x) < 64 for p in pieces)
    s = sections(pieces, 64)
    assert s.shape == (4, 64, 27)
    for p, w in zip(pieces, s):
        assert np.array_equal(w[:len(p.x)], p.x) and not w[len(p.x):].any() and p.x[:, :9].any()
