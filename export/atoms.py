"""A dictionary you can hear and see: every atom as a MIDI clip, and a sheet of them as a PNG.

Works on decoded atoms, ``(n_atoms, L, channels)`` float32 codec arrays (each atom alone, through the
preset's own decoder), so what is drawn and played is what the engine's decoder makes of it.
numpy + mido only (no torch): ``sidl presets export-atoms`` uses it on an installed preset.

PNG is written by hand (zlib + struct): 8-bit RGB, one filter byte per row.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from sidl.realtime.codec.convert import decode_notes
from sidl.realtime.codec.files import write_bytes_atomic
from sidl.realtime.codec.spec import Codec
from sidl.realtime.codec.midifile import midi_from_notes, save_midi_atomic
from sidl.realtime.codec.notes import NoteArray

CLIP_BPM = 120.0
SHEET_COLUMNS = 32                     # atoms per row of the sheet
BACKGROUND = (255, 255, 255)
BORDER = (200, 200, 200)
HIT_RGB = np.array([200, 40, 20], np.float32)     # onsets / hits, shaded by velocity
HOLD_RGB = np.array([60, 110, 200], np.float32)   # piano holds
FAINT_RGB = np.array([90, 90, 90], np.float32)    # sub-threshold activation, shaded by strength


def decoded_atoms(decode_bar, scale: np.ndarray, length: int, n_voices: int) -> np.ndarray:
    """Every atom alone, as the codec reads it: (n_atoms, L, channels), two decoder calls.

    Each atom is played with the sign it usually has (``scale``, its typical value) and the amplitude
    that brings its strongest hit / onset to exactly 1, so the clip shows the atom's whole shape
    (entries above half its peak sound) with the velocities and timing it carries.
    ``decode_bar(idx, val)`` takes (positions, k) codes like the engine's model; position p holds atom p.
    """
    n = len(scale)
    idx = np.arange(n, dtype=np.int64)[:, None]
    sign = np.where(np.asarray(scale) < 0, -1.0, 1.0).astype(np.float32)[:, None]
    unit = decode_bar(idx, sign).reshape(n, length, -1)          # hits are linear in the value
    peak = unit[:, :, :n_voices].max(axis=(1, 2))
    val = np.where(peak > 1e-6, sign[:, 0] / np.maximum(peak, 1e-6), np.asarray(scale, np.float32))
    return decode_bar(idx, val.astype(np.float32)[:, None]).reshape(n, length, -1)


def usage_order(usage: np.ndarray) -> np.ndarray:
    """Atom indices, most used first (ties: lower index first)."""
    return np.argsort(-usage.sum(1), kind="stable")


def atoms_clip_notes(codec: Codec, atoms: np.ndarray, order: np.ndarray, gap_steps: int | None = None
                     ) -> NoteArray:
    """Atoms in ``order`` one after another, each after ``gap_steps`` of silence (default: L), in beats.

    The gap comes first so that microtiming ahead of an atom's first step stays after time 0.
    """
    L = atoms.shape[1]
    gap = L if gap_steps is None else gap_steps
    parts = []
    for i, a in enumerate(order):
        notes = decode_notes(codec, atoms[a], quantize=False)
        parts.append(notes.scaled(1.0, (gap + i * (L + gap)) / codec.steps_per_beat))
    if not parts:
        return NoteArray.empty()
    return NoteArray(*(np.concatenate([getattr(p, f) for p in parts])
                       for f in ("start", "end", "pitch", "velocity"))).sorted()


def write_atoms_midi(path, codec: Codec, atoms: np.ndarray, order: np.ndarray) -> None:
    notes = atoms_clip_notes(codec, atoms, order)
    channel = codec.spec.channel
    mid = midi_from_notes(notes, CLIP_BPM, (codec.beats_per_bar, codec.beat_unit), channel)
    save_midi_atomic(mid, path)


def write_atom_clips(folder, codec: Codec, atoms: np.ndarray, order: np.ndarray) -> list[Path]:
    """One MIDI file per atom, named by rank then atom index (``0000-atom-0123.mid``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    channel = codec.spec.channel
    paths = []
    for rank, a in enumerate(order):
        notes = decode_notes(codec, atoms[a], quantize=False)
        notes = NoteArray(np.maximum(notes.start, 0.0), notes.end, notes.pitch, notes.velocity)  # early hits
        path = folder / f"{rank:04d}-atom-{int(a):04d}.mid"
        save_midi_atomic(midi_from_notes(notes, CLIP_BPM, (codec.beats_per_bar, codec.beat_unit),
                                         channel), path)
        paths.append(path)
    return paths


def atom_tile(codec: Codec, atom: np.ndarray) -> np.ndarray:
    """One atom (L, channels) as an RGB tile: voices bottom (kick, lowest key) to top, steps left to right."""
    n = codec.n_voices
    cw, ch = codec.spec.atlas_cell
    hit = atom[:, :n].T[::-1]                                  # (voices, L), top row = highest voice
    vel = np.clip(atom[:, n:2 * n].T[::-1], 0.0, 1.0)
    on = hit > 0.5
    strength = np.where(on, 0.35 + 0.65 * vel, 0.5 * np.clip(hit, 0.0, 1.0))
    colour = np.where(on[..., None], HIT_RGB, FAINT_RGB)
    if codec.spec.feel == "hold":
        hold = atom[:, 2 * n:3 * n].T[::-1] > 0.5
        colour = np.where((hold & ~on)[..., None], HOLD_RGB, colour)
        strength = np.where(hold & ~on, 0.6, strength)
    bg = np.array(BACKGROUND, np.float32)
    rgb = bg + strength[..., None] * (colour - bg)              # (voices, L, 3)
    return np.repeat(np.repeat(rgb, ch, axis=0), cw, axis=1).round().astype(np.uint8)


def atoms_sheet(codec: Codec, atoms: np.ndarray, order: np.ndarray, columns: int = SHEET_COLUMNS
                ) -> np.ndarray:
    """All atoms in ``order`` as tiles on a grid, 1-pixel borders: (H, W, 3) uint8."""
    tiles = [atom_tile(codec, atoms[a]) for a in order]
    th, tw = tiles[0].shape[:2]
    cols = min(columns, len(tiles))
    rows = -(-len(tiles) // cols)
    sheet = np.empty((rows * (th + 1) + 1, cols * (tw + 1) + 1, 3), np.uint8)
    sheet[:] = BORDER
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        sheet[1 + r * (th + 1):1 + r * (th + 1) + th, 1 + c * (tw + 1):1 + c * (tw + 1) + tw] = t
    return sheet


def png_bytes(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> a PNG file's bytes (8-bit truecolour, no filtering, zlib level 9)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError("png_bytes wants an (H, W, 3) uint8 array")
    h, w, _ = rgb.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)     # 8 bits, truecolour, deflate, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


def write_atoms_png(path, codec: Codec, atoms: np.ndarray, order: np.ndarray) -> None:
    """Through a temporary name, as atoms.mid: an interrupted write leaves no half image."""
    write_bytes_atomic(path, png_bytes(atoms_sheet(codec, atoms, order)))
