#!/usr/bin/env python
"""Run the policysearch benchmark (same as ``policysearch benchmark``); see policysearch/benchmark/.

Example: python scripts/benchmark.py --preset digits-small
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Ray workers started by a search import policysearch too: give them this checkout.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)

from policysearch import cli  # noqa: E402


def main() -> int:
    """The ``policysearch benchmark`` command: bad input is one line on stderr, not a traceback."""
    return cli.main(["benchmark", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
