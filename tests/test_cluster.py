"""Tests for the search on a Ray cluster: child models fetched once per worker, the data put once, storage
traffic proportionate, one-line errors for ``--address``, and a real two-node cluster on loopback (a head
and a worker started with ``ray start``, one CPU each) that runs a search on both nodes and survives the
loss of the worker in the middle of phase 2.

The clusters come from ``scripts/loopback_cluster.py``: every Ray process they start is found by its private
temporary folder, the pids recorded when each node started and their descendants, and killed by id when the
test ends, whether it passed or not.
"""

from __future__ import annotations

import csv
import json
import os
import queue
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from policysearch.training.models import build_model
from policysearch.search.config import SearchConfig
from policysearch.search.faults import ENV as FAULTS_ENV, LOG_ENV, Faults, parse_faults
from policysearch.search.children import CHILD_FILE, CHILD_MODEL_FILE, ChildCache, ChildSource, frozen_child
from policysearch.search.prepare import prepare
from policysearch.search.rundir import settings_digest
from _scripts import load_file

REPO = Path(__file__).resolve().parents[1]
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
           "RAY_AIR_NEW_OUTPUT": "0"}
# The tiny search of these tests: about a minute on 2 loaded cores.
TINY = ["--dataset", "digits", "--train-size", "200", "--splits", "2", "--trials", "4", "--epochs", "1", "--top-n", "2",
        "--min-steps", "20", "--selection-folds", "2", "--strengths", "1", "--seed", "3"]
SEARCH_TIMEOUT_S = 900


def _env(**extra: str) -> dict[str, str]:
    """os.environ with this checkout first on PYTHONPATH (Ray's workers inherit it from ``ray start``)."""
    env = {**os.environ, **RAY_ENV, **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _load_loopback():
    return load_file(REPO / "scripts" / "loopback_cluster.py", "loopback_cluster")


loopback = _load_loopback()
_free_port = loopback.free_port


@pytest.fixture
def new_cluster():
    """A cluster of its own (head + 1 worker), for a test that kills part of it; torn down by pid."""
    with loopback.loopback_cluster(1, _env()) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def shared_cluster():
    """One cluster for the tests that leave it as it was."""
    with loopback.loopback_cluster(1, _env()) as cluster:
        yield cluster


def _search(cluster, out: Path, storage: Path, *extra: str, env: dict | None = None,
            stdout=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "policysearch", "search", "--address", cluster.address,
                             "--storage", str(storage), "--out", str(out), *TINY, *extra],
                            env=env or _env(), stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=out.parent)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _child_nodes(run: Path) -> list[str]:
    """The node of each trained child, from the child table of report.md."""
    rows = [line.split("|") for line in (run / "report.md").read_text(encoding="utf-8").splitlines()
            if line.startswith("| ") and line.count("|") == 7 and "| ok |" in line]
    return [cells[6].strip() for cells in rows]


# ----------------------------------------------------------------------------------------------------
# Child models: fetched once per worker and split (no Ray)
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def five_splits():
    return prepare(SearchConfig(dataset="digits", train_size=200, splits=5, trials=4, epochs=1, seed=3))


def _counting_source(prepared, split: int, folder: Path, fetched: list[int]) -> ChildSource:
    model = build_model(prepared.config.model, prepared.data.num_classes, prepared.data.images.shape[1])
    path = folder / f"split{split}" / CHILD_MODEL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict()}, path)

    def fetch(_: Path) -> Path:
        fetched.append(split)
        return path

    return ChildSource(f"run-1/split{split}", fetch)


def test_a_worker_cycling_over_five_splits_fetches_each_child_once(five_splits, tmp_path):
    fetched: list[int] = []
    sources = [_counting_source(five_splits, split, tmp_path, fetched) for split in range(5)]
    cache = ChildCache(size=2)  # smaller than the splits: the cache grows to hold them all
    hits = [[frozen_child(five_splits, split, sources[split], cache)[1] for split in range(5)] for _ in range(3)]
    assert hits == [[False] * 5, [True] * 5, [True] * 5]
    assert fetched == [0, 1, 2, 3, 4]  # one fetch per split, all in the first round


