"""The work of phases 1 and 2 as plain functions of their inputs; Ray is not imported here.

:func:`prepare` loads and checks the data once in the driver. :func:`train_child` trains the child model
of one split on D_M (phase 1) and :func:`score_policy` scores one candidate policy on a split's D_A with
that frozen child (phase 2). The Tune layer (``policysearch.search.tuning``) runs them as trials and
hands them a ``report`` callable and folders; a test calls them directly.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from policysearch.data import ImageData, baseline_for, load_dataset, make_splits, normalization_for, stratified_subset
from policysearch.density import evaluate_policy
from policysearch.pretrained import ModelSpec, check_model, fit_image_size
from policysearch.policy import Baseline
from policysearch.search.config import SearchConfig
from policysearch.search.faults import Faults
from policysearch.selection import crossfit_folds
from policysearch.spaces import SearchSpace, load_space
from policysearch.train import evaluate, fit_to_data, train_model

__all__ = ["CHILD_FILE", "Prepared", "child_model", "prepare", "score_policy", "train_child"]

CHILD_FILE = "child.pt"
Report = Callable[[dict[str, Any]], None]


@dataclass
class Prepared:
    """The checked inputs of a search: data, splits, space and normalisation (made before any work)."""

    config: SearchConfig
    data: ImageData
    splits: list[tuple[np.ndarray, np.ndarray]]
    space: SearchSpace
    mean: tuple[float, ...]
    std: tuple[float, ...]
    baseline: Baseline  # the data set's: the children train with it, D_A views get it after the policy
    folds: list[tuple[np.ndarray, np.ndarray]]  # the selection's cross-fit (train, held-out) folds

    @property
    def model_spec(self) -> ModelSpec:
        """The child and selection models: architecture, classes, channels and the checkpoint they start from."""
        c = self.config
        return ModelSpec(c.model, self.data.num_classes, int(self.data.images.shape[1]), c.weights, c.freeze_backbone)

    def new_model(self) -> torch.nn.Module:
        """A child or selection model, built and loaded from the checkpoint (seed torch first)."""
        return self.model_spec.build()


def prepare(config: SearchConfig) -> Prepared:
    """Load and check everything a search needs; raises a one-line error before any work starts."""
    space = load_space(config.space_name)
    data = load_dataset(config.dataset, split="train", data_root=config.data_root, download=config.download,
                        image_size=config.image_size)
    if config.train_size is not None:
        data = stratified_subset(data, config.train_size, seed=config.seed)
    data = fit_image_size(data, config.model, config.image_size)
    splits = make_splits(data.labels, k=config.splits, da_ratio=config.da_ratio, seed=config.seed)
    folds = crossfit_folds(data.labels.numpy(), config.selection_folds, config.selection_repeats, seed=config.seed)
    mean, std = normalization_for(config.dataset, data)
    baseline = baseline_for(config.dataset, data.images.shape[-1])
    prepared = Prepared(config, data, splits, space, tuple(mean), tuple(std), baseline, folds)
    check_model(prepared.model_spec, int(data.images.shape[-1]))  # the weights file and the image size
    return prepared


def device_for(config: SearchConfig) -> torch.device:
    """CUDA when the trial was given a GPU and torch sees one, else the CPU."""
    return torch.device("cuda" if config.gpus_per_trial > 0 and torch.cuda.is_available() else "cpu")


def use_threads(config: SearchConfig) -> None:
    torch.set_num_threads(max(1, int(config.cpus_per_trial)))


def child_model(prepared: Prepared, split: int) -> torch.nn.Module:
    """A fresh child model with the same initial weights for a split in every phase (paired comparisons)."""
    torch.manual_seed(prepared.config.seed * 1000 + split)  # a worker's own RNG is not seeded
    return prepared.new_model()


def train_child(prepared: Prepared, split: int, folder: Path, report: Report, faults: Faults = Faults()) -> None:
    """Phase 1: train the child model of ``split`` on D_M with the baseline augmentation only, with
    enough optimizer steps for the size of D_M (``train.fit_to_data``).

    The full training state is saved to ``folder/child.pt`` after every epoch (and resumed from there if
    it exists); ``report(metrics)`` follows each save, the last one with the child's D_A accuracy.
    """
    faults.reach("child", split=split)
    config = prepared.config
    use_threads(config)
    dm, da = prepared.splits[split]
    device = device_for(config)
    data = prepared.data
    model = child_model(prepared, split)
    train_config = fit_to_data(config.train_config(), len(dm), config.min_steps)
    started = time.perf_counter()

    def on_epoch(epoch: int, metrics: dict[str, Any]) -> None:
        metrics = {**metrics, "split": split, "train_seconds": time.perf_counter() - started}
        if epoch == train_config.epochs:
            held_out = evaluate(model, data.images[da], data.labels[da], mean=prepared.mean, std=prepared.std,
                                device=device)
            metrics.update(da_accuracy=held_out["accuracy"], da_loss=held_out["loss"])
        report(metrics)

    train_model(model, data.subset(dm), train_config, baseline=prepared.baseline, mean=prepared.mean, std=prepared.std, device=device, checkpoint_path=folder / CHILD_FILE,
                on_epoch=on_epoch)


@functools.lru_cache(maxsize=16)  # more than the splits a worker cycles through
def _load_child(folder: str, spec: ModelSpec, device: str) -> torch.nn.Module:
    """The frozen child model in ``folder``, loaded once per worker process and kept for later trials."""
    model = spec.build()
    state = torch.load(Path(folder) / CHILD_FILE, weights_only=True, map_location=device)
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def score_policy(prepared: Prepared, params: Mapping[str, Any], split: int, child_folder: Path, *,
                 repeat: int = 0, index: int = 0, faults: Faults = Faults()) -> dict[str, Any]:
    """Phase 2: decode the candidate ``params`` and score it on D_A of ``split`` with its frozen child.

    Returns the reward the optimiser maximises, every score of :class:`policysearch.density.PolicyScore`
    and the seconds spent. ``repeat`` and ``index`` (the index-th candidate of that split and repeat)
    only name the trial.
    """
    faults.reach("score", split=split, repeat=repeat, index=index)
    config = prepared.config
    use_threads(config)
    started = time.perf_counter()
    device = device_for(config)
    model = _load_child(str(child_folder), prepared.model_spec, str(device))
    loaded = time.perf_counter()
    _, da = prepared.splits[split]
    index_da = torch.as_tensor(da)
    images, labels = prepared.data.images[index_da].to(device), prepared.data.labels[index_da].to(device)
    policy = prepared.space.decode({k: params[k] for k in prepared.space.parameter_names()})
    # D_A views get the policy followed by the baseline augmentation the child trained with, and every
    # candidate of a split is scored on common random numbers in every view.
    score = evaluate_policy(model, images, labels, policy.with_baseline(prepared.baseline), mean=prepared.mean,
                            std=prepared.std, num_views=config.num_views, seed=config.seed * 1000 + split)
    return {"reward": score.reward(config.reward), **score.to_dict(), "split": split,
            "load_seconds": loaded - started, "seconds": time.perf_counter() - started}
