"""A dictionary you can hear and see: every atom as a MIDI clip, and a sheet of them as a PNG.

Works on decoded atoms, ``(n_atoms, L, channels)`` float32 codec arrays (each atom alone, through the
preset's own decoder), so what is drawn and played is what the engine's decoder makes of it.
numpy + mido only (no torch): ``sidl presets export-atoms`` uses it on an installed preset. The
pictures are drawn by ``export.atlas`` with matplotlib (the ``train`` extra), imported only when a
picture is asked for, so clips export without it.

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


def write_atoms_png(path, codec: Codec, atoms: np.ndarray, order: np.ndarray, usage: np.ndarray | None = None
                    ) -> None:
    """atoms.png: the most-used atoms drawn large (``export.atlas``, matplotlib). Through a temporary
    name, as atoms.mid: an interrupted write leaves no half image."""
    from sidl.export.atlas import featured_sheet
    write_bytes_atomic(path, palette_png_bytes(featured_sheet(codec, atoms, order, usage)))


PALETTE_COLOURS = 64


def palette_png_bytes(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> an indexed PNG of at most ``PALETTE_COLOURS`` colours, no dithering.

    A sheet of flat blocks and text reads the same in 64 colours and takes a third of the bytes
    (drum atoms.png: 53 kB truecolour, 20 kB), which a preset's size budget needs. Pillow comes
    with matplotlib, which drew the sheet."""
    import io

    from PIL import Image
    out = io.BytesIO()
    Image.fromarray(rgb).quantize(PALETTE_COLOURS, dither=Image.Dither.NONE).save(out, "PNG", optimize=True)
    return out.getvalue()


def write_dictionary_pngs(folder, codec: Codec, atoms: np.ndarray, order: np.ndarray,
                          usage: np.ndarray | None = None) -> list[Path]:
    """Every atom, most used first, on pages ``atoms-all-1.png``, ``atoms-all-2.png`` ... (matplotlib)."""
    from sidl.export.atlas import dictionary_pages
    return [write_bytes_atomic(Path(folder) / f"atoms-all-{i}.png", png_bytes(page))
            for i, page in enumerate(dictionary_pages(codec, atoms, order, usage), 1)]
