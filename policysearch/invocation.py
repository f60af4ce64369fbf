"""The command line of this process, written as one that runs it again: the provenance results files carry."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

__all__ = ["command_line"]


def command_line() -> str:
    """``python -m policysearch ...`` for the module (whose argv[0] is its ``__main__.py``), ``policysearch ...``
    for the installed command, else the program as it was run (a script), each argument shell-quoted."""
    program, *rest = sys.argv or [""]
    name = Path(program).name
    if name == "__main__.py" and Path(program).parent.name == "policysearch":
        return shlex.join(["python", "-m", "policysearch", *rest])
    return shlex.join([name if name == "policysearch" else program, *rest])
