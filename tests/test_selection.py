"""Tests for the recipe selection: cross-fit folds, the corrected paired comparison and the stated rule;
the candidate recipes; the domain fit; and the training budget on tiny data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from policysearch.search.candidates import candidate_recipes, reference_name
from policysearch.training.data import DataError
from policysearch.search.domain import DomainFit, OpFit, fit_domain, probe_ops
from policysearch.augment.policy import Baseline, Operation, Policy
from policysearch.augment.standard import randaugment_tv_policy, trivialaugment_wide_policy
from policysearch.search.folds import auto_repeats, crossfit_folds
from policysearch.search.selection import (TIE_RULE, compare, decide, fold_variance, race, race_margin, race_ties,
                                           selection_power, sequential_contenders)
from policysearch.training.train import TrainConfig, _batches, fit_to_data


def test_crossfit_folds_hold_every_image_out_once_per_repeat():
    labels = np.repeat(np.arange(4), 10)
    folds = crossfit_folds(labels, k=5, repeats=2, seed=1)
    assert len(folds) == 10
    for repeat in range(2):
        held = np.concatenate([h for _, h in folds[repeat * 5:(repeat + 1) * 5]])
        assert sorted(held.tolist()) == list(range(40))
        for train, out in folds[repeat * 5:(repeat + 1) * 5]:
            assert not set(train) & set(out) and len(train) + len(out) == 40
            assert np.bincount(labels[out]).tolist() == [2, 2, 2, 2]  # stratified
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(folds[:5], folds[5:]))  # repeats differ


def test_crossfit_folds_name_a_class_too_small():
    with pytest.raises(DataError, match=r"class 1: 3"):
        crossfit_folds(np.array([0] * 10 + [1] * 3), k=5)


def test_corrected_comparison_is_wider_than_the_naive_one():
    from scipy import stats

    a, b = [10.0, 12, 9, 11, 10], [12.0, 13, 12, 12, 11]
    c = compare(a, b, test_fraction=0.2)
    d = np.subtract(a, b)
    naive = stats.t.ppf(0.9, 4) * d.std(ddof=1) / math.sqrt(5)
    assert c.mean == pytest.approx(-1.6)
    assert c.high - c.mean == pytest.approx(math.sqrt(1 / 5 + 0.25) * d.std(ddof=1) * stats.t.ppf(0.9, 4))
    assert c.high - c.mean > naive  # overlapping training sets: the naive interval is too narrow
    assert c.upper < c.high


def test_rule_keeps_the_reference_unless_the_evidence_clears_the_noise():
    ref = "trivialaugment"
    noisy = {ref: [10.0, 12, 8, 11, 9], "challenger": [9.0, 13, 7, 10, 10]}  # lower mean, large spread
    decision = decide(noisy, ref, test_fraction=0.2)
    assert decision.best == "challenger" and decision.chosen == ref and "does not clear" in decision.reason
    clear = {ref: [10.0, 12, 8, 11, 9], "challenger": [7.0, 9, 5.5, 8, 6]}
    decision = decide(clear, ref, test_fraction=0.2)
    assert decision.chosen == "challenger" and "clears the noise" in decision.reason
    assert {c.reference for c in decision.comparisons} == {ref}
    tied = {"baseline": [10.0, 11], ref: [10.0, 11]}
    assert decide(tied, ref, test_fraction=0.5).chosen == ref  # ties never leave the reference


def test_means_equal_but_for_float_noise_are_one_tie_named_in_full():
    """Held-out errors from float32 accuracies carry noise (2 % stored as 1.9999981): equal means must still
    tie, the first listed wins, and the reason names every recipe tied with it."""
    two, four, six = 1.9999980926513672, 4.000002145767212, 6.000001907348633
    errors = {"ref": [10.0, 10.0, 10.0], "first": [two, four, four], "second": [two, six, two],
              "third": [four, two, four], "worse": [four, four, four]}
    decision = decide(errors, "ref", test_fraction=0.5)
    assert decision.best == "first"
    assert "tied on the mean with 2 other recipes (second; third), and a tie goes to" in decision.reason


def test_an_accuracy_is_the_exact_fraction_of_correct_predictions():
    from policysearch.training.train import evaluate

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    images, labels = torch.zeros((49, 1, 2, 2), dtype=torch.uint8), torch.zeros(49, dtype=torch.long)
    with torch.no_grad():
        model[1].weight.zero_(), model[1].bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
    labels[:2] = 1  # 47 of 49 right
    assert evaluate(model, images, labels, mean=[0.0], std=[1.0])["accuracy"] == 47 / 49


def test_rule_refuses_unpaired_results():
    with pytest.raises(ValueError, match="same folds"):
        decide({"a": [1.0, 2.0], "b": [1.0]}, "a", test_fraction=0.2)


def _fit(**max_levels: float) -> DomainFit:
    return DomainFit({op: OpFit(op, (1.0,), (0.0 if v == 0 else 1.0,), v) for op, v in max_levels.items()})


def test_candidates_cover_the_standard_recipes_with_and_without_the_crop():
    searched = Policy([[Operation("Rotate", 0.8, 0.5)], [Operation("Invert", 0.5, 0.0)]])
    cands = candidate_recipes(Baseline(2, False), _fit(Invert=0.0, Rotate=0.5, Solarize=0.0), searched)
    names = [c.name for c in cands]
    assert names[:2] == ["baseline, crop 2", "baseline, crop 0"]
    assert reference_name(Baseline(2, False)) == "randaugment (torchvision), crop 0" and reference_name(
        Baseline(2, False)) in names
    assert {c.family for c in cands} == {"baseline", "trivialaugment", "randaugment", "fast_autoaugment"}
    # baseline, RandAugment() and TrivialAugmentWide() as shipped, RandAugment x2 and TrivialAugmentWide x0.5
    # and TrivialAugment over AutoAugment's ranges on the domain fit's ops, Fast AutoAugment x2; each crop
    assert len(names) == len(set(names)) == 2 * (1 + 2 + 2 + 2 + 2)
    as_shipped = {"randaugment (torchvision)", "trivialaugmentwide (torchvision)"}
    for c in cands:
        assert c.recipe.baseline.pad_crop in (0, 2)
        if c.name.rsplit(",", 1)[0].removesuffix(", crop 2").removesuffix(", crop 0") not in as_shipped:
            assert "Solarize" not in c.recipe.ops() and "Invert" not in c.recipe.ops()  # excluded everywhere else
    # what a user would pick is among the candidates exactly: torchvision's transforms with their defaults
    reference = next(c for c in cands if c.name == reference_name(Baseline(2, False)))
    assert reference.recipe == randaugment_tv_policy().with_baseline(Baseline(0, False))
    wide = next(c for c in cands if c.name == "trivialaugmentwide (torchvision), crop 2")
    assert wide.recipe == trivialaugment_wide_policy().with_baseline(Baseline(2, False))
    assert "trivialaugmentwide x0.5 (domain fit), crop 2" in names
    # a domain fit that excludes none of the standard ops adds no "domain fit" label
    assert not [c for c in candidate_recipes(Baseline(2, False), _fit(Invert=0.0), None) if "domain fit" in c.name]
    # the level cap bounds the search space only: the standard recipes keep their ranges, and the searched
    # policy (already searched within the cap) is not shrunk a second time
    trivial = next(c for c in cands if c.name == "trivialaugment (AutoAugment ranges) (domain fit), crop 2")
    assert max(s.level for sub in trivial.recipe for s in sub if s.op == "Rotate") == 1.0
    stronger = next(c for c in cands if c.name == "randaugment n=2 m=14 (torchvision scale) (domain fit), crop 2")
    assert {round(s.level, 6) for sub in stronger.recipe for s in sub if s.op == "Rotate"} == {round(14 / 30, 6)}
    gentle = next(c for c in cands if c.name == "trivialaugmentwide x0.5 (domain fit), crop 2")
    assert max(s.level for sub in gentle.recipe for s in sub) == pytest.approx(0.5)
    faa = next(c for c in cands if c.name == "fast_autoaugment x0.5, crop 2")
    assert faa.recipe[0][0] == Operation("Rotate", 0.4, 0.5)
    assert faa.recipe[1][0].op == "Identity"


def test_domain_fit_excludes_what_destroys_the_classes_and_caps_levels():
    child = {"clean": 0.9, "ops": {"FlipLR": [(1.0, 0.2)], "Rotate": [(0.25, 0.88), (0.5, 0.8), (0.75, 0.4),
                                                                        (1.0, 0.3)],
                                   "Contrast": [(0.25, 0.9), (0.5, 0.9), (0.75, 0.89), (1.0, 0.85)]}}
    fit = fit_domain([child, child], num_classes=10)
    assert not fit.allowed("FlipLR") and fit.max_level("Rotate") == 0.5 and fit.max_level("Contrast") == 1.0
    assert fit.allowed("Posterize")  # not probed: nothing speaks against it
    assert [f.op for f in fit.excluded()] == ["FlipLR"]
    weak = fit_domain([{"clean": 0.2, "ops": child["ops"]}], num_classes=10)
    assert weak.allowed("FlipLR") and "too close to chance" in weak.note
    # Regression: the note gave the mean (0.537, more than 0.2 above chance) where the rule reads the weakest
    two = fit_domain([{"clean": 0.635, "ops": child["ops"]}, {"clean": 0.439, "ops": child["ops"]}], num_classes=3)
    assert ("(the weakest, of split 1, has clean accuracy 0.439, mean 0.537; chance 0.333, each needs 0.2 above it)"
            in two.note)


def test_probing_a_model_that_sees_only_the_left_half_excludes_the_flip():
    class LeftHalf(torch.nn.Module):
        """Class = which quarter of the left half is bright (a flip moves it to the right half)."""

        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            left = x[:, 0, :, :4]
            return torch.stack([left[:, :4].mean((1, 2)), left[:, 4:].mean((1, 2))], 1) * 10 + self.w

    images = torch.zeros((20, 1, 8, 8), dtype=torch.uint8)
    labels = torch.arange(20) % 2
    for i, y in enumerate(labels):
        images[i, 0, 4 * int(y):4 * int(y) + 4, :4] = 255
    probes = probe_ops(LeftHalf(), images, labels, ["FlipLR", "Brightness"], mean=(0.0,), std=(1.0,))
    assert probes["clean"] == 1.0
    fit = fit_domain([probes], num_classes=2)
    assert not fit.allowed("FlipLR") and fit.allowed("Brightness")


@pytest.mark.parametrize("n", [2, 7, 48, 150, 5000])
def test_training_budget_gives_tiny_data_enough_steps(n):
    config = fit_to_data(TrainConfig(epochs=20, batch_size=128), n)
    steps = len(_batches(n, config.batch_size, torch.arange(n))) * config.epochs
    assert steps >= 200 and 2 <= config.batch_size <= 128
    if n >= 4 * 128:
        assert (config.batch_size, config.epochs) == (128, 20)  # enough data: unchanged
    else:
        assert len(_batches(n, config.batch_size, torch.arange(n))) >= min(4, n // 2)


def test_race_keeps_the_best_share_on_the_first_fold_and_always_the_reference():
    first = {"a": 3.0, "b": 1.0, "c": 2.0, "d": 1.0, "ref": 9.0}
    order = ["a", "b", "c", "d", "ref", "failed"]
    # ceil(0.5 x 6) = 3 by error, the reference on top; "failed" has no first fold
    assert race(first, order, 0.5, "ref") == ["b", "c", "d", "ref"]
    assert race(first, order, 1.0, "ref") == ["a", "b", "c", "d", "ref"]
    # ceil(0.01 x 6) = 1, but d ties with b at the cut: the tie rule keeps both
    assert race(first, order, 0.01, "ref") == ["b", "d", "ref"]
    assert race_ties(first, order, 0.5) == (2.0, 0)
    # d ties with the best, which keeps it anyway (within any margin of it): the tie rule added nothing
    assert race_ties(first, order, 0.01) == (1.0, 0)
    assert race({"a": 1.0}, ["a", "ref"], 0.5, "ref") == ["a"]  # the reference failed: nothing to keep
    with pytest.raises(ValueError, match="keep"):
        race(first, order, 0.0, "ref")


def test_race_keeps_every_candidate_within_one_folds_noise():
    first = {"a": 3.0, "b": 1.0, "c": 2.0, "d": 1.0, "ref": 9.0}
    order = ["a", "b", "c", "d", "ref"]
    assert race(first, order, 0.01, "ref", margin=2.0) == ["a", "b", "c", "d", "ref"]
    assert race(first, order, 0.01, "ref", margin=1.5) == ["b", "c", "d", "ref"]


def test_race_margin_is_wide_on_a_few_dozen_images_and_narrow_on_thousands():
    first = {"a": 6.0, "b": 9.0, "c": 12.0}
    small, large = race_margin(first, 33), race_margin(first, 3000)
    # 2 standard errors of a difference of two 9% error rates on 33 images: about 14 points
    assert small == pytest.approx(200 * (2 * 0.09 * 0.91 / 33) ** 0.5)
    assert small > 12.0 - 6.0 and large < 3.0  # no one is raced out on 33 images; on 3,000 the worst is
    assert race_margin({"a": 0.0, "b": 0.0}, 100) > 0  # a perfect fold still has one image's noise
    assert race(first, list(first), 0.01, "a", margin=small) == ["a", "b", "c"]


@pytest.mark.parametrize("n,repeats", [(10, 3), (100, 3), (200, 3), (249, 3), (250, 2), (300, 2), (499, 2), (500, 1),
                                       (1797, 1)])  # as the help and the README state it
def test_small_data_gets_more_repeats_of_the_cross_fit(n, repeats):
    assert auto_repeats(n) == repeats
def test_a_tie_at_the_race_cut_never_decides_silently():
    # The demo's case: on 360 held-out images errors move in steps of 0.278%; five recipes tie at the cut.
    step = 100 / 360
    first = {"baseline": 2 * step, "ta": 3 * step, "ra": 1 * step, "faa x0.5": 1 * step, "faa x1": 1 * step,
             "ra2": 1 * step, "ta fit": 1 * step, "ra3": 4 * step}
    order = list(first)
    kept = race(first, order, 0.25, "ta")  # ceil(0.25 x 8) = 2 by share; five are tied at 0.278%
    assert kept == ["ta", "ra", "faa x0.5", "faa x1", "ra2", "ta fit"]
    assert race_ties(first, order, 0.25) == (step, 0)  # tied with the best, within every margin of it
    assert "tied" in TIE_RULE and "cut" in TIE_RULE


def test_the_tie_rule_is_credited_only_with_what_the_margin_and_the_reference_did_not_keep():
    """Regression: a report said "by the tie rule, 1 more" of a recipe one fold's noise kept anyway."""
    first = {"a": 5.0, "b": 60.0, "c": 60.0, "d": 60.0, "ref": 80.0}
    order = list(first)
    assert race(first, order, 0.4, "ref") == order  # ceil(0.4 x 5) = 2: a and b by rank; c and d tied at 60
    assert race_ties(first, order, 0.4) == (60.0, 2)
    assert race_ties(first, order, 0.4, margin=60.0) == (60.0, 0)  # within one fold's noise of a
    assert race_ties({**first, "ref": 60.0}, order, 0.4, margin=10.0, reference="ref") == (60.0, 2)


