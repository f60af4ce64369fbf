"""torchvision's augmentations in our terms: its magnitude bins as our levels, its AutoAugment policies
as ``Policy``.

Bin ``i`` of ``bins`` becomes the level whose argument equals torchvision's (shear, rotation and enhance
factors 1 +- m keep torchvision's random sign, as our ops are signed); translations use torchvision's
150/331 of the size, truncated to whole pixels as torchvision does. ``standard`` builds RandAugment and
TrivialAugmentWide from these, ``convert`` reads the ``torchvision:NAME`` form with them.
"""

from __future__ import annotations

import torch

from policysearch.augment.ops import OPS
from policysearch.augment.policy import Operation, Policy, PolicyError

TORCHVISION_POLICIES = ("imagenet", "cifar10", "svhn")
_TV_BINS = 10

# torchvision's magnitude ranges per space: (our op, top of the range), the range starting at 0.
# "standard" is AutoAugment's and RandAugment's (translations as a fraction of the size, which torchvision
# multiplies by the size), "wide" TrivialAugmentWide's (translations in pixels, whatever the size).
_TV_RANGES: dict[str, dict[str, tuple[str, float]]] = {
    "standard": {"ShearX": ("ShearX", 0.3), "ShearY": ("ShearY", 0.3),
                 "TranslateX": ("TranslateX", 150.0 / 331.0), "TranslateY": ("TranslateY", 150.0 / 331.0),
                 "Rotate": ("Rotate", 30.0), "Brightness": ("Brightness", 0.9), "Color": ("Color", 0.9),
                 "Contrast": ("Contrast", 0.9), "Sharpness": ("Sharpness", 0.9)},
    "wide": {"ShearX": ("ShearX", 0.99), "ShearY": ("ShearY", 0.99),
             "TranslateX": ("TranslateXAbs", 32.0), "TranslateY": ("TranslateYAbs", 32.0),
             "Rotate": ("Rotate", 135.0), "Brightness": ("Brightness", 0.99), "Color": ("Color", 0.99),
             "Contrast": ("Contrast", 0.99), "Sharpness": ("Sharpness", 0.99)},
}
_TV_POSTERIZE_DROP = {"standard": 4, "wide": 6}  # bits dropped at the top bin


def torchvision_op(op: str, ranges: str = "standard") -> str:
    """Our op for torchvision's op name in a space: TrivialAugmentWide's translations are in pixels."""
    entry = _TV_RANGES[ranges].get(op)
    return op if entry is None else entry[0]


def tv_magnitude(op: str, bin_index: int, bins: int = _TV_BINS, ranges: str = "standard") -> float:
    """torchvision's magnitude of bin ``bin_index`` of ``bins`` for its op ``op``, computed as torchvision
    computes it (float32 bins), in the space of AutoAugment/RandAugment ("standard") or TrivialAugmentWide
    ("wide"); translations as a fraction of the size in "standard", in pixels in "wide"."""
    if op in _TV_RANGES[ranges]:
        values = torch.linspace(0.0, _TV_RANGES[ranges][op][1], bins, device="cpu")
    elif op == "Posterize":
        values = 8 - (torch.arange(bins, device="cpu") / ((bins - 1) / _TV_POSTERIZE_DROP[ranges])).round().int()
    elif op == "Solarize":
        values = torch.linspace(255.0, 0.0, bins, device="cpu")
    else:
        raise PolicyError(f"torchvision has no magnitude for {op}")
    return float(values[bin_index].item())


def _tv_magnitude(op: str, bin_index: int) -> float:
    """torchvision AutoAugment's magnitude for bin ``bin_index`` of 10 (shared-size independent form)."""
    return tv_magnitude(op, bin_index)


def level_for(op: str, argument: float, ranges: str = "standard") -> float:
    """The level in [0, 1] whose (unsigned) argument for ``op`` in the named op ranges is ``argument``."""
    spec = OPS[op]
    if not spec.has_magnitude:
        return 0.0
    low, high = spec.bounds(ranges)
    level = (argument - low) / (high - low)
    if not -1e-6 <= level <= 1 + 1e-6:  # float32 bins may overshoot by an ulp
        raise PolicyError(f"{op}: argument {argument} is outside our range [{low}, {high}]")
    return min(max(level, 0.0), 1.0)


def tv_level(op: str, bin_index: int, bins: int, ranges: str = "standard") -> float:
    """Our level for torchvision's op ``op`` (its name) at bin ``bin_index`` of ``bins`` in a space, so that
    the applied argument is torchvision's; 0 for ops without a magnitude."""
    ours = torchvision_op(op, ranges)
    if not OPS[ours].has_magnitude:
        return 0.0
    return level_for(ours, tv_magnitude(op, bin_index, bins, ranges), ranges)


def from_torchvision(name: str) -> Policy:
    """torchvision's AutoAugment policy ``imagenet``, ``cifar10`` or ``svhn`` with the same arguments."""
    import torchvision.transforms as T

    key = name.lower().removeprefix("torchvision:")
    if key not in TORCHVISION_POLICIES:
        raise PolicyError(f"unknown torchvision policy {name!r}; choose one of {', '.join(TORCHVISION_POLICIES)}")
    source = T.AutoAugment(T.AutoAugmentPolicy(key)).policies
    subs = []
    for sub in source:
        steps = []
        for op, prob, bin_index in sub:
            level = 0.0 if bin_index is None else level_for(op, _tv_magnitude(op, bin_index))
            steps.append(Operation(op, float(prob), level))
        subs.append(steps)
    return Policy(subs, {"source": f"torchvision:{key}", "converted_from": "torchvision AutoAugment"},
                  name=f"torchvision-{key}")
