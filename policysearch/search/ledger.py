"""The wall time every process spent on each phase of a run, kept in ``RUN_DIR/ledger.json``.

A search stopped (Ctrl-C, a killed driver, a lost machine) and continued with ``--resume`` is worked on by
several processes; its cost is the sum over all of them, not the last one's wall time. Each process has
its own entry per phase: the seconds from when it entered the phase to the last moment it recorded -
every finished trial of the phase, the next phase's start (or the last phase's decision), or a Ctrl-C
(:meth:`Ledger.stopped`). A process
killed in the middle keeps the time up to its last finished trial. The device seconds need no ledger:
they are the trials' own seconds, and a resumed experiment keeps every finished trial's. Ray is not
imported here.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from pathlib import Path

from policysearch.atomic import write_json_atomic

__all__ = ["LEDGER_FILE", "Ledger"]

LEDGER_FILE = "ledger.json"


class Ledger:
    """The phases' wall seconds per process of one run; this process's entries are updated as it works."""

    def __init__(self, run_dir: Path, process: str | None = None) -> None:
        self.path = Path(run_dir) / LEDGER_FILE
        self.process = process or f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.phases: dict[str, dict[str, float]] = {}  # phase -> process -> seconds
        self.lost = ""  # why the earlier processes' seconds are missing (an unreadable ledger), else empty
        if self.path.is_file():
            try:
                document = json.loads(self.path.read_text(encoding="utf-8"))
                self.phases = {str(p): {str(k): float(v) for k, v in per.items()} for p, per in document["wall_s"].items()}
                lost = document.get("lost")  # an earlier process's loss stays said
                self.lost = lost if isinstance(lost, str) else ""
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                self.phases = {}  # unreadable: this process's own entries still count
                why = f"no {exc}" if isinstance(exc, KeyError) else (str(exc).splitlines() or [type(exc).__name__])[0]
                self.lost = (f"{LEDGER_FILE} could not be read ({why}): the phases' wall seconds leave out the "
                             "processes that worked on the run before it")
        self._started: dict[str, float] = {}
        self._current: str | None = None

    def start(self, phase: str) -> None:
        """This process enters ``phase`` now, which ends the phase it was in: a phase's seconds run to the
        next one's start, so the driver's work between two phases (the domain fit after phase 1) counts
        whether or not a Ctrl-C falls in it."""
        if self._current is not None:
            self.record(self._current)
        self._started[phase] = time.monotonic()
        self._current = phase
        self.record(phase)

    def stopped(self) -> None:
        """A Ctrl-C stops this process: save its seconds in the phase it is in, up to now. A failed write is
        left unsaid (the time up to the last record stays), so that the stop's own message is what shows."""
        if self._current is not None:
            with contextlib.suppress(OSError):
                self.record(self._current)

    def record(self, phase: str) -> None:
        """Save this process's seconds in ``phase`` so far (after each finished trial and at the phase's end)."""
        if phase not in self._started:
            return
        self.phases.setdefault(phase, {})[self.process] = time.monotonic() - self._started[phase]
        write_json_atomic(self.path, {"wall_s": self.phases, **({"lost": self.lost} if self.lost else {})})

    def wall(self, phase: str) -> float:
        """Seconds spent in ``phase`` by every process that worked on it."""
        return sum(self.phases.get(phase, {}).values())

    def processes(self) -> int:
        """How many processes worked on the run's phases."""
        return len({process for per in self.phases.values() for process in per})
