"""The standard augmentations as policies, and the one-string form that names them.

``randaugment_policy``, ``trivialaugment_policy``, ``autoaugment_policy``, ``randaugment_tv_policy``,
``trivialaugment_wide_policy`` and ``identity_policy`` build the policies people already use; ``ops=``
restricts one to the ops a caller allows (a disallowed AutoAugment step is dropped, so every sub-policy
keeps its chance). Each recipe keeps one meaning everywhere (benchmark, search, strings): RandAugment's M
is on the paper's 0..10 scale, torchvision's ``RandAugment()`` is ``randaugment:n=2,m=9,bins=31``.

Policy strings are ``NAME`` or ``NAME:ARGS`` (names in ``POLICY_NAMES``, the grammar in the README);
:func:`parse_policy_string` gives a policy whose ``name`` is the canonical string, and a bad string is one
PolicyError naming its bad part. :func:`load_policy` takes a ``Policy``, a string or a file, deciding
string or file in this order: a ``Policy`` or ``os.PathLike`` as it is; text with ``/`` or ``\\`` or ending
in ``.json`` is a file; a known policy name is a string (write ``./randaugment`` for such a file); an
existing file is a file; other name-like text is a string (so a typo gets the closest name); else a file.
"""

from __future__ import annotations

import difflib
import itertools
import math
import numbers
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Callable, Iterable

from policysearch.augment.ops import OP_NAMES
from policysearch.augment.policy import Operation, Policy, PolicyError, read_policy_json
from policysearch.augment.torchvision_policies import from_torchvision, torchvision_op, tv_level

__all__ = ["AUTOAUGMENT_VARIANTS", "POLICY_NAMES", "RANDAUGMENT_MAGNITUDE_SCALE", "RANDAUGMENT_MAX_N",
           "RANDAUGMENT_OPS", "TORCHVISION_TRANSFORMS", "TRIVIALAUGMENT_BINS", "autoaugment_policy",
           "identity_policy", "is_policy_string", "load_policy", "load_policy_file", "parse_policy_string",
           "randaugment_policy", "randaugment_tv_policy", "trivialaugment_policy", "trivialaugment_wide_policy"]

# RandAugment's and TrivialAugment's op list (torchvision's), in our op names.
RANDAUGMENT_OPS: tuple[str, ...] = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate",
                                    "Brightness", "Color", "Contrast", "Sharpness", "Posterize", "Solarize",
                                    "AutoContrast", "Equalize")
RANDAUGMENT_MAGNITUDE_SCALE = 10  # M runs 0..10; level = M / 10
RANDAUGMENT_MAX_N = 4  # len(ops) ** n sub-policies: 14**4 = 38,416 is still quick to build, 14**5 is not
TRIVIALAUGMENT_BINS = 31  # torchvision's bin count
TRIVIALAUGMENT_MAX_BINS = 256
AUTOAUGMENT_VARIANTS: tuple[str, ...] = ("cifar10", "imagenet", "svhn")  # torchvision_policies.TORCHVISION_POLICIES
# torchvision's transforms with their default arguments, as exact policies (``torchvision:NAME``).
TORCHVISION_TRANSFORMS: dict[str, Callable[[], Policy]] = {
    "randaugment": lambda: randaugment_tv_policy(),
    "trivialaugmentwide": lambda: trivialaugment_wide_policy(),
}


def _fail(where: str, problem: str) -> PolicyError:
    """A one-line error about ``where``; a word over 60 characters is shortened to its start and length, so a
    pasted value of thousands of digits gives a line, not pages."""
    return PolicyError(f"{_shortened(where)}: {_shortened(problem)}")


def _shortened(text: str) -> str:
    """``text`` with every word over 60 characters cut to its start and its length."""
    return re.sub(r"\S{61,}", lambda word: f"{word[0][:40]}...({len(word[0])} characters)", text)


def _closest(word: str, candidates: Iterable[str]) -> str:
    candidates = list(candidates)
    close = difflib.get_close_matches(word.lower(), [c.lower() for c in candidates], n=1, cutoff=0.5)
    lowered = {c.lower(): c for c in candidates}
    if close:
        return f" (closest: {', '.join(lowered[c] for c in close)})"
    return f" (known: {', '.join(candidates)})"


