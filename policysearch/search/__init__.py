"""Fast AutoAugment search, in the order of the algorithm; ``policysearch.search(data, model=...)``.

This package is also the function :func:`~policysearch.search.api.search` (the module object is callable);
``help(policysearch.search.api.search)`` says what its arguments are, and ``inspect.signature`` names them.

- :mod:`~.config`: everything that defines a search, defined once (the command-line options come from it).
- :mod:`~.phases`: the algorithm, phase by phase, over a trial runner (:mod:`~.runner`):
  :mod:`~.prepare` and :mod:`~.folds` (data, D_M/D_A splits, cross-fit folds), :mod:`~.children`
  (phase 1), :mod:`~.domain` (1b, the domain fit), :mod:`~.density` (phase 2, density matching),
  :mod:`~.candidates`, :mod:`~.recipes` and :mod:`~.selection` (phase 3); :mod:`~.export` and
  :mod:`~.report` write ``policy.json`` (last) and the rest.
- Runners: :mod:`~.tuning` with :mod:`~.searcher`, on Ray Tune (the only code that imports Ray), and
  :mod:`~.inprocess`, in this process.
- The run: :mod:`~.rundir` (run id, storage, ``--resume``), :mod:`~.checks` (settings that cannot run,
  failed trials), :mod:`~.interrupts` (Ctrl-C), :mod:`~.reaper` (a local Ray's processes), :mod:`~.ledger`
  (wall time over every process). Importing this package does not import Ray.
"""

from __future__ import annotations

import inspect
import os
import sys
import types
from pathlib import Path
from typing import Any, Callable, TextIO

from policysearch.search.api import kept_environment, search
from policysearch.search.config import SearchConfig
from policysearch.search.outcome import SearchResult
from policysearch.search.prepare import Inputs, Prepared, prepare

__all__ = ["Inputs", "Prepared", "SearchConfig", "SearchResult", "prepare", "run_search", "search"]


def run_search(config: SearchConfig, run_dir: str | Path, *, resume: bool = False,
               stream: TextIO = sys.stdout, inputs: Inputs | None = None,
               stop_text: Callable[[str], str] | None = None) -> SearchResult:
    """Run (or, with ``resume``, continue) a search into ``run_dir``; returns where its policy is.

    Every input and setting problem is raised as a one-line ``ValueError`` before Ray starts (or, when
    joining a cluster, before any trial); too many failed trials raise ``checks.SearchFailed``; Ctrl-C
    raises ``interrupts.SearchInterrupted`` (what is kept, how to continue); ``stop_text`` words the line of
    a stop at once (a second Ctrl-C, SIGTERM), which ends the process, as a caller's. A resume of a finished
    run runs nothing and changes nothing (``already_complete`` on the result). The caller's environment
    variables and ``sys.excepthook`` are as they were afterwards (:func:`kept_environment`).
    """
    with kept_environment():
        if not config.address:
            # A new local Ray uses token authentication by default and says so in a warning on every start;
            # asking for it explicitly (before Ray is imported, which reads it then, and before its processes
            # start) keeps the same security quietly.
            os.environ.setdefault("RAY_AUTH_MODE", "token")
        from policysearch.search.tuning import run_search as run_on_ray

        return run_on_ray(config, run_dir, resume=resume, stream=stream, inputs=inputs, stop_text=stop_text)


class _CallableModule(types.ModuleType):
    """The type of this package's module object: calling it calls :func:`~policysearch.search.api.search`.

    ``policysearch.search`` is this subpackage as soon as any of it is imported (the import system sets the
    attribute), so the function ``policysearch.search(...)`` is the module itself, called.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> SearchResult:
        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
__signature__ = inspect.signature(search)  # the called module's: inspect reads it from the module object
