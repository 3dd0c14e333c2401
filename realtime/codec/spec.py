"""What the axes of a MIDI array mean: the small frozen value every codec, preset and engine shares.

A bar of music is a float32 array ``(steps, channels)``. ``Codec`` says how to read it: which codec
wrote it, how many channels, how many grid steps make a beat, and the meter. Grid codecs lay their
channels out as three blocks of ``n_voices`` each::

    [0, n)      hit / onset      (0 or 1)           classification
    [n, 2n)     velocity         (midi velocity / 127, 0 where no hit)
    [2n, 3n)    drums: offset    (timing off the grid, in steps, [-0.5, 0.5))   regression on hits
                piano: hold      (1 while a note sounds after its onset step)   classification

The performance-event codec has no grid: its time axis counts events, so ``steps_per_beat`` is 0.

Everything else the stages need to know about a codec (its MIDI channel, the live mode it starts
in, whether the pedal folds into note lengths, how its voices are named) is one row of
``CODEC_SPECS``, like mido's message specs: code asks ``codec.spec``, it never branches on a name.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass



@dataclass(frozen=True)
class CodecSpec:
    """The facts of one codec that the corpora, export, file tools and the live engine act on."""

    voices: str               # what the voices are, for descriptions ("drum classes", "piano keys")
    voice_names: str          # how the voices read in one phrase
    feel: str                 # what the third block of a grid codec holds ("offset", "hold"; "" for events)
    channel: int              # the MIDI channel it plays on, 0-based (drums: 9, "channel 10")
    live_mode: str            # the mode sidl-live starts a preset of this codec in ("" if it cannot play live)
    fold_sustain: bool        # the sustain pedal is folded into note lengths when reading MIDI
    drum_feel: bool           # scored on hits with velocity and microtiming (drums), else on note onsets
    atlas_cell: tuple = (3, 1)   # (width, height) in pixels of one step x one voice in atoms.png
    # The one channel its notes are read from unless a user says otherwise (files and sidl-live's
    # encoding modes): drums read channel 10, so an arrangement's bass and chords are not drum hits.
    reads_channel: int | None = None

    @property
    def live(self) -> bool:
        return bool(self.live_mode)


CODEC_SPECS = {
    "drums": CodecSpec("drum classes", "kick, snare, closed hat, open hat, low tom, mid tom, high tom, crash, ride",
                       "offset", channel=9, live_mode="generate", fold_sustain=False, drum_feel=True,
                       atlas_cell=(4, 4), reads_channel=9),
    "piano-grid": CodecSpec("piano keys", "A0..C8", "hold", channel=0, live_mode="simplify",
                            fold_sustain=True, drum_feel=False),
    "piano-events": CodecSpec("event types", "note-on/off x 128, 100 time shifts, 32 velocities", "",
                              channel=0, live_mode="", fold_sustain=True, drum_feel=False),
}
KNOWN_CODECS = tuple(CODEC_SPECS)
LIVE_CODECS = tuple(name for name, s in CODEC_SPECS.items() if s.live)   # codecs with bars, playable live


def codec_spec(name: str) -> CodecSpec:
    try:
        return CODEC_SPECS[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r} (known: {', '.join(KNOWN_CODECS)})") from None


@dataclass(frozen=True)
class Codec:
    name: str                 # one of KNOWN_CODECS
    n_voices: int             # drum classes (9) or piano keys (88); 388 event types for piano-events
    steps_per_beat: int       # grid steps per quarter note; 0 for the event codec
    beats_per_bar: int = 4    # meter numerator
    beat_unit: int = 4        # meter denominator

    def __post_init__(self):
        if self.name not in KNOWN_CODECS:
            raise ValueError(f"unknown codec {self.name!r} (known: {', '.join(KNOWN_CODECS)})")
        if self.n_voices <= 0:
            raise ValueError("n_voices must be positive")
        if self.steps_per_beat < 0 or bool(self.steps_per_beat) != bool(CODEC_SPECS[self.name].feel):
            raise ValueError(f"{self.name} needs steps_per_beat {'>= 1' if CODEC_SPECS[self.name].feel else '0'}")
        if self.beats_per_bar <= 0 or self.beat_unit not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"bad meter {self.beats_per_bar}/{self.beat_unit}")

    @property
    def spec(self) -> CodecSpec:
        return CODEC_SPECS[self.name]

    @property
    def is_grid(self) -> bool:
        return self.steps_per_beat > 0

    @property
    def meter(self) -> str:
        return f"{self.beats_per_bar}/{self.beat_unit}"

    def describe(self) -> str:
        """One line saying what the arrays mean, for manifests and ``sidl presets show``."""
        if not self.is_grid:
            return f"{self.name}: {self.channels} event types, no grid"
        s = self.spec
        return (f"{self.name}: {self.n_voices} {s.voices} ({s.voice_names}) x "
                f"{'hit' if s.drum_feel else 'onset'}/velocity/{s.feel} = {self.channels} channels, "
                f"{self.steps_per_beat} steps per beat, {self.meter}")

    @property
    def channels(self) -> int:
        return 3 * self.n_voices if self.is_grid else self.n_voices

    @property
    def steps_per_bar(self) -> int:
        """Grid steps in one bar of this meter (6/8 at 4 steps per quarter: 12)."""
        if not self.is_grid:
            raise ValueError("the event codec has no bars")
        steps = self.beats_per_bar * self.steps_per_beat * 4 / self.beat_unit
        if steps != int(steps):
            raise ValueError(f"meter {self.beats_per_bar}/{self.beat_unit} does not fit "
                             f"{self.steps_per_beat} steps per beat")
        return int(steps)

    def with_meter(self, beats_per_bar: int, beat_unit: int) -> "Codec":
        return Codec(self.name, self.n_voices, self.steps_per_beat, beats_per_bar, beat_unit)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Codec":
        try:
            return cls(**{k: d[k] for k in ("name", "n_voices", "steps_per_beat",
                                             "beats_per_bar", "beat_unit")})
        except KeyError as e:
            raise ValueError(f"codec description lacks {e.args[0]!r}") from None
        except TypeError as e:
            raise ValueError(f"bad codec description: {e}") from None


DRUMS = Codec("drums", n_voices=9, steps_per_beat=4)
PIANO_GRID = Codec("piano-grid", n_voices=88, steps_per_beat=4)
PIANO_EVENTS = Codec("piano-events", n_voices=388, steps_per_beat=0)
