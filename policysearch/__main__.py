"""``python -m policysearch``: the same as the ``policysearch`` console script."""

import sys

from policysearch.cli import main

if __name__ == "__main__":
    sys.exit(main())
