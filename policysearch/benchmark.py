"""Benchmark a searched policy against the search-free augmentations, with paired statistics.

Every method trains the same model on the same training images for the same epochs and seeds, on top of
the data set's baseline augmentation (pad-and-crop; flips only where they keep the meaning):

- ``baseline``: the baseline augmentation only;
- ``cutout``: baseline + Cutout, 16 px on 32 x 32 images and scaled with the image size (8 px on 16 x 16
  digits), applied by the trainer after normalisation;
- ``autoaugment``: torchvision's AutoAugment CIFAR-10 policy converted to our format
  (``autoaugment:cifar10``);
- ``randaugment``: RandAugment N=2, M=9 in the paper's sense (``randaugment:n=2,m=9``): M on a 0..10
  scale, so every op runs at level 0.9 of its range - not torchvision's ``RandAugment(magnitude=9)``,
  which means bin 9 of 31 (level 0.3), a weaker augmentation;
- ``trivialaugment``: TrivialAugment (``trivialaugment``): one op per image, uniformly from the same 14
  ops, at a level drawn uniformly from 31 bins 0, 1/30, ..., 1 (torchvision's bin count);
  how these three are expressed as policies is in ``policysearch/standard.py``;
- ``searched``: the policy of ``--policy FILE_OR_STRING``, or of a Fast AutoAugment search run here first
  on the same training images (never the test split).

Policies are applied per sample by ``BatchPolicyTransform``. The test split is used only for the final
reported errors; no setting here was chosen by looking at it.

Presets
-------
``digits-small`` (CPU, about 10-20 minutes on 2 cores): scikit-learn's digits at 16 x 16, a stratified
150-image training subset (15 per class), ``small_cnn``, 60 epochs, batch 32, seeds 0 1 2 3 4, all six
methods; the searched policy comes from a search with the search's default budget (5 splits x 40 trials,
top 10 per split, strength check) on the same 150 images, its child models trained for the same 60
epochs as the final models so that the strength check sees the final training regime. Why 150 and 60
epochs: field.md measured the largest effect of augmentation at 100 digits trained for 60 epochs
(9.0 % -> 5.4 % error) and none left at 500; at 100 a D_A split holds only 40 images and the search
reward saturates, so 150 keeps augmentation relevant while giving each split 60 held-out images. Five
seeds because differences between methods here are a few test images. Batch 32 so that 150 images give
5 steps per epoch rather than 2.

``reduced-cifar10-wrn40-2`` (GPU): the Fast AutoAugment paper's setting: search on a stratified 4,000-image
subset of the CIFAR-10 training set with WRN-40-2 child models (5 splits, 200 trials per split, top 10),
then train WRN-40-2 on the full CIFAR-10 training set for 200 epochs (batch 128, lr 0.1, weight decay
5e-4), Cutout 16 px kept on top of every policy as in the papers. Published test errors: baseline 5.3,
Cutout 4.1, AutoAugment 3.7, Fast AutoAugment 3.6.

Outputs in ``--out`` (default ``benchmarks/results/<preset>``): ``results.md``, ``results.json``,
``runs.csv`` and ``errors.png``, each carrying the command line that made it; rewritten atomically after
every run, so an interrupted benchmark leaves the runs it finished. Ray is not imported here; the search
module is imported only when a search runs.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence, TextIO

import numpy as np
import torch

from policysearch.data import (DataError, ImageData, baseline_for, load_dataset, normalization_for,
                               stratified_subset)
from policysearch.models import MODEL_NAMES, build_model
from policysearch.policy import Policy, software_versions, write_json_atomic
from policysearch.standard import autoaugment_policy, load_policy, randaugment_policy, trivialaugment_policy
from policysearch.train import TrainConfig, evaluate, train_model
from policysearch.transforms import BatchPolicyTransform

__all__ = ["METHODS", "PRESETS", "Preset", "add_arguments", "paired_difference", "run", "run_benchmark"]

METHODS: tuple[str, ...] = ("baseline", "cutout", "autoaugment", "randaugment", "trivialaugment", "searched")

CUTOUT_FRACTION = 16 / 32  # Cutout side per image side: 16 px on CIFAR's 32 x 32


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
    device: str = "cpu"

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
        if not self.methods:
            raise ValueError("--methods needs at least one method")
        if not self.seeds:
            raise ValueError("--seeds needs at least one seed")
        if self.model not in MODEL_NAMES:
            raise ValueError(f"--model must be one of {', '.join(MODEL_NAMES)}, got {self.model!r}")
        if self.epochs < 1:
            raise ValueError(f"--epochs must be at least 1, got {self.epochs}")


PRESETS: dict[str, Preset] = {
    "digits-small": Preset(dataset="digits", train_size=150, model="small_cnn", epochs=60, batch_size=32,
                           seeds=(0, 1, 2, 3, 4), search_epochs=60),
    "reduced-cifar10-wrn40-2": Preset(dataset="cifar10", train_size=None, model="wrn40_2", epochs=200,
                                      batch_size=128, cutout_with_policies=True, search_train_size=4000,
                                      search_trials=200, search_splits=5, search_top_n=10, search_epochs=200,
                                      device="cuda"),
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


def _method_setup(method: str, policy: Policy | None, cutout: int, cutout_with_policies: bool
                  ) -> tuple[BatchPolicyTransform | None, int]:
    if method == "baseline":
        return None, 0
    if method == "cutout":
        return None, cutout
    extra = cutout if cutout_with_policies else 0
    if method == "autoaugment":
        return BatchPolicyTransform(autoaugment_policy("cifar10")), extra
    if method == "randaugment":
        return BatchPolicyTransform(randaugment_policy()), extra
    if method == "trivialaugment":
        return BatchPolicyTransform(trivialaugment_policy()), extra
    if method == "searched":
        if policy is None:
            raise ValueError("the searched method needs a policy")
        return BatchPolicyTransform(policy), extra
    raise ValueError(f"unknown method {method!r}")


def _search(preset: Preset, out: Path, args: argparse.Namespace | None, stream) -> tuple[Policy, dict[str, Any]]:
    """Run a Fast AutoAugment search on the training split; returns the policy and its costs."""
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
        batch_size=preset.batch_size,  # child models train like the final models
        lr=preset.lr,
        weight_decay=preset.weight_decay,
        seed=preset.data_seed,  # the search's subset is the benchmark's training subset
        gpus_per_trial=0.25 if preset.device.startswith("cuda") and torch.cuda.is_available() else 0.0,
        data_root=getattr(args, "data_root", "data") if args is not None else "data",
    )
    started = time.monotonic()
    result = run_search(config, out / "search", stream=stream)
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
    train_full = load_dataset(preset.dataset, split="train", data_root=getattr(args, "data_root", "data"))
    train = train_full if preset.train_size is None else stratified_subset(train_full, preset.train_size,
                                                                          seed=preset.data_seed)
    test = load_dataset(preset.dataset, split="test", data_root=getattr(args, "data_root", "data"))
    size = int(train.images.shape[-1])
    baseline = baseline_for(preset.dataset, size)
    mean, std = normalization_for(preset.dataset, train)
    cutout = cutout_pixels(size)
    document: dict[str, Any] = {
        "command": command or " ".join(shlex.quote(a) for a in sys.argv),
        "preset": preset_name,
        "settings": {**asdict(preset), "image_size": size, "train_images": len(train),
                     "test_images": len(test), "cutout_pixels": cutout, "baseline": asdict(baseline)},
        "software": software_versions(),
        "search": None,
        "runs": [],
    }
    if "searched" in preset.methods and policy is None:
        print(f"benchmark: searching a policy on {len(train)} training images first", file=stream, flush=True)
        policy, costs = _search(preset, out, args, stream)
        policy_source = costs["policy_file"]
        document["search"] = costs
    if policy is not None:
        document["searched_policy"] = {"source": policy_source, "sub_policies": len(policy)}
    _write_outputs(out, document)

    total = len(preset.seeds) * len(preset.methods)
    for seed in preset.seeds:  # seed outer: a partial benchmark has complete pairs
        for method in preset.methods:
            augment, cut = _method_setup(method, policy, cutout, preset.cutout_with_policies)
            config = TrainConfig(epochs=preset.epochs, batch_size=preset.batch_size, lr=preset.lr,
                                 weight_decay=preset.weight_decay, cutout=cut, seed=seed)
            torch.manual_seed(seed)  # same init for every method of a seed
            model = build_model(preset.model, train.num_classes, train.images.shape[1])
            started = time.perf_counter()
            last = train_model(model, train, config, augment=augment, baseline=baseline, mean=mean, std=std,
                               device=preset.device)
            seconds = time.perf_counter() - started
            result = evaluate(model, test.images, test.labels, mean=mean, std=std, device=preset.device)
            row = {"method": method, "seed": seed, "test_error": 100.0 * (1.0 - result["accuracy"]),
                   "test_loss": result["loss"], "train_loss": last["train_loss"],
                   "train_accuracy": last["train_accuracy"], "train_seconds": seconds}
            document["runs"].append(row)
            print(f"[{len(document['runs'])}/{total}] {method:>14} seed {seed}: test error "
                  f"{row['test_error']:.2f} % ({seconds:.0f} s)", file=stream, flush=True)
            _write_outputs(out, document)
    return document


# ----------------------------------------------------------------------------------------- outputs


def summarize(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Per method: mean and std of test error, n, and the paired difference searched - method."""
    runs = document["runs"]
    methods = [m for m in METHODS if any(r["method"] == m for r in runs)]
    by = {m: {r["seed"]: r["test_error"] for r in runs if r["method"] == m} for m in methods}
    rows = []
    for m in methods:
        errors = list(by[m].values())
        row = {"method": m, "mean": float(np.mean(errors)),
               "std": float(np.std(errors, ddof=1)) if len(errors) > 1 else math.nan, "n": len(errors),
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
             f"- every method on top of the baseline augmentation (pad-crop {s['baseline']['pad_crop']} px, "
             f"flip {s['baseline']['hflip']}); Cutout {s['cutout_pixels']} px"
             + (" (also on top of the policies)" if s["cutout_with_policies"] else ""),
             "- RandAugment N=2, M=9 on the paper's 0..10 scale (level 0.9); TrivialAugment over 31 level bins"
             " in our op ranges", ""]
    if document.get("searched_policy"):
        sp = document["searched_policy"]
        lines.append(f"- searched policy: {sp['sub_policies']} sub-policies from `{sp['source']}`")
        lines.append("")
    lines += ["| method | mean test error % | std | n | searched - method (pp), 95% CI | train s/run |",
              "|---|---|---|---|---|---|"]
    for row in summary:
        diff = row.get("searched_minus")
        text = "-" if diff is None else (f"{diff['mean']:+.2f} [{_fmt(diff['low'])}, {_fmt(diff['high'])}]"
                                         f" (n={diff['n']})")
        lines.append(f"| {row['method']} | {row['mean']:.2f} | {_fmt(row['std'])} | {row['n']} | {text} | "
                     f"{row['train_seconds']:.1f} |")
    lines += ["", "A negative difference means the searched policy has the lower error; the interval is a paired "
              "Student-t interval over seeds (same seed: same initialisation and data order).", ""]
    search = document.get("search")
    if search:
        final = [r["train_seconds"] for r in document["runs"] if r["method"] == "searched"]
        one = float(np.mean(final)) if final else math.nan
        lines += ["## Cost", "", "| what | wall s | device s |", "|---|---|---|",
                  f"| search (whole, incl. Ray start/stop) | {search['search_wall_s']:.1f} | "
                  f"{search.get('total_device_s', math.nan):.1f} |",
                  f"| - phase 1 child models | {search['phase1_wall_s']:.1f} | {search['phase1_device_s']:.1f} |",
                  f"| - phase 2 policy trials | {search['phase2_wall_s']:.1f} | {search['phase2_device_s']:.1f} |",
                  *([f"| - phase 3 strength check | {search['phase3_wall_s']:.1f} | "
                     f"{search.get('phase3_device_s', math.nan):.1f} |"] if "phase3_wall_s" in search else []),
                  f"| one final training (searched policy, mean) | {_fmt(one, 1)} | {_fmt(one, 1)} |", "",
                  f"The search took {_fmt(search['search_wall_s'] / one, 1)} times the wall time of one final "
                  "training (device seconds: the sum of the search trials' own run times, which overlap when trials run in parallel).", ""]
    lines += [f"Software: {', '.join(f'{k} {v}' for k, v in document['software'].items())}", ""]
    return "\n".join(lines)


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
        color = "tab:red" if row["method"] == "searched" else "tab:blue"
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


