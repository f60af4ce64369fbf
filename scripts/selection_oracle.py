"""How well a search's phase 3 ranked its candidate recipes, against an oracle that needs no test image.

The oracle trains every candidate recipe of the run on the search's own training images at the final budget
(as the benchmark's final training does), over seeds, and scores it on the training split's other images:
those outside the search's training subset (``--train-size``) and, for a benchmark preset that pretrains
(``--preset``), outside its pretraining images. The test split is never read. It prints, per recipe, the
selection's mean held-out error and the oracle's mean error with its standard error; the rank correlation of
the two (and of the held-out loss with the oracle's error); the oracle's images per class (a pretraining
preset leaves some classes without any); and the oracle regret (the recipe's oracle error minus the
lowest) of the chosen recipe, of the reference and of the recipe with the lowest held-out error.

``--information-limit N ...`` asks what any selection could do with N images: it draws N of the oracle's
images many times, picks a recipe from the oracle models' errors on them (the lowest error, and the
selection's rule: the reference unless the best's one-sided bound clears it), and measures that pick's
regret on the oracle's other images. Those models were trained on all the search's images and the N images
are fresh, which no cross-fit over the same images has, so the figure is a floor for a selection of N.

    PYTHONPATH=. python scripts/selection_oracle.py --preset digits-100-finetune \\
        --run benchmarks/results/digits-100-finetune/search-74ddd59a8c14 --seeds 5 --json OUT.json
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from policysearch.arguments import whole_number
from policysearch.augment.policy import Policy
from policysearch.augment.transforms import BatchPolicyTransform
from policysearch.benchmark.presets import PRESETS
from policysearch.benchmark.runner import pretraining_indices
from policysearch.search.candidates import candidate_recipes, reference_name
from policysearch.search.domain import DomainFit, OpFit, probed_ops
from policysearch.search.prepare import prepare
from policysearch.search.recipes import final_baseline, final_training, flip_undecided, fold_model
from policysearch.search.rundir import read_stored_config
from policysearch.training.data import load_dataset, stratified_indices
from policysearch.training.pretrained import fit_image_size, min_image_size
from policysearch.training.train import evaluate, predict, train_model


def _fit(document: dict, probed: list[str]) -> DomainFit:
    """The run's domain fit as its policy file records it. A fit without ops could not judge any (children
    too close to chance): every ``probed`` op was then unjudged, which the file does not list."""
    ops = {str(f["op"]): OpFit(str(f["op"]), tuple(f["levels"]), tuple(f["retained"]), float(f["max_level"]))
           for f in document["ops"]}
    nan = float("nan")
    return DomainFit(ops, float(document["threshold"]), float(document["clean_accuracy"] or nan),
                     float(document["chance"] or nan), str(document.get("note", "")),
                     () if ops else tuple(sorted(probed)))


def _selection_means(run_dir: Path, first_pass: int) -> dict[str, tuple[float, int, float]]:
    """Per recipe of the run's selection.csv, over its folds of the first pass (the folds every recipe not
    raced out trained on; repeats added later went to a few): mean held-out error (%), folds, mean loss."""
    errors: dict[str, list[tuple[float, float]]] = {}
    with (run_dir / "selection.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["status"] == "ok" and int(row["fold"]) < first_pass:
                errors.setdefault(row["recipe"], []).append((float(row["held_out_error"]),
                                                             float(row["held_out_loss"])))
    return {name: (statistics.mean(e for e, _ in v), len(v), statistics.mean(loss for _, loss in v))
            for name, v in errors.items()}


def _spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation, ties given their mean rank."""
    from scipy import stats

    return float(stats.spearmanr(a, b).statistic)


