"""atoms.png: the dictionary as a musician reads it, drawn with matplotlib (the ``train`` extra).

Each atom is a small score: one row per voice (drum classes by name, kick at the bottom; piano keys
by pitch name, only the range the atom plays), one column per grid step, a thick line on each beat
and a thin one on each 16th. A hit is a block at the step it lands on, moved by its microtiming,
its shade the velocity (darker is louder); a piano key held after its onset is a pale bar. Above
each atom: its number (what `sidl-live` and the MIDI clips call it) and how often it is the atom a
beat of the corpus is played with (the meter prior's count, k = 1).

    featured_sheet   the most-used atoms, large            -> atoms.png in a preset
    dictionary_pages every atom, small, most used first    -> atoms-all-N.png from export-atoms

Images come back as (H, W, 3) uint8 arrays; ``export.atoms`` writes them. The runtime never
imports this module.
"""
from __future__ import annotations

import numpy as np

from sidl.realtime.codec.drums import CLASS_NAMES
from sidl.realtime.codec.spec import Codec

FEATURED = 16              # atoms on the front sheet
FEATURED_COLUMNS = 4
PAGE_ATOMS = 128           # atoms per page of the whole dictionary
PAGE_COLUMNS = 16
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
LOWEST_KEY = 21            # the piano grid's first voice, A0
PIANO_MIN_ROWS = 5         # a piano atom shows at least this many keys, centred on what it plays
HIT_RGB = (0.70, 0.09, 0.17)         # hits / onsets; alpha carries the velocity
HOLD_RGBA = (0.55, 0.75, 0.88, 1.0)


def voice_labels(codec: Codec) -> list[str]:
    """Row names, voice 0 first: drum classes, or piano keys as pitch names (A0 .. C8)."""
    if codec.spec.drum_feel:
        return list(CLASS_NAMES)
    return [f"{PITCH_CLASSES[p % 12]}{p // 12 - 1}" for p in range(LOWEST_KEY, LOWEST_KEY + codec.n_voices)]


def beat_share(usage: np.ndarray | None, n_atoms: int) -> np.ndarray:
    """Per atom: the fraction of the corpus's beats (code positions) played with it at k = 1."""
    if usage is None:
        return np.full(n_atoms, np.nan)
    u = np.asarray(usage, np.float64)
    return u.sum(1) / max(1, u.shape[1])


