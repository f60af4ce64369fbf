"""The candidate training recipes phase 3 selects from: what a user would pick instead, and the search's own.

A recipe is a whole training augmentation (policy and baseline) in one ``Policy``. The candidates, each
with and without the data set's pad-and-crop: the baseline alone; torchvision's ``RandAugment()`` and
``TrivialAugmentWide()`` as shipped; their strength dials without the ops the domain fit excludes; and
the Fast AutoAugment policy at a few strengths. A flip the domain fit added is tried by training too, and
a flip it could not judge is tried with the baseline and the reference.
The reference is ``RandAugment()`` without the crop (why: docs/findings.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from policysearch.search.domain import DomainFit
from policysearch.augment.policy import Baseline, Operation, Policy
from policysearch.augment.standard import (RANDAUGMENT_OPS, TRIVIALAUGMENT_BINS, randaugment_tv_policy,
                                   trivialaugment_policy, trivialaugment_wide_policy)

__all__ = ["RANDAUGMENT_GRID", "STRENGTHS", "WIDE_SCALES", "Recipe", "candidate_recipes", "reference_name"]

# RandAugment's dial, torchvision's meaning (N ops, bin M of 31): gentler and stronger than its default (2, 9).
RANDAUGMENT_GRID: tuple[tuple[int, int], ...] = ((1, 5), (2, 14))
WIDE_SCALES: tuple[float, ...] = (0.5,)  # TrivialAugmentWide's dial: every level scaled
STRENGTHS: tuple[float, ...] = (0.5, 1.0)
FAMILIES = ("baseline", "trivialaugment", "randaugment", "fast_autoaugment")


@dataclass(frozen=True)
class Recipe:
    """One recipe: a name a person can read, its family, and the policy that carries all of it."""

    name: str
    family: str
    recipe: Policy
    # Fast AutoAugment: the probability scale; RandAugment: its level (M / 30); TrivialAugmentWide: its level scale
    strength: float | None = None

    def to_dict(self) -> dict[str, object]:
        b = self.recipe.baseline
        return {"name": self.name, "family": self.family, "pad_crop": b.pad_crop, "hflip": b.hflip,
                "strength": self.strength, "sub_policies": len(self.recipe)}


def _identity() -> Policy:
    return Policy([[Operation("Identity", 1.0, 0.0)]], name="identity")


def _crop_label(baseline: Baseline) -> str:
    return f"crop {baseline.pad_crop}" + (", flip" if baseline.hflip else "")


def reference_name(baseline: Baseline) -> str:
    """The name of the reference recipe: torchvision's ``RandAugment()`` with the data set's flip, no crop."""
    return f"randaugment (torchvision), {_crop_label(Baseline(0, baseline.hflip))}"


def candidate_recipes(baseline: Baseline, fit: DomainFit, searched: Policy | None = None, *,
                      strengths: Sequence[float] = STRENGTHS,
                      randaugment_grid: Sequence[tuple[int, int]] = RANDAUGMENT_GRID,
                      wide_scales: Sequence[float] = WIDE_SCALES,
                      families: Sequence[str] = FAMILIES, flip_from_fit: bool = False,
                      try_flip: bool = False) -> list[Recipe]:
    """Every candidate recipe, simplest and most standard first (the selection breaks ties that way).

    ``baseline`` is the data set's (its flip already decided from the data); each candidate comes with that
    crop and with none. ``searched`` is the merged Fast AutoAugment policy (None: that family is skipped).
    ``flip_from_fit``: the flip is not the data set's own but the domain fit's (a frozen model's affinity,
    which does not say whether training with it helps), so the baseline alone is also tried without it.
    ``try_flip``: the domain fit could not judge the flip, so the baseline alone and the reference are also
    tried with it; the reference itself stays without it.
    """
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise ValueError(f"unknown candidate families {unknown}; known: {', '.join(FAMILIES)}")
    crops = [baseline] + ([Baseline(0, baseline.hflip)] if baseline.pad_crop else [])
    ops = fit.allowed_ops(RANDAUGMENT_OPS)
    restricted = " (domain fit)" if ops != RANDAUGMENT_OPS else ""
    out: list[Recipe] = []

    def add(family: str, label: str, policy: Policy, strength: float | None = None,
            crops: Sequence[Baseline] = crops) -> None:
        for crop in crops:
            name = f"{label}, {_crop_label(crop)}"
            if any(recipe.name == name for recipe in out):  # results are kept by name: two would merge
                raise ValueError(f"two candidate recipes would both be named {name!r}: give distinct strengths, "
                                 "scales and grid points")
            out.append(Recipe(name, family, policy.with_baseline(crop), strength))

    if "baseline" in families:
        add("baseline", "baseline", _identity())
        if flip_from_fit and baseline.hflip:
            add("baseline", "baseline", _identity(), crops=[Baseline(c.pad_crop, False) for c in crops])
        if try_flip and not baseline.hflip:
            add("baseline", "baseline", _identity(), crops=[Baseline(c.pad_crop, True) for c in crops])
    if "randaugment" in families:
        add("randaugment", "randaugment (torchvision)", randaugment_tv_policy(), 9 / (TRIVIALAUGMENT_BINS - 1))
        if try_flip and not baseline.hflip:
            add("randaugment", "randaugment (torchvision)", randaugment_tv_policy(), 9 / (TRIVIALAUGMENT_BINS - 1),
                crops=[Baseline(0, True)])
    if "trivialaugment" in families:
        add("trivialaugment", "trivialaugmentwide (torchvision)", trivialaugment_wide_policy(), 1.0)
    if "randaugment" in families and ops:
        for n, m in randaugment_grid:
            add("randaugment", f"randaugment n={n} m={m} (torchvision scale){restricted}",
                randaugment_tv_policy(n, m, ops=ops), m / (TRIVIALAUGMENT_BINS - 1))
    if "trivialaugment" in families and ops:
        for scale in wide_scales:
            add("trivialaugment", f"trivialaugmentwide x{scale:g}{restricted}",
                trivialaugment_wide_policy(max_level=scale, ops=ops), scale)
        add("trivialaugment", f"trivialaugment (AutoAugment ranges){restricted}", trivialaugment_policy(ops=ops))
    if "fast_autoaugment" in families and searched is not None:
        for strength in strengths:
            add("fast_autoaugment", f"fast_autoaugment x{strength:g}", fit.without_excluded(searched.scaled(strength)),
                strength)
    return out
