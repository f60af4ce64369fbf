"""The benchmark presets: every setting of a benchmark, named; ``--preset`` picks one.

What each preset measures and why it has its size is in ``docs/findings.md``.
"""

from __future__ import annotations

import math

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from policysearch.benchmark.methods import ALL_METHODS, METHODS
from policysearch.training.data import CLASSES_MARK, MAX_IMAGE_SIZE
from policysearch.training.randomness import MAX_SEED
from policysearch.training.pretrained import OUR_MIN_SIZE, min_image_size, model_problem
from policysearch.training.train import TrainConfig
from policysearch.training.train import budget_text as train_budget_text


def data_key(name: str) -> tuple[str, ...]:
    """What a data set name refers to: a folder by its resolved path (relative, with a trailing '/'), else the
    name; ``--dataset`` naming a preset's own data keeps the preset's settings for it."""
    if not name.startswith("imagefolder:"):
        return (name,)
    folder, _, classes = name[len("imagefolder:"):].partition(CLASSES_MARK)
    return ("imagefolder", str(Path(folder).expanduser().resolve()), classes)


@dataclass(frozen=True)
class Pretraining:
    """A model the benchmark pretrains itself, since nothing can be downloaded: the training split's images
    outside the benchmark's (and its search's) training subset, of ``classes`` only (None: all), never the
    test split; trained from scratch with the data set's baseline augmentation."""

    epochs: int = 30
    classes: tuple[int, ...] | None = None
    size: int | None = None  # a stratified subset of the eligible images; None: all of them
    batch_size: int = 64
    lr: float = 0.1

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"--pretrain-epochs must be at least 1, got {self.epochs}")