def test_the_cache_is_looked_up_before_anything_is_fetched(five_splits, tmp_path):
    fetched: list[int] = []
    source = _counting_source(five_splits, 0, tmp_path, fetched)
    cache = ChildCache()
    frozen_child(five_splits, 0, source, cache)

    def refuse(_: Path) -> Path:
        raise AssertionError("fetched although the child was cached")

    model, cached, _ = frozen_child(five_splits, 0, ChildSource(source.key, refuse), cache)
    assert cached and not model.training
    _, cached_other_run, _ = frozen_child(five_splits, 0, ChildSource("run-2/split0", source.fetch), cache)
    assert not cached_other_run and fetched == [0, 0]  # another run's child of the same split is another model


def test_phase_1_writes_the_weights_alone_beside_the_training_state(tmp_path):
    from policysearch.search.children import train_child
    from policysearch.search.density import score_policy

    prepared = prepare(SearchConfig(dataset="digits", train_size=200, splits=2, trials=4, epochs=1, min_steps=20,
                                    seed=3))
    reports: list[dict] = []
    train_child(prepared, 1, tmp_path, reports.append)
    assert [r["epoch"] for r in reports] == list(range(1, reports[-1]["epochs"] + 1))
    model_only = torch.load(tmp_path / CHILD_MODEL_FILE, weights_only=True)
    full = torch.load(tmp_path / CHILD_FILE, weights_only=True)
    assert set(model_only) == {"model"} and "optimizer" in full
    assert all(torch.equal(model_only["model"][k], full["model"][k]) for k in full["model"])
    assert (tmp_path / CHILD_MODEL_FILE).stat().st_size < (tmp_path / CHILD_FILE).stat().st_size
    import numpy as np

    first = score_policy(prepared, prepared.space.sample(np.random.default_rng(0)), 1, tmp_path)
    second = score_policy(prepared, prepared.space.sample(np.random.default_rng(1)), 1, tmp_path)
    assert second["child_cached"] and first["load_seconds"] >= 0


def test_faults_can_match_the_node_a_trial_runs_on():
    faults = parse_faults("raise@score:node=abc").at(node="abc")
    with pytest.raises(RuntimeError, match="injected"):
        faults.reach("score", split=0, index=0)
    parse_faults("raise@score:node=abc").at(node="other").reach("score", split=0, index=0)  # another node: nothing
    Faults().at(node="abc").reach("score")


# ----------------------------------------------------------------------------------------------------
# Storage traffic and the object store (Ray imported, not started)
# ----------------------------------------------------------------------------------------------------


def test_checkpoints_every_epoch_on_a_path_and_about_ten_per_child_on_a_uri():
    from policysearch.search.tuning import checkpoint_kept

    assert all(checkpoint_kept(epoch, 200, remote=False) for epoch in range(1, 201))
    kept = [epoch for epoch in range(1, 201) if checkpoint_kept(epoch, 200, remote=True)]
    assert kept == list(range(20, 201, 20))  # ten, the last one included
    assert [e for e in range(1, 8) if checkpoint_kept(e, 7, remote=True)] == list(range(1, 8))
    assert checkpoint_kept(13, 13, remote=True)  # the last epoch always


def test_the_experiment_state_is_saved_every_second_on_a_path_and_every_minute_on_a_uri(monkeypatch):
    from policysearch.search import tuning

    for storage, period in ((None, "1"), ("/shared/policysearch", "1"), ("s3://bucket/runs", "60")):
        environ = {k: v for k, v in os.environ.items() if k != "TUNE_GLOBAL_CHECKPOINT_S"}
        monkeypatch.setattr(os, "environ", environ)  # restored after the test, with whatever else it sets
        tuning._quiet_ray_environment(SearchConfig(storage=storage))
        assert environ["TUNE_GLOBAL_CHECKPOINT_S"] == period


def test_the_object_store_of_a_local_ray_is_sized_from_the_data():
    from policysearch.search.tuning import OBJECT_STORE_FLOOR, object_store_bytes, ray_init_kwargs

    gib = 1024 ** 3
    assert object_store_bytes(0, 24 * gib) == OBJECT_STORE_FLOOR
    svhn = 225 * 1024 ** 2
    assert svhn * 1.25 < object_store_bytes(svhn, 24 * gib) < svhn * 1.25 + 100 * 1024 ** 2
    assert object_store_bytes(40 * gib, 24 * gib) == 12 * gib  # never more than half the memory
    assert ray_init_kwargs(SearchConfig(), svhn)["object_store_memory"] == object_store_bytes(svhn)
    assert "object_store_memory" not in ray_init_kwargs(SearchConfig(address="10.0.0.1:6379", storage="/shared"))


