"""What the axes of a MIDI array mean: the small frozen value every codec, preset and engine shares.

A bar of music is a float32 array ``(steps, channels)``. ``Codec`` says how to read it: which codec
wrote it, how many channels, how many grid steps make a beat, and the meter. Grid codecs lay their
channels out as three blocks of ``n_voices`` each::

    [0, n)      hit / onset      (0 or 1)           classification
    [n, 2n)     velocity         (midi velocity / 127, 0 where no hit)
    [2n, 3n)    drums: offset    (timing off the grid, in steps, [-0.5, 0.5))   regression on hits
                piano: hold      (1 while a note sounds after its onset step)   classification

The performance-event codec has no grid: its time axis counts events, so ``steps_per_beat`` is 0.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

KNOWN_CODECS = ("drums", "piano-grid", "piano-events")


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
        if self.is_grid and self.steps_per_beat <= 0:
            raise ValueError(f"{self.name} needs steps_per_beat >= 1")
        if self.beats_per_bar <= 0 or self.beat_unit not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"bad meter {self.beats_per_bar}/{self.beat_unit}")

    @property
    def is_grid(self) -> bool:
        return self.name != "piano-events"

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
