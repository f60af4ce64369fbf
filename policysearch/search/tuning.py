"""The Ray/Tune layer: start or join Ray, check the cluster, run the phases as Tune experiments.

With :mod:`policysearch.search.searcher`, the only code of the package that imports Ray. Each phase is
one Tune experiment under ``<storage>/<run id>/``; a trial calls a plain function of
:mod:`~policysearch.search.trials` or :mod:`~policysearch.search.recipes` and reports what it returns.
A trial that keeps failing after ``--retries`` retries is recorded as failed and the search goes on,
unless :func:`~policysearch.search.checks.check_failures` says too many failed.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, TextIO

import ray
from ray import tune
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from policysearch.progress import Progress
from policysearch.search.checks import check_failures, check_resources, local_cpus, local_gpus
from policysearch.search.config import SearchConfig
from policysearch.search.export import export, write_trials_csv
from policysearch.search.faults import Faults, faults_from_env
from policysearch.search.outcome import Outcome, SearchResult, merge_top, top_candidates
from policysearch.search.rundir import Run, RunError, is_uri, open_run, write_config
from policysearch.search.searcher import SplitSearcher
from policysearch.candidates import candidate_recipes
from policysearch.domain import fit_domain
from policysearch.search.recipes import choose_recipe, final_baseline, probe_child, restrict_space, selection_trial
from policysearch.search.trials import CHILD_FILE, Prepared, prepare, score_policy, train_child

__all__ = ["Progress", "ray_init_kwargs", "run_experiment", "run_search", "start_ray", "verify_shared_storage"]

SENTINEL_TIMEOUT_S = 120


# ---------------------------------------------------------------------------------------------- Ray


def _quiet_ray_environment() -> None:
    # Read by Ray when it starts; set before ray.init so workers inherit them.
    for key, value in {"RAY_USAGE_STATS_ENABLED": "0", "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
                       "RAY_AIR_NEW_OUTPUT": "0", "RAY_DEDUP_LOGS": "0",
                       # keeping one checkpoint per child forces a state snapshot per epoch; that is intended
                       "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
                       # Tune's default saves the experiment state (finished trials, the searcher) every 10 s
                       # or more, so a killed search would lose that much finished work; 1 s bounds it.
                       "TUNE_GLOBAL_CHECKPOINT_S": "1"}.items():
        os.environ.setdefault(key, value)


def ray_init_kwargs(config: SearchConfig) -> dict[str, Any]:
    """The ``ray.init`` arguments for ``config``: join ``--address``, or a fresh local Ray.

    A local Ray counts its CPUs itself (it knows container limits); the dashboard is off unless
    ``--dashboard``, and then listens on 127.0.0.1 only.
    """
    if config.address:
        return {"address": config.address, "log_to_driver": False}
    return {"address": "local", "num_gpus": local_gpus(), "include_dashboard": config.dashboard,
            "dashboard_host": "127.0.0.1", "log_to_driver": False, "object_store_memory": 200 * 1024 * 1024,
            "configure_logging": False}


def start_ray(config: SearchConfig) -> bool:
    """Join ``--address`` or start a local Ray; True when this process started it (and must stop it).
    A Ray that this process already runs is used as it is."""
    _quiet_ray_environment()
    if ray.is_initialized():
        return False
    ray.init(**ray_init_kwargs(config))
    return not config.address


def cluster_nodes() -> list[dict[str, float]]:
    """CPU and GPU count of every alive node."""
    return [{"CPU": node["Resources"].get("CPU", 0.0), "GPU": node["Resources"].get("GPU", 0.0)}
            for node in ray.nodes() if node.get("Alive")]


@ray.remote(num_cpus=0)
def _reads_sentinel(path: str, token: str) -> bool:
    try:
        return Path(path).read_text(encoding="utf-8") == token
    except OSError:
        return False


def nodes_without(path: str, token: str) -> list[str]:
    """The addresses of the alive nodes on which ``path`` does not hold ``token``."""
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    checks = [_reads_sentinel.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
              .remote(path, token) for node in nodes]
    try:
        seen = ray.get(checks, timeout=SENTINEL_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        raise RunError(f"could not check within {SENTINEL_TIMEOUT_S} s that every node sees {path}") from None
    return [node.get("NodeManagerAddress", node["NodeID"]) for node, ok in zip(nodes, seen) if not ok]


def verify_shared_storage(storage: str) -> None:
    """Check that a local ``--storage`` path is the same folder on every node: the driver writes a
    sentinel file there and a task on each node reads it back."""
    folder = Path(storage.removeprefix("file://"))
    folder.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    sentinel = folder / f".policysearch-shared-{token}"
    sentinel.write_text(token, encoding="utf-8")
    try:
        missing = nodes_without(str(sentinel), token)
    finally:
        sentinel.unlink(missing_ok=True)
    if missing:
        raise RunError(f"--storage {storage} is not shared: node(s) {', '.join(missing)} cannot see the file the "
                       "driver wrote there; give a path mounted on every node or a URI (e.g. s3://...)")


# ------------------------------------------------------------------------------------------ progress


class _ProgressCallback(tune.Callback):
    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.progress.trial_finished(trial.last_result or {})

    def on_trial_error(self, iteration, trials, trial, **info) -> None:  # called once its retries are spent
        self.progress.trial_finished({}, error=_error_line(Path(trial.error_file)) if trial.error_file else "error")


def _error_line(error: Any) -> str:
    """One line for a trial's error: the exception type and message that the trial raised."""
    if isinstance(error, Path):
        try:
            error = error.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "unknown error"
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}".splitlines()[0]
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    errors = [line for line in lines if ("Error" in line.split(":")[0] or "Exception" in line.split(":")[0])]
    return (errors or lines or ["unknown error"])[-1][:500]


