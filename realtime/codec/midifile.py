"""MIDI files at the edge: read one into plain note arrays with its tempo and meter maps, write one back.

Times come out in beats (quarter notes, from ticks, so tempo changes never move the grid) and in
seconds (through the tempo map). Sustain pedal can be folded into note durations, as the piano
codecs need.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import mido
import numpy as np

from .files import atomic_write
from .notes import NoteArray

SUSTAIN_CC = 64
DEFAULT_TEMPO = 500_000  # microseconds per quarter note (120 BPM), MIDI's default


MAX_BEATS = 50_000     # about seven hours at 120 BPM


class MidiFileError(ValueError):
    """A file that is missing or is not readable MIDI; the message is one line naming the file."""


@dataclass(frozen=True)
class Score:
    notes: NoteArray                 # start/end in beats (quarter notes)
    start_s: np.ndarray              # (n,) onsets in seconds
    end_s: np.ndarray                # (n,) releases in seconds
    channel: np.ndarray              # (n,) int8, 0..15
    time_signatures: tuple           # ((beat, numerator, denominator), ...), first at beat 0
    tempos: tuple                    # ((beat, microseconds per quarter), ...), first at beat 0
    length_beats: float              # end of the last event, in beats

    def meter_at(self, beat: float) -> tuple[int, int]:
        num, den = self.time_signatures[0][1:]
        for b, n, d in self.time_signatures:
            if b <= beat:
                num, den = n, d
        return num, den


def load_midi(path) -> mido.MidiFile:
    """Open a MIDI file or raise MidiFileError with one line saying what is wrong."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MidiFileError(f"{path}: no such file")
    try:
        mid = mido.MidiFile(path, clip=True)
    except Exception as e:  # mido raises OSError, EOFError, ValueError, KeyError... on bad bytes
        why = "it ends early (empty or truncated)" if isinstance(e, EOFError) else f"{type(e).__name__}: {e}"
        raise MidiFileError(f"{path}: not a readable MIDI file ({why})") from e
    if mid.type == 2:
        raise MidiFileError(f"{path}: type 2 MIDI files (independent sequences) are not supported")
    if mid.ticks_per_beat <= 0:        # the header's division word with its top bit set
        raise MidiFileError(f"{path}: timed in SMPTE frames, not ticks per beat: not supported")
    # A garbled delta time still parses, as an event hours or years away; every grid codec would
    # then allocate the whole span. Real music is far shorter than this.
    beats = max((sum(msg.time for msg in track) for track in mid.tracks), default=0) / mid.ticks_per_beat
    if beats > MAX_BEATS:
        raise MidiFileError(f"{path}: an event {beats:.3g} beats from the start (corrupt delta times?); "
                            f"at most {MAX_BEATS} beats are read")
    return mid


def _merged_ticks(mid: mido.MidiFile):
    """All messages of all tracks as (absolute tick, message), in time order."""
    events = []
    for track in mid.tracks:
        tick = 0
        for i, msg in enumerate(track):
            tick += msg.time
            events.append((tick, i, msg))
    events.sort(key=lambda e: (e[0], e[1]))
    return [(t, m) for t, _, m in events]


