"""Reading MIDI files a user hands us: every way a file can be wrong is one line naming the file."""
import struct

import mido
import pytest

from sidl.realtime.codec.midifile import MAX_BEATS, MidiFileError, load_midi, read_score


def header(fmt=0, tracks=1, division=480) -> bytes:
    return b"MThd" + struct.pack(">IhhH", 6, fmt, tracks, division & 0xFFFF)


@pytest.mark.parametrize("data, says", [
    (b"", "it ends early (empty or truncated)"),
    (header()[:10], "it ends early (empty or truncated)"),
    (b"RIFF" + b"\0" * 40, "not a readable MIDI file"),
    (header(division=-25 << 8 | 40) + b"MTrk" + struct.pack(">I", 4) + b"\x00\xff\x2f\x00",
     "timed in SMPTE frames"),
])
def test_bad_files_are_one_line_naming_the_file(tmp_path, data, says):
    path = tmp_path / "bad.mid"
    path.write_bytes(data)
    with pytest.raises(MidiFileError) as e:
        load_midi(path)
    assert str(path) in str(e.value) and says in str(e.value) and "\n" not in str(e.value)


def test_an_event_absurdly_far_away_is_refused(tmp_path):
    mid = mido.MidiFile(ticks_per_beat=4)
    track = mido.MidiTrack()
    track.append(mido.Message("note_on", note=60, velocity=90, time=0))
    track.append(mido.Message("note_off", note=60, time=(MAX_BEATS + 1) * 4))
    mid.tracks.append(track)
    mid.save(tmp_path / "far.mid")
    with pytest.raises(MidiFileError, match="corrupt delta times"):
        load_midi(tmp_path / "far.mid")
    track[-1].time = MAX_BEATS * 4                       # at the limit: read
    mid.save(tmp_path / "long.mid")
    assert read_score(load_midi(tmp_path / "long.mid")).length_beats == MAX_BEATS
