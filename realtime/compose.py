"""One bar of output from one bar of input: encode -> edit -> decode, under the current controls.

This is the engine's compute on the live path, and it is pure given its inputs and the little state
it carries from bar to bar (the current groove and the seeded generator), so tests can run hundreds
of bars without a clock or a port.

The model is injected: anything with

    codec       : Codec                             what a bar array means
    k           : int                               winners per code position used live
    usage       : (n_atoms, positions) float        meter prior: atom use per position of the bar
    transitions : (n_atoms, n_atoms) float          meter prior: atom -> next-position atom
    encode_bar(x: (steps, channels) float32, k) -> (idx, val), each (positions, k)
    decode_bar(idx, val) -> (steps, channels) float32
    atom_scale  : (n_atoms,) float, optional        typical value of each atom (default 1.0)
    meter_priors: {"3/4": (usage, transitions | None)}, optional   priors learned in other meters
    entry_atoms(idx) -> atom, optional               the prior's atom of a code entry, -1: none

A preset loaded by ``sidl.realtime.preset`` provides it; tests use a small numpy stand-in.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from .codec.convert import decode_steps, encode_steps
from .controls import Controls
from .edit import keep_top_atoms, last_atom, n_active, prior_cdf, stitch_bar, swap_atoms, vary_atoms
from .codec.spec import Codec
from .metrical import BarPrior, choose_prior
from .codec.notes import NoteArray


class BarModel(Protocol):
    codec: Codec
    k: int
    usage: np.ndarray
    transitions: np.ndarray

    def encode_bar(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def decode_bar(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray: ...


def default_mode(codec: Codec) -> str:
    """Drum presets generate by default; piano presets simplify what is played."""
    return codec.spec.live_mode


class Composer:
    """Composes bars for ``model`` in ``meter`` (default: the preset's own).

    In another meter than the preset's, code positions keep their length (``stride`` steps) and the
    prior is the one the preset learned in that meter, else one built from its own by metrical
    strength (``sidl.realtime.metrical``; ``prior_note`` says which). ``prior``: "auto", "fallback",
    "cyclic" (the old reading: position p of a 3/4 bar used the 4/4's position p) or a ``BarPrior``.
    All of it is worked out here, once: a bar only reads it.
    """

    def __init__(self, model: BarModel, meter: tuple[int, int] | None = None,
                 prior: str | BarPrior = "auto"):
        self.model = model
        self.codec = model.codec if meter is None else model.codec.with_meter(*meter)
        self.steps = self.codec.steps_per_bar
        trained_positions = model.usage.shape[1]
        stride, rest = divmod(model.codec.steps_per_bar, trained_positions)
        if rest or self.steps % stride:
            raise ValueError(f"meter {self.codec.beats_per_bar}/{self.codec.beat_unit} does not fit "
                             f"this preset's atoms of {stride} steps")
        self.stride = stride
        self.positions = self.steps // stride
        self.prior = prior if isinstance(prior, BarPrior) else choose_prior(model, self.codec, stride, prior)
        if self.prior.usage.shape != (model.usage.shape[0], self.positions):
            raise ValueError(f"a {self.codec.meter} prior needs usage ({model.usage.shape[0]}, {self.positions}), "
                             f"got {self.prior.usage.shape}")
        self.usage = self.prior.usage
        self.transitions = self.prior.transitions
        self.usage_cdf = prior_cdf(self.usage)
        self.scale = getattr(model, "atom_scale", None)
        self._entry_atoms = getattr(model, "entry_atoms", lambda entry: entry)
        self.atoms_in_use = 0                 # of the last bar, for the status line
        self.reset()

    @property
    def prior_note(self) -> str:
        """Whose meter prior this is, in one line (banners and status lines)."""
        return self.prior.note

    def reset(self) -> None:
        """Forget the groove (mode, preset or seed change)."""
        self._rng: np.random.Generator | None = None
        self._seed: int | None = None
        self._groove = None                   # (density, idx, val) the generated bars vary on
        self._prev_atom: int | None = None

    def compose(self, bar: int, played: NoteArray, c: Controls, position: int | None = None) -> NoteArray:
        """Notes for bar ``bar`` (in steps from its start) given the bar ``played`` before it (steps).

        With ``position`` (simplify / echo only): notes for that one code position of the bar, given
        the position played before it; ``keep`` then counts per position, ``keep / positions``.
        """
        if c.seed != self._seed:
            self._rng, self._seed, self._groove = np.random.default_rng(c.seed), c.seed, None
        if position is not None and c.mode == "generate":
            raise ValueError("generate composes whole bars")
        steps = self.steps if position is None else self.stride
        x_in = None
        if len(played) and (c.mode != "generate" or c.follow):   # plain generate never reads it
            x_in = encode_steps(self.codec, played, steps)
        if c.mode == "generate":
            idx, val = self._answer(x_in, c) if (c.follow and x_in is not None) else self._generate(bar, c)
        elif x_in is None:                    # simplify / echo of silence is silence
            self.atoms_in_use = 0
            return NoteArray.empty()
        else:
            idx, val = self.model.encode_bar(x_in, self.model.k)
            if c.mode == "simplify":
                keep = c.keep if position is None else max(1, round(c.keep / self.positions))
                idx, val = keep_top_atoms(idx, val, keep)
        self.atoms_in_use = n_active(val)
        prev = last_atom(idx, val)
        # A shapes preset's encoder answers with placements (a shape at a key and step), a drum-feel
        # preset's with atoms at feel levels, numbered past the atoms; the prior that continues the
        # bar only knows atoms (the model's entry_atoms says which, -1: none).
        prev = None if prev is None else int(self._entry_atoms(prev))
        self._prev_atom = prev if prev is not None and 0 <= prev < len(self.usage) else None
        y = self.model.decode_bar(idx, val)
        if c.mode == "simplify":
            y = keep_velocities(y, x_in, self.codec.n_voices)
        return decode_steps(self.codec, y, quantize=c.quantize)

    def _generate(self, bar: int, c: Controls):
        rng, usage = self._rng, self.usage
        if self._groove is None or self._groove[0] != c.density:
            idx, val = stitch_bar(rng, usage, self.transitions, c.density, self._prev_atom, self.scale)
            self._groove = (c.density, idx, val)
        _, idx, val = self._groove
        idx, val = vary_atoms(idx, val, rng, c.variation, usage, self.usage_cdf, self.scale)
        if c.fill_every and (bar + 1) % c.fill_every == 0:
            # A fill: the second half of the bar restitched, busier, continuing from the first half.
            half = self.positions // 2
            f_idx, f_val = stitch_bar(rng, usage[:, half:], self.transitions, min(c.density + 1.0, 4.0),
                                      last_atom(idx[:half], val[:half]), self.scale)
            k = max(idx.shape[1], f_idx.shape[1])
            (idx, val), (f_idx, f_val) = _pad(idx, val, k), _pad(f_idx, f_val, k)
            idx[half:], val[half:] = f_idx, f_val
        return idx, val

    def _answer(self, x_in: np.ndarray, c: Controls):
        """--follow: the played bar's strongest atoms, shuffled and mutated by ``variation``."""
        idx, val = self.model.encode_bar(x_in, self.model.k)
        idx, val = keep_top_atoms(idx, val, c.keep)
        idx, val = swap_atoms(idx, val, self._rng, c.variation / 2)
        return vary_atoms(idx, val, self._rng, c.variation, self.usage, self.usage_cdf)


def keep_velocities(y: np.ndarray, x: np.ndarray, n_voices: int) -> np.ndarray:
    """Where the decoded bar ``y`` and the played bar ``x`` both hit, use the played velocity."""
    y = y.copy()
    both = (y[:, :n_voices] > 0.5) & (x[:, :n_voices] > 0.5)
    vel = y[:, n_voices:2 * n_voices]
    vel[both] = x[:, n_voices:2 * n_voices][both]
    return y


def _pad(idx: np.ndarray, val: np.ndarray, k: int):
    """Widen a code to at least ``k`` columns with empty slots."""
    if idx.shape[1] >= k:
        return idx, val
    extra = k - idx.shape[1]
    return (np.pad(idx, ((0, 0), (0, extra))), np.pad(val, ((0, 0), (0, extra))))
