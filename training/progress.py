"""What a training run shows while it runs: a live bar with an ETA on a terminal, one line per epoch elsewhere.

On a TTY, rich draws the bar (time or steps done, loss, elapsed and remaining time) and redraws it
in place. Anywhere else (a log file, CI, a pipe) a carriage-return bar would pile every redraw into
one endless line, so each finished epoch prints one plain line instead.
"""
from __future__ import annotations

import sys
import time


class TrainingProgress:
    """``p = TrainingProgress(total, unit, log)``; ``p.step(done, text)`` as the run goes,
    ``p.epoch(done, line)`` after each epoch, ``p.close()`` at the end.

    ``total`` is the budget in seconds (``unit="s"``) or in steps (``unit="steps"``); ``done`` is
    how much of it is spent. No thread is started: the bar is redrawn from ``step``, at most ten
    times a second, so a run that fails midway leaves nothing running behind it.
    """

    REDRAW_S = 0.1

    def __init__(self, total: float, unit: str, log=None, tty: bool | None = None):
        self.total, self.unit = max(float(total), 1e-9), unit
        self.log = log or sys.stderr
        isatty = getattr(self.log, "isatty", None)
        self.tty = bool(isatty and isatty()) if tty is None else tty
        self._bar = self._task = None
        self._drawn = 0.0
        if self.tty:
            from rich.console import Console
            from rich.progress import (BarColumn, Progress, TaskProgressColumn, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)
            self._bar = Progress(TextColumn("training"), BarColumn(), TaskProgressColumn(),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                 TextColumn("{task.fields[text]}"),
                                 console=Console(file=self.log), auto_refresh=False)
            self._task = self._bar.add_task("training", total=self.total, text="")
            self._bar.start()

    def step(self, done: float, text: str | None = None) -> None:
        """Progress within an epoch (drawn only on a terminal)."""
        if self._bar is None:
            return
        fields = {} if text is None else {"text": text}
        self._bar.update(self._task, completed=min(done, self.total), **fields)
        now = time.monotonic()
        if now - self._drawn >= self.REDRAW_S:
            self._drawn = now
            self._bar.refresh()

    def epoch(self, done: float, line: str) -> None:
        """An epoch ended: redraw the bar with ``line``, or print ``line`` with how far the run is."""
        if self._bar is not None:
            self._bar.update(self._task, completed=min(done, self.total), text=line)
            self._bar.refresh()
            return
        spent = f"{done:.0f}/{self.total:.0f} s" if self.unit == "s" else f"step {done:.0f}/{self.total:.0f}"
        print(f"{min(1.0, done / self.total):4.0%} {spent}  {line}", file=self.log, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
