"""Fast AutoAugment search on Ray Tune: the orchestration layer, and the only module that imports Ray.

Phase 1 trains one child model per D_M/D_A split as parallel Tune trials (checkpointed every epoch).
Phase 2 is one Tune experiment whose trials each score a candidate policy with the density-matching
evaluator on a split's D_A; its searcher keeps one Bayesian optimiser per split and repeat, as the paper
does, while the workers (and the child models and data they cache) are shared. Phase 3 takes the top N
candidates of every split and repeat, merges their sub-policies without duplicates, then validates the
merged policy's strength: each split's child is trained again with the policy at a few strengths and the
best held-out accuracy wins, strength 0 being the baseline augmentation alone (density matching alone
favours policies that barely change the image and cannot say whether augmentation helps at all).
``policy.json`` holds the result; ``candidates.json`` the merged policy before that check.

Everything the trials compute lives in Tune's storage (``--storage``, a path or URI every node can
reach; by default inside the run directory), so a search spans machines and an interrupted one resumes
with every finished child model and policy trial kept.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import functools
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from policysearch.data import (DataError, ImageData, baseline_for, load_dataset, make_splits, normalization_for,
                               stratified_subset)
from policysearch.density import REWARDS, evaluate_policy
from policysearch.models import MODEL_NAMES, build_model
from policysearch.policy import Operation, Policy, merge_policies, software_versions, write_json_atomic
from policysearch.spaces import SearchSpace, load_space
from policysearch.train import TrainConfig, evaluate, train_model
from policysearch.transforms import BatchPolicyTransform

ALGORITHMS = ("optuna", "hyperopt", "random")
DEFAULT_SPACE = {"digits": "no_flips"}  # a flip or an inversion changes what a digit means
CHILD_FILE = "child.pt"


@dataclass(frozen=True)
class SearchConfig:
    """Everything that defines a search; written to ``config.json`` in the run directory."""

    dataset: str = "digits"
    data_root: str = "data"
    download: bool = False
    train_size: int | None = None  # None: the whole training split
    image_size: int | None = None
    model: str = "small_cnn"
    space: str | None = None  # None: the data set's default (no_flips for digits, else fast_autoaugment)
    algorithm: str = "optuna"
    splits: int = 5
    da_ratio: float = 0.4
    trials: int = 40  # B: policy trials per split and repeat
    repeats: int = 1  # T
    top_n: int = 10  # N: best policies kept per split and repeat
    num_views: int = 5
    reward: str = "accuracy"
    # Phase 3 trains each split's child again with the merged policy at these strengths (probabilities
    # scaled) and keeps the one with the best held-out accuracy; strength 0 is the phase-1 child. Empty: off.
    strengths: tuple[float, ...] = (1.0,)
    epochs: int = 20  # child-model epochs
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 5e-4
    seed: int = 0
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int = 0  # 0: as many as the resources allow
    address: str | None = None
    storage: str | None = None  # None: <run dir>/tune

    def __post_init__(self) -> None:
        checks = [
            (self.splits >= 1, f"--splits must be at least 1, got {self.splits}"),
            (0 < self.da_ratio < 1, f"--da-ratio must be between 0 and 1, got {self.da_ratio}"),
            (self.trials >= 1, f"--trials must be at least 1, got {self.trials}"),
            (self.repeats >= 1, f"--repeats must be at least 1, got {self.repeats}"),
            (self.top_n >= 1, f"--top-n must be at least 1, got {self.top_n}"),
            (self.num_views >= 1, f"--num-views must be at least 1, got {self.num_views}"),
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.cpus_per_trial > 0, f"--cpus-per-trial must be positive, got {self.cpus_per_trial}"),
            (self.gpus_per_trial >= 0, f"--gpus-per-trial must be >= 0, got {self.gpus_per_trial}"),
            (self.max_concurrent >= 0, f"--max-concurrent must be >= 0, got {self.max_concurrent}"),
            (self.algorithm in ALGORITHMS, f"--algorithm must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}"),
            (self.reward in REWARDS, f"--reward must be one of {', '.join(REWARDS)}, got {self.reward!r}"),
            (all(0 < v <= 1 for v in self.strengths), f"--strengths must lie in (0, 1], got {list(self.strengths)}"),
            (self.model in MODEL_NAMES, f"--model must be one of {', '.join(MODEL_NAMES)}, got {self.model!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def space_name(self) -> str:
        return self.space or DEFAULT_SPACE.get(self.dataset, "fast_autoaugment")

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                           weight_decay=self.weight_decay, seed=self.seed)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchConfig":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "strengths" in values:
            values["strengths"] = tuple(values["strengths"])
        return cls(**values)


@dataclass
class Prepared:
    """The checked inputs of a search: data, splits, space and normalisation (made before any work)."""

    config: SearchConfig
    data: ImageData
    splits: list[tuple[np.ndarray, np.ndarray]]
    space: SearchSpace
    mean: tuple[float, ...]
    std: tuple[float, ...]


def prepare(config: SearchConfig) -> Prepared:
    """Load and check everything a search needs; raises a one-line error before any work starts."""
    space = load_space(config.space_name)
    data = load_dataset(config.dataset, split="train", data_root=config.data_root, download=config.download,
                        image_size=config.image_size)
    if config.train_size is not None:
        data = stratified_subset(data, config.train_size, seed=config.seed)
    splits = make_splits(data.labels, k=config.splits, da_ratio=config.da_ratio, seed=config.seed)
    mean, std = normalization_for(config.dataset, data)
    return Prepared(config, data, splits, space, tuple(mean), tuple(std))


# ----------------------------------------------------------------------------------------------------
# Trial functions (run inside Ray workers; plain functions of their inputs)
# ----------------------------------------------------------------------------------------------------


def _device(config: SearchConfig) -> torch.device:
    return torch.device("cuda" if config.gpus_per_trial > 0 and torch.cuda.is_available() else "cpu")


def _use_threads(config: SearchConfig) -> None:
    torch.set_num_threads(max(1, int(config.cpus_per_trial)))


def _child_model(prepared: Prepared, split: int) -> torch.nn.Module:
    """A fresh child model with the same initial weights for a split in every phase (paired comparisons)."""
    torch.manual_seed(prepared.config.seed * 1000 + split)  # the worker's own RNG is not seeded
    data = prepared.data
    return build_model(prepared.config.model, data.num_classes, data.images.shape[1])


def train_child_trial(trial: dict[str, Any], *, prepared: Prepared) -> None:
    """Phase 1 trial: train the child model of one split on D_M, checkpointing through Tune every epoch."""
    from ray import tune

    config = prepared.config
    _use_threads(config)
    split = int(trial["split"])
    dm, da = prepared.splits[split]
    device = _device(config)
    data = prepared.data
    model = _child_model(prepared, split)
    baseline = baseline_for(config.dataset, data.images.shape[-1])
    with tempfile.TemporaryDirectory(prefix="policysearch-child-") as local:
        path = Path(local) / CHILD_FILE
        restored = tune.get_checkpoint()
        if restored is not None:
            with restored.as_directory() as folder:
                shutil.copy(Path(folder) / CHILD_FILE, path)
        started = time.perf_counter()

        def report(epoch: int, metrics: dict[str, Any]) -> None:
            metrics = {**metrics, "split": split, "train_seconds": time.perf_counter() - started}
            if epoch == config.epochs:
                held_out = evaluate(model, data.images[da], data.labels[da], mean=prepared.mean, std=prepared.std,
                                    device=device)
                metrics.update(da_accuracy=held_out["accuracy"], da_loss=held_out["loss"])
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(local))

        train_model(model, data.subset(dm), config.train_config(), baseline=baseline, mean=prepared.mean,
                    std=prepared.std, device=device, checkpoint_path=path, on_epoch=report)


def validate_strength_trial(trial: dict[str, Any], *, prepared: Prepared, policy: Policy) -> None:
    """Phase 3 trial: train a split's child on D_M with the merged policy at one strength; score D_A."""
    from ray import tune

    config = prepared.config
    _use_threads(config)
    split, strength = int(trial["split"]), float(trial["strength"])
    dm, da = prepared.splits[split]
    data, device = prepared.data, _device(config)
    model = _child_model(prepared, split)
    started = time.perf_counter()
    train_model(model, data.subset(dm), config.train_config(), augment=BatchPolicyTransform(policy.scaled(strength)),
                baseline=baseline_for(config.dataset, data.images.shape[-1]), mean=prepared.mean, std=prepared.std,
                device=device)
    held_out = evaluate(model, data.images[da], data.labels[da], mean=prepared.mean, std=prepared.std, device=device)
    tune.report({"split": split, "strength": strength, "da_accuracy": held_out["accuracy"],
                 "da_loss": held_out["loss"], "train_seconds": time.perf_counter() - started})


