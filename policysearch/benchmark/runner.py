"""Run a benchmark: train every method for every seed on the same data and budget, searching the
policy first and pretraining the model first where the preset asks for it.

The test split is used only for the final errors. Ray is imported only when a search runs. A rerun into the
same folder keeps the runs its ``results.json`` already holds when they were made the same way.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Collection, TextIO

import numpy as np
import torch

from policysearch.atomic import save_torch_atomic
from policysearch.augment.policy import Policy, software_versions
from policysearch.benchmark.anchors import ANCHORS
from policysearch.benchmark.methods import anchor_of, cutout_pixels, method_augment
from policysearch.benchmark.presets import PRESETS, Preset, data_key, describe_classes
from policysearch.benchmark.report import write_outputs
from policysearch.training.data import (DATA_ROOT, DataError, ImageData, baseline_for, load_dataset,
                                        normalization_for, require_classes, stratified_indices, stratified_subset)
from policysearch.training.pretrained import (ModelSpec, check_model, fit_image_size, grey_input_note, library_versions,
                                              min_image_size)
from policysearch.training.user_data import fingerprint
from policysearch.training.train import TrainConfig, evaluate, fit_to_data, train_model
from policysearch.wording import Mention, WordedError, flag_mention, short_repr


# The search's settings that a benchmark option sets, by that option; the others the benchmark sets itself.
_BENCHMARK_OPTIONS = {"trials": "search_trials", "splits": "search_splits", "top_n": "search_top_n",
                      "epochs": "search_epochs", "final_epochs": "epochs",
                      **{name: name for name in ("dataset", "data_root", "download", "model", "weights",
                                                 "freeze_backbone", "image_size", "batch_size", "lr")}}


def _search_mention(preset: Preset) -> Mention:
    """How a benchmark's message names a setting of its search: by the benchmark option that set it, else as
    the search's own setting (the run folder as the search's folder), which the benchmark chose."""
    options = {**_BENCHMARK_OPTIONS, "train_size": "search_train_size" if preset.search_train_size else "train_size"}

    def mention(name: str, *value: Any) -> str:
        if name in options:
            return flag_mention(options[name], *value)
        if name in ("out", "resume"):
            return f"the search folder {value[0]}" if value else "search folder"  # "with another .."
        return f"the search's {name}" + (f" {value[0]}" if value else "") + " (which the benchmark sets)"
    return mention


def _search(preset: Preset, out: Path, args: argparse.Namespace | None, stream, contents: dict[str, str],
            what: str, from_scratch: bool = False, stop_text: Callable[[str], str] | None = None
            ) -> tuple[Policy, dict[str, Any]]:
    """Run a Fast AutoAugment search on the training split (``what`` it searches, for the line that says so);
    returns the policy as its file holds it, and its costs.

    Its models start from ``preset.weights`` like the final ones, unless ``from_scratch``. ``contents`` (the
    digests of the weights file and of a folder's images, ``input_contents``) are part of the search's key."""
    from policysearch.search import SearchConfig, run_search
    from policysearch.search.checks import SearchFailed
    from policysearch.search.rundir import RunInUse, recorded_failure

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
        data_root=getattr(args, "data_root", DATA_ROOT) if args is not None else DATA_ROOT,
        image_size=preset.image_size,
        weights=None if from_scratch else preset.weights,
        freeze_backbone=preset.freeze_backbone and not from_scratch,
    )
    # One folder per search config: a rerun with other --search-* options starts its own search, and a rerun
    # with the same ones continues (or re-exports) the search it had.
    # The digests of what paths name are in the key too, so that a changed file starts a search of its own.
    used = {k: v for k, v in contents.items() if k != "weights_sha256" or config.weights}
    keyed = asdict(config) if not used else [asdict(config), used]  # the key of a search without them is unchanged
    key = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode("utf-8")).hexdigest()[:12]
    run_dir = out / f"search-{key}"
    failure = recorded_failure(run_dir)
    if failure is not None:  # its resume would keep the failed trials and stop again
        raise ValueError(f"the searched method's search in {run_dir} stopped earlier because too many trials failed "
                         f"({failure}); fix the cause and remove {run_dir} to search again")
    begun = (run_dir / "config.json").exists()
    verb = ("reusing the finished search" if begun and (run_dir / "policy.json").exists() else  # written last
            "continuing the search" if begun else "searching")
    print(f"benchmark: {verb} {what} ({run_dir})", file=stream, flush=True)
    started = time.monotonic()
    try:
        result = run_search(config, run_dir, resume=(run_dir / "config.json").exists(), stream=stream,
                            stop_text=stop_text)
    except SearchFailed as exc:
        raise ValueError(f"the searched method's search stopped: {exc}; to search again, fix the cause and remove "
                         f"{run_dir}") from None
    except RunInUse as exc:  # its wording names the search command's options, which a benchmark does not take
        raise ValueError(f"the searched method's search in {run_dir} is running in another process ({exc.holder}); "
                         "wait for it to end, then run this benchmark again") from None
    except WordedError as exc:  # named as the benchmark's options that set them (--search-train-size, ...)
        raise exc.worded(_search_mention(preset)) from exc.__cause__
    wall = time.monotonic() - started
    # The policy as its file holds it: a fresh search's own object lacks what saving adds (the creation time,
    # the software), so its hash would differ from the same search's re-export and a rerun would retrain it.
    policy = Policy.load(result.policy_path)
    # A search finished (or partly run) by an earlier process took longer than this call: its phases' wall
    # times, which the run's ledger sums over every process, are then the truer whole.
    phases = sum(float(result.costs.get(f"phase{n}_wall_s", 0.0)) for n in (1, 2, 3))
    costs = {"search_wall_s": max(wall, phases), "search_ran_before": wall < phases, **result.costs,
             "sub_policies": len(policy), "policy_file": str(result.policy_path),
             "recipe": (policy.metadata.get("recipe") or {}).get("name") or policy.name,
             "sha256": policy_sha256(policy), "search_config": asdict(config)}
    return policy, costs


def input_contents(preset: Preset, train: ImageData, test: ImageData) -> dict[str, str]:
    """Digests of the inputs that settings name by path only: the weights file's SHA-256, and for a folder
    data set the fingerprints of its training split (all of it) and test split. A rerun whose files changed then matches no
    earlier run (``finished_runs``) and no earlier search; empty for built-in data without weights."""
    contents = {}
    if preset.weights:
        digest = hashlib.sha256()
        with open(preset.weights, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        contents["weights_sha256"] = digest.hexdigest()
    if preset.dataset.startswith("imagefolder:"):
        contents["data_fingerprint"] = f"{fingerprint(train)} {fingerprint(test)}"
    return contents


SAVE_STAMPS = ("created", "software")  # the metadata that saving a policy adds (``Policy.document``)


def policy_sha256(policy: Policy) -> str:
    """The hash of a policy's content: the same recipe read from another file has the same one, and a search's
    own policy object the same as its saved file (the stamps saving adds are left out)."""
    content = policy.to_dict()
    content["metadata"] = {k: v for k, v in content.get("metadata", {}).items() if k not in SAVE_STAMPS}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode("utf-8")).hexdigest()


def earlier_results(out: Path) -> dict[str, Any] | None:
    """The document of ``out/results.json``, None when there is none; a DataError when the file is not a
    benchmark's results (a rerun would overwrite someone's file, or fail on it after hours of work)."""
    path = out / "results.json"
    if not path.exists():
        return None
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
        runs = previous["runs"]
        if not isinstance(runs, list) or not all(isinstance(r, dict) and isinstance(r.get("method"), str)
                                                  and type(r.get("seed")) is int for r in runs):
            raise ValueError("its runs are not a list of method and seed rows")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is not the results of a benchmark ({exc}); move it away, or give another --out") from None
    return previous


def check_out(out: Path, preset_name: str = "") -> None:
    """Before any work: ``out`` can take this benchmark's files, and the earlier ones it may set aside, which
    are not another preset's (a rerun there would set them all aside after the whole benchmark)."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file, not a folder")
    if (out / "earlier").exists() and not (out / "earlier").is_dir():
        raise DataError(f"{out / 'earlier'} is a file; a rerun sets earlier results aside in that folder: move it away")
    previous = earlier_results(out)
    other = (previous or {}).get("preset")
    if preset_name and other and other != preset_name:
        raise DataError(f"--out {out} holds the results of the preset {other}, not {preset_name}: give this "
                        "benchmark a folder of its own")


