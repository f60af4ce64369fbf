"""The domain fit (phase 1b) and the recipe selection (phase 3) as plain functions; Ray is not imported here.

Phase 1b probes every frozen child with each op at a few levels on its D_A
(:func:`probe_child`); :func:`policysearch.domain.fit_domain` turns the probes into the ops and levels
this data allows, which restrict phase 2's space (:func:`restrict_space`) and every candidate recipe.
Phase 3 trains each candidate recipe on the cross-fit folds at the final training's budget
(:func:`selection_trial`) and :func:`choose_recipe` applies the stated rule of
:mod:`policysearch.selection`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from policysearch.candidates import Recipe, reference_name
from policysearch.domain import DomainFit
from policysearch.domain import probe_ops
from policysearch.policy import Baseline
from policysearch.search.faults import Faults
from policysearch.search.trials import ChildSource, Prepared, device_for, frozen_child, use_threads
from policysearch.selection import Decision, decide
from policysearch.spaces import SearchSpace
from policysearch.standard import RANDAUGMENT_OPS
from policysearch.train import evaluate, fit_to_data, train_model
from policysearch.transforms import BatchPolicyTransform

__all__ = ["choose_recipe", "final_baseline", "probe_child", "probed_ops", "restrict_space", "selection_trial"]


def probed_ops(space: SearchSpace) -> list[str]:
    """Every op a candidate may use - the space's, RandAugment's and TrivialAugment's - and the flip."""
    return list(dict.fromkeys([*space.ops, *RANDAUGMENT_OPS, "FlipLR"]))


def probe_child(prepared: Prepared, split: int, child: ChildSource | str | Path,
                faults: Faults = Faults()) -> dict[str, Any]:
    """Phase 1b: the frozen child's D_A accuracy clean and under every op at the probed levels (the child
    comes from this worker's cache when phase 2 or another probe loaded it before)."""
    faults.reach("probe", split=split)
    config = prepared.config
    use_threads(config)
    started = time.perf_counter()
    device = device_for(config)
    model, cached, load_seconds = frozen_child(prepared, split, child)
    _, da = prepared.splits[split]
    index = torch.as_tensor(da)
    probes = probe_ops(model, prepared.data.images[index].to(device), prepared.data.labels[index].to(device),
                       probed_ops(prepared.space), mean=prepared.mean, std=prepared.std,
                       seed=config.seed * 1000 + split)
    return {"split": split, "clean": probes["clean"], "ops": {op: [list(p) for p in v] for op, v in probes["ops"].items()},
            "load_seconds": load_seconds, "child_cached": cached, "seconds": time.perf_counter() - started}


def restrict_space(space: SearchSpace, fit: DomainFit) -> SearchSpace:
    """The space without the excluded ops and with every kept op's levels capped at its highest allowed level."""
    kept = [(op, r) for op, r in zip(space.ops, space.level_ranges) if fit.allowed(op)]
    if not kept:
        kept = [("Identity", (0.0, 0.0))]
    ranges = tuple((min(low, fit.max_level(op)), min(high, fit.max_level(op))) for op, (low, high) in kept)
    return dataclasses.replace(space, ops=tuple(op for op, _ in kept), level_ranges=ranges,
                               name=f"{space.name} (domain fit)")


def final_baseline(prepared: Prepared, fit: DomainFit) -> Baseline:
    """The data set's baseline, with the horizontal flip added when the data allows it (FlipLR kept)."""
    base = prepared.baseline
    flip_ok = "FlipLR" in fit.ops and fit.allowed("FlipLR")
    return Baseline(base.pad_crop, base.hflip or flip_ok)


def selection_trial(prepared: Prepared, recipe: Recipe, fold: int, faults: Faults = Faults(),
                    index: int = 0) -> dict[str, Any]:
    """Phase 3: train a fresh model with ``recipe`` on the training part of ``fold`` at the final budget;
    its error (%) and loss on the held-out part. The same fold gives every recipe the same initial weights.
    ``index`` (the recipe's place among the candidates) only names the trial."""
    faults.reach("select", fold=fold, index=index)
    config = prepared.config
    use_threads(config)
    train_idx, held = prepared.folds[fold]
    data, device = prepared.data, device_for(config)
    torch.manual_seed(config.seed * 1000 + 500 + fold)
    model = prepared.new_model()
    train_config = dataclasses.replace(fit_to_data(config.final_train_config(), len(train_idx), config.min_steps),
                                       seed=config.seed + fold)
    started = time.perf_counter()
    train_model(model, data.subset(train_idx), train_config, augment=BatchPolicyTransform(recipe.recipe),
                mean=prepared.mean, std=prepared.std, device=device)
    result = evaluate(model, data.images[held], data.labels[held], mean=prepared.mean, std=prepared.std,
                      device=device)
    return {"recipe": recipe.name, "fold": fold, "error": 100.0 * (1.0 - result["accuracy"]), "loss": result["loss"],
            "train_seconds": time.perf_counter() - started, "train_images": len(train_idx)}


def choose_recipe(prepared: Prepared, recipes: Sequence[Recipe], rows: Sequence[dict[str, Any]],
                  baseline: Baseline) -> tuple[Decision, str]:
    """The rule of :mod:`policysearch.selection` over the recipes whose every fold succeeded.

    Returns the decision and a note (non-empty when the standard recipe could not be the reference).
    """
    folds = len(prepared.folds)
    errors: dict[str, list[float]] = {}
    for recipe in recipes:
        done = sorted((r for r in rows if r["recipe"] == recipe.name and r["status"] == "ok"), key=lambda r: r["fold"])
        if len(done) == folds:
            errors[recipe.name] = [float(r["error"]) for r in done]
    reference, note = reference_name(baseline), ""
    if reference not in errors:
        reference = next(iter(errors))
        note = f"the standard recipe failed on some fold, so {reference} is the reference"
    test_fraction = 1.0 / prepared.config.selection_folds
    return decide(errors, reference, test_fraction=test_fraction, confidence=prepared.config.confidence), note


def one_final_training_seconds(rows: Sequence[dict[str, Any]], num_images: int) -> float:
    """A final training's device time estimated from the selection trials (scaled to all the images)."""
    done = [r for r in rows if r["status"] == "ok"]
    if not done:
        return float("nan")
    return float(np.mean([r["train_seconds"] * num_images / r["train_images"] for r in done]))