@functools.lru_cache(maxsize=4)
def _load_child(checkpoint_path: str, model_name: str, num_classes: int, channels: int,
                device: str) -> torch.nn.Module:
    """The frozen child model of a split, loaded once per worker process and kept for later trials."""
    model = build_model(model_name, num_classes, channels)
    state = torch.load(Path(checkpoint_path) / CHILD_FILE, weights_only=True, map_location=device)
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def score_policy_trial(trial: dict[str, Any], *, prepared: Prepared, children: Sequence[Any]) -> None:
    """Phase 2 trial: decode one candidate policy and score it on D_A with the frozen child model."""
    from ray import tune

    config = prepared.config
    _use_threads(config)
    started = time.perf_counter()
    device = _device(config)
    split = int(trial["stream"]) % config.splits
    with children[split].as_directory() as folder:
        model = _load_child(str(folder), config.model, prepared.data.num_classes, prepared.data.images.shape[1],
                            str(device))
    loaded = time.perf_counter()
    images, labels = _da_tensors(prepared, split, str(device))
    policy = prepared.space.decode({k: v for k, v in trial.items() if k != "stream"})
    # Common random numbers: every candidate of a split is scored on the same draws.
    generator = torch.Generator(device=device).manual_seed(config.seed * 1000 + split)
    score = evaluate_policy(model, images, labels, policy, mean=prepared.mean, std=prepared.std,
                            num_views=config.num_views, generator=generator)
    tune.report({"reward": score.reward(config.reward), **score.to_dict(), "split": split,
                 "load_seconds": loaded - started, "seconds": time.perf_counter() - started})


