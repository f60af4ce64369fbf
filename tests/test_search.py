"""Tests for policysearch.search: input checks, and real searches through a local Ray Tune.

One local Ray (2 CPUs and a pretend GPU) serves the whole test session; ``run_search`` reuses a Ray that
is already running and leaves it running. The resume test runs its search in a separate process, kills
it with SIGKILL in phase 2, and cleans up every process that search started, by id.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from policysearch import search
from policysearch.data import DataError
from policysearch.policy import Policy
from policysearch.spaces import SpaceError

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "policysearch"

# Read by Ray when it starts; the workers (and the resume test's child process) inherit them.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
           "RAY_AIR_NEW_OUTPUT": "0"}

# A search that finishes in about a minute on 2 idle cores: 200 digits, 2 splits, 4 trials each, 1 epoch.
# One concurrent trial, so that the run is deterministic and can be repeated exactly.
SMALL = dict(dataset="digits", train_size=200, splits=2, trials=4, epochs=1, top_n=2, algorithm="optuna",
             seed=3, cpus_per_trial=1.0, max_concurrent=1)


def _worktree_env() -> dict[str, str]:
    """os.environ with this checkout first on PYTHONPATH, so that every process imports this copy of
    policysearch (the venv's editable install may point at another checkout)."""
    env = dict(os.environ, **RAY_ENV)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the session: 2 CPUs, one pretend GPU, no dashboard, a small object store."""
    import ray

    if ray.is_initialized():  # someone else's Ray: use it and leave it running
        yield ray
        return
    saved = dict(os.environ)
    os.environ.update(_worktree_env())
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 1024 * 1024, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        os.environ.clear()
        os.environ.update(saved)


# ----------------------------------------------------------------------------------------------------
# No Ray needed
# ----------------------------------------------------------------------------------------------------


def test_only_search_imports_ray():
    importers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            if any(name == "ray" or name.startswith("ray.") for name in names):
                importers.append(path.relative_to(REPO).as_posix())
    assert importers, "the AST walk found no Ray import at all; is the test still looking at the package?"
    assert set(importers) == {"policysearch/search.py"}


def _space_with_unknown_op(tmp_path: Path) -> str:
    path = tmp_path / "bad_space.yaml"
    path.write_text("name: bad\nsub_policies: 2\nops_per_sub_policy: 2\nprobability: {type: continuous}\n"
                    "level: {type: continuous}\nops:\n  Rotate:\n  Wobble:\n", encoding="utf-8")
    return str(path)


def _imagefolder_with_a_small_class(tmp_path: Path) -> str:
    from PIL import Image

    root = tmp_path / "images"
    for cls, count in (("big", 10), ("small", 2)):  # 2 images: too few for a D_M/D_A split
        (root / cls).mkdir(parents=True)
        for k in range(count):
            Image.new("RGB", (8, 8), (20 * k, 100, 200)).save(root / cls / f"{k}.png")
    return f"imagefolder:{root}"


BAD_INPUTS = {
    "unknown data set": (lambda tmp: dict(dataset="mnist-typo"), DataError, "unknown data set 'mnist-typo'"),
    "unknown op in space": (lambda tmp: dict(space=_space_with_unknown_op(tmp)), SpaceError, "unknown op 'Wobble'"),
    "train size too large": (lambda tmp: dict(train_size=5000), DataError,
                             "--train-size 5000 is larger than the 1078 images of digits/train"),
    "digits class too small for the splits": (lambda tmp: dict(train_size=15), DataError,
                                              r"class \d has 1 example; with da_ratio=0.4"),
    "imagefolder class too small": (lambda tmp: dict(dataset=_imagefolder_with_a_small_class(tmp), image_size=8,
                                                      train_size=None),
                                    DataError, "class 1 has 2 examples"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_in_one_line_before_any_work(case, tmp_path, monkeypatch):
    make, error, message = BAD_INPUTS[case]

    def no_ray(config):
        raise AssertionError("Ray was started for a search whose inputs are invalid")

    monkeypatch.setattr(search, "_start_ray", no_ray)
    config = search.SearchConfig(**{**SMALL, **make(tmp_path)})
    run_dir = tmp_path / "run"
    with pytest.raises(error, match=message) as caught:
        search.run_search(config, run_dir)
    assert "\n" not in str(caught.value)
    assert not run_dir.exists()  # not even config.json or the Tune folder


def _search_args(argv: list[str]):
    import argparse

    parser = argparse.ArgumentParser()
    search.add_arguments(parser)
    return parser.parse_args(argv)


def test_search_command_checks_inputs_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(search, "_start_ray", lambda config: pytest.fail("Ray was started"))
    out = tmp_path / "run"
    with pytest.raises(DataError, match="--train-size 5000 is larger"):
        search.run(_search_args(["--train-size", "5000", "--out", str(out)]))
    assert not out.exists()
    with pytest.raises(DataError, match="no config.json there"):
        search.run(_search_args(["--resume", str(tmp_path / "nowhere")]))
    with pytest.raises(ValueError, match="--trials must be at least 1, got 0"):
        search.config_from_args(_search_args(["--trials", "0"]))


def test_cli_search_exits_2_with_one_line(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "policysearch", "search", "--dataset", "mnist-typo",
                           "--out", str(out)], cwd=REPO, env=_worktree_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "unknown data set 'mnist-typo'" in done.stderr
    assert not out.exists()


# ----------------------------------------------------------------------------------------------------
# Through a real local Ray
# ----------------------------------------------------------------------------------------------------


def test_workers_import_this_checkout(ray_session):
    @ray_session.remote
    def where() -> str:
        import policysearch

        return policysearch.__file__

    assert Path(ray_session.get(where.remote())).resolve() == (PACKAGE / "__init__.py").resolve()


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def small_run(ray_session, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("search") / "run"
    log = io.StringIO()
    result = search.run_search(search.SearchConfig(**SMALL), run_dir, stream=log)
    return result, log.getvalue()


@pytest.mark.slow
def test_end_to_end_search_writes_a_valid_policy(small_run):
    # Its duration is a benchmark figure (scripts/bench_search.py), not asserted: machines here are noisy.
    result, log = small_run
    run_dir = result.run_dir
    policy = Policy.load(run_dir / "policy.json")
    assert result.policy_path == run_dir / "policy.json"
    assert policy.sub_policies == result.policy.sub_policies
    assert 1 <= len(policy) <= SMALL["splits"] * SMALL["top_n"] * 5  # top N x 5 sub-policies, deduplicated
    assert len(set(policy.sub_policies)) == len(policy)
    assert not policy.ops() & {"FlipLR", "FlipUD", "Invert", "Solarize", "SamplePairing"}  # no_flips for digits
    meta = policy.metadata
    assert meta["dataset"] == "digits" and meta["search_space"] == "no_flips"
    assert {"phase1_wall_s", "phase2_wall_s", "phase3_wall_s", "total_device_s"} <= set(meta["search_cost"])
    assert meta["search"]["seed"] == SMALL["seed"] and meta["search"]["trials"] == SMALL["trials"]

    rows = _read_csv(run_dir / "trials.csv")
    assert len(rows) == SMALL["splits"] * SMALL["trials"]
    assert sorted(int(r["split"]) for r in rows) == [0] * 4 + [1] * 4
    assert len({r["trial_id"] for r in rows}) == len(rows)
    assert all(0.0 <= float(r["reward"]) <= 1.0 for r in rows)
    assert len(result.top) == SMALL["splits"] * SMALL["top_n"]

    saved = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    assert search.SearchConfig.from_dict(saved["search"]) == search.SearchConfig(**SMALL)
    assert (run_dir / "report.md").read_text(encoding="utf-8").startswith("# Search report: digits")
    assert (run_dir / "tune" / "phase1_children").is_dir() and (run_dir / "tune" / "phase2_policies").is_dir()
    assert "[phase 2: policy trials] 8/8 trials" in log


@pytest.mark.slow
def test_same_seed_one_worker_repeats_the_policy(small_run, tmp_path):
    first, _ = small_run
    again = search.run_search(search.SearchConfig(**SMALL), tmp_path / "again", stream=io.StringIO())
    assert again.policy.sub_policies == first.policy.sub_policies
    # Every trial's parameters and scores repeat too (only trial ids and timings differ).
    def strip(rows):
        return [{k: v for k, v in r.items() if k not in ("trial_id", "seconds", "load_seconds")} for r in rows]

    assert strip(_read_csv(tmp_path / "again" / "trials.csv")) == strip(_read_csv(first.run_dir / "trials.csv"))


@pytest.mark.slow
def test_four_trials_share_one_pretend_gpu(ray_session, tmp_path):
    """gpus_per_trial=0.25 on Ray's one (pretend) GPU: four trials run at once, all on GPU 0.

    Each trial waits at a file barrier until all four have started (bounded), so the test passes only if
    the four really run at the same time; the search's own resource and concurrency helpers are used.
    """
    from ray import tune

    config = search.SearchConfig(cpus_per_trial=0.25, gpus_per_trial=0.25)
    assert search._resources(config) == {"cpu": 0.25, "gpu": 0.25}
    assert search._concurrency(config) == 4  # the GPU, not the 2 CPUs, is the limit
    barrier = tmp_path / "barrier"
    barrier.mkdir()

    def packed_trial(trial):
        import time as _time

        import ray as _ray
        from ray import tune as _tune

        start = _time.time()
        (barrier / str(trial["i"])).touch()
        deadline = start + 60
        while len(list(barrier.iterdir())) < 4 and _time.time() < deadline:
            _time.sleep(0.05)
        _tune.report({"peers": len(list(barrier.iterdir())), "start": start, "end": _time.time(),
                      "gpu_ids": ",".join(str(g) for g in _ray.get_gpu_ids())})

    tune_config = tune.TuneConfig(max_concurrent_trials=search._concurrency(config), reuse_actors=False)
    results = search._run_tuner("packing", packed_trial, {"i": tune.grid_search([0, 1, 2, 3])}, tune_config,
                                config, tmp_path, search.Progress("packing", 4, None, io.StringIO()))
    metrics = [r.metrics for r in results]
    assert len(metrics) == 4
    assert all(m["peers"] == 4 for m in metrics), [m["peers"] for m in metrics]
    assert max(m["start"] for m in metrics) < min(m["end"] for m in metrics)  # the four intervals overlap
    assert all(m["gpu_ids"] == "0" for m in metrics)  # all on the one GPU


# ----------------------------------------------------------------------------------------------------
# Resume after SIGKILL
# ----------------------------------------------------------------------------------------------------

# Run in a separate process (its own session, so it and everything it starts can be killed together).
RESUME = dict(SMALL, trials=10, max_concurrent=2)
DRIVER = ("import json, sys\n"
          "from policysearch.search import SearchConfig, run_search\n"
          "run_search(SearchConfig.from_dict(json.loads(sys.argv[1])), sys.argv[2])\n")


def _read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _persisted(experiment: Path) -> set[str]:
    """Ids of the trials that Tune's saved experiment state (what a resume starts from) records as finished."""
    finished = set()
    for state in experiment.glob("experiment_state-*.json"):
        try:
            trials = json.loads(state.read_text(encoding="utf-8"))["trial_data"]
        except (OSError, ValueError, KeyError):  # being written right now
            continue
        finished |= {t["trial_id"] for t in map(json.loads, (entry[0] for entry in trials))
                     if t.get("status") == "TERMINATED"}
    return finished


def _wait_for_phase2(lines: queue.Queue, experiment: Path, done: int, timeout: float, seen: list[str]) -> bool:
    """Read the driver's output until phase 2 reports ``done`` finished trials and Tune's saved state holds
    at least ``done - 1`` of them (or EOF, or the timeout). The progress lines are the clock: no sleeping."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            return False
        if line is None:
            return False
        seen.append(line)
        if (line.startswith("[phase 2: policy trials] ") and int(line.split()[4].split("/")[0]) >= done
                and len(_persisted(experiment)) >= done - 1):
            return True
    return False


def _kill_all(driver: subprocess.Popen, known: list) -> None:
    """SIGKILL the driver's process group, then every process it had started (Ray's raylet, GCS, workers)
    that lives on outside the group, with the children those started in the meantime."""
    import psutil

    try:
        os.killpg(driver.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    driver.wait(timeout=30)
    left = []
    for proc in known:
        try:
            left += [proc] + proc.children(recursive=True)
        except psutil.NoSuchProcess:
            continue
    for proc in left:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    gone, alive = psutil.wait_procs(left, timeout=30)
    assert not alive, f"processes that would not die: {[p.pid for p in alive]}"


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_resume_after_sigkill_in_phase_2_keeps_finished_trials(ray_session, tmp_path):
    import psutil  # Ray ships it (ray/thirdparty_files, on sys.path once ray is imported)

    run_dir = tmp_path / "run"
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(RESUME), str(run_dir)], cwd=REPO,
                              env=_worktree_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_read_lines, args=(driver.stdout, lines), daemon=True).start()
    seen: list[str] = []
    known: list = []
    try:
        reached = _wait_for_phase2(lines, run_dir / "tune" / "phase2_policies", done=3, timeout=240, seen=seen)
        known = psutil.Process(driver.pid).children(recursive=True)
    finally:
        _kill_all(driver, known)
    assert reached, ("the search never reached 3 finished phase-2 trials with 2 of them saved by Tune:\n"
                     + "".join(seen[-30:]))
    assert known, "the driver had started no processes (no Ray?)"

    tune_dir = run_dir / "tune"
    phase1 = _snapshot(tune_dir / "phase1_children")
    children = sorted(p.name for p in (tune_dir / "phase1_children").iterdir() if p.is_dir())
    assert len(children) == RESUME["splits"]
    # The trials Tune had saved as finished when the driver died (with Tune's default snapshot period of
    # 10 s or more this was none of them; search.py sets 1 s).
    finished = _persisted(tune_dir / "phase2_policies")
    assert len(finished) >= 2
    assert not (run_dir / "policy.json").exists()

    log = io.StringIO()
    result = search.run_search(search.SearchConfig(**RESUME), run_dir, resume=True, stream=log)

    rows = _read_csv(run_dir / "trials.csv")
    assert len(rows) == RESUME["splits"] * RESUME["trials"]
    assert len({r["trial_id"] for r in rows}) == len(rows)
    assert finished <= {r["trial_id"] for r in rows}, "phase-2 trials finished before the kill were run again"
    # The child models were not retrained: their trial folders and checkpoints are untouched.
    after = _snapshot(tune_dir / "phase1_children")
    assert {k: v for k, v in after.items() if "/" in k} == {k: v for k, v in phase1.items() if "/" in k}
    assert sorted(p.name for p in (tune_dir / "phase1_children").iterdir() if p.is_dir()) == children
    assert Policy.load(result.policy_path).sub_policies == result.policy.sub_policies


def test_choose_strength_prefers_best_mean_held_out_accuracy_then_lower_loss():
    rows = [{"split": k, "strength": s, "da_accuracy": acc, "da_loss": loss}
            for k, s, acc, loss in [(0, 0.0, 0.90, 0.30), (1, 0.0, 0.94, 0.20), (0, 0.5, 0.93, 0.25),
                                    (1, 0.5, 0.95, 0.22), (0, 1.0, 0.93, 0.20), (1, 1.0, 0.95, 0.21)]]
    strength, summary = search.choose_strength(rows)
    assert strength == 1.0  # ties with 0.5 on accuracy (0.94), lower mean loss
    assert [row["strength"] for row in summary] == [0.0, 0.5, 1.0]
    assert summary[0]["da_accuracy"] == pytest.approx(0.92) and summary[0]["splits"] == 2
    baseline_best = [dict(row, da_accuracy=0.99) if row["strength"] == 0.0 else row for row in rows]
    assert search.choose_strength(baseline_best)[0] == 0.0


def test_strengths_are_checked_and_survive_a_config_round_trip():
    with pytest.raises(ValueError, match=r"--strengths must lie in \(0, 1\]"):
        search.SearchConfig(strengths=(0.0, 1.0))
    config = search.SearchConfig(strengths=(0.25, 1.0))
    assert search.SearchConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(config)))) == config