# ----------------------------------------------------------------------------------------------------
# One-line errors with --address
# ----------------------------------------------------------------------------------------------------


@pytest.mark.slow  # a subprocess that imports torch and Ray: about 30 s on 2 loaded cores
def test_a_wrong_address_fails_in_one_line_without_waiting_for_ray(tmp_path):
    port = _free_port()  # nothing listens there
    done = subprocess.run([sys.executable, "-m", "policysearch", "search", "--address", f"127.0.0.1:{port}",
                           "--storage", str(tmp_path / "storage"), "--out", str(tmp_path / "run"), *TINY],
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"policysearch: error: --address 127.0.0.1:{port}: no Ray cluster "
                                                   "answers there"), done.stderr
    assert f"ray: joining the cluster at 127.0.0.1:{port}\n" in done.stdout  # said before it waits
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.slow  # a tiny in-process search, then a subprocess that imports torch and Ray
def test_a_cluster_runs_resume_with_its_cluster_gone_says_how_to_finish_it_here(tmp_path):
    """The README's way to finish a cluster's run on one machine (``--address ''``) was not named where it is
    needed: a resume whose stored cluster no longer answers."""
    import io

    from policysearch.search.inprocess import run_search

    run = tmp_path / "run"
    tiny = dict(dataset="digits", train_size=60, splits=2, trials=3, epochs=1, top_n=1, seed=3, max_concurrent=1,
                min_steps=8, selection_folds=2, selection_repeats=1, strengths=(1.0,))
    run_search(SearchConfig(**tiny), run, stream=io.StringIO())
    (run / "policy.json").unlink()  # an unfinished run, as a cluster left it
    stored = json.loads((run / "config.json").read_text())
    port = _free_port()  # the cluster is gone: nothing listens there
    stored["search"].update(address=f"127.0.0.1:{port}", storage=str(tmp_path / "storage"))
    stored["search_digest"] = settings_digest(stored["search"])  # as the cluster's run wrote it
    (run / "config.json").write_text(json.dumps(stored))
    done = subprocess.run([sys.executable, "-m", "policysearch", "search", "--resume", str(run)], env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"policysearch: error: --address 127.0.0.1:{port}: no Ray cluster answers there (Connection refused); give "
        "the head node's address and port as `ray start --head` printed them; or, to finish the run on this machine "
        "with what it keeps, resume it with --address '' (a local Ray)"], done.stderr


@pytest.mark.slow  # a head node and two subprocesses that import torch and Ray
def test_a_missing_or_wrong_auth_token_fails_in_one_line(tmp_path):
    token = "policysearch-test-token-0123456789abcdef"
    with loopback.loopback_cluster(0, _env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)) as cluster:
        unset = {k: v for k, v in _env().items() if k != "RAY_AUTH_MODE"}
        for given, expected in [({}, "the cluster uses token authentication and this process sends no token "
                                     "(RAY_AUTH_MODE is 'disabled'); set RAY_AUTH_MODE=token, with the cluster's token "
                                     "in ~/.ray/auth_token or in RAY_AUTH_TOKEN"),
                                (None, "(RAY_AUTH_MODE is not set)"),
                                ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-" + token},
                                 "the cluster refused this process's auth token")]:
            run = tmp_path / f"run-{len(given or {})}"
            done = subprocess.run([sys.executable, "-m", "policysearch", "search", "--address", cluster.address,
                                   "--storage", str(tmp_path / "storage"), "--out", str(run), *TINY],
                                  env=unset if given is None else _env(**given), capture_output=True, text=True,
                                  timeout=120)
            assert done.returncode == 2, done.stderr
            lines = done.stderr.strip().splitlines()
            assert lines == [lines[0]], done.stderr
            if given is None:  # unset: said so, not named as a value it does not have
                assert expected in lines[0], done.stderr
            else:
                assert lines[0].startswith(f"policysearch: error: --address {cluster.address}: {expected}"), done.stderr
            assert not (run / "config.json").exists()


