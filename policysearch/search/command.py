"""``policysearch search``: the options (generated from :class:`SearchConfig`) and the command."""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from dataclasses import replace
from pathlib import Path

from policysearch.search import run_search
from policysearch.search.checks import SearchFailed
from policysearch.search.config import SearchConfig, add_config_arguments, given_values
from policysearch.search.interrupts import EXIT_INTERRUPTED, SearchInterrupted
from policysearch.search.report import summary_text
from policysearch.search.rundir import RunError, read_stored_config

__all__ = ["add_arguments", "config_from_args", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``policysearch search`` options (defaults: a digits search that fits in minutes on 2 CPU cores)."""
    add_config_arguments(parser)
    group = parser.add_argument_group("output")
    group.add_argument("--out", default=None, help="run directory (default: runs/search-TIMESTAMP)")
    group.add_argument("--resume", metavar="RUN_DIR", default=None,
                       help="continue the interrupted search in RUN_DIR with its stored settings; options given "
                            "with it must agree with them (--address and --dashboard may change)")


def config_from_args(args: argparse.Namespace) -> SearchConfig:
    """The config of a new search: the defaults, overridden by the options given."""
    return SearchConfig(**given_values(args))


def run(args: argparse.Namespace) -> int:
    """Run or resume a search and print where the policy is; 1 when too many trials failed, 130 (one line
    on stderr: what is kept, the resume command) when Ctrl-C stopped it."""
    if args.resume:
        if args.out:
            raise RunError("--resume RUN_DIR continues a run in its own folder; leave out --out")
        run_dir = Path(args.resume)
        stored, _ = read_stored_config(run_dir)
        config = replace(stored, **given_values(args))  # contradictions are refused by run_search
    else:
        config = config_from_args(args)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path(args.out) if args.out else Path("runs") / f"search-{stamp}"
    try:
        result = run_search(config, run_dir, resume=bool(args.resume))
    except SearchFailed as exc:
        print(f"policysearch: search stopped: {exc}", file=sys.stderr)
        return 1
    except SearchInterrupted as exc:
        sys.stdout.flush()
        print(f"\npolicysearch: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print()
    print(summary_text(result))
    return 0