def rewrite_outputs(out: str | Path) -> None:
    """Render results.md, runs.csv and errors.png again from ``results.json`` (same runs, same command)."""
    out = Path(out)
    document = json.loads((out / "results.json").read_text(encoding="utf-8"))
    document.pop("summary", None)
    _write_outputs(out, document)


def _write_outputs(out: Path, document: dict[str, Any]) -> None:
    summary = summarize(document) if document["runs"] else []
    write_json_atomic(out / "results.json", {**document, "summary": summary})
    buffer = io.StringIO()
    buffer.write(f"# command: {document['command']}\n")
    fields = ["method", "seed", "test_error", "test_loss", "train_loss", "train_accuracy", "train_seconds"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in document["runs"]:
        writer.writerow({k: (f"{row[k]:.4f}" if isinstance(row[k], float) else row[k]) for k in fields})
    _write_text_atomic(out / "runs.csv", buffer.getvalue())
    if summary:
        _write_text_atomic(out / "results.md", render_markdown(document, summary))
        _write_bytes_atomic(out / "errors.png", _plot(document, summary))


# ---------------------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``policysearch benchmark`` options; a preset fills every setting, the options override it."""
    parser.add_argument("--preset", choices=sorted(PRESETS), default="digits-small",
                        help="digits-small: CPU, 150 digits, small_cnn, 60 epochs, 5 seeds, 10-20 min on 2 cores; "
                             "reduced-cifar10-wrn40-2: GPU, search on 4000 CIFAR-10 images with WRN-40-2, "
                             "final training on all of CIFAR-10 for 200 epochs (default: %(default)s)")
    parser.add_argument("--dataset", default=None, help="data set (default: the preset's)")
    parser.add_argument("--data-root", default="data", help="where downloadable data sets live")
    parser.add_argument("--train-size", type=int, default=None, help="training images (stratified subset)")
    parser.add_argument("--model", choices=MODEL_NAMES, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default: 0 1 2)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=None, help="default: all six")
    parser.add_argument("--policy", metavar="POLICY", default=None,
                        help="the 'searched' method's policy: a policy file, or a policy string such as "
                             "randaugment:n=1,m=5 (see policysearch.standard); without it the benchmark "
                             "searches one first")
    parser.add_argument("--cutout-with-policies", action=argparse.BooleanOptionalAction, default=None,
                        help="also apply Cutout on top of the policy methods (default: the preset's)")
    parser.add_argument("--search-trials", type=int, default=None, help="policy trials per split")
    parser.add_argument("--search-splits", type=int, default=None, help="D_M/D_A splits")
    parser.add_argument("--search-top-n", type=int, default=None, help="best policies kept per split")
    parser.add_argument("--search-epochs", type=int, default=None, help="child-model epochs")
    parser.add_argument("--search-train-size", type=int, default=None, help="images the search uses")
    parser.add_argument("--out", default=None, help="output folder (default: benchmarks/results/<preset>)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: the preset's)")


