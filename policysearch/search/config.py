"""The search configuration, defined once: its fields carry their command-line help, and every value check.

``policysearch search``'s options are generated from the fields of :class:`SearchConfig` (flag
``--field-name``, type, choices and help from the field's metadata), so adding a setting is one field.
The options are parsed with suppressed defaults: :func:`given_values` returns only the settings the
user actually typed, which is what ``--resume`` compares with the stored run.
"""

from __future__ import annotations

import argparse
import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields
from types import SimpleNamespace, UnionType
from typing import Any, Callable, Union, get_args, get_origin, get_type_hints

import numpy as np

from policysearch.arguments import decimal_number, whole_number
from policysearch.training.data import CLASSES_MARK, DATA_ROOT, MAX_IMAGE_SIZE
from policysearch.training.randomness import MAX_SEED
from policysearch.training.models import MODEL_NAMES
from policysearch.training.pretrained import model_problem
from policysearch.training.train import MIN_STEPS, MIN_STEPS_PER_EPOCH, TrainConfig
from policysearch.search.folds import HELD_OUT_TARGET, MAX_ADDED_REPEATS, MAX_AUTO_REPEATS
from policysearch.search.selection import CONFIDENCE
from policysearch.search.spaces import is_space_path
from policysearch.wording import a_kind, counted, flag, short_repr

__all__ = ["ALGORITHMS", "RESUMABLE", "SearchConfig", "SettingsError", "add_config_arguments", "given_values", "is_uri"]

ALGORITHMS = ("optuna", "hyperopt", "random")
# What phase 2 can maximise: the scores of density matching (:class:`~policysearch.search.density.PolicyScore`).
REWARDS = ("accuracy", "any_view", "loss", "min_loss")
DEFAULT_SPACE = "fast_autoaugment"  # the domain fit removes what a data set does not allow (flips of digits, ...)
# Settings a resumed run may change: where the cluster is and whether its dashboard shows, not what it computes.
RESUMABLE = frozenset({"address", "dashboard"})


def _option(default: Any, help: str, group: str, **argparse_kwargs: Any) -> Any:
    """A config field with its command-line option: ``help`` text, option ``group`` and argparse extras."""
    return field(default=default, metadata={"help": help, "group": group, **argparse_kwargs})


# A problem's text, or a function of how settings are named (for a text that names another setting).
Problem = str | Callable[[Callable[[str], str]], str]


class SettingsError(ValueError):
    """Settings that fail their checks, as (field, problem) pairs; the message names each field by ``name``:
    its command-line flag by default, ``keyword`` in the Python API."""

    def __init__(self, problems: list[tuple[str, Problem]], name: Callable[[str], str] | None = None) -> None:
        self.problems = problems
        super().__init__(self.worded(name or flag))

    def worded(self, name: Callable[[str], str]) -> str:
        return "; ".join(f"{name(setting)} {text(name) if callable(text) else text}"
                         for setting, text in self.problems)


