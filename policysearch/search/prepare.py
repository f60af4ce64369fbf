"""Data preparation: the search's inputs loaded, checked and split once, in the driver, before any work.

:func:`prepare` reads the data (or takes the :class:`Inputs` given in Python), draws the K (D_M, D_A)
splits and the cross-fit folds (:mod:`~policysearch.search.folds`), loads the search space and checks the
model; every problem is one line before a trial runs. The :class:`Prepared` it returns is what every
phase's trials receive.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, replace

import numpy as np
import torch

from policysearch.training.data import (PYTHON_PREFIX, DataError, ImageData, baseline_for, load_dataset,
                                        normalization_for, require_classes, stratified_subset)
from policysearch.augment.policy import Baseline
from policysearch.training.train import budget_text
from policysearch.training.pretrained import (CALLABLE_PREFIX, OUR_MIN_SIZE, Builder, ModelError, ModelSpec,
                                              check_model, fit_image_size, grey_input_note, is_callable_model,
                                              min_image_size,
                                              model_problem, model_ref, read_state_dict,
                                              state_digest)
from policysearch.search.checks import ResourceError
from policysearch.search.config import SearchConfig, SettingsError
from policysearch.wording import Mention
from policysearch.search.folds import MAX_ADDED_REPEATS, auto_repeats, crossfit_folds, make_splits
from policysearch.search.spaces import SearchSpace, load_space

__all__ = ["Inputs", "Prepared", "device_for", "prepare", "use_threads"]


@dataclass(frozen=True)
class Inputs:
    """What a search is given as Python objects rather than as settings (``policysearch.search``): the data,
    read into memory by :func:`policysearch.training.user_data.read_data`, and a model callable. The settings name
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
    # the selection's cross-fit (train, held-out) folds: the first pass, then the repeats it may add
    folds: list[tuple[np.ndarray, np.ndarray]]
    builder: Builder | None = None  # the model callable of a ``callable:`` model (shipped to the workers with this)
    first_pass: int = 0  # folds of the first pass (0: all of ``folds``)
    # the --weights checkpoint, read here once and shipped to the workers with the rest: a cluster's workers need
    # not see the file, which is on the driver's machine
    weights_state: dict[str, torch.Tensor] | None = None
    architecture: str = ""  # the model's layers and shapes (``pretrained.architecture``), which a resume checks
    weights_digest: str = ""  # the --weights state dict's ``pretrained.state_digest``, which a resume checks

    @property
    def first_folds(self) -> int:
        """How many of ``folds`` every recipe that survives the race trains on; the rest are added repeats."""
        return self.first_pass or len(self.folds)

    @property
    def held_out(self) -> int:
        """The fewest images any cross-fit fold is tested on (the selection's variance floor rests on it)."""
        return min((len(held) for _, held in self.folds), default=0)

    @property
    def model_spec(self) -> ModelSpec:
        """The child and selection models: architecture, classes, channels and the checkpoint they start from."""
        c = self.config
        return ModelSpec(c.model, self.data.num_classes, int(self.data.images.shape[1]), c.weights, c.freeze_backbone,
                         self.builder, self.weights_state)

    def new_model(self) -> torch.nn.Module:
        """A child or selection model, built and loaded from the checkpoint (seed torch first)."""
        return self.model_spec.build()

    def budgets(self) -> tuple[str, str]:
        """The child models' and the candidate recipes' trainings as they run, in words: ``67 epochs at batch 16
        (asked: 30 at batch 32; ...)`` where tiny data raised them."""
        c = self.config
        return (budget_text(c.train_config(), len(self.splits[0][0]), c.min_steps),
                budget_text(c.final_train_config(), len(self.data), c.min_steps))


def given_in_python(config: SearchConfig) -> bool:
    """Whether the run's data or model were Python objects: only ``policysearch.search`` can continue it."""
    return config.dataset.startswith(PYTHON_PREFIX) or is_callable_model(config.model)


def _callable_missing(say: Mention, config: SearchConfig, data_too: bool, new_run: bool) -> str:
    """A model named ``callable:NAME`` without the callable: for a new run, pass the callable itself; for a
    resume, in Python what to give again (the data too when it was Python objects), on the command line that
    only Python can continue it."""
    name = config.model.removeprefix(CALLABLE_PREFIX).rsplit(".", 1)[-1]
    if new_run:
        return (f"{model_ref(config.model)}: a model given by name as a Python callable; only "
                f"policysearch.search(model=...) takes one, as the callable itself: model={name}")
    if say("resume") == "resume=True":
        return (f"{model_ref(config.model)}: the run's {'data and model were' if data_too else 'model was'} given "
                f"as Python objects; give the same again: policysearch.search({'DATA, ' if data_too else ''}"
                f"model={name}, out=..., resume=True)")
    return (f"{model_ref(config.model)}: the run's model is a Python callable, which only "
            f"policysearch.search(model=...) can take; continue the run from Python with the same "
            f"{'data and callable' if data_too else 'callable'}, model={name}")