# ---------------------------------------------------------------------------------------- experiments


def _trial_dirname(trial) -> str:
    return trial.trial_id


def trial_id(result) -> str:
    """The Tune trial id of a result (its folder name, also for a trial that never reported)."""
    return Path(result.path).name


def _concurrency(config: SearchConfig) -> int:
    if config.max_concurrent:
        return config.max_concurrent
    available = ray.cluster_resources()
    slots = available.get("CPU", 1) / config.cpus_per_trial
    if config.gpus_per_trial > 0:
        slots = min(slots, available.get("GPU", 0) / config.gpus_per_trial)
    return max(1, int(slots))


def _resources(config: SearchConfig) -> dict[str, float]:
    return {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial}


def run_experiment(name: str, trainable: Callable, param_space: dict, tune_config: tune.TuneConfig,
                   config: SearchConfig, experiments: str, progress: Progress) -> tuple[list, list]:
    """Run (or continue) the Tune experiment ``<experiments>/<name>``; returns (succeeded, failed) results.

    A trial is retried ``config.retries`` times before it counts as failed; a continued experiment
    keeps its failed trials as they were.
    """
    path = f"{experiments}/{name}"
    trainable = tune.with_resources(trainable, _resources(config))
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=False,
                                   param_space=param_space)
    else:
        run_config = tune.RunConfig(name=name, storage_path=experiments, verbose=0,
                                    callbacks=[_ProgressCallback(progress)],
                                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                    failure_config=tune.FailureConfig(max_failures=config.retries))
        tune_config.trial_dirname_creator = _trial_dirname
        tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)
    results = list(tuner.fit())
    progress.close()
    return [r for r in results if r.error is None], [r for r in results if r.error is not None]


# ------------------------------------------------------------------------------------ trial wrappers


def _child_trainable(trial: dict[str, Any], *, prepared: Prepared, faults: Faults) -> None:
    with tempfile.TemporaryDirectory(prefix="policysearch-child-") as local:
        restored = tune.get_checkpoint()
        if restored is not None:
            with restored.as_directory() as folder:
                shutil.copy(Path(folder) / CHILD_FILE, Path(local) / CHILD_FILE)
        train_child(prepared, int(trial["split"]), Path(local),
                    lambda metrics: tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(local)), faults)


def _score_trainable(trial: dict[str, Any], *, prepared: Prepared, children: dict[int, Any], faults: Faults) -> None:
    splits = prepared.config.splits
    stream, index = int(trial["stream"]), int(trial["index"])
    with children[stream % splits].as_directory() as folder:
        metrics = score_policy(prepared, trial, stream % splits, Path(folder), repeat=stream // splits, index=index,
                               faults=faults)
    tune.report(metrics)


def _probe_trainable(trial: dict[str, Any], *, prepared: Prepared, children: dict[int, Any], faults: Faults) -> None:
    split = int(trial["split"])
    with children[split].as_directory() as folder:
        tune.report(probe_child(prepared, split, Path(folder), faults))


def _selection_trainable(trial: dict[str, Any], *, prepared: Prepared, recipes: list, faults: Faults) -> None:
    index = int(trial["recipe"])
    tune.report(selection_trial(prepared, recipes[index], int(trial["fold"]), faults, index=index))


def tune_space(prepared: Prepared) -> dict[str, Any]:
    """The search space's parameters as Ray Tune sampling objects."""
    out: dict[str, Any] = {}
    for p in prepared.space.parameters():
        out[p.name] = tune.uniform(p.low, p.high) if p.kind == "uniform" else tune.choice(list(p.values))
    return out


