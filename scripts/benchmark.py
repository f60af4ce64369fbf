#!/usr/bin/env python
"""Run the policysearch benchmark (same as ``policysearch benchmark``); see policysearch/benchmark/.

Example: python scripts/benchmark.py --preset digits-small
"""

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Ray workers started by a search import policysearch too: give them this checkout.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)

from policysearch.benchmark import command  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(prog="benchmark.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    command.add_arguments(parser)
    return command.run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