def prepare(config: SearchConfig, inputs: Inputs | None = None, new_run: bool = True,
            least_side: int | None = None) -> Prepared:
    """Load and check everything a search needs; raises a one-line error before any work starts.

    ``inputs`` holds the data and the model callable given in Python, which ``config`` names. A ``new_run``
    may not ask our models for images below the size they are built for (a resumed run keeps its size).
    ``least_side``: the loaders' (``rundir.least_side``; default: the model's least side)."""
    inputs = inputs or Inputs()
    ours = model_problem(config.model) is None and min_image_size(config.model) == OUR_MIN_SIZE
    if new_run and ours and config.image_size is not None and config.image_size < OUR_MIN_SIZE:
        raise SettingsError([("image_size", f"must be at least {OUR_MIN_SIZE} for {config.model}, the smallest "
                                            f"side it is built for, got {config.image_size}")])
    if is_callable_model(config.model) and inputs.builder is None:
        data_too = config.dataset.startswith(PYTHON_PREFIX) and inputs.data is None
        raise ModelError(lambda say: _callable_missing(say, config, data_too, new_run))
    space = load_space(config.space_name)
    # a bad file is refused before the images are read (seconds on a large folder)
    weights_state = read_state_dict(config.weights) if config.weights is not None else None
    if inputs.data is not None:
        data = inputs.data
    else:
        data = load_dataset(config.dataset, split="train", data_root=config.data_root, download=config.download,
                            image_size=config.image_size,
                            least_side=min_image_size(config.model) if least_side is None else least_side)
    require_classes(data)
    full_size = len(data)
    if config.train_size is not None:
        data = stratified_subset(data, config.train_size, seed=config.seed)
    data = fit_image_size(data, config.model, config.image_size)
    repeats = config.selection_repeats or auto_repeats(len(data))
    added = MAX_ADDED_REPEATS if config.selection_extra > 0 else 0
    try:
        splits = make_splits(data.labels, k=config.splits, da_ratio=config.da_ratio, seed=config.seed,
                             names=data.classes)
        folds = crossfit_folds(data.labels.numpy(), config.selection_folds, repeats + added, seed=config.seed,
                               names=data.classes)
    except DataError as error:
        if config.train_size is None:
            raise
        build = error.build  # the name error is gone after this block; the message is worded again later
        raise DataError(lambda say: f"{build(say)}; these counts are of the {say('train_size', config.train_size)} "
                                    f"subset of the {full_size} images: a larger {say('train_size')} gives more"
                        ) from None
    mean, std = normalization_for(config.dataset, data)
    baseline = baseline_for(config.dataset, data.images.shape[-1])
    prepared = Prepared(config, data, splits, space, tuple(mean), tuple(std), baseline, folds, inputs.builder,
                        repeats * config.selection_folds, weights_state)
    # the weights file and the image size
    prepared.architecture = check_model(prepared.model_spec, int(data.images.shape[-1]))
    grey = grey_input_note(prepared.model_spec)
    if grey:  # said with what loading changed: printed, in report.md and in the policy's metadata
        prepared.data = replace(data, notes=(*data.notes, grey))
    prepared.weights_digest = state_digest(weights_state) if weights_state is not None else ""
    return prepared


def device_for(config: SearchConfig) -> torch.device:
    """CUDA when the trial was given a GPU, else the CPU. A GPU Ray gave that torch cannot see (a container
    started without the NVIDIA runtime's devices) is an error: the trial would train on the CPU unseen."""
    if config.gpus_per_trial <= 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = ("this torch was built without CUDA" if torch.version.cuda is None else
               f"no CUDA device is visible (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
        raise ResourceError(lambda say: f"{say('gpus_per_trial', config.gpus_per_trial)} gave a trial a GPU on "
                            f"{socket.gethostname()}, but torch there sees none: {why}; a container needs the "
                            "GPUs passed in (docker run --gpus all, or the NVIDIA runtime with "
                            "NVIDIA_VISIBLE_DEVICES=all, as docker/Dockerfile's cluster image sets)")
    return torch.device("cuda")


def use_threads(config: SearchConfig) -> None:
    torch.set_num_threads(max(1, int(config.cpus_per_trial)))
