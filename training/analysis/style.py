"""``sidl style``: a map of pieces by their mean code, and how well labels group on it.

Writes into DIR: ``style-LABEL.png`` (2-D PCA of the per-atom mean codes at unit length, one marker per piece,
centroids named), ``codes.csv`` (file, label, group, one column per atom) and ``style-LABEL.json``
(label pairs by cosine between label means, silhouettes on codes and on the statistics features).
"""
from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import numpy as np

from sidl.realtime.codec.files import write_bytes_atomic, write_json_atomic

from . import plots
from .probe import encode_labelled, load_labelled

N_PAIRS = 5


def label_pairs(X: np.ndarray, y: list, n: int = N_PAIRS) -> tuple[list, list]:
    """(most similar, most dissimilar) label pairs by cosine between label mean codes."""
    classes = sorted(set(y))
    yy = np.array(y)
    means = np.stack([X[yy == c].mean(axis=0) for c in classes])
    unit = means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    cos = unit @ unit.T
    pairs = sorted(((float(cos[i, j]), classes[i], classes[j]) for i in range(len(classes))
                    for j in range(i + 1, len(classes))), reverse=True)
    as_rows = [{"a": a, "b": b, "cosine": round(c, 4)} for c, a, b in pairs]
    return as_rows[:n], as_rows[::-1][:n]


def silhouette(X: np.ndarray, y: list) -> float:
    """Mean silhouette of the label groups, cosine distance (-1..1; > 0: closer to their own label)."""
    from sklearn.metrics import silhouette_score
    return float(silhouette_score(X, np.array(y), metric="cosine"))


def run_style(data: str, by: str, preset, out: Path, labels_csv=None, quick: bool = False, log=None) -> dict:
    t0 = time.perf_counter()
    lab = load_labelled(data, by, preset, labels_csv, quick, min_groups=1)
    enc = encode_labelled(lab, preset, by_position=False, quick=quick)
    from sklearn.decomposition import PCA
    # each piece's mean code at unit length: the map shows what cosine (silhouette, label pairs) sees
    unit = enc.codes / np.maximum(np.linalg.norm(enc.codes, axis=1, keepdims=True), 1e-12)
    pca = PCA(n_components=2, random_state=0).fit(unit)
    xy = pca.transform(unit)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"style-{data if data in ('groove', 'pop909', 'asap') else 'folder'}-{by}.png"
    names = plots.style_map_png(png, xy, list(lab.y), pca.explained_variance_ratio_,
                        f"{data}: pieces by mean sparse code ({preset.name}), coloured by {by}")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["file", by, "group", "pc1", "pc2"] + [f"atom_{i}" for i in range(enc.codes.shape[1])])
    for p, label, g, (a, b), row in zip(lab.pieces, lab.y, lab.groups, xy, enc.codes):
        w.writerow([p.name, label, g, f"{a:.5f}", f"{b:.5f}"] + [f"{v:.5g}" for v in row])
    write_bytes_atomic(out / "codes.csv", buf.getvalue().encode())
    similar, dissimilar = label_pairs(enc.codes, lab.y)
    result = {"corpus": data, "by": by, "preset": preset.name, "pieces": len(lab.y), "labels": len(set(lab.y)),
              "explained_variance": [round(float(v), 4) for v in pca.explained_variance_ratio_],
              "silhouette_codes": silhouette(enc.codes, lab.y),
              "silhouette_statistics": silhouette(enc.stats, lab.y),
              "most_similar": similar, "most_dissimilar": dissimilar,
              "figure_names": {k: v for k, v in names.items() if k != v},
              "figure": str(png), "codes_csv": str(out / "codes.csv"), "dropped": lab.dropped,
              "seconds": round(time.perf_counter() - t0, 1), "quick": quick}
    write_json_atomic(out / f"{png.stem}.json", result)
    return result


def summary_lines(r: dict) -> list[str]:
    lines = [f"{r['corpus']} by {r['by']}: {r['pieces']} pieces, {r['labels']} labels, preset {r['preset']}",
             f"PCA: PC1 {100 * r['explained_variance'][0]:.1f}%, PC2 {100 * r['explained_variance'][1]:.1f}% of variance",
             f"silhouette (cosine): mean codes {r['silhouette_codes']:.3f}, statistics {r['silhouette_statistics']:.3f}",
             "most similar label pairs (cosine of label mean codes):"]
    lines += [f"  {p['a']} ~ {p['b']}: {p['cosine']:.3f}" for p in r["most_similar"]]
    lines.append("most dissimilar:")
    lines += [f"  {p['a']} / {p['b']}: {p['cosine']:.3f}" for p in r["most_dissimilar"]]
    lines.append(f"wrote {r['figure']} and {r['codes_csv']} ({r['seconds']} s)")
    return lines
