"""The preset format, in one place: what a preset folder holds and how each file is checked.

A preset is a folder (``sidl.export.preset`` writes one, ``sidl.realtime.preset.model`` opens one)::

    preset.json   manifest (schema_version, codec, atoms, k, meter prior, corpus + license, metrics,
                  and a sha256 for each file below, checked at every load). Schema 1: atoms pinned
                  in pitch, idx = atom. Schema 2 (atoms.kind "piano-shapes"): idx packs shape, step,
                  transposition and note length (sidl.training.shape_pursuit), and a code position
                  is decoded with the whole window (note lengths cross beats). Schema 3 (atoms.kind
                  "drum-feel"): idx packs the atom and its entry's gain and timing levels
                  (sidl.realtime.codec.drumfeel); idx < atoms is the atom as it is
    encoder.onnx  x (steps, channels) float32, k () int64 -> idx, val (k, positions)
    decoder.onnx  idx, val (k, positions) -> y (steps, channels) float32
    prior.npz     usage (n_atoms, positions_per_bar) f16, scale (n_atoms,) f16,
                  next_atom / next_p (n_atoms, top): each atom's most likely successors;
                  optionally per other meter N/D learned from real bars of it (issue 15):
                  usage_N_D (n_atoms, positions of an N/D bar), and next_atom_N_D / next_p_N_D
                  (n_atoms, top) where its own transitions were kept (else the main ones apply)
    atoms.mid, atoms.png

Reader and writer share these names; nothing here opens a graph. Every problem is a ``PresetError``
whose message is one line naming the preset and what is wrong. Nothing is unpickled.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np

from ..codec.files import NPZ_ERRORS
from ..codec.spec import KNOWN_CODECS, LIVE_CODECS, Codec

SCHEMA_VERSION = 1            # atoms pinned in pitch (drums, and piano presets made before issue #10)
SHAPES_SCHEMA_VERSION = 2     # piano shapes placed at any pitch and step (atoms.kind == SHAPES_KIND)
SHAPES_KIND = "piano-shapes"
DRUM_FEEL_SCHEMA_VERSION = 3  # drum entries that carry their feel levels (atoms.kind == DRUM_FEEL_KIND)
DRUM_FEEL_KIND = "drum-feel"
READ_VERSIONS = (SCHEMA_VERSION, SHAPES_SCHEMA_VERSION, DRUM_FEEL_SCHEMA_VERSION)
KIND_OF_VERSION = {SCHEMA_VERSION: None, SHAPES_SCHEMA_VERSION: SHAPES_KIND, DRUM_FEEL_SCHEMA_VERSION: DRUM_FEEL_KIND}
PRESET_FILES = ("encoder.onnx", "decoder.onnx", "prior.npz", "atoms.mid", "atoms.png")
MANIFEST = "preset.json"
MAX_MEMBER_BYTES = 100 * 10**6                  # a preset file is a few MB at most; installs refuse more
ARCHIVE_SUFFIX = ".sidl"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class PresetError(ValueError):
    """A preset that cannot be used; the message is one line: ``preset 'NAME': what is wrong``."""

    def __init__(self, preset, problem: str):
        text = " ".join(str(problem).split())
        super().__init__(f"preset {str(preset)!r}: {text}")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise PresetError(name, "a preset name is letters, digits, '.', '_' or '-' (at most 64)")
    return name



def describe_codec(codec: Codec) -> str:
    return codec.describe()


def read_manifest(folder: Path, label: str | None = None) -> dict:
    label = label or folder.name
    path = folder / "preset.json"
    if not path.is_file():
        raise PresetError(label, "missing preset.json")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        what = "nested too deeply" if isinstance(e, RecursionError) else e
        raise PresetError(label, f"preset.json is not readable JSON ({what})") from e
    if not isinstance(manifest, dict):
        raise PresetError(label, "preset.json is not a JSON object")
    version = manifest.get("schema_version")
    if version not in READ_VERSIONS:
        raise PresetError(label, f"unknown schema version {version!r} (this sidl reads "
                                 f"{' and '.join(map(str, READ_VERSIONS))})")
    kind = atoms_kind(manifest)
    if kind != KIND_OF_VERSION[version]:
        kinds = ", ".join(f"schema {v} {'has no kind' if k is None else 'is ' + repr(k)}"
                          for v, k in KIND_OF_VERSION.items())
        raise PresetError(label, f"schema version {version} does not hold atoms of kind {kind!r} "
                                 f"({kinds}): re-export the preset with `sidl export RUN`")
    return manifest


def atoms_kind(manifest: dict):
    """The manifest's atoms.kind: None for pinned atoms (schema 1), SHAPES_KIND for piano shapes,
    DRUM_FEEL_KIND for drum entries with feel levels."""
    atoms = manifest.get("atoms")
    return atoms.get("kind") if isinstance(atoms, dict) else None


def manifest_codec(manifest: dict, label: str) -> Codec:
    d = manifest.get("codec")
    name = d.get("name") if isinstance(d, dict) else None
    if name not in KNOWN_CODECS:
        raise PresetError(label, f"unknown codec {name!r} (known: {', '.join(KNOWN_CODECS)})")
    if name not in LIVE_CODECS:
        raise PresetError(label, f"codec {name!r} has no bars; the live engine plays {', '.join(LIVE_CODECS)}")
    try:
        return Codec.from_dict(d)
    except ValueError as e:                 # Codec says what is wrong with the description
        raise PresetError(label, str(e)) from e


def read_verified(folder: Path, manifest: dict, label: str) -> dict[str, bytes]:
    """Every preset file's bytes, each checked against the manifest's sha256."""
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise PresetError(label, "preset.json lists no files")
    out = {}
    for name in PRESET_FILES:
        path = folder / name
        if not path.is_file():
            raise PresetError(label, f"missing {name}")
        want = (files.get(name) or {}).get("sha256") if isinstance(files.get(name), dict) else None
        if not want:
            raise PresetError(label, f"preset.json has no sha256 for {name}")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != want:
            raise PresetError(label, f"sha256 mismatch for {name} (corrupt or modified file)")
        out[name] = data
    return out



def read_prior(data: bytes, n_atoms: int, positions: int, label: str):
    """prior.npz -> usage (n_atoms, positions), transitions (n_atoms, n_atoms), scale (n_atoms,) float32."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            usage, scale = z["usage"], z["scale"]
            nxt, p = z["next_atom"], z["next_p"]
    except NPZ_ERRORS as e:
        # (numpy's own text for a non-npz file suggests allow_pickle: not advice to pass on)
        why = "empty file" if not data else "not an .npz archive" if "pickle" in str(e) else e
        raise PresetError(label, f"prior.npz is not a readable prior ({why})") from e
    arrays = {"usage": usage, "scale": scale, "next_atom": nxt, "next_p": p}
    for key, a in arrays.items():
        if not isinstance(a, np.ndarray) or a.dtype.kind not in "fiu":
            raise PresetError(label, f"prior.npz: {key} is not a numeric array")
    if usage.shape != (n_atoms, positions) or scale.shape != (n_atoms,) or nxt.shape != p.shape \
            or nxt.ndim != 2 or len(nxt) != n_atoms:
        raise PresetError(label, f"prior.npz shapes {usage.shape}, {scale.shape}, {nxt.shape} do not fit "
                                 f"{n_atoms} atoms x {positions} positions")
    nxt = nxt.astype(np.int64)
    if nxt.size and (nxt.min() < 0 or nxt.max() >= n_atoms):
        raise PresetError(label, "prior.npz names atoms that do not exist")
    transitions = np.zeros((n_atoms, n_atoms), np.float32)
    np.put_along_axis(transitions, nxt, p.astype(np.float32), axis=1)
    return usage.astype(np.float32), transitions, scale.astype(np.float32)