def test_the_decision_states_the_selections_power():
    errors = {"ref": [10.0, 12.0, 11.0], "a": [8.0, 13.0, 9.0], "b": [11.0, 12.0, 12.0]}
    decision = decide(errors, "ref", test_fraction=1 / 3)
    widths = sorted(c.upper - c.mean for c in decision.versus_reference)
    assert f"a median {np.median(widths):.2f} pp above its mean difference over 3 folds" in decision.reason
    assert selection_power(decision.versus_reference) == pytest.approx(np.median(widths))
    assert selection_power(decide({"ref": [1.0], "a": [2.0]}, "ref", test_fraction=0.5).versus_reference) is None


def test_repeats_are_added_only_while_the_decision_is_unclear_and_more_folds_could_clear_it():
    """The 1,000-image short-budget case: the best challenger is 3 pp ahead but its bound is +0.49 pp on 3
    folds; with 3 more folds at the same spread it would clear. A recipe that could not is left out."""
    reference = [55.09, 53.15, 57.66]
    errors = {"baseline, crop 0, flip": [52.99, 53.15, 50.45],  # -3.10 pp, bound +0.49
              "close": [56.0, 51.9, 57.1],  # -0.3 pp, spread 1.1 pp: 3 more folds could not clear it
              "worse": [57.0, 56.0, 59.0], "reference": reference}
    kwargs = dict(test_fraction=1 / 3, more=3)
    unclear = decide(errors, "reference", test_fraction=1 / 3)
    assert unclear.chosen == "reference" and unclear.best == "baseline, crop 0, flip"
    assert sequential_contenders(errors, "reference", **kwargs) == ["baseline, crop 0, flip", "reference"]
    # clear: the best clears the noise already, or the reference has the lowest mean
    clears = dict(errors, **{"baseline, crop 0, flip": [50.0, 48.2, 52.5]})
    assert decide(clears, "reference", test_fraction=1 / 3).chosen == "baseline, crop 0, flip"
    assert sequential_contenders(clears, "reference", **kwargs) == []
    assert sequential_contenders({"worse": errors["worse"], "reference": reference}, "reference", **kwargs) == []
    # unclear, but no recipe could clear with 3 more folds: nothing is added
    assert sequential_contenders({"close": errors["close"], "reference": reference}, "reference", **kwargs) == []
    assert sequential_contenders(errors, "reference", test_fraction=1 / 3, more=0) == []


