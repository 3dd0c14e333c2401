"""Drum feel carried by the code: each entry of a drum code says how hard and how late its atom plays.

An atom is a one-beat hit pattern with a feel template (each hit's typical velocity and offset).
Played as it is, every beat of one atom sounds the same, which is a metrical template and no more
(issue 15: velocity error 24.7 against the template's 25.9). So a code entry of a drum-feel preset
(schema 3) also carries two small levels, packed into its index with the atom::

    idx = atom + n_atoms * (gain + GAIN_LEVELS * timing)

- ``gain`` scales the atom's velocities (``GAINS[gain]``: an accent, a ghost beat, a section getting
  louder), fit by the encoder to the played velocities of the hits the entry sounds;
- ``timing`` sets the mean offset of those hits (``OFFSETS[timing]``, in steps: a laid-back or a
  pushed beat), the template's offsets of one hit against another kept.

Level 0 of both is the atom as it is (gain 1, its own timing), so a plain atom index is a valid
code: generated and varied bars, old codes and edits that only know atoms need no levels.
Each decoded hit takes the feel of the entry that sounds it loudest.
"""
from __future__ import annotations

import numpy as np

GAIN_LEVELS = 32
TIMING_LEVELS = 16
FEEL_CODES = GAIN_LEVELS * TIMING_LEVELS       # per atom
# gain 0 is 1 (the template); the others span a ghost beat to an accent, ~8% apart
GAINS = np.concatenate([[1.0], np.geomspace(0.25, 2.5, GAIN_LEVELS - 1)]).astype(np.float32)
# timing 0 keeps the atom's own offsets; the others set the entry's mean offset, 0.05 steps apart
OFFSETS = np.concatenate([[0.0], np.linspace(-0.35, 0.35, TIMING_LEVELS - 1)]).astype(np.float32)


def code_atom(idx, n_atoms: int):
    """The atom of each code entry (an int or an int array)."""
    return idx % n_atoms


def feel_levels(idx, n_atoms: int):
    """(gain level, timing level) of each code entry; 0, 0 for a plain atom index."""
    f = idx // n_atoms
    return f % GAIN_LEVELS, f // GAIN_LEVELS


def pack(atom, gain, timing, n_atoms: int):
    """The code entry of ``atom`` played at feel levels ``gain`` and ``timing``."""
    return atom + n_atoms * (gain + GAIN_LEVELS * timing)
