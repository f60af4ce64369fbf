"""Benchmark a searched policy against the search-free augmentations, with paired statistics.

Every method is a whole training recipe - a policy followed by a baseline (pad-and-crop, a flip only
where it keeps the meaning) - and trains the same model on the same training images for the same budget
and seeds (the budget adapted to tiny data by ``train.fit_to_data``, the same for every method):

- ``none``: no augmentation at all;
- ``baseline``: the data set's baseline augmentation only;
- ``cutout``: baseline + Cutout, 16 px on 32 x 32 images and scaled with the image size (8 px on 16 x 16
  digits), the same augmentation as a policy's ``Cutout`` op of that side;
- the anchors, what users actually run, applied per image by their own library (``policysearch/benchmark/anchors.py``):
  ``tv-autoaugment`` (``torchvision.transforms.v2.AutoAugment(AutoAugmentPolicy.CIFAR10)``),
  ``tv-randaugment`` (``RandAugment()``), ``tv-trivialaugmentwide`` (``TrivialAugmentWide()``), ``tv-augmix``
  (``AugMix()``), all at torchvision's defaults, and ``timm-rand-m9-mstd0.5-inc1`` (timm's RandAugment of that
  config string, skipped with a note in ``results.md`` when timm is not installed): each after the data
  set's baseline (crop and flip first, then the augmentation, as torchvision's and timm's training recipes
  order them) and each ``-alone``, as a user puts ``RandAugment()`` alone in a ``Compose``;
- our policy-format versions, which are not what users run: ``ours-autoaugment-cifar10`` (torchvision's
  AutoAugment CIFAR-10 policy converted, ``autoaugment:cifar10``), ``ours-randaugment-m0.9`` (RandAugment
  N=2, M=9 on the paper's 0..10 scale, every op at level 0.9 of our ranges, ``randaugment:n=2,m=9`` - not
  torchvision's ``RandAugment()``, bin 9 of 31, level 0.3) and ``ours-trivialaugment-narrow``
  (``trivialaugment``: one op of 14 at one of 31 levels over AutoAugment's narrow ranges - not
  ``TrivialAugmentWide()``), each followed by the baseline and each ``-alone`` (``policysearch/augment/standard.py``);
  ``results.json`` files written before these names used ``autoaugment``, ``randaugment``, ``trivialaugment``
  for them (``LEGACY_METHOD_NAMES``);
- ``searched``: the recipe of ``--policy FILE_OR_STRING`` applied exactly as it says (a file of format 2
  carries its baseline; a version-1 file or a string carries none), or the recipe a search run here first
  selects on the same training images (never the test split).

Policies are applied per sample by ``BatchPolicyTransform``. The test split is used only for the final
reported errors; no setting here was chosen by looking at it. Every run also reports its accuracy on the
un-augmented training images after training (``clean_train_accuracy``), which says whether the budget lets
the model fit its data.

Presets
-------
``digits-small`` (CPU): scikit-learn's digits at 16 x 16, a stratified 150-image training subset (15 per
class), ``small_cnn``, 60 epochs at batch 32 (raised to the 200-step floor), seeds 0 1 2 3 4, every
method; the searched recipe comes from a search with the search's default budget on the same 150 images,
its children trained for 60 epochs and its selection at the final budget. Why this size: augmentation
matters most when data is scarce (9.0 % -> 5.4 % test error at 100 digits trained for 60 epochs, no gain
left at 500). Five seeds because differences between methods here are a few test images.

``digits-100`` (CPU): the same with 10 images per class, where selecting a recipe is hardest.

``cifar10-dev-1000`` (CPU): 100 real CIFAR-10 photographs per class from ``shared/data/cifar10-dev/train``
(beside the repository), tested on its 2,000 ``test/`` images; ``resnet8`` (He et al.'s CIFAR ResNet of
depth 8) for ``CIFAR10_DEV_EPOCHS`` epochs at batch 50, a budget at which the model without augmentation
fits its training images (measured: see the README), seeds 0..4, a search with 20 policy trials per split.
Loaded as an image folder, so its baseline (pad-and-crop, no flip) is the one any user's photographs get,
and the search must learn from the data that a flip is allowed.

``cifar10-dev-1000-short`` (CPU): the same images with ``small_cnn`` for 20 epochs at batch 50 (400 steps),
where the model still underfits (75.6 % training accuracy without augmentation): the search has to see
that a short budget wants little augmentation.

``cifar10-dev-2class-200`` (CPU): two look-alike classes of the same photographs (automobile and truck:
100 training images each, tested on the 400 test images of the two), ``resnet8`` for
``CIFAR10_2CLASS_EPOCHS`` epochs at batch 32: a two-class set of a few hundred images, where the search's
selection sees least.

``digits-100-finetune`` (CPU): transfer learning. Nothing can be downloaded here, so the preset first
pretrains ``small_cnn`` itself (30 epochs, baseline augmentation) on the digits training-split images of
classes 0-4 that are not among the benchmark's 100 training images (the search uses the same 100), never
on the test split, and saves its state dict as ``pretrained-<hash>.pt`` in the output folder. Every
method then fine-tunes it on the 100 digits of all ten classes (a new head; 30 epochs at lr 0.02, batch
32, seeds 0..4), and so does the search's every model (``--weights``). A second search, identical but
from scratch, selects the recipe ``searched-scratch``, which is trained here from the same weights; the
paired interval of ``searched - searched-scratch`` says whether searching for fine-tuning paid.
``--weights FILE`` replaces the pretraining with the user's checkpoint, ``--freeze-backbone`` trains the
head only.

``reduced-cifar10-wrn40-2`` (GPU): the Fast AutoAugment paper's setting: search on a stratified 4,000-image
subset of the CIFAR-10 training set with WRN-40-2 child models (5 splits, 200 trials per split, top 10),
then train WRN-40-2 on the full CIFAR-10 training set for 200 epochs (batch 128, lr 0.1, weight decay
5e-4), Cutout 16 px kept on top of every policy as in the papers. Published test errors: baseline 5.3,
Cutout 4.1, AutoAugment 3.7, Fast AutoAugment 3.6.

Outputs in ``--out`` (default ``runs/benchmark/<preset>`` under the current folder, so that a run from the
repository root never overwrites the committed results in ``benchmarks/results/``, which are written only
when ``--out`` names them): ``results.md``, ``results.json``,
``runs.csv`` and ``errors.png``, each carrying the command line that made it; rewritten atomically after
every run, so an interrupted benchmark leaves the runs it finished. A search run here lives in
``search-<hash of its settings>/``: a rerun with other ``--search-*`` options starts a new search, a rerun
with the same ones continues that search. Ray is not imported here; the search's Ray layer is imported
only when a search runs.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import shlex
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence, TextIO

import numpy as np
import torch

from policysearch.benchmark.anchors import ANCHORS, AnchorAugment
from policysearch.atomic import save_torch_atomic, write_bytes_atomic, write_json_atomic, write_text_atomic
from policysearch.training.data import (DataError, ImageData, baseline_for, load_dataset, normalization_for,
                               stratified_indices, stratified_subset)
from policysearch.training.models import MODEL_NAMES
from policysearch.training.pretrained import ModelSpec, check_model, fit_image_size, model_problem
from policysearch.augment.policy import Baseline, Policy, software_versions
from policysearch.augment.standard import load_policy
from policysearch.training.train import Augment, TrainConfig, evaluate, fit_to_data, train_model
from policysearch.augment.transforms import BatchPolicyTransform

__all__ = ["ALL_METHODS", "LEGACY_METHOD_NAMES", "METHODS", "PRESETS", "Preset", "Pretraining", "add_arguments",
           "describe_method", "paired_difference", "pretraining_indices", "run", "run_benchmark"]

# Our policy-format versions of the standard recipes: (policy string, what it is), built by policysearch.augment.standard.
STANDARD: dict[str, tuple[str, str]] = {
    "ours-autoaugment-cifar10": ("autoaugment:cifar10", "torchvision's AutoAugment CIFAR-10 policy as a policy file"),
    "ours-randaugment-m0.9": ("randaugment:n=2,m=9", "RandAugment N=2, every op at level 0.9 of our (AutoAugment) "
                              "ranges"),
    "ours-trivialaugment-narrow": ("trivialaugment", "TrivialAugment, one op at one of 31 levels over AutoAugment's "
                                   "narrow ranges"),
}
ANCHOR_METHODS: tuple[str, ...] = tuple(f"{name}{alone}" for name in ANCHORS for alone in ("", "-alone"))
STANDARD_METHODS: tuple[str, ...] = tuple(f"{name}{alone}" for name in STANDARD for alone in ("", "-alone"))
METHODS: tuple[str, ...] = ("none", "baseline", "cutout", *ANCHOR_METHODS, *STANDARD_METHODS, "searched")
# Run only when asked: the recipe a second search selects for a model trained from scratch (no --weights),
# trained here like every method (from the weights), to see whether searching for fine-tuning pays.
EXTRA_METHODS: tuple[str, ...] = ("searched-scratch",)
ALL_METHODS: tuple[str, ...] = METHODS + EXTRA_METHODS
# The names results.json files used for our policy-format rows before the anchors came.
LEGACY_METHOD_NAMES: dict[str, str] = {
    f"{old}{alone}": f"{new}{alone}" for old, new in (("autoaugment", "ours-autoaugment-cifar10"),
                                                      ("randaugment", "ours-randaugment-m0.9"),
                                                      ("trivialaugment", "ours-trivialaugment-narrow"))
    for alone in ("", "-alone")}

CUTOUT_FRACTION = 16 / 32  # Cutout side per image side: 16 px on CIFAR's 32 x 32


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
        problem = model_problem(self.model)
        if problem:
            raise ValueError(f"--model {problem}")
        if self.epochs < 1:
            raise ValueError(f"--epochs must be at least 1, got {self.epochs}")
        if self.freeze_backbone and not (self.weights or self.pretrain):
            raise ValueError("--freeze-backbone needs --weights (or a preset that pretrains)")
        if "searched-scratch" in self.methods and not (self.weights or self.pretrain):
            raise ValueError("the searched-scratch method compares with a search from weights; give --weights")


CIFAR10_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-dev"
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
    "cifar10-dev-1000": "real photographs from shared/data/cifar10-dev, resnet8 trained until it fits them; the "
                        "search must learn that a flip is allowed",
    "cifar10-dev-1000-short": "the same photographs, small_cnn stopped at 20 epochs while it still underfits",
    "cifar10-dev-2class-200": "200 real photographs of two classes (automobile, truck), resnet8 trained until it fits them",
    "digits-100-finetune": "fine-tunes a small_cnn it pretrains on other digits (classes 0-4), with a second search "
                           "from scratch",
    "reduced-cifar10-wrn40-2": "the Fast AutoAugment paper's setting: search on 4000 CIFAR-10 images, train on all",
}


# ------------------------------------------------------------------------------------------- stats


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean of a - b over pairs, with a two-sided Student-t confidence interval (nan bounds for n < 2)."""
    from scipy import stats

    if len(a) != len(b):
        raise ValueError(f"paired samples need the same length, got {len(a)} and {len(b)}")
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = len(d)
    if n == 0:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    mean = float(d.mean())
    if n < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan, "n": 1}
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