def test_an_address_that_is_not_host_port_is_named():
    from policysearch.search.rundir import RunError
    from policysearch.search.tuning import check_address

    with pytest.raises(RunError, match=r"--address headnode: not HOST:PORT \(e.g. 10.0.0.1:6379\) or auto"):
        check_address("headnode")
    # the job server's URL, which `ray job submit --address` takes, was read as the host "http://127.0.0.1"
    with pytest.raises(RunError, match=r"^--address http://127.0.0.1:8265: a URL is the address of Ray's job server "
                                       r"\(what `ray job submit --address` takes\); give the head node's HOST:PORT"):
        check_address("http://127.0.0.1:8265")


def test_joining_from_a_machine_that_is_no_node_of_the_cluster_says_where_to_run(monkeypatch):
    """Regression (a review): --address HOST:PORT from outside the cluster, which the README offered, passed the
    head's checks and ended a minute later in Ray's traceback ("No node info found matching attributes")."""
    from policysearch.search import tuning
    from policysearch.search.config import SearchConfig
    from policysearch.search.rundir import RunError

    def no_local_node(**kwargs):
        raise RuntimeError("No node info found matching attributes: '10.0.0.9' when trying to resolve node to "
                           "connect to.")

    monkeypatch.setattr(tuning, "check_address", lambda address: None)  # the head answers
    # start_ray sets Ray's and Tune's variables in this process's environment for good, which the later tests'
    # searches would inherit (an s3 storage's 60 s state period made a SIGTERM test stop at once: CI)
    monkeypatch.setattr(tuning, "_quiet_ray_environment", lambda config: None)
    monkeypatch.setattr(tuning.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(tuning.ray, "init", no_local_node)
    config = SearchConfig(address="10.0.0.1:6379", storage="s3://bucket/runs")
    with pytest.raises(RunError, match=r"^--address 10.0.0.1:6379: the head answers, but Ray found no node of its "
                                       r"cluster on this machine \(.*\) to attach to \(No node info found matching "
                                       r"attributes: '10.0.0.9' .*\), and a search joins a cluster from one of its "
                                       r"nodes: run it on the head or a worker, submit it with `ray job submit`, or "
                                       r"make this machine a node first \(`ray start --address 10.0.0.1:6379`; "):
        tuning.start_ray(config)
    monkeypatch.setattr(tuning.ray, "init", lambda **kwargs: (_ for _ in ()).throw(RuntimeError("other")))
    with pytest.raises(RuntimeError, match="^other$"):  # Ray's other errors are not reworded as this one
        tuning.start_ray(config)


def test_auto_with_no_cluster_running_says_what_to_do_in_our_words(monkeypatch):
    """A trial's find: --address auto with no cluster passed on Ray's advice to set RAY_ADDRESS."""
    from policysearch.search import tuning
    from policysearch.search.config import SearchConfig
    from policysearch.search.rundir import RunError

    def nothing_running(**kwargs):
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to by "
                              "setting `--address` flag or `RAY_ADDRESS` environment variable.")

    monkeypatch.setattr(tuning, "_quiet_ray_environment", lambda config: None)  # as the test above says
    monkeypatch.setattr(tuning.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(tuning.ray, "init", nothing_running)
    with pytest.raises(RunError, match=r"^--address auto: no Ray cluster runs on this machine; start one with `ray "
                                       r"start --head`, or give the head node's HOST:PORT as `ray start --head` "
                                       r"printed it$"):
        tuning.start_ray(SearchConfig(address="auto", storage="s3://bucket/runs"))


def test_a_storage_under_a_folder_that_refuses_it_names_the_folder_as_the_nearest(tmp_path, monkeypatch):
    """A trial's find: --storage /proc/nope said "cannot write in /proc (No such file or directory)"."""
    from policysearch import atomic

    def refuse(dir=None):
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(atomic.tempfile, "TemporaryFile", refuse)
    assert atomic.unwritable(tmp_path / "nope", folder=True) == (f"cannot write in {tmp_path}, the nearest existing "
                                                                  "folder on its path (No such file or directory)")
    assert atomic.unwritable(tmp_path, folder=True) == f"cannot write in {tmp_path} (No such file or directory)"


def test_a_home_where_ray_cannot_write_its_token_is_named_with_the_fix(monkeypatch, tmp_path):
    """Regression (review): with HOME unwritable (Docker's --user of a uid the image does not know gets /),
    a local search ended in "policysearch: error: /.ray: Permission denied"."""
    from policysearch.search import tuning
    from policysearch.search.rundir import RunError

    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "none" / "token"))  # only read: Ray writes in ~/.ray
    monkeypatch.setattr(tuning, "_quiet_ray_environment", lambda config: None)
    monkeypatch.setattr(tuning.ray, "is_initialized", lambda: False)

    def init(**kwargs):
        raise PermissionError(13, "Permission denied", str(home / ".ray"))

    monkeypatch.setattr(tuning.ray, "init", init)
    with pytest.raises(RunError, match=rf"^Ray could not write the auth token it keeps in {home / '.ray'} \(Permission "
                                       r"denied\): set HOME to a folder this user can write \(in Docker: -e "
                                       r"HOME=/tmp\), or RAY_AUTH_TOKEN_PATH to an existing token file$"):
        tuning.start_ray(SearchConfig())
    def init_without_home(**kwargs):  # a home that does not exist: mkdir(parents=True) names the home itself
        raise PermissionError(13, "Permission denied", str(home))

    monkeypatch.setattr(tuning.ray, "init", init_without_home)
    with pytest.raises(RunError, match=r"^Ray could not write the auth token it keeps in "):
        tuning.start_ray(SearchConfig())
    monkeypatch.setattr(tuning.ray, "init", lambda **kwargs: (_ for _ in ()).throw(PermissionError(13, "no", "/x")))
    with pytest.raises(PermissionError):  # another file's error is Ray's own
        tuning.start_ray(SearchConfig())


