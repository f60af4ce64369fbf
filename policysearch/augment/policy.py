"""The policy model and its versioned JSON file format.

A Policy is an ordered list of sub-policies; a sub-policy is a list of Operations (op, prob, level).
Applying a policy picks one sub-policy per image uniformly at random and applies each of its ops with
its probability, then the policy's ``Baseline`` (zero-pad-and-crop and horizontal flip; none by default),
so one file carries the whole training augmentation a search selected. Policies are plain data: loading validates against the JSON Schema shipped in the
package and never executes anything from the file; saving is atomic.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import difflib
import importlib.metadata
import json
import math
import numbers
import os
import platform
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import jsonschema
import numpy as np

from policysearch import __version__
from policysearch.atomic import json_numbers, write_text_atomic
from policysearch.augment.ops import OP_NAMES, OP_RANGES
from policysearch.wording import short_repr

FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)  # version 1 files have no baseline block, versions 1-2 no op_ranges
# Added in version 3: the op ranges a policy names, and the ops that shift by pixels. A policy without
# them is written as version 2, so that older readers still read it.
_VERSION_3_OPS = frozenset({"TranslateXAbs", "TranslateYAbs"})
MAX_FILE_BYTES = 1 << 20
"""Largest policy file ``Policy.load`` reads (about 17,000 operations); validation takes seconds near it."""
MAX_DEPTH = 64
"""Deepest nesting of lists and objects a policy document may have (a valid one needs 4 plus its metadata)."""
MAX_VALUES = 250_000
"""Most values (objects, lists and scalars) in a policy document: a policy of 17,000 operations holds 70,000."""


class PolicyError(ValueError):
    """A policy or policy file is invalid; the message names the place, e.g. ``sub_policies[3][1].prob``."""


@dataclass(frozen=True)
class Operation:
    """One step of a sub-policy: apply ``op`` with probability ``prob`` at magnitude ``level`` in [0, 1]."""

    op: str
    prob: float
    level: float

    def __post_init__(self) -> None:
        for key in ("prob", "level"):  # a numpy number or a Decimal as a float, so that the policy saves as JSON
            value = getattr(self, key)
            if (isinstance(value, (numbers.Real, decimal.Decimal)) and not isinstance(value, bool)
                    and type(value) not in (int, float)):  # a signalling NaN refuses float(): NaN, refused later
                snan = isinstance(value, decimal.Decimal) and value.is_snan()
                object.__setattr__(self, key, math.nan if snan else float(value))

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "prob": self.prob, "level": self.level}


SubPolicy = tuple[Operation, ...]


@dataclass(frozen=True)
class Baseline:
    """The augmentation applied after the policy: random zero-pad-and-crop by ``pad_crop`` pixels (0: off)
    and a horizontal flip with probability 1/2 when ``hflip``."""

    pad_crop: int = 0
    hflip: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.pad_crop, numbers.Integral) and not isinstance(self.pad_crop, bool):
            object.__setattr__(self, "pad_crop", int(self.pad_crop))  # a numpy integer as an int
        if isinstance(self.pad_crop, bool) or not isinstance(self.pad_crop, int) or self.pad_crop < 0:
            raise PolicyError(f"baseline.pad_crop: expected a whole number of pixels >= 0, got {self.pad_crop!r}")
        if isinstance(self.hflip, np.bool_):
            object.__setattr__(self, "hflip", bool(self.hflip))  # a numpy bool (a mask's element) as a bool
        if not isinstance(self.hflip, bool):
            raise PolicyError(f"baseline.hflip: expected true or false, got {self.hflip!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"pad_crop": self.pad_crop, "hflip": self.hflip}

    def describe(self) -> str:
        crop = f"pad-and-crop {self.pad_crop} px" if self.pad_crop else "no crop"
        return f"{crop}, {'horizontal flip' if self.hflip else 'no flip'}"


@lru_cache(maxsize=1)
def policy_schema() -> dict[str, Any]:
    """The JSON Schema of the policy file format (shipped inside the package)."""
    text = resources.files("policysearch.augment").joinpath("schema/policy.schema.json").read_text(encoding="utf-8")
    return json.loads(text)




def _place(path: Sequence[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _is_whole(value: Any) -> bool:
    """An integer or a float without a fraction (4.0); JSON true is not a number."""
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())


def _as_json(value: Any) -> str:
    """A value as the file wrote it, with its JSON kind where the text alone could mislead ('2' vs 2)."""
    if isinstance(value, str):
        return f"the string {short_repr(value)}"
    return json.dumps(value) if value is None or isinstance(value, (bool, int, float)) else short_repr(value)


def _sub_policy_lists(value: Any) -> bool:
    """A non-empty list of lists: how AutoAugment's and Fast AutoAugment's code write a policy."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, list) for v in value)


