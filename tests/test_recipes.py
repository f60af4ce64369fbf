"""Tests for the search's domain fit and recipe selection phases as plain functions (no Ray)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest


from policysearch.search.candidates import Recipe, candidate_recipes, reference_name
from policysearch.search.domain import DomainFit, OpFit, restrict_space, restriction_text
from policysearch.augment.policy import Baseline
from policysearch.search import Prepared, SearchConfig, prepare
from policysearch.search.domain import fit_domain
from policysearch.search.recipes import (added_repeat, choose_recipe, final_baseline, flip_undecided, race_survivors,
                                         selection_trial)
from policysearch.search.selection import Decision, decide, race_margin, race_ties
from policysearch.search.spaces import load_space, space_from_dict


def _fit(**max_levels: float) -> DomainFit:
    return DomainFit({op: OpFit(op, (1.0,), (0.0 if v == 0 else 1.0,), v) for op, v in max_levels.items()})


def _four_recipes(**settings: Any) -> tuple[Prepared, list[Recipe], list[str], str]:
    """60 digits in 3 folds and the recipes baseline crop 1, baseline crop 0, randaugment crop 1 and the
    reference (randaugment crop 0): the prepared search, the recipes, their names and the reference's."""
    prepared = prepare(SearchConfig(train_size=60, splits=1, selection_folds=3, selection_repeats=1, **settings))
    recipes = candidate_recipes(prepared.baseline, _fit(), None, families=("baseline", "randaugment"),
                                randaugment_grid=())
    return prepared, recipes, [r.name for r in recipes], reference_name(prepared.baseline)


def test_restricted_space_drops_excluded_ops_and_caps_levels():
    space = load_space("fast_autoaugment")
    restricted = restrict_space(space, _fit(Invert=0.0, Rotate=0.5))
    assert "Invert" not in restricted.ops and len(restricted.ops) == len(space.ops) - 1
    assert restricted.level_range("Rotate") == (0.0, 0.5) and restricted.level_range("ShearX") == space.level_range("ShearX")
    policy = restricted.decode(restricted.sample(__import__("numpy").random.default_rng(0)))
    assert all(step.level <= 0.5 for sub in policy for step in sub if step.op == "Rotate")


def test_an_op_whose_whole_range_lies_above_its_cap_leaves_the_space():
    """A user's range [0.6, 0.9] under a cap of 0.5 has no level left that keeps the classes: the op goes,
    rather than being pinned at the cap, a level the user's range excludes."""
    space = space_from_dict({"name": "mine", "sub_policies": 1, "ops_per_sub_policy": 1,
                             "probability": {"type": "continuous"}, "level": {"type": "continuous"},
                             "ops": {"Rotate": {"level": [0.6, 0.9]}, "ShearX": {"level": [0.2, 0.9]}}})
    restricted = restrict_space(space, _fit(Rotate=0.5, ShearX=0.5))
    assert restricted.ops == ("ShearX",) and restricted.level_range("ShearX") == (0.2, 0.5)
    assert restriction_text(space, restricted, _fit(Rotate=0.5, ShearX=0.5)) == (
        "1 of 2 ops of space 'mine' kept; excluded: Rotate; levels capped: ShearX 0.5")


def test_a_fit_that_excludes_every_op_says_so():
    space = space_from_dict({"name": "mine", "sub_policies": 1, "ops_per_sub_policy": 1,
                             "probability": {"type": "continuous"}, "level": {"type": "continuous"},
                             "ops": ["Rotate", "Invert"]})
    fit = _fit(Rotate=0.0, Invert=0.0)
    restricted = restrict_space(space, fit)
    assert restricted.ops == ("Identity",)
    assert restriction_text(space, restricted, fit).startswith(
        "every op of space 'mine' loses this data's classes at the lowest level the space allows it, so phase 2 "
        "searches the identity alone")
    assert restriction_text(space, restrict_space(space, _fit()), _fit()) == "2 of 2 ops of space 'mine' kept"


def test_flip_joins_the_baseline_only_where_the_data_allows_it():
    prepared = prepare(SearchConfig(train_size=60, splits=1, selection_folds=2))
    assert prepared.baseline == Baseline(1, False)
    assert final_baseline(prepared, _fit(FlipLR=1.0)) == Baseline(1, True)
    assert final_baseline(prepared, _fit(FlipLR=0.0)) == Baseline(1, False)
    assert final_baseline(prepared, _fit()) == Baseline(1, False)  # not probed: the data set's table decides


