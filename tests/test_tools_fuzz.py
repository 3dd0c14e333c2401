"""500 malformed MIDI files through every file tool: a valid result or a one-line error, quickly."""
from __future__ import annotations

import time


def test_500_malformed_files_never_break_a_tool():
    from sidl.realtime.tools.fuzz import run_cases
    t0 = time.perf_counter()
    result = run_cases(500, seed=11)
    assert result["failures"] == 0, result["first_failures"]
    assert result["cases"] == 500 and result["valid_results"] > 50 and result["one_line_errors"] > 1000
    assert result["slowest_case_s"] < 20 and time.perf_counter() - t0 < 180     # ~30 s on an idle machine