def _describe(error: jsonschema.ValidationError) -> str:
    """One line that names the place and says what is wrong, from a JSON Schema error."""
    place = _place(error.absolute_path)
    value = error.instance
    if error.validator in ("minimum", "maximum"):
        bounds = f"[{error.schema.get('minimum', 0)}, {error.schema.get('maximum', 1)}]"
        return f"{place}: {short_repr(value)} is outside {bounds}"
    if error.validator == "enum" and place == "format_version" and not _is_whole(value):
        return f"{place}: expected a whole number such as {READABLE_VERSIONS[-1]}, got {_as_json(value)}"
    if error.validator == "enum" and place == "format_version":
        versions = ", ".join(map(str, READABLE_VERSIONS[:-1])) + f" and {READABLE_VERSIONS[-1]}"
        return f"{place}: unsupported format_version {short_repr(value)} (this policysearch reads versions {versions})"
    if error.validator == "enum" and place == "op_ranges":
        return f"{place}: unknown op ranges {short_repr(value)} (known: {', '.join(error.validator_value)})"
    if error.validator == "enum" and place.endswith(".op"):
        close = difflib.get_close_matches(value, OP_NAMES, n=3, cutoff=0.5) if isinstance(value, str) else []
        hint = f" (closest: {', '.join(close)})" if close else f" (known: {', '.join(OP_NAMES)})"
        return f"{place}: unknown op {short_repr(value)}{hint}"
    if error.validator == "required":
        missing = [key for key in error.validator_value if key not in value]
        return f"{place}: missing key {missing[0]!r}"
    if error.validator == "additionalProperties":
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(key for key in value if key not in allowed)
        return f"{place}: unknown key {short_repr(extra[0])} (allowed: {', '.join(sorted(allowed))})"
    if error.validator == "minItems":
        what = "sub-policy" if place == "sub_policies" else "operation"
        return f"{place}: needs at least one {what}"
    if error.validator == "type" and not error.absolute_path and _sub_policy_lists(value):
        return (f"{place}: expected object, got list {short_repr(value)}: a list of sub-policies, as AutoAugment's "
                "and Fast AutoAugment's code write them; convert it with policysearch convert FILE --from "
                "fast-autoaugment -o OUT (or --from autoaugment)")
    if error.validator == "type":
        got = "null" if value is None else f"{type(value).__name__} {short_repr(value)}"  # JSON's word for it
        return f"{place}: expected {error.validator_value}, got {got}"
    if error.validator == "const":
        return f"{place}: unsupported format_version {short_repr(value)} (this policysearch reads {READABLE_VERSIONS})"
    return f"{place}: {short_repr(error.message)}"


