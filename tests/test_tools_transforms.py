"""simplify, clean, humanize, drumify, generate, vary, continue, interpolate: real files in, MIDI out
parsed back with mido, results checked by counting independently."""
from __future__ import annotations

import mido
import numpy as np
import pytest

from tools_helpers import GMD, GMD2, POP, drum_grid, hit_f1, notes_of, records, sidl


def _n_steps(*note_lists):
    return int(max(n[0] for notes in note_lists for n in notes) * 4) + 8


def test_simplify_keeps_fewer_notes_and_the_curve_rises(tmp_path):
    out = tmp_path / "s.mid"
    code, lines, err = sidl("simplify", GMD, "--keep", "2", "--curve", "-o", out, "--json")
    assert code == 0, err
    (r,) = records(lines)
    ref, got = notes_of(GMD, {9}), notes_of(out, {9})
    n = _n_steps(ref, got)
    f1, p, rec = hit_f1(drum_grid(ref, n), drum_grid(got, n))
    assert r["f1"] == pytest.approx(f1, abs=1e-4) and r["notes_out"] == len(got) < len(ref)
    curve = r["curve"]
    assert [c["keep"] for c in curve] == list(range(1, len(curve) + 1))
    assert curve[-1]["f1"] >= curve[0]["f1"] + 0.2 and curve[1]["f1"] == pytest.approx(r["f1"], abs=0.02)
    png = tmp_path / "s.curve.png"
    assert r["curve_png"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simplify_per_beat_keeps_at_most_n_atoms_per_beat():
    from sidl.realtime.preset import load_preset
    from sidl.realtime.tools import code as tcode, transforms
    from sidl.realtime.tools.clip import read_clip
    p = load_preset("drums-gmd")
    clip = read_clip(GMD, p.codec)
    x = tcode.clip_grid(p, clip)
    group = np.arange(len(x) // p.stride)
    _, idx, val = transforms.simplify(p, x, 1, group)
    assert (np.count_nonzero(val, axis=1) <= 1).all() and np.count_nonzero(val) > 0


def test_clean_drops_stray_notes_from_a_real_groove(tmp_path):
    """Stray crashes (a drum this groove never plays, on off 16ths, where the atoms almost never put
    one) added to a real file are dropped; the groove's own notes stay, at their velocities."""
    from sidl.realtime.codec.drums import PITCH_TO_CLASS
    rng = np.random.default_rng(3)
    src = mido.MidiFile(str(GMD2))
    ref = notes_of(GMD2, {9})
    used = {int(PITCH_TO_CLASS[p]) for _, _, p, _ in ref}
    stray_pitch = 49
    assert PITCH_TO_CLASS[stray_pitch] not in used
    tpb = src.ticks_per_beat
    events = []
    last_step = int(max(n[0] for n in ref) * 4)
    steps = rng.choice(np.arange(1, last_step, 2), 4, replace=False)        # odd 16ths only
    for s in sorted(steps.tolist()):
        t = s * tpb // 4
        events += [(t, mido.Message("note_on", channel=9, note=stray_pitch, velocity=int(rng.integers(40, 128)))),
                   (t + 30, mido.Message("note_off", channel=9, note=stray_pitch, velocity=0))]
    extra, now = mido.MidiTrack(), 0
    for t, m in events:
        extra.append(m.copy(time=t - now))
        now = t
    src.type = 1                       # GMD files are type 0: one more track needs type 1
    src.tracks.append(extra)
    dirty = tmp_path / "dirty.mid"
    src.save(str(dirty))
    code, lines, err = sidl("clean", dirty, "-o", tmp_path / "c.mid", "--json")
    assert code == 0, err
    (r,) = records(lines)
    got = notes_of(tmp_path / "c.mid", {9})
    assert not [n for n in got if n[2] == stray_pitch]                      # every stray dropped
    n = _n_steps(ref, got)
    x, y = drum_grid(ref, n), drum_grid(got, n)
    own_kept = ((x[:, :9] > 0.5) & (y[:, :9] > 0.5)).sum() / (x[:, :9] > 0.5).sum()
    assert own_kept > 0.98 and hit_f1(x, y)[1] > 0.98      # the groove left (a hit or two regridded)
    assert r["f1"] == pytest.approx(hit_f1(drum_grid(notes_of(dirty, {9}), n), y)[0], abs=1e-4)
    played = {v for *_, v in notes_of(dirty, {9})}
    assert {v for *_, v in got} <= played                                   # velocities as played


def test_humanize_brings_flat_quantized_drums_nearer_the_performance(tmp_path):
    src = mido.MidiFile(str(GMD))
    tpb = src.ticks_per_beat
    flat = mido.MidiFile(ticks_per_beat=tpb)
    track = mido.MidiTrack()
    ev = []
    for beat, ch, pitch, vel in notes_of(GMD, {9}):
        t = int(round(beat * 4)) * tpb // 4
        ev += [(t, 1, mido.Message("note_on", channel=9, note=pitch, velocity=100)),
               (t + tpb // 8, 0, mido.Message("note_off", channel=9, note=pitch, velocity=0))]
    now = 0
    for t, _, m in sorted(ev, key=lambda e: (e[0], e[1])):
        track.append(m.copy(time=t - now))
        now = t
    flat.tracks.append(track)
    flat_path = tmp_path / "flat.mid"
    flat.save(str(flat_path))
    code, lines, err = sidl("humanize", flat_path, "-o", tmp_path / "h.mid", "--json")
    assert code == 0, err
    ref = notes_of(GMD, {9})
    n = _n_steps(ref)
    x, xf, xh = drum_grid(ref, n), drum_grid(notes_of(flat_path, {9}), n), drum_grid(notes_of(tmp_path / "h.mid", {9}), n)
    hits = x[:, :9] > 0.5
    vel_err = lambda y: float(np.abs(y[:, 9:18] - x[:, 9:18])[hits].mean() * 127)
    assert hit_f1(x, xh)[0] == pytest.approx(hit_f1(x, xf)[0])          # every note kept
    assert vel_err(xh) < vel_err(xf) - 5
    assert len({v for *_, v in notes_of(tmp_path / "h.mid", {9})}) > 10     # not flat any more


def test_drumify_plays_drums_on_the_taps_of_a_bass_line(tmp_path):
    """The bass line of a POP909 song as the rhythm: drum hits land on its onsets."""
    code, lines, err = sidl("drumify", POP, "--channel", "2", "-o", tmp_path / "d.mid", "--json")
    assert code == 0, err
    (r,) = records(lines)
    got = notes_of(tmp_path / "d.mid", {9})
    taps = {int(np.floor(b * 4 + 0.5)) for b, ch, _, _ in notes_of(POP) if ch == 1}
    hit_steps = {int(np.floor(b * 4 + 0.5)) for b, *_ in got}
    assert r["preset"] == "drums-gmd" and r["taps"] == len(taps) and len(got) == r["notes_out"] > 0
    assert len(hit_steps & taps) / len(taps) > 0.5 and r["taps_covered"] == len(hit_steps & taps)
    others = [n for n in notes_of(tmp_path / "d.mid") if n[1] not in (1, 9)]
    assert others == [n for n in notes_of(POP) if n[1] not in (1, 9)]      # melody and piano untouched


def test_generate_writes_bars_in_the_meter_asked(tmp_path):
    out = tmp_path / "g.mid"
    code, lines, err = sidl("generate", "drums", "--bars", "6", "--meter", "3/4", "--bpm", "90",
                            "--fill-every", "2", "--seed", "4", "-o", out, "--json")
    assert code == 0, err
    mid = mido.MidiFile(str(out))
    metas = [m for t in mid.tracks for m in t if m.is_meta]
    assert any(m.type == "time_signature" and (m.numerator, m.denominator) == (3, 4) for m in metas)
    assert any(m.type == "set_tempo" and round(mido.tempo2bpm(m.tempo)) == 90 for m in metas)
    notes = notes_of(out, {9})
    assert notes and max(b for b, *_ in notes) < 6 * 3 and records(lines)[0]["notes_out"] == len(notes)
    again = tmp_path / "g2.mid"
    sidl("generate", "drums", "--bars", "6", "--meter", "3/4", "--bpm", "90", "--fill-every", "2", "--seed", "4", "-o", again)
    assert again.read_bytes() == out.read_bytes()                          # a seed replays


def test_vary_continue_interpolate_keep_length_and_meter(tmp_path):
    ref = notes_of(GMD, {9})
    mid = mido.MidiFile(str(GMD))
    end = max(sum(m.time for m in t) for t in mid.tracks) / mid.ticks_per_beat     # the clip's length
    bars = int(np.ceil(end / 4 - 1e-9))
    code, lines, err = sidl("vary", GMD, "-n", "3", "--variation", "0.5", "-o", tmp_path / "v", "--json")
    assert code == 0, err
    outs = records(lines)[0]["out"]
    assert len(outs) == 3 and len({open(o, "rb").read() for o in outs}) == 3
    for o in outs:
        got = notes_of(o, {9})
        assert got and max(b for b, *_ in got) < bars * 4 and got != ref
    code, lines, err = sidl("continue", GMD, "--bars", "2", "-o", tmp_path / "c.mid", "--json")
    assert code == 0, err
    got = notes_of(tmp_path / "c.mid", {9})
    assert [n for n in got if n[0] < bars * 4 - 0.5] == [n for n in ref if n[0] < bars * 4 - 0.5]
    added = [n for n in got if n[0] >= bars * 4 - 0.1]
    assert added and max(b for b, *_ in added) < (bars + 2) * 4 and records(lines)[0]["notes_added"] == len(added)
    # interpolate the groove with a shifted copy of itself (one length): the middle lies between them
    code, lines, err = sidl("interpolate", GMD, GMD, "--steps", "1", "-o", tmp_path / "i", "--json")
    assert code == 0, err
    (r,) = records(lines)
    assert r["f1_to_a_b"][0][0] > 0.95        # A with itself: the middle is A
    code, lines, err = sidl("interpolate", GMD, GMD2, "--steps", "3", "-o", tmp_path / "k", "--json")
    assert code == 0, err
    f1s = records(lines)[0]["f1_to_a_b"]             # stepping from A to B: nearer A first, nearer B last
    assert f1s[0][0] > f1s[-1][0] and f1s[-1][1] > f1s[0][1]
    short = mido.MidiFile(type=0, ticks_per_beat=mid.ticks_per_beat)
    track, tick = mido.MidiTrack(), 0
    for m in mid.tracks[0]:
        tick += m.time
        if tick < 8 * mid.ticks_per_beat or m.is_meta:
            track.append(m)
    short.tracks.append(track)
    short.save(str(tmp_path / "short.mid"))
    code, _, err = sidl("interpolate", GMD, tmp_path / "short.mid", "-o", tmp_path / "j")
    assert code == 1 and "one length" in err


def test_interpolation_moves_entries_from_a_to_b():
    from sidl.realtime.tools.create import interpolation_codes
    idx_a = np.array([[1, 2], [3, 0]]); val_a = np.array([[1.0, 0.2], [0.5, 0.0]], np.float32)
    idx_b = np.array([[1, 5], [7, 0]]); val_b = np.array([[2.0, 0.9], [0.4, 0.0]], np.float32)
    for t, expect in ((0.0, {(0, 1): 1.0, (0, 2): 0.2, (1, 3): 0.5}),
                      (0.5, {(0, 1): 1.5, (1, 3): 0.5, (0, 5): 0.9}),
                      (1.0, {(0, 1): 2.0, (0, 5): 0.9, (1, 7): 0.4})):
        idx, val = interpolation_codes(idx_a, val_a, idx_b, val_b, t)
        got = {(p, int(i)): float(v) for p in range(2) for i, v in zip(idx[p], val[p]) if v}
        assert got == pytest.approx(expect), t