def test_a_flip_the_weak_child_models_could_not_judge_is_left_to_training():
    prepared = prepare(SearchConfig(train_size=60, splits=1, selection_folds=2))
    weak = fit_domain([{"clean": 0.12, "ops": {"FlipLR": [(1.0, 0.12)]}}], num_classes=10)
    assert flip_undecided(prepared, weak) and final_baseline(prepared, weak) == Baseline(1, False)
    assert not flip_undecided(prepared, _fit(FlipLR=0.0)) and not flip_undecided(prepared, _fit(FlipLR=1.0))
    names = [r.name for r in candidate_recipes(Baseline(4, False), weak, None, families=("baseline", "randaugment"),
                                               try_flip=True)]
    assert names[:4] == ["baseline, crop 4", "baseline, crop 0", "baseline, crop 4, flip", "baseline, crop 0, flip"]
    # the reference stays without the flip; it is tried with it once, as measured: alone
    assert reference_name(Baseline(4, False)) == "randaugment (torchvision), crop 0" and names[4:7] == [
        "randaugment (torchvision), crop 4", "randaugment (torchvision), crop 0", "randaugment (torchvision), crop 0, flip"]
    assert "randaugment (torchvision), crop 4, flip" not in names
    flipped = candidate_recipes(Baseline(4, False), weak, None, families=("randaugment",), try_flip=True)[2]
    assert flipped.recipe.baseline == Baseline(0, True)
    # a data set that flips by its own table has nothing left to decide
    flipping = [r.name for r in candidate_recipes(Baseline(4, True), weak, None, families=("baseline",), try_flip=True)]
    assert flipping == ["baseline, crop 4, flip", "baseline, crop 0, flip"]


def test_selection_trial_and_rule_on_tiny_data():
    config = SearchConfig(train_size=60, splits=1, selection_folds=2, selection_repeats=1, epochs=1, min_steps=4,
                          batch_size=16)
    prepared = prepare(config)
    recipes = candidate_recipes(prepared.baseline, _fit(), None, families=("baseline", "randaugment"),
                                randaugment_grid=())
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
    config = SearchConfig(train_size=60, splits=1, selection_folds=3, selection_repeats=1, selection_keep=0.5)
    prepared = prepare(config)
    recipes = candidate_recipes(prepared.baseline, _fit(), None, families=("baseline", "randaugment"),
                                randaugment_grid=())
    names = [r.name for r in recipes]  # baseline crop 1, baseline crop 0, randaugment crop 1, crop 0 (ref)
    reference = reference_name(prepared.baseline)
    assert reference == names[3]
    # 20 held-out images: one fold's noise is about 29 points here, so only a far worse recipe stops
    first = {names[0]: 10.0, names[1]: 90.0, names[2]: 5.0, reference: 20.0}
    rows = [{"recipe": n, "fold": 0, "status": "ok", "error": e} for n, e in first.items()]
    survivors = race_survivors(prepared, recipes, rows, prepared.baseline)
    assert [names[i] for i in survivors] == [names[0], names[2], reference]  # best 2, and the reference
    for i in survivors:
        rows += [{"recipe": names[i], "fold": f, "status": "ok", "error": first[names[i]] + f} for f in (1, 2)]
    decision, _ = choose_recipe(prepared, recipes, rows, prepared.baseline)
    assert decision.stopped == {names[1]: 90.0}  # its first fold
    assert names[1] not in decision.mean_error and decision.best == min(decision.mean_error, key=decision.mean_error.get)
    stopped = next(c for c in decision.comparisons if names[1] in (c.candidate, c.reference))
    assert stopped.n == 1 and stopped.mean == first[decision.chosen] - 90.0
    assert all(c.n == 3 for c in decision.comparisons if c is not stopped)
    assert "stopped after the first fold (--selection-keep 0.5, selection_keep= in Python," in decision.reason
    document = decision.to_dict()
    assert document["stopped"] == {names[1]: 90.0}
    json.dumps(document, allow_nan=False)  # plain JSON: a one-fold comparison has no bounds, written as null
    one_fold = next(c for c in document["comparisons"] if c["n"] == 1)
    assert one_fold["low"] is None and one_fold["high"] is None and one_fold["upper"] is None