def _check_json_data(data: Any, source: str = "policy", written: bool = False) -> None:
    """Raise PolicyError unless ``data`` is plain JSON data (dict with string keys, list, str, int, float,
    bool, None) nested at most ``MAX_DEPTH`` deep with at most ``MAX_VALUES`` values. With ``written``, the
    data is what ``save`` writes: a tuple is an array (json writes it as one), and NaN and infinities are
    refused (strict JSON has neither). Walks iteratively, so any depth, a cycle or a list shared a billion
    times over is safe to check."""
    # Each entry: (value, depth, where) with where = (parent's where, key) or None at the top level; the
    # place is spelled out only for a message.
    stack: list[tuple[Any, int, Any]] = [(data, 0, None)]
    seen = 0

    def place(where: Any, limit: int | None = None) -> str:
        parts = []
        while where is not None:
            where, key = where
            parts.append(key)
        parts.reverse()
        return _place(parts) if limit is None else f"{_place(parts[:limit])}..."

    while stack:
        value, depth, where = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise PolicyError(f"{source}: more than {MAX_VALUES} values, too large for a policy")
        if depth > MAX_DEPTH:
            raise PolicyError(f"{source}: {place(where, 3)}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise PolicyError(f"{source}: {place(where)}: keys must be strings, got {type(key).__name__} "
                                      f"{short_repr(key)}")
                stack.append((item, depth + 1, (where, key)))
        elif isinstance(value, list) or written and isinstance(value, tuple):
            stack.extend((item, depth + 1, (where, i)) for i, item in enumerate(value))
        elif value is not None and not isinstance(value, (str, int, float)):  # bool is an int
            raise PolicyError(f"{source}: {place(where)}: {type(value).__name__} is not a JSON value")
        elif written and isinstance(value, float) and not math.isfinite(value):
            raise PolicyError(f"{source}: {place(where)}: {value!r} is not a JSON number (JSON has no NaN or infinity)")


def _check_metadata(metadata: Any, source: str) -> None:
    """Raise PolicyError unless ``metadata`` can be written as strict JSON; the place reads ``metadata.KEY``."""
    _check_json_data({"metadata": metadata}, source, written=True)


