"""``policysearch search``: the options (generated from :class:`SearchConfig`) and the command, a thin layer over
:func:`policysearch.search.api.search`."""

from __future__ import annotations

import argparse
import sys

from policysearch.search.api import search
from policysearch.search.checks import SearchFailed
from policysearch.search.config import SettingsError, add_config_arguments, given_values
from policysearch.search.interrupts import EXIT_INTERRUPTED, SearchInterrupted, stop_line
from policysearch.search.rundir import RunError
from policysearch.wording import WordedError, flag_mention

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``policysearch search`` options (defaults: a digits search that fits in minutes on 2 CPU cores)."""
    add_config_arguments(parser)
    group = parser.add_argument_group("output")
    group.add_argument("--out", default=None, help="run directory (default: runs/search-TIMESTAMP-XXXX)")
    group.add_argument("--resume", metavar="RUN_DIR", default=None,
                       help="continue the interrupted search in RUN_DIR with its stored settings; options given "
                            "with it must agree with them (--address and --dashboard may change); resume only "
                            "folders you trust: Tune's state in them is a Python pickle")


def run(args: argparse.Namespace) -> int:
    """Run or resume a search and print where the policy is; 1 when too many trials failed, 130 (one line
    on stderr: what is kept, the resume command) when Ctrl-C stopped it."""
    for name, value in (("--resume", args.resume), ("--out", args.out)):
        if value is not None and not value.strip():  # an unset shell variable, say: never the current folder
            raise RunError(f"{name} is empty; give a run directory")
    if args.resume and args.out:
        raise RunError("--resume RUN_DIR continues a run in its own folder; leave out --out")
    given = given_values(args)  # a resume keeps the stored value of every option not given
    try:
        result = search(given.pop("dataset", None), model=given.pop("model", None), out=args.resume or args.out,
                        resume=bool(args.resume), **given)
    except SettingsError as exc:  # worded by the API, which names keyword arguments: here the flags
        raise SettingsError(exc.problems) from None
    except WordedError as exc:
        raise exc.worded(flag_mention) from None
    except SearchFailed as exc:
        print(f"policysearch: search stopped: {exc}", file=sys.stderr)
        return 1
    except SearchInterrupted as exc:
        sys.stdout.flush()
        print(stop_line(str(exc)), file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0  # search() printed the summary
