"""scripts/bench_layouts.py: the four layouts measured on one batch, with the command in the JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _scripts import load_file

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_layouts.py"


def test_a_small_run_prints_and_writes_every_layout(tmp_path, capsys):
    out = tmp_path / "layouts.json"
    argv = ["--size", "8", "--batch", "4", "--repeats", "1", "--threads", "1", "--json", str(out)]
    assert load_file(SCRIPT, "bench_layouts").main(argv) == 0
    printed = capsys.readouterr().out
    document = json.loads(out.read_text())
    assert document["command"] == "scripts/bench_layouts.py " + " ".join(argv)
    for layout in ("uint8", "uint8 channels_last", "float32", "float32 channels_last"):
        row = document["layouts"][layout]
        assert row["ms_per_batch"] > 0 and f"{row['ms_per_batch']:.1f} ms per batch" in printed
    assert document["layouts"]["uint8"]["times_uint8"] == 1.0


def test_a_size_below_one_is_refused(capsys):
    with pytest.raises(SystemExit) as stop:
        load_file(SCRIPT, "bench_layouts").main(["--size", "0"])
    assert stop.value.code == 2 and "--size: must be at least 1, got 0" in capsys.readouterr().err