@pytest.mark.slow
def test_a_cluster_that_cannot_hold_one_trial_fails_in_one_line(shared_cluster, tmp_path):
    search = _search(shared_cluster, tmp_path / "run", tmp_path / "storage", "--cpus-per-trial", "4")
    _, stderr = search.communicate(timeout=SEARCH_TIMEOUT_S)
    assert search.returncode == 2
    lines = stderr.strip().splitlines()
    assert lines == ["policysearch: error: one trial needs 4 CPUs and 0 GPUs (--cpus-per-trial, --gpus-per-trial), "
                     "but the largest node of the Ray cluster has 1 CPU and 0 GPUs; on an autoscaling cluster, "
                     "submit the search once `ray status` shows a worker node that can hold one (docker/cluster.yaml "
                     "keeps one up)"], stderr
    assert not (tmp_path / "run" / "policy.json").exists()


# ----------------------------------------------------------------------------------------------------
# A real two-node cluster
# ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_search_on_a_two_node_cluster_runs_trials_on_both_nodes(shared_cluster, tmp_path):
    search = _search(shared_cluster, tmp_path / "run", tmp_path / "storage")
    stdout, stderr = search.communicate(timeout=SEARCH_TIMEOUT_S)
    assert search.returncode == 0, stderr[-3000:]
    # the cluster joined is named first: `--address auto` may find another Ray than the one meant
    port = shared_cluster.address.rpartition(":")[2]  # named by the head's own IP, which may not be the one given
    # and said before it joins, which can take a minute (a trial's find: silent for 47 s at a non-Ray listener)
    assert re.match(rf"ray: joining the cluster at \S+\nray: joined the cluster at [0-9.]+:{port}: 2 nodes, 2 CPUs, "
                    r"0 GPUs\n", stdout), stdout[:500]
    run = tmp_path / "run"
    assert (run / "policy.json").exists()
    rows = _rows(run / "trials.csv")
    assert len(rows) == 8 and all(r["status"] == "ok" for r in rows)
    # The two children train at once, one on each node (a node holds one trial, and phase 1 reuses no
    # actor). Phase 2's short trials may all run on one node: Tune hands a waiting trial to the first
    # worker that is free, and a worker finishes a short trial before another node's worker has started.
    both = {shared_cluster.worker_node_ids[0], shared_cluster.head_node_id}
    assert sorted(_child_nodes(run)) == sorted(both)
    assert {r["node_id"] for r in rows} <= both
    # Each worker process fetches a split's child once; every later trial of that split there is a hit. Tune
    # may end an idle worker and start another (more often on a loaded machine), so count per process.
    run_id = json.loads((run / "config.json").read_text(encoding="utf-8"))["run_id"]
    pid = {}
    for result in (tmp_path / "storage" / run_id / "phase2_policies").glob("*/result.json"):
        last = json.loads(result.read_text(encoding="utf-8").splitlines()[-1])
        pid[last["trial_id"]] = (last["node_id"], last["pid"])  # a process id is one node's
    assert set(pid) == {r["trial_id"] for r in rows}
    per_process_split = {(pid[r["trial_id"]], r["split"]) for r in rows}
    assert sum(r["child_cached"] == "False" for r in rows) == len(per_process_split)
    # The children and the experiments are on the shared storage, under the run id.
    models = sorted((tmp_path / "storage" / run_id / "phase1_children").rglob(CHILD_MODEL_FILE))
    assert len(models) == 2


