"""Search spaces: which policies the search may propose, read from small YAML files.

A search space says how many sub-policies a candidate policy has, how many operations each sub-policy
holds, which ops may fill a slot (optionally with a narrower level range per op), and whether
probabilities and levels are continuous or drawn from a grid. The shipped spaces live in the repository's
``search_spaces/`` folder (``policysearch/search_spaces`` inside the package); any other YAML file in the
same format can be loaded by path.

File format (every key but ``description`` is required; unknown keys are errors)::

    name: fast_autoaugment
    description: free text
    sub_policies: 5                   # sub-policies per candidate policy
    ops_per_sub_policy: 2             # operations per sub-policy (at most 100 slots, sub-policies x ops)
    probability: {type: continuous}   # or {type: discrete, steps: 11}; optional range: [low, high]
    level: {type: discrete, steps: 10}  # same keys; range is the default level range of every op
    ops:                              # a list of op names ...
      - ShearX
      - Rotate
    # ... or a mapping from op name to nothing or to {level: [low, high]} for a narrower level range:
    # ops: {ShearX: , Rotate: {level: [0.0, 0.5]}}

Anchors and aliases (``&mild`` / ``*mild``) work; merge keys (``<<``) are refused, a key written twice too.

Parameter encoding (Fast AutoAugment's): for every slot, sub-policy ``i`` and operation ``j``, both
counted from 0, there are three parameters, in this order:

- ``op_{i}_{j}``: a choice among the space's ops (the op name is the value);
- ``prob_{i}_{j}``: the probability of applying the op, over the probability range;
- ``level_{i}_{j}``: the op's strength on the unit interval [0, 1]; decoding maps it linearly into the
  chosen op's level range (the op is only known per trial, so the mapping cannot happen in the prior).

A ``discrete`` axis with ``steps`` n allows n evenly spaced values from the range's low to its high end,
both included: ``probability: {type: discrete, steps: 11}`` gives 0.0, 0.1, ..., 1.0, and
``level: {type: discrete, steps: 10}`` gives the ten levels 0, 1/9, ..., 1 (AutoAugment's magnitudes 0..9).

This module does not import Ray: ``search/tuning.py`` turns :meth:`SearchSpace.parameters` into the
optimiser's own search-space objects.
"""

from __future__ import annotations

import difflib
import math
import numbers
import unicodedata
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from policysearch.wording import WordedError, one_line, short_repr

if TYPE_CHECKING:  # pragma: no cover - typing only
    import numpy as np

    from policysearch.augment.policy import Policy

__all__ = [
    "Axis",
    "Parameter",
    "SearchSpace",
    "SpaceError",
    "is_space_path",
    "list_spaces",
    "load_space",
    "space_from_dict",
]

SHIPPED_DIR = "search_spaces"
"""Folder, inside the ``policysearch`` package, that holds the shipped ``*.yaml`` spaces."""

_TOP_KEYS_REQUIRED = ("name", "sub_policies", "ops_per_sub_policy", "probability", "level", "ops")
_TOP_KEYS_OPTIONAL = ("description",)
_AXIS_KINDS = ("continuous", "discrete")
# Tolerance for values an optimiser returns a hair outside their range (quantised floats).
_EPS = 1e-9
# Limits that keep a hostile or mistyped file from taking the machine: bytes read, nesting depth, values
# after aliases are expanded, and the sizes that set the number of parameters and grid points.
MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_VALUES = 100_000
MAX_SLOTS = 100  # sub-policies x ops each: an op, a probability and a level apiece for the optimiser to propose
MAX_SUB_POLICIES = MAX_SLOTS
MAX_OPS_PER_SUB_POLICY = 10
MAX_STEPS = 10_001
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class SpaceError(WordedError):
    """A search space file, dict or parameter set is invalid. The message is one line and starts with
    the file (or ``<dict>``) and the offending key, e.g. ``search_spaces/x.yaml: ops[3]: unknown op``, or
    with the setting that names an unknown space (``--space``, ``space=`` in Python)."""


