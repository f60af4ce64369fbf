"""scripts/gpu_check.sh and scripts/gpu_search_slice.py are ready for a GPU machine: the shell script parses,
and the slice runs end to end on the CPU (--dry-run) and writes its figures as JSON."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from _scripts import load_file

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def test_gpu_check_script_parses_and_is_executable():
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash on this machine")
    script = SCRIPTS / "gpu_check.sh"
    subprocess.run([bash, "-n", str(script)], check=True, timeout=30)
    assert os.access(script, os.X_OK)
    text = script.read_text()
    for needed in ("-k cuda", "bench_transform.py", "gpu_search_slice.py", "summary.json"):
        assert needed in text


@pytest.mark.slow
def test_search_slice_dry_run_writes_both_phases(tmp_path, capsys):
    slice_script = load_file(SCRIPTS / "gpu_search_slice.py", "gpu_search_slice")
    assert slice_script.main(["--dry-run", "--model", "small_cnn", "--data", str(tmp_path / "absent"),
                              "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "gpu_search_slice.json").read_text())
    assert report["dry_run"] and report["device"] == "cpu"
    assert report["data"].startswith("random uint8 images")
    for phase in ("phase1", "phase2"):
        assert report[phase]["img_per_s"] > 0 and report[phase]["images"] > 0
        assert report[phase]["gpu_wait_fraction"] is None  # measured on CUDA only
    assert len(report["phase2"]["accuracies"]) == 2
    assert "wrote" in capsys.readouterr().out