@pytest.mark.slow
def test_a_search_survives_the_loss_of_the_worker_node_in_phase_2(new_cluster, tmp_path):
    log = tmp_path / "faults.log"
    # Every phase-2 trial on the worker node blocks, so the node is surely killed with a trial running there.
    env = _env(**{FAULTS_ENV: f"pause@score:node={new_cluster.worker_node_ids[0]}", LOG_ENV: str(log)})
    search = _search(new_cluster, tmp_path / "run", tmp_path / "storage", env=env)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in search.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    stderr: list[str] = []
    threading.Thread(target=lambda: stderr.extend(search.stderr), daemon=True).start()
    try:
        seen = []
        while not (seen and seen[-1].startswith("[phase 2: policy trials]")):
            line = lines.get(timeout=SEARCH_TIMEOUT_S)
            assert line is not None, "the search ended before phase 2 finished a trial:\n" + "".join(stderr)[-3000:]
            seen.append(line)
        new_cluster.kill_worker()  # in the middle of phase 2: one of its 8 trials finished
        search.wait(timeout=SEARCH_TIMEOUT_S)
    finally:
        if search.poll() is None:
            loopback.kill(loopback.with_descendants({search.pid}))
    reader.join(timeout=30)
    assert search.returncode == 0, "".join(stderr)[-3000:]
    # A phase-2 trial that went to the worker blocked there until the node died; its retry on the head did not.
    paused = log.read_text().splitlines() if log.exists() else []
    assert len(paused) <= 1 and all(new_cluster.worker_node_ids[0] in line for line in paused)
    run = tmp_path / "run"
    assert sorted(_child_nodes(run)) == sorted({new_cluster.worker_node_ids[0], new_cluster.head_node_id})
    rows = _rows(run / "trials.csv")
    assert len(rows) == 8 and all(r["status"] == "ok" for r in rows)  # the finished trials and the retried one
    assert {r["node_id"] for r in rows} == {new_cluster.head_node_id}
    assert (run / "policy.json").exists() and (run / "report.md").exists()


@pytest.mark.slow
def test_ctrl_c_of_a_search_joined_to_a_cluster_leaves_the_clusters_processes(new_cluster, tmp_path):
    import signal

    # The node daemons `ray start` left running (its short-lived helpers may end on their own).
    started = new_cluster.head_pids | set().union(*new_cluster.worker_pids)
    nodes = {pid for pid, (_, command) in loopback.processes().items()
             if pid in started and ("raylet" in command or "gcs_server" in command)}
    assert nodes, "no raylet or GCS server among the cluster's processes"
    env = _env(**{FAULTS_ENV: "pause@child:split=1"})  # the other child finishes, this one holds phase 1
    search = subprocess.Popen([sys.executable, "-m", "policysearch", "search", "--address", new_cluster.address,
                               "--storage", str(tmp_path / "storage"), "--out", str(tmp_path / "run"), *TINY],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                              start_new_session=True)
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in search.stdout] + [lines.put(None)],
                     daemon=True).start()
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(search.stderr), daemon=True)
    reader.start()
    try:
        while True:
            line = lines.get(timeout=SEARCH_TIMEOUT_S)
            assert line is not None, "the search ended before a child finished:\n" + "".join(stderr)[-3000:]
            if line.startswith("[phase 1: child models] 1/2"):
                break
        os.killpg(search.pid, signal.SIGINT)  # Ctrl-C in the terminal that runs the search
        search.wait(timeout=SEARCH_TIMEOUT_S)
    finally:
        if search.poll() is None:
            loopback.kill(loopback.with_descendants({search.pid}))
    reader.join(timeout=60)  # everything the search wrote to stderr has been read
    message = "".join(stderr).strip()
    assert search.returncode == 130 and message.startswith("policysearch: search interrupted in phase 1"), message
    assert message.endswith(f"continue with: policysearch search --resume {tmp_path / 'run'}")
    assert nodes <= set(loopback.processes()), "the search stopped processes of the cluster it joined"
