"""Tests for the search's domain fit and recipe selection phases as plain functions (no Ray)."""

from __future__ import annotations

import json


from policysearch.candidates import candidate_recipes, reference_name
from policysearch.domain import DomainFit, OpFit
from policysearch.policy import Baseline
from policysearch.search import SearchConfig, prepare
from policysearch.search.recipes import (choose_recipe, final_baseline, race_survivors, restrict_space,
                                         selection_trial)
from policysearch.spaces import load_space


def _fit(**max_levels: float) -> DomainFit:
    return DomainFit({op: OpFit(op, (1.0,), (0.0 if v == 0 else 1.0,), v) for op, v in max_levels.items()})


def test_restricted_space_drops_excluded_ops_and_caps_levels():
    space = load_space("fast_autoaugment")
    restricted = restrict_space(space, _fit(Invert=0.0, Rotate=0.5))
    assert "Invert" not in restricted.ops and len(restricted.ops) == len(space.ops) - 1
    assert restricted.level_range("Rotate") == (0.0, 0.5) and restricted.level_range("ShearX") == space.level_range("ShearX")
    policy = restricted.decode(restricted.sample(__import__("numpy").random.default_rng(0)))
    assert all(step.level <= 0.5 for sub in policy for step in sub if step.op == "Rotate")


def test_flip_joins_the_baseline_only_where_the_data_allows_it():
    prepared = prepare(SearchConfig(train_size=60, splits=1, selection_folds=2))
    assert prepared.baseline == Baseline(1, False)
    assert final_baseline(prepared, _fit(FlipLR=1.0)) == Baseline(1, True)
    assert final_baseline(prepared, _fit(FlipLR=0.0)) == Baseline(1, False)
    assert final_baseline(prepared, _fit()) == Baseline(1, False)  # not probed: the data set's table decides


def test_selection_trial_and_rule_on_tiny_data():
    config = SearchConfig(train_size=60, splits=1, selection_folds=2, epochs=1, min_steps=4, batch_size=16)
    prepared = prepare(config)
    recipes = candidate_recipes(prepared.baseline, _fit(), None, families=("baseline", "trivialaugment"))
    rows = [dict(selection_trial(prepared, recipe, fold), status="ok", error_text="")
            for recipe in recipes for fold in range(2)]
    for row in rows:
        assert 0 <= row["error"] <= 100 and row["train_images"] == 30
    # the same fold gives the same initial weights and data order: a recipe repeated gives the same error
    again = selection_trial(prepared, recipes[0], 0)
    assert again["error"] == rows[0]["error"]
    decision, note = choose_recipe(prepared, recipes, rows, prepared.baseline)
    assert decision.reference == reference_name(prepared.baseline) and note == ""
    assert decision.chosen in {r.name for r in recipes}
    failed = [dict(r, status="failed") if r["recipe"] == decision.reference else r for r in rows]
    decision, note = choose_recipe(prepared, recipes, failed, prepared.baseline)
    assert decision.reference == recipes[0].name and "failed" in note


def test_raced_selection_decides_among_the_survivors_and_reports_the_stopped():
    config = SearchConfig(train_size=60, splits=1, selection_folds=3, selection_keep=0.5)
    prepared = prepare(config)
    recipes = candidate_recipes(prepared.baseline, _fit(), None, families=("baseline", "trivialaugment"))
    names = [r.name for r in recipes]  # baseline crop 1, baseline crop 0, trivialaugment crop 1 (ref), crop 0
    reference = reference_name(prepared.baseline)
    first = {names[0]: 10.0, names[1]: 30.0, reference: 20.0, names[3]: 5.0}
    rows = [{"recipe": n, "fold": 0, "status": "ok", "error": e} for n, e in first.items()]
    survivors = race_survivors(prepared, recipes, rows, prepared.baseline)
    assert [names[i] for i in survivors] == [names[0], reference, names[3]]  # best 2, and the reference
    for i in survivors:
        rows += [{"recipe": names[i], "fold": f, "status": "ok", "error": first[names[i]] + f} for f in (1, 2)]
    decision, _ = choose_recipe(prepared, recipes, rows, prepared.baseline, survivors)
    assert decision.stopped == {names[1]: 30.0}  # its first fold
    assert names[1] not in decision.mean_error and decision.best == min(decision.mean_error, key=decision.mean_error.get)
    stopped = next(c for c in decision.comparisons if names[1] in (c.candidate, c.reference))
    assert stopped.n == 1 and stopped.mean == first[decision.chosen] - 30.0
    assert all(c.n == 3 for c in decision.comparisons if c is not stopped)
    assert "stopped after the first fold" in decision.reason
    document = decision.to_dict()
    assert document["stopped"] == {names[1]: 30.0}
    json.dumps(document, allow_nan=False)  # plain JSON: a one-fold comparison has no bounds, written as null
    one_fold = next(c for c in document["comparisons"] if c["n"] == 1)
    assert one_fold["low"] is None and one_fold["high"] is None and one_fold["upper"] is None