def default_op_names() -> tuple[str, ...]:
    """The op names a space may use: those of the op table."""
    from policysearch.augment.ops import OP_NAMES

    return tuple(OP_NAMES)


# --------------------------------------------------------------------------------------------------
# Plain data


@dataclass(frozen=True)
class Axis:
    """How one quantity (probability or level) is searched: continuous, or ``steps`` evenly spaced
    values, over ``[low, high]`` (a sub-range of [0, 1])."""

    kind: Literal["continuous", "discrete"] = "continuous"
    steps: int = 0
    low: float = 0.0
    high: float = 1.0

    @property
    def values(self) -> tuple[float, ...]:
        """The allowed values of a discrete axis, low to high; empty for a continuous one."""
        if self.kind != "discrete":
            return ()
        return tuple(_grid_value(self.low, self.high, self.steps, k) for k in range(self.steps))

    def snap(self, x: float) -> float:
        """``x`` clipped into the range and, on a discrete axis, moved to the nearest allowed value."""
        x = min(max(float(x), self.low), self.high)
        if self.kind != "discrete" or self.high == self.low:
            return x
        k = round((x - self.low) / (self.high - self.low) * (self.steps - 1))
        return _grid_value(self.low, self.high, self.steps, k)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.kind}
        if self.kind == "discrete":
            d["steps"] = self.steps
        if (self.low, self.high) != (0.0, 1.0):
            d["range"] = [self.low, self.high]
        return d


