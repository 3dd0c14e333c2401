"""The meter prior of a preset: which atoms the corpus uses where in the bar, and what follows what.

The exported pursuit encoder is run over (a seeded subset of) the training corpus with k = 1;
from the codes it gives

    usage       (n_atoms, positions_per_bar)  how often atom a sounds at code position p of a bar
                                              (uses per bar: a column sums to the mean atoms there)
    transitions (n_atoms, n_atoms)            row i: how often atom j is the strongest at the next
                                              code position when i is the strongest here
                                              (row-normalised, zero rows for atoms never strongest)
    scale       (n_atoms,)                    typical value of each atom (signed median |value|)

``prior.npz`` stores them compactly (float16, and only the ``top`` strongest transitions of each
row as index/probability pairs); ``sidl.realtime.preset`` expands them back with numpy alone.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from sidl.realtime.codec.drumfeel import code_atom
from sidl.realtime.codec.spec import Codec

USED = 1e-6            # |value| above which an atom counts as used
TOP_TRANSITIONS = 16   # stored per row of the transition matrix
CHUNK_ELEMENTS = 1 << 25   # pursuit's (positions, atoms, patch) temporaries per chunk, ~128 MB
PRIOR_WORK = 2.5e9         # positions x atoms x patch x k_max counted over: ~15 s on one core
WINDOW_BARS = 16           # bars taken from each piece, so the prior sees many pieces


@dataclass(frozen=True)
class MeterPrior:
    usage: np.ndarray          # (n_atoms, positions_per_bar) float32
    transitions: np.ndarray    # (n_atoms, n_atoms) float32, rows sum to 1 or 0
    scale: np.ndarray          # (n_atoms,) float32
    positions: int             # code positions the statistics were counted over
    pieces: int                # corpus pieces they came from
    skipped: dict = field(default_factory=dict)   # why the other pieces were not counted: reason -> pieces


def prior_positions(n_atoms: int, patch: int, k_max: int, work: float = PRIOR_WORK) -> int:
    """Code positions to count over: pursuit costs ~ n_atoms * patch * k_max per position."""
    return int(np.clip(work // (n_atoms * patch * k_max), 1_000, 100_000))


def sample_windows(pieces, codec: Codec, max_positions: int, length: int, seed: int = 0,
                   window_bars: int = WINDOW_BARS) -> list[np.ndarray]:
    """Up to ``window_bars`` bars from each piece in the preset's meter, pieces in a seeded order,
    each from a seeded bar line, until ``max_positions`` code positions: (steps, channels) arrays.
    """
    return sample_windows_counted(pieces, codec, max_positions, length, seed, window_bars)[0]


def sample_windows_counted(pieces, codec: Codec, max_positions: int, length: int, seed: int = 0,
                           window_bars: int = WINDOW_BARS) -> tuple[list[np.ndarray], dict]:
    """``sample_windows`` and why each piece left out was left out: {reason: number of pieces}."""
    bar = codec.steps_per_bar
    if bar % length:
        raise ValueError(f"a bar of {bar} steps is not a whole number of {length}-step atoms")
    meter = (codec.beats_per_bar, codec.beat_unit, codec.steps_per_beat)
    rng = np.random.default_rng(seed)
    out, left = [], max_positions * length
    skipped = Counter()
    order = rng.permutation(len(pieces))
    for n, i in enumerate(order):
        c = pieces[i].codec
        if (c.beats_per_bar, c.beat_unit, c.steps_per_beat) != meter:
            skipped[f"in {c.beats_per_bar}/{c.beat_unit}, not the preset's "
                    f"{codec.beats_per_bar}/{codec.beat_unit}"] += 1
            continue
        x = pieces[i].x
        n_bars = len(x) // bar
        take = min(n_bars, window_bars, left // bar)
        if take <= 0:
            skipped["shorter than one bar"] += 1
            continue
        first = int(rng.integers(n_bars - take + 1)) * bar
        out.append(x[first:first + take * bar])
        left -= take * bar
        if left < bar:
            if len(order) - n - 1:
                skipped[f"not needed: {max_positions} code positions were reached first"] = len(order) - n - 1
            break
    if not out:
        raise ValueError(f"no corpus piece in {codec.beats_per_bar}/{codec.beat_unit} to count the prior on")
    return out, dict(skipped)


@torch.no_grad()
def encode_windows(encoder, windows, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Run the torch pursuit encoder over each window, in chunks; (idx, val) each (positions, k)."""
    L = encoder.length
    per_position = encoder.atoms.stored.shape[0] * encoder.atoms.stored[0].numel()
    chunk = max(1, CHUNK_ELEMENTS // per_position) * L
    kt = torch.tensor(k, dtype=torch.long)
    codes = []
    for x in windows:
        parts = [encoder(torch.from_numpy(np.ascontiguousarray(x[s:s + chunk])), kt)
                 for s in range(0, len(x), chunk)]
        idx = torch.cat([p[0] for p in parts], dim=1).T.numpy()
        val = torch.cat([p[1] for p in parts], dim=1).T.numpy()
        codes.append((idx, val))
    return codes


def count_prior(codes, n_atoms: int, positions_per_bar: int, entry_atoms=None) -> MeterPrior:
    """Statistics of codes (idx, val) each (positions, k), every code starting on a bar line.
    ``entry_atoms(idx)``: each entry's atom, -1 for none (a preset's ``entry_atoms``: drum-feel
    entries pack levels above the atom, a shapes preset's placements are no atom); default idx."""
    usage = np.zeros((n_atoms, positions_per_bar), np.float64)
    trans = np.zeros((n_atoms, n_atoms), np.float64)
    values = [[] for _ in range(n_atoms)]
    total = 0
    for idx, val in codes:
        if entry_atoms is not None:
            idx = entry_atoms(idx)
            val = np.where(idx >= 0, val, 0.0)
            idx = np.maximum(idx, 0)
        if idx.size and idx.max() >= n_atoms:
            raise ValueError(f"code entries up to {idx.max()} are not atoms of a {n_atoms}-atom prior")
        P = len(idx)
        used = np.abs(val) > USED
        pos = np.broadcast_to((np.arange(P) % positions_per_bar)[:, None], idx.shape)
        np.add.at(usage, (idx[used], pos[used]), 1.0)
        strongest = idx[np.arange(P), np.abs(val).argmax(1)]
        has = used.any(1)
        pair = has[:-1] & has[1:]
        np.add.at(trans, (strongest[:-1][pair], strongest[1:][pair]), 1.0)
        order = np.argsort(idx[used], kind="stable")
        a, v = idx[used][order], val[used][order]
        for atom, chunk in zip(*_split_by(a, v)):
            values[atom].append(chunk)
        total += P
    usage /= max(1.0, total / positions_per_bar)               # uses per bar
    rows = trans.sum(1, keepdims=True)
    trans = np.divide(trans, rows, out=np.zeros_like(trans), where=rows > 0)
    return MeterPrior(usage.astype(np.float32), trans.astype(np.float32),
                      typical_values(values), total, len(codes))


def _split_by(keys: np.ndarray, values: np.ndarray):
    """Sorted keys -> (unique keys, list of their values)."""
    if len(keys) == 0:
        return [], []
    cut = np.nonzero(np.diff(keys))[0] + 1
    return keys[np.r_[0, cut]], np.split(values, cut)


def typical_values(values) -> np.ndarray:
    """Per atom: median |value| with the sign most of its uses have; unused atoms get the overall median."""
    med = np.full(len(values), np.nan, np.float32)
    for a, chunks in enumerate(values):
        if chunks:
            v = np.concatenate(chunks)
            med[a] = np.median(np.abs(v)) * (1.0 if v.sum() >= 0 else -1.0)
    fallback = np.nanmedian(np.abs(med)) if np.isfinite(med).any() else 1.0
    return np.where(np.isfinite(med), med, fallback).astype(np.float32)


def meter_prior(encoder, codec: Codec, pieces, k: int, max_positions: int | None = None,
                seed: int = 0) -> MeterPrior:
    """Count the meter prior of ``encoder`` (a torch ``PursuitEncoder``) over corpus ``pieces``."""
    if max_positions is None:
        # what pursuit reads per atom (a drum encoder also stores velocity rows it does not search)
        patch = encoder.n_classify * encoder.length
        max_positions = prior_positions(encoder.atoms.stored.shape[0], patch, encoder.k_max)
    windows, skipped = sample_windows_counted(pieces, codec, max_positions, encoder.length, seed)
    codes = encode_windows(encoder, windows, k)
    A = encoder.atoms.stored.shape[0]
    atoms = (lambda idx: code_atom(idx, A)) if encoder.feel else None     # drum-feel entries
    prior = count_prior(codes, A, codec.steps_per_bar // encoder.length, atoms)
    return replace(prior, skipped=skipped)


def describe_skipped(skipped: dict) -> str:
    """'13 pieces in 6/8, not the preset's 4/4; 2 shorter than one bar' (empty when none were)."""
    return "; ".join(f"{n} piece{'s' * (n != 1)} {why}" for why, n in skipped.items())


def prior_arrays(prior: MeterPrior, top: int = TOP_TRANSITIONS) -> dict:
    """What prior.npz holds: float16 usage and scale, each transition row's ``top`` entries."""
    n = prior.transitions.shape[0]
    top = min(top, n)
    nxt = np.argsort(-prior.transitions, axis=1, kind="stable")[:, :top]
    p = np.take_along_axis(prior.transitions, nxt, axis=1)
    return {"usage": prior.usage.astype(np.float16), "scale": prior.scale.astype(np.float16),
            "next_atom": nxt.astype(np.uint16 if n <= 1 << 16 else np.int32),
            "next_p": p.astype(np.float16)}


# ------------------------------------------------------------------------ priors of other meters
# Issue 15: a preset counted in 4/4 also carries priors learned from real bars of other meters
# (GMD has 12 such files: 3/4, 6/8, 5/4, 5/8). They are counted like the main prior (one-atom
# codes, every bar from its bar line), through the preset's own encoder.onnx: the exported pursuit,
# the same encoder the main prior was counted with (export checks the two agree).


def encode_bars(preset, x: np.ndarray, bar: int, k: int = 1, bars_per_call: int = 16):
    """(idx, val) each (positions, k) of the whole bars of ``x`` through ``preset``'s encoder.onnx."""
    x = np.ascontiguousarray(x[:len(x) // bar * bar], np.float32)
    step = bars_per_call * bar
    parts = [preset.encode_bar(np.ascontiguousarray(x[s:s + step]), k) for s in range(0, len(x), step)]
    if not parts:
        return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def pieces_by_meter(preset, pieces) -> tuple[dict, dict]:
    """{meter: [pieces]} of the meters other than the preset's that fit its atoms, and
    {meter: why not} for the others found (5/8's 10-step bar does not fit 4-step atoms)."""
    own = preset.codec.meter
    usable, unusable = {}, {}
    for p in pieces:
        m = p.codec.meter
        if m == own:
            continue
        if p.codec.steps_per_bar % preset.stride:
            unusable[m] = (f"a {m} bar of {p.codec.steps_per_bar} steps is not a whole number of "
                           f"{preset.stride}-step atoms")
        elif len(p.x) >= p.codec.steps_per_bar:
            usable.setdefault(m, []).append(p)
    return dict(sorted(usable.items())), unusable


def learned_meter_prior(preset, pieces) -> MeterPrior:
    """The prior of one meter from all bars of ``pieces`` (all in that meter)."""
    if getattr(preset, "shapes", False):
        raise ValueError(f"preset {preset.name!r} places shapes at any key: its code has no one-beat atoms "
                         f"to learn a meter prior of (meter priors are for drum presets)")
    codec = pieces[0].codec
    codes = [encode_bars(preset, p.x, codec.steps_per_bar) for p in pieces]
    return count_prior(codes, preset.n_atoms, codec.steps_per_bar // preset.stride, preset.entry_atoms)


def meter_prior_arrays(meter: str, prior: MeterPrior, transitions: bool = False,
                       top: int = TOP_TRANSITIONS) -> dict:
    """prior.npz's arrays of one meter: usage_N_D, and with ``transitions`` next_atom_N_D /
    next_p_N_D, the meter's own transitions (each row's ``top``; rows of atoms its bars never
    reached stay zero, and a Composer blends the main rows in: sidl.realtime.metrical)."""
    from sidl.realtime.preset.format import meter_key
    out = {meter_key("usage", meter): prior.usage.astype(np.float16)}
    if transitions:
        rows = prior_arrays(prior, top)
        out[meter_key("next_atom", meter)] = rows["next_atom"]
        out[meter_key("next_p", meter)] = rows["next_p"]
    return out


def write_npz(path, arrays: dict) -> None:
    """An .npz numpy reads, LZMA-compressed (a tenth smaller than savez_compressed on a prior) and
    byte-for-byte the same for the same arrays (fixed member dates), so re-exports diff cleanly."""
    import zipfile
    with zipfile.ZipFile(path, "w", zipfile.ZIP_LZMA) as z:
        for key, a in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_LZMA
            with z.open(info, "w") as f:
                np.lib.format.write_array(f, np.asarray(a), allow_pickle=False)


def export_meter_priors(folder, pieces, corpus: str, transitions: bool = False, log=None) -> dict:
    """Add the priors of every other meter found in ``pieces`` to the preset in ``folder``.

    prior.npz keeps its main arrays exactly (same values and dtypes) and gains usage_N_D (and, with
    ``transitions``, next_atom_N_D / next_p_N_D); preset.json's meter_prior gains ``other_meters``
    and the new sha256. No other file is touched. Rerunnable: the same corpus gives the same bytes.
    Returns the ``other_meters`` record.
    """
    import hashlib
    import io
    import json
    from pathlib import Path

    from sidl.realtime.preset.format import METER_KEY, MANIFEST
    from sidl.realtime.preset.model import open_preset

    say = log or (lambda msg: None)
    folder = Path(folder)
    preset = open_preset(folder, folder.name)
    usable, unusable = pieces_by_meter(preset, pieces)
    if not usable:
        raise ValueError(f"no piece of {corpus} is in a meter other than {preset.codec.meter} that fits "
                         f"the preset's {preset.stride}-step atoms")
    with np.load(io.BytesIO((folder / "prior.npz").read_bytes()), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if not METER_KEY.match(k)}     # the main prior, as it is
    record = {"corpus": corpus, "encoder": "encoder.onnx (pursuit), k = 1",
              "transitions": "learned (a Composer blends them half and half with the main ones)" if transitions
              else f"the main {preset.codec.meter} ones", "meters": {}}
    for meter, group in usable.items():
        prior = learned_meter_prior(preset, group)
        arrays.update(meter_prior_arrays(meter, prior, transitions))
        bars = prior.positions // prior.usage.shape[1]
        record["meters"][meter] = {"bars": bars, "pieces": len(group),
                                   "files": sorted(p.name for p in group)}
        say(f"{meter}: {bars} bars of {len(group)} piece{'s' * (len(group) != 1)}")
    if unusable:
        record["not_learned"] = unusable
        for meter, why in unusable.items():
            say(f"{meter}: not learned ({why})")
    record["fallback"] = (f"other meters: the {preset.codec.meter} prior mapped by metrical strength "
                          f"(sidl.realtime.metrical)")
    tmp = folder / ".prior.npz.tmp"
    write_npz(tmp, arrays)
    data = tmp.read_bytes()
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    manifest.setdefault("meter_prior", {})["other_meters"] = record
    manifest["files"]["prior.npz"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    tmp_manifest = folder / f".{MANIFEST}.tmp"
    tmp_manifest.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    tmp.replace(folder / "prior.npz")
    tmp_manifest.replace(folder / MANIFEST)
    open_preset(folder, folder.name)          # what was written loads, hashes and all
    return record
