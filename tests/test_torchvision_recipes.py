"""torchvision's RandAugment() and TrivialAugmentWide() as policies: every op at every bin, both signs,
applies what torchvision's own code applies, bit for bit, on the PIL path and on the batched path.

torchvision's magnitudes come from its own ``_augmentation_space`` and are applied by its own
``_apply_op``, so these tests compare with the transforms a user runs, not with a re-statement of them.
"""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms.autoaugment import _apply_op

from _images import natural_pil, pil_to_tensor
from policysearch import Policy
from policysearch.augment.ops import OPS, PilContext
from policysearch.augment.policy import PolicyError
from policysearch.augment.standard import (RANDAUGMENT_OPS, load_policy, parse_policy_string, randaugment_tv_policy,
                                           trivialaugment_wide_policy)
from policysearch.augment.transforms import BatchPolicyTransform

# (mode, height, width); 331 is AutoAugment's reference size, where a bin's shift is a whole number of pixels
IMAGES = [("RGB", 32, 32), ("L", 16, 16), ("RGB", 23, 17), ("L", 331, 662)]
BINS = 31


def _ours(img, op: str, level: float, ranges: str, negative: bool):
    spec = OPS[op]
    arg = spec.argument(level, ranges)
    return spec.pil(img, -arg if negative else arg, {}, PilContext())


def _theirs(img, op: str, magnitude: float, negative: bool):
    return _apply_op(img, op, -magnitude if negative else magnitude, InterpolationMode.NEAREST, None)


def _check_op(img, tv_op: str, magnitude: float, signed: bool, step, ranges: str) -> None:
    for negative in (False, True) if signed else (False,):
        expected = np.asarray(_theirs(img, tv_op, magnitude, negative))
        got = np.asarray(_ours(img, step.op, step.level, ranges, negative))
        assert np.array_equal(got, expected), f"{tv_op} magnitude {magnitude} -> {step} ({'-' if negative else '+'})"


@pytest.mark.parametrize("mode,height,width", IMAGES)
def test_trivialaugmentwide_equals_torchvision_for_every_op_and_bin(mode, height, width):
    img = natural_pil(height, width, mode, seed=2)
    space = T.TrivialAugmentWide()._augmentation_space(BINS)
    policy = trivialaugment_wide_policy()
    assert policy.ranges == "wide" and len(policy) == len(space) * BINS
    for i, (tv_op, (magnitudes, signed)) in enumerate(space.items()):
        for k in range(BINS):
            (step,) = policy[i * BINS + k]
            assert step.prob == 1.0
            assert OPS[step.op].signed == signed or not OPS[step.op].has_magnitude
            magnitude = float(magnitudes[k].item()) if magnitudes.ndim > 0 else 0.0
            _check_op(img, tv_op, magnitude, signed, step, "wide")


@pytest.mark.parametrize("mode,height,width", IMAGES)
def test_randaugment_equals_torchvision_for_every_op_and_bin(mode, height, width):
    img = natural_pil(height, width, mode, seed=4)
    space = T.RandAugment()._augmentation_space(BINS, (height, width))
    assert list(space) == list(RANDAUGMENT_OPS)
    for m in range(BINS):
        policy = randaugment_tv_policy(n=1, m=m)
        assert len(policy) == len(space)
        for (tv_op, (magnitudes, signed)), (step,) in zip(space.items(), policy):
            assert step.op == tv_op and step.prob == 1.0
            magnitude = float(magnitudes[m].item()) if magnitudes.ndim > 0 else 0.0
            _check_op(img, tv_op, magnitude, signed, step, "standard")


def test_randaugment_default_is_every_ordered_pair_at_bin_nine():
    policy = load_policy("torchvision:randaugment")
    assert policy.name == "randaugment:n=2,m=9,bins=31" and len(policy) == 14 ** 2
    pairs = Counter(tuple(step.op for step in sub) for sub in policy)
    assert set(pairs) == set(itertools.product(RANDAUGMENT_OPS, repeat=2)) and set(pairs.values()) == {1}
    assert policy == randaugment_tv_policy() == parse_policy_string("randaugment:n=2,m=9,bins=31")
    # bin 9 of 31 is 0.3 of AutoAugment's ranges, not the 0.9 of randaugment:n=2,m=9
    shear = next(step for sub in policy for step in sub if step.op == "ShearX")
    assert shear.level == pytest.approx(0.3, abs=1e-6)


def test_trivialaugmentwide_draws_ops_and_bins_uniformly():
    policy = load_policy("torchvision:trivialaugmentwide")
    assert policy == trivialaugment_wide_policy() == parse_policy_string("trivialaugmentwide")
    ops = Counter(sub[0].op for sub in policy)
    assert len(ops) == 14 and set(ops.values()) == {BINS}
    assert "TranslateXAbs" in ops and "TranslateX" not in ops  # TrivialAugmentWide shifts by pixels