# -------------------------------------------------------------------------------------------- search


def run_search(config: SearchConfig, run_dir: str | Path, *, resume: bool = False,
               stream: TextIO = sys.stdout) -> SearchResult:
    """Run (or, with ``resume``, continue) a search into ``run_dir``; see :mod:`policysearch.search`."""
    faults = faults_from_env()
    prepared = prepare(config)  # every input error surfaces here, before Ray starts
    run = open_run(config, run_dir, resume=resume)
    joined = ray.is_initialized() or bool(config.address)
    if not joined:
        check_resources(config, [{"CPU": local_cpus(), "GPU": local_gpus()}], "this machine")
    started_ray = start_ray(config)
    try:
        check_resources(config, cluster_nodes(), "the Ray cluster" if joined else "this machine")
        if config.address and not is_uri(run.storage):
            verify_shared_storage(run.storage)
        if not resume:
            write_config(run, config)
        outcome, spans = _phases(prepared, run, faults, stream)
    finally:
        if started_ray:
            ray.shutdown()
    result = export(prepared, run, outcome, faults)
    result.spans = spans
    return result


def _start_text(config: SearchConfig) -> str:
    if not config.weights:
        return ""
    return f" from {config.weights}" + (" (frozen backbone)" if config.freeze_backbone else "")