def test_folds_that_agree_by_chance_do_not_make_one_image_clear_the_noise():
    """Two folds of 100 held-out images, each one image better: zero spread would make the bound the mean
    (-1 pp, "clears"); one image's difference on 100 images varies by at least 0.01 x 0.99 / 100, so it
    must not clear. The floor never narrows a bound, and a decision keeps it through JSON."""
    errors = {"ref": [10.0, 12.0], "one image better": [9.0, 11.0]}
    assert decide(errors, "ref", test_fraction=0.5).chosen == "one image better"  # no floor: a false win
    decision = decide(errors, "ref", test_fraction=0.5, held_out=100)
    assert decision.chosen == "ref" and "does not clear" in decision.reason
    floored = compare(errors["one image better"], errors["ref"], test_fraction=0.5, held_out=100)
    assert floored.mean == pytest.approx(-1.0) and floored.upper > 0 and floored.low < -1.0 < floored.high
    spread = {"ref": [10.0, 12, 8, 11, 9], "a": [7.0, 10, 4, 9, 5]}  # spread (1.0) above the floor (0.29)
    assert compare(spread["a"], spread["ref"], test_fraction=0.2, held_out=1000) == compare(
        spread["a"], spread["ref"], test_fraction=0.2)
    assert fold_variance([-1.0, -1.0], 100) == pytest.approx(0.99)
    assert type(decision).from_dict(decision.to_dict()).held_out == 100
    assert sequential_contenders(errors, "ref", test_fraction=0.5, more=2, held_out=100) == []