def preset_from_args(args: argparse.Namespace) -> Preset:
    preset = PRESETS[args.preset]
    overrides = {
        "dataset": args.dataset, "train_size": args.train_size, "model": args.model, "epochs": args.epochs,
        "batch_size": args.batch_size, "seeds": tuple(args.seeds) if args.seeds else None,
        "methods": tuple(dict.fromkeys(args.methods)) if args.methods else None,
        "cutout_with_policies": args.cutout_with_policies, "search_trials": args.search_trials,
        "search_splits": args.search_splits, "search_top_n": args.search_top_n,
        "search_epochs": args.search_epochs, "search_train_size": args.search_train_size, "device": args.device,
    }
    return replace(preset, **{k: v for k, v in overrides.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    """``policysearch benchmark``: train every method for every seed and write the results folder."""
    preset = preset_from_args(args)
    out = Path(args.out) if args.out else Path("benchmarks") / "results" / args.preset
    policy = load_policy(args.policy) if args.policy else None
    if preset.device.startswith("cuda") and not torch.cuda.is_available():
        raise DataError(f"preset {args.preset} wants a GPU but CUDA is not available; pass --device cpu")
    document = run_benchmark(preset, out, policy=policy, policy_source=args.policy or "", preset_name=args.preset,
                             args=args)
    print(f"\nresults: {out / 'results.md'}")
    print((out / "results.md").read_text(encoding="utf-8"))
    return 0 if document["runs"] else 1