def _phases(prepared: Prepared, run: Run, faults: Faults, stream: TextIO) -> tuple[Outcome, dict]:
    config = prepared.config
    concurrency = _concurrency(config)
    costs: dict[str, float] = {}
    spans: dict[str, tuple[float, float]] = {}
    print(f"search {run.run_id}: {len(prepared.data)} {config.dataset} images, {config.splits} splits, model "
          f"{config.model}{_start_text(config)}, space {prepared.space.name}, {config.algorithm}, {concurrency} concurrent trial(s); "
          f"run dir {run.run_dir}", file=stream, flush=True)
    for note in prepared.data.notes:  # what loading changed, e.g. the size images were resized to and why
        print(f"data: {note}", file=stream, flush=True)

    # Phase 1: one child model per split.
    t0 = time.monotonic()
    ok, failed = run_experiment(
        "phase1_children", tune.with_parameters(_child_trainable, prepared=prepared, faults=faults),
        {"split": tune.grid_search(list(range(config.splits)))},
        tune.TuneConfig(max_concurrent_trials=concurrency, reuse_actors=False), config, run.experiments,
        Progress("phase 1: child models", config.splits, "da_accuracy", stream))
    children = sorted([{"split": r.metrics["split"], "status": "ok", "error": "", "trial_id": trial_id(r),
                        **{k: r.metrics[k] for k in ("da_accuracy", "da_loss", "train_seconds")}} for r in ok]
                      + [{"split": int(r.config["split"]), "status": "failed", "error": _error_line(r.error),
                          "trial_id": trial_id(r)} for r in failed], key=lambda c: c["split"])
    check_failures("phase 1 (child models)", config.splits,
                   [f"split {c['split']}: {c['error']}" for c in children if c["status"] != "ok"], len(ok))
    checkpoints = {int(r.metrics["split"]): r.checkpoint for r in ok}
    usable = sorted(checkpoints)
    spans["phase1"] = (t0, time.monotonic())
    costs["phase1_wall_s"] = spans["phase1"][1] - t0
    costs["phase1_device_s"] = sum(c["train_seconds"] for c in children if c["status"] == "ok")

    # Phase 1b: the frozen children say which ops, up to which level, keep this data's classes.
    t1 = time.monotonic()
    ok, failed = run_experiment(
        "phase1b_domain", tune.with_parameters(_probe_trainable, prepared=prepared, children=checkpoints, faults=faults),
        {"split": tune.grid_search(usable)}, tune.TuneConfig(max_concurrent_trials=concurrency, reuse_actors=True),
        config, run.experiments, Progress("phase 1b: domain fit", len(usable), None, stream))
    probes = sorted([{"status": "ok", "error": "", **r.metrics} for r in ok]
                    + [{"status": "failed", "error": _error_line(r.error), "split": int(r.config["split"])}
                       for r in failed], key=lambda p: p["split"])
    check_failures("phase 1b (domain fit)", len(usable),
                   [f"split {p['split']}: {p['error']}" for p in probes if p["status"] != "ok"], len(ok))
    fit = fit_domain([p for p in probes if p["status"] == "ok"], prepared.data.num_classes, config.domain_threshold)
    searched = dataclasses.replace(prepared, space=restrict_space(prepared.space, fit))
    spans["phase1b"] = (t1, time.monotonic())
    costs["phase1b_wall_s"] = spans["phase1b"][1] - t1
    costs["phase1b_device_s"] = sum(p["seconds"] for p in probes if p["status"] == "ok")

    # Phase 2: candidate policies scored on D_A, one optimiser per usable split and repeat, in the restricted space.
    t2 = time.monotonic()
    param_space = tune_space(searched)
    streams = [repeat * config.splits + split for repeat in range(config.repeats) for split in usable]
    total = len(streams) * config.trials
    tune_config = tune.TuneConfig(metric="reward", mode="max", num_samples=total,
                                  search_alg=SplitSearcher(config, streams, param_space),
                                  max_concurrent_trials=concurrency, reuse_actors=True)
    # The searcher holds the space, so the Tuner gets none of its own.
    ok, failed = run_experiment(
        "phase2_policies", tune.with_parameters(_score_trainable, prepared=searched, children=checkpoints,
                                                faults=faults),
        {}, tune_config, config, run.experiments, Progress("phase 2: policy trials", total, "reward", stream))
    rows = [_trial_row(r, config, param_space, None) for r in ok] + [
        _trial_row(r, config, param_space, _error_line(r.error)) for r in failed]
    rows.sort(key=lambda row: (row["repeat"], row["split"], row["index"]))
    write_trials_csv(run, rows, list(param_space))
    check_failures("phase 2 (policy trials)", total,
                   [f"split {r['split']} candidate {r['index']}: {r['error']}" for r in rows if r["status"] != "ok"],
                   len(ok))
    spans["phase2"] = (t2, time.monotonic())
    costs["phase2_wall_s"] = spans["phase2"][1] - t2
    costs["phase2_device_s"] = sum(r["seconds"] for r in rows if r["status"] == "ok")

    # Phase 3: every candidate recipe trained on the cross-fit folds at the final budget; the stated rule picks.
    t3 = time.monotonic()
    top = top_candidates(rows, searched.space, config.splits, config.repeats, config.top_n)
    merged = merge_top(top)
    baseline = final_baseline(prepared, fit)
    recipes = candidate_recipes(baseline, fit, merged, strengths=config.strengths)
    folds = len(prepared.folds)
    grid = {"recipe": tune.grid_search(list(range(len(recipes)))), "fold": tune.grid_search(list(range(folds)))}
    ok, failed = run_experiment(
        "phase3_selection", tune.with_parameters(_selection_trainable, prepared=prepared, recipes=recipes,
                                                 faults=faults),
        grid, tune.TuneConfig(max_concurrent_trials=concurrency, reuse_actors=True), config, run.experiments,
        Progress("phase 3: recipe selection", len(recipes) * folds, None, stream))
    selection = [{"status": "ok", "error": "", **{k: r.metrics[k] for k in
                                                   ("recipe", "fold", "error", "loss", "train_seconds", "train_images")}}
                 for r in ok] + [{"status": "failed", "error": _error_line(r.error),
                                  "recipe": recipes[int(r.config["recipe"])].name, "fold": int(r.config["fold"])}
                                 for r in failed]
    complete = {recipe.name for recipe in recipes
                if sum(1 for r in selection if r["recipe"] == recipe.name and r["status"] == "ok") == folds}
    check_failures("phase 3 (recipe selection)", len(recipes) * folds,
                   [f"{r['recipe']} fold {r['fold']}: {r['error']}" for r in selection if r["status"] != "ok"],
                   len(complete))
    decision, note = choose_recipe(prepared, recipes, selection, baseline)
    chosen = next(recipe for recipe in recipes if recipe.name == decision.chosen)
    spans["phase3"] = (t3, time.monotonic())
    costs["phase3_wall_s"] = spans["phase3"][1] - t3
    costs["phase3_device_s"] = sum(r["train_seconds"] for r in selection if r["status"] == "ok")
    return Outcome(children, probes, fit, rows, top, merged, recipes, selection, decision, chosen, note,
                   costs), spans


def _trial_row(result, config: SearchConfig, param_space: dict, error: str | None) -> dict[str, Any]:
    stream = int(result.config["stream"])
    row: dict[str, Any] = {"split": stream % config.splits, "repeat": stream // config.splits,
                           "index": int(result.config["index"]), "trial_id": trial_id(result),
                           "status": "failed" if error else "ok", "error": error or ""}
    for key in ("reward", "accuracy", "any_view", "loss", "min_loss", "seconds", "load_seconds"):
        row[key] = "" if error else result.metrics[key]
    row.update({k: result.config[k] for k in param_space})
    return row
