"""What a player can change live, and the MIDI CC numbers that change it: one table, one pure function.

``Controls`` is a frozen value: the engine swaps in a new one on each CC and hands the worker a
snapshot with every bar, so the worker never sees a half-applied change.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

MODES = ("generate", "simplify", "echo")
LATENCIES = ("bar", "beat")   # simplify / echo: play each bar on the next bar, or each beat on the next beat
MAX_DENSITY = 4.0        # atoms per code position at CC value 127
MAX_KEEP = 32            # atoms per bar at CC value 127
ALL_NOTES_OFF_CC = 123   # received: a panic, we silence everything we sent; sent: what a panic sends
TEMPO_CC = 28            # the tempo is the clock's, not a control: the engine hands it over (see tempo_of_cc)
TEMPO_MIN_BPM = 60       # CC 28's value 0; 127 is 187 BPM, one BPM a step

# CC number -> (field, what the 0..127 value means). Printed by `sidl-live --help`; keep in sync.
CC_TABLE = {
    20: ("amount", f"generate: density 0..{MAX_DENSITY:g} atoms per beat; "
                   f"simplify and follow: keep 1..{MAX_KEEP} atoms"),
    21: ("variation", "0..1: how much each bar departs from the groove / the played bar"),
    22: ("reroll", "value >= 64: a new seed (a new groove)"),
    23: ("mode", "0-42 generate, 43-85 simplify, 86-127 echo"),
    24: ("follow", ">= 64: answer what is played (generate)"),
    25: ("fill_every", "0: no fills, else a fill every N bars (N = value)"),
    26: ("quantize", ">= 64: no microtiming, every note on the grid"),
    27: ("latency", ">= 64: simplify / echo answer each beat on the next beat, else each bar on the next"),
    TEMPO_CC: ("tempo", f"{TEMPO_MIN_BPM}..{TEMPO_MIN_BPM + 127} BPM (value + {TEMPO_MIN_BPM}): the internal "
                        "clock's tempo, or proposed to an Ableton Link session; ignored with --sync"),
}


@dataclass(frozen=True)
class Controls:
    mode: str = "generate"
    follow: bool = False
    keep: int = 8              # simplify / follow: atoms kept per bar
    density: float = 1.0       # generate: atoms per code position (a beat for the shipped presets)
    variation: float = 0.2     # 0..1
    seed: int = 0
    fill_every: int = 0        # bars; 0 = never
    quantize: bool = False
    latency: str = "bar"       # simplify / echo: "bar" (whole bars, one bar later) or "beat"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.keep < 1:
            raise ValueError("keep must be >= 1")
        if not 0.0 <= self.density <= MAX_DENSITY:
            raise ValueError(f"density must be in 0..{MAX_DENSITY:g}")
        if not 0.0 <= self.variation <= 1.0:
            raise ValueError("variation must be in 0..1")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        if self.fill_every < 0:
            raise ValueError("fill-every must be >= 0")
        if self.latency not in LATENCIES:
            raise ValueError(f"latency must be one of {', '.join(LATENCIES)}, got {self.latency!r}")


def tempo_of_cc(value: int) -> float:
    """The tempo (BPM) CC ``TEMPO_CC`` = ``value`` asks for."""
    return float(TEMPO_MIN_BPM + value)


def apply_cc(c: Controls, control: int, value: int) -> Controls:
    """The controls after CC ``control`` = ``value`` (unchanged for numbers not in ``CC_TABLE``, and
    for ``TEMPO_CC``: the engine gives the tempo to its clock)."""
    field = CC_TABLE.get(control, (None,))[0]
    if field == "amount":
        if c.mode == "simplify" or (c.mode == "generate" and c.follow):   # what keep counts there
            return replace(c, keep=1 + round(value * (MAX_KEEP - 1) / 127))
        return replace(c, density=round(value * MAX_DENSITY / 127, 3))
    if field == "variation":
        return replace(c, variation=round(value / 127, 3))
    if field == "reroll":
        return replace(c, seed=c.seed + 1) if value >= 64 else c
    if field == "mode":
        return replace(c, mode=MODES[min(value * len(MODES) // 128, len(MODES) - 1)])
    if field == "follow":
        return replace(c, follow=value >= 64)
    if field == "fill_every":
        return replace(c, fill_every=value)
    if field == "quantize":
        return replace(c, quantize=value >= 64)
    if field == "latency":
        return replace(c, latency=LATENCIES[value >= 64])
    return c


def cc_help() -> str:
    return "; ".join(f"CC {n}: {text}" for n, (_, text) in CC_TABLE.items()) + f"; CC {ALL_NOTES_OFF_CC}: panic"
