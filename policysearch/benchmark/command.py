"""``policysearch benchmark``: its options (a preset fills every setting, the options override it) and
its entry point."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from policysearch.arguments import decimal_number, whole_number
from policysearch.augment.standard import load_policy
from policysearch.benchmark.methods import ALL_METHODS
from policysearch.benchmark.presets import (DEFAULT_OUT, PRESETS, Preset, data_key, default_out,
                                           missing_data_text, preset_lines, preset_seeds)
from policysearch.benchmark.report import write_outputs
from policysearch.benchmark.runner import run_benchmark
from policysearch.invocation import command_line
from policysearch.search.interrupts import EXIT_INTERRUPTED, SearchInterrupted, stop_line
from policysearch.training.data import DATA_ROOT, DataError, dataset_name
from policysearch.training.models import MODEL_NAMES
from policysearch.training.train import MIN_STEPS, MIN_STEPS_PER_EPOCH


DEFAULT_PRESET = "digits-small"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``policysearch benchmark`` options; a preset fills every setting, the options override it."""
    parser.add_argument("--preset", choices=[*sorted(PRESETS), "list"], default=None, metavar="PRESET",
                        help=f"the settings to start from: {', '.join(sorted(PRESETS))}; 'list' (or --list) names "
                             f"them with one line each (default: {DEFAULT_PRESET})")
    parser.add_argument("--list", action="store_true", help="name the presets with one line each, and stop")
    parser.add_argument("--dataset", default=None,
                        help="data set: a name, imagefolder:PATH or a folder with train/ and test/ subfolders of "
                             "class folders (default: the preset's; another one is used whole, without the "
                             "preset's subset sizes and pretraining)")
    parser.add_argument("--data-root", default=DATA_ROOT, help="where downloadable data sets live (default: %(default)s)")
    parser.add_argument("--download", action="store_true",
                        help="download a torchvision data set (cifar10, cifar100, svhn) into --data-root if missing")
    parser.add_argument("--train-size", type=whole_number, default=None, help="training images, a stratified subset (default: the preset's)")
    parser.add_argument("--model", default=None, metavar="MODEL",
                        help=f"{', '.join(MODEL_NAMES)}, torchvision:NAME or timm:NAME (built without weights; "
                             "default: the preset's)")
    parser.add_argument("--weights", default=None, metavar="PATH",
                        help="a local weights file (state dict of --model) that every model, the search's too, "
                             "starts from; the classifier head is always new (default: the preset's; the "
                             "fine-tuning preset pretrains its own)")
    parser.add_argument("--freeze-backbone", action=argparse.BooleanOptionalAction, default=None,
                        help="train only the classifier head (default: the preset's)")
    parser.add_argument("--image-size", type=whole_number, default=None,
                        help="resize every image to this size (default: digits 16, cifar and svhn 32; an image folder: "
                             "the median shorter side, at most 64; torchvision models at least 32)")
    parser.add_argument("--pretrain-epochs", type=whole_number, default=None,
                        help="epochs of the preset's own pretraining (digits-100-finetune; default: the preset's)")
    parser.add_argument("--epochs", type=whole_number, default=None,
                        help="training epochs of every method, and of the selection's trainings when it searches "
                             f"(default: the preset's); on few images epochs are added up to {MIN_STEPS} optimizer "
                             "steps, as results.md and --list say")
    parser.add_argument("--batch-size", type=whole_number, default=None,
                        help="batch size of every method's training and of the search's models (default: the "
                             f"preset's; on few images it is lowered so that an epoch has at least {MIN_STEPS_PER_EPOCH} steps)")
    parser.add_argument("--lr", type=decimal_number, default=None,
                        help="learning rate of every method's training and of the search's models (default: the "
                             "preset's; fine-tuning usually wants a lower one)")
    parser.add_argument("--seeds", type=whole_number, nargs="+", default=None, metavar="SEED",
                        help=f"training seeds, one training per method and seed (default: the preset's: "
                             f"{preset_seeds()})")
    parser.add_argument("--methods", nargs="+", choices=ALL_METHODS, default=None, metavar="METHOD",
                        help=f"{', '.join(ALL_METHODS)}; default: the preset's (searched-scratch: the recipe of a "
                             "search without --weights)")
    parser.add_argument("--policy", metavar="POLICY", default=None,
                        help="the 'searched' method's policy: a policy file, or a policy string such as "
                             "randaugment:n=1,m=5 (see policysearch.augment.standard); by default the benchmark "
                             "searches one first")
    parser.add_argument("--cutout-with-policies", action=argparse.BooleanOptionalAction, default=None,
                        help="also apply Cutout on top of the policy methods (default: the preset's)")
    parser.add_argument("--search-trials", type=whole_number, default=None, help="policy trials per split (default: the preset's, else the search's)")
    parser.add_argument("--search-splits", type=whole_number, default=None, help="D_M/D_A splits (default: the preset's, else the search's)")
    parser.add_argument("--search-top-n", type=whole_number, default=None, help="best policies kept per split (default: the preset's, else the search's)")
    parser.add_argument("--search-epochs", type=whole_number, default=None, help="child-model epochs (default: the preset's, else the search's)")
    parser.add_argument("--search-train-size", type=whole_number, default=None, help="images the search uses (default: the preset's, else the final training's)")
    parser.add_argument("--out", default=None,
                        help=f"output folder (default: {DEFAULT_OUT}/<preset> under the current folder; the "
                             "committed results in benchmarks/results/ are written only when named here)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: the preset's)")
    parser.add_argument("--report", action="store_true",
                        help="write results.md, runs.csv and errors.png again from OUT/results.json, training "
                             "nothing (the runs and the command that made them stay as they are)")


