"""The scripts in examples/ run, briefly, so that they never rot.

Each runs once as a script in a fresh interpreter (the way a user runs it); the other cases call its
``main(argv)`` in this process, which skips the interpreter and import start-up.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from policysearch.augment.standard import randaugment_policy
from _scripts import load_file

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ["train_dataloader.py", "train_batches.py"]
TINY = ["--epochs", "2", "--steps", "2", "--train-size", "64", "--batch-size", "16", "--size", "16"]


def load_example(name: str):
    return load_file(ROOT / "examples" / name, f"example_{Path(name).stem}")


def check_output(text: str, policy_name: str) -> None:
    lines = text.splitlines()
    assert lines[0].startswith(f"policy {policy_name}")
    assert [line.split(":")[0] for line in lines[1:3]] == ["epoch 1", "epoch 2"]
    assert "over 32 images" in lines[1]  # 2 steps of 16
    assert lines[-1].startswith("test accuracy ")


@pytest.mark.slow
@pytest.mark.parametrize("name, extra", [
    ("train_dataloader.py", ["--workers", "1"]),  # the transform travels to a loader worker process
    ("train_batches.py", ["--device", "cpu"]),
])
def test_example_runs_as_a_script_with_a_policy_file(tmp_path, name, extra):
    path = randaugment_policy(1, 5).save(tmp_path / "policy.json")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, str(ROOT / "examples" / name), "--policy", str(path), *TINY, *extra],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    check_output(result.stdout, "randaugment:n=1,m=5")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_takes_a_policy_string(capsys, name):
    assert load_example(name).main(["--policy", "autoaugment:svhn", *TINY]) == 0
    check_output(capsys.readouterr().out, "autoaugment:svhn")


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_reports_a_bad_policy_in_one_line(capsys, name):
    with pytest.raises(SystemExit) as info:
        load_example(name).main(["--policy", "randaugment:n=2,m=x", *TINY])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith("error: randaugment:n=2,m=x: m='x' is not a number")


def test_batches_on_a_gpu_that_is_not_there_is_one_line(capsys, monkeypatch):
    """Regression: ``--device cuda`` (the README's command) without a GPU was a traceback from torch."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as info:
        load_example("train_batches.py").main(["--device", "cuda", *TINY])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        "error: --device cuda: CUDA is not available here; use --device cpu")


def test_the_examples_learn_with_their_defaults(capsys):
    """Regression: the README's commands (3 epochs of a CNN without normalisation) stayed at chance, 0.09 test
    accuracy, so a new user would blame the policy. The defaults now learn: well above chance (0.1) after
    a quarter of their epochs."""
    load_example("train_dataloader.py").main(["--policy", "identity", "--epochs", "5"])
    accuracy = float(capsys.readouterr().out.splitlines()[-1].rsplit(" ", 1)[1])
    assert accuracy > 0.5


@pytest.mark.slow
def test_search_own_model_searches_a_torch_and_a_hugging_face_dataset_then_trains(tmp_path):
    # As a script: TinyNet lives in __main__, so Ray's workers get it by value, as a user's would.
    pytest.importorskip("datasets", reason="the Hugging Face half needs `datasets` (the test extra installs it)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "search_own_model.py"), "--quick",
                             "--out", str(tmp_path / "runs")], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith(("torch:", "hf:"))]
    assert [line.split(":")[0] for line in lines] == ["torch", "hf"], result.stdout[-3000:]
    assert all("test accuracy " in line for line in lines)
    summaries = [line for line in result.stdout.splitlines() if line.startswith(("policy: ", "why: "))]
    assert len(summaries) == 4  # each search's own summary, once
    assert all((tmp_path / "runs" / source / "policy.json").is_file() for source in ("torch", "hf"))
    assert "Traceback" not in result.stderr