@dataclass(frozen=True)
class SearchConfig:
    """Everything that defines a search; written to ``config.json`` in the run directory."""

    dataset: str = _option("digits", "digits (embedded), cifar10, cifar100, svhn, imagefolder:PATH or a folder of "
                           "class subfolders", "data")
    data_root: str = _option(DATA_ROOT, "where downloadable data sets live", "data")
    download: bool = _option(False, "download cifar/svhn into --data-root when online", "data")
    train_size: int | None = _option(None, "a stratified reduced training set of this many images (e.g. 4000)",
                                     "data", type=int, shown="the whole training split")
    image_size: int | None = _option(None, "resize images to this size", "data", type=int,
                                     shown="digits 16, cifar and svhn 32; an image folder or Python data: the "
                                           "median shorter side, at most 64; torchvision models get at least 32")
    space: str | None = _option(None, "search space name or YAML path; the domain fit removes the ops and levels "
                                "that destroy this data's classes", "search", shown=DEFAULT_SPACE)
    algorithm: str = _option("optuna", "the optimiser", "search", choices=ALGORITHMS)
    splits: int = _option(5, "K: D_M/D_A splits of the training data", "search")
    da_ratio: float = _option(0.4, "share of each split held out as D_A", "search")
    trials: int = _option(40, "B: policy trials per split and repeat", "search")
    repeats: int = _option(1, "T: repeats of phase 2's optimisation on each split, each its own optimiser "
                                     "with --trials trials; the top --top-n of every split and repeat are merged",
                                     "search")
    top_n: int = _option(10, "N: best candidates kept per split and repeat", "search")
    num_views: int = _option(5, "augmented views per D_A image when scoring a candidate", "search")
    reward: str = _option("accuracy", "what the optimiser scores on the augmented held-out views: accuracy (mean over "
                                     "every view), any_view (an image counts when any view is right: the paper's), "
                                     "loss or min_loss (mean cross-entropy over every view, or each image's lowest, "
                                     "minimised)", "search", choices=REWARDS)
    strengths: tuple[float, ...] = _option(
        (0.5, 1.0), "strengths (probability scales) at which the merged Fast AutoAugment policy enters the "
        "candidate recipes", "search", type=float, nargs="+", metavar="S")
    domain_threshold: float = _option(
        0.5, "domain fit: an op keeps the levels at which the frozen children keep at least this share of their "
        "accuracy above chance", "selection")
    selection_folds: int = _option(3, "folds of the cross-fit that trains every candidate recipe", "selection")
    selection_repeats: int = _option(0, "repeats of the cross-fit (other folds, other seeds); 0: chosen from the "
                                     f"data size, {HELD_OUT_TARGET} / images rounded up and at most "
                                     f"{MAX_AUTO_REPEATS}, so that about {HELD_OUT_TARGET} held-out predictions back "
                                     "each comparison", "selection")
    selection_extra: float = _option(1.0, "while the decision is unclear, repeats of the cross-fit are added for the "
                                     f"recipes that could still clear the noise, up to {MAX_ADDED_REPEATS} and while "
                                     "their trainings stay within this multiple of the first pass's; 0: none",
                                     "selection")
    selection_keep: float = _option(0.5, "share of the candidate recipes that train on the other folds after the "
                                    "first: those with the lowest held-out error on it, those within its noise, and "
                                    "the reference always; 1 trains every candidate on every fold", "selection")
    confidence: float = _option(CONFIDENCE, "a recipe replaces the reference (torchvision's RandAugment(), no crop) only "
                                "when its one-sided bound on the error difference at this level is below 0",
                                "selection")
    final_epochs: int | None = _option(None, "epochs of the training the recipe is for; the selection trains "
                                       "every candidate at this budget", "selection", type=int,
                                       shown="--epochs")
    seed: int = _option(0, "seed of the subset, the splits, the optimisers and the child models", "search")
    model: str = _option("small_cnn", f"child-model architecture: {', '.join(MODEL_NAMES)}, torchvision:NAME "
                         "(e.g. torchvision:resnet18, built with weights=None) or timm:NAME (e.g. timm:resnet18, "
                         "built with pretrained=False; needs policysearch[timm]); nothing is downloaded",
                         "child models", metavar="MODEL")
    weights: str | None = _option(None, "a local weights file (a state dict of --model) that every child and "
                                  "selection model starts from (kept as an absolute path); the classifier head is "
                                  "always new",
                                  "child models", shown="train from scratch", metavar="PATH")
    freeze_backbone: bool = _option(False, "train only the classifier head of the --weights model (its "
                                    "BatchNorm statistics stay the checkpoint's)", "child models")
    epochs: int = _option(20, "child-model training epochs", "child models")
    batch_size: int = _option(128, "child-model batch size", "child models")
    lr: float = _option(0.1, "child-model learning rate (SGD, cosine schedule)", "child models")
    weight_decay: float = _option(5e-4, "child-model weight decay", "child models")
    min_steps: int = _option(MIN_STEPS, "optimizer steps the child models and the final training get at least "
                             "(epochs are added on tiny data, and the batch is bounded so an epoch has at least "
                             f"{MIN_STEPS_PER_EPOCH} steps; the selection trains like the final training)",
                             "child models")
    cpus_per_trial: float = _option(1.0, "CPUs one trial uses", "resources")
    gpus_per_trial: float = _option(0.0, "GPUs one trial uses; 0.25 packs four trials on a GPU", "resources")
    max_concurrent: int = _option(0, "trials at once; 0: as many as the nodes up at the start can hold (an "
                                 "autoscaling cluster adds nodes only for trials that wait)", "resources")
    retries: int = _option(2, "times a failing trial is retried before it is recorded as failed", "resources")
    address: str | None = _option(None, "join an existing Ray cluster: the head's HOST:PORT (e.g. 10.0.0.1:6379), or auto on "
                                  "one of its nodes; needs --storage",
                                  "resources", shown="start a local Ray")
    storage: str | None = _option(None, "Tune storage, a path or URI every node can reach; each run keeps its "
                                  "experiments in a folder named by its run id", "resources", shown="RUN_DIR/tune")
    dashboard: bool = _option(False, "start Ray's dashboard (on 127.0.0.1 only) with the local Ray", "resources")

    def __post_init__(self) -> None:
        hints = get_type_hints(SearchConfig)
        for f in fields(self):  # a Path or a numpy number as the plain value config.json can hold
            object.__setattr__(self, f.name, _plain(getattr(self, f.name), hints[f.name]))
        problems = self.type_problems() or self.problems()  # the value checks compare numbers
        if problems:
            raise SettingsError(problems)
        # Paths are kept absolute: the trials read them in Ray's workers, which run in folders of their own,
        # and a resume from another folder must read the same files.
        if self.weights:
            object.__setattr__(self, "weights", _absolute(self.weights))
        if self.dataset.startswith("imagefolder:"):
            folder, mark, classes = self.dataset[len("imagefolder:"):].partition(CLASSES_MARK)
            object.__setattr__(self, "dataset", f"imagefolder:{_absolute(folder)}{mark}{classes}")
        if self.space and is_space_path(self.space):  # a file, as load_space reads it
            object.__setattr__(self, "space", _absolute(self.space))
        if self.storage and not is_uri(self.storage):
            object.__setattr__(self, "storage", _absolute(self.storage.removeprefix("file://")))

    def type_problems(self) -> list[tuple[str, Problem]]:
        """(field, what is wrong) for every setting whose value is not of the field's type: the API takes
        any Python value, and ``trials="4"`` must be one line naming it, not a TypeError from a comparison."""
        hints = get_type_hints(SearchConfig)
        return [(f.name, f"must be {_type_words(hints[f.name])}, got {_shown(value)}"
                 + (_WEIGHTS_HINT if f.name == "weights" and isinstance(value, Mapping) else ""))
                for f in fields(self) for value in [getattr(self, f.name)] if not _of_type(value, hints[f.name])]

    def problems(self) -> list[tuple[str, Problem]]:
        """(field, what is wrong) for every invalid setting, the training values included."""
        model_issue = model_problem(self.model)
        folder = self.dataset.removeprefix("imagefolder:").partition(CLASSES_MARK)[0]
        checks: list[tuple[str, bool, Problem]] = [
            # an empty path is the current folder: an unset shell variable must not train on it
            ("dataset", bool(self.dataset.strip()) and bool(folder.strip()),
             "names no data set or folder; give a name (digits, cifar10, ...) or a folder of class subfolders"),
            ("space", self.space is None or bool(self.space.strip()),
             "is empty; give a shipped space's name (policysearch spaces lists them) or a YAML file"),
            ("splits", self.splits >= 1, f"must be at least 1, got {self.splits}"),
            ("da_ratio", 0 < self.da_ratio < 1, f"must be between 0 and 1, got {self.da_ratio}"),
            ("trials", self.trials >= 1, f"must be at least 1, got {self.trials}"),
            ("repeats", self.repeats >= 1, f"must be at least 1, got {self.repeats}"),
            ("top_n", self.top_n >= 1, f"must be at least 1, got {self.top_n}"),
            ("num_views", self.num_views >= 1, f"must be at least 1, got {self.num_views}"),
            ("cpus_per_trial", math.isfinite(self.cpus_per_trial) and self.cpus_per_trial > 0,
             f"must be a positive number, got {self.cpus_per_trial}"),
            ("gpus_per_trial", math.isfinite(self.gpus_per_trial) and self.gpus_per_trial >= 0,
             f"must be a number >= 0, got {self.gpus_per_trial}"),
            ("max_concurrent", self.max_concurrent >= 0, f"must be >= 0, got {self.max_concurrent}"),
            ("retries", self.retries >= 0, f"must be >= 0, got {self.retries}"),
            ("algorithm", self.algorithm in ALGORITHMS,
             f"must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}"),
            ("reward", self.reward in REWARDS, f"must be one of {', '.join(REWARDS)}, got {self.reward!r}"),
            ("strengths", bool(self.strengths) and all(0 < v <= 1 for v in self.strengths),
             f"must be one or more values in (0, 1], got {list(self.strengths)}"),
            ("strengths", len({f"{v:g}" for v in self.strengths}) == len(self.strengths),
             f"must be distinct (each names a recipe, to 6 significant digits), got {list(self.strengths)}"),
            ("domain_threshold", 0 <= self.domain_threshold < 1,
             f"must lie in [0, 1), got {self.domain_threshold}"),
            ("selection_folds", self.selection_folds >= 2, f"must be at least 2, got {self.selection_folds}"),
            ("selection_repeats", self.selection_repeats >= 0,
             f"must be at least 0 (0: from the data size), got {self.selection_repeats}"),
            ("selection_keep", 0 < self.selection_keep <= 1, f"must lie in (0, 1], got {self.selection_keep}"),
            ("selection_extra", self.selection_extra >= 0, f"must be at least 0 (0: no repeat added), got "
             f"{self.selection_extra}"),
            ("confidence", 0.5 <= self.confidence < 1, f"must lie in [0.5, 1), got {self.confidence}"),
            ("min_steps", self.min_steps >= 1, f"must be at least 1, got {self.min_steps}"),
            ("final_epochs", self.final_epochs is None or self.final_epochs >= 1,
             f"must be at least 1, got {self.final_epochs}"),
            ("seed", 0 <= self.seed <= MAX_SEED, f"must be a whole number from 0 to {MAX_SEED}, got {self.seed}"),
            ("train_size", self.train_size is None or self.train_size >= 1,
             f"must be at least 1, got {self.train_size}"),
            ("image_size", self.image_size is None or 1 <= self.image_size <= MAX_IMAGE_SIZE,
             f"must be a number of pixels from 1 to {MAX_IMAGE_SIZE}, got {self.image_size}"),
            ("model", model_issue is None, model_issue or ""),
            # an empty path is the current folder, not a weights file
            ("weights", self.weights is None or bool(self.weights.strip()),
             "is empty; give a weights file (a saved state dict), or leave it out to start from new weights"),
            ("freeze_backbone", not self.freeze_backbone or bool(self.weights),
             lambda name: f"needs {name('weights')}: a frozen backbone must come from a checkpoint"),
            ("address", not self.address or bool(self.storage),
             lambda name: f"needs {name('storage')}: a path or URI that every node of the cluster can reach (the "
             "default, inside the run directory, only this machine sees)"),
        ]
        found = [(name, text) for name, ok, text in checks if not ok]
        # The training values, checked by the trainer's own rules for the TrainConfig the children will get.
        implied = SimpleNamespace(**{**{f.name: f.default for f in fields(TrainConfig)}, **self._train_values()})
        return found + TrainConfig.problems(implied)  # type: ignore[arg-type]

    def _train_values(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                "weight_decay": self.weight_decay, "seed": self.seed}

    @property
    def space_name(self) -> str:
        return self.space or DEFAULT_SPACE

    def start_text(self) -> str:
        """Where the models start, in words for the first printed line and the report: `` from PATH (frozen
        backbone)``, or nothing for new weights."""
        if not self.weights:
            return ""
        return f" from {self.weights}" + (" (frozen backbone)" if self.freeze_backbone else "")

    def train_config(self) -> TrainConfig:
        """The child models' training settings (before ``train.fit_to_data`` adapts them to the split)."""
        return TrainConfig(**self._train_values())

    def final_train_config(self) -> TrainConfig:
        """The settings of the training the recipe is selected for, before :func:`~policysearch.training.train.fit_to_data`
        adapts them to all the search's training images (the candidates' cross-fit trainings use the result)."""
        return TrainConfig(**{**self._train_values(), "epochs": self.final_epochs or self.epochs})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchConfig":
        """The config of a ``config.json`` ``search`` entry (unknown keys are ignored)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "strengths" in values:
            values["strengths"] = tuple(values["strengths"])
        return cls(**values)


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def is_uri(storage: str) -> bool:
    """True for a storage URI such as ``s3://bucket/path`` (not a plain or ``file://`` path)."""
    return "://" in storage and not storage.startswith("file://")