@dataclass(frozen=True)
class Parameter:
    """One searched parameter, in terms any optimiser can express.

    ``choice``: one of ``choices``; ``uniform``: a float in ``[low, high]``; ``grid``: one of ``steps``
    evenly spaced floats from ``low`` to ``high`` inclusive (see :attr:`values`).
    """

    name: str
    kind: Literal["choice", "uniform", "grid"]
    choices: tuple = ()
    low: float = 0.0
    high: float = 1.0
    steps: int = 0

    @property
    def values(self) -> tuple:
        """Every value the parameter can take: the choices, the grid points, or ``()`` if uniform."""
        if self.kind == "choice":
            return self.choices
        if self.kind == "grid":
            return tuple(_grid_value(self.low, self.high, self.steps, k) for k in range(self.steps))
        return ()


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space. Build it with :func:`load_space` or :func:`space_from_dict`.

    ``level_ranges[k]`` is the ``(low, high)`` level range of ``ops[k]``; a level of 0..1 from the search
    maps linearly onto it.
    """

    name: str
    ops: tuple[str, ...]
    level_ranges: tuple[tuple[float, float], ...]
    sub_policies: int
    ops_per_sub_policy: int
    probability: Axis = field(default_factory=Axis)
    level: Axis = field(default_factory=Axis)
    description: str = ""
    source: str = "<dict>"

    # ---- parameters ------------------------------------------------------------------------------

    def slots(self) -> list[tuple[int, int]]:
        """``(sub_policy, op)`` index pairs in parameter order."""
        return [(i, j) for i in range(self.sub_policies) for j in range(self.ops_per_sub_policy)]

    def parameters(self) -> list[Parameter]:
        """The Fast AutoAugment encoding: ``op_i_j``, ``prob_i_j``, ``level_i_j`` for every slot."""
        params: list[Parameter] = []
        unit_level = Axis(self.level.kind, self.level.steps)  # levels are searched on [0, 1]
        for i, j in self.slots():
            params.append(Parameter(f"op_{i}_{j}", "choice", choices=self.ops))
            params.append(_axis_parameter(f"prob_{i}_{j}", self.probability))
            params.append(_axis_parameter(f"level_{i}_{j}", unit_level))
        return params

    def parameter_names(self) -> list[str]:
        return [p.name for p in self.parameters()]

    def level_range(self, op: str) -> tuple[float, float]:
        """The level range of ``op`` in this space."""
        try:
            return self.level_ranges[self.ops.index(op)]
        except ValueError:
            raise SpaceError(f"{self.source}: op {op!r} is not in space {self.name!r}") from None

    # ---- decoding --------------------------------------------------------------------------------

    def decode_params(self, params: Mapping[str, object]) -> list[list[tuple[str, float, float]]]:
        """One trial's parameters -> sub-policies of ``(op, probability, level)`` tuples.

        Probabilities and levels are snapped to the grid of a discrete axis; the level is then mapped
        from [0, 1] into the chosen op's level range. Missing or unexpected keys, unknown ops and
        values outside their range are :class:`SpaceError`.
        """
        where = f"{self.source}: params"
        if not isinstance(params, Mapping):
            raise SpaceError(f"{where}: must be a mapping, got {type(params).__name__}")
        expected = self.parameter_names()
        missing = [k for k in expected if k not in params]
        if missing:
            raise SpaceError(f"{where}: missing {_list_keys(missing)}")
        expected_set = set(expected)
        extra = [str(k) for k in params if k not in expected_set]
        if extra:
            raise SpaceError(f"{where}: unexpected {_list_keys(extra)}")

        unit_level = Axis(self.level.kind, self.level.steps)
        sub_policies: list[list[tuple[str, float, float]]] = []
        for i in range(self.sub_policies):
            sub: list[tuple[str, float, float]] = []
            for j in range(self.ops_per_sub_policy):
                op = params[f"op_{i}_{j}"]
                if not isinstance(op, str) or op not in self.ops:
                    raise SpaceError(
                        f"{where}.op_{i}_{j}: {short_repr(op)} is not an op of space {self.name!r}"
                        f"{_suggest(op, self.ops)}"
                    )
                prob = _number_in(params[f"prob_{i}_{j}"], self.probability, f"{where}.prob_{i}_{j}")
                unit = _number_in(params[f"level_{i}_{j}"], unit_level, f"{where}.level_{i}_{j}")
                low, high = self.level_range(op)
                level = low + unit * (high - low)
                if unit_level.kind == "discrete":  # a grid value, without the float noise of the scaling
                    level = round(level, 12)
                sub.append((str(op), prob, level))
            sub_policies.append(sub)
        return sub_policies

    def decode(self, params: Mapping[str, object]) -> Policy:
        """One trial's parameters -> a :class:`policysearch.augment.policy.Policy`."""
        from policysearch.augment.policy import Operation, Policy

        subs = self.decode_params(params)
        return Policy(
            [[Operation(op=op, prob=p, level=lv) for op, p, lv in sub] for sub in subs],
            metadata={"search_space": self.name},
        )

    # ---- sampling and recording ----------------------------------------------------------------

    def sample(self, rng: np.random.Generator) -> dict[str, object]:
        """Draw one parameter set uniformly from the space (random search, tests)."""
        out: dict[str, object] = {}
        for p in self.parameters():
            if p.kind == "choice":
                out[p.name] = p.choices[int(rng.integers(len(p.choices)))]
            elif p.kind == "grid":
                out[p.name] = _grid_value(p.low, p.high, p.steps, int(rng.integers(p.steps)))
            else:
                out[p.name] = float(rng.uniform(p.low, p.high))
        return out

    def to_dict(self) -> dict[str, Any]:
        """The resolved space in the file format (``space_from_dict(space.to_dict())`` rebuilds it);
        every op is listed with its level range."""
        return {
            "name": self.name,
            "description": self.description,
            "sub_policies": self.sub_policies,
            "ops_per_sub_policy": self.ops_per_sub_policy,
            "probability": self.probability.to_dict(),
            "level": self.level.to_dict(),
            "ops": {op: {"level": [lo, hi]} for op, (lo, hi) in zip(self.ops, self.level_ranges)},
        }


# --------------------------------------------------------------------------------------------------
# Loading


def list_spaces() -> list[str]:
    """Names of the shipped search spaces, sorted."""
    folder = _shipped_folder()
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def is_space_path(text: str) -> bool:
    """Whether ``--space TEXT`` names a file (a path separator, or a ``.yaml``/``.yml`` suffix in any case)
    rather than a shipped space."""
    return any(s in text.lower() for s in ("/", "\\", ".yaml", ".yml"))