# -------------------------------------------------------------------------------------------- runs


def cutout_pixels(image_size: int) -> int:
    """Cutout side in pixels for an image side: 16 on 32, 8 on 16."""
    return max(1, round(CUTOUT_FRACTION * image_size))


def method_recipe(method: str, baseline: Baseline, searched: Policy | None, cutout: int,
                  cutout_with_policies: bool, scratch: Policy | None = None) -> tuple[Policy, int]:
    """The recipe (policy with its baseline) and the Cutout side in pixels of a benchmark method
    (``scratch``: the recipe searched without the weights, for ``searched-scratch``)."""
    identity = load_policy("identity")
    if method == "none":
        return identity, 0
    if method == "baseline":
        return identity.with_baseline(baseline), 0
    if method == "cutout":
        return identity.with_baseline(baseline), cutout
    extra = cutout if cutout_with_policies else 0
    if method == "searched":
        if searched is None:
            raise ValueError("the searched method needs a policy")
        return searched, extra
    if method == "searched-scratch":
        if scratch is None:
            raise ValueError("the searched-scratch method needs the from-scratch search's policy")
        return scratch, extra
    name = method.removesuffix("-alone")
    if name not in STANDARD:
        raise ValueError(f"unknown method {method!r}" + (" (an anchor: see method_augment)" if name in ANCHORS else ""))
    policy = load_policy(STANDARD[name][0])
    return (policy if name != method else policy.with_baseline(baseline)), extra