def test_a_tie_with_the_reference_keeps_it_whatever_float_noise_the_bound_carries():
    """Errors from float32 accuracies equal the reference's but for noise of 1e-6 pp: a tie, never a change."""
    noise = {"a": [10.0 - 1e-6, 12.0 - 2e-6, 8.0 - 1e-6], "ref": [10.0, 12.0, 8.0]}
    decision = decide(noise, "ref", test_fraction=1 / 3)
    assert decision.chosen == "ref" and decision.best == "a"
    assert decision.reason.startswith("the reference ref has the lowest mean held-out error, tied with 1 other recipe (a), "
                                      "and a tie keeps "
                                      "the reference")
    assert not decision.versus_reference[0].clears
    assert sequential_contenders(noise, "ref", test_fraction=1 / 3, more=3) == []


def test_the_race_share_is_read_as_a_person_would_count_it():
    from policysearch.search.selection import race_share

    assert race_share(0.28, 25) == 7 and race_share(0.25, 4) == 1 and race_share(0.3, 4) == 2  # 0.28 x 25 = 7


def test_strengths_that_name_the_same_recipe_are_refused_before_anything():
    from policysearch.search import SearchConfig
    from policysearch.search.config import SettingsError

    with pytest.raises(SettingsError, match=r"strengths.*distinct"):
        SearchConfig(strengths=(0.5, 0.5))
    with pytest.raises(SettingsError, match=r"strengths.*distinct"):
        SearchConfig(strengths=(0.5, 0.5000001))
    fit = DomainFit({}, note="nothing probed")
    with pytest.raises(ValueError, match="both be named 'fast_autoaugment x0.5, crop 0'"):
        candidate_recipes(Baseline(0, False), fit, Policy([[Operation("Rotate", 0.5, 0.5)]]), strengths=(0.5, 0.5))