def load_space(name_or_path: str | Path, known_ops: Collection[str] | None = None) -> SearchSpace:
    """Load a shipped space by bare name (``"fast_autoaugment"``) or any space file by path.

    A ``Path``, or a string with a path separator or a ``.yaml``/``.yml`` suffix, is read from disk;
    anything else is looked up among :func:`list_spaces`. ``known_ops`` defaults to the op registry.
    """
    is_path = isinstance(name_or_path, Path) or is_space_path(str(name_or_path))
    if is_path:
        path = Path(name_or_path)
        source = str(path)
        try:
            if path.exists() and not path.is_file() and not path.is_dir():  # a FIFO's open() waits for a writer
                raise SpaceError(f"{source}: not a regular file (a pipe or a device); give a search space YAML file")
            with path.open("rb") as handle:
                raw = handle.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            why, stem = exc.strerror or str(exc), path.stem  # the message may be worded again after this block
            named = isinstance(exc, FileNotFoundError) and stem in list_spaces()
            raise SpaceError(lambda say: f"{source}: cannot read search space file ({why})"
                             + (f"; the shipped space of that name is {say('space', stem)}" if named else "")) from None
        if len(raw) > MAX_FILE_BYTES:
            raise SpaceError(f"{source}: larger than {MAX_FILE_BYTES} bytes, too large for a search space file")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SpaceError(f"{source}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None
    else:
        name = str(name_or_path)
        shipped = list_spaces()
        if name not in shipped:
            here = Path(name)
            local = (f"; {name} here is a folder, not a search space file" if here.is_dir() else
                     f"; for the file {name} here, write ./{name}" if here.exists() else "")
            raise SpaceError(lambda say: f"{say('space', name)}: no shipped search space of that name"
                             f"{_suggest(name, shipped)}; shipped: {', '.join(shipped)}{local}")
        source = f"{SHIPPED_DIR}/{name}.yaml"
        text = (_shipped_folder() / f"{name}.yaml").read_text(encoding="utf-8")
    try:
        _check_shape(text, source)
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader that rejects duplicate keys
    except SpaceError:
        raise
    except yaml.YAMLError as exc:
        raise SpaceError(f"{source}: {_yaml_problem(exc, text)}") from None
    except ValueError:  # an integer with more digits than Python converts (sys.get_int_max_str_digits)
        raise SpaceError(f"{source}: invalid YAML: a number has too many digits") from None
    space = space_from_dict(data, source=source, known_ops=known_ops)
    if is_path:
        _check_own_name(space)
    return space


def _check_own_name(space: SearchSpace) -> None:
    """A space file that takes a shipped space's name must hold that space: the name is what the run, the
    report and the policy file record, so a changed copy under it would pass for the shipped one."""
    if space.name not in list_spaces():
        return
    shipped = load_space(space.name)
    if space.to_dict() != shipped.to_dict():
        raise SpaceError(f"{space.source}: name: {space.name!r} is the name of a shipped space, which this file "
                         f"differs from; give your space a name of its own")


def _yaml_problem(exc: yaml.YAMLError, text: str) -> str:
    """PyYAML's error as one line that starts with where it is: ``line L, column C: invalid YAML: ...``."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or not problem:
        return f"invalid YAML: {one_line(exc)[:300]}"
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    began = (f" ({context} that began on line {context_mark.line + 1})"
             if context and context_mark is not None and context_mark.line != mark.line else "")
    line_start = text.rfind("\n", 0, max(mark.index, 0)) + 1
    indenting = 0 <= mark.index < len(text) and text[mark.index] == "\t" and not text[line_start:mark.index].strip()
    tab = " (a tab: YAML indents with spaces)" if indenting else ""
    return f"line {mark.line + 1}, column {mark.column + 1}: invalid YAML: {one_line(Exception(problem))[:200]}{tab}{began}"


def space_from_dict(
    data: object, source: str = "<dict>", known_ops: Collection[str] | None = None
) -> SearchSpace:
    """Validate a parsed space file (or a :meth:`SearchSpace.to_dict` result) and build the space."""
    known = tuple(known_ops) if known_ops is not None else default_op_names()
    if not isinstance(data, Mapping):
        raise SpaceError(f"{source}: the file must hold a mapping of keys, got {_type(data)}")
    _check_keys(data, _TOP_KEYS_REQUIRED, _TOP_KEYS_OPTIONAL, source, prefix="")

    name = data["name"]
    if not isinstance(name, str) or not name.strip():
        raise SpaceError(f"{source}: name: must be a non-empty string, got {short_repr(name)}")
    # printed on one line: no line breaks, controls or the bidirectional overrides that reorder the rest of it
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp", "Cs") or c in _BIDI_CONTROLS for c in name.strip()):
        raise SpaceError(f"{source}: name: must be one line of printable text, got {short_repr(name)}")
    description = data.get("description", "")
    if description is None:
        description = ""
    if not isinstance(description, str):
        raise SpaceError(f"{source}: description: must be a string, got {_type(description)}")
    n_sub = _positive_int(data["sub_policies"], f"{source}: sub_policies", MAX_SUB_POLICIES)
    n_ops = _positive_int(data["ops_per_sub_policy"], f"{source}: ops_per_sub_policy", MAX_OPS_PER_SUB_POLICY)
    if n_sub * n_ops > MAX_SLOTS:
        raise SpaceError(f"{source}: sub_policies x ops_per_sub_policy: at most {MAX_SLOTS} slots (each an op, a "
                         f"probability and a level for the optimiser to propose), got {n_sub} x {n_ops} = "
                         f"{n_sub * n_ops}")
    probability = _parse_axis(data["probability"], source, "probability")
    if probability.high == 0:
        raise SpaceError(f"{source}: probability.range: [0, 0] never applies an op, so every "
                         "policy would be the identity; give a range whose high end is above 0")
    level = _parse_axis(data["level"], source, "level")
    ops, ranges = _parse_ops(data["ops"], known, (level.low, level.high), source)
    return SearchSpace(
        name=name.strip(),
        ops=ops,
        level_ranges=ranges,
        sub_policies=n_sub,
        ops_per_sub_policy=n_ops,
        probability=probability,
        level=level,
        description=description.strip(),
        source=source,
    )


# --------------------------------------------------------------------------------------------------
# Validation helpers


def _parse_axis(value: object, source: str, key: str) -> Axis:
    where = f"{source}: {key}"
    if not isinstance(value, Mapping):
        raise SpaceError(f"{where}: must be a mapping like {{type: continuous}}, got {_type(value)}")
    if "type" not in value:
        _check_keys(value, (), ("type", "steps", "range"), source, prefix=key)  # a misspelt type is named
        raise SpaceError(f"{where}.type: missing required key")
    kind = value["type"]
    if kind not in _AXIS_KINDS:
        raise SpaceError(f"{where}.type: must be 'continuous' or 'discrete', got {short_repr(kind)}")
    if kind == "discrete":
        _check_keys(value, ("type", "steps"), ("range",), source, prefix=key)
        steps = value["steps"]
        if isinstance(steps, bool) or not isinstance(steps, int):
            raise SpaceError(f"{where}.steps: must be an integer, got {_type(steps)}")
        if steps < 2:
            raise SpaceError(f"{where}.steps: must be at least 2, got {short_repr(steps)}")
        if steps > MAX_STEPS:
            raise SpaceError(f"{where}.steps: must be at most {MAX_STEPS}, got {short_repr(steps)}")
    else:
        _check_keys(value, ("type",), ("range",), source, prefix=key)
        steps = 0
    low, high = _parse_range(value.get("range", [0.0, 1.0]), f"{where}.range")
    return Axis(kind, steps, low, high)


def _parse_ops(
    value: object, known: tuple[str, ...], default_range: tuple[float, float], source: str
) -> tuple[tuple[str, ...], tuple[tuple[float, float], ...]]:
    entries: list[tuple[str, object, object]] = []  # (key, op name, options)
    if isinstance(value, Mapping):
        entries = [(f"ops.{k}", k, v) for k, v in value.items()]
    elif isinstance(value, list):
        for idx, item in enumerate(value):
            key = f"ops[{idx}]"
            if isinstance(item, Mapping) and len(item) == 1:  # "- Rotate: {level: [0, 0.5]}"
                ((k, v),) = item.items()
                entries.append((key, k, v))
            else:
                entries.append((key, item, None))
    else:
        raise SpaceError(f"{source}: ops: must be a list of op names or a mapping, got {_type(value)}")
    if not entries:
        raise SpaceError(f"{source}: ops: must name at least one op")

    ops: list[str] = []
    ranges: list[tuple[float, float]] = []
    for key, op, options in entries:
        where = f"{source}: {key}"
        if not isinstance(op, str):
            raise SpaceError(f"{where}: must be an op name, got {_type(op)}")
        if op not in known:
            raise SpaceError(f"{where}: unknown op {short_repr(op)}{_suggest(op, known)}")
        if op in ops:
            raise SpaceError(f"{where}: op {op!r} is listed twice")
        if options is None:
            rng = default_range
        elif isinstance(options, Mapping):
            _check_keys(options, (), ("level",), source, prefix=key)
            rng = _parse_range(options.get("level", list(default_range)), f"{where}.level")
            if rng != default_range and not _has_magnitude(op):
                raise SpaceError(f"{where}.level: {op} has no magnitude (it always has the same effect), so a "
                                 "level range means nothing for it; drop the range")
        else:
            raise SpaceError(
                f"{where}: options must be a mapping like {{level: [0, 0.5]}}, got {_type(options)}"
            )
        ops.append(op)
        ranges.append(rng)
    return tuple(ops), tuple(ranges)


def _parse_range(value: object, where: str) -> tuple[float, float]:
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != 2
        or not all(_is_number(v) for v in value)
    ):
        raise SpaceError(f"{where}: must be a list [low, high] of two numbers, got {short_repr(value)}")
    if not all(0 <= v <= 1 for v in value):  # compared before float(): a huge integer overflows it
        raise SpaceError(f"{where}: must lie within [0, 1], got [{_number(value[0])}, {_number(value[1])}]")
    low, high = float(value[0]), float(value[1])
    if low > high:
        raise SpaceError(f"{where}: low must not exceed high, got [{low:g}, {high:g}]")
    return low, high


def _check_keys(
    data: Mapping, required: Sequence[str], optional: Sequence[str], source: str, prefix: str
) -> None:
    """Missing required keys and unknown keys of ``data`` -> SpaceError at ``source: prefix.key``."""
    dot = f"{prefix}." if prefix else ""
    allowed = tuple(required) + tuple(optional)
    for key in data:  # first: a misspelt key is what a missing one usually is
        if key not in allowed:
            raise SpaceError(
                f"{source}: {dot}{key}: unknown key{_suggest(str(key), allowed)}; "
                f"allowed: {', '.join(allowed)}"
            )
    for key in required:
        if key not in data:
            raise SpaceError(f"{source}: {dot}{key}: missing required key")


def _positive_int(value: object, where: str, most: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpaceError(f"{where}: must be an integer, got {_type(value)}")
    if value < 1:
        raise SpaceError(f"{where}: must be at least 1, got {value}")
    if value > most:
        raise SpaceError(f"{where}: must be at most {most}, got {short_repr(value)}")
    return value


def _number_in(value: object, axis: Axis, where: str) -> float:
    """A trial's value for ``axis``: a finite number within the range (up to rounding), snapped."""
    try:
        x = float(value) if _is_number(value) else math.nan
    except OverflowError:  # an integer too large for a float
        x = math.inf
    if not math.isfinite(x):
        raise SpaceError(f"{where}: must be a number, got {short_repr(value)}")
    if x < axis.low - _EPS or x > axis.high + _EPS:
        raise SpaceError(f"{where}: {x:g} is outside [{axis.low:g}, {axis.high:g}]")
    return axis.snap(x)


def _axis_parameter(name: str, axis: Axis) -> Parameter:
    if axis.kind == "discrete":
        return Parameter(name, "grid", low=axis.low, high=axis.high, steps=axis.steps)
    return Parameter(name, "uniform", low=axis.low, high=axis.high)


def _grid_value(low: float, high: float, steps: int, k: int) -> float:
    """The k-th of ``steps`` evenly spaced values from low to high, rounded to hide float noise."""
    return round(low + (high - low) * k / (steps - 1), 12)


def _number(value: object) -> str:
    """A number for a message, as ``{:g}`` writes it (an integer too large for a float as a short repr)."""
    try:
        return f"{float(value):g}"
    except OverflowError:
        return short_repr(value)


def _has_magnitude(op: str) -> bool:
    """Whether the op table's ``op`` has a level that sets its strength (an op not in the table: assumed so)."""
    from policysearch.augment.ops import OPS

    return op not in OPS or OPS[op].has_magnitude


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _suggest(word: object, candidates: Collection[str]) -> str:
    """`` (did you mean 'X'?)`` for the closest candidate, ignoring case, or ``""``."""
    if not isinstance(word, str):
        return ""
    lowered = {c.lower(): c for c in candidates}
    hit = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean {lowered[hit[0]]!r}?)" if hit else ""


