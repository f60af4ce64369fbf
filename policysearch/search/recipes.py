"""Phase 3, the recipe selection: the candidate recipes trained on cross-fit folds at the final budget.

Each candidate recipe (:mod:`~policysearch.search.candidates`) trains on the first fold
(:func:`selection_trial`); the best share of them, every one tied at the cut or within one fold's noise,
and the reference go on to the other folds (:func:`race_survivors`); :func:`choose_recipe` applies the
stated rule of :mod:`~policysearch.search.selection`. Plain functions of their inputs.
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
from policysearch.search.selection import TIE_RULE, Decision, compare, decide, race, race_margin, race_ties
from policysearch.training.train import TrainConfig, evaluate, fit_to_data, train_model
from policysearch.augment.transforms import BatchPolicyTransform

__all__ = ["choose_recipe", "final_baseline", "final_training", "flip_undecided", "one_final_training_seconds",
           "race_survivors", "selection_trial"]


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
    config = prepared.config
    use_threads(config)
    train_idx, held = prepared.folds[fold]
    data, device = prepared.data, device_for(config)
    torch.manual_seed(config.seed * 1000 + 500 + fold)
    model = prepared.new_model()
    train_config = dataclasses.replace(final_training(prepared), seed=config.seed + fold)
    started = time.perf_counter()
    train_model(model, data.subset(train_idx), train_config, augment=BatchPolicyTransform(recipe.recipe),
                mean=prepared.mean, std=prepared.std, device=device)
    result = evaluate(model, data.images[held], data.labels[held], mean=prepared.mean, std=prepared.std,
                      device=device)
    return {"recipe": recipe.name, "fold": fold, "error": 100.0 * (1.0 - result["accuracy"]), "loss": result["loss"],
            "train_seconds": time.perf_counter() - started, "train_images": len(train_idx)}


def race_survivors(prepared: Prepared, recipes: Sequence[Recipe], rows: Sequence[dict[str, Any]],
                   baseline: Baseline) -> list[int]:
    """Indices of the recipes that train on the other folds after the first (:func:`policysearch.search.selection.race`
    at ``--selection-keep``, keeping every recipe within the first fold's noise; the reference always goes on)."""
    first = {r["recipe"]: float(r["error"]) for r in rows if r["fold"] == 0 and r["status"] == "ok"}
    names = [recipe.name for recipe in recipes]
    margin = race_margin(first, len(prepared.folds[0][1]))
    kept = set(race(first, names, prepared.config.selection_keep, reference_name(baseline), margin))
    return [i for i, name in enumerate(names) if name in kept]


def choose_recipe(prepared: Prepared, recipes: Sequence[Recipe], rows: Sequence[dict[str, Any]],
                  baseline: Baseline, survivors: Sequence[int] | None = None) -> tuple[Decision, str]:
    """The rule of :mod:`policysearch.search.selection` over the recipes that trained on every fold and succeeded.

    ``survivors`` are the indices of the recipes raced on past the first fold (None: all); the others
    are reported with their first-fold error and difference. Returns the decision and a note (non-empty
    when the reference recipe could not be the reference).
    """
    folds = len(prepared.folds)
    going_on = set(range(len(recipes)) if survivors is None else survivors)
    errors: dict[str, list[float]] = {}
    first: dict[str, float] = {}
    for i, recipe in enumerate(recipes):
        done = sorted((r for r in rows if r["recipe"] == recipe.name and r["status"] == "ok"), key=lambda r: r["fold"])
        if i in going_on and len(done) == folds:
            errors[recipe.name] = [float(r["error"]) for r in done]
        elif i not in going_on and done and done[0]["fold"] == 0:
            first[recipe.name] = float(done[0]["error"])
    reference, note = reference_name(baseline), ""
    if reference not in errors:
        reference = next(iter(errors))
        note = f"the reference recipe failed on some fold, so {reference} is the reference"
    test_fraction = 1.0 / prepared.config.selection_folds
    decision = decide(errors, reference, test_fraction=test_fraction, confidence=prepared.config.confidence)
    on_first = {r["recipe"]: float(r["error"]) for r in rows if r["fold"] == 0 and r["status"] == "ok"}
    margin = race_margin(on_first, len(prepared.folds[0][1]))
    decision = dataclasses.replace(decision, first_fold=on_first, race_margin=margin)
    if not first:
        return decision, note
    chosen_first = errors[decision.chosen][0]
    comparisons = decision.comparisons + tuple(
        compare([chosen_first], [error], test_fraction=test_fraction, names=(decision.chosen, name))
        for name, error in first.items())
    keep = prepared.config.selection_keep
    cut, tied = race_ties(on_first, [recipe.name for recipe in recipes], keep)
    ties = f"; by the tie rule, {TIE_RULE}: {tied} more, tied at {cut:.2f}%" if tied else ""
    reason = (f"{decision.reason}; {len(first)} of {len(recipes)} recipes stopped after the first fold "
              f"(--selection-keep {keep:g}, and every recipe within {margin:.1f} pp of the best first fold, one "
              f"fold's noise{ties})")
    return dataclasses.replace(decision, reason=reason, comparisons=comparisons, stopped=first), note


def one_final_training_seconds(rows: Sequence[dict[str, Any]], num_images: int) -> float:
    """A final training's device time estimated from the selection trials (scaled to all the images)."""
    done = [r for r in rows if r["status"] == "ok"]
    if not done:
        return float("nan")
    return float(np.mean([r["train_seconds"] * num_images / r["train_images"] for r in done]))