METER_KEY = re.compile(r"^(usage|next_atom|next_p)_([0-9]{1,2})_([0-9]{1,2})$")


def meter_key(name: str, meter: str) -> str:
    """prior.npz's name of one meter's array: meter_key("usage", "3/4") == "usage_3_4"."""
    return f"{name}_{meter.replace('/', '_')}"


def read_meter_priors(data: bytes, n_atoms: int, codec: Codec, stride: int, label: str) -> dict:
    """prior.npz's priors for other meters: {"3/4": (usage (n_atoms, positions) float32,
    transitions (n_atoms, n_atoms) float32 or None)}; {} for a prior without any (read_prior has
    checked the file is a readable npz)."""
    found: dict[str, dict] = {}
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            for key in z.files:
                m = METER_KEY.match(key)
                if m:
                    found.setdefault(f"{int(m[2])}/{int(m[3])}", {})[m[1]] = z[key]
    except NPZ_ERRORS as e:
        why = "an object array" if "pickle" in str(e) else e
        raise PresetError(label, f"prior.npz: a meter prior is not readable ({why})") from e
    out = {}
    for meter, arrays in sorted(found.items()):
        what = f"prior.npz: the {meter} prior"
        if "usage" not in arrays or ("next_atom" in arrays) != ("next_p" in arrays):
            raise PresetError(label, f"{what} needs usage_{meter.replace('/', '_')} and next_atom / "
                                     f"next_p both or neither, got {', '.join(sorted(arrays))}")
        for key, a in arrays.items():
            if a.dtype.kind not in "fiu" or not np.all(np.isfinite(a)) or (a.size and a.min() < 0):
                raise PresetError(label, f"{what}: {key} is not an array of finite numbers >= 0")
        beats, unit = map(int, meter.split("/"))
        try:
            steps = codec.with_meter(beats, unit).steps_per_bar
        except ValueError as e:
            raise PresetError(label, f"{what}: {e}") from e
        usage = arrays["usage"]
        if steps % stride or usage.shape != (n_atoms, steps // stride):
            raise PresetError(label, f"{what}: usage has shape {usage.shape}, a {meter} bar of "
                                     f"{n_atoms} atoms x {stride} steps needs ({n_atoms}, {steps / stride:g})")
        transitions = None
        if "next_atom" in arrays:
            nxt, p = arrays["next_atom"], arrays["next_p"]
            if nxt.shape != p.shape or nxt.ndim != 2 or len(nxt) != n_atoms:
                raise PresetError(label, f"{what}: next_atom {nxt.shape} and next_p {p.shape} "
                                         f"are not both ({n_atoms}, top)")
            if nxt.dtype.kind not in "iu" or (nxt.size and nxt.max() >= n_atoms):
                raise PresetError(label, f"{what}: next_atom names atoms that do not exist")
            transitions = np.zeros((n_atoms, n_atoms), np.float32)
            np.put_along_axis(transitions, nxt.astype(np.int64), p.astype(np.float32), axis=1)
        out[meter] = (usage.astype(np.float32), transitions)
    return out


def whole_number(value, field: str, label: str) -> int:
    """A manifest field that must be a whole number (JSON numbers only: no strings, no 512.7)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
            or value in (float("inf"), float("-inf")) or int(value) != value:
        raise PresetError(label, f"preset.json: {field} must be a whole number, got {value!r}")
    return int(value)