def read_score(mid: mido.MidiFile, fold_sustain: bool = True) -> Score:
    """Notes of every channel of a MIDI file, in beats and seconds.

    Note-on with velocity 0 is a note-off. A pitch struck again while sounding ends the earlier
    note there. With ``fold_sustain``, releases while the pedal (CC64 >= 64) is down are held until
    the pedal lifts, as the piano codecs want.
    """
    tpb = mid.ticks_per_beat
    events = _merged_ticks(mid)

    # Tempo map -> seconds at each event tick.
    tempo_ticks, tempo_values = [0], [DEFAULT_TEMPO]
    sigs = []
    for tick, msg in events:
        if msg.type == "set_tempo" and msg.tempo > 0:
            if tick == tempo_ticks[-1]:
                tempo_values[-1] = msg.tempo
            else:
                tempo_ticks.append(tick)
                tempo_values.append(msg.tempo)
        elif msg.type == "time_signature":
            sigs.append((tick / tpb, msg.numerator, msg.denominator))
    tempo_ticks = np.asarray(tempo_ticks, np.float64)
    tempo_values = np.asarray(tempo_values, np.float64)
    seg_seconds = np.diff(tempo_ticks) * tempo_values[:-1] / 1e6 / tpb
    seg_start_s = np.concatenate([[0.0], np.cumsum(seg_seconds)])

    def seconds(ticks: np.ndarray) -> np.ndarray:
        i = np.searchsorted(tempo_ticks, ticks, side="right") - 1
        return seg_start_s[i] + (ticks - tempo_ticks[i]) * tempo_values[i] / 1e6 / tpb

    open_notes: dict[tuple[int, int], list] = {}   # (channel, pitch) -> [[start_tick, velocity], ...]
    pedal_down = [False] * 16
    held: dict[tuple[int, int], list] = {}          # released under the pedal, waiting for it to lift
    starts, ends, pitches, vels, chans = [], [], [], [], []

    def finish(key, note, tick):
        starts.append(note[0]); ends.append(tick); pitches.append(key[1])
        vels.append(note[1]); chans.append(key[0])

    for tick, msg in events:
        t = msg.type
        if t == "note_on" and msg.velocity > 0:
            key = (msg.channel, msg.note)
            for note in open_notes.pop(key, []) + held.pop(key, []):
                finish(key, note, tick)   # re-strike ends the sounding note
            open_notes[key] = [[tick, msg.velocity]]
        elif t == "note_off" or (t == "note_on" and msg.velocity == 0):
            key = (msg.channel, msg.note)
            notes = open_notes.get(key)
            if not notes:
                continue
            note = notes.pop(0)
            if not notes:
                del open_notes[key]
            if fold_sustain and pedal_down[msg.channel]:
                held.setdefault(key, []).append(note)
            else:
                finish(key, note, tick)
        elif t == "control_change" and msg.control == SUSTAIN_CC and fold_sustain:
            down = msg.value >= 64
            if pedal_down[msg.channel] and not down:
                for key in [k for k in held if k[0] == msg.channel]:
                    for note in held.pop(key):
                        finish(key, note, tick)
            pedal_down[msg.channel] = down
    last_tick = events[-1][0] if events else 0
    for key, notes in list(open_notes.items()) + list(held.items()):
        for note in notes:
            finish(key, note, max(last_tick, note[0]))

    order = np.lexsort((np.asarray(pitches), np.asarray(starts)))
    st = np.asarray(starts, np.float64)[order]
    en = np.asarray(ends, np.float64)[order]
    notes = NoteArray(st / tpb, en / tpb, np.asarray(pitches, np.int16)[order],
                      np.asarray(vels, np.int16)[order])
    sigs = sorted(sigs) or [(0.0, 4, 4)]
    if sigs[0][0] > 0:
        sigs.insert(0, (0.0, sigs[0][1], sigs[0][2]))
    tempos = tuple((float(t / tpb), int(v)) for t, v in zip(tempo_ticks, tempo_values))
    return Score(notes, seconds(st), seconds(en), np.asarray(chans, np.int8)[order],
                 tuple(sigs), tempos, last_tick / tpb)


def midi_from_notes(notes: NoteArray, bpm: float, meter: tuple[int, int] = (4, 4),
                    channel: int = 0, ticks_per_beat: int = 480) -> mido.MidiFile:
    """One-track MIDI file from notes timed in beats, at a fixed tempo."""
    if not 0 <= channel <= 15:
        raise ValueError("channel must be in range 0..15")
    msgs = []
    for s, e, p, v in zip(notes.start, notes.end, notes.pitch, notes.velocity):
        on = int(round(s * ticks_per_beat))
        off = max(on + 1, int(round(e * ticks_per_beat)))
        msgs.append((on, 1, mido.Message("note_on", channel=channel, note=int(p), velocity=int(v))))
        msgs.append((off, 0, mido.Message("note_off", channel=channel, note=int(p), velocity=0)))
    msgs.sort(key=lambda m: (m[0], m[1]))  # offs before ons at the same tick
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0))
    track.append(mido.MetaMessage("time_signature", numerator=meter[0], denominator=meter[1], time=0))
    now = 0
    for tick, _, msg in msgs:
        track.append(msg.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    mid = mido.MidiFile(ticks_per_beat=ticks_per_beat)
    mid.tracks.append(track)
    return mid


def save_midi_atomic(mid: mido.MidiFile, path) -> None:
    """Write a MIDI file through a temporary name so an interrupted write leaves nothing half-done."""
    atomic_write(path, lambda tmp: mid.save(str(tmp)))
