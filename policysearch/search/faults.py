"""Fault injection for the tests of failure handling and resume: off unless an environment variable asks.

``POLICYSEARCH_TEST_FAULTS`` holds ``;``-separated faults ``ACTION@POINT[:key=value,...]``:

- ``raise@child:split=1``: the child training of split 1 raises ``RuntimeError("CUDA out of memory ...")``
  on every attempt; points ``child``, ``score`` (keys ``split``, ``repeat``, ``index``: the index-th
  suggestion of that split and repeat), ``probe`` (key ``split``; the probe runs in the child's trial, so a fault there fails that child) and ``select`` (keys ``fold``, ``index``: the recipe's place among the candidates);
- ``pause@score:split=0,index=2``: that trial blocks until its process is killed;
- every point also matches ``node`` (the Ray node id a trial runs on): ``pause@score:node=ID`` blocks
  every phase-2 trial on that node, which lets a test kill the node in the middle of phase 2;
- ``kill@export:after=candidates.json``: the driver SIGKILLs itself right after writing that file.

``POLICYSEARCH_TEST_FAULT_LOG`` names a file that gets one line per triggered fault (to count attempts).
The driver reads both once when a search starts and hands the parsed faults to the trials as an
argument, so workers need no environment of their own.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

ENV, LOG_ENV = "POLICYSEARCH_TEST_FAULTS", "POLICYSEARCH_TEST_FAULT_LOG"
ACTIONS = ("raise", "pause", "kill")
POINTS = ("child", "probe", "score", "select", "export")


@dataclass(frozen=True)
class Fault:
    """One injected fault: do ``action`` when the search reaches ``point`` with every ``match`` item equal."""

    action: str
    point: str
    match: tuple[tuple[str, str], ...] = ()

    def applies(self, point: str, context: Mapping[str, Any]) -> bool:
        return self.point == point and all(str(context.get(key)) == value for key, value in self.match)


@dataclass(frozen=True)
class Faults:
    """The faults of one search (usually none) and where to log them."""

    faults: tuple[Fault, ...] = ()
    log: str | None = None
    where: tuple[tuple[str, str], ...] = ()  # context of every point, e.g. the node a trial runs on

    def at(self, **where: Any) -> "Faults":
        """These faults with ``where`` added to the context of every point they reach."""
        return Faults(self.faults, self.log, (*self.where, *((k, str(v)) for k, v in where.items())))

    def reach(self, point: str, **context: Any) -> None:
        """Run the faults that apply at ``point``; without any, nothing happens."""
        context = {**dict(self.where), **context}
        for fault in self.faults:
            if not fault.applies(point, context):
                continue
            if self.log:
                with open(self.log, "a", encoding="utf-8") as handle:
                    handle.write(f"{fault.action}@{point} {sorted(context.items())}\n")
            if fault.action == "raise":
                raise RuntimeError(f"CUDA out of memory (injected by {ENV} at {point} {dict(context)})")
            if fault.action == "pause":
                threading.Event().wait()  # until the process is killed
            if fault.action == "kill":
                os.kill(os.getpid(), signal.SIGKILL)


def parse_faults(text: str, log: str | None = None) -> Faults:
    """Parse ``POLICYSEARCH_TEST_FAULTS`` text; a malformed entry is a one-line ValueError."""
    faults = []
    for entry in filter(None, (part.strip() for part in text.split(";"))):
        head, _, rest = entry.partition(":")
        action, _, point = head.partition("@")
        if action not in ACTIONS or point not in POINTS:
            raise ValueError(f"{ENV}: {entry!r} is not ACTION@POINT[:key=value,...] with ACTION in "
                             f"{', '.join(ACTIONS)} and POINT in {', '.join(POINTS)}")
        match = []
        for item in filter(None, rest.split(",")):
            key, equals, value = item.partition("=")
            if not equals or not key:
                raise ValueError(f"{ENV}: {entry!r}: {item!r} is not key=value")
            match.append((key.strip(), value.strip()))
        faults.append(Fault(action, point, tuple(match)))
    return Faults(tuple(faults), log)


def faults_from_env(environ: Mapping[str, str] = os.environ) -> Faults:
    """The faults the environment asks for (none when ``POLICYSEARCH_TEST_FAULTS`` is unset)."""
    log = environ.get(LOG_ENV) or None
    return parse_faults(environ.get(ENV, ""), str(Path(log).resolve()) if log else None)