def anchor_of(method: str) -> str | None:
    """The anchor (``policysearch.benchmark.anchors.ANCHORS``) a method runs, None for a policy method."""
    name = method.removesuffix("-alone")
    return name if name in ANCHORS else None


def method_augment(method: str, baseline: Baseline, searched: Policy | None, cutout: int, cutout_with_policies: bool,
                   *, image_size: int, mean: Sequence[float], scratch: Policy | None = None) -> tuple[Augment, int]:
    """The training ``augment`` and Cutout side of a method: an anchor run by its own library
    (:class:`AnchorAugment`, baseline first unless ``-alone``), or a recipe run by ``BatchPolicyTransform``."""
    anchor = anchor_of(method)
    if anchor is None:
        recipe, cut = method_recipe(method, baseline, searched, cutout, cutout_with_policies, scratch)
        return BatchPolicyTransform(recipe), cut
    alone = method != anchor
    augment = AnchorAugment(ANCHORS[anchor], image_size, mean, None if alone else baseline)
    return augment, cutout if cutout_with_policies else 0


def describe_method(method: str, baseline: Baseline, cutout: int, cutout_with_policies: bool,
                    searched: str = "") -> str:
    """What a method ran, in words and exact calls, for results.md (``searched``: the searched recipe's name)."""
    base = f"baseline ({baseline.describe()})"
    plain = method in ("none", "baseline", "cutout")
    extra = f", then Cutout {cutout} px" if cutout_with_policies and not plain else ""
    if method == "none":
        return "no augmentation"
    if method == "baseline":
        return base
    if method == "cutout":
        return f"{base}, then Cutout {cutout} px"
    if method in ("searched", "searched-scratch"):
        what = "the searched recipe" if method == "searched" else "the recipe searched from scratch"
        return f"{what}{f' `{searched}`' if searched else ''}, applied as its file says" + extra
    anchor = anchor_of(method)
    if anchor is not None:
        call = f"`{ANCHORS[anchor].call}` per PIL image"
        return (call if method != anchor else f"{base}, then {call}") + extra
    name = method.removesuffix("-alone")
    if name in STANDARD:
        string, what = STANDARD[name]
        policy = f"our policy `{string}` ({what})"
        return (policy if method != name else f"{policy}, then {base}") + extra
    return method


