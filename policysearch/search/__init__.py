"""Fast AutoAugment search on Ray Tune, in the order of the algorithm; ``policysearch.search(data, model=...)``.

This package is also the function :func:`~policysearch.search.api.search`: ``policysearch.search(...)``
calls it (the package's module object is callable, so the call works however the package was imported).

1. :mod:`~policysearch.search.config`: everything that defines a search, defined once (the command-line
   options are generated from it) with every value check.
2. :mod:`~policysearch.search.trials`: the data is loaded and split K times into D_M and D_A
   (:func:`prepare`); phase 1 trains one child model per split on D_M (:func:`~.trials.train_child`);
   phase 2 scores candidate policies on D_A with the frozen child (:func:`~.trials.score_policy`).
3. :mod:`~policysearch.search.searcher`: phase 2's optimisers, one per split and repeat.
4. :mod:`~policysearch.search.recipes`: phase 1b, the domain fit (which ops and levels keep this data's
   classes, measured with each frozen child at the end of its phase-1 trial), and phase 3, the recipe
   selection: the candidate recipes (:mod:`policysearch.search.candidates`) raced over cross-fit folds at the
   final budget and chosen by the stated rule of :mod:`policysearch.search.selection`.
5. :mod:`~policysearch.search.export` and :mod:`~policysearch.search.report`: ``policy.json`` (last),
   ``candidates.json``, ``trials.csv`` and ``report.md``.

:mod:`~policysearch.search.api` is the entry point from Python (the command line calls it too);
:mod:`~policysearch.search.rundir` gives each run its own id and storage folder and guards ``--resume``;
:mod:`~policysearch.search.checks` says before any work why a setting cannot run, and when failed trials
stop a search. :mod:`~policysearch.search.interrupts` turns Ctrl-C into one line (what is kept, how to
resume), :mod:`~policysearch.search.reaper` ends every process of a local Ray when the search ends (a
watchdog when its driver is killed), and :mod:`~policysearch.search.ledger` adds up the wall time of every
process that worked on a run. :mod:`~policysearch.search.tuning` (with the searcher) is the only code that imports
Ray; importing this package does not, so ``policysearch search --help`` stays fast.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any, TextIO

from policysearch.search.api import search
from policysearch.search.config import SearchConfig
from policysearch.search.outcome import SearchResult
from policysearch.search.prepare import Inputs, Prepared, prepare

__all__ = ["Inputs", "Prepared", "SearchConfig", "SearchResult", "prepare", "run_search", "search"]


def run_search(config: SearchConfig, run_dir: str | Path, *, resume: bool = False,
               stream: TextIO = sys.stdout, inputs: Inputs | None = None) -> SearchResult:
    """Run (or, with ``resume``, continue) a search into ``run_dir``; returns where its policy is.

    Every input and setting problem is raised as a one-line ``ValueError`` before Ray starts (or, when
    joining a cluster, before any trial); too many failed trials raise ``checks.SearchFailed``; Ctrl-C
    raises ``interrupts.SearchInterrupted`` (what is kept, how to continue). A resume of a finished run
    runs nothing and changes nothing (``already_complete`` on the result).
    """
    import os

    if not config.address and "ray" not in sys.modules:
        # A new local Ray uses token authentication by default and says so in a warning on every start;
        # asking for it explicitly (before Ray is imported, which reads it then) keeps the same security quietly.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    from policysearch.search.tuning import run_search as run_on_ray

    return run_on_ray(config, run_dir, resume=resume, stream=stream, inputs=inputs)


class _CallableModule(types.ModuleType):
    """The type of this package's module object: calling it calls :func:`~policysearch.search.api.search`.

    ``policysearch.search`` is this subpackage as soon as any of it is imported (the import system sets the
    attribute), so the function the issue names ``policysearch.search(...)`` is the module itself, called.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> SearchResult:
        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