def finished_runs(out: Path, document: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    """The runs of ``out/results.json`` made the same way as ``document`` will make them: the same settings
    as the trainings run them (:func:`_compared`), software and pretrained weights, and for the methods that train a searched
    recipe the same policy (its content); keyed by (method, seed). A new search retrains only its methods."""
    previous = earlier_results(out)
    if previous is None:
        return {}
    trained = set(document.get("settings", {}).get("methods", ()))
    hashed = _hashed(previous)

    def policies(d: dict[str, Any]) -> dict[str, str]:
        searched = {k: v for k, v in (d.get("searched_policy") or {}).items()
                    if k != "source" and (hashed or k != "sha256")}  # the same policy may be read from another path
        scratch = [(d.get("search_scratch") or {}).get(k) for k in ("policy_file", "sha256")
                   if k != "sha256" or "sha256" in (previous.get("search_scratch") or {})]
        return {"searched": json.dumps(searched, sort_keys=True), "searched-scratch": json.dumps(scratch)}

    if _compared(previous, hashed) != _compared(document, hashed):
        return {}
    before, now = policies(previous), policies(document)
    # a method this command does not train keeps its runs as they were, whichever policy made them
    return {(run["method"], int(run["seed"])): run for run in previous.get("runs", [])
            if run["method"] not in trained
            or (before.get(run["method"]) == now.get(run["method"]) and not _other_library(run))}


def anchor_library(method: str) -> str | None:
    """The library and version (``"timm 1.0.31"``) that a run of ``method`` records, for an anchor whose library
    the software record lacks: a run made with another version of it is trained again. None for the others, and
    where the library is not installed (the anchor is skipped, its earlier runs kept as they are)."""
    anchor = anchor_of(method)
    if anchor is None or ANCHORS[anchor].library in software_versions():
        return None
    version = ANCHORS[anchor].version()
    return f"{ANCHORS[anchor].library} {version}" if version else None


def _other_library(run: dict[str, Any]) -> bool:
    """Whether ``run`` was made with another version of its anchor's library than the one installed here."""
    now = anchor_library(run["method"])
    return now is not None and run.get("library") != now


# Settings of the benchmark's own search only: a searched method's runs are kept by its policy's content
_SEARCH_ONLY = ("search_train_size", "search_trials", "search_splits", "search_top_n", "search_epochs",
                "selection_repeats")


def _hashed(previous: dict[str, Any]) -> bool:
    """Whether a results document records its searched policy's content (files before the hash: its name,
    size and baseline only)."""
    return "sha256" in (previous.get("searched_policy") or {})


def _compared(d: dict[str, Any], hashed: bool = True) -> dict[str, Any]:
    """What a rerun must share with a results document to keep its runs: the settings as the trainings run
    them (methods, seeds and, where the searched policy's content was ``hashed`` to tell it apart, the
    search's own settings aside; the epochs and batch after the step floor), the software and the pretrained
    weights, as JSON holds them (tuples as lists)."""
    aside = ("methods", "seeds", *(_SEARCH_ONLY if hashed else ()))
    settings = {k: v for k, v in d.get("settings", {}).items() if k not in aside}
    if all(isinstance(settings.get(k), int) for k in ("epochs", "batch_size", "train_images")):
        ran = fit_to_data(TrainConfig(epochs=settings["epochs"], batch_size=settings["batch_size"]),
                          settings["train_images"])  # --epochs 1 and 2 both train 40 epochs on 200 images
        del settings["epochs"], settings["batch_size"]  # named so in a set-aside line: "epochs as trained: was 40"
        settings.update({"epochs as trained": ran.epochs, "batch size as trained": ran.batch_size})
    software = {f"software {k}": v for k, v in (d.get("software") or {}).items()}
    flat = {**settings, **software, "pretrained weights": (d.get("pretraining") or {}).get("weights")}
    return json.loads(json.dumps(flat, default=str))


def what_changed(previous: dict[str, Any], document: dict[str, Any], dropped: Collection[str]) -> str:
    """Why the earlier runs of ``previous`` of the methods ``dropped`` are not kept for ``document``: the
    settings, software or weights that differ (methods and seeds aside), else each of the other reasons that
    apply - another version of an anchor's library, another searched policy."""
    hashed = _hashed(previous)
    before, now = _compared(previous, hashed), _compared(document, hashed)
    changed = [f"{key}: was {short_repr(before.get(key))}, now {short_repr(now.get(key))}"
               for key in dict.fromkeys([*before, *now]) if before.get(key) != now.get(key)]
    if changed:
        return "other settings: " + "; ".join(changed[:4]) + (f"; and {len(changed) - 4} more" if len(changed) > 4 else "")
    runs = [run for run in previous.get("runs", []) if run["method"] in dropped]
    other = {f"{run['method']} ({run.get('library') or 'version not recorded'}, now {anchor_library(run['method'])})"
             for run in runs if _other_library(run)}
    reasons = ["another version of an anchor's library: " + ", ".join(sorted(other))] if other else []
    if not other or any(run["method"] in ("searched", "searched-scratch") for run in runs):
        reasons.append("another policy for the searched methods")
    return "; ".join(reasons)


def set_aside(out: Path, previous: dict[str, Any], kept: dict[tuple[str, int], dict[str, Any]],
              document: dict[str, Any], stream: TextIO) -> None:
    """Move the files of an earlier benchmark in ``out`` to ``out/earlier/TIME`` when this one keeps only part
    of its runs, and say so: a rerun with other settings replaces results without losing them."""
    dropped = [r for r in previous["runs"] if (r["method"], r["seed"]) not in kept]
    if not dropped:
        return
    stamp = time.strftime("%Y%m%d-%H%M%S")
    archive = out / "earlier" / stamp
    number = 1
    while archive.exists():
        number += 1
        archive = out / "earlier" / f"{stamp}-{number}"
    archive.mkdir(parents=True)
    for name in ("results.json", "results.md", "runs.csv", "errors.png"):
        if (out / name).exists():
            (out / name).replace(archive / name)
    print(f"benchmark: set aside {len(dropped)} of the {len(previous['runs'])} runs of the earlier benchmark in "
          f"{out} ({what_changed(previous, document, {r['method'] for r in dropped})}); its files are now in {archive}",
          file=stream, flush=True)


def run_benchmark(preset: Preset, out: str | Path, *, policy: Policy | None = None, policy_source: str = "",
                  command: str = "", preset_name: str = "", args: argparse.Namespace | None = None,
                  stream: TextIO | None = None, stop_text: Callable[[str], str] | None = None) -> dict[str, Any]:
    """Train every method for every seed, write the results files after each run, return the document.

    Progress lines go to ``stream`` (default: ``sys.stdout`` at call time, not at import time); ``stop_text``
    words the line of a search stopped at once (a second Ctrl-C, SIGTERM) as the benchmark's."""
    stream = sys.stdout if stream is None else stream
    out = Path(out)
    check_out(out, preset_name)
    root, download = getattr(args, "data_root", DATA_ROOT), bool(getattr(args, "download", False))
    least = min_image_size(preset.model)  # each image resized once, to at least what the model is built for
    train_full = fit_image_size(load_dataset(preset.dataset, split="train", data_root=root, download=download,
                                             image_size=preset.image_size, least_side=least),
                                preset.model, preset.image_size)
    require_classes(train_full)
    train = train_full if preset.train_size is None else stratified_subset(train_full, preset.train_size,
                                                                          seed=preset.data_seed)
    test = fit_image_size(load_dataset(preset.dataset, split="test", data_root=root, download=download,
                                       image_size=preset.image_size, least_side=least), preset.model, preset.image_size)
    notes = list(dict.fromkeys((*train.notes, *test.notes)))  # what loading changed: resized, skipped, converted
    for note in notes:
        print(f"data: {note}", file=stream, flush=True)
    size = int(train.images.shape[-1])
    baseline = baseline_for(preset.dataset, size)
    mean, std = normalization_for(preset.dataset, train)
    cutout = cutout_pixels(size)
    spec = ModelSpec(preset.model, train.num_classes, int(train.images.shape[1]), preset.weights,
                     preset.freeze_backbone)
    check_model(spec, size)  # the weights file and the image size, before any training
    grey = grey_input_note(spec)
    if grey:
        print(f"data: {grey}", file=stream, flush=True)
        notes.append(grey)
    out.mkdir(parents=True, exist_ok=True)  # once data and model checked: bad input leaves no empty folder behind
    pretraining = None
    if preset.pretrain is not None and preset.weights is None:
        preset, pretraining = _pretrain(preset, train_full, out, stream)
        spec = replace(spec, weights=preset.weights)
    contents = input_contents(preset, train_full, test)  # the whole split: the search may use other images
    fitted = fit_to_data(TrainConfig(epochs=preset.epochs, batch_size=preset.batch_size), len(train))
    document: dict[str, Any] = {
        "command": command or " ".join(shlex.quote(a) for a in sys.argv),
        "preset": preset_name,
        # the preset's settings ran on other data (--dataset); kept apart from the settings, which a rerun compares
        "other_data": preset_name in PRESETS and data_key(preset.dataset) != data_key(PRESETS[preset_name].dataset),
        "settings": {**asdict(preset), "image_size": size, "train_images": len(train),
                     "test_images": len(test), "cutout_pixels": cutout, "baseline": asdict(baseline), **contents},
        "software": {**software_versions(), **library_versions(preset.model)},
        # what the trainings run: the settings' epochs and batch are as asked, before the step floor of tiny data
        "trained": {"epochs": fitted.epochs, "batch_size": fitted.batch_size},
        "data_notes": notes,  # as printed: what results.md shows under its data line
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
    searched_on = preset.search_train_size or len(train)  # a preset may search on fewer images than it trains on
    if "searched" in preset.methods and policy is None:
        policy, costs = _search(preset, out, args, stream, contents, f"for a policy{start} on {searched_on} "
                                "training images", stop_text=stop_text)
        policy_source = costs["policy_file"]
        document["search"] = costs
    scratch = None
    if "searched-scratch" in preset.methods:
        scratch, costs = _search(preset, out, args, stream, contents, f"for a policy for models trained from "
                                 f"scratch on {searched_on} training images", from_scratch=True,
                                 stop_text=stop_text)
        document["search_scratch"] = costs
    if policy is not None:
        recipe = policy.metadata.get("recipe", {}) if isinstance(policy.metadata.get("recipe"), dict) else {}
        document["searched_policy"] = {"source": policy_source, "sub_policies": len(policy),
                                       "recipe": recipe.get("name", policy.name), "baseline": asdict(policy.baseline),
                                       "sha256": policy_sha256(policy)}
    done = finished_runs(out, document)
    previous = earlier_results(out)
    if previous is not None:
        set_aside(out, previous, done, document, stream)
        # the kept runs of a method this command does not train keep the record of what they trained
        for key, method in (("searched_policy", "searched"), ("search", "searched"), ("search_scratch", "searched-scratch")):
            if document.get(key) is None and previous.get(key) is not None and any(m == method for m, _ in done):
                document[key] = previous[key]
    place = {(m, seed): i for i, (seed, m) in enumerate((seed, m) for seed in preset.seeds for m in methods)}
    # The kept runs are in the first write, so that stopping before the next training loses none of them;
    # those of methods or seeds this command does not train stay too, after this command's.
    document["runs"] = sorted(done.values(), key=lambda r: place.get((r["method"], int(r["seed"])), len(place)))
    if document["runs"]:
        others = sum((r["method"], int(r["seed"])) not in place for r in document["runs"])
        beside = f", {others} of them of methods or seeds this command does not train" if others else ""
        # the commands that trained the kept runs (each run names its own; runs written before that, the
        # commands of the file they were kept in)
        made_by = [r.get("command", "") for r in document["runs"]]
        if not all(made_by):
            made_by += [previous.get("command", ""), *previous.get("earlier_commands", [])]
        document["earlier_commands"] = [c for c in dict.fromkeys(made_by) if c and c != document["command"]]
        print(f"benchmark: kept {len(document['runs'])} runs of the earlier benchmark in {out} (trained the same "
              f"way{beside})", file=stream, flush=True)
    write_outputs(out, document)

    total = len(preset.seeds) * len(methods)
    finished = len(document["runs"]) - sum((r["method"], int(r["seed"])) not in place for r in document["runs"])
    for seed in preset.seeds:  # seed outer: a partial benchmark has complete pairs
        for method in methods:
            if (method, seed) in done:
                continue
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
                   "train_seconds": seconds, "command": document["command"]}
            library = anchor_library(method)
            if library:
                row["library"] = library
            document["runs"].append(row)
            document["runs"].sort(key=lambda r: place.get((r["method"], int(r["seed"])), len(place)))
            finished += 1
            print(f"[{finished}/{total}] {method:>14} seed {seed}: test error "
                  f"{row['test_error']:.2f} %, training accuracy {100 * fit['accuracy']:.1f} % ({seconds:.0f} s)",
                  file=stream, flush=True)
            write_outputs(out, document)
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
              f"subset (classes {describe_classes(preset.pretrain.classes)}) for {preset.pretrain.epochs} epochs",
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