def _search(preset: Preset, out: Path, args: argparse.Namespace | None, stream,
            from_scratch: bool = False) -> tuple[Policy, dict[str, Any]]:
    """Run a Fast AutoAugment search on the training split; returns the policy and its costs.

    Its models start from ``preset.weights`` like the final ones, unless ``from_scratch``."""
    from policysearch.search import SearchConfig, run_search

    defaults = SearchConfig()
    config = SearchConfig(
        dataset=preset.dataset,
        train_size=preset.search_train_size or preset.train_size,
        model=preset.model,
        trials=preset.search_trials or defaults.trials,
        splits=preset.search_splits or defaults.splits,
        top_n=preset.search_top_n or defaults.top_n,
        epochs=preset.search_epochs or defaults.epochs,
        final_epochs=preset.epochs,  # the selection trains the candidate recipes at the final budget
        selection_repeats=preset.selection_repeats,
        batch_size=preset.batch_size,  # child models train like the final models
        lr=preset.lr,
        weight_decay=preset.weight_decay,
        seed=preset.data_seed,  # the search's subset is the benchmark's training subset
        gpus_per_trial=0.25 if preset.device.startswith("cuda") and torch.cuda.is_available() else 0.0,
        data_root=getattr(args, "data_root", "data") if args is not None else "data",
        image_size=preset.image_size,
        weights=None if from_scratch else preset.weights,
        freeze_backbone=preset.freeze_backbone and not from_scratch,
    )
    # One folder per search config: a rerun with other --search-* options starts its own search, and a rerun
    # with the same ones continues (or re-exports) the search it had.
    key = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode("utf-8")).hexdigest()[:12]
    run_dir = out / f"search-{key}"
    started = time.monotonic()
    result = run_search(config, run_dir, resume=(run_dir / "config.json").exists(), stream=stream)
    wall = time.monotonic() - started
    costs = {"search_wall_s": wall, **result.costs, "sub_policies": len(result.policy),
             "policy_file": str(result.policy_path), "search_config": asdict(config)}
    return result.policy, costs


def run_benchmark(preset: Preset, out: str | Path, *, policy: Policy | None = None, policy_source: str = "",
                  command: str = "", preset_name: str = "", args: argparse.Namespace | None = None,
                  stream: TextIO | None = None) -> dict[str, Any]:
    """Train every method for every seed, write the results files after each run, return the document.

    Progress lines go to ``stream`` (default: ``sys.stdout`` at call time, not at import time)."""
    stream = sys.stdout if stream is None else stream
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    root = getattr(args, "data_root", "data")
    train_full = fit_image_size(load_dataset(preset.dataset, split="train", data_root=root,
                                             image_size=preset.image_size), preset.model, preset.image_size)
    train = train_full if preset.train_size is None else stratified_subset(train_full, preset.train_size,
                                                                          seed=preset.data_seed)
    test = fit_image_size(load_dataset(preset.dataset, split="test", data_root=root, image_size=preset.image_size),
                          preset.model, preset.image_size)
    for note in dict.fromkeys((*train.notes, *test.notes)):
        print(f"data: {note}", file=stream, flush=True)
    size = int(train.images.shape[-1])
    baseline = baseline_for(preset.dataset, size)
    mean, std = normalization_for(preset.dataset, train)
    cutout = cutout_pixels(size)
    pretraining = None
    if preset.pretrain is not None and preset.weights is None:
        preset, pretraining = _pretrain(preset, train_full, out, stream)
    spec = ModelSpec(preset.model, train.num_classes, int(train.images.shape[1]), preset.weights,
                     preset.freeze_backbone)
    check_model(spec, size)  # the weights file and the image size, before any training
    document: dict[str, Any] = {
        "command": command or " ".join(shlex.quote(a) for a in sys.argv),
        "preset": preset_name,
        "settings": {**asdict(preset), "image_size": size, "train_images": len(train),
                     "test_images": len(test), "cutout_pixels": cutout, "baseline": asdict(baseline)},
        "software": software_versions(),
        "search": None,
        "pretraining": pretraining,
        "skipped": {},  # method: why it did not run (an anchor whose library is missing)
        "runs": [],
    }
    for method in preset.methods:
        anchor = anchor_of(method)
        problem = ANCHORS[anchor].available() if anchor else None
        if problem:
            document["skipped"][method] = problem
            print(f"benchmark: skipping {method}: {problem}", file=stream, flush=True)
    methods = [m for m in preset.methods if m not in document["skipped"]]
    start = f" for models starting from {preset.weights}" if preset.weights else ""
    if "searched" in preset.methods and policy is None:
        print(f"benchmark: searching a policy{start} on {len(train)} training images first", file=stream, flush=True)
        policy, costs = _search(preset, out, args, stream)
        policy_source = costs["policy_file"]
        document["search"] = costs
    scratch = None
    if "searched-scratch" in preset.methods:
        print(f"benchmark: searching a policy for models trained from scratch on {len(train)} training images",
              file=stream, flush=True)
        scratch, costs = _search(preset, out, args, stream, from_scratch=True)
        document["search_scratch"] = costs
    if policy is not None:
        recipe = policy.metadata.get("recipe", {}) if isinstance(policy.metadata.get("recipe"), dict) else {}
        document["searched_policy"] = {"source": policy_source, "sub_policies": len(policy),
                                       "recipe": recipe.get("name", policy.name), "baseline": asdict(policy.baseline)}
    _write_outputs(out, document)

    total = len(preset.seeds) * len(methods)
    for seed in preset.seeds:  # seed outer: a partial benchmark has complete pairs
        for method in methods:
            augment, cut = method_augment(method, baseline, policy, cutout, preset.cutout_with_policies,
                                          image_size=size, mean=mean, scratch=scratch)
            config = fit_to_data(TrainConfig(epochs=preset.epochs, batch_size=preset.batch_size, lr=preset.lr,
                                             weight_decay=preset.weight_decay, cutout=cut, seed=seed), len(train))
            torch.manual_seed(seed)  # same init for every method of a seed
            model = spec.build()
            started = time.perf_counter()
            last = train_model(model, train, config, augment=augment, mean=mean, std=std, device=preset.device)
            seconds = time.perf_counter() - started
            result = evaluate(model, test.images, test.labels, mean=mean, std=std, device=preset.device)
            # whether the budget let the model fit its data: the un-augmented training images, in eval mode
            fit = evaluate(model, train.images, train.labels, mean=mean, std=std, device=preset.device)
            row = {"method": method, "seed": seed, "test_error": 100.0 * (1.0 - result["accuracy"]),
                   "test_loss": result["loss"], "train_loss": last["train_loss"],
                   "train_accuracy": last["train_accuracy"], "clean_train_accuracy": fit["accuracy"],
                   "train_seconds": seconds}
            document["runs"].append(row)
            print(f"[{len(document['runs'])}/{total}] {method:>14} seed {seed}: test error "
                  f"{row['test_error']:.2f} %, training accuracy {100 * fit['accuracy']:.1f} % ({seconds:.0f} s)",
                  file=stream, flush=True)
            _write_outputs(out, document)
    return document


