"""Figures (matplotlib, Agg): the only module here that draws. Each function writes one PNG atomically."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sidl.realtime.codec.files import atomic_write


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> None:
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))
    plt.close(fig)


def drawable(text: str) -> bool:
    """Whether matplotlib's default font draws it (it has no CJK glyphs: POP909's artist names)."""
    return all(ord(ch) < 0x2E80 for ch in text)


def plot_names(labels: list) -> dict:
    """{label: name on the figure}: the label itself, or #1, #2 ... (commonest first) for all labels
    when any cannot be drawn; the report prints that key beside the figure."""
    classes = sorted(set(labels), key=lambda c: (-labels.count(c), c))
    if all(drawable(c) for c in classes):
        return {c: c for c in classes}
    return {c: f"#{i + 1}" for i, c in enumerate(classes)}


def style_map_png(path: Path, xy: np.ndarray, labels: list, explained: np.ndarray, title: str) -> dict:
    """xy (pieces, 2) PCA coordinates; one marker per piece, coloured by label, centroids named.
    Returns the names the figure uses for the labels (see ``plot_names``)."""
    plt = _pyplot()
    names = plot_names(labels)
    labels = [names[c] for c in labels]
    classes = sorted(set(labels), key=lambda c: (-labels.count(c), c))
    cmap = plt.get_cmap("tab20" if len(classes) > 10 else "tab10")
    markers = "o^sDvP*Xh<>"
    fig, ax = plt.subplots(figsize=(9, 7))
    y = np.array(labels)
    for i, c in enumerate(classes):
        pts = xy[y == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=14, alpha=0.55, color=cmap(i % cmap.N), marker=markers[i % len(markers)],
                   label=f"{c} ({len(pts)})", edgecolors="none")
    centroids = {c: xy[y == c].mean(axis=0) for c in classes}
    for i, c in enumerate(classes):
        ax.scatter(*centroids[c], s=120, color=cmap(i % cmap.N), marker=markers[i % len(markers)],
                   edgecolors="black", linewidths=1.2, zorder=3)
    # names beside their centroids, nudged apart where centroids crowd (the view's 1/40 apart)
    span = np.ptp(xy, axis=0) + 1e-9
    placed = []
    for c in sorted(classes, key=lambda c: centroids[c][1]):
        x0, y0 = centroids[c]
        ty = y0
        while any(abs(x0 - px) < span[0] / 6 and abs(ty - py) < span[1] / 40 for px, py in placed):
            ty += span[1] / 40
        placed.append((x0, ty))
        ax.annotate(c, (x0, y0), xytext=(x0 + span[0] / 80, ty + span[1] / 80), fontsize=9, weight="bold",
                    zorder=4, arrowprops=dict(arrowstyle="-", lw=0.5, color="0.4") if ty != y0 else None,
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.75))
    lo, hi = np.percentile(xy, 1, axis=0), np.percentile(xy, 99, axis=0)
    pad = 0.08 * (hi - lo + 1e-9)
    outside = int(np.sum(np.any((xy < lo - pad) | (xy > hi + pad), axis=1)))
    ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
    ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
    if outside:
        ax.text(0.01, 0.01, f"{outside} outlying pieces outside this view (1st-99th percentile shown)",
                transform=ax.transAxes, fontsize=8, color="0.35")
    ax.set_xlabel(f"PC 1 ({100 * explained[0]:.1f}% of variance)")
    ax.set_ylabel(f"PC 2 ({100 * explained[1]:.1f}% of variance)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), title="label (pieces)",
              markerscale=1.6, frameon=False)
    ax.grid(alpha=0.25)
    _save(fig, path)
    return names


def confusion_png(path: Path, classes: list, confusion, title: str) -> dict:
    """Rows: true class, columns: predicted; cells: counts, shaded by the share of the row."""
    plt = _pyplot()
    names = plot_names(list(classes))
    classes = [names[c] for c in classes]
    m = np.asarray(confusion, np.float64)
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    size = max(5.0, 0.45 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    if n <= 24:
        for i in range(n):
            for j in range(n):
                if m[i, j]:
                    ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if share[i, j] > 0.6 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    _save(fig, path)
    return names