def _da_tensors(prepared: Prepared, split: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """D_A images and labels of a split on the trial's device (indexing a tensor is cheap on CPU)."""
    _, da = prepared.splits[split]
    index = torch.as_tensor(da)
    return prepared.data.images[index].to(device), prepared.data.labels[index].to(device)


# ----------------------------------------------------------------------------------------------------
# Orchestration
# ----------------------------------------------------------------------------------------------------


class Progress:
    """One line per finished trial: phase, trials done of total, best score, elapsed and remaining time."""

    def __init__(self, label: str, total: int, metric: str | None, stream=sys.stdout) -> None:
        self.label, self.total, self.metric, self.stream = label, total, metric, stream
        self.done, self.best, self.started = 0, -math.inf, time.monotonic()

    def trial_finished(self, result: dict[str, Any]) -> None:
        self.done += 1
        if self.metric and self.metric in result:
            self.best = max(self.best, float(result[self.metric]))
        elapsed = time.monotonic() - self.started
        remaining = elapsed / self.done * (self.total - self.done)
        best = f"  best {self.metric} {self.best:.4f}" if self.metric and self.best > -math.inf else ""
        print(f"[{self.label}] {self.done}/{self.total} trials{best}  elapsed {_clock(elapsed)}"
              f"  remaining ~{_clock(remaining)}", file=self.stream, flush=True)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def _tune_callback(progress: Progress):
    from ray import tune

    class _Callback(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            progress.trial_finished(trial.last_result or {})

    return _Callback()


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


def _start_ray(config: SearchConfig) -> bool:
    """Join ``--address`` or start a local Ray; True when this process started it (and must stop it)."""
    import ray

    _quiet_ray_environment()
    if ray.is_initialized():
        return False
    if config.address:
        ray.init(address=config.address, log_to_driver=False)
        return False
    gpus = torch.cuda.device_count()
    ray.init(address="local", num_cpus=os.cpu_count() or 1, num_gpus=gpus, include_dashboard=False,
             log_to_driver=False, object_store_memory=200 * 1024 * 1024, configure_logging=False)
    return True


def _storage(config: SearchConfig, run_dir: Path) -> str:
    return config.storage or str((run_dir / "tune").resolve())


def _trial_dirname(trial) -> str:
    return f"{trial.trainable_name}_{trial.trial_id}"


def _resources(config: SearchConfig) -> dict[str, float]:
    return {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial}


def _run_tuner(name: str, trainable, param_space: dict, tune_config, config: SearchConfig, run_dir: Path,
               progress: Progress):
    """Run (or resume) one Tune experiment stored under ``<storage>/<name>``."""
    from ray import tune

    storage = _storage(config, run_dir)
    path = f"{storage.rstrip('/')}/{name}"
    trainable = tune.with_resources(trainable, _resources(config))
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True,
                                   param_space=param_space)
    else:
        run_config = tune.RunConfig(name=name, storage_path=storage, verbose=0, callbacks=[_tune_callback(progress)],
                                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                    failure_config=tune.FailureConfig(max_failures=2))
        tune_config.trial_dirname_creator = _trial_dirname
        tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)
    results = tuner.fit()
    errors = [r.error for r in results if r.error is not None]
    if errors:
        raise RuntimeError(f"{len(errors)} trial(s) of {name} failed; first error: {errors[0]}")
    return results