def test_recipes_tied_at_the_race_cut_all_go_on_and_the_reason_names_the_tie_rule():
    prepared, recipes, names, reference = _four_recipes(selection_keep=0.5)
    assert reference == names[3]
    # ceil(0.5 x 4) = 2 by share, and names[2] ties with the second at 60%, beyond one fold's noise of the best
    # (about 32 pp on 20 images)
    first = {names[0]: 5.0, names[1]: 60.0, names[2]: 60.0, reference: 80.0}
    rows = [{"recipe": n, "fold": 0, "status": "ok", "error": e} for n, e in first.items()]
    survivors = race_survivors(prepared, recipes, rows, prepared.baseline)
    assert [names[i] for i in survivors] == names  # the two by rank, the one tied, and the reference
    for i in (0, 2, 3):  # one of them stopped
        rows += [{"recipe": names[i], "fold": f, "status": "ok", "error": first[names[i]]} for f in (1, 2)]
    decision, _ = choose_recipe(prepared, recipes, rows, prepared.baseline)
    assert "by the tie rule, every recipe tied with the last one kept at the cut goes on too: 1 more, tied at " \
           "60.00%" in decision.reason
    assert decision.first_fold == first


def test_the_reference_the_race_kept_is_not_credited_to_the_tie_rule_when_another_stands_in():
    """Regression: where the reference failed on a later fold, the tie rule was credited with keeping it, as
    the recipe standing in for it was taken as the one the race keeps."""
    prepared, recipes, names, reference = _four_recipes(selection_keep=0.5)
    first = {names[0]: 5.0, names[1]: 60.0, names[2]: 90.0, reference: 60.0}  # the reference ties at the cut
    rows = [{"recipe": n, "fold": 0, "status": "ok", "error": e} for n, e in first.items()]
    rows += [{"recipe": reference, "fold": 1, "status": "failed", "error": None}]
    rows += [{"recipe": n, "fold": f, "status": "ok", "error": first[n]} for n in names[:2] for f in (1, 2)]
    decision, note = choose_recipe(prepared, recipes, rows, prepared.baseline)
    assert decision.reference != reference and "is the reference" in note
    assert "stopped after the first fold" in decision.reason and "tie rule" not in decision.reason


def test_a_tie_within_one_folds_noise_is_not_credited_to_the_tie_rule():
    prepared, recipes, names, reference = _four_recipes(selection_keep=0.25)
    # ceil(0.25 x 4) = 1 by share; the two tied with the best go on as within one fold's noise of it
    first = {names[0]: 5.0, names[1]: 5.0, names[2]: 5.0, reference: 20.0}
    rows = [{"recipe": n, "fold": f, "status": "ok", "error": e} for n, e in first.items() for f in range(3)
            if f == 0 or n != names[2]]
    decision, _ = choose_recipe(prepared, recipes, rows, prepared.baseline)
    assert "stopped after the first fold" in decision.reason and "tie rule" not in decision.reason


def test_the_race_is_reported_from_what_it_ran_on_when_a_recipe_fails_later():
    """Regression: a recipe that finished the first fold and failed on the second was left out of the
    first-fold errors the report recounts the race from, so the tie at the cut it made went unsaid."""
    prepared, recipes, names, reference = _four_recipes(selection_keep=0.5)
    first = {names[0]: 60.0, names[1]: 60.0, names[2]: 90.0, reference: 5.0}
    rows = [{"recipe": n, "fold": 0, "status": "ok", "error": e} for n, e in first.items()]
    margin = race_margin(first, len(prepared.folds[0][1]))
    assert race_ties(first, names, 0.5, margin, reference) == (60.0, 1)  # names[1] ties with names[0]
    rows += [{"recipe": names[0], "fold": 1, "status": "failed", "error": None}]
    rows += [{"recipe": n, "fold": f, "status": "ok", "error": first[n]} for n in (names[1], reference)
             for f in (1, 2)]
    decision, _ = choose_recipe(prepared, recipes, rows, prepared.baseline)
    assert decision.first_fold == first and "1 more, tied at 60.00%" in decision.reason
    assert decision.race_margin == race_margin(first, len(prepared.folds[0][1]))


def test_selection_trains_at_the_final_trainings_batch_and_epochs_not_refitted_to_the_fold(monkeypatch):
    from policysearch.search import recipes as module
    from policysearch.training.train import fit_to_data

    config = SearchConfig(train_size=60, splits=1, selection_folds=3, epochs=2, min_steps=8, batch_size=32)
    prepared = prepare(config)
    final = fit_to_data(config.final_train_config(), 60, 8)  # batch 15 on all 60 images
    assert fit_to_data(config.final_train_config(), 40, 8).batch_size != final.batch_size  # a fold would differ
    seen = []
    monkeypatch.setattr(module, "train_model", lambda model, data, train_config, **kw: seen.append((len(data), train_config)))
    recipe = candidate_recipes(prepared.baseline, _fit(), None, families=("baseline",))[0]
    module.selection_trial(prepared, recipe, 1)
    (images, used), = seen
    assert images == 40 and module.final_training(prepared) == final
    assert (used.batch_size, used.epochs, used.warmup_epochs) == (final.batch_size, final.epochs, final.warmup_epochs)
    assert used.seed == config.seed + 1


