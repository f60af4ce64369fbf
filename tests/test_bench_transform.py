"""scripts/bench_transform.py: a quick run writes every figure the issue asks for, with its command."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_transform.py"


@pytest.mark.slow
def test_quick_run_writes_paired_ratios_and_targets(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_transform", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--no-cuda", "--threads", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["command"][-2:] == ["--json", str(out)]
    for size in ("32", "224"):
        figures = report["sizes"][size]
        assert set(figures) == {"tv_pil", "ours_pil", "batch_cpu"}
        for name in ("ours_pil", "batch_cpu"):
            ratios = figures[name]["round_ratios"]
            assert len(ratios) == len(figures["tv_pil"]["seconds"]) == 2 and min(ratios) > 0
            assert figures[name]["median_ratio"] == pytest.approx(sorted(ratios)[0] / 2 + sorted(ratios)[1] / 2)
    assert set(report["targets"]) == {"batch_cpu_vs_tv_32", "batch_cpu_vs_tv_224", "pil_vs_tv_32", "pil_vs_tv_224"}
    for target in report["targets"].values():
        assert target["met"] == (target["measured"] >= target["target"])
    printed = capsys.readouterr().out
    assert "median of rounds" in printed and "wrote" in printed
