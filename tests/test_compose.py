"""Composer: encode -> edit -> decode for one bar, on the impulse-dictionary stand-in and real GMD bars."""
import numpy as np
import pytest

from sidl.realtime.codec.convert import encode_notes
from sidl.realtime.compose import Composer, default_mode, keep_velocities
from sidl.realtime.controls import Controls
from sidl.realtime.codec.drums import PITCH_TO_CLASS
from sidl.realtime.codec.spec import DRUMS, PIANO_GRID
from sidl.realtime.codec.notes import NoteArray


def hits(notes):
    """{(rounded step, drum class): velocity} of a drum bar; the loudest of a class on a step wins."""
    out = {}
    for s, p, v in zip(notes.start, notes.pitch, notes.velocity):
        key = (int(np.floor(s + 0.5)), int(PITCH_TO_CLASS[p]))
        if PITCH_TO_CLASS[p] >= 0 and 0 <= key[0] < 16:
            out[key] = max(out.get(key, 0), int(v))
    return out


def test_default_modes():
    assert default_mode(DRUMS) == "generate" and default_mode(PIANO_GRID) == "simplify"


def test_echo_reconstructs_a_real_bar_up_to_k_per_position(drums, gmd_bars):
    c = Composer(drums)
    for bar in gmd_bars:
        out = c.compose(1, bar, Controls(mode="echo", quantize=True))
        played = hits(bar)
        got = hits(out)
        assert set(got) <= set(played)
        assert np.all(out.start == np.round(out.start))            # quantized: on the grid
        per_position = {}
        for (step, _cls) in played:
            per_position[step // 4] = per_position.get(step // 4, 0) + 1
        assert len(got) == sum(min(n, drums.k) for n in per_position.values())


def test_simplify_keeps_the_strongest_notes_with_their_velocities(drums, gmd_bars):
    c = Composer(drums)
    for bar in gmd_bars:
        out = c.compose(1, bar, Controls(mode="simplify", keep=5, quantize=True))
        got, played = hits(out), hits(bar)
        assert len(got) == 5 < len(played)
        assert all(played[key] == vel for key, vel in got.items())      # velocities kept
        assert min(got.values()) >= sorted(played.values())[-5]         # the loudest five


def test_simplify_and_echo_of_silence_is_silence(drums):
    c = Composer(drums)
    for mode in ("simplify", "echo"):
        assert len(c.compose(3, NoteArray.empty(), Controls(mode=mode))) == 0
    assert c.atoms_in_use == 0


def test_generate_is_seeded_and_density_sets_atoms(drums):
    a = [len(Composer(drums).compose(b, NoteArray.empty(), Controls(seed=3))) for b in range(4)]
    bars_a = [Composer(drums).compose(0, NoteArray.empty(), Controls(seed=3)) for _ in range(2)]
    assert np.array_equal(bars_a[0].start, bars_a[1].start)
    assert np.array_equal(bars_a[0].pitch, bars_a[1].pitch)
    c = Composer(drums)
    c.compose(0, NoteArray.empty(), Controls(density=2.0, variation=0.0))
    assert c.atoms_in_use == 8                                    # 2 per position, 4 positions
    c.compose(1, NoteArray.empty(), Controls(density=0.0))
    assert c.atoms_in_use == 0 and all(n > 0 for n in a)


def test_generate_repeats_the_groove_without_variation_and_departs_with_it(drums):
    c = Composer(drums)
    bars = [c.compose(b, NoteArray.empty(), Controls(variation=0.0, seed=1)) for b in range(8)]
    assert all(hits(b) == hits(bars[0]) for b in bars)
    c = Composer(drums)
    bars = [c.compose(b, NoteArray.empty(), Controls(variation=1.0, seed=1)) for b in range(8)]
    assert len({tuple(sorted(hits(b))) for b in bars}) > 4


def test_fill_every_n_bars_changes_the_second_half_only(drums):
    c = Composer(drums)
    ctl = Controls(variation=0.0, fill_every=4, seed=2)
    bars = [hits(c.compose(b, NoteArray.empty(), ctl)) for b in range(8)]
    first_half = [{k: v for k, v in h.items() if k[0] < 8} for h in bars]
    assert all(fh == first_half[0] for fh in first_half)
    assert bars[3] != bars[0] and bars[7] != bars[0] and bars[1] == bars[0]
    assert sum(1 for k in bars[3] if k[0] >= 8) > sum(1 for k in bars[0] if k[0] >= 8) - 1


def test_follow_answers_with_a_variation_of_what_is_played(drums, gmd_bars):
    c = Composer(drums)
    bar = gmd_bars[0]
    same = c.compose(1, bar, Controls(follow=True, variation=0.0, keep=6, quantize=True))
    assert set(hits(same)) <= set(hits(bar)) and len(hits(same)) == 6
    varied = c.compose(1, bar, Controls(follow=True, variation=1.0, keep=6, quantize=True))
    assert hits(varied) != hits(same)
    silent_input = c.compose(2, NoteArray.empty(), Controls(follow=True))
    assert len(silent_input) > 0                                   # nothing played: keep grooving


def test_quantize_removes_the_learned_feel(drums):
    c = Composer(drums)
    loose = c.compose(0, NoteArray.empty(), Controls(density=4.0, seed=5))
    tight = c.compose(0, NoteArray.empty(), Controls(density=4.0, seed=5, quantize=True))
    assert np.all(tight.start == np.round(tight.start))
    off = np.round(loose.start) % 2 == 1
    assert off.any() and np.allclose(loose.start[off] - np.round(loose.start[off]), drums.feel, atol=1e-6)


def test_other_meters_compose_bars_of_their_own_length(drums):
    c = Composer(drums, meter=(3, 4))
    assert c.steps == 12 and c.positions == 3 and c.usage.shape == (36, 3)
    out = c.compose(0, NoteArray.empty(), Controls(density=1.0))
    assert len(out) == 3 and out.start.max() < 12
    with pytest.raises(ValueError, match="does not fit"):
        Composer(drums, meter=(7, 8))


def test_piano_simplify_keeps_velocities(piano):
    c = Composer(piano)
    played = NoteArray.from_lists([0, 0, 0, 4, 8], [4, 4, 4, 8, 12], [60, 64, 67, 62, 65], [90, 40, 70, 100, 30])
    out = c.compose(1, played, Controls(mode="simplify", keep=3))
    assert sorted(zip(out.pitch.tolist(), out.velocity.tolist())) == [(60, 90), (62, 100), (67, 70)]


def test_keep_velocities_only_where_both_hit():
    nv = 9
    x = encode_notes(DRUMS, NoteArray.from_lists([0.0], [0.1], [36], [127]), 16)
    y = np.zeros_like(x)
    y[0, 0], y[0, nv] = 1.0, 0.2
    y[4, 1], y[4, nv + 1] = 1.0, 0.3
    z = keep_velocities(y, x, nv)
    assert z[0, nv] == pytest.approx(1.0) and z[4, nv + 1] == pytest.approx(0.3)