def _searcher(config: SearchConfig, seed: int):
    """One Bayesian optimiser (or random sampler) for one split and repeat, seeded."""
    if config.algorithm == "hyperopt":
        from ray.tune.search.hyperopt import HyperOptSearch

        return HyperOptSearch(random_state_seed=seed, n_initial_points=min(20, max(1, config.trials // 4)))
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if config.algorithm == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(1, config.trials // 4)))
    return OptunaSearch(sampler=sampler)


def _split_searcher(config: SearchConfig, param_space: dict[str, Any]):
    """A Tune searcher that runs one independent optimiser per (split, repeat) inside one experiment.

    The paper optimises each split separately; running them as one Tune experiment lets the workers
    (and the child models and data they hold) be reused across splits instead of restarting per split.
    Suggestions go round-robin to the stream with the fewest trials, so the order is deterministic.
    """
    import base64

    from ray.tune.search import Searcher

    streams = config.splits * config.repeats

    class SplitSearcher(Searcher):
        def __init__(self) -> None:
            super().__init__(metric="reward", mode="max")
            self.subs = [_searcher(config, config.seed * 7919 + s) for s in range(streams)]
            for sub in self.subs:
                sub.set_search_properties("reward", "max", param_space)
            self.suggested = [0] * streams
            self.owner: dict[str, int] = {}

        def suggest(self, trial_id: str):
            stream = min(range(streams), key=lambda s: (self.suggested[s], s))
            if self.suggested[stream] >= config.trials:
                return Searcher.FINISHED
            params = self.subs[stream].suggest(trial_id)
            if params is None:
                return None
            self.suggested[stream] += 1
            self.owner[trial_id] = stream
            return {**params, "stream": stream}

        def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
            stream = self.owner.get(trial_id)
            if stream is not None:
                self.subs[stream].on_trial_complete(trial_id, result, error)

        def save(self, checkpoint_path: str) -> None:
            states = []
            for k, sub in enumerate(self.subs):
                part = f"{checkpoint_path}.part{k}"
                sub.save(part)
                states.append(base64.b64encode(Path(part).read_bytes()).decode("ascii"))
                os.remove(part)
            document = {"suggested": self.suggested, "owner": self.owner, "subs": states}
            Path(checkpoint_path).write_text(json.dumps(document), encoding="utf-8")

        def restore(self, checkpoint_path: str) -> None:
            document = json.loads(Path(checkpoint_path).read_text(encoding="utf-8"))
            self.suggested, self.owner = document["suggested"], document["owner"]
            for k, (sub, state) in enumerate(zip(self.subs, document["subs"])):
                part = f"{checkpoint_path}.part{k}"
                Path(part).write_bytes(base64.b64decode(state))
                sub.restore(part)
                os.remove(part)

    return SplitSearcher()


def tune_space(space: SearchSpace) -> dict[str, Any]:
    """The search space's parameters as Ray Tune sampling objects."""
    from ray import tune

    out: dict[str, Any] = {}
    for p in space.parameters():
        if p.kind == "uniform":
            out[p.name] = tune.uniform(p.low, p.high)
        else:
            out[p.name] = tune.choice(list(p.values))
    return out


def _concurrency(config: SearchConfig) -> int:
    import ray

    if config.max_concurrent:
        return config.max_concurrent
    available = ray.cluster_resources()
    slots = available.get("CPU", 1) / config.cpus_per_trial
    if config.gpus_per_trial > 0:
        slots = min(slots, available.get("GPU", 0) / config.gpus_per_trial)
    return max(1, int(slots))


@dataclass
class SearchResult:
    """Where a finished search put its outputs, and what it found."""

    run_dir: Path
    policy_path: Path
    policy: Policy
    costs: dict[str, float]
    top: list[dict[str, Any]] = field(default_factory=list)


def run_search(config: SearchConfig, run_dir: str | Path, *, resume: bool = False,
               stream=sys.stdout) -> SearchResult:
    """Run (or resume) a whole search and write ``policy.json`` and ``report.md`` into ``run_dir``."""
    run_dir = Path(run_dir)
    prepared = prepare(config)  # every input error surfaces here, before Ray starts
    _write_config(config, run_dir, resume)
    from ray import tune

    started_ray = _start_ray(config)
    try:
        costs: dict[str, float] = {}
        concurrency = _concurrency(config)
        print(f"search: {len(prepared.data)} {config.dataset} images, {config.splits} splits, model {config.model}, "
              f"space {prepared.space.name}, {config.algorithm}, {concurrency} concurrent trial(s); run dir {run_dir}",
              file=stream, flush=True)

        t0 = time.monotonic()
        progress = Progress("phase 1: child models", config.splits, "da_accuracy", stream)
        children = _run_tuner(
            "phase1_children", tune.with_parameters(train_child_trial, prepared=prepared),
            {"split": tune.grid_search(list(range(config.splits)))},
            tune.TuneConfig(max_concurrent_trials=concurrency, reuse_actors=False), config, run_dir, progress)
        child_results = sorted(children, key=lambda r: r.metrics["split"])
        costs["phase1_wall_s"] = time.monotonic() - t0
        costs["phase1_device_s"] = sum(r.metrics["train_seconds"] for r in child_results)

        t1 = time.monotonic()
        param_space = tune_space(prepared.space)
        streams = config.splits * config.repeats
        progress = Progress("phase 2: policy trials", streams * config.trials, "reward", stream)
        trainable = tune.with_parameters(score_policy_trial, prepared=prepared,
                                         children=[r.checkpoint for r in child_results])
        tune_config = tune.TuneConfig(metric="reward", mode="max", num_samples=streams * config.trials,
                                      search_alg=_split_searcher(config, param_space),
                                      max_concurrent_trials=concurrency, reuse_actors=True)
        # The searcher holds the space, so the Tuner gets none of its own.
        results = _run_tuner("phase2_policies", trainable, {}, tune_config, config, run_dir, progress)
        rows = [{"split": r.metrics["split"], "repeat": r.config["stream"] // config.splits,
                 "trial_id": r.metrics.get("trial_id"),
                 **{k: r.metrics[k] for k in ("reward", "accuracy", "any_view", "loss", "min_loss", "seconds",
                                               "load_seconds")},
                 **{k: r.config[k] for k in param_space}} for r in results]
        rows.sort(key=lambda row: (row["repeat"], row["split"]))
        costs["phase2_wall_s"] = time.monotonic() - t1
        costs["phase2_device_s"] = sum(row["seconds"] for row in rows)
        _write_csv(run_dir / "trials.csv", rows)

        t2 = time.monotonic()
        merged, top = _merge_top(prepared, rows)
        validation = [{"split": r.metrics["split"], "strength": 0.0, "da_accuracy": r.metrics["da_accuracy"],
                       "da_loss": r.metrics["da_loss"]} for r in child_results]
        costs["phase3_device_s"] = 0.0
        if config.strengths:
            progress = Progress("phase 3: validate strength", config.splits * len(config.strengths), None, stream)
            grid = {"split": tune.grid_search(list(range(config.splits))),
                    "strength": tune.grid_search(list(config.strengths))}
            checked = _run_tuner("phase3_validate", tune.with_parameters(validate_strength_trial, prepared=prepared,
                                                                          policy=merged),
                                 grid, tune.TuneConfig(max_concurrent_trials=concurrency, reuse_actors=True), config,
                                 run_dir, progress)
            validation += [{k: r.metrics[k] for k in ("split", "strength", "da_accuracy", "da_loss")} for r in checked]
            costs["phase3_device_s"] = sum(r.metrics["train_seconds"] for r in checked)
        costs["phase3_wall_s"] = time.monotonic() - t2
    finally:
        if started_ray:
            import ray

            ray.shutdown()

    return _export(prepared, run_dir, merged, top, validation, child_results, costs)


def _merge_top(prepared: Prepared, rows: list[dict[str, Any]]) -> tuple[Policy, list[dict[str, Any]]]:
    """The top N candidates of every split and repeat, their sub-policies merged without duplicates."""
    config = prepared.config
    top: list[dict[str, Any]] = []
    for repeat in range(config.repeats):
        for split in range(config.splits):
            group = [r for r in rows if r["split"] == split and r["repeat"] == repeat]
            group.sort(key=lambda r: r["reward"], reverse=True)
            top.extend(group[:config.top_n])
    names = prepared.space.parameter_names()
    return merge_policies([prepared.space.decode({k: row[k] for k in names}) for row in top]), top


def choose_strength(validation: list[dict[str, Any]]) -> tuple[float, list[dict[str, float]]]:
    """The strength with the best mean held-out accuracy over the splits (then the lower mean loss).

    Returns it with one summary row per strength. Strength 0 is the baseline augmentation alone.
    """
    summary = []
    for strength in sorted({row["strength"] for row in validation}):
        rows = [row for row in validation if row["strength"] == strength]
        summary.append({"strength": strength, "da_accuracy": float(np.mean([r["da_accuracy"] for r in rows])),
                        "da_loss": float(np.mean([r["da_loss"] for r in rows])), "splits": len(rows)})
    best = max(summary, key=lambda row: (row["da_accuracy"], -row["da_loss"]))
    return best["strength"], summary


def _export(prepared: Prepared, run_dir: Path, merged: Policy, top: list[dict[str, Any]],
            validation: list[dict[str, Any]], child_results, costs: dict[str, float]) -> SearchResult:
    """Write the final policy (at the validated strength) with its provenance, and the report."""
    config = prepared.config
    strength, summary = choose_strength(validation)
    if strength == 0.0 and config.strengths:
        final = Policy([[Operation("Identity", 1.0, 0.0)]])  # nothing beat the baseline augmentation alone
    else:
        final = merged.scaled(strength) if config.strengths else merged
    costs["total_device_s"] = costs["phase1_device_s"] + costs["phase2_device_s"] + costs["phase3_device_s"]
    children = [{"split": r.metrics["split"], "da_accuracy": r.metrics.get("da_accuracy"),
                 "train_seconds": r.metrics["train_seconds"]} for r in child_results]
    metadata = {
        "dataset": config.dataset,
        "search_space": prepared.space.name,
        "score": {"reward": config.reward, "top_mean": float(np.mean([r["reward"] for r in top])),
                  "child_da_accuracy_without_policy": float(np.mean([c["da_accuracy"] for c in children])),
                  "strength": strength, "validation": summary},
        "search_cost": {k: round(v, 3) for k, v in costs.items()},
        "search": {k: v for k, v in asdict(config).items() if k not in ("address", "storage")},
        "command": " ".join(sys.argv),
    }
    name = f"policysearch-{config.dataset}-{prepared.space.name}"
    Policy(merged.sub_policies, {**metadata, "note": "merged candidates before strength validation"},
           name=f"{name}-candidates").save(run_dir / "candidates.json")
    policy = Policy(final.sub_policies, metadata, name=name)
    policy_path = policy.save(run_dir / "policy.json")
    _write_report(run_dir / "report.md", policy, merged, top, children, summary, strength, costs, config,
                  prepared.space)
    return SearchResult(run_dir, policy_path, policy, costs, top)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _write_config(config: SearchConfig, run_dir: Path, resume: bool) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.json"
    document = {"search": asdict(config), "resolved_space": config.space_name, "command": " ".join(sys.argv),
                "software": software_versions()}
    if resume and path.exists():
        return
    write_json_atomic(path, document)


def _write_report(path: Path, policy: Policy, merged: Policy, top: list[dict[str, Any]],
                  children: list[dict[str, Any]], summary: list[dict[str, float]], strength: float,
                  costs: dict[str, float], config: SearchConfig, space: SearchSpace) -> None:
    if strength == 0.0 and config.strengths:
        verdict = ("no strength of the merged policy beat the baseline augmentation alone on the held-out splits, "
                   "so `policy.json` is the identity: keep your baseline augmentation")
    else:
        verdict = f"`policy.json` holds the merged policy at strength {strength:g} ({len(policy)} sub-policies)"
    lines = [f"# Search report: {config.dataset}, space {space.name}", "",
             f"- result: {verdict}",
             f"- {config.splits} splits x {config.repeats} repeat(s) x {config.trials} trials ({config.algorithm}),"
             f" top {config.top_n} kept per split and repeat ({len(merged)} sub-policies merged), reward "
             f"`{config.reward}` over {config.num_views} views",
             f"- child model `{config.model}`, {config.epochs} epochs", "",
             "## Cost", "", "| phase | wall (s) | device (s) |", "|---|---|---|",
             f"| 1: child models | {costs['phase1_wall_s']:.1f} | {costs['phase1_device_s']:.1f} |",
             f"| 2: policy trials | {costs['phase2_wall_s']:.1f} | {costs['phase2_device_s']:.1f} |",
             f"| 3: merge and validate strength | {costs['phase3_wall_s']:.1f} | {costs['phase3_device_s']:.1f} |", "",
             "## Strength of the merged policy (held-out accuracy after training on D_M with it)", "",
             "| strength | mean D_A accuracy | mean D_A loss | splits |", "|---|---|---|---|"]
    lines += [f"| {row['strength']:g}{' (baseline only)' if row['strength'] == 0 else ''} | {row['da_accuracy']:.4f} "
              f"| {row['da_loss']:.4f} | {row['splits']} |" for row in summary]
    lines += ["", "## Child models (accuracy on D_A without a policy)", "", "| split | D_A accuracy | train (s) |",
              "|---|---|---|"]
    lines += [f"| {c['split']} | {c['da_accuracy']:.4f} | {c['train_seconds']:.1f} |" for c in children]
    lines += ["", "## Best candidates", "", "| split | reward | accuracy | any view | sub-policies |", "|---|---|---|---|---|"]
    for row in sorted(top, key=lambda r: r["reward"], reverse=True)[:10]:
        decoded = space.decode({k: row[k] for k in space.parameter_names()})
        text = "; ".join(" + ".join(f"{s.op}({s.prob:.2f}, {s.level:.2f})" for s in sub) for sub in decoded)
        lines.append(f"| {row['split']} | {row['reward']:.4f} | {row['accuracy']:.4f} | {row['any_view']:.4f} | {text} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``policysearch search`` options (defaults: a digits search that fits in minutes on 2 CPU cores)."""
    d = SearchConfig()
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", default=d.dataset, help="digits (embedded), cifar10, cifar100, svhn or imagefolder:PATH")
    g.add_argument("--data-root", default=d.data_root, help="where downloadable data sets live (default: %(default)s)")
    g.add_argument("--download", action="store_true", help="download cifar/svhn into --data-root when online")
    g.add_argument("--train-size", type=int, default=None, help="stratified reduced training set (e.g. 4000)")
    g.add_argument("--image-size", type=int, default=None, help="resize images to this size")
    g = parser.add_argument_group("search")
    g.add_argument("--space", default=None, help="search space name or YAML path (default: no_flips for digits, "
                                                 "fast_autoaugment otherwise)")
    g.add_argument("--algorithm", choices=ALGORITHMS, default=d.algorithm, help="optimiser (default: %(default)s)")
    g.add_argument("--splits", type=int, default=d.splits, help="K D_M/D_A splits (default: %(default)s)")
    g.add_argument("--da-ratio", type=float, default=d.da_ratio, help="share of D_A (default: %(default)s)")
    g.add_argument("--trials", type=int, default=d.trials, help="B policy trials per split (default: %(default)s)")
    g.add_argument("--repeats", type=int, default=d.repeats, help="T repeats (default: %(default)s)")
    g.add_argument("--top-n", type=int, default=d.top_n, help="N best policies kept per split (default: %(default)s)")
    g.add_argument("--num-views", type=int, default=d.num_views, help="views per D_A image (default: %(default)s)")
    g.add_argument("--reward", choices=REWARDS, default=d.reward, help="what the optimiser maximises (default: %(default)s)")
    g.add_argument("--strengths", type=float, nargs="*", default=list(d.strengths), metavar="S",
                   help="phase 3: strengths (probability scales) of the merged policy to validate against the "
                        "baseline by training each split's child with it; none: skip (default: %(default)s)")
    g.add_argument("--seed", type=int, default=d.seed)
    g = parser.add_argument_group("child models")
    g.add_argument("--model", choices=MODEL_NAMES, default=d.model)
    g.add_argument("--epochs", type=int, default=d.epochs)
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--lr", type=float, default=d.lr)
    g = parser.add_argument_group("resources")
    g.add_argument("--cpus-per-trial", type=float, default=d.cpus_per_trial)
    g.add_argument("--gpus-per-trial", type=float, default=d.gpus_per_trial, help="0.25 packs four trials on a GPU")
    g.add_argument("--max-concurrent", type=int, default=d.max_concurrent, help="0: as many as resources allow")
    g.add_argument("--address", default=None, help="join an existing Ray cluster (e.g. 10.0.0.1:6379)")
    g.add_argument("--storage", default=None, help="Tune storage path/URI every node can reach (default: RUN_DIR/tune)")
    g = parser.add_argument_group("output")
    g.add_argument("--out", default=None, help="run directory (default: runs/search-TIMESTAMP)")
    g.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue an interrupted search in RUN_DIR")


def config_from_args(args: argparse.Namespace) -> SearchConfig:
    return SearchConfig(dataset=args.dataset, data_root=args.data_root, download=args.download,
                        train_size=args.train_size, image_size=args.image_size, model=args.model, space=args.space,
                        algorithm=args.algorithm, splits=args.splits, da_ratio=args.da_ratio, trials=args.trials,
                        repeats=args.repeats, top_n=args.top_n, num_views=args.num_views, reward=args.reward,
                        strengths=tuple(args.strengths),
                        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                        cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
                        max_concurrent=args.max_concurrent, address=args.address, storage=args.storage)


def run(args: argparse.Namespace) -> int:
    """``policysearch search``: run or resume a search and print where the policy is."""
    if args.resume:
        run_dir = Path(args.resume)
        saved = run_dir / "config.json"
        if not saved.exists():
            raise DataError(f"--resume {run_dir}: no config.json there; is it a policysearch run directory?")
        config = SearchConfig.from_dict(json.loads(saved.read_text(encoding="utf-8"))["search"])
        if args.address:
            config = replace(config, address=args.address)
    else:
        config = config_from_args(args)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path(args.out) if args.out else Path("runs") / f"search-{stamp}"
        if (run_dir / "policy.json").exists():
            raise DataError(f"--out {run_dir} already holds a finished search; choose another folder")
    result = run_search(config, run_dir, resume=bool(args.resume))
    c = result.costs
    strength = result.policy.metadata["score"]["strength"]
    print(f"\npolicy: {result.policy_path} ({len(result.policy)} sub-policies, strength {strength:g})")
    print(f"report: {run_dir / 'report.md'}")
    print(f"cost: phase 1 {c['phase1_wall_s']:.0f} s, phase 2 {c['phase2_wall_s']:.0f} s, "
          f"phase 3 {c['phase3_wall_s']:.0f} s wall")
    if strength == 0.0 and config.strengths:
        print("the strength check found no gain over the baseline augmentation on the held-out splits, so "
              "policy.json is the identity; the merged candidates are in candidates.json, starting with:")
        print(Policy.load(run_dir / "candidates.json").describe(limit=5))
    else:
        print("best sub-policies:")
        print(result.policy.describe(limit=5))
    return 0
