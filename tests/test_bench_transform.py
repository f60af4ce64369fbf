"""scripts/bench_transform.py: a quick run writes every figure the issue asks for, with its command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _scripts import load_file

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_transform.py"


def _script():
    return load_file(SCRIPT, "bench_transform")


@pytest.mark.parametrize("argv, message", [
    (["--repeats", "0"], "--repeats: must be at least 1, got 0"),
    (["--threads", "0"], "--threads: must be at least 1, got 0"),
    (["--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
    (["--json", "{tmp}"], "--json {tmp}: cannot write a file there"),
])
def test_bad_options_are_refused_before_measuring(tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path) for a in argv]
    with pytest.raises(SystemExit) as stop:
        _script().main(["--quick", *argv])
    assert stop.value.code == 2 and message.format(tmp=tmp_path) in capsys.readouterr().err


@pytest.mark.slow
def test_quick_run_writes_paired_ratios_and_targets(tmp_path, capsys):
    bench = _script()
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--no-cuda", "--threads", "2", "--profile", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["command"][-2:] == ["--json", str(out)]
    for size in ("32", "224"):
        figures = report["sizes"][size]
        assert set(figures) == {"tv_pil", "ours_pil", "tv_tensor", "ours_tensor", "batch_cpu"}
        for name, reference in (("ours_pil", "tv_pil"), ("batch_cpu", "tv_pil"), ("ours_tensor", "tv_tensor")):
            ratios = figures[name]["round_ratios"]
            assert len(ratios) == len(figures["tv_pil"]["seconds"]) == 2 and min(ratios) > 0
            assert figures[name]["median_ratio"] == pytest.approx(sorted(ratios)[0] / 2 + sorted(ratios)[1] / 2)
            mine, theirs = figures[name], figures[reference]  # each ratio against its own torchvision path
            assert ratios[0] == pytest.approx((mine["images"] / mine["seconds"][0])
                                              / (theirs["images"] / theirs["seconds"][0]))
        assert report["ratios"][f"tensor_vs_tv_{size}"] == figures["ours_tensor"]["median_ratio"]
        for f in figures.values():  # each path's traffic against the machine's copy bandwidth
            assert f["bandwidth_fraction"] == pytest.approx(
                f["median_img_s"] * f["traffic_bytes_per_image"] / report["copy_bandwidth"]["median_bytes_s"])
        assert figures["tv_pil"]["traffic_bytes_per_image"] == pytest.approx(
            2 * 3 * int(size) ** 2 * report["applied_ops_per_image"])
    assert len(report["load_average"]["start"]) == len(report["load_average"]["end"]) == 3
    assert set(report["env"]) == {"OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "MALLOC_MMAP_THRESHOLD_",
                                  "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD"}
    for figures in report["sizes"].values():  # page faults per call, counted in each round
        for f in figures.values():
            assert len(f["minor_faults"]) == 2 and min(f["minor_faults"]) >= 0
            assert f["minor_faults_per_image"] == pytest.approx(sum(f["minor_faults"]) / 2 / f["images"])
    assert 0.5 < report["applied_ops_per_image"] < 2  # torchvision's CIFAR10 policy: two ops, gated
    for prof, size in zip(report["profile"], (32, 224)):  # time shares of the batched path's parts
        assert prof["size"] == size and "planning" in prof["share"] and "output copy" in prof["share"]
        assert sum(prof["share"].values()) == pytest.approx(1.0)
        assert sum(prof["seconds_per_batch"].values()) == pytest.approx(prof["total_seconds_per_batch"])
        # with 2 threads, each part's speed-up over one thread, from a one-thread profile of the same parts
        assert prof["thread_speedup"] and set(prof["thread_speedup"]) <= set(prof["seconds_per_batch"])
        for name, speedup in prof["thread_speedup"].items():
            assert speedup == pytest.approx(prof["one_thread_seconds_per_batch"][name] / prof["seconds_per_batch"][name])
    assert set(report["targets"]) == {"batch_cpu_vs_tv_32", "batch_cpu_vs_tv_224", "pil_vs_tv_32", "pil_vs_tv_224"}
    assert report["targets"]["batch_cpu_vs_tv_32"]["target"] == 20.0
    assert report["targets"]["batch_cpu_vs_tv_224"]["target"] == 3.0
    for target in report["targets"].values():
        assert target["met"] == (target["measured"] >= target["target"])
    printed = capsys.readouterr().out
    assert "median of rounds" in printed and "wrote" in printed and "from 1 thread" in printed