def test_repeats_are_added_for_the_recipe_the_rule_tests_among_ties():
    """Regression: with two recipes tied on the mean, the decision tested the first listed (unclear) while the
    repeat rule looked at the other (clear), so no repeat was added to an unclear decision."""
    def err(k: int) -> float:  # k wrong of 33 held-out images, as the search counts them
        return 100 * (1 - (33 - k) / 33)

    errors = {"ref": [err(5)] * 2, "A": [err(0), err(4)], "B": [err(2)] * 2}  # A and B tie on the mean
    decision = decide(errors, "ref", test_fraction=1 / 3, held_out=33)
    assert decision.best == "A" and decision.chosen == "ref"  # unclear
    assert next(c for c in decision.versus_reference if c.candidate == "B").clears  # the one not tested
    assert sequential_contenders(errors, "ref", test_fraction=1 / 3, more=3, held_out=33) != []


def test_a_tie_with_the_reference_says_the_reference_keeps_it_and_names_every_recipe_tied():
    """A review found the reason said "a tie goes to the recipe listed first" where the reference, listed later,
    kept a tie (it always does), and named one recipe of twelve tied."""
    errors = {"first": [10.0, 12.0, 8.0], "ref": [10.0, 12.0, 8.0], **{f"r{i}": [10.0, 12.0, 8.0] for i in range(4)}}
    decision = decide(errors, "ref", test_fraction=1 / 3)
    assert decision.chosen == "ref" and decision.reason.startswith(
        "the reference ref has the lowest mean held-out error, tied with 5 other recipes (first; r0; r1 and 2 more), "
        "and a tie keeps the reference; every recipe had the reference's error on each of the 3 folds, so they cannot be told apart")
    assert "listed first" not in decision.reason and "a median" not in decision.reason