def _rows(codec: Codec, atoms: np.ndarray) -> tuple[int, int]:
    """(lowest, highest) voice drawn for these atoms: every drum class; the keys the atoms play."""
    n = codec.n_voices
    if codec.spec.drum_feel:
        return 0, n - 1
    sounding = (atoms[:, :, :n] > 0.5) | ((atoms[:, :, 2 * n:3 * n] > 0.5) if codec.spec.feel == "hold" else False)
    keys = np.nonzero(sounding.any((0, 1)))[0]
    lo, hi = (int(keys.min()), int(keys.max())) if len(keys) else (n // 2, n // 2)
    while hi - lo + 1 < PIANO_MIN_ROWS:
        lo, hi = max(0, lo - 1), min(n - 1, hi + 1)
    return lo, hi


def _panel(codec: Codec, atom: np.ndarray, rows: tuple[int, int], x0: float, y0: float, w: float, h: float,
           rects: list, colours: list, lines: list, line_styles: list) -> None:
    """Add one atom's blocks, row stripes and step lines, in a w x h box at (x0, y0) (y up)."""
    n, L = codec.n_voices, atom.shape[0]
    lo, hi = rows
    sw, rh = w / L, h / (hi - lo + 1)                                # one step, one row
    hit, vel = atom[:, :n], np.clip(atom[:, n:2 * n], 0.0, 1.0)
    for v in range(lo, hi + 1):
        if (v - lo) % 2 == 0:
            rects.append((x0, y0 + (v - lo) * rh, w, rh))
            colours.append((0.95, 0.95, 0.95, 1.0))
    if codec.spec.feel == "hold":
        held = atom[:, 2 * n:3 * n] > 0.5
        for s, v in zip(*np.nonzero(held & ~(hit > 0.5))):
            if lo <= v <= hi:
                rects.append((x0 + s * sw, y0 + (v - lo + 0.3) * rh, sw, 0.4 * rh))
                colours.append(HOLD_RGBA)
    offset = atom[:, 2 * n:3 * n] if codec.spec.feel == "offset" else np.zeros_like(hit)
    for s, v in zip(*np.nonzero(hit > 0.5)):
        if lo <= v <= hi:
            shade = 0.15 + 0.85 * float(np.clip((vel[s, v] - 0.15) / 0.8, 0.0, 1.0))   # velocity as darkness
            rects.append((x0 + (s + 0.08 + float(offset[s, v])) * sw, y0 + (v - lo + 0.12) * rh, 0.84 * sw, 0.76 * rh))
            colours.append(HIT_RGB + (shade,))
    spb = codec.steps_per_beat
    for s in range(L + 1):                                          # 16th lines, beat lines
        lines.append([(x0 + s * sw, y0), (x0 + s * sw, y0 + h)])
        line_styles.append(s % spb == 0)
    for y in (y0, y0 + h):
        lines.append([(x0, y), (x0 + w, y)])
        line_styles.append(True)


def _sheet(codec: Codec, atoms: np.ndarray, chosen: np.ndarray, share: np.ndarray, columns: int,
           cell_px: tuple[int, int], title: str, small: bool, drum_rows: bool) -> np.ndarray:
    """Atoms ``chosen`` on a grid of panels, drawn on one matplotlib Axes (fast: a few collections)."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection, PolyCollection
    labels = voice_labels(codec)
    cols = min(columns, len(chosen))
    n_rows = -(-len(chosen) // cols)
    label_w = 62 if not small else (48 if drum_rows else 26)       # pixels for row names left of a panel
    inner_w = 14 if drum_rows else label_w                         # drum names only left of the first column
    pw, ph = cell_px
    title_h, gap = 96, (16 if small else 22)
    W = label_w + cols * pw + (cols - 1) * inner_w + 10
    H = n_rows * (ph + gap) + title_h
    fig = plt.figure(figsize=(W / 100, H / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)                                              # pixel coordinates, y down
    ax.axis("off")
    rects, colours, lines, beat = [], [], [], []
    fs_label, fs_title = (5.5, 6.5) if small else (8, 9)
    for i, a in enumerate(int(c) for c in chosen):
        r, c = divmod(i, cols)
        x0 = label_w + c * (pw + inner_w)
        y0 = title_h + r * (ph + gap) + gap - 4
        span = (0, codec.n_voices - 1) if drum_rows else _rows(codec, atoms[a:a + 1])
        # drawn with y up inside the panel: flip by giving the bottom edge and a negative height
        _panel(codec, atoms[a], span, x0, y0 + ph, pw, -ph, rects, colours, lines, beat)
        lo, hi = span
        if c == 0 or not drum_rows:
            step = 1 if drum_rows or hi - lo < (8 if small else 14) else -(-(hi - lo + 1) // (6 if small else 12))
            rh = ph / (hi - lo + 1)
            for v in range(lo, hi + 1, step):
                ax.text(x0 - 3, y0 + ph - (v - lo + 0.5) * rh, labels[v], ha="right", va="center", fontsize=fs_label)
        used = "" if not np.isfinite(share[a]) else (f" · {share[a]:.1%}" if small else f" · {share[a]:.1%} of beats")
        ax.text(x0 + pw / 2, y0 - 3, f"atom {a}{used}", ha="center", va="bottom", fontsize=fs_title)
    polys = [[(x, y), (x + w, y), (x + w, y + h), (x, y + h)] for x, y, w, h in rects]
    ax.add_collection(PolyCollection(polys, facecolors=colours, edgecolors="none"))
    ax.add_collection(LineCollection(lines, colors=["#444444" if b else "#c8c8c8" for b in beat],
                                     linewidths=[1.4 if b else 0.6 for b in beat]))
    head, legend = title
    ax.text(8, 6, head, ha="left", va="top", fontsize=11 if not small else 10, weight="bold")
    ax.text(8, 24, legend, ha="left", va="top", fontsize=8, linespacing=1.3)
    key_y, drawn = 72, len(rects)                                  # velocity key, under the legend
    ax.text(8, key_y, "velocity", ha="left", va="center", fontsize=8)
    for j, v in enumerate((32, 64, 96, 127)):
        shade = 0.15 + 0.85 * float(np.clip((v / 127 - 0.15) / 0.8, 0.0, 1.0))
        rects.append((60 + j * 46, key_y - 6, 16, 12))
        colours.append(HIT_RGB + (shade,))
        ax.text(80 + j * 46, key_y, str(v), ha="left", va="center", fontsize=7)
    key = [[(x, y), (x + w, y), (x + w, y + h), (x, y + h)] for x, y, w, h in rects[drawn:]]
    ax.add_collection(PolyCollection(key, facecolors=colours[drawn:], edgecolors="none"))
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return rgb


def _legend(codec: Codec) -> str:
    feel = ("a block left or right of its 16th: played early or late" if codec.spec.feel == "offset"
            else "pale bar: key still held")
    return (f"rows: {codec.spec.voices}; columns: 16ths, a thick line on each beat; darker = louder;\n"
            f"{feel}. atom N: its number, as in atoms.mid and the clips;\n"
            f"%: the share of the corpus's beats played with that atom (the meter prior's count)")


def featured_sheet(codec: Codec, atoms: np.ndarray, order: np.ndarray, usage: np.ndarray | None = None,
                   n: int = FEATURED) -> np.ndarray:
    """The ``n`` most-used atoms, large, with row names: atoms.png."""
    share = beat_share(usage, len(atoms))
    chosen = np.asarray(order)[:n]
    L = atoms.shape[1]
    title = (f"The {len(chosen)} most used of {len(atoms)} atoms ({codec.name}, {L} steps each)",
             _legend(codec) + "; every atom: sidl presets export-atoms")
    return _sheet(codec, atoms, chosen, share, FEATURED_COLUMNS, (max(160, 40 * L), 190), title,
                  small=False, drum_rows=codec.spec.drum_feel)


def dictionary_pages(codec: Codec, atoms: np.ndarray, order: np.ndarray, usage: np.ndarray | None = None,
                     per_page: int = PAGE_ATOMS) -> list[np.ndarray]:
    """Every atom, most used first, ``per_page`` to an image."""
    share = beat_share(usage, len(atoms))
    order = np.asarray(order)
    L = atoms.shape[1]
    n_pages = -(-len(order) // per_page)
    pages = []
    for p in range(n_pages):
        chosen = order[p * per_page:(p + 1) * per_page]
        title = (f"All {len(atoms)} atoms, page {p + 1} of {n_pages}: ranks {p * per_page + 1} to "
                 f"{p * per_page + len(chosen)} by use", _legend(codec))
        pages.append(_sheet(codec, atoms, chosen, share, PAGE_COLUMNS, (max(56, 14 * L), 80), title,
                            small=True, drum_rows=codec.spec.drum_feel))
    return pages
