"""Loading a preset for the live engine: how long it takes, and that it never pulls in torch."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import presetkit
from sidl.realtime.preset.store import find_presets, shipped_preset_dir
from sidl.realtime.preset import load_preset

SANITY_S = 2.0          # a generous bound; the target (200 ms) is measured and printed, not asserted


def timed_loads(folder: Path, n: int = 5) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        p = load_preset(folder)
        times.append(time.perf_counter() - t0)
        assert p.encode_bar(np.zeros((p.codec.steps_per_bar, p.codec.channels), np.float32))[0].shape[0] == 4
    return times


@pytest.mark.parametrize("kind", ["drums", "piano"])
def test_load_time(kind):
    folder = presetkit.preset_dir(kind)
    times = timed_loads(folder)
    size = sum(f.stat().st_size for f in folder.iterdir())
    print(f"\nload {folder.name} ({size / 1000:.0f} kB): first {times[0] * 1e3:.1f} ms, "
          f"median {np.median(times) * 1e3:.1f} ms, max {max(times) * 1e3:.1f} ms")
    assert max(times) < SANITY_S


def test_shipped_presets_load():
    """Whatever is shipped in presets/ loads, verifies and is within its size target."""
    limits = {"drums-gmd": 300_000, "piano-pop909": 1_000_000, "piano-asap": 2_000_000}
    shipped = [p for p in sorted(shipped_preset_dir().glob("*/preset.json"))]
    for manifest in shipped:
        folder = manifest.parent
        times = timed_loads(folder, 3)
        size = sum(f.stat().st_size for f in folder.iterdir())
        print(f"\nshipped {folder.name}: {size / 1000:.0f} kB, load median {np.median(times) * 1e3:.1f} ms")
        assert size <= limits.get(folder.name, 1_000_000)
        assert max(times) < SANITY_S
    assert all(find_presets().get(m.parent.name) for m in shipped)


def test_live_path_never_imports_torch():
    """In a fresh interpreter: import the preset module and the CLI, load a preset, run a bar."""
    folder = presetkit.preset_dir("drums")
    code = f"""
import sys, time, numpy as np
t0 = time.perf_counter()
import sidl.realtime.preset as preset, sidl.realtime.cli, sidl.export.atoms
t1 = time.perf_counter()
p = preset.load_preset({str(folder)!r})
t2 = time.perf_counter()
idx, val = p.encode_bar(np.zeros((16, 27), np.float32), 2)
y = p.decode_bar(idx, val)
heavy = sorted(m for m in ("torch", "onnx", "onnxscript") if m in sys.modules)
print(heavy, f"imports {{(t1 - t0) * 1e3:.0f}} ms, cold load {{(t2 - t1) * 1e3:.0f}} ms")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    print("\nfresh process:", r.stdout.strip())
    assert r.stdout.startswith("[]"), r.stdout