def test_a_flip_the_domain_fit_added_is_also_tried_without_it():
    base = Baseline(4, True)
    names = [r.name for r in candidate_recipes(base, _fit(), None, families=("baseline", "randaugment"),
                                               flip_from_fit=True)]
    assert names[:4] == ["baseline, crop 4, flip", "baseline, crop 0, flip", "baseline, crop 4", "baseline, crop 0"]
    assert "randaugment (torchvision), crop 4" not in names and reference_name(base) in names
    plain = [r.name for r in candidate_recipes(base, _fit(), None, families=("baseline",))]
    assert plain == ["baseline, crop 4, flip", "baseline, crop 0, flip"]  # the data set's own flip is not questioned
    unflipped = candidate_recipes(base, _fit(), None, families=("baseline",), flip_from_fit=True)[2]
    assert unflipped.recipe.baseline == Baseline(4, False)


def test_an_unclear_decision_gets_repeats_for_the_recipes_that_could_clear_it():
    """The best challenger is 3 pp ahead of the reference on 3 folds but its bound does not clear the noise:
    a repeat of 3 folds is added for it and the reference only, the decision then rests on 6 folds, and the
    others are reported on the 3 folds they trained on."""
    from policysearch.search.figures import recipe_data
    from policysearch.search.report import stopped_table

    config = SearchConfig(train_size=60, splits=1, selection_folds=3, selection_repeats=1)
    prepared = prepare(config)
    assert prepared.first_folds == 3 and len(prepared.folds) == 12  # the first pass and 3 repeats it may add
    recipes = candidate_recipes(prepared.baseline, _fit(), None, families=("baseline", "randaugment"),
                                randaugment_grid=())
    names = [r.name for r in recipes]
    reference = reference_name(prepared.baseline)
    errors = {names[0]: [52.99, 53.15, 50.45], names[1]: [56.0, 51.9, 57.1], names[2]: [60.0, 58.0, 61.0],
              reference: [55.09, 53.15, 57.66]}

    def rows_of(errors: dict[str, list[float]], start: int = 0) -> list[dict[str, object]]:
        return [{"recipe": name, "fold": start + f, "status": "ok", "error": e, "train_seconds": 1.0}
                for name, errs in errors.items() for f, e in enumerate(errs)]

    rows = rows_of(errors)
    assert choose_recipe(prepared, recipes, rows, prepared.baseline)[0].chosen == reference  # unclear
    assert added_repeat(prepared, recipes, rows, prepared.baseline) == ([0, 3], [3, 4, 5])
    stingy = prepare(dataclasses.replace(config, selection_extra=0.4))  # 6 more trainings > 0.4 x 12
    assert added_repeat(stingy, recipes, rows, stingy.baseline) == ([], [])
    assert added_repeat(prepare(dataclasses.replace(config, selection_extra=0)), recipes, rows,
                        prepared.baseline) == ([], [])
    rows += rows_of({names[0]: [50.0, 52.0, 49.0], reference: [55.0, 54.0, 56.0]}, start=3)
    assert added_repeat(prepared, recipes, rows, prepared.baseline) == ([], [])  # clear now
    decision, _ = choose_recipe(prepared, recipes, rows, prepared.baseline)
    assert decision.chosen == names[0] and decision.first_pass == 3
    assert all(c.n == 6 for c in decision.versus_reference)
    assert decision.stopped == {names[1]: pytest.approx(55.0), names[2]: pytest.approx(59.6666667)}
    assert ("1 repeat of the cross-fit was added for the recipes that could still clear the noise and the reference "
            "(2 in the last), 6 folds in all") in decision.reason
    table = stopped_table(names, decision)
    assert [(row["recipe"], row["folds"]) for row in table] == [(names[1], 3), (names[2], 3)]
    assert table[0]["diff"] == pytest.approx(55.0 - sum(errors[reference]) / 3)  # on the same 3 folds
    again = Decision.from_dict(json.loads(json.dumps(decision.to_dict())))
    assert again.fold_errors == decision.fold_errors and stopped_table(names, again) == table
    csv_rows = [{k: str(v) for k, v in dict(r, held_out_error=r["error"]).items()} for r in rows]
    drawn = recipe_data(csv_rows, decision.to_dict(), confidence=0.8, test_fraction=1 / 3)
    assert [r["recipe"] for r in drawn["ranked"]] == [names[0], reference]
    assert decision.held_out == prepared.held_out == min(len(held) for _, held in prepared.folds) > 0
    rule = next(c for c in decision.versus_reference if c.candidate == names[0])
    assert drawn["ranked"][0]["upper"] == pytest.approx(rule.upper)  # the picture's bound is the rule's, floor too
    assert [(r["recipe"], r["folds"], round(r["diff"], 6)) for r in drawn["stopped"]] == \
        [(row["recipe"], 3, round(row["diff"], 6)) for row in table]


