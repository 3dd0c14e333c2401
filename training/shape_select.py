"""Learn a shape dictionary by choosing, from the counted shapes, the set pursuit explains most with.

    count shapes on the training split (a pool of the best-ranked, sidl.training.shapes)
    -> gains: for sampled training beats, each pool shape's best first placement
       (onsets explained - cells off the music, the gain greedy pursuit maximises)
    -> facility location: greedily add the shape that raises sum over beats of the best gain most
    -> once more with the beats' residuals after one pick added (what a second pick must explain)

Counting ranks shapes by how often they occur; this chooses them by what they explain, together:
a shape that only repeats what a chosen one already covers gains nothing. The objective is the
pursuit's own (k = 1 on the beats, k = 2 through the residuals), measured on the training split only.
"""
from __future__ import annotations

import numpy as np

from sidl.realtime.codec.pianogrid import N_KEYS
from sidl.realtime.preset.pursuit import MAX_CELLS

from .piano_eval import greedy_pursuit, placements
from .shapes import DEFAULT_SPAN, ShapeDictionary, beat_onsets, count_shapes, dictionary_of

POOL = 3000                  # best-ranked counted shapes the dictionary is chosen from
BEATS = 20000                # training beats the objective is measured on (a seeded sample)
BEAT_CHUNK, SHAPE_CHUNK = 256, 400   # gains computed in blocks: placement tensors grow with both


def first_gains(on: np.ndarray, d: ShapeDictionary) -> np.ndarray:
    """(beats, L*88) onsets -> (beats, shapes) float32 gain of each shape's best placement (-1: none fits)."""
    gains = np.full((len(on), d.n_shapes), -1, np.float32)
    order = np.argsort(on.sum(1), kind="stable")          # blocks of beats with as many onsets
    for i in range(0, len(on), BEAT_CHUNK):
        idx = order[i:i + BEAT_CHUNK]
        for j in range(0, d.n_shapes, SHAPE_CHUNK):
            part = ShapeDictionary(*(a[j:j + SHAPE_CHUNK] for a in (d.cells, d.mask, d.vel_ratio, d.len_ratio)),
                                   d.steps_per_beat)
            ok, _, _, _, _, in_music = placements(on[idx], part)
            g = np.where(ok, 2 * in_music - part.mask.sum(1), -1)    # explained - wrong
            gains[idx, j:j + SHAPE_CHUNK] = g.max(1)
    return gains


def facility_location(gains: np.ndarray, n: int, floor: np.ndarray) -> list[int]:
    """Greedy choice of n columns maximising sum over rows of max(floor, best chosen column)."""
    best = floor.astype(np.float32).copy()
    chosen: list[int] = []
    for _ in range(min(n, gains.shape[1])):
        raise_ = np.maximum(gains - best[:, None], 0).sum(0)
        raise_[chosen] = -1
        a = int(raise_.argmax())
        chosen.append(a)
        best = np.maximum(best, gains[:, a])
    return chosen


def residual_onsets(on: np.ndarray, d: ShapeDictionary, k: int) -> np.ndarray:
    """The onsets of each beat that k greedy picks over ``d`` leave unexplained."""
    L = d.steps_per_beat
    x = np.zeros((len(on) * L, 3 * N_KEYS), np.float32)
    x[:, :N_KEYS] = on.reshape(-1, N_KEYS)
    a, dt, t, _, _ = greedy_pursuit(x, d, k)
    left = on.copy()
    for slot in range(k):
        b = np.nonzero(a[:, slot] >= 0)[0]
        ai = a[b, slot]
        cell = (dt[b, slot][:, None] + d.cells[ai, :, 0]) * N_KEYS + t[b, slot][:, None] + d.cells[ai, :, 1]
        m = d.mask[ai]
        left[np.broadcast_to(b[:, None], cell.shape)[m], cell[m]] = False
    return left


def covering_dictionary(grids: list[np.ndarray], n_shapes: int, steps_per_beat: int,
                        span: int = DEFAULT_SPAN, seed: int = 0, pool: int = POOL,
                        beats: int = BEATS) -> ShapeDictionary:
    """The single note plus the n_shapes - 1 pool shapes chosen by facility location (see module doc)."""
    L = steps_per_beat
    # (shapes the live encoder's numpy pursuit can sum exactly; longer ones would make a preset
    # fall back to its slower graph)
    ranked = [s for s, _ in count_shapes(grids, L, span) if len(s) <= MAX_CELLS][:pool]
    candidates = dictionary_of(ranked, L)                  # shape 0: the single note
    on = np.concatenate([beat_onsets(x, L).reshape(-1, L * N_KEYS) for x in grids])
    on = on[on.any(1)]
    on = on[np.random.default_rng(seed).permutation(len(on))[:beats]]
    gains = first_gains(on, candidates)
    pick = lambda g: dictionary_of([ranked[i] for i in facility_location(g[:, 1:], n_shapes - 1, g[:, 0])], L)
    d = pick(gains)
    left = residual_onsets(on, d, 1)
    left = left[left.any(1)]
    return pick(np.concatenate([gains, first_gains(left, candidates)]))


def main(argv=None) -> None:
    """``python -m sidl.training.shape_select --corpus asap --shapes 256,512``: choose each number of
    shapes on the corpus's training split and print onset F1 at k = 1, 2, 4, 8 on its test split,
    through the numpy twin of pursuit (``piano_eval.shape_rows``), without training or exporting a
    preset: how the dictionary's size trades against F1."""
    import argparse
    import time

    from sidl.realtime.codec.spec import PIANO_GRID
    from .corpora import load_corpus
    from .piano_eval import shape_rows
    ap = argparse.ArgumentParser(prog="python -m sidl.training.shape_select", description=main.__doc__)
    ap.add_argument("--corpus", default="asap", choices=("asap", "pop909"))
    ap.add_argument("--shapes", default="256,512", help="comma-separated dictionary sizes")
    a = ap.parse_args(argv)
    try:
        sizes = [int(n) for n in a.shapes.split(",")]
    except ValueError:
        raise SystemExit(f"--shapes must be whole numbers separated by commas, got {a.shapes!r}")
    train = [p.x for p in load_corpus(a.corpus, PIANO_GRID, "train")[0]]
    test = [p.x for p in load_corpus(a.corpus, PIANO_GRID, "test")[0]]
    ks = (1, 2, 4, 8)
    print(f"{a.corpus}: shapes chosen on {len(train)} training pieces, onset F1 on {len(test)} test pieces")
    print("shapes  " + "  ".join(f"k={k:<5d}" for k in ks) + "  choose s  pursue s")
    for n in sizes:
        t0 = time.perf_counter()
        d = covering_dictionary(train, n, PIANO_GRID.steps_per_beat)
        t1 = time.perf_counter()
        rows = shape_rows(test, d, ks)
        t2 = time.perf_counter()
        print(f"{n:6d}  " + "  ".join(f"{rows[k]['f1']:.4f}" for k in ks) + f"  {t1 - t0:8.0f}  {t2 - t1:8.0f}",
              flush=True)


if __name__ == "__main__":
    main()
