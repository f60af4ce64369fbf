"""Phase 3, the recipe selection: the candidate recipes trained on cross-fit folds at the final budget.

Each candidate recipe (:mod:`~policysearch.search.candidates`) trains on the first fold
(:func:`selection_trial`); the best share of them, every one tied at the cut or within one fold's noise,
and the reference go on to the other folds (:func:`race_survivors`); while the decision is unclear, repeats
are added for the recipes that could still clear the noise (:func:`added_repeat`); :func:`choose_recipe`
applies the stated rule of :mod:`~policysearch.search.selection`. Plain functions of their inputs.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import numpy as np
import torch

from policysearch.augment.policy import Baseline
from policysearch.search.candidates import Recipe, reference_name
from policysearch.search.domain import DomainFit
from policysearch.search.faults import Faults
from policysearch.search.prepare import Prepared, device_for, use_threads
from policysearch.search.selection import (TIE_RULE, Decision, compare, decide, race, race_margin, race_ties,
                                           sequential_contenders)
from policysearch.training.train import TrainConfig, evaluate, fit_to_data, train_model
from policysearch.augment.transforms import BatchPolicyTransform

__all__ = ["added_repeat", "choose_recipe", "final_baseline", "final_training", "flip_undecided", "fold_model",
           "held_against", "one_final_training_seconds", "race_survivors", "selection_trial", "trained_folds"]


def final_baseline(prepared: Prepared, fit: DomainFit) -> Baseline:
    """The data set's baseline, with the horizontal flip added when the data allows it (FlipLR kept)."""
    base = prepared.baseline
    flip_ok = "FlipLR" in fit.ops and fit.allowed("FlipLR")
    return Baseline(base.pad_crop, base.hflip or flip_ok)


def flip_undecided(prepared: Prepared, fit: DomainFit) -> bool:
    """Whether the flip is left to training: the data set does not flip and its child models were too weak for
    the domain fit to judge the flip (a photo set may need it, a text set is ruined by it)."""
    return not prepared.baseline.hflip and "FlipLR" in fit.unjudged


def final_training(prepared: Prepared) -> TrainConfig:
    """The training the recipe is selected for: ``--final-epochs`` on all the search's training images."""
    config = prepared.config
    return fit_to_data(config.final_train_config(), len(prepared.data), config.min_steps)


def selection_trial(prepared: Prepared, recipe: Recipe, fold: int, faults: Faults = Faults(),
                    index: int = 0) -> dict[str, Any]:
    """Phase 3: train a fresh model with ``recipe`` on the training part of ``fold`` at the final budget;
    its error (%) and loss on the held-out part. The same fold gives every recipe the same initial weights.
    ``index`` (the recipe's place among the candidates) only names the trial.

    The final budget is the final training's own settings, adapted to all the search's images (batch,
    epochs, warm-up), not re-adapted to the fold's smaller training part: every image is seen as often
    as in the final training, with the same batch size."""
    faults.reach("select", fold=fold, index=index)
    use_threads(prepared.config)
    train_idx, held = prepared.folds[fold]
    data, device = prepared.data, device_for(prepared.config)
    model, seconds = fold_model(prepared, recipe, fold)
    started = time.perf_counter()
    result = evaluate(model, data.images[held], data.labels[held], mean=prepared.mean, std=prepared.std,
                      device=device)
    return {"recipe": recipe.name, "fold": fold, "error": 100.0 * (1.0 - result["accuracy"]), "loss": result["loss"],
            "train_seconds": seconds + time.perf_counter() - started, "train_images": len(train_idx)}


def fold_model(prepared: Prepared, recipe: Recipe, fold: int) -> tuple[torch.nn.Module, float]:
    """The model phase 3 trains with ``recipe`` on the training part of ``fold`` (seeded by the fold), and
    the seconds its training took."""
    config = prepared.config
    torch.manual_seed(config.seed * 1000 + 500 + fold)
    model = prepared.new_model()
    train_config = dataclasses.replace(final_training(prepared), seed=config.seed + fold)
    started = time.perf_counter()
    train_model(model, prepared.data.subset(prepared.folds[fold][0]), train_config,
                augment=BatchPolicyTransform(recipe.recipe), mean=prepared.mean, std=prepared.std,
                device=device_for(config))
    return model, time.perf_counter() - started