def pretraining_indices(preset: Preset, labels: np.ndarray) -> np.ndarray:
    """The training-split images a preset pretrains on: outside the benchmark's and the search's training
    subsets, of the pretraining's classes, a stratified subset when it has a size. Never the test split."""
    assert preset.pretrain is not None
    used = np.zeros(len(labels), dtype=bool)
    for size in {preset.train_size, preset.search_train_size or preset.train_size}:
        used[stratified_indices(labels, size, preset.data_seed) if size is not None else slice(None)] = True
    keep = ~used
    if preset.pretrain.classes is not None:
        keep &= np.isin(labels, preset.pretrain.classes)
    eligible = np.flatnonzero(keep)
    if len(eligible) < 2:
        raise DataError(f"pretraining has {len(eligible)} images outside the benchmark's training subset; a preset "
                        "that pretrains needs a --train-size well below the training split")
    if preset.pretrain.size is not None:
        if preset.pretrain.size > len(eligible):
            raise DataError(f"pretraining asks for {preset.pretrain.size} images, but only {len(eligible)} lie "
                            "outside the benchmark's training subset")
        eligible = eligible[stratified_indices(labels[eligible], preset.pretrain.size, preset.data_seed)]
    return eligible


def _pretrain(preset: Preset, train_full: ImageData, out: Path, stream) -> tuple[Preset, dict[str, Any]]:
    """Train the preset's model on its pretraining images and save its state dict under ``out`` (a rerun with
    the same settings reuses the file); returns the preset starting from it and what was done."""
    assert preset.pretrain is not None
    settings = {"dataset": preset.dataset, "model": preset.model, "image_size": int(train_full.images.shape[-1]),
                "train_size": preset.train_size, "search_train_size": preset.search_train_size,
                "data_seed": preset.data_seed, **asdict(preset.pretrain)}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest()[:12]
    path = out / f"pretrained-{key}.pt"
    index = pretraining_indices(preset, train_full.labels.numpy())
    info = {"weights": str(path), "images": len(index), "settings": settings, "seconds": 0.0, "reused": path.exists()}
    if path.exists():
        print(f"benchmark: reusing the pretrained model {path}", file=stream, flush=True)
    else:
        data = train_full.subset(index)
        print(f"benchmark: pretraining {preset.model} on {len(data)} training images outside the benchmark's "
              f"subset (classes {_classes(preset.pretrain.classes)}) for {preset.pretrain.epochs} epochs",
              file=stream, flush=True)
        config = fit_to_data(TrainConfig(epochs=preset.pretrain.epochs, batch_size=preset.pretrain.batch_size,
                                         lr=preset.pretrain.lr, weight_decay=preset.weight_decay,
                                         seed=preset.data_seed), len(data))
        mean, std = normalization_for(preset.dataset, data)
        torch.manual_seed(preset.data_seed)
        model = ModelSpec(preset.model, data.num_classes, int(data.images.shape[1])).build()
        started = time.perf_counter()
        train_model(model, data, config, baseline=baseline_for(preset.dataset, int(data.images.shape[-1])),
                    mean=mean, std=std, device=preset.device)
        info["seconds"] = time.perf_counter() - started
        save_torch_atomic(path, {k: v.cpu() for k, v in model.state_dict().items()})
    return replace(preset, weights=str(path)), info


def _classes(classes: Sequence[int] | None) -> str:
    return "all" if classes is None else " ".join(map(str, classes))