def test_a_training_that_fails_in_an_added_repeat_counts_only_whole_repeats():
    """A repeat the reference did not finish adds nothing (and is not tried again): the decision rests on
    the folds before it; a contender that failed in a repeat keeps its whole repeats, apart from the others."""
    prepared, recipes, names, reference = _four_recipes()
    first = {names[0]: [52.99, 53.15, 50.45], names[1]: [56.0, 51.9, 57.1], names[2]: [60.0, 58.0, 61.0],
             reference: [55.09, 53.15, 57.66]}
    rows = [{"recipe": n, "fold": f, "status": "ok", "error": e} for n, errs in first.items() for f, e in enumerate(errs)]

    def repeat(errors: dict[str, list[float | None]]) -> list[dict[str, object]]:
        return [{"recipe": n, "fold": 3 + f, "status": "ok" if e is not None else "failed", "error": e}
                for n, errs in errors.items() for f, e in enumerate(errs)]

    lost_reference = rows + repeat({names[0]: [50.0, 52.0, 49.0], reference: [55.0, None, 56.0]})
    assert added_repeat(prepared, recipes, lost_reference, prepared.baseline) == ([], [])  # not the same again
    decision, _ = choose_recipe(prepared, recipes, lost_reference, prepared.baseline)
    assert all(c.n == 3 for c in decision.versus_reference) and "repeat" not in decision.reason
    assert decision.chosen == reference and not decision.stopped  # everyone is counted on the first 3 folds
    lost_contender = rows + repeat({names[0]: [50.0, None, 49.0], reference: [55.0, 54.0, 56.0]})
    decision, _ = choose_recipe(prepared, recipes, lost_contender, prepared.baseline)
    assert decision.fold_errors[names[0]] == tuple(first[names[0]]) and names[0] in decision.stopped
    assert decision.chosen == reference and "(2 in the last), 6 folds in all" in decision.reason
    # the reference failed in the first pass: the recipe held in its place decides whether to add a repeat
    no_reference = [dict(r, status="failed") if r["recipe"] == reference and r["fold"] == 2 else
                    dict(r, error=first[names[0]][r["fold"]] + (-2.10, 0.0, -7.21)[r["fold"]])
                    if r["recipe"] == names[1] else r for r in rows]  # names[1] is 3.1 pp ahead, not clear
    decision, note = choose_recipe(prepared, recipes, no_reference, prepared.baseline)
    assert decision.reference == names[0] and "failed" in note and decision.best == names[1]
    assert added_repeat(prepared, recipes, no_reference, prepared.baseline) == ([0, 1], [3, 4, 5])
    # the stand-in fails in that repeat while the contender finishes it: the stand-in stays the reference
    lost_stand_in = no_reference + repeat({names[0]: [50.0, None, 49.0], names[1]: [48.0, 47.0, 46.0]})
    decision, note = choose_recipe(prepared, recipes, lost_stand_in, prepared.baseline)
    assert decision.reference == names[0] and all(c.n == 3 for c in decision.versus_reference)


def test_the_repeat_rule_holds_the_variance_floor_as_the_decision_does():
    """Three folds of 20 images where a recipe is one image better on two: its spread alone would clear the
    noise (no repeat), but with the floor of testing on 20 images the decision is unclear and one more repeat
    could clear it, so a repeat is added for it."""
    prepared, recipes, names, reference = _four_recipes()
    errors = {names[0]: [5.0, 5.0, 10.0], reference: [10.0, 10.0, 10.0]}
    rows = [{"recipe": n, "fold": f, "status": "ok", "error": e} for n, errs in errors.items() for f, e in enumerate(errs)]
    assert decide(errors, reference, test_fraction=1 / 3).chosen == names[0]  # without the floor: clear
    assert choose_recipe(prepared, recipes, rows, prepared.baseline)[0].chosen == reference  # with it: unclear
    assert added_repeat(prepared, recipes, rows, prepared.baseline) == ([0, 3], [3, 4, 5])
    stored = choose_recipe(prepared, recipes, rows, prepared.baseline)[0].to_dict()
    del stored["held_out"]  # a decision written before the floor reads back without one
    assert Decision.from_dict(stored).held_out == 0