def test_the_strength_dial_scales_levels_and_keeps_the_shape():
    full, half = trivialaugment_wide_policy(), trivialaugment_wide_policy(max_level=0.5)
    assert half.name == "trivialaugmentwide:bins=31,max=0.5" and half.ranges == "wide"
    assert [s[0].op for s in half] == [s[0].op for s in full]
    assert [s[0].level for s in half] == pytest.approx([s[0].level * 0.5 for s in full])
    assert parse_policy_string("trivialaugmentwide:max=0.5") == half


@pytest.mark.parametrize("text,message", [
    ("trivialaugmentwide:max=0", "max=0 is outside (0, 1]"),
    ("trivialaugmentwide:max=1.5", "max=1.5 is outside (0, 1]"),
    ("randaugment:m=31,bins=31", "m=31 is outside 0..30"),
    ("randaugment:m=2.5,bins=31", "m=2.5 is not a whole number"),
    ("torchvision:randaugmnet", "closest"),
])
def test_bad_torchvision_recipe_strings_name_the_bad_part(text, message):
    with pytest.raises(PolicyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_policy_string(text)


def test_wide_policy_file_is_version_3_and_loads_back(tmp_path):
    policy = trivialaugment_wide_policy(max_level=0.5)
    data = policy.to_dict()
    assert data["format_version"] == 3 and data["op_ranges"] == "wide"
    loaded = Policy.load(policy.save(tmp_path / "wide.json"))
    assert loaded == policy and loaded.ranges == "wide"
    standard = randaugment_tv_policy()
    assert "op_ranges" not in standard.to_dict() and standard.to_dict()["format_version"] == 2


def test_op_ranges_in_an_older_format_is_refused():
    data = trivialaugment_wide_policy().to_dict()
    data["format_version"] = 2
    with pytest.raises(PolicyError, match="format_version 2 has no op_ranges"):
        Policy.from_dict(data)
    data["format_version"], data["op_ranges"] = 3, "huge"
    with pytest.raises(PolicyError, match="op_ranges"):
        Policy.from_dict(data)


def test_wide_ranges_survive_every_policy_edit():
    wide = trivialaugment_wide_policy()
    assert wide.scaled(0.5).ranges == "wide"
    assert wide.with_baseline(wide.baseline).ranges == "wide"
    assert wide != Policy(wide.sub_policies)  # the same levels in other ranges are another policy
    with pytest.raises(PolicyError, match="different op ranges"):
        from policysearch.augment.policy import merge_policies
        merge_policies([wide, randaugment_tv_policy()])


@pytest.mark.parametrize("mode,height,width", IMAGES)
def test_the_batched_path_applies_the_wide_arguments(mode, height, width):
    """Each sample of a batch equals the PIL path run through the same plan, in wide ranges."""
    policy = trivialaugment_wide_policy()
    transform = BatchPolicyTransform(policy)
    channels = 1 if mode == "L" else 3
    images = [natural_pil(height, width, mode, seed=s) for s in range(64)]
    batch = torch.stack([pil_to_tensor(img) for img in images])
    plan = transform.sample(batch.shape, generator=torch.Generator().manual_seed(3))
    out = transform.apply(batch, plan)
    assert out.shape == (64, channels, height, width)
    for step in plan.steps:
        for j, i in enumerate(step.index.tolist()):
            images[i] = step.op.pil(images[i], float(step.arg[j]), {}, PilContext(fill=(0,)))
    args = {(step.op.name, abs(float(a))) for step in plan.steps for a in step.arg}
    assert any(name == "Rotate" and a > 30 for name, a in args) or any(name.startswith("Shear") and a > 0.3
                                                                          for name, a in args)
    for i, img in enumerate(images):
        ops = [s.op.name for s in plan.steps if i in s.index.tolist()]
        if "Sharpness" in ops:
            assert (out[i].int() - pil_to_tensor(img).int()).abs().float().mean() <= 1.0
        else:
            assert torch.equal(out[i], pil_to_tensor(img)), (i, ops)


@pytest.mark.parametrize("name", ["cifar10", "svhn"])  # imagenet's policy has no shift
def test_autoaugment_shifts_equal_torchvision_at_its_reference_size(name):
    """Regression: at AutoAugment's 331 px (and multiples) a bin's shift is a whole number of pixels, which the
    float rounding of the level took one pixel short (svhn's TranslateY at bin 6: 99 px, torchvision 100)."""
    from policysearch.augment.torchvision_policies import from_torchvision

    ours = from_torchvision(name)
    theirs = T.AutoAugment(T.AutoAugmentPolicy(name))
    img = natural_pil(331, 662, "L", seed=5)
    space = theirs._augmentation_space(10, (331, 662))
    checked = 0
    for sub, tv_sub in zip(ours, theirs.policies):
        for step, (tv_op, _, bin_) in zip(sub, tv_sub):
            if tv_op.startswith("Translate"):
                _check_op(img, tv_op, float(space[tv_op][0][bin_].item()), True, step, ours.ranges)
                checked += 1
    assert checked > 0