def preset_name(args: argparse.Namespace) -> str:
    """The preset named by ``--preset``, else the default one."""
    return args.preset or DEFAULT_PRESET


def preset_from_args(args: argparse.Namespace) -> Preset:
    """The preset with the options' overrides. Another ``--dataset`` than the preset's drops the settings
    that belong to the preset's data: its subset sizes (the whole training split is used unless
    ``--train-size`` says otherwise) and its pretraining."""
    preset = PRESETS[preset_name(args)]
    if args.weights is not None and not args.weights.strip():  # Path("") is the current folder
        raise ValueError("--weights is empty; give a weights file (a saved state dict), or leave it out")
    dataset = dataset_name(args.dataset) if args.dataset is not None else None  # a folder, as search takes it
    if dataset is not None and data_key(dataset) != data_key(preset.dataset):
        preset = replace(preset, train_size=None, search_train_size=None, pretrain=None)
    overrides = {
        "dataset": dataset, "train_size": args.train_size, "model": args.model, "epochs": args.epochs,
        "batch_size": args.batch_size, "lr": args.lr, "seeds": tuple(dict.fromkeys(args.seeds)) if args.seeds else None,
        "methods": tuple(dict.fromkeys(args.methods)) if args.methods else None,
        "cutout_with_policies": args.cutout_with_policies, "search_trials": args.search_trials,
        "search_splits": args.search_splits, "search_top_n": args.search_top_n,
        "search_epochs": args.search_epochs, "search_train_size": args.search_train_size, "device": args.device,
        "weights": args.weights, "freeze_backbone": args.freeze_backbone, "image_size": args.image_size,
    }
    if args.pretrain_epochs is not None:
        if preset.pretrain is None:
            raise ValueError(f"--pretrain-epochs: preset {preset_name(args)} does not pretrain (digits-100-finetune does)")
        overrides["pretrain"] = replace(preset.pretrain, epochs=args.pretrain_epochs)
    return replace(preset, **{k: v for k, v in overrides.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    """``policysearch benchmark``: train every method for every seed and write the results folder
    (``--list`` or ``--preset list``: name the presets and stop)."""
    if args.list or args.preset == "list":
        print("\n".join(preset_lines()))
        return 0
    if args.report:
        ignored = [option for option, value in training_options(args).items() if value is not None]
        if ignored:
            raise ValueError(f"--report writes the files again from OUT/results.json and trains nothing, so "
                             f"{', '.join(ignored)} would change nothing; drop {'it' if len(ignored) == 1 else 'them'}")
    preset = preset_from_args(args)
    out = Path(args.out) if args.out else default_out(preset_name(args))
    if args.report:
        return rewrite_report(out, args.preset)
    missing = missing_data_text(preset_name(args), preset)
    if missing:
        raise DataError(missing)
    if args.policy and "searched" not in preset.methods:
        raise ValueError("--policy is the searched method's policy, and --methods leaves searched out; add it or "
                         "drop --policy")
    check_search_options(args, preset)
    policy = load_policy(args.policy) if args.policy else None
    if preset.device.startswith("cuda") and not torch.cuda.is_available():
        asked = f"--device {args.device}" if args.device else f"preset {preset_name(args)}"
        raise DataError(f"{asked} wants a GPU but torch sees no CUDA device here; pass --device cpu")
    try:
        document = run_benchmark(preset, out, policy=policy, policy_source=args.policy or "",
                                 command=command_line(), preset_name=preset_name(args), args=args,
                                 stop_text=lambda line: interrupted_text(out, preset, SearchInterrupted(line),
                                                                         command_line()))
    except KeyboardInterrupt as stop:
        sys.stdout.flush()
        print(stop_line(interrupted_text(out, preset, stop, command_line())), file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"\nresults: {out / 'results.md'}")
    print((out / "results.md").read_text(encoding="utf-8"))
    return 0 if document["runs"] else 1


SEARCH_OPTIONS = ("search_trials", "search_splits", "search_top_n", "search_epochs", "search_train_size")


def check_search_options(args: argparse.Namespace, preset: Preset) -> None:
    """A ValueError when ``--search-*`` options are given and no search runs: ``searched`` takes ``--policy``
    and ``searched-scratch`` is not among the methods, or neither method is. Else they would be recorded in
    results.json as the settings of a search that never ran."""
    given = [f"--{name.replace('_', '-')}" for name in SEARCH_OPTIONS if getattr(args, name) is not None]
    searches = ("searched" in preset.methods and not args.policy) or "searched-scratch" in preset.methods
    if not given or searches:
        return
    why = ("--policy gives the searched method its policy" if args.policy and "searched" in preset.methods
           else "--methods holds neither searched nor searched-scratch")
    raise ValueError(f"{why}, so no search runs and {', '.join(given)} would change nothing; drop "
                     f"{'it' if len(given) == 1 else 'them'}")


def training_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options that say what a benchmark trains, as given (None: not given), by their flags."""
    names = ("dataset", "train_size", "model", "weights", "freeze_backbone", "image_size", "pretrain_epochs",
             "epochs", "batch_size", "lr", "seeds", "methods", "policy", "cutout_with_policies", "search_trials",
             "search_splits", "search_top_n", "search_epochs", "search_train_size", "device")
    given = {f"--{name.replace('_', '-')}": getattr(args, name) for name in names}
    given["--download"] = True if args.download else None
    given["--data-root"] = args.data_root if args.data_root != DATA_ROOT else None
    return given


def rewrite_report(out: Path, preset: str | None = None) -> int:
    """``--report``: the results files of ``out`` written again from its results.json, which a benchmark wrote
    (of ``preset``, when one was named)."""
    path = out / "results.json"
    if not out.is_dir():
        what = "is a file, not a folder" if out.exists() else "no such folder"
        raise DataError(f"--report: --out {out}: {what}; give the folder a benchmark wrote its results to")
    if not path.is_file():
        raise DataError(f"--report: there is no results.json in {out}: not a benchmark's results folder")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        runs, command = document["runs"], document["command"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"--report: {path} is not the results of a benchmark ({exc})") from None
    if preset is not None and document.get("preset", preset) != preset:  # files written before the key: unchecked
        raise DataError(f"--report: {path} holds the results of preset {document.get('preset')}, not {preset}; "
                        "drop --preset, or give that preset's folder")
    if not runs:  # results.md is written from the runs: with none there is no report to write
        raise DataError(f"--report: {path} holds no finished runs yet; run the benchmark (its command: {command})")
    for derived in ("summary", "finetune_vs_scratch"):  # computed again from the runs
        document.pop(derived, None)
    write_outputs(out, document)
    print(f"{out / 'results.md'} written again from the {len(runs)} runs of {path} (its last command: `{command}`)")
    return 0


def interrupted_text(out: Path, preset: Preset, stop: KeyboardInterrupt, command: str) -> str:
    """The one line a Ctrl-C prints: what the results folder keeps (the finished runs, and the search's
    finished trials when it was searching) and the command that goes on from there - the same one."""
    kept = []
    if isinstance(stop, SearchInterrupted):  # its own line ends with how to resume the search alone
        kept.append(str(stop).split("; continue with:")[0])
    try:
        document = json.loads((out / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # stopped before the first write
        document = {}
    methods = [m for m in preset.methods if m not in document.get("skipped", {})]
    runs = sum(r.get("method") in methods and r.get("seed") in preset.seeds for r in document.get("runs", []))
    total = len(preset.seeds) * len(methods)
    files = [name for name in ("results.json", "results.md", "runs.csv") if (out / name).exists()]
    kept.append(f"{runs} of {total} trainings finished in {out} ({', '.join(files)})" if runs else
                "the benchmark's one training has not finished yet" if total == 1 else
                f"none of the benchmark's {total} trainings finished yet")
    keeps = ", which keeps them" if runs or isinstance(stop, SearchInterrupted) else ""
    return f"benchmark interrupted; {'; '.join(kept)}; continue with the same command{keeps}: {command}"