def test_the_power_leaves_out_recipes_with_the_references_errors():
    """Regression: two recipes with the reference's fold errors made the power "a median 0.00 pp" next to a
    recipe whose bound lay 4.7 pp above its mean (errors in steps of 5 pp on 20 held-out images)."""
    errors = {"ref": [20.0] * 3, "a": [15.0] * 3, "b": [20.0] * 3, "c": [20.0] * 3}
    decision = decide(errors, "ref", test_fraction=1 / 3, held_out=20)
    a = next(c for c in decision.versus_reference if c.candidate == "a")
    assert decision.chosen == "a" and selection_power(decision.versus_reference) == pytest.approx(a.upper - a.mean)
    assert f"a median {a.upper - a.mean:.2f} pp above" in decision.reason and a.upper - a.mean > 4


def test_a_constant_difference_without_a_variance_floor_is_not_called_a_tie():
    """A review found "every recipe had the reference's error on each fold" after "it clears the noise" where
    a recipe was 1 pp better on every fold (decide's default held_out=0 has no variance floor)."""
    decision = decide({"ref": [12.0, 11, 10], "a": [11.0, 10, 9]}, "ref", test_fraction=0.2)
    assert decision.chosen == "a" and "cannot be told apart" not in decision.reason
    assert "a median 0.00 pp" in decision.reason  # no spread and no floor: the bound sits on the mean