def information_limit(wrong: np.ndarray, reference: int, sizes: list[int], draws: int, confidence: float,
                      seed: int = 0) -> list[dict[str, float]]:
    """Per size N: the mean regret (pp) on the other images of a recipe picked on N drawn images, by the lowest
    error and by the rule (the reference unless the best's one-sided bound at ``confidence`` clears it), over
    ``draws`` draws; ``wrong`` is [recipes, images], each recipe's wrong answers averaged over its seeds. The
    regret is taken against one recipe, the oracle's best on all its images (as the oracle regrets are), not
    against the best on each draw's other images, whose minimum of noisy means would fall as N grows."""
    from scipy import stats

    recipes, images = wrong.shape
    if draws < 1:
        raise ValueError(f"--draws: {draws}; need at least 1")
    best_all = int(np.argmin(wrong.mean(axis=1)))
    rng = np.random.default_rng(seed)
    out = []
    for n in sizes:
        if not 2 <= n < images:
            raise ValueError(f"--information-limit: {n} images: need 2 to {images - 1} (the oracle has {images})")
        t = stats.t.ppf(confidence, n - 1)
        lowest, ruled, kept, switched = [], [], [], 0
        for _ in range(draws):
            order = rng.permutation(images)
            drawn, other = wrong[:, order[:n]], wrong[:, order[n:]].mean(axis=1)
            means = drawn.mean(axis=1)
            best = int(rng.choice(np.flatnonzero(means == means.min())))  # ties: any of them, at random
            diff = drawn[best] - drawn[reference]
            clears = best != reference and diff.mean() + t * diff.std(ddof=1) / np.sqrt(n) < 0
            pick = best if clears else reference
            switched += bool(clears)
            lowest.append(100.0 * (other[best] - other[best_all]))
            ruled.append(100.0 * (other[pick] - other[best_all]))
            kept.append(100.0 * (other[reference] - other[best_all]))
        out.append({"images": n, "draws": draws, "lowest_error_regret": float(np.mean(lowest)),
                    "rule_regret": float(np.mean(ruled)), "rule_switched": switched / draws,
                    "reference_regret": float(np.mean(kept))})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="the benchmark preset that ran the search (its pretraining images are left out too)")
    parser.add_argument("--run", required=True, type=Path, help="the benchmark's search run folder")
    parser.add_argument("--seeds", type=whole_number, default=5)
    parser.add_argument("--fold-models", nargs="*", default=[], metavar="RECIPE",
                        help="also retrain these recipes' phase-3 fold models as the search did and score each on "
                             "its held-out fold and on the oracle's images (the same models, other images)")
    parser.add_argument("--information-limit", nargs="*", type=whole_number, default=[], metavar="N",
                        help="also measure the regret of a pick made on N fresh images, for each N given")
    parser.add_argument("--draws", type=whole_number, default=2000, help="draws of N images for --information-limit")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    preset = PRESETS[args.preset] if args.preset else None
    config, _ = read_stored_config(args.run, continuing=False)
    if config.weights and not Path(config.weights).exists():  # a benchmark run elsewhere: its pretrained file
        config = dataclasses.replace(config, weights=str(args.run.parent / Path(config.weights).name))
    if config.gpus_per_trial > 0 and not torch.cuda.is_available():  # a run searched on a GPU, studied here
        config = dataclasses.replace(config, gpus_per_trial=0.0)
    if config.weights and (preset is None or preset.pretrain is None):
        raise SystemExit("the run starts from pretrained weights: give the --preset that pretrained them, so that "
                         "its pretraining images are left out of the oracle")
    if preset is not None and (preset.dataset, preset.data_seed, preset.search_train_size or preset.train_size) != \
            (config.dataset, config.seed, config.train_size):
        raise SystemExit(f"--preset {args.preset} did not run this search (data set, subset seed or size differ)")
    prepared = prepare(config)
    policy = Policy.load(args.run / "policy.json")
    chosen = policy.metadata["recipe"]["name"]

    # The oracle's images: the training split outside the search's subset and the pretraining images.
    full = fit_image_size(load_dataset(config.dataset, split="train", data_root=config.data_root,
                                       image_size=config.image_size, least_side=min_image_size(config.model)),
                          config.model, config.image_size)
    if config.train_size is None:
        raise SystemExit("the search trained on the whole training split: no other images to score recipes on")
    labels = full.labels.numpy()
    used = np.zeros(len(labels), dtype=bool)
    used[stratified_indices(labels, config.train_size, config.seed)] = True
    if not torch.equal(full.images[used], prepared.data.images):
        raise SystemExit("the run's training images are not the preset's subset")
    if preset is not None and preset.pretrain is not None:
        used[pretraining_indices(preset, labels)] = True
    oracle = full.subset(np.flatnonzero(~used))
    if len(oracle) == 0:
        raise SystemExit("no training image lies outside the search's subset to score recipes on")

    for n in args.information_limit:
        if not 2 <= n < len(oracle):
            raise SystemExit(f"--information-limit: {n} images: need 2 to {len(oracle) - 1} (the oracle has "
                             f"{len(oracle)})")

    fit = _fit(policy.metadata["domain_fit"], probed_ops(prepared.space))
    baseline = final_baseline(prepared, fit)
    recipes = candidate_recipes(baseline, fit, Policy.load(args.run / "candidates.json"),
                                strengths=config.strengths,
                                flip_from_fit=baseline.hflip and not prepared.baseline.hflip,
                                try_flip=flip_undecided(prepared, fit))
    selection = _selection_means(args.run, prepared.first_folds)
    if {r.name for r in recipes} != set(selection):
        differ = sorted({r.name for r in recipes} ^ set(selection))
        raise SystemExit(f"rebuilt recipes differ from the run's: {differ}")
    reference = reference_name(baseline)

    print(f"{args.preset or config.dataset}: {len(recipes)} recipes x {args.seeds} seeds on {len(prepared.data)} "
          f"images, oracle {len(oracle)} other training images", flush=True)
    train_config = final_training(prepared)
    errors: dict[str, list[float]] = {}
    wrong = np.zeros((len(recipes), len(oracle)))  # per recipe and oracle image: wrong answers over the seeds
    started = time.monotonic()
    for i, recipe in enumerate(recipes):
        for seed in range(args.seeds):
            torch.manual_seed(seed)  # the same initial weights for every recipe of a seed
            model = prepared.new_model()
            train_model(model, prepared.data, dataclasses.replace(train_config, seed=seed),
                        augment=BatchPolicyTransform(recipe.recipe), mean=prepared.mean, std=prepared.std)
            logits = predict(model, oracle.images, mean=prepared.mean, std=prepared.std)
            missed = (logits.argmax(1) != oracle.labels.long()).numpy()
            wrong[i] += missed / args.seeds
            errors.setdefault(recipe.name, []).append(100.0 * int(missed.sum()) / len(missed))
        print(f"  {recipe.name}: oracle {statistics.mean(errors[recipe.name]):.2f} %", flush=True)

    fold_models = {}
    by_name = {r.name: r for r in recipes}
    for name in args.fold_models:
        if name not in by_name:
            raise SystemExit(f"--fold-models: no recipe {name!r} in the run")
        folds = range(selection[name][1])
        held_errors, oracle_errors = [], []
        for fold in folds:
            model, _ = fold_model(prepared, by_name[name], fold)
            held = prepared.folds[fold][1]
            for images, labels_, out in ((prepared.data.images[held], prepared.data.labels[held], held_errors),
                                         (oracle.images, oracle.labels, oracle_errors)):
                out.append(100.0 * (1.0 - evaluate(model, images, labels_, mean=prepared.mean,
                                                   std=prepared.std)["accuracy"]))
        fold_models[name] = {"folds": len(folds), "held_out_mean": statistics.mean(held_errors),
                             "oracle_mean": statistics.mean(oracle_errors), "held_out": held_errors,
                             "oracle": oracle_errors}
        print(f"  fold models of {name}: held-out {fold_models[name]['held_out_mean']:.2f} %, the same models on "
              f"the oracle {fold_models[name]['oracle_mean']:.2f} % ({len(folds)} folds)", flush=True)

    names = [r.name for r in recipes]
    means = {n: statistics.mean(errors[n]) for n in names}
    best = min(means.values())
    ranked = [n for n in names if selection[n][1] == prepared.first_folds]  # not raced out
    lowest_selection = min(ranked, key=lambda n: selection[n][0])
    document = {
        "command": shlex.join(["python", "scripts/selection_oracle.py", *(sys.argv[1:] if argv is None else argv)]),
        "preset": args.preset, "run": str(args.run), "seeds": args.seeds, "oracle_images": len(oracle),
        "train_images": len(prepared.data), "seconds": time.monotonic() - started,
        "oracle_classes": np.bincount(oracle.labels.numpy(), minlength=oracle.num_classes).tolist(),
        "recipes": [{"recipe": n, "selection_mean": selection[n][0], "selection_folds": selection[n][1],
                     "selection_loss": selection[n][2],
                     "oracle_mean": means[n], "oracle_se": statistics.stdev(errors[n]) / len(errors[n]) ** 0.5,
                     "oracle_regret": means[n] - best, "oracle_errors": errors[n]} for n in names],
        "spearman_on_first_pass": _spearman([selection[n][0] for n in ranked], [means[n] for n in ranked]),
        "spearman_of_held_out_loss": _spearman([selection[n][2] for n in ranked], [means[n] for n in ranked]),
        "recipes_on_first_pass": len(ranked), "first_pass_folds": prepared.first_folds,
        "chosen": chosen, "chosen_oracle_regret": means[chosen] - best,
        "reference": reference, "reference_oracle_regret": means[reference] - best,
        "lowest_selection_mean": lowest_selection,
        "lowest_selection_mean_oracle_regret": means[lowest_selection] - best,
        "oracle_best": min(names, key=means.__getitem__),
        "fold_models": fold_models,
        "information_limit": information_limit(wrong, names.index(reference), args.information_limit, args.draws,
                                               config.confidence),
    }
    print("\n| recipe | selection mean % (folds) | oracle mean % (se) | oracle regret (pp) |\n|---|---|---|---|")
    for row in document["recipes"]:
        print(f"| {row['recipe']} | {row['selection_mean']:.2f} ({row['selection_folds']}) | "
              f"{row['oracle_mean']:.2f} ({row['oracle_se']:.2f}) | {row['oracle_regret']:.2f} |")
    print(f"\nrank correlation (Spearman) of selection and oracle over the {len(ranked)} recipes on the first pass's "
          f"{prepared.first_folds} folds: {document['spearman_on_first_pass']:.2f} (held-out error), "
          f"{document['spearman_of_held_out_loss']:.2f} "
          "(held-out loss)")
    print(f"oracle regret: chosen ({chosen}) {document['chosen_oracle_regret']:.2f} pp; reference "
          f"{document['reference_oracle_regret']:.2f} pp; lowest selection mean ({lowest_selection}) "
          f"{document['lowest_selection_mean_oracle_regret']:.2f} pp; oracle best: {document['oracle_best']}")
    for row in document["information_limit"]:
        print(f"a pick on {row['images']} fresh images ({row['draws']} draws): mean oracle regret "
              f"{row['lowest_error_regret']:.2f} pp by the lowest error, {row['rule_regret']:.2f} pp by the rule "
              f"(switched in {row['rule_switched']:.0%}); the reference always {row['reference_regret']:.2f} pp")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
