"""The package's layers hold: import-linter's contracts in pyproject.toml (layers, the library's
independence, Ray only in the search's adapter, no import cycles) are kept by this checkout."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    beside = Path(sys.executable).with_name("lint-imports")  # the console script of this environment
    script = str(beside) if beside.exists() else shutil.which("lint-imports")
    assert script, "lint-imports is missing: pip install import-linter (the 'test' extra has it)"
    # This checkout's package first, whatever copy of policysearch the environment has installed.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    result = subprocess.run([script, "--no-cache", "--no-logo"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