def read_policy_json(path: str | os.PathLike[str]) -> Any:
    """The JSON document in the file ``path``, read with a policy file's guards: a regular file (a pipe or a
    device is refused before it is opened), at most ``MAX_FILE_BYTES``, UTF-8, no key twice in an object, at most ``MAX_DEPTH`` deep and
    ``MAX_VALUES`` values. Anything wrong is one PolicyError naming the file as given."""
    shown = os.fspath(path)
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):  # a pipe's open() waits
        raise PolicyError(f"{shown}: not a regular file (a pipe or a device); give a policy JSON file")
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)  # never more: a huge file is refused
    except FileNotFoundError:
        stdin = "; standard input is not read, give the policy file's path" if shown == "-" else ""
        raise PolicyError(f"{shown}: no such file{stdin}") from None
    except IsADirectoryError:
        inside = Path(path) / "policy.json"
        hint = f"; a search's policy is {inside}" if inside.is_file() else ""
        raise PolicyError(f"{short_repr(shown)}: a folder, not a policy file{hint}") from None
    except OSError as exc:
        raise PolicyError(f"{short_repr(shown)}: cannot read ({exc.strerror or exc})") from None
    except ValueError:  # open() refuses a name with a NUL byte
        raise PolicyError(f"{short_repr(shown)}: not a file name (it holds a NUL byte)") from None
    if len(raw) > MAX_FILE_BYTES:
        raise PolicyError(f"{shown}: larger than {MAX_FILE_BYTES} bytes, too large for a policy file")
    try:
        text = raw.decode("utf-8-sig")  # a leading byte-order mark is allowed, as JSON parsers may
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{shown}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None
    if not text.strip():
        raise PolicyError(f"{shown}: the file is empty (no JSON in it)")
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise PolicyError(f"{shown}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except _DuplicateKey as exc:
        raise PolicyError(f"{shown}: not valid JSON: key {short_repr(exc.args[0])} appears twice in one object") from None
    except RecursionError:  # the C parser checks its depth and unwinds cleanly
        raise PolicyError(f"{shown}: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:  # an integer with more digits than Python converts (sys.get_int_max_str_digits)
        raise PolicyError(f"{shown}: not valid JSON: a number has too many digits") from None
    _check_json_data(data, shown)
    return data


# A policy string's shape: a name of letters, digits, _ and -, then its arguments after a colon; a file name
# with an extension (a dot) or a space is none.
_POLICY_STRING_SHAPE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*(:[^/\\]*)?")


def _names_no_path(text: str) -> bool:
    """Whether ``text`` has a policy string's shape rather than a file's name (``trivialaugment``,
    ``randaugment:n=2,m=9``; not ``best.yaml``, ``my policy`` or ``runs/x``)."""
    return _POLICY_STRING_SHAPE.fullmatch(text) is not None and not text.lower().endswith(".json")


def _missing(path: str) -> bool:
    """Whether nothing is at ``path``; a name the system refuses (a NUL byte, too long) is left to the reader."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return False
    return False


def validate_policy_dict(data: Any, source: str = "policy") -> None:
    """Check a policy document against the schema; raise PolicyError naming the first bad place."""
    validator = jsonschema.Draft202012Validator(policy_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    if errors:
        raise PolicyError(f"{source}: {_describe(errors[0])}")
    for i, sub in enumerate(data["sub_policies"]):
        for j, step in enumerate(sub):
            for key in ("prob", "level"):
                value = step[key]
                if isinstance(value, bool) or value != value:  # bool is an int in JSON Schema; NaN
                    raise PolicyError(f"{source}: sub_policies[{i}][{j}].{key}: {value!r} is not a number in [0, 1]")


def software_versions() -> dict[str, str]:
    """Versions of the software that matters for reproducing a policy's effect."""
    import PIL
    import torch
    import torchvision

    return {"policysearch": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "pillow": PIL.__version__}


def installed_version(package: str) -> str | None:
    """The installed version of ``package``; None when it is not installed (or has no package metadata)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


class Policy:
    """An augmentation policy: sub-policies of (op, prob, level), plus provenance metadata.

    ``ranges`` names the op ranges its levels map into (``ops.OP_RANGES``): "standard" (AutoAugment's) or
    "wide" (TrivialAugmentWide's), so that torchvision's wide recipe is a policy like any other.
    """

    def __init__(self, sub_policies: Sequence[Sequence[Operation | Sequence[Any] | Mapping[str, Any]]],
                 metadata: Mapping[str, Any] | None = None, name: str = "",
                 baseline: Baseline | None = None, ranges: str = "standard") -> None:
        if isinstance(sub_policies, (str, bytes, os.PathLike)):
            raise PolicyError(f"Policy: sub_policies must be a list of sub-policies, got {short_repr(str(sub_policies))}; "
                              "for a policy string or file use load_policy(...) or PolicyTransform(...)")
        subs = tuple(tuple(_as_operation(step, f"sub_policies[{i}][{j}]") for j, step in enumerate(sub))
                     for i, sub in enumerate(sub_policies))
        if baseline is not None and not isinstance(baseline, Baseline):
            raise PolicyError(f"Policy: baseline must be a Baseline, got {type(baseline).__name__}")
        if ranges not in OP_RANGES:
            raise PolicyError(f"Policy: op_ranges {short_repr(ranges)} is not one of {', '.join(OP_RANGES)}")
        self.ranges = ranges
        self.baseline = baseline or Baseline()
        self.name = name
        self.metadata = dict(metadata or {})
        self.sub_policies: tuple[SubPolicy, ...] = subs
        validate_policy_dict(self.to_dict(), source="Policy")
        _check_metadata(self.metadata, "Policy")  # before save(): a numpy number or NaN there is no JSON

    # -- plain-data views -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The file form, in the oldest format version that can hold this policy."""
        newer = self.ranges != "standard" or bool(self.ops() & _VERSION_3_OPS)
        data: dict[str, Any] = {"format_version": FORMAT_VERSION if newer else 2}
        if self.name:
            data["name"] = self.name
        if newer:
            data["op_ranges"] = self.ranges
        data["sub_policies"] = [[step.to_dict() for step in sub] for sub in self.sub_policies]
        data["baseline"] = self.baseline.to_dict()
        if self.metadata:
            data["metadata"] = dict(self.metadata)  # a copy: save() adds keys to it
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str = "policy") -> "Policy":
        """Validate parsed JSON data and build the policy; anything wrong is a PolicyError naming the place."""
        _check_json_data(data, source)
        validate_policy_dict(data, source)
        if isinstance(data["format_version"], float):  # JSON Schema's enum takes 2.0 for 2; the version is a whole number
            raise PolicyError(f"{source}: format_version: expected a whole number such as {READABLE_VERSIONS[-1]}, "
                              f"got {_as_json(data['format_version'])}")
        if data["format_version"] == 1 and "baseline" in data:  # version 1 predates it: a mixed-up file
            raise PolicyError(f"{source}: baseline: format_version 1 has no baseline; write format_version 2 "
                              "to carry one")
        if data["format_version"] < 3 and "op_ranges" in data:
            raise PolicyError(f"{source}: op_ranges: format_version {data['format_version']} has no op_ranges; "
                              "write format_version 3 to carry them")
        version = data["format_version"]
        for i, sub in enumerate(data["sub_policies"] if version < 3 else ()):
            for j, step in enumerate(sub):
                if step["op"] in _VERSION_3_OPS:
                    raise PolicyError(f"{source}: sub_policies[{i}][{j}].op: format_version {version} has no "
                                      f"{step['op']}; write format_version 3 to use it")
        # Searches before strict metadata wrote NaN for an accuracy they did not measure: such files still
        # load, the value read as null (a policy built in Python with NaN is refused, since save would write it)
        metadata = json_numbers(data.get("metadata"))  # at most MAX_DEPTH deep, checked
        _check_metadata(metadata, source)
        try:  # the schema lets 1.0 through as an integer; Baseline refuses it
            baseline = Baseline(**data["baseline"]) if "baseline" in data else Baseline()
        except PolicyError as exc:
            raise PolicyError(f"{source}: {exc}") from None
        return cls(data["sub_policies"], metadata, data.get("name", ""), baseline, data.get("op_ranges", "standard"))

    # -- files ------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Policy":
        """Read and validate a policy JSON file; errors name the file (as given) and the place inside it.
        A missing file named like a policy string ("trivialaugment") is pointed to ``load_policy``."""
        if isinstance(path, str) and _names_no_path(path) and _missing(path):
            raise PolicyError(f"{short_repr(path)}: no such file; Policy.load reads files only, "
                              f"load_policy({short_repr(path)}) also reads policy strings")
        return cls.from_dict(read_policy_json(path), source=os.fspath(path))

    def document(self) -> dict[str, Any]:
        """The policy file's content: ``to_dict`` with the creation time and software versions recorded."""
        document = self.to_dict()
        metadata = document.setdefault("metadata", {})
        metadata.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        metadata.setdefault("software", software_versions())
        return document

    def file_text(self) -> str:
        """The policy file's text, :meth:`document` as indented JSON; a PolicyError naming the size when it is
        larger than a policy file may be (``MAX_FILE_BYTES``), so that no file is written that cannot be read.
        The metadata is checked again: it is a dict a caller can still change after the policy was built."""
        _check_metadata(self.metadata, self.name or "policy")
        text = json.dumps(self.document(), indent=2, allow_nan=False) + "\n"
        size = len(text.encode("utf-8"))
        if size > MAX_FILE_BYTES:
            named = f" (a policy string works by its name: PolicyTransform({self.name!r}))" if ":" in self.name else ""
            raise PolicyError(f"{self.name or 'policy'}: its {len(self):,} sub-policies and metadata make a file of "
                              f"{size:,} bytes, more than the {MAX_FILE_BYTES:,} a policy file may hold; use fewer "
                              f"sub-policies{named}")
        return text

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the policy file (:meth:`file_text`) atomically."""
        return write_text_atomic(path, self.file_text())

    # -- container protocol -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.sub_policies)

    def __iter__(self) -> Iterator[SubPolicy]:
        return iter(self.sub_policies)

    def __getitem__(self, index: int) -> SubPolicy:
        return self.sub_policies[index]

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Policy) and self.sub_policies == other.sub_policies
                and self.baseline == other.baseline and self.ranges == other.ranges)

    def __hash__(self) -> int:
        return hash((self.sub_policies, self.baseline, self.ranges))

    def __repr__(self) -> str:
        ranges = "" if self.ranges == "standard" else f", {self.ranges} op ranges"
        return (f"Policy({len(self)} sub-policies, ops={sorted(self.ops())}{ranges}, "
                f"baseline: {self.baseline.describe()})")

    def scaled(self, strength: float) -> "Policy":
        """The same sub-policies with every probability multiplied by ``strength`` in [0, 1]."""
        if not isinstance(strength, numbers.Real) or isinstance(strength, bool) or not 0 <= strength <= 1:
            raise PolicyError(f"strength: expected a number in [0, 1], got {strength!r}")
        subs = [[Operation(s.op, s.prob * strength, s.level) for s in sub] for sub in self.sub_policies]
        return Policy(subs, self.metadata, self.name, self.baseline, self.ranges)

    def with_baseline(self, baseline: Baseline) -> "Policy":
        """The same sub-policies followed by ``baseline`` (the whole recipe in one object)."""
        return Policy(self.sub_policies, self.metadata, self.name, baseline, self.ranges)

    def ops(self) -> set[str]:
        """Names of the ops this policy uses."""
        return {step.op for sub in self.sub_policies for step in sub}

    def describe(self, limit: int | None = None) -> str:
        """Human-readable lines, one per sub-policy."""
        subs = self.sub_policies if limit is None else self.sub_policies[:limit]
        lines = [" -> ".join(f"{s.op}(p={s.prob:.2f}, level={s.level:.2f})" for s in sub) for sub in subs]
        if limit is not None and len(self) > limit:
            lines.append(f"... and {len(self) - limit} more")
        return "\n".join(lines)


def remove_duplicates(policy: Policy) -> Policy:
    """The policy with each sequence of op names kept once (its first sub-policy), as Fast AutoAugment
    cleans every candidate before the union: in a continuous space no two sub-policies are exactly equal,
    while two sub-policies of the same ops at other probabilities and levels are near-duplicates."""
    seen: set[tuple[str, ...]] = set()
    subs = []
    for sub in policy:
        key = tuple(step.op for step in sub)
        if key not in seen:
            seen.add(key)
            subs.append(sub)
    return Policy(subs, policy.metadata, policy.name, policy.baseline, policy.ranges)


def merge_policies(policies: Sequence[Policy], metadata: Mapping[str, Any] | None = None) -> Policy:
    """Union of the sub-policies of several policies, keeping the first of any duplicates, in order.
    They must use the same op ranges: the same level means another argument in another range."""
    ranges = {policy.ranges for policy in policies}
    if len(ranges) > 1:
        raise PolicyError(f"cannot merge policies with different op ranges ({', '.join(sorted(ranges))})")
    seen: set[SubPolicy] = set()
    subs: list[SubPolicy] = []
    for policy in policies:
        for sub in policy:
            if sub not in seen:
                seen.add(sub)
                subs.append(sub)
    return Policy(subs, metadata, ranges=ranges.pop() if ranges else "standard")


class _DuplicateKey(ValueError):
    """A JSON object names a key twice (json keeps the last silently; which one was meant is unknown)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(key for key, _ in pairs if key in seen or seen.add(key)))
    return out


def _as_operation(step: Operation | Sequence[Any] | Mapping[str, Any], where: str) -> Operation:
    """One step given as an Operation, a mapping or an (op, prob, level) triple; ``where`` names its place."""
    if isinstance(step, Operation):
        return step
    if isinstance(step, Mapping):
        unknown = sorted(map(str, set(step) - {"op", "prob", "level"}))
        if unknown:  # a file with them is refused too: never dropped without a word
            raise PolicyError(f"Policy: {where}: an operation has the keys op, prob and level; unknown: "
                              f"{', '.join(unknown)}")
        return Operation(step.get("op"), step.get("prob"), step.get("level"))  # type: ignore[arg-type]
    if isinstance(step, Sequence) and not isinstance(step, str) and len(step) == 3:
        return Operation(step[0], step[1], step[2])
    raise PolicyError(f"Policy: {where}: an operation must be Operation(op, prob, level), a mapping or a triple, "
                      f"got {short_repr(step)}")
