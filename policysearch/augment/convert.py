"""Converters from other projects' policy forms into policysearch policies.

Our ops map a level in [0, 1] into an argument with a higher level always stronger (see ``ops.py``).
The converters choose the level so that the applied argument is the one the source meant:

* Policy strings, ``torchvision:imagenet|cifar10|svhn|randaugment|trivialaugmentwide`` and every other
  one :func:`~policysearch.augment.standard.load_policy` takes (``standard``); torchvision's AutoAugment
  policies are read from the installed torchvision (``torchvision_policies``).
* AutoAugment paper form - ``[[(name, prob, magnitude 0..10), ...], ...]``: magnitude m means m/10 of
  the paper's range (shear 0.3, translate 150/331 of the size, rotate 30 degrees, solarize 256 -> 0,
  posterize 8 -> 4 bits, cutout 60/331 of the size, sample pairing 0.4; an enhance factor 0.1 -> 1.9, which
  passes 1, no change, at magnitude 5).
* Fast AutoAugment list form - ``[[[name, prob, level], ...], ...]`` with FAA's own table, whose levels
  map straight into [low, high] (Solarize level 0 is threshold 0, the strongest; geometric ops take a
  random sign there too, so level l means |2l - 1| of ours).

Each form takes only the ops of its own table (``PAPER_OPS``, ``FAA_OPS``): another op of ours has no
magnitude scale in that form, so it is refused rather than converted to some level.

One approximation is unavoidable and documented: the AutoAugment paper and FAA apply enhance ops
(Brightness, Color, Contrast, Sharpness) as an unsigned factor in [0.1, 1.9]; ours are 1 +- m with a
random sign, so a factor keeps its distance from 1 but not its direction.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from policysearch.augment.policy import Operation, Policy, PolicyError, read_policy_json
from policysearch.augment.standard import is_policy_string, load_policy
from policysearch.augment.torchvision_policies import level_for

# AutoAugment paper ranges, as arguments of our ops, for magnitude m in 0..10 (fraction m / 10).
_PAPER_RANGE: dict[str, float] = {
    "ShearX": 0.3, "ShearY": 0.3, "TranslateX": 150 / 331, "TranslateY": 150 / 331, "Rotate": 30.0,
    "Cutout": 60 / 331, "SamplePairing": 0.4,
}
_ENHANCE = ("Color", "Contrast", "Brightness", "Sharpness")  # the paper's factor 0.1 + 1.8 m / 10, unsigned
# The ops each form has, in its own order; any other op has no magnitude scale there.
PAPER_OPS: tuple[str, ...] = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "AutoContrast", "Invert",
                              "Equalize", "Solarize", "Posterize", "Contrast", "Color", "Brightness", "Sharpness",
                              "Cutout", "SamplePairing")
FAA_OPS: tuple[str, ...] = PAPER_OPS  # FAA's augment_list has the paper's ops, with its own ranges
_UNSCALED = ("AutoContrast", "Invert", "Equalize")  # ops of both forms whose magnitude means nothing


def _paper_level(op: str, magnitude: float) -> float:
    fraction = magnitude / 10.0
    if op == "Solarize":
        return fraction  # threshold 256 * (1 - m/10), as ours
    if op == "Posterize":
        return level_for(op, 8 - round(4 * fraction))
    if op in _ENHANCE:  # the factor's distance from 1, |1.8 m / 10 - 0.9|: magnitude 5 changes nothing
        return level_for(op, 0.9 * abs(2.0 * fraction - 1.0))
    if op in _PAPER_RANGE:
        return level_for(op, fraction * _PAPER_RANGE[op])
    return 0.0  # AutoContrast, Invert, Equalize: no magnitude (_convert_list admits only the form's ops)


def _faa_level(op: str, level: float) -> float:
    """FAA's level (straight into its [low, high] table) as ours."""
    symmetric = {"ShearX", "ShearY", "Rotate", "Contrast", "Color", "Brightness", "Sharpness"}
    if op in symmetric:
        return abs(2.0 * level - 1.0)  # FAA: low + (high - low) * level with low = -high
    if op in ("TranslateX", "TranslateY"):
        return level_for(op, abs(2.0 * level - 1.0) * 0.45)  # FAA shifts up to 0.45 of the size
    if op == "Solarize":
        return 1.0 - level  # FAA threshold 256 * level
    if op == "Posterize":
        return level_for(op, int(4 + 4 * level))
    if op in ("Cutout", "SamplePairing"):
        return level  # FAA: 0..0.2 of the size, 0..0.4 blend weight, as ours
    return 0.0  # AutoContrast, Invert, Equalize: no magnitude (_convert_list admits only the form's ops)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)  # JSON true is not a number


