"""Progress of a search phase: a live bar on a terminal, a few lines per phase in a log.

On a TTY each phase gets one ``tqdm`` bar (trials done of total, the best score so far, elapsed and
remaining time). In a log or CI (no TTY) a phase prints a line when its first trial finishes, at each
quarter and at the end, and one for every failed trial - never one per trial.

A resumed phase (:meth:`Progress.resumed`) starts from the trials finished before: it counts them, says
so in one line, and its elapsed and remaining times are this process's own (the remaining time from the
trials this process finished; none after the first, which paid for the start-up).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

__all__ = ["Progress"]


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """Counts the finished trials of one phase and shows them (see the module docstring)."""

    def __init__(self, label: str, total: int, metric: str | None, stream: TextIO = sys.stdout) -> None:
        self.label, self.total, self.metric, self.stream = label, total, metric, stream
        self.done, self.best, self.started = 0, -math.inf, time.monotonic()
        self.before = 0  # trials finished by earlier processes (a resumed phase)
        self.milestones = {1, total, *(math.ceil(total * k / 4) for k in (1, 2, 3))}
        self._bar: Any = None

    def resumed(self, done: int, best: float | None = None) -> None:
        """The phase continues with ``done`` trials finished before (``best``: the best metric among them)."""
        self.done = self.before = done
        if best is not None and best == best:
            self.best = max(self.best, float(best))
        self.started = time.monotonic()
        if not done:
            return
        if self._live():
            self._open_bar(done)
            self._bar.refresh()
        else:
            print(f"[{self.label}] resumed: {done}/{self.total} trials finished before{self._best_text('  ')}",
                  file=self.stream, flush=True)

    def _best_text(self, lead: str = "") -> str:
        if self.metric and self.best > -math.inf:
            return f"{lead}best {self.metric} {self.best:.4f}"
        return ""

    def _open_bar(self, initial: int) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=self.total, desc=self.label, unit="trial", file=self.stream, dynamic_ncols=True,
                         initial=initial)
        self._bar.set_postfix_str(self._best_text(), refresh=False)

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment state. A live bar holds a terminal and locks, and the
        # stream may be a notebook's or a test's that cannot be pickled: neither is; a copy prints to sys.stdout.
        return {**self.__dict__, "_bar": None, "stream": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.stream = self.stream or sys.stdout

    def _live(self) -> bool:
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def trial_finished(self, result: dict[str, Any], error: str | None = None) -> None:
        self.done += 1
        if error is None and self.metric and self.metric in result:
            self.best = max(self.best, float(result[self.metric]))
        best = self._best_text()
        if self._live():
            if self._bar is None:
                self._open_bar(self.done - 1)
            self._bar.set_postfix_str(best, refresh=False)
            self._bar.update(1)
            if error:
                self._bar.write(f"[{self.label}] a trial failed: {error}", file=self.stream)
            return
        if self.done in self.milestones or self.done == self.before + 1 or error:
            elapsed = time.monotonic() - self.started
            failed = f"  (a trial failed: {error})" if error else ""
            print(f"[{self.label}] {self.done}/{self.total} trials{'  ' + best if best else ''}  elapsed "
                  f"{_clock(elapsed)}{self._remaining(elapsed)}{failed}", file=self.stream, flush=True)

    def _remaining(self, elapsed: float) -> str:
        """The time left at this process's mean time per finished trial; none after its first trial, whose
        time is mostly the start-up (workers starting, the data sent), which the later ones do not pay."""
        finished = self.done - self.before
        if finished == 1 and self.done < self.total:
            return ""
        return f"  remaining ~{_clock(elapsed / finished * max(0, self.total - self.done))}"

    def close(self) -> None:
        """End the phase's bar (nothing to do in a log)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
