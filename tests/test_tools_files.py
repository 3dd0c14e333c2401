"""File tools end to end on real files: reconstruct, what passes through, folders, errors, exit codes."""
from __future__ import annotations

import json
import shutil

import mido
import numpy as np
import pytest

from tools_helpers import GMD, GMD2, POP, drum_grid, hit_f1, notes_of, other_messages, records, sidl


@pytest.fixture
def arrangement(tmp_path):
    """A real GMD groove with a bass line (channel 2), hand claps (39, no drum class) on channel 10,
    a tempo change and a meter change: everything a drum preset must leave as it was."""
    src = mido.MidiFile(str(GMD))
    tpb = src.ticks_per_beat
    bass = mido.MidiTrack([mido.MetaMessage("track_name", name="bass", time=0),
                           mido.Message("program_change", channel=1, program=33, time=0)])
    for i in range(16):
        bass.append(mido.Message("note_on", channel=1, note=40 + (i % 5), velocity=90, time=0 if i == 0 else tpb // 2))
        bass.append(mido.Message("note_off", channel=1, note=40 + (i % 5), velocity=0, time=tpb // 2))
    claps = mido.MidiTrack()
    for i in range(8):
        claps.append(mido.Message("note_on", channel=9, note=39, velocity=70, time=0 if i == 0 else tpb * 2 - 10))
        claps.append(mido.Message("note_off", channel=9, note=39, velocity=0, time=10))
    maps = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=400_000, time=8 * tpb),
                           mido.MetaMessage("time_signature", numerator=3, denominator=4, time=8 * tpb)])
    out = mido.MidiFile(type=1, ticks_per_beat=tpb)
    out.tracks.extend([*src.tracks, bass, claps, maps])
    path = tmp_path / "arrangement.mid"
    out.save(str(path))
    return path


def test_reconstruct_real_drums_scores_match_an_independent_count(tmp_path):
    out = tmp_path / "r.mid"
    code, lines, err = sidl("reconstruct", GMD, "-o", out, "--json")
    assert code == 0, err
    (r,) = records(lines)
    assert r["file"] == str(GMD) and r["preset"] == "drums-gmd" and r["out"] == str(out)
    assert {"notes_in", "notes_out", "f1", "precision", "recall", "velocity_mae", "offset_mae"} <= set(r)
    ref_notes, out_notes = notes_of(GMD, {9}), notes_of(out, {9})
    assert r["notes_in"] == len(ref_notes) and r["notes_out"] == len(out_notes)
    n = int(max(n[0] for n in ref_notes + out_notes) * 4) + 8
    f1, p, rec = hit_f1(drum_grid(ref_notes, n), drum_grid(out_notes, n))
    assert r["f1"] == pytest.approx(f1, abs=1e-4) and r["precision"] == pytest.approx(p, abs=1e-4)
    assert r["recall"] == pytest.approx(rec, abs=1e-4)
    assert f1 > 0.95                       # the preset's k=4 figure on its test split is 0.99


def test_reconstruct_piano_picks_the_piano_preset(tmp_path):
    code, lines, err = sidl("reconstruct", POP, "-o", tmp_path / "p.mid", "--json")
    assert code == 0, err
    (r,) = records(lines)
    assert r["preset"] == "piano-pop909" and r["notes_out"] == len(notes_of(tmp_path / "p.mid"))
    assert 0.2 < r["f1"] <= 1.0


def test_a_drum_preset_leaves_bass_claps_tempo_and_meter_as_they_were(arrangement, tmp_path):
    out = tmp_path / "o.mid"
    code, lines, err = sidl("reconstruct", arrangement, "-o", out, "--json")
    assert code == 0, err
    (r,) = records(lines)
    assert r["unmapped"] == 8 and r["unmapped_drums"] == 1
    kept = [m for m in other_messages(arrangement) ]
    back = other_messages(out)
    for m in kept:
        assert m in back, m
    claps = [n for n in notes_of(out, {9}) if n[2] == 39]
    assert len(claps) == 8 and [n[:3] for n in claps] == [n[:3] for n in notes_of(arrangement, {9}) if n[2] == 39]
    table = sidl("reconstruct", arrangement, "-o", tmp_path / "t.mid")[1]
    assert "ignored 8 notes of 1 unmapped drums" in table[0]


def test_channel_option_reads_only_that_channel(arrangement, tmp_path):
    code, lines, err = sidl("reconstruct", arrangement, "-p", "drums-gmd", "--channel", "2", "-o",
                            tmp_path / "b.mid", "--json")
    assert code == 0, err
    (r,) = records(lines)
    # the bass line's pitches 40..44 read as drums: 41 has no drum class (3 notes), the rest do
    assert r["notes_in"] == 13 and r["unmapped"] == 3


def test_folder_one_line_per_file_bad_file_reported_and_skipped(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(GMD, folder / "a.mid")
    shutil.copy(GMD2, folder / "b.mid")
    (folder / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk\x00\x00\x10")
    code, lines, err = sidl("reconstruct", folder, "-o", tmp_path / "out", "--json")
    assert code == 1
    recs = records(lines)
    assert len(recs) == 3
    bad = [r for r in recs if "error" in r]
    assert len(bad) == 1 and bad[0]["file"].endswith("broken.mid") and "\n" not in bad[0]["error"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.mid", "b.mid"]
    code, lines, err = sidl("reconstruct", folder, "-o", tmp_path / "out2")
    assert code == 1 and len(lines) == 2 and err.count("FAILED") == 1 and "Traceback" not in err


def test_never_over_the_input_without_force(tmp_path):
    src = tmp_path / "g.mid"
    shutil.copy(GMD, src)
    before = src.read_bytes()
    code, _, err = sidl("reconstruct", src, "-o", src)
    assert code == 1 and "would overwrite the input" in err and src.read_bytes() == before
    code, _, err = sidl("reconstruct", src, "-o", src, "--force")
    assert code == 0 and src.read_bytes() != before
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]      # atomic: no temporary left


@pytest.mark.parametrize("args, words", [
    (("simplify", GMD, "--keep", "0"), "--keep must be >= 1"),
    (("simplify", GMD, "--keep", "2", "--per", "bars"), "--per must be bar or beat"),
    (("reconstruct", "/nonexistent.mid"), "no such file"),
    (("generate", "bass", "-o", "x.mid"), "generate drums or piano"),
    (("generate", "drums", "--meter", "4/5", "-o", "x.mid"), "--meter"),
    (("reconstruct", GMD, "-p", "no-such-preset"), "not found"),
    (("reconstruct", GMD, "--channel", "17"), "--channel must be 1..16"),
])
def test_bad_usage_is_one_line_and_exit_2(args, words, tmp_path):
    code, _, err = sidl(*args)
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