def _allowed(ops: Iterable[str] | None, standard: tuple[str, ...], what: str, where: str) -> tuple[str, ...]:
    """The standard ops that ``ops`` allows, in the standard order; all of them for None."""
    if ops is None:
        return standard
    if isinstance(ops, str):
        raise _fail(where, f"ops: expected a list of op names, got the string {ops!r}")
    names = list(ops)
    for name in names:
        if not isinstance(name, str) or name not in OP_NAMES:
            hint = _closest(name, OP_NAMES) if isinstance(name, str) else ""
            raise _fail(where, f"ops: unknown op {name!r}{hint}")
    if not names:
        raise _fail(where, f"ops: the restriction is empty; allow some of {what}'s ops ({', '.join(standard)})")
    allowed = set(names)
    kept = tuple(op for op in standard if op in allowed)
    if not kept:
        raise _fail(where, f"ops: {', '.join(names)} leaves none of {what}'s ops ({', '.join(standard)})")
    return kept


def _restriction_note(kept: tuple[str, ...], standard: tuple[str, ...]) -> str:
    return "" if kept == standard else f" ({len(kept)} of {len(standard)} ops)"


def _whole(value: object, key: str, low: int, high: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _fail(where, f"{key}={value!r} is not a whole number")
    if not low <= value <= high:
        raise _fail(where, f"{key}={value} is outside {low}..{high}")
    return int(value)


# ---------------------------------------------------------------------------------------- policies


def identity_policy() -> Policy:
    """No augmentation: one sub-policy that leaves every image as it is."""
    return Policy([[Operation("Identity", 1.0, 0.0)]], {"source": "identity: no augmentation"}, name="identity")


def randaugment_policy(n: int = 2, m: float = 9, ops: Iterable[str] | None = None) -> Policy:
    """RandAugment(N, M): every ordered N-tuple of its ops (with repeats), prob 1, level M/10."""
    return _randaugment(n, m, ops, "randaugment_policy")


def _randaugment(n: object, m: object, ops: Iterable[str] | None, where: str) -> Policy:
    n = _whole(n, "n", 1, RANDAUGMENT_MAX_N, where)
    scale = RANDAUGMENT_MAGNITUDE_SCALE
    if isinstance(m, bool) or not isinstance(m, numbers.Real):
        raise _fail(where, f"m={m!r} is not a number")
    if not 0 <= m <= scale:  # also rejects nan
        raise _fail(where, f"m={m:g} is outside 0..{scale}")
    kept = _allowed(ops, RANDAUGMENT_OPS, "RandAugment", where)
    level = float(m) / scale
    subs = [[Operation(op, 1.0, level) for op in tup] for tup in itertools.product(kept, repeat=n)]
    metadata = {"source": f"RandAugment N={n} M={m:g} (0..{scale} scale) -> level {level:g}"}
    if kept != RANDAUGMENT_OPS:
        metadata["ops"] = list(kept)
    return Policy(subs, metadata, name=f"randaugment:n={n},m={m:g}" + _restriction_note(kept, RANDAUGMENT_OPS))


def trivialaugment_policy(bins: int = TRIVIALAUGMENT_BINS, ops: Iterable[str] | None = None) -> Policy:
    """TrivialAugment: one op at prob 1 per sub-policy, for every (op, level bin) pair."""
    return _trivialaugment(bins, ops, "trivialaugment_policy")


def _trivialaugment(bins: object, ops: Iterable[str] | None, where: str) -> Policy:
    bins = _whole(bins, "bins", 2, TRIVIALAUGMENT_MAX_BINS, where)
    kept = _allowed(ops, RANDAUGMENT_OPS, "TrivialAugment", where)
    levels = [k / (bins - 1) for k in range(bins)]
    subs = [[Operation(op, 1.0, level)] for op in kept for level in levels]
    metadata = {"source": f"TrivialAugment: uniform op, uniform level over {bins} bins"}
    if kept != RANDAUGMENT_OPS:
        metadata["ops"] = list(kept)
    return Policy(subs, metadata, name=f"trivialaugment:bins={bins}" + _restriction_note(kept, RANDAUGMENT_OPS))


def randaugment_tv_policy(n: int = 2, m: int = 9, bins: int = TRIVIALAUGMENT_BINS,
                          ops: Iterable[str] | None = None) -> Policy:
    """torchvision's ``RandAugment(num_ops=n, magnitude=m, num_magnitude_bins=bins)`` exactly: every ordered
    n-tuple of its ops, prob 1, each op at the level whose argument is torchvision's bin ``m`` of ``bins``."""
    return _randaugment_tv(n, m, bins, ops, "randaugment_tv_policy")


def _randaugment_tv(n: object, m: object, bins: object, ops: Iterable[str] | None, where: str) -> Policy:
    n = _whole(n, "n", 1, RANDAUGMENT_MAX_N, where)
    bins = _whole(bins, "bins", 2, TRIVIALAUGMENT_MAX_BINS, where)
    m = _whole(m, "m", 0, bins - 1, where)
    kept = _allowed(ops, RANDAUGMENT_OPS, "RandAugment", where)
    steps = [Operation(op, 1.0, tv_level(op, m, bins)) for op in kept]
    subs = [list(tup) for tup in itertools.product(steps, repeat=n)]
    metadata = {"source": f"torchvision RandAugment(num_ops={n}, magnitude={m}, num_magnitude_bins={bins})"}
    if kept != RANDAUGMENT_OPS:
        metadata["ops"] = list(kept)
    return Policy(subs, metadata, name=f"randaugment:n={n},m={m},bins={bins}" + _restriction_note(kept, RANDAUGMENT_OPS))


def trivialaugment_wide_policy(bins: int = TRIVIALAUGMENT_BINS, max_level: float = 1.0,
                               ops: Iterable[str] | None = None) -> Policy:
    """torchvision's ``TrivialAugmentWide(num_magnitude_bins=bins)`` exactly (wide op ranges, shifts in
    pixels): one op at prob 1 per sub-policy, for every (op, bin) pair. ``max_level`` below 1 is the
    strength dial: every level scaled by it, a gentler recipe of the same shape."""
    return _trivialaugment_wide(bins, max_level, ops, "trivialaugment_wide_policy")


def _trivialaugment_wide(bins: object, max_level: object, ops: Iterable[str] | None, where: str) -> Policy:
    bins = _whole(bins, "bins", 2, TRIVIALAUGMENT_MAX_BINS, where)
    if isinstance(max_level, bool) or not isinstance(max_level, numbers.Real):
        raise _fail(where, f"max={max_level!r} is not a number")
    if not 0 < max_level <= 1:  # also rejects nan
        raise _fail(where, f"max={max_level:g} is outside (0, 1]")
    kept = _allowed(ops, RANDAUGMENT_OPS, "TrivialAugmentWide", where)
    subs = [[Operation(torchvision_op(op, "wide"), 1.0, tv_level(op, k, bins, "wide") * float(max_level))]
            for op in kept for k in range(bins)]
    cap = "" if max_level == 1 else f", levels scaled by {max_level:g}"
    metadata = {"source": f"torchvision TrivialAugmentWide(num_magnitude_bins={bins}){cap}"}
    if kept != RANDAUGMENT_OPS:
        metadata["ops"] = list(kept)
    name = f"trivialaugmentwide:bins={bins}" + ("" if max_level == 1 else f",max={max_level:g}")
    return Policy(subs, metadata, name=name + _restriction_note(kept, RANDAUGMENT_OPS), ranges="wide")


def autoaugment_policy(variant: str, ops: Iterable[str] | None = None) -> Policy:
    """torchvision's AutoAugment policy ``cifar10``, ``imagenet`` or ``svhn``, with its arguments kept."""
    return _autoaugment(variant, ops, "autoaugment_policy")


def _autoaugment(variant: object, ops: Iterable[str] | None, where: str) -> Policy:
    key = variant.lower() if isinstance(variant, str) else variant
    if key not in AUTOAUGMENT_VARIANTS:
        hint = _closest(variant, AUTOAUGMENT_VARIANTS) if isinstance(variant, str) else ""
        raise _fail(where, f"unknown AutoAugment variant {variant!r}{hint or ' (known: ' + ', '.join(AUTOAUGMENT_VARIANTS) + ')'}")
    policy = from_torchvision(key)
    standard = tuple(sorted(policy.ops(), key=OP_NAMES.index))
    if ops is None:
        policy.name = f"autoaugment:{key}"
        return policy
    kept = _allowed(ops, standard, f"AutoAugment {key}", where)
    subs = [[step for step in sub if step.op in kept] or [Operation("Identity", 1.0, 0.0)] for sub in policy]
    metadata = {**policy.metadata, "ops": list(kept)}
    return Policy(subs, metadata, name=f"autoaugment:{key}" + _restriction_note(kept, standard))


# ------------------------------------------------------------------------------------------ strings


def _number(key: str, text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _fail(where, f"{key}={text!r} is not a number") from None
    if not math.isfinite(value):
        raise _fail(where, f"{key}={text!r} is not a number")
    return value


def _whole_text(key: str, text: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _fail(where, f"{key}={text!r} is not a whole number") from None


def _keyed(args: list[str], keys: dict[str, Callable[[str, str, str], object]], name: str,
           where: str) -> dict[str, object]:
    """``key=value`` arguments, each converted by ``keys[key](key, value, where)``."""
    out: dict[str, object] = {}
    for part in args:
        key, eq, value = (s.strip() for s in part.partition("="))
        key = key.lower()
        if not eq:
            raise _fail(where, f"{part!r} is not key=value ({name} takes {', '.join(k + '=' for k in keys)})")
        if key not in keys:
            raise _fail(where, f"unknown key {key!r} for {name}{_closest(key, keys)}")
        if key in out:
            raise _fail(where, f"{key} is given twice")
        if not value:
            raise _fail(where, f"{key}= has no value")
        out[key] = keys[key](key, value, where)
    return out


def _parse_randaugment(args: list[str], where: str) -> Policy:
    values = _keyed(args, {"n": _whole_text, "m": _number, "bins": _whole_text}, "randaugment", where)
    if "bins" in values:  # torchvision's meaning: M is bin M of B
        m = values.get("m", 9)
        if m != int(m):
            raise _fail(where, f"m={m:g} is not a whole number (with bins=, M is a bin)")
        return _randaugment_tv(values.get("n", 2), int(m), values["bins"], None, where)
    return _randaugment(values.get("n", 2), values.get("m", 9), None, where)


def _parse_trivialaugment_wide(args: list[str], where: str) -> Policy:
    values = _keyed(args, {"bins": _whole_text, "max": _number}, "trivialaugmentwide", where)
    return _trivialaugment_wide(values.get("bins", TRIVIALAUGMENT_BINS), values.get("max", 1.0), None, where)


def _parse_trivialaugment(args: list[str], where: str) -> Policy:
    values = _keyed(args, {"bins": _whole_text}, "trivialaugment", where)
    return _trivialaugment(values.get("bins", TRIVIALAUGMENT_BINS), None, where)


def _parse_torchvision(args: list[str], where: str) -> Policy:
    """``torchvision:NAME``: an AutoAugment variant, or torchvision's RandAugment() or TrivialAugmentWide()
    with their default arguments."""
    if len(args) == 1 and args[0].lower() in TORCHVISION_TRANSFORMS:
        return TORCHVISION_TRANSFORMS[args[0].lower()]()
    known = AUTOAUGMENT_VARIANTS + tuple(TORCHVISION_TRANSFORMS)
    if len(args) == 1 and args[0].lower() not in known:
        raise _fail(where, f"unknown torchvision recipe {args[0]!r}{_closest(args[0], known)}")
    return _parse_autoaugment(args, where)


def _parse_autoaugment(args: list[str], where: str) -> Policy:
    choices = ", ".join(f"autoaugment:{v}" for v in AUTOAUGMENT_VARIANTS)
    if not args:
        raise _fail(where, f"AutoAugment needs a variant: {choices}")
    if len(args) > 1:
        raise _fail(where, f"AutoAugment takes one variant, got {len(args)} ({', '.join(args)})")
    return _autoaugment(args[0], None, where)


def _parse_identity(args: list[str], where: str) -> Policy:
    if args:
        raise _fail(where, f"identity takes no arguments, got {', '.join(args)!r}")
    return identity_policy()


_PARSERS: dict[str, Callable[[list[str], str], Policy]] = {
    "randaugment": _parse_randaugment,
    "trivialaugment": _parse_trivialaugment,
    "trivialaugmentwide": _parse_trivialaugment_wide,
    "autoaugment": _parse_autoaugment,
    "torchvision": _parse_torchvision,  # the converter's spelling, torchvision:cifar10, torchvision:randaugment
    "identity": _parse_identity,
    "none": _parse_identity,
}
POLICY_NAMES: tuple[str, ...] = tuple(_PARSERS)
_NAME_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*(:.*)?", re.DOTALL)


def parse_policy_string(text: str) -> Policy:
    """The policy a string such as ``randaugment:n=2,m=9`` names (see the module docstring)."""
    if not isinstance(text, str):
        raise PolicyError(f"a policy string must be a str, got {type(text).__name__}")
    where = text.strip() or repr(text)
    name, colon, rest = (s.strip() for s in text.strip().partition(":"))
    name = name.lower()
    if name not in _PARSERS:
        if not name:
            raise _fail(where, f"no policy name (known: {', '.join(POLICY_NAMES)})")
        raise _fail(where, f"unknown policy name {name!r}{_closest(name, POLICY_NAMES)}")
    if colon and not rest:
        raise _fail(where, "nothing after ':'")
    args = [part.strip() for part in rest.split(",")] if rest else []
    if any(not part for part in args):
        raise _fail(where, "an empty argument between commas")
    return _PARSERS[name](args, where)


def load_policy_file(path: str | os.PathLike[str]) -> Policy:
    """A policy JSON file read as :meth:`Policy.load` does, whose "no such file" says so when ``path`` is a
    policy string that ``PolicyTransform(...)`` or :func:`load_policy` would take (and only then)."""
    try:
        return Policy.from_dict(read_policy_json(path), source=os.fspath(path))
    except PolicyError:
        if isinstance(path, str) and not _is_file(path):
            try:
                parse_policy_string(path)
            except PolicyError:
                pass
            else:
                raise PolicyError(f"{path!r} is a policy string, not a file; PolicyTransform({path!r}) or "
                                  f"load_policy({path!r}) takes it") from None
        raise


def is_policy_string(text: str) -> bool:
    """Whether :func:`load_policy` reads ``text`` as a policy string rather than a file (rules 2-6)."""
    if "/" in text or "\\" in text or text.lower().endswith(".json"):
        return False
    if text.strip().partition(":")[0].strip().lower() in _PARSERS:
        return True
    if _is_file(text):
        return False
    return _NAME_LIKE.fullmatch(text.strip()) is not None


def _is_file(text: str) -> bool:
    """Whether ``text`` names an existing path (a name too long for one, or with a NUL byte, names none)."""
    try:
        return Path(text).exists()
    except (OSError, ValueError):
        return False


def load_policy(source: Policy | str | os.PathLike[str]) -> Policy:
    """A Policy from a Policy, a policy string or a policy JSON file (the rules in the module docstring)."""
    if isinstance(source, Policy):
        return source
    if isinstance(source, str) and not source.strip():
        raise PolicyError("empty policy: give a policy file or a policy string such as randaugment:n=2,m=9")
    if isinstance(source, str) and source.lstrip().startswith("{") and not _is_file(source):
        raise PolicyError("this is the JSON text of a policy, not a file or a policy string: give the file's path, "
                          "or Policy.from_dict(json.loads(text))")
    if isinstance(source, str) and is_policy_string(source):
        try:
            return parse_policy_string(source)
        except PolicyError as exc:
            if source.strip().partition(":")[0].strip().lower() in _PARSERS:
                raise
            raise PolicyError(f"{exc}; and there is no file {_shortened(repr(source))}") from None
    if isinstance(source, (str, os.PathLike)):  # read here: Policy.load's hint names this function
        return Policy.from_dict(read_policy_json(source), source=os.fspath(source))
    hint = ("read a policy document with Policy.from_dict(document)" if isinstance(source, Mapping) else
            "build a Policy(sub_policies) from a list")
    raise TypeError(f"expected a Policy, a policy string or a policy file path, got {type(source).__name__}; {hint}")
