"""The benchmark's methods: what each one trains with, and how results.md describes it.

A method is a whole training recipe: a policy with its baseline (pad-and-crop, a flip where it keeps the
meaning), an anchor run by its own library (``anchors``), or the searched recipe.
"""

from __future__ import annotations

from typing import Sequence

from policysearch.augment.policy import Baseline, Policy
from policysearch.augment.standard import load_policy
from policysearch.augment.transforms import BatchPolicyTransform
from policysearch.benchmark.anchors import ANCHORS, AnchorAugment
from policysearch.training.train import Augment


# Our policy-format versions of the standard recipes: (policy string, what it is), built by
# policysearch.augment.standard.
STANDARD: dict[str, tuple[str, str]] = {
    "ours-autoaugment-cifar10": ("autoaugment:cifar10", "torchvision's AutoAugment CIFAR-10 policy as a policy file"),
    "ours-randaugment-m0.9": ("randaugment:n=2,m=9", "RandAugment N=2, every op at level 0.9 of our (AutoAugment) "
                              "ranges"),
    "ours-trivialaugment-narrow": ("trivialaugment", "TrivialAugment, one op at one of 31 levels over AutoAugment's "
                                   "narrow ranges"),
}
ANCHOR_METHODS: tuple[str, ...] = tuple(f"{name}{alone}" for name in ANCHORS for alone in ("", "-alone"))
STANDARD_METHODS: tuple[str, ...] = tuple(f"{name}{alone}" for name in STANDARD for alone in ("", "-alone"))
METHODS: tuple[str, ...] = ("none", "baseline", "cutout", *ANCHOR_METHODS, *STANDARD_METHODS, "searched")
# Run only when asked: the recipe a second search selects for a model trained from scratch (no --weights),
# trained here like every method (from the weights), to see whether searching for fine-tuning pays.
EXTRA_METHODS: tuple[str, ...] = ("searched-scratch",)
ALL_METHODS: tuple[str, ...] = METHODS + EXTRA_METHODS
# The names results.json files used for our policy-format rows before the anchors came.
LEGACY_METHOD_NAMES: dict[str, str] = {
    f"{old}{alone}": f"{new}{alone}" for old, new in (("autoaugment", "ours-autoaugment-cifar10"),
                                                      ("randaugment", "ours-randaugment-m0.9"),
                                                      ("trivialaugment", "ours-trivialaugment-narrow"))
    for alone in ("", "-alone")}

CUTOUT_FRACTION = 16 / 32  # Cutout side per image side: 16 px on CIFAR's 32 x 32


def cutout_pixels(image_size: int) -> int:
    """Cutout side in pixels for an image side: 16 on 32, 8 on 16."""
    return max(1, round(CUTOUT_FRACTION * image_size))


def method_recipe(method: str, baseline: Baseline, searched: Policy | None, cutout: int,
                  cutout_with_policies: bool, scratch: Policy | None = None) -> tuple[Policy, int]:
    """The recipe (policy with its baseline) and the Cutout side in pixels of a benchmark method
    (``scratch``: the recipe searched without the weights, for ``searched-scratch``)."""
    identity = load_policy("identity")
    if method == "none":
        return identity, 0
    if method == "baseline":
        return identity.with_baseline(baseline), 0
    if method == "cutout":
        return identity.with_baseline(baseline), cutout
    extra = cutout if cutout_with_policies else 0
    if method == "searched":
        if searched is None:
            raise ValueError("the searched method needs a policy")
        return searched, extra
    if method == "searched-scratch":
        if scratch is None:
            raise ValueError("the searched-scratch method needs the from-scratch search's policy")
        return scratch, extra
    name = method.removesuffix("-alone")
    if name not in STANDARD:
        raise ValueError(f"unknown method {method!r}" + (" (an anchor: see method_augment)" if name in ANCHORS else ""))
    policy = load_policy(STANDARD[name][0])
    return (policy if name != method else policy.with_baseline(baseline)), extra


def anchor_of(method: str) -> str | None:
    """The anchor (``policysearch.benchmark.anchors.ANCHORS``) a method runs, None for a policy method."""
    name = method.removesuffix("-alone")
    return name if name in ANCHORS else None


def method_augment(method: str, baseline: Baseline, searched: Policy | None, cutout: int, cutout_with_policies: bool,
                   *, image_size: int, mean: Sequence[float], scratch: Policy | None = None) -> tuple[Augment, int]:
    """The training ``augment`` and Cutout side of a method: an anchor run by its own library
    (:class:`AnchorAugment`, baseline first unless ``-alone``), or a recipe run by ``BatchPolicyTransform``."""
    anchor = anchor_of(method)
    if anchor is None:
        recipe, cut = method_recipe(method, baseline, searched, cutout, cutout_with_policies, scratch)
        return BatchPolicyTransform(recipe), cut
    alone = method != anchor
    augment = AnchorAugment(ANCHORS[anchor], image_size, mean, None if alone else baseline)
    return augment, cutout if cutout_with_policies else 0


def describe_method(method: str, baseline: Baseline, cutout: int, cutout_with_policies: bool,
                    searched: str = "") -> str:
    """What a method ran, in words and exact calls, for results.md (``searched``: the searched recipe's name)."""
    base = f"baseline ({baseline.describe()})"
    plain = method in ("none", "baseline", "cutout")
    extra = f", then Cutout {cutout} px" if cutout_with_policies and not plain else ""
    if method == "none":
        return "no augmentation"
    if method == "baseline":
        return base
    if method == "cutout":
        return f"{base}, then Cutout {cutout} px"
    if method in ("searched", "searched-scratch"):
        what = "the searched recipe" if method == "searched" else "the recipe searched from scratch"
        return f"{what}{f' `{searched}`' if searched else ''}, applied as the policy says" + extra
    anchor = anchor_of(method)
    if anchor is not None:
        note = f" ({ANCHORS[anchor].note})" if ANCHORS[anchor].note else ""
        call = f"`{ANCHORS[anchor].call}` per PIL image{note}"
        return (call if method != anchor else f"{base}, then {call}") + extra
    name = method.removesuffix("-alone")
    if name in STANDARD:
        string, what = STANDARD[name]
        policy = f"our policy `{string}` ({what})"
        return (policy if method != name else f"{policy}, then {base}") + extra
    return method