def finetune_verdict(summary: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Whether the recipe searched for fine-tuning beat the one searched from scratch (paired, 95 %)."""
    row = next((r for r in summary if r["method"] == "searched-scratch" and "searched_minus" in r), None)
    if row is None:
        return None
    diff = row["searched_minus"]
    if diff["n"] >= 2 and diff["high"] < 0:
        verdict = "the recipe searched for fine-tuning has the lower test error"
    elif diff["n"] >= 2 and diff["low"] > 0:
        verdict = "the recipe searched from scratch has the lower test error"
    else:
        verdict = "no clear difference (the interval contains 0 or there are fewer than 2 seeds)"
    return {**diff, "verdict": verdict}


# ----------------------------------------------------------------------------------------- outputs


def summarize(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Per method: mean and std of test error, n, mean accuracy on the un-augmented training images, and the
    paired difference searched - method."""
    runs = document["runs"]
    methods = [m for m in ALL_METHODS if any(r["method"] == m for r in runs)]
    by = {m: {r["seed"]: r["test_error"] for r in runs if r["method"] == m} for m in methods}
    rows = []
    for m in methods:
        errors = list(by[m].values())
        fits = [r["clean_train_accuracy"] for r in runs if r["method"] == m and "clean_train_accuracy" in r]
        row = {"method": m, "mean": float(np.mean(errors)),
               "std": float(np.std(errors, ddof=1)) if len(errors) > 1 else math.nan, "n": len(errors),
               "clean_train_accuracy": float(np.mean(fits)) if fits else math.nan,
               "train_seconds": float(np.mean([r["train_seconds"] for r in runs if r["method"] == m]))}
        if "searched" in by and m != "searched":
            seeds = sorted(set(by["searched"]) & set(by[m]))
            row["searched_minus"] = paired_difference([by["searched"][s] for s in seeds], [by[m][s] for s in seeds])
        rows.append(row)
    return rows


def _fmt(x: float, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def render_markdown(document: dict[str, Any], summary: list[dict[str, Any]]) -> str:
    s = document["settings"]
    lines = [f"# Benchmark: {document['preset'] or s['dataset']}", "",
             f"Command: `{document['command']}`", "",
             f"- data: {s['dataset']}, {s['train_images']} training images ({s['image_size']} x {s['image_size']}, "
             f"subset seed {s['data_seed']}), {s['test_images']} test images (used only for these errors)",
             f"- model {s['model']}, {s['epochs']} epochs, batch {s['batch_size']}, lr {s['lr']}, "
             f"weight decay {s['weight_decay']}, seeds {' '.join(map(str, s['seeds']))}",
             f"- the data set's baseline augmentation: pad-crop {s['baseline']['pad_crop']} px, "
             f"flip {s['baseline']['hflip']} (methods marked -alone and none train without it); Cutout "
             f"{s['cutout_pixels']} px"
             + (" (also on top of the policies)" if s["cutout_with_policies"] else ""), ""]
    if document.get("pretraining"):
        pt = document["pretraining"]
        lines.append(f"- pretrained: {s['model']} trained from scratch on {pt['images']} training images outside "
                     f"the benchmark's training subset (classes {_classes(pt['settings']['classes'])}, "
                     f"{pt['settings']['epochs']} epochs), never the test split; `{pt['weights']}`")
    if s.get("weights"):
        lines.append(f"- every model starts from `{s['weights']}` with a new classifier head"
                     + (", backbone frozen" if s.get("freeze_backbone") else ""))
    if document.get("pretraining") or s.get("weights"):
        lines.append("")
    if document.get("searched_policy"):
        sp = document["searched_policy"]
        lines.append(f"- searched recipe: {sp.get('recipe', '')} ({sp['sub_policies']} sub-policies, baseline "
                     f"{sp.get('baseline', {})}) from `{sp['source']}`")
        lines.append("")
    lines += ["| method | mean test error % | std | n | searched - method (pp), 95% CI | training accuracy % "
              "| train s/run |", "|---|---|---|---|---|---|---|"]
    for row in summary:
        diff = row.get("searched_minus")
        text = "-" if diff is None else (f"{diff['mean']:+.2f} [{_fmt(diff['low'])}, {_fmt(diff['high'])}]"
                                         f" (n={diff['n']})")
        fit = row.get("clean_train_accuracy", math.nan)
        lines.append(f"| {row['method']} | {row['mean']:.2f} | {_fmt(row['std'])} | {row['n']} | {text} | "
                     f"{_fmt(100 * fit, 1)} | {row['train_seconds']:.1f} |")
    lines += ["", "A negative difference means the searched policy has the lower error; the interval is a paired "
              "Student-t interval over seeds (same seed: same initialisation and data order). Training accuracy: "
              "the final model on the un-augmented training images (mean over seeds).", ""]
    skipped = document.get("skipped") or {}
    if skipped:
        lines += ["Skipped: " + "; ".join(f"`{m}`: {why}" for m, why in skipped.items()) + ".", ""]
    searched_name = document.get("searched_policy", {}).get("recipe", "") if document.get("searched_policy") else ""
    baseline = Baseline(**s["baseline"])
    lines += ["## What each method ran", "", "| method | what ran |", "|---|---|"]
    for m in [row["method"] for row in summary] + list(skipped):
        what = describe_method(m, baseline, s["cutout_pixels"], s["cutout_with_policies"], searched_name)
        lines.append(f"| {m} | {what}{' (skipped)' if m in skipped else ''} |")
    lines += ["", "Anchors (`tv-*`, `timm-*`) are the libraries' own classes with their default arguments, applied "
              "to one PIL image at a time; their global random generators are seeded per batch from the run's "
              "seed and restored afterwards (`policysearch/benchmark/anchors.py`). `ours-*` are our policy-format versions "
              "(`policysearch/augment/standard.py`).", ""]
    verdict = finetune_verdict(summary)
    if verdict:
        lines += ["## Searched for fine-tuning vs searched from scratch", "",
                  "Both recipes fine-tune the same model here; `searched` was selected by a search whose models start "
                  "from the weights, `searched-scratch` by the same search without them. searched - searched-scratch: "
                  f"{verdict['mean']:+.2f} pp [{_fmt(verdict['low'])}, {_fmt(verdict['high'])}] (n={verdict['n']}): "
                  f"{verdict['verdict']}.", ""]
    search = document.get("search")
    if search:
        final = [r["train_seconds"] for r in document["runs"] if r["method"] == "searched"]
        one = float(np.mean(final)) if final else math.nan
        lines += ["## Cost", "", "| what | wall s | device s |", "|---|---|---|",
                  f"| search (whole, incl. Ray start/stop) | {search['search_wall_s']:.1f} | "
                  f"{search.get('total_device_s', math.nan):.1f} |",
                  f"| - phase 1 child models{'' if 'phase1b_wall_s' in search else ' (wall with 1b)'} | "
                  f"{search['phase1_wall_s']:.1f} | {search['phase1_device_s']:.1f} |",
                  *([f"| - phase 1b domain fit{'' if 'phase1b_wall_s' in search else ' (in the phase-1 trials)'} | "
                     f"{_fmt(search.get('phase1b_wall_s', math.nan), 1)} | "
                     f"{search['phase1b_device_s']:.1f} |"] if "phase1b_device_s" in search else []),
                  f"| - phase 2 policy trials | {search['phase2_wall_s']:.1f} | {search['phase2_device_s']:.1f} |",
                  *([f"| - phase 3 recipe selection | {search['phase3_wall_s']:.1f} | "
                     f"{search.get('phase3_device_s', math.nan):.1f} |"] if "phase3_wall_s" in search else []),
                  f"| one final training (searched recipe, mean) | {_fmt(one, 1)} | {_fmt(one, 1)} |", "",
                  f"The search took {_fmt(search['search_wall_s'] / one, 1)} times the wall time and "
                  f"{_fmt(search.get('total_device_s', math.nan) / one, 1)} times the device time of one final "
                  "training (device seconds: the sum of the search trials' own run times, which overlap when trials "
                  "run in parallel).", ""]
    lines += [f"Software: {', '.join(f'{k} {v}' for k, v in document['software'].items())}", ""]
    return "\n".join(lines)


def _plot(document: dict[str, Any], summary: list[dict[str, Any]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    names = [row["method"] for row in summary]
    xs = np.arange(len(names))
    for i, row in enumerate(summary):
        errs = [r["test_error"] for r in document["runs"] if r["method"] == row["method"]]
        jitter = np.linspace(-0.12, 0.12, len(errs)) if len(errs) > 1 else [0.0]
        ax.scatter(i + np.asarray(jitter), errs, s=14, color="0.55", zorder=2, label="one seed" if i == 0 else None)
        std = 0.0 if math.isnan(row["std"]) else row["std"]
        color = {"searched": "tab:red", "searched-scratch": "tab:orange"}.get(row["method"], "tab:blue")
        ax.errorbar(i, row["mean"], yerr=std, fmt="o", color=color, capsize=6, markersize=7, zorder=3,
                    label="mean +- std" if i == 0 else None)
    ax.set_xticks(xs, names, rotation=20)
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_ylim(bottom=0)  # differences of a fraction of a point should not look like a factor
    ax.set_ylabel("test error (%)")
    s = document["settings"]
    ax.set_title(f"{document['preset'] or s['dataset']}: {s['train_images']} images, {s['model']}, "
                 f"{s['epochs']} epochs", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    command = document["command"]
    fig.text(0.01, 0.01, command if len(command) < 140 else command[:137] + "...", fontsize=6, color="0.4")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _write_outputs(out: Path, document: dict[str, Any]) -> None:
    summary = summarize(document) if document["runs"] else []
    write_json_atomic(out / "results.json", {**document, "summary": summary,
                                             "finetune_vs_scratch": finetune_verdict(summary)})
    buffer = io.StringIO()
    buffer.write(f"# command: {document['command']}\n")
    fields = ["method", "seed", "test_error", "test_loss", "train_loss", "train_accuracy", "clean_train_accuracy",
              "train_seconds"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in document["runs"]:
        writer.writerow({k: (f"{row[k]:.4f}" if isinstance(row.get(k), float) else row.get(k, "")) for k in fields})
    write_text_atomic(out / "runs.csv", buffer.getvalue())
    if summary:
        write_text_atomic(out / "results.md", render_markdown(document, summary))
        write_bytes_atomic(out / "errors.png", _plot(document, summary))


# ---------------------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``policysearch benchmark`` options; a preset fills every setting, the options override it."""
    parser.add_argument("--preset", choices=[*sorted(PRESETS), "list"], default="digits-small", metavar="PRESET",
                        help=f"the settings to start from: {', '.join(sorted(PRESETS))}; 'list' (or --list) names "
                             "them with one line each (default: %(default)s)")
    parser.add_argument("--list", action="store_true", help="name the presets with one line each, and stop")
    parser.add_argument("--dataset", default=None, help="data set (default: the preset's)")
    parser.add_argument("--data-root", default="data", help="where downloadable data sets live")
    parser.add_argument("--train-size", type=int, default=None, help="training images (stratified subset)")
    parser.add_argument("--model", default=None, metavar="MODEL",
                        help=f"{', '.join(MODEL_NAMES)} or torchvision:NAME (built with weights=None)")
    parser.add_argument("--weights", default=None, metavar="PATH",
                        help="a local weights file (state dict of --model) that every model, the search's too, "
                             "starts from; the classifier head is always new (default: the preset's; the "
                             "fine-tuning preset pretrains its own)")
    parser.add_argument("--freeze-backbone", action=argparse.BooleanOptionalAction, default=None,
                        help="train only the classifier head (default: the preset's)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="resize every image to this size (default: as loaded; torchvision models at least 32)")
    parser.add_argument("--pretrain-epochs", type=int, default=None,
                        help="epochs of the preset's own pretraining (digits-100-finetune)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs of every method, and of the selection's trainings when it searches "
                             "(default: the preset's)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="batch size of every method's training and of the search's models (default: the "
                             "preset's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                        help=f"training seeds, one training per method and seed (default: the preset's: "
                             f"{_preset_seeds()})")
    parser.add_argument("--methods", nargs="+", choices=ALL_METHODS, default=None,
                        help="default: the preset's (searched-scratch: the recipe of a search without --weights)")
    parser.add_argument("--policy", metavar="POLICY", default=None,
                        help="the 'searched' method's policy: a policy file, or a policy string such as "
                             "randaugment:n=1,m=5 (see policysearch.augment.standard); without it the benchmark "
                             "searches one first")
    parser.add_argument("--cutout-with-policies", action=argparse.BooleanOptionalAction, default=None,
                        help="also apply Cutout on top of the policy methods (default: the preset's)")
    parser.add_argument("--search-trials", type=int, default=None, help="policy trials per split")
    parser.add_argument("--search-splits", type=int, default=None, help="D_M/D_A splits")
    parser.add_argument("--search-top-n", type=int, default=None, help="best policies kept per split")
    parser.add_argument("--search-epochs", type=int, default=None, help="child-model epochs")
    parser.add_argument("--search-train-size", type=int, default=None, help="images the search uses")
    parser.add_argument("--out", default=None,
                        help=f"output folder (default: {DEFAULT_OUT}/<preset> under the current folder; the "
                             "committed results in benchmarks/results/ are written only when named here)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: the preset's)")


def _preset_seeds() -> str:
    """The presets' seeds, grouped: ``0 1 2 3 4 (digits-small, ...)``."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for name in sorted(PRESETS):
        groups.setdefault(PRESETS[name].seeds, []).append(name)
    return "; ".join(f"{' '.join(map(str, seeds))} ({', '.join(names)})" for seeds, names in groups.items())


def preset_lines() -> list[str]:
    """One line per preset: its name, what it is for and its main settings."""
    width = max(map(len, PRESETS))
    lines = []
    for name in sorted(PRESETS):
        p = PRESETS[name]
        data = p.dataset.rsplit("/", 1)[-1] if p.dataset.startswith("imagefolder:") else p.dataset
        images = f"{p.train_size} {data} images" if p.train_size else f"all {data} training images"
        lines.append(f"{name:<{width}}  {'GPU' if p.device.startswith('cuda') else 'CPU'}: {PRESET_NOTES[name]}; "
                     f"{images}, {p.model}, {p.epochs} epochs at batch {p.batch_size}, seeds "
                     f"{' '.join(map(str, p.seeds))}")
    return lines


def default_out(preset: str) -> Path:
    """Where a benchmark writes without ``--out``: beside the other runs, never over the committed results."""
    return Path(DEFAULT_OUT) / preset


def preset_from_args(args: argparse.Namespace) -> Preset:
    preset = PRESETS[args.preset]
    overrides = {
        "dataset": args.dataset, "train_size": args.train_size, "model": args.model, "epochs": args.epochs,
        "batch_size": args.batch_size, "seeds": tuple(args.seeds) if args.seeds else None,
        "methods": tuple(dict.fromkeys(args.methods)) if args.methods else None,
        "cutout_with_policies": args.cutout_with_policies, "search_trials": args.search_trials,
        "search_splits": args.search_splits, "search_top_n": args.search_top_n,
        "search_epochs": args.search_epochs, "search_train_size": args.search_train_size, "device": args.device,
        "weights": args.weights, "freeze_backbone": args.freeze_backbone, "image_size": args.image_size,
    }
    if args.pretrain_epochs is not None:
        if preset.pretrain is None:
            raise ValueError(f"--pretrain-epochs: preset {args.preset} does not pretrain (digits-100-finetune does)")
        overrides["pretrain"] = replace(preset.pretrain, epochs=args.pretrain_epochs)
    return replace(preset, **{k: v for k, v in overrides.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    """``policysearch benchmark``: train every method for every seed and write the results folder
    (``--list`` or ``--preset list``: name the presets and stop)."""
    if args.list or args.preset == "list":
        print("\n".join(preset_lines()))
        return 0
    preset = preset_from_args(args)
    out = Path(args.out) if args.out else default_out(args.preset)
    policy = load_policy(args.policy) if args.policy else None
    if preset.device.startswith("cuda") and not torch.cuda.is_available():
        raise DataError(f"preset {args.preset} wants a GPU but CUDA is not available; pass --device cpu")
    document = run_benchmark(preset, out, policy=policy, policy_source=args.policy or "", preset_name=args.preset,
                             args=args)
    print(f"\nresults: {out / 'results.md'}")
    print((out / "results.md").read_text(encoding="utf-8"))
    return 0 if document["runs"] else 1
