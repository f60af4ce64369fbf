"""The work of phases 1 and 2 as plain functions of their inputs; Ray is not imported here.

:func:`prepare` loads and checks the data once in the driver (or takes the :class:`Inputs` given in
Python). :func:`train_child` trains the child model of one split on D_M (phase 1) and :func:`score_policy`
scores one candidate policy on a split's D_A with that frozen child (phase 2). The Tune layer
(``policysearch.search.tuning``) runs them as trials and hands them a ``report`` callable and folders; a
test calls them directly.
"""

from __future__ import annotations

import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from policysearch.atomic import save_torch_atomic
from policysearch.training.data import ImageData, baseline_for, load_dataset, make_splits, normalization_for, stratified_subset
from policysearch.density import evaluate_policy
from policysearch.training.pretrained import Builder, ModelSpec, check_model, fit_image_size, is_callable_model, model_ref
from policysearch.augment.policy import Baseline
from policysearch.search.config import SearchConfig
from policysearch.search.faults import Faults
from policysearch.selection import auto_repeats, crossfit_folds
from policysearch.spaces import SearchSpace, load_space
from policysearch.training.train import evaluate, fit_to_data, train_model

__all__ = ["CHILD_FILE", "CHILD_MODEL_FILE", "ChildCache", "ChildSource", "Inputs", "Prepared", "child_and_da",
           "child_model",
           "frozen_child", "prepare", "score_policy", "train_child"]

CHILD_FILE = "child.pt"  # the full training state of a child (weights, optimizer, RNGs), saved every epoch
CHILD_MODEL_FILE = "child_model.pt"  # the trained weights alone, written beside it after the last epoch
Report = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Inputs:
    """What a search is given as Python objects rather than as settings (``policysearch.search``): the data,
    read into memory by :func:`policysearch.user_data.read_data`, and a model callable. The settings name
    them (``python:WHAT#FINGERPRINT``, ``callable:MODULE.NAME``), so config.json records what they were."""

    data: ImageData | None = None
    builder: Builder | None = None


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
    builder: Builder | None = None  # the model callable of a ``callable:`` model (shipped to the workers with this)

    @property
    def model_spec(self) -> ModelSpec:
        """The child and selection models: architecture, classes, channels and the checkpoint they start from."""
        c = self.config
        return ModelSpec(c.model, self.data.num_classes, int(self.data.images.shape[1]), c.weights, c.freeze_backbone,
                         self.builder)

    def new_model(self) -> torch.nn.Module:
        """A child or selection model, built and loaded from the checkpoint (seed torch first)."""
        return self.model_spec.build()


def prepare(config: SearchConfig, inputs: Inputs | None = None) -> Prepared:
    """Load and check everything a search needs; raises a one-line error before any work starts.

    ``inputs`` holds the data and the model callable given in Python, which ``config`` names."""
    inputs = inputs or Inputs()
    if is_callable_model(config.model) and inputs.builder is None:
        raise ValueError(f"{model_ref(config.model)}: the run's model is a Python callable, which only "
                         "policysearch.search(model=...) can take; continue such a run from Python with the same "
                         "callable")
    space = load_space(config.space_name)
    if inputs.data is not None:
        data = inputs.data
    else:
        data = load_dataset(config.dataset, split="train", data_root=config.data_root, download=config.download,
                            image_size=config.image_size)
    if config.train_size is not None:
        data = stratified_subset(data, config.train_size, seed=config.seed)
    data = fit_image_size(data, config.model, config.image_size)
    splits = make_splits(data.labels, k=config.splits, da_ratio=config.da_ratio, seed=config.seed)
    repeats = config.selection_repeats or auto_repeats(len(data))
    folds = crossfit_folds(data.labels.numpy(), config.selection_folds, repeats, seed=config.seed)
    mean, std = normalization_for(config.dataset, data)
    baseline = baseline_for(config.dataset, data.images.shape[-1])
    prepared = Prepared(config, data, splits, space, tuple(mean), tuple(std), baseline, folds, inputs.builder)
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


def train_child(prepared: Prepared, split: int, folder: Path, report: Report, faults: Faults = Faults(),
                on_trained: Callable[[torch.nn.Module], dict[str, Any]] | None = None, spent: float = 0.0) -> None:
    """Phase 1: train the child model of ``split`` on D_M with the baseline augmentation only, with
    enough optimizer steps for the size of D_M (``train.fit_to_data``).

    The full training state is saved to ``folder/child.pt`` after every epoch (and resumed from there if
    it exists); ``report(metrics)`` follows each save, the last one with the child's D_A accuracy and
    after ``folder/child_model.pt`` (the weights alone, what phase 2 fetches) is written. The metrics of
    ``on_trained(model)``, called with the trained model in eval mode, join that last report (phase 1b's
    domain probe runs there, on the model in memory). Every report carries ``epoch`` and ``epochs``, so a
    caller can keep only some of the saves. ``train_seconds`` counts from ``spent``, the seconds earlier
    attempts of this training spent (a resumed one continues their checkpoint).
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
        metrics = {**metrics, "split": split, "epochs": train_config.epochs,
                   "train_seconds": spent + time.perf_counter() - started}
        if epoch == train_config.epochs:
            save_torch_atomic(folder / CHILD_MODEL_FILE, {"model": model.state_dict()})
            held_out = evaluate(model, data.images[da], data.labels[da], mean=prepared.mean, std=prepared.std,
                                device=device)
            metrics.update(da_accuracy=held_out["accuracy"], da_loss=held_out["loss"])
            if on_trained is not None:
                model.zero_grad(set_to_none=True)  # the last step's gradients are not needed to probe
                metrics.update(on_trained(model.eval()))
        report(metrics)

    train_model(model, data.subset(dm), train_config, baseline=prepared.baseline, mean=prepared.mean, std=prepared.std, device=device, checkpoint_path=folder / CHILD_FILE,
                on_epoch=on_epoch)


@dataclass(frozen=True)
class ChildSource:
    """Where the frozen child of one split is: ``key`` names it in a worker's cache (run id and split),
    ``fetch(folder)`` puts its model file into the empty ``folder`` (or finds it elsewhere) and returns
    the file's path. ``fetch`` runs only on a cache miss, so a remote model is downloaded once per worker."""

    key: str
    fetch: Callable[[Path], Path]

    @classmethod
    def in_folder(cls, folder: str | Path) -> "ChildSource":
        """A child in a local folder (``child_model.pt``, or the training state of an older run's ``child.pt``)."""
        folder = Path(folder).resolve()
        return cls(str(folder), lambda _: _model_file(folder))


