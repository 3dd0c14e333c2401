"""The .sidlz file: a part as its sparse code, with the tempo and meter maps and the preset it needs.

Version 1, all integers little-endian::

    magic        5 bytes   b"SIDLZ"
    version      u8        1
    flags        u8        bit 0: entries carry a transposition (i8); no shipped preset has them
    name         u8 length + UTF-8 bytes: the preset's name
    fingerprint  16 bytes  the preset's fingerprint (see ``preset_fingerprint``)
    body         zlib (deflate) of:
        ticks_per_beat u16, channel u8 (0-based), positions u32, value_scale f32
        tempos     u16 count, then per tempo: tick u32, microseconds per quarter u32
        meters     u16 count, then per change: tick u32, numerator u8, denominator u8
        entries    u32 count, then three columns (zlib packs columns well):
                   position gaps  LEB128 varints (position - previous entry's position)
                   atoms          LEB128 varints: the code's idx (an atom; a shapes preset packs
                                  shape, step, key and length into larger numbers, a drum-feel
                                  preset the atom's gain and timing levels)
                   values         i8 each: round(value / value_scale * 127)
                   [transpositions i8 each, when flags bit 0]

A file made with one preset decodes only with that preset (name and fingerprint must match).
"""
from __future__ import annotations

import hashlib
import struct
import zlib

import numpy as np

from ..codec.drumfeel import FEEL_CODES

MAGIC = b"SIDLZ"
VERSION = 1
HEAD = struct.Struct("<HBIf")
MAX_BODY = 64 << 20


class SidlzError(ValueError):
    """A .sidlz file that cannot be read, or one made with another preset."""


def preset_fingerprint(preset) -> bytes:
    """16 bytes that change whenever any of the preset's files changes (sha256 over their sha256s)."""
    files = preset.manifest.get("files") if isinstance(preset.manifest.get("files"), dict) else {}
    text = "\n".join(f"{name} {entry.get('sha256') if isinstance(entry, dict) else entry}"
                     for name, entry in sorted(files.items()))
    return hashlib.sha256(f"{preset.name}\n{text}".encode()).digest()[:16]


def _varints(values) -> bytes:
    out = bytearray()
    for v in values:
        while True:
            b = v & 0x7F
            v >>= 7
            out.append(b | (0x80 if v else 0))
            if not v:
                break
    return bytes(out)


def _read_varints(data: bytes, pos: int, n: int) -> tuple[list[int], int]:
    out = []
    for _ in range(n):
        v = shift = 0
        while True:
            if pos >= len(data):
                raise SidlzError("entries end early")
            b = data[pos]
            pos += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
            if shift > 56:
                raise SidlzError("a position gap is too long")
        out.append(v)
    return out, pos


def pack(preset, idx: np.ndarray, val: np.ndarray, tempos, meters, ticks_per_beat: int, channel: int) -> bytes:
    """A code (positions, k) and the file's maps -> .sidlz bytes. ``tempos``: ((tick, us), ...),
    ``meters``: ((tick, numerator, denominator), ...)."""
    name = preset.name.encode()
    if len(name) > 255:
        raise ValueError("preset name too long for .sidlz")
    used = val != 0
    pos, col = np.nonzero(used)
    atoms, values = idx[pos, col], val[pos, col]
    scale = float(np.abs(values).max()) if len(values) else 1.0
    q = np.clip(np.rint(values / scale * 127), -127, 127).astype(np.int8)
    keep = q != 0                                  # an entry that quantizes to 0 is no entry
    pos, atoms, q = pos[keep], atoms[keep], q[keep]
    gaps = np.diff(np.concatenate([[0], pos])).astype(np.int64)
    body = bytearray(HEAD.pack(ticks_per_beat, channel, len(idx), scale))
    body += struct.pack("<H", len(tempos)) + b"".join(struct.pack("<II", int(t), int(u)) for t, u in tempos)
    body += struct.pack("<H", len(meters)) + b"".join(struct.pack("<IBB", int(t), int(n), int(d)) for t, n, d in meters)
    body += struct.pack("<I", len(pos)) + _varints(gaps.tolist())
    body += _varints(atoms.astype(np.int64).tolist()) + q.tobytes()
    return (MAGIC + bytes([VERSION, 0, len(name)]) + name + preset_fingerprint(preset)
            + zlib.compress(bytes(body), 9))