def first_fold_errors(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Every recipe's held-out error (%) on the first fold, where it finished it: what the race ran on."""
    return {r["recipe"]: float(r["error"]) for r in rows if r["fold"] == 0 and r["status"] == "ok"}


def race_survivors(prepared: Prepared, recipes: Sequence[Recipe], rows: Sequence[dict[str, Any]],
                   baseline: Baseline) -> list[int]:
    """Indices of the recipes that train on the other folds after the first (:func:`policysearch.search.selection.race`
    at ``--selection-keep``, keeping every recipe within the first fold's noise; the reference always goes on)."""
    first = first_fold_errors(rows)
    names = [recipe.name for recipe in recipes]
    margin = race_margin(first, len(prepared.folds[0][1]))
    kept = set(race(first, names, prepared.config.selection_keep, reference_name(baseline), margin))
    return [i for i, name in enumerate(names) if name in kept]


def trained_folds(prepared: Prepared, recipes: Sequence[Recipe],
                  rows: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    """Each recipe's held-out error (%) on the folds it trained on, from the first, in order, cut to whole
    repeats beyond the first pass (an added repeat counts only where all its folds finished). A recipe that
    failed in the first pass is left out (it is reported as failed)."""
    first, k = prepared.first_folds, prepared.config.selection_folds
    failed = {r["recipe"] for r in rows if r["status"] != "ok" and r["fold"] < first}
    out: dict[str, list[float]] = {}
    for recipe in recipes:
        done = {r["fold"]: float(r["error"]) for r in rows if r["recipe"] == recipe.name and r["status"] == "ok"}
        if recipe.name in failed or 0 not in done:
            continue
        n = 0
        while n in done:
            n += 1
        if n > first:
            n = first + k * ((n - first) // k)
        out[recipe.name] = [done[f] for f in range(n)]
    return out


def held_against(trained: dict[str, list[float]], baseline: Baseline, first: int) -> tuple[str, str]:
    """The recipe every other is held against: the reference recipe, or where it failed in the first pass the
    first recipe that finished the first pass (the same one whatever later repeats bring; where none did, the
    first with the most folds); and a note when it had to be replaced."""
    reference = reference_name(baseline)
    if len(trained.get(reference, ())) >= first:
        return reference, ""
    most = max(len(folds) for folds in trained.values())
    substitute = next(name for name, folds in trained.items() if len(folds) >= min(first, most))
    return substitute, f"the reference recipe failed on some fold, so {substitute} is the reference"


def added_repeat(prepared: Prepared, recipes: Sequence[Recipe], rows: Sequence[dict[str, Any]],
                 baseline: Baseline) -> tuple[list[int], list[int]]:
    """Indices of the recipes that train on one more repeat of the cross-fit, and its folds: while the decision
    is unclear, the contenders of :func:`~policysearch.search.selection.sequential_contenders` and the reference.
    Both empty when the decision is clear, more folds would not change it, the repeats are spent, the
    reference did not finish the last repeat, or the repeat would take the added trainings beyond
    ``--selection-extra`` times the first pass's (trainings, not seconds, so a run decides the same on any
    machine)."""
    config, first, k = prepared.config, prepared.first_folds, prepared.config.selection_folds
    trained = trained_folds(prepared, recipes, rows)
    if not trained or config.selection_extra <= 0:
        return [], []
    reference, _ = held_against(trained, baseline, first)
    n = len(trained[reference])
    if n < first or n + k > len(prepared.folds) or max(r["fold"] for r in rows) + 1 > n:
        return [], []
    errors = {name: folds[:n] for name, folds in trained.items() if len(folds) >= n}
    names = sequential_contenders(errors, reference, test_fraction=1.0 / k, more=k, confidence=config.confidence,
                                  held_out=prepared.held_out)
    first_pass = sum(1 for r in rows if r["fold"] < first)
    added = len(rows) - first_pass
    if not names or added + k * len(names) > config.selection_extra * first_pass:
        return [], []
    return [i for i, recipe in enumerate(recipes) if recipe.name in names], list(range(n, n + k))


def choose_recipe(prepared: Prepared, recipes: Sequence[Recipe], rows: Sequence[dict[str, Any]],
                  baseline: Baseline) -> tuple[Decision, str]:
    """The rule of :mod:`policysearch.search.selection` over the recipes that trained on as many folds as the
    recipe they are held against (:func:`held_against`) and did not fail in the first pass.

    The others stopped earlier - raced out after the first fold, or left out of (or failed in) a repeat
    added while the decision was unclear - and are reported with their mean error on the folds they trained
    on. Returns the decision and a note (non-empty when the reference recipe could not be the reference).
    """
    first, k = prepared.first_folds, prepared.config.selection_folds
    trained = trained_folds(prepared, recipes, rows)
    if not trained:
        raise ValueError("no candidate recipe trained on the first fold")
    reference, note = held_against(trained, baseline, first)
    n = len(trained[reference])
    errors = {name: folds[:n] for name, folds in trained.items() if len(folds) >= n}
    stopped = {name: folds for name, folds in trained.items() if len(folds) < n}
    decision = decide(errors, reference, test_fraction=1.0 / k, confidence=prepared.config.confidence,
                      held_out=prepared.held_out)
    on_first = first_fold_errors(rows)
    margin = race_margin(on_first, len(prepared.folds[0][1]))
    decision = dataclasses.replace(decision, first_fold=on_first, race_margin=margin, first_pass=first,
                                   fold_errors={name: tuple(folds) for name, folds in trained.items()})
    reason = decision.reason + (f"; {note}" if note else "")  # every output gives the reason: the note too
    raced = [name for name, folds in stopped.items() if len(folds) == 1]
    if raced:
        keep = prepared.config.selection_keep
        cut, tied = race_ties(on_first, [recipe.name for recipe in recipes], keep, margin, reference_name(baseline))
        ties = f"; by the tie rule, {TIE_RULE}: {tied} more, tied at {cut:.2f}%" if tied else ""
        reason += (f"; {len(raced)} of {len(recipes)} recipes stopped after the first fold (--selection-keep "
                   f"{keep:g}, selection_keep= in Python, and every recipe within {margin:.1f} pp of the best first "
                   f"fold, one fold's noise{ties})")
    if n > first:
        added = (n - first) // k
        last = {r["recipe"] for r in rows if n - k <= r["fold"] < n}
        reason += (f"; the decision was unclear after the first {first} folds, so {added} "
                   f"repeat{'s' if added != 1 else ''} of the cross-fit {'were' if added != 1 else 'was'} added for "
                   f"the recipes that could still clear the noise and the reference ({len(last)} in the last), "
                   f"{n} folds in all")
    comparisons = decision.comparisons + tuple(
        compare(errors[decision.chosen][:len(folds)], folds, test_fraction=1.0 / k, names=(decision.chosen, name),
                confidence=prepared.config.confidence, held_out=prepared.held_out)
        for name, folds in stopped.items())
    return dataclasses.replace(decision, reason=reason, comparisons=comparisons,
                               stopped={name: float(np.mean(folds)) for name, folds in stopped.items()}), note


def one_final_training_seconds(rows: Sequence[dict[str, Any]], num_images: int) -> float:
    """A final training's device time estimated from the selection trials (scaled to all the images)."""
    done = [r for r in rows if r["status"] == "ok"]
    if not done:
        return float("nan")
    return float(np.mean([r["train_seconds"] * num_images / r["train_images"] for r in done]))