def _model_file(folder: Path) -> Path:
    model_only = folder / CHILD_MODEL_FILE
    return model_only if model_only.exists() else folder / CHILD_FILE


class ChildCache:
    """The frozen child models one worker process has loaded, least recently used dropped first.

    It keeps at least as many models as the splits it is asked for, so that a worker cycling over every
    split loads each child once (a WRN-28-10 holds about 146 MB of weights per child).
    """

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._models: OrderedDict[tuple, torch.nn.Module] = OrderedDict()

    def get(self, key: tuple, load: Callable[[], torch.nn.Module], keep: int = 0) -> tuple[torch.nn.Module, bool]:
        """The model under ``key`` and True, or ``load()``'s (now kept) and False; ``keep`` raises the size."""
        self.size = max(self.size, keep)
        model = self._models.get(key)
        if model is not None:
            self._models.move_to_end(key)
            return model, True
        model = load()
        self._models[key] = model
        while len(self._models) > self.size:
            self._models.popitem(last=False)
        return model, False

    def __len__(self) -> int:
        return len(self._models)


_CHILDREN = ChildCache()  # per worker process; Tune reuses the process for many trials (reuse_actors)


def frozen_child(prepared: Prepared, split: int, child: ChildSource | str | Path,
                 cache: ChildCache = _CHILDREN) -> tuple[torch.nn.Module, bool, float]:
    """The frozen child of ``split`` on this trial's device, whether it came from ``cache``, and the
    seconds it took. The cache is looked up before anything is fetched."""
    started = time.perf_counter()
    source = child if isinstance(child, ChildSource) else ChildSource.in_folder(child)
    config = prepared.config
    device = device_for(config)
    spec = prepared.model_spec

    def load() -> torch.nn.Module:
        model = spec.build()
        with tempfile.TemporaryDirectory(prefix="policysearch-child-") as folder:
            state = torch.load(source.fetch(Path(folder)), weights_only=True, map_location=device)
        model.load_state_dict(state["model"])
        return model.to(device).eval()

    model, cached = cache.get((source.key, split, spec, str(device)), load, keep=config.splits)
    return model, cached, time.perf_counter() - started


def child_and_da(prepared: Prepared, split: int, child: ChildSource | str | Path
                 ) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, bool, float]:
    """The frozen child of ``split`` (:func:`frozen_child`), its D_A images and labels on the child's device,
    whether the child came from the cache, and the seconds getting it took."""
    model, cached, load_seconds = frozen_child(prepared, split, child)
    device = next(model.parameters()).device
    index = torch.as_tensor(prepared.splits[split][1])
    return model, prepared.data.images[index].to(device), prepared.data.labels[index].to(device), cached, load_seconds


def score_policy(prepared: Prepared, params: Mapping[str, Any], split: int, child: ChildSource | str | Path, *,
                 repeat: int = 0, index: int = 0, faults: Faults = Faults()) -> dict[str, Any]:
    """Phase 2: decode the candidate ``params`` and score it on D_A of ``split`` with its frozen child.

    ``child`` is where the frozen child is (a folder, or a :class:`ChildSource`). Returns the reward the
    optimiser maximises, every score of :class:`policysearch.density.PolicyScore`, the seconds spent and,
    to measure the cache, the seconds getting the child (``load_seconds``) and whether it was cached. ``repeat`` and ``index`` (the index-th candidate of that split and repeat)
    only name the trial.
    """
    faults.reach("score", split=split, repeat=repeat, index=index)
    config = prepared.config
    use_threads(config)
    started = time.perf_counter()
    model, images, labels, cached, load_seconds = child_and_da(prepared, split, child)
    policy = prepared.space.decode({k: params[k] for k in prepared.space.parameter_names()})
    # D_A views get the policy followed by the baseline augmentation the child trained with, and every
    # candidate of a split is scored on common random numbers in every view.
    score = evaluate_policy(model, images, labels, policy.with_baseline(prepared.baseline), mean=prepared.mean,
                            std=prepared.std, num_views=config.num_views, seed=config.seed * 1000 + split)
    return {"reward": score.reward(config.reward), **score.to_dict(), "split": split,
            "load_seconds": load_seconds, "child_cached": cached, "seconds": time.perf_counter() - started}
