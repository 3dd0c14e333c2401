"""Piano performance-event codec: notes in seconds <-> a sequence of 388 one-hot event types.

The Performance RNN vocabulary (Oore et al. 2018): note-on and note-off per MIDI pitch, time shifts
of 10 ms to 1 s, and 32 velocity bins that apply to the note-ons after them. The model sees each
event as a one-hot row of a (n_events, 388) float32 array; the time axis counts events, not time.
Times are seconds (sustain pedal already folded into durations by ``read_score``).

Decoding takes the argmax of each row and tolerates any sequence a model may write: a note-off
with no sounding note is ignored, a note-on of a sounding pitch re-strikes it, and notes still
open at the end close there.
"""
from __future__ import annotations

import mido
import numpy as np

from .spec import PIANO_EVENTS
from .midifile import Score, midi_from_notes
from .notes import NoteArray, one_voice_per_key

# The event table: (kind, first id, count, what the offset from the first id means).
EVENT_TABLE = (
    ("note_on", 0, 128, "MIDI pitch"),
    ("note_off", 128, 128, "MIDI pitch"),
    ("time_shift", 256, 100, "advance (offset + 1) * 10 ms"),
    ("velocity", 356, 32, "velocity bin"),
)
NOTE_ON, NOTE_OFF, TIME_SHIFT, VELOCITY = (row[1] for row in EVENT_TABLE)
N_EVENTS = sum(row[2] for row in EVENT_TABLE)               # 388
TIME_STEP_S = 0.010                                         # one time-shift unit, seconds
MAX_SHIFT_STEPS = 100                                       # longest single shift: 1 s
N_VELOCITY_BINS = 32
VELOCITY_BIN_SIZE = -(-127 // N_VELOCITY_BINS)              # 4 velocities per bin (the last has 3)
EVENT_NAMES = tuple(f"{kind}:{i}" for kind, _, count, _ in EVENT_TABLE for i in range(count))
assert N_EVENTS == PIANO_EVENTS.n_voices == len(EVENT_NAMES)

MIDI_BPM = 120.0             # written files: 120 BPM at 500 ticks per beat, so one tick is 1 ms
MIDI_TICKS_PER_BEAT = 500


def velocity_bin(velocity: np.ndarray) -> np.ndarray:
    """MIDI velocity 1..127 -> bin 0..31."""
    return (np.clip(np.asarray(velocity, np.int64), 1, 127) - 1) // VELOCITY_BIN_SIZE


def bin_velocity(b: np.ndarray) -> np.ndarray:
    """Bin 0..31 -> the middle MIDI velocity of that bin."""
    lo = np.asarray(b, np.int64) * VELOCITY_BIN_SIZE + 1
    return ((lo + np.minimum(127, lo + VELOCITY_BIN_SIZE - 1)) // 2).astype(np.int16)


def events_from_notes(notes_in_seconds: NoteArray) -> np.ndarray:
    """Notes timed in seconds -> (n_events,) int16 event ids.

    Times round to 10 ms; a note lasts at least 10 ms. Two onsets of one pitch on one 10 ms step
    keep the louder, and a re-strike ends the note sounding on that pitch (one voice per pitch, as
    the event vocabulary needs). At equal times note-offs come before note-ons.
    """
    on = np.rint(np.asarray(notes_in_seconds.start) / TIME_STEP_S).astype(np.int64)
    off = np.maximum(on + 1, np.rint(np.asarray(notes_in_seconds.end) / TIME_STEP_S).astype(np.int64))
    pitch = np.clip(np.asarray(notes_in_seconds.pitch, np.int64), 0, 127)
    vel = np.asarray(notes_in_seconds.velocity, np.int64)
    keep = (on >= 0) & (vel > 0)
    on, off, pitch, vel = one_voice_per_key(on[keep], off[keep], pitch[keep], vel[keep])

    # (time, 0 = off / 1 = on, pitch, velocity bin) in time order, offs first.
    n = len(on)
    time = np.concatenate([off, on])
    kind = np.concatenate([np.zeros(n, np.int64), np.ones(n, np.int64)])
    p = np.concatenate([pitch, pitch])
    vbin = np.concatenate([np.full(n, -1), velocity_bin(vel)])
    order = np.lexsort((p, kind, time))
    ids, now, current_bin = [], 0, -1
    for t, k, pp, b in zip(time[order], kind[order], p[order], vbin[order]):
        gap = int(t) - now
        while gap > 0:
            step = min(gap, MAX_SHIFT_STEPS)
            ids.append(TIME_SHIFT + step - 1)
            gap -= step
        now = int(t)
        if k == 1:
            if b != current_bin:
                ids.append(VELOCITY + int(b))
                current_bin = int(b)
            ids.append(NOTE_ON + int(pp))
        else:
            ids.append(NOTE_OFF + int(pp))
    return np.asarray(ids, np.int16)


def events_from_score(score: Score) -> np.ndarray:
    """A score's notes, in its seconds -> (n_events,) int16 event ids."""
    return events_from_notes(NoteArray(score.start_s, score.end_s, score.notes.pitch,
                                       score.notes.velocity))


def one_hot(ids: np.ndarray) -> np.ndarray:
    """(n_events,) event ids -> (n_events, 388) float32 one-hot rows."""
    ids = np.asarray(ids, np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= N_EVENTS):
        raise ValueError(f"event ids must be in 0..{N_EVENTS - 1}")
    x = np.zeros((len(ids), N_EVENTS), np.float32)
    x[np.arange(len(ids)), ids] = 1.0
    return x


def encode_performance(score: Score) -> np.ndarray:
    """A score -> (n_events, 388) float32 one-hot event rows."""
    return one_hot(events_from_score(score))


def notes_from_events(ids: np.ndarray) -> NoteArray:
    """(n_events,) event ids -> notes timed in seconds, sorted; any sequence decodes."""
    now = 0                                    # in 10 ms steps
    velocity = int(bin_velocity(N_VELOCITY_BINS // 2 - 1))   # until a velocity event says otherwise
    sounding: dict[int, tuple[int, int]] = {}  # pitch -> (start step, velocity)
    starts, ends, pitches, vels = [], [], [], []

    def close(p: int):
        s, v = sounding.pop(p)
        if now > s:                            # a re-strike on the same step replaces the note
            starts.append(s); ends.append(now); pitches.append(p); vels.append(v)

    for e in np.asarray(ids, np.int64):
        if NOTE_ON <= e < NOTE_OFF:
            p = int(e - NOTE_ON)
            if p in sounding:
                close(p)
            sounding[p] = (now, velocity)
        elif NOTE_OFF <= e < TIME_SHIFT:
            p = int(e - NOTE_OFF)
            if p in sounding:
                close(p)
        elif TIME_SHIFT <= e < VELOCITY:
            now += int(e - TIME_SHIFT) + 1
        elif VELOCITY <= e < N_EVENTS:
            velocity = int(bin_velocity(e - VELOCITY))
        else:
            raise ValueError(f"event id {e} is outside 0..{N_EVENTS - 1}")
    if sounding:
        now = max(now, max(s for s, _ in sounding.values()) + 1)
        for p in list(sounding):
            close(p)
    notes = NoteArray(np.asarray(starts, np.float64) * TIME_STEP_S,
                      np.asarray(ends, np.float64) * TIME_STEP_S,
                      np.asarray(pitches, np.int16), np.asarray(vels, np.int16))
    return notes.sorted()


def decode_performance(x: np.ndarray) -> NoteArray:
    """(n_events, 388) scores or one-hot rows -> notes timed in seconds (argmax of each row)."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != N_EVENTS:
        raise ValueError(f"performance events must be (n_events, {N_EVENTS}), got {x.shape}")
    return notes_from_events(np.argmax(x, axis=1))


def midi_from_performance(x: np.ndarray) -> mido.MidiFile:
    """(n_events, 388) event rows -> a one-track MIDI file (120 BPM, 1 ms ticks, channel 1)."""
    notes = decode_performance(x)
    beats_per_second = MIDI_BPM / 60.0
    return midi_from_notes(notes.scaled(beats_per_second), MIDI_BPM,
                           ticks_per_beat=MIDI_TICKS_PER_BEAT)
