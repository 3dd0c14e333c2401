"""A MIDI file as the tools see it: the notes one preset's codec acts on, and everything else kept as is.

``read_clip`` splits a file into the *part* (the notes of the codec's channel the codec has classes
for: channel 10's mapped drums for a drum preset, every other channel's notes for a piano preset,
or the one ``channel`` asked for) and the rest, which ``write_clip`` puts back untouched: tempo map,
meter changes, other channels' tracks, controllers, and drum notes the codec has no class for.
Times of the part are in beats (quarter notes, from ticks, so tempo changes never move the grid).
"""
from __future__ import annotations

from dataclasses import dataclass

import mido
import numpy as np

from ..codec.drums import PITCH_TO_CLASS
from ..codec.midifile import MidiFileError, load_midi, read_score
from ..codec.notes import NoteArray
from ..codec.spec import Codec

MAX_CLIP_BEATS = 8192        # ~68 minutes at 120 BPM: longer is a corrupt delta time, not a song
MIN_TEMPO_US, MAX_TEMPO_US = 60_000, 6_000_000   # 1000 BPM .. 10 BPM: outside, a corrupt tempo
ALL_CHANNELS = -1            # piano presets: every channel but the drum channel


@dataclass(frozen=True)
class Clip:
    path: str
    midi: mido.MidiFile              # the file as read (never modified)
    notes: NoteArray                 # the part, in beats
    channel: np.ndarray              # (n,) the part's channels
    time_signatures: tuple           # ((beat, numerator, denominator), ...)
    tempos: tuple                    # ((beat, microseconds per quarter), ...)
    length_beats: float
    unmapped: dict                   # drum presets: {pitch: count} of channel notes without a class
    part_channels: tuple             # channels whose matching notes the part replaces
    drums: bool

    @property
    def meter(self) -> tuple[int, int]:
        return tuple(self.time_signatures[0][1:])

    @property
    def bpm(self) -> float:
        return 60e6 / self.tempos[0][1]

    def unmapped_note(self) -> str:
        n = sum(self.unmapped.values())
        return f"ignored {n} notes of {len(self.unmapped)} unmapped drums" if n else ""


def is_part(drums: bool, channel: np.ndarray, pitch: np.ndarray, channels: tuple) -> np.ndarray:
    """Which notes belong to the part: on one of ``channels`` and, for drums, of a mapped pitch."""
    mask = np.isin(channel, channels)
    if drums:
        mask &= PITCH_TO_CLASS[np.clip(pitch, 0, 127)] >= 0
    return mask


def part_channels(codec: Codec, channel: int | None) -> tuple:
    if channel is not None:
        if not 1 <= channel <= 16:
            raise ValueError(f"--channel must be 1..16, got {channel}")
        return (channel - 1,)
    if codec.spec.drum_feel:
        return (codec.spec.channel,)
    return tuple(c for c in range(16) if c != 9)


def read_clip(path, codec: Codec, channel: int | None = None, taps: bool = False,
              mid: mido.MidiFile | None = None) -> Clip:
    """The file at ``path`` split for ``codec`` (``channel``: 1..16, default the codec's own rule).
    ``taps``: the part is every note of ``channel`` (default: all channels), any pitch (drumify).
    ``mid``: the file already opened by ``load_midi``. Raises MidiFileError with one line naming the
    file and the problem."""
    mid = load_midi(path) if mid is None else mid
    chans = part_channels(codec, channel) if not taps or channel is not None else tuple(range(16))
    drums = codec.spec.drum_feel and not taps
    try:
        score = read_score(mid, fold_sustain=codec.spec.fold_sustain)
    except (ValueError, IndexError, KeyError, TypeError, ZeroDivisionError) as e:
        raise MidiFileError(f"{path}: not readable MIDI ({type(e).__name__}: {e})") from e
    if score.length_beats > MAX_CLIP_BEATS:
        raise MidiFileError(f"{path}: {score.length_beats:.0f} beats long; at most {MAX_CLIP_BEATS} are read")
    for beat, num, den in score.time_signatures:
        if not 1 <= num <= 64 or den not in (1, 2, 4, 8, 16, 32):
            raise MidiFileError(f"{path}: meter {num}/{den} at beat {beat:g} is not one sidl can play")
    for beat, tempo in score.tempos:
        if not MIN_TEMPO_US <= tempo <= MAX_TEMPO_US:
            raise MidiFileError(f"{path}: absurd tempo {60e6 / tempo:.3g} BPM at beat {beat:g}")
    on_channels = np.isin(score.channel, chans)
    mask = is_part(drums, score.channel, score.notes.pitch, chans)
    unmapped = {}
    if drums:
        pitches, counts = np.unique(score.notes.pitch[on_channels & ~mask], return_counts=True)
        unmapped = {int(p): int(c) for p, c in zip(pitches, counts)}
    if not mask.any():
        where = ("channel " + ", ".join(str(c + 1) for c in chans) if len(chans) < 4
                 else "any channel" if len(chans) == 16 else "any channel but 10")
        what = "drum notes the codec knows" if drums else "notes"
        extra = f" ({sum(unmapped.values())} unmapped drum notes)" if unmapped else ""
        raise MidiFileError(f"{path}: no {what} on {where}{extra}")
    return Clip(str(path), mid, score.notes.select(mask), score.channel[mask], score.time_signatures,
                score.tempos, score.length_beats, unmapped, chans, drums)