def _list_keys(keys: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"key{'s' if len(keys) > 1 else ''} {shown}{more}"




def _type(value: object) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {short_repr(value)}"


def _shipped_folder():
    return resources.files("policysearch") / SHIPPED_DIR


def _check_shape(text: str, source: str) -> None:
    """Refuse YAML nested deeper than ``MAX_DEPTH``, holding more than ``MAX_VALUES`` values once its
    aliases are expanded (a "billion laughs" file) or with an explicit tag (``!!python/object``, ``!!int``:
    a space file needs none, and the loader's constructors fail on some in ways of their own), from the
    parser's events, before anything is built: building and checking nested data recurses, events do not.
    LibYAML's parser is used where PyYAML has it: PyYAML's own scanner looks up to 1024 characters ahead
    at every open bracket, which costs about a second on a line of brackets."""
    expanded: dict[str, int] = {}  # anchor -> values under it
    open_nodes: list[list[Any]] = []  # [anchor, values so far] per open collection
    total = 0
    for event in yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", _StrictLoader)):
        if getattr(event, "tag", None) is not None:
            raise SpaceError(f"{source}: line {event.start_mark.line + 1}: tag {short_repr(event.tag)} is not allowed; "
                             "a search space file holds plain mappings, lists, strings and numbers")
        if isinstance(event, yaml.CollectionStartEvent):
            if len(open_nodes) >= MAX_DEPTH:
                raise SpaceError(f"{source}: nested deeper than {MAX_DEPTH} levels (line {event.start_mark.line + 1})")
            open_nodes.append([event.anchor, 1])
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            anchor, count = open_nodes.pop()
        elif isinstance(event, yaml.AliasEvent):
            anchor, count = None, expanded.get(event.anchor, 1)
        elif isinstance(event, yaml.ScalarEvent):
            anchor, count = event.anchor, 1
        else:
            continue
        if anchor is not None:
            expanded[anchor] = count
        if open_nodes:
            open_nodes[-1][1] += count
        total += count if not open_nodes else 0
        if total > MAX_VALUES or (open_nodes and open_nodes[-1][1] > MAX_VALUES):
            raise SpaceError(f"{source}: more than {MAX_VALUES} values once aliases are expanded "
                             f"(line {event.start_mark.line + 1})")


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that rejects a mapping with the same key twice (safe_load keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise yaml.constructor.ConstructorError(
                    None, None, "merge keys (<<) are not supported; write the keys out (an alias, *name, works)",
                    key_node.start_mark)
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, f"a key must be a plain value, got {_type(key)}", key_node.start_mark
                ) from None
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {short_repr(key)}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)