def unpack(data: bytes, preset, label: str = ".sidlz") -> dict:
    """.sidlz bytes -> {idx, val, tempos, meters, ticks_per_beat, channel}, checked against ``preset``."""
    try:
        if data[:5] != MAGIC:
            raise SidlzError("not a .sidlz file (no SIDLZ magic)")
        version, flags, n = data[5], data[6], data[7]
        if version != VERSION:
            raise SidlzError(f".sidlz version {version}; this sidl reads version {VERSION}")
        name = data[8:8 + n].decode("utf-8", "replace")
        fp = data[8 + n:24 + n]
        if name != preset.name or fp != preset_fingerprint(preset):
            what = f"preset {name!r}" + ("" if name != preset.name else " (another version of it)")
            raise SidlzError(f"made with {what}, not with {preset.name!r}: decompress with -p {name}"
                             if name != preset.name else f"made with {what}: its atoms differ from this one's")
        d = zlib.decompressobj()
        body = d.decompress(data[24 + n:], MAX_BODY)
        if d.unconsumed_tail:
            raise SidlzError("body too large")
        tpb, channel, positions, scale = HEAD.unpack_from(body, 0)
        at = HEAD.size
        (nt,) = struct.unpack_from("<H", body, at); at += 2
        tempos = [struct.unpack_from("<II", body, at + 8 * i) for i in range(nt)]; at += 8 * nt
        (nm,) = struct.unpack_from("<H", body, at); at += 2
        meters = [struct.unpack_from("<IBB", body, at + 6 * i) for i in range(nm)]; at += 6 * nm
        (ne,) = struct.unpack_from("<I", body, at); at += 4
        gaps, at = _read_varints(body, at, ne)
        atoms, at = _read_varints(body, at, ne)
        atoms = np.asarray(atoms, np.int64)
        q = np.frombuffer(body, np.int8, ne, at).astype(np.float32)
    except (IndexError, struct.error, zlib.error, ValueError) as e:
        if isinstance(e, SidlzError):
            raise SidlzError(f"{label}: {e}") from None
        raise SidlzError(f"{label}: damaged .sidlz ({type(e).__name__}: {e})") from None
    pos = np.cumsum(np.asarray(gaps, np.int64))
    # entries of pinned atoms are atoms, a drum-feel preset's atoms at feel levels (shapes: any)
    limit = None if getattr(preset, "shapes", False) else preset.n_atoms * (FEEL_CODES if getattr(preset, "feel_codes", False) else 1)
    if not 1 <= tpb or channel > 15 or (ne and (pos[-1] >= positions or (limit and atoms.max() >= limit))) \
            or positions > 1 << 20 or not np.isfinite(scale):
        raise SidlzError(f"{label}: damaged .sidlz (entries outside the code)")
    width = int(np.bincount(pos, minlength=1).max()) if ne else 1
    idx = np.zeros((positions, width), np.int64)
    val = np.zeros((positions, width), np.float32)
    fill = np.zeros(positions, np.int64)
    for p, a, v in zip(pos.tolist(), atoms.tolist(), (q * scale / 127).tolist()):
        idx[p, fill[p]], val[p, fill[p]] = a, v
        fill[p] += 1
    return {"idx": idx, "val": val, "tempos": tuple(tempos) or ((0, 500_000),),
            "meters": tuple(meters) or ((0, 4, 4),), "ticks_per_beat": tpb, "channel": channel}