def _plain(value: Any, hint: Any) -> Any:
    """``value`` as the plain Python value of a field's type where it is another form of it: a path as a
    string, a numpy integer, float or bool as int, float or bool (a tuple item by item); else unchanged."""
    arms = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
    if isinstance(value, os.PathLike) and str in arms:
        return os.fspath(value)
    if isinstance(value, tuple) and any(get_origin(arm) is tuple for arm in arms):
        item = next(get_args(arm)[0] for arm in arms if get_origin(arm) is tuple)
        return tuple(_plain(v, item) for v in value)
    if isinstance(value, np.bool_) and bool in arms:
        return bool(value)
    if isinstance(value, bool) or type(value) in (int, float):
        return value
    if isinstance(value, numbers.Integral) and (int in arms or float in arms):
        return int(value)
    if isinstance(value, numbers.Real) and float in arms:
        return float(value)
    return value


def _of_type(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of a field's type: int (not bool), float (an int too), bool, str, X | None and
    tuple[float, ...], the kinds SearchConfig's fields have."""
    if get_origin(hint) in (Union, UnionType):
        return any(_of_type(value, arm) for arm in get_args(hint))
    if get_origin(hint) is tuple:
        return isinstance(value, tuple) and all(_of_type(v, get_args(hint)[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    return isinstance(value, hint)


_WEIGHTS_HINT = ("; a state dict goes in as a file: torch.save(model.state_dict(), 'weights.pt'), then "
                 "weights='weights.pt'")


def _shown(value: Any) -> str:
    """A value that is not of its field's type, for the message: a list by its items (the API keeps a list as
    a tuple, the config being frozen), a mapping by its size (a state dict's tensors are no help), else its
    type and a short repr."""
    if isinstance(value, tuple):
        return short_repr(list(value))
    if isinstance(value, Mapping):
        return f"{a_kind(value)} of {counted(len(value), 'entry', 'entries')}"
    return f"{type(value).__name__} {short_repr(value)}"


def _type_words(hint: Any) -> str:
    """A field's type in words: 'an integer or None', 'a tuple of numbers', ..."""
    if get_origin(hint) in (Union, UnionType):
        return " or ".join(_type_words(arm) for arm in get_args(hint))
    if get_origin(hint) is tuple:
        return "a list of numbers"
    return {int: "an integer", float: "a number", bool: "True or False", str: "a string",
            type(None): "None"}.get(hint, getattr(hint, "__name__", str(hint)))


def _argparse_kwargs(f: Field) -> dict[str, Any]:
    meta = dict(f.metadata)
    shown = meta.pop("shown", None)
    help_text = meta.pop("help")
    meta.pop("group")
    default = f.default
    if shown is None:
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else str(default)
    kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
    if isinstance(default, bool):
        kwargs["action"] = "store_true"
        kwargs["help"] = help_text
    else:
        kind = meta.pop("type", str if default is None else type(default))
        kwargs["type"] = {int: whole_number, float: decimal_number}.get(kind, kind)
        kwargs["help"] = f"{help_text} (default: {shown})"
    kwargs.update(meta)
    return kwargs


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per :class:`SearchConfig` field, in option groups; unset options stay out of the namespace."""
    groups: dict[str, Any] = {}
    for f in fields(SearchConfig):
        group = f.metadata["group"]
        if group not in groups:
            groups[group] = parser.add_argument_group(group)
        groups[group].add_argument(flag(f.name), **_argparse_kwargs(f))


def given_values(args: argparse.Namespace) -> dict[str, Any]:
    """The config settings present on the command line (lists as tuples), by field name."""
    given = {}
    for f in fields(SearchConfig):
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            given[f.name] = tuple(value) if isinstance(value, list) else value
    return given