def _convert_list(data: Any, source: str, level_of: Callable[[str, float], float], level_limit: float,
                  what: str, ops: tuple[str, ...], strength: str) -> Policy:
    """The policy of a list of sub-policies of [name, prob, ``strength``] in the form ``what``."""
    if not isinstance(data, Sequence) or isinstance(data, str) or not data:
        raise PolicyError(f"{source}: expected a non-empty list of sub-policies ({what})")
    subs = []
    for i, sub in enumerate(data):
        if not isinstance(sub, Sequence) or isinstance(sub, str) or not sub:
            raise PolicyError(f"{source}: [{i}]: expected a non-empty list of [name, prob, {strength}]")
        steps = []
        for j, step in enumerate(sub):
            place = f"{source}: [{i}][{j}]"
            if not isinstance(step, Sequence) or isinstance(step, str) or len(step) != 3:
                raise PolicyError(f"{place}: expected [name, prob, {strength}], got {step!r}")
            name, prob, magnitude = step
            if not isinstance(name, str) or name not in ops:
                raise PolicyError(f"{place}: unknown op {name!r} for the {what} (its ops: {', '.join(ops)})")
            if not _is_number(magnitude) or not 0 <= magnitude <= level_limit:
                why = "is outside" if _is_number(magnitude) else "is not a number in"
                raise PolicyError(f"{place}: {strength} {magnitude!r} {why} [0, {level_limit:g}]")
            if not _is_number(prob) or not 0 <= prob <= 1:
                why = "is outside" if _is_number(prob) else "is not a number in"
                raise PolicyError(f"{place}: prob {prob!r} {why} [0, 1]")
            steps.append(Operation(name, float(prob), level_of(name, float(magnitude))))
        subs.append(steps)
    return Policy(subs, {"source": source, "converted_from": what})


def from_autoaugment_paper(data: Any, source: str = "autoaugment") -> Policy:
    """AutoAugment paper form: sub-policies of (name, prob, magnitude 0..10). A file whose every magnitude is
    below 1, one of them above 0, is refused: those are Fast AutoAugment's levels, which this form would read
    as tenths."""
    policy = _convert_list(data, source, _paper_level, 10, "AutoAugment paper form", PAPER_OPS, "magnitude")
    scaled = [step[2] for sub in data for step in sub if step[0] not in _UNSCALED]
    if any(0 < m < 1 for m in scaled) and all(m < 1 for m in scaled):
        raise PolicyError(f"{source}: every magnitude is below 1, as Fast AutoAugment's levels are, where the "
                          "AutoAugment paper form counts 0..10; for that form: --from fast-autoaugment (paper "
                          "magnitudes below 1 are written on the 0..10 scale, e.g. 0.5 of Rotate's 30 degrees as 5)")
    return policy


def from_fast_autoaugment(data: Any, source: str = "fast-autoaugment") -> Policy:
    """Fast AutoAugment list form: sub-policies of [name, prob, level in [0, 1]] with FAA's op table."""
    return _convert_list(data, source, _faa_level, 1, "Fast AutoAugment list form", FAA_OPS, "level")


class ConvertUsageError(PolicyError):
    """The file or string is fine, but not for this call: a policy string with a form, a policysearch policy
    file (nothing to convert), a list file without its form. The command line reports it as a usage error."""


CONVERTERS: dict[str, Callable[[Any, str], Policy]] = {
    "autoaugment": from_autoaugment_paper,
    "fast-autoaugment": from_fast_autoaugment,
}


def convert(source: str, form: str | None = None) -> Policy:
    """Convert a policy string (``torchvision:NAME``, ``randaugment:n=2,m=9``, ... every one ``load_policy``
    takes, see ``policysearch.augment.standard``) or, with ``form`` (``autoaugment`` or ``fast-autoaugment``),
    a JSON file in that form, read as ``Policy.load`` reads a policy file."""
    if not source.strip():
        raise ConvertUsageError("the source is empty: give a policy string such as torchvision:cifar10, or another "
                                "project's policy file with --from")
    if form is None and is_policy_string(source):
        return load_policy(source)  # a name it does not know says that no file has that name either
    if form is not None and is_policy_string(source):
        raise ConvertUsageError(f"{source} is a policy string, which convert reads without --from; --from names "
                                "the form of a JSON file from another project")
    if form is not None and form not in CONVERTERS:
        raise PolicyError(f"{source}: unknown form {form!r}: --from {' or --from '.join(CONVERTERS)}")
    data = read_policy_json(source)
    if isinstance(data, dict) and "sub_policies" in data:
        try:
            Policy.load(source)
        except PolicyError as exc:
            detail = str(exc).removeprefix(f"{source}: ")  # the error names the file too
            raise PolicyError(f"{source} is in policysearch's own format but does not load: {detail}") from None
        raise ConvertUsageError(f"{source} is already a policysearch policy file: use it as it is (load_policy, "
                                "PolicyTransform.from_json); convert reads another project's policy")
    if form is None:
        raise ConvertUsageError(f"{source}: say which form the file is in: "
                                f"--from {' or --from '.join(CONVERTERS)}")
    return CONVERTERS[form](data, source)