@dataclass(frozen=True)
class Preset:
    """Every setting of a benchmark; ``--preset`` picks one and the other options override fields."""

    dataset: str
    train_size: int | None  # final-training images (None: the whole training split)
    model: str
    epochs: int
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 5e-4
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = METHODS
    cutout_with_policies: bool = False  # also apply Cutout on top of the policy methods (FAA/AA protocol)
    data_seed: int = 0  # the reduced training set; the search uses the same images
    search_train_size: int | None = None  # None: search on the final-training images
    search_trials: int | None = None  # None: the search's default budget
    search_splits: int | None = None
    search_top_n: int | None = None
    search_epochs: int | None = None  # child-model epochs; None: the search's default
    selection_repeats: int = 0  # repeats of the search's cross-fit selection; 0: from the data size
    device: str = "cpu"
    image_size: int | None = None  # None: as loaded (torchvision models: at least 32)
    weights: str | None = None  # the checkpoint every model (final and the search's) starts from
    freeze_backbone: bool = False
    pretrain: Pretraining | None = None  # make the weights first (ignored when weights are given)

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in ALL_METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(ALL_METHODS)}")
        if not self.methods:
            raise ValueError("--methods needs at least one method")
        if not self.seeds:
            raise ValueError("--seeds needs at least one seed")
        outside = [s for s in self.seeds if not 0 <= s <= MAX_SEED]
        if outside:
            raise ValueError(f"--seeds must be whole numbers from 0 to {MAX_SEED}, got {', '.join(map(str, outside))}")
        problem = model_problem(self.model)
        if problem:
            raise ValueError(f"--model {problem}")
        if self.epochs < 1:
            raise ValueError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 2:  # checked here, before a rerun sets the earlier runs aside for it
            raise ValueError(f"--batch-size must be at least 2 (BatchNorm needs 2 images), got {self.batch_size}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"--lr must be a finite number > 0, got {self.lr}")
        if self.image_size is not None and not 1 <= self.image_size <= MAX_IMAGE_SIZE:
            raise ValueError(f"--image-size must be a number of pixels from 1 to {MAX_IMAGE_SIZE}, got {self.image_size}")
        ours = min_image_size(self.model) == OUR_MIN_SIZE  # torchvision and timm models are noted, not refused
        if self.image_size is not None and ours and self.image_size < OUR_MIN_SIZE:
            raise ValueError(f"--image-size must be at least {OUR_MIN_SIZE} for {self.model}, the smallest side it is "
                             f"built for, got {self.image_size}")  # as the search refuses it
        for name in ("search_trials", "search_splits", "search_top_n", "search_epochs", "search_train_size"):
            value = getattr(self, name)
            if value is not None and value < 1:  # 0 would read as "not given", the search's default
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        try:
            torch.device(self.device)
        except RuntimeError:
            raise ValueError(f"--device must be a torch device such as cpu, cuda or cuda:1, got {self.device!r}") from None
        if self.freeze_backbone and not (self.weights or self.pretrain):
            raise ValueError("--freeze-backbone needs --weights (or a preset that pretrains)")
        if "searched-scratch" in self.methods and not (self.weights or self.pretrain):
            raise ValueError("the searched-scratch method compares with a search from weights; give --weights")


# beside the repository: policysearch/benchmark/presets.py -> the folder that holds the checkout
CIFAR10_DEV = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10-dev"
DEFAULT_OUT = "runs/benchmark"  # + /<preset>; the committed results live in benchmarks/results/<preset>
CIFAR10_DEV_EPOCHS = 60  # resnet8 without augmentation fits the 1,000 images (measured; see the README)
CIFAR10_2CLASS_EPOCHS = 60  # the same for the 200 automobiles and trucks

PRESETS: dict[str, Preset] = {
    "digits-small": Preset(dataset="digits", train_size=150, model="small_cnn", epochs=60, batch_size=32,
                           seeds=(0, 1, 2, 3, 4), search_epochs=60),
    "digits-100": Preset(dataset="digits", train_size=100, model="small_cnn", epochs=60, batch_size=32,
                         seeds=(0, 1, 2, 3, 4), search_epochs=60),
    "cifar10-dev-1000": Preset(dataset=f"imagefolder:{CIFAR10_DEV}", train_size=1000, model="resnet8",
                               epochs=CIFAR10_DEV_EPOCHS, batch_size=50, seeds=(0, 1, 2, 3, 4),
                               search_epochs=CIFAR10_DEV_EPOCHS, search_trials=20),
    "cifar10-dev-1000-short": Preset(dataset=f"imagefolder:{CIFAR10_DEV}", train_size=1000, model="small_cnn",
                                     epochs=20, batch_size=50, seeds=(0, 1, 2, 3, 4), search_epochs=20,
                                     search_trials=20),
    "cifar10-dev-2class-200": Preset(dataset=f"imagefolder:{CIFAR10_DEV}?classes=automobile,truck",
                                     train_size=200, model="resnet8", epochs=CIFAR10_2CLASS_EPOCHS, batch_size=32,
                                     seeds=(0, 1, 2, 3, 4), search_epochs=CIFAR10_2CLASS_EPOCHS),
    # Fine-tuning: small_cnn pretrained on the other training digits of classes 0-4 (half the classes unseen),
    # then every method fine-tunes it on 100 digits of all ten; the search finds its recipe for the
    # fine-tuning, and a second search's recipe for training from scratch runs as searched-scratch.
    "digits-100-finetune": Preset(dataset="digits", train_size=100, model="small_cnn", epochs=30, batch_size=32,
                                  lr=0.02, seeds=(0, 1, 2, 3, 4), search_epochs=30,
                                  methods=METHODS + ("searched-scratch",),
                                  pretrain=Pretraining(epochs=30, classes=(0, 1, 2, 3, 4))),
    "reduced-cifar10-wrn40-2": Preset(dataset="cifar10", train_size=None, model="wrn40_2", epochs=200,
                                      batch_size=128, cutout_with_policies=True, search_train_size=4000,
                                      search_trials=200, search_splits=5, search_top_n=10, search_epochs=200,
                                      device="cuda"),
}


# What each preset is for, in a few words; preset_lines() adds its settings.
PRESET_NOTES: dict[str, str] = {
    "digits-small": "every method on scarce digits",
    "digits-100": "every method on 10 digits per class, where selecting a recipe is hardest",
    "cifar10-dev-1000": "real photographs from ../shared/data/cifar10-dev (beside the checkout), resnet8 trained until it fits them; the "
                        "search must learn that a flip is allowed",
    "cifar10-dev-1000-short": "the same photographs, small_cnn stopped at 20 epochs while it still underfits",
    "cifar10-dev-2class-200": "200 real photographs of two classes (automobile, truck), resnet8 trained until it fits them",
    "digits-100-finetune": "fine-tunes a small_cnn it pretrains on other digits (classes 0-4), with a second search "
                           "from scratch",
    "reduced-cifar10-wrn40-2": "the Fast AutoAugment paper's setting: search on 4000 CIFAR-10 images, train on all",
}


def missing_data_text(name: str, preset: Preset) -> str | None:
    """Why preset ``name`` cannot read its own image folder (it is not part of the repository), or None when it
    can or when ``--dataset`` replaced it: said before anything trains."""
    if data_key(preset.dataset) != data_key(PRESETS[name].dataset) or not preset.dataset.startswith("imagefolder:"):
        return None
    _, folder, classes = data_key(preset.dataset)
    if Path(folder).is_dir():
        return None
    size = f" --train-size {preset.train_size}" if preset.train_size else ""
    own = f"--dataset imagefolder:DIR{CLASSES_MARK + classes if classes else ''}{size}"
    download = "" if classes else f" (or --dataset cifar10 --download{size})"
    return (f"preset {name} reads its images from {folder}, which is missing: that folder lies beside the "
            f"checkout and is not part of the repository. Put a train/ and a test/ folder of class folders there, "
            f"or give the images with {own}{download}")


def preset_seeds() -> str:
    """The presets' seeds, grouped: ``0 1 2 3 4 (digits-small, ...)``."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for name in sorted(PRESETS):
        groups.setdefault(PRESETS[name].seeds, []).append(name)
    return "; ".join(f"{' '.join(map(str, seeds))} ({', '.join(names)})" for seeds, names in groups.items())


def budget_text(epochs: int, batch_size: int, images: int | None, asked: bool = True) -> str:
    """'E epochs at batch B' as the training runs on ``images`` images (:func:`training.train.budget_text`)."""
    return train_budget_text(TrainConfig(epochs=epochs, batch_size=batch_size), images, say_asked=asked)


def preset_lines() -> list[str]:
    """One line per preset: its name, what it is for and its main settings."""
    width = max(map(len, PRESETS))
    lines = []
    for name in sorted(PRESETS):
        p = PRESETS[name]
        data = p.dataset.rsplit("/", 1)[-1] if p.dataset.startswith("imagefolder:") else p.dataset
        images = f"{p.train_size} {data} images" if p.train_size else f"all {data} training images"
        lines.append(f"{name:<{width}}  {'GPU' if p.device.startswith('cuda') else 'CPU'}: {PRESET_NOTES[name]}; "
                     f"{images}, {p.model}, {budget_text(p.epochs, p.batch_size, p.train_size)}, seeds "
                     f"{' '.join(map(str, p.seeds))}")
    return lines


def default_out(preset: str) -> Path:
    """Where a benchmark writes without ``--out``: beside the other runs, never over the committed results."""
    return Path(DEFAULT_OUT) / preset


def describe_classes(classes: Sequence[int] | None) -> str:
    return "all" if classes is None else " ".join(map(str, classes))