def bar_starts(clip: Clip, length_beats: float) -> np.ndarray:
    """Beats at which bars start, through the meter changes, up to ``length_beats``."""
    starts, sigs = [], list(clip.time_signatures) + [(float("inf"), 4, 4)]
    for (b0, num, den), (b1, _, _) in zip(sigs, sigs[1:]):
        bar = num * 4 / den
        t = b0
        while t < min(b1, length_beats) and len(starts) < 100_000:
            starts.append(t)
            t += bar
    return np.asarray(starts or [0.0])


def varint(v: int) -> bytes:
    """A MIDI variable-length quantity (delta times, sysex lengths)."""
    out = [v & 0x7F]
    v >>= 7
    while v:
        out.append(0x80 | (v & 0x7F))
        v >>= 7
    return bytes(reversed(out))


def raw_event(msg) -> bytes:
    """A message as it is stored in a track (after its delta time)."""
    if msg.type == "sysex":
        data = bytes(msg.data) + b"\xf7"
        return b"\xf0" + varint(len(data)) + data
    return bytes(msg.bytes())


def smf_bytes(tracks: list, ticks_per_beat: int, midi_type: int = 1) -> bytes:
    """A Standard MIDI File from tracks of (absolute tick, raw event bytes), each in time order.
    Written directly (no per-message objects): a 4-minute song's thousands of notes cost little."""
    out = [b"MThd", (6).to_bytes(4, "big"), midi_type.to_bytes(2, "big"), len(tracks).to_bytes(2, "big"),
           int(ticks_per_beat).to_bytes(2, "big")]
    for events in tracks:
        body, now = [], 0
        for tick, raw in events:
            body.append(varint(tick - now))
            body.append(raw)
            now = tick
        body.append(b"\x00\xff\x2f\x00")
        data = b"".join(body)
        out += [b"MTrk", len(data).to_bytes(4, "big"), data]
    return b"".join(out)


def note_events(notes: NoteArray, channel: int, ticks_per_beat: int) -> list:
    """(tick, 0 off / 1 on, raw bytes) of notes timed in beats."""
    on = np.maximum(0, np.rint(notes.start * ticks_per_beat)).astype(np.int64)
    off = np.maximum(on + 1, np.rint(notes.end * ticks_per_beat).astype(np.int64))
    ev = []
    for t_on, t_off, p, v in zip(on.tolist(), off.tolist(), notes.pitch.tolist(), notes.velocity.tolist()):
        ev.append((t_on, 1, bytes((0x90 | channel, p & 0x7F, max(1, min(127, v))))))
        ev.append((t_off, 0, bytes((0x80 | channel, p & 0x7F, 0))))
    return ev


def write_clip(clip: Clip, notes: NoteArray, channel: int | None = None) -> bytes:
    """The input file (as SMF bytes) with its part replaced by ``notes`` (beats), everything else
    kept as it was.

    The new notes go into the track that held most of the part (its name and program stay), on
    ``channel`` (0-based; default: the part's commonest channel)."""
    mid, tpb = clip.midi, clip.midi.ticks_per_beat
    if channel is None:
        channel = int(np.bincount(clip.channel.astype(np.int64), minlength=16).argmax()) if len(clip.channel) else 0
    part_channels = set(clip.part_channels)
    tracks, held = [], []
    for track in mid.tracks:
        tick, kept, n_part = 0, [], 0
        for msg in track:
            tick += msg.time
            if msg.type in ("note_on", "note_off") and msg.channel in part_channels and (
                    not clip.drums or PITCH_TO_CLASS[msg.note] >= 0):
                n_part += 1
                continue
            if msg.type == "end_of_track":
                continue
            kept.append((tick, 1, raw_event(msg)))
        tracks.append(kept)
        held.append(n_part)
    target = int(np.argmax(held)) if any(held) else 0
    # offs before ons at one tick, so a re-strike never ends the note it starts; a stable sort keeps
    # the track's own order otherwise
    tracks[target] = sorted(tracks[target] + note_events(notes, channel, tpb), key=lambda e: (e[0], e[1]))
    midi_type = mid.type if mid.type == 1 or len(tracks) == 1 else 1
    return smf_bytes([[(t, raw) for t, _, raw in events] for events in tracks], tpb, midi_type)


def midi_with_maps(notes: NoteArray, tempos, meters, ticks_per_beat: int, channel: int) -> bytes:
    """One-track SMF bytes: tempo map ((tick, us), ...), meter map ((tick, num, den), ...), notes (beats)."""
    ev = [(int(t), -1, b"\xff\x51\x03" + int(u).to_bytes(3, "big")) for t, u in tempos]
    ev += [(int(t), -1, bytes((0xFF, 0x58, 4, int(n), max(0, int(d).bit_length() - 1), 24, 8))) for t, n, d in meters]
    ev += note_events(notes, channel, ticks_per_beat)
    ev.sort(key=lambda e: (e[0], e[1]))
    return smf_bytes([[(t, raw) for t, _, raw in ev]], ticks_per_beat, 0)
