"""Hostile and malformed policy files and search-space files get the package's own error, nothing else.

Two kinds of input for each format:

* a systematic corpus: every field of a valid document replaced by every kind of bad value (wrong types,
  booleans for numbers, huge and overflowing numbers, NaN and infinities, huge strings, deep nesting),
  every required key removed, unknown and duplicate keys, every truncation of the text, invalid UTF-8 at
  every offset, byte-order marks, empty and huge files, top-level arrays and strings and, for YAML,
  alias bombs and tags that would build Python objects. Each document must raise PolicyError
  (SpaceError) from the file loader and, where it parses, from the dict loader; the corpus sizes are
  asserted so that they cannot shrink unnoticed.
* hypothesis-generated documents (random bytes, random JSON/YAML values, random mutations of a valid
  document): each either loads as a valid policy (space) that round-trips, or raises the package's error.

The size and nesting limits (``MAX_FILE_BYTES``, ``MAX_DEPTH``, ...) are what keep any file from hanging
the loader; their edges are tested here too.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policysearch.augment import policy as policy_module
from policysearch.search import spaces as spaces_module
from policysearch.augment.ops import OP_NAMES
from policysearch.augment.policy import Baseline, Operation, Policy, PolicyError
from policysearch.search.spaces import SearchSpace, SpaceError, load_space, space_from_dict

settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.function_scoped_fixture])
settings.register_profile("thorough", deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.function_scoped_fixture])
PROFILE = os.environ.get("POLICYSEARCH_HYPOTHESIS", "ci")
SCALE = {"ci": 1, "thorough": 10}[PROFILE]
EXAMPLES = {"bytes": 300, "json": 300, "mutated": 400, "roundtrip": 100, "yaml_text": 300, "space_data": 300,
            "space_mutated": 300}

MIN_POLICY_DOCUMENTS = 2000
MIN_SPACE_DOCUMENTS = 2000


def _settings(name: str) -> settings:
    return settings(settings.get_profile(PROFILE), max_examples=EXAMPLES[name] * SCALE)


class Deep:
    """Marker for a value nested ``depth`` levels deep, built as text (json/yaml writers would recurse).
    Its parsed form is built once and shared: nothing here changes it."""

    def __init__(self, depth: int, kind: str) -> None:
        self.depth, self.kind = depth, kind
        self._data: Any = None

    def __deepcopy__(self, memo: dict) -> "Deep":
        return self

    def data(self) -> Any:
        if self._data is None:
            value: Any = 0
            for _ in range(self.depth):
                value = [value] if self.kind == "list" else {"a": value}
            self._data = value
        return self._data

    def json(self) -> str:
        if self.kind == "list":
            return "[" * self.depth + "0" + "]" * self.depth
        return '{"a":' * self.depth + "0" + "}" * self.depth

    def yaml(self) -> str:
        if self.kind == "list":
            return "[" * self.depth + "0" + "]" * self.depth
        return "{a: " * self.depth + "0" + "}" * self.depth


DEEP = [Deep(65, "list"), Deep(65, "dict"), Deep(2000, "list"), Deep(2000, "dict"), Deep(100_000, "list"),
        Deep(100_000, "dict")]


def _json_text(value: Any) -> str:
    """JSON for a document that may hold Deep markers (written as text) and NaN/Infinity (as json does)."""
    if isinstance(value, Deep):
        return value.json()
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {_json_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_json_text(v) for v in value) + "]"
    return json.dumps(value)


def _data(value: Any) -> Any:
    """The parsed-data form of a document that may hold Deep markers."""
    if isinstance(value, Deep):
        return value.data()
    if isinstance(value, dict):
        return {k: _data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_data(v) for v in value]
    return value


def _paths(doc: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every place in a document (keys and indices), parents before children."""
    yield prefix
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from _paths(value, prefix + (i,))


def _replace(doc: Any, path: tuple, value: Any) -> Any:
    out = copy.deepcopy(doc)
    if not path:
        return value
    target = out
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return out


def _delete(doc: Any, path: tuple) -> Any:
    out = copy.deepcopy(doc)
    target = out
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]
    return out


# ---------------------------------------------------------------------------------------------------
# Policy files
# ---------------------------------------------------------------------------------------------------

VALID_POLICY: dict[str, Any] = {
    "format_version": 2,
    "name": "fuzz",
    "sub_policies": [
        [{"op": "Rotate", "prob": 0.5, "level": 0.25}, {"op": "Invert", "prob": 1.0, "level": 0.0}],
        [{"op": "Cutout", "prob": 0.2, "level": 1.0}],
    ],
    "baseline": {"pad_crop": 4, "hflip": True},
    "metadata": {"dataset": "digits", "search_space": "wide", "score": {"reward": 0.5}, "search_cost": None,
                 "software": {"torch": "2"}, "created": "2026-01-01", "source": "test", "command": "x",
                 "extra": [1, {"kept": True}]},
}
VALID_POLICY_V1 = {key: value for key, value in VALID_POLICY.items() if key != "baseline"} | {"format_version": 1}

HUGE_INT = 10 ** 400
COMMON_BAD = [None, [], {}, [None], *DEEP]
BAD_NUMBER = [*COMMON_BAD, True, False, "0.5", "", "NaN", [0.5], {"value": 0.5}, -1, -1e-9, 1.0000001, 2, 255,
              HUGE_INT, -HUGE_INT, 1e308, -1e308, math.nan, math.inf, -math.inf]
BAD_OP = [*COMMON_BAD, True, False, 0, 1.5, math.nan, "", " Rotate", "rotate", "Rotate ", "ROTATE", "R" * 100_000,
          "\u0000", "Rot\u00e4te", ["Rotate"], {"Rotate": 1}]
BAD_VERSION = [*COMMON_BAD, True, False, 0, 4, -1, 1.5, 2.5, HUGE_INT, -HUGE_INT, math.nan, math.inf, -math.inf, "1",
               "", [1]]
BAD_STRING = [*COMMON_BAD, True, 0, 1.5, math.nan, HUGE_INT, ["x"], {"x": "y"}]
BAD_SUB_POLICIES = [*COMMON_BAD, True, 0, "", "abc", [[]], [{}], ["Rotate"], [[None]], [[[]]], [["Rotate", 0.5, 0.5]],
                    {"0": [{"op": "Rotate", "prob": 0.5, "level": 0.5}]}]
BAD_SUB_POLICY = [*COMMON_BAD, True, 0, "Rotate", [[]], ["Rotate", 0.5, 0.5], [["Rotate", 0.5, 0.5]],
                  {"op": "Rotate", "prob": 0.5, "level": 0.5}]
BAD_STEP = [*COMMON_BAD, True, 0, "Rotate", ["Rotate", 0.5, 0.5], {"op": "Rotate"}, {"prob": 0.5, "level": 0.5},
            {"op": "Rotate", "prob": 0.5, "level": 0.5, "extra": 1}, {"Op": "Rotate", "prob": 0.5, "level": 0.5}]
BAD_BASELINE = [*COMMON_BAD, True, 0, "x", {"pad_crop": 1}, {"hflip": True}, {"pad_crop": 1, "hflip": True, "x": 1},
                {"pad_crop": 1, "flip": True}, [4, True]]
BAD_PAD_CROP = [*COMMON_BAD, True, False, -1, 4097, 1.5, 1.0, 4.0, "4", HUGE_INT, -HUGE_INT, math.nan, math.inf]
BAD_HFLIP = [*COMMON_BAD, 0, 1, 1.0, "true", "yes", math.nan]
BAD_METADATA = [None, [], [None], *DEEP, True, 0, "", "x", {"x": DEEP[2]}, {"dataset": 5}, {"score": "high"},
                {"software": []}, {"created": 5}, {"search_cost": 3}, {"command": ["a"]}]
BAD_METADATA_FIELD = {"dataset": BAD_STRING, "search_space": BAD_STRING, "created": BAD_STRING,
                      "source": BAD_STRING, "command": BAD_STRING,
                      "score": [True, "x", [], [1], *DEEP], "search_cost": [True, 0, "x", [], *DEEP],
                      "software": [None, True, 0, "x", [], *DEEP]}


def _bad_values(path: tuple) -> list[Any]:
    """Values that are wrong at ``path`` of VALID_POLICY (or VALID_POLICY_V1)."""
    if path == ():
        return [None, True, 0, 1.5, "policy", "", [], [VALID_POLICY], [None], *DEEP]
    if path == ("format_version",):
        return BAD_VERSION
    if path == ("name",):
        return BAD_STRING
    if path == ("sub_policies",):
        return BAD_SUB_POLICIES
    if path[0] == "sub_policies" and len(path) == 2:
        return BAD_SUB_POLICY
    if path[0] == "sub_policies" and len(path) == 3:
        return BAD_STEP
    if path[0] == "sub_policies" and path[-1] == "op":
        return BAD_OP
    if path[0] == "sub_policies":
        return BAD_NUMBER
    if path == ("baseline",):
        return BAD_BASELINE
    if path == ("baseline", "pad_crop"):
        return BAD_PAD_CROP
    if path == ("baseline", "hflip"):
        return BAD_HFLIP
    if path == ("metadata",):
        return BAD_METADATA
    if len(path) == 2:
        return BAD_METADATA_FIELD.get(path[1], list(DEEP))  # other keys may hold any JSON value but too-deep
    return list(DEEP)


def _valid_text() -> str:
    return json.dumps(VALID_POLICY)


def policy_corpus() -> Iterator[tuple[str, bytes, Any]]:
    """(label, file bytes, parsed data or NOT_JSON) for every malformed document of the corpus."""
    required = ("format_version", "sub_policies", "op", "prob", "level", "pad_crop", "hflip")
    for valid, version in ((VALID_POLICY, 2), (VALID_POLICY_V1, 1)):
        for path in _paths(valid):
            for k, bad in enumerate(_bad_values(path)):
                doc = _replace(valid, path, bad)
                yield f"v{version} replace {path} #{k}", _json_text(doc).encode(), _data(doc)
            if path and isinstance(path[-1], str) and path[-1] in required:
                doc = _delete(valid, path)
                yield f"v{version} delete {path}", _json_text(doc).encode(), doc
            if path and isinstance(path[-1], int) and path[0] == "sub_policies":  # every list emptied
                doc = _replace(valid, path[:-1], [])
                yield f"v{version} empty {path[:-1]}", _json_text(doc).encode(), doc
    for path in [(), ("sub_policies", 0, 0), ("sub_policies", 1, 0), ("baseline",)]:
        for key in ("extra", "Format_version", "sub_policy", "probability", "", "\u0000", "x" * 10_000):
            doc = _replace(VALID_POLICY, path, {**_data_at(path), key: 1})
            if doc != VALID_POLICY:
                yield f"unknown key {key[:12]!r} at {path}", _json_text(doc).encode(), doc
    text = _valid_text()
    # Duplicate keys, which json.loads would silently resolve to the last one.
    for key in ("format_version", "name", "sub_policies", "metadata", "op", "prob", "level", "dataset", "baseline",
                "pad_crop", "hflip"):
        needle = f'"{key}": '
        at = text.index(needle)
        value_end = at + len(needle) + len(json.dumps(_first_value(key)))
        duplicate = text[:value_end] + ", " + text[at:value_end] + text[value_end:]
        yield f"duplicate {key}", duplicate.encode(), NOT_JSON
    # Every truncation of the text, and invalid UTF-8 at every offset.
    for end in range(len(text)):
        yield f"truncated at {end}", text[:end].encode(), NOT_JSON
    raw = text.encode()
    for at in range(0, len(raw) + 1):
        for junk in (b"\xff", b"\xc3", b"\xed\xa0\x80"):  # an invalid byte, a cut sequence, a UTF-8 surrogate
            yield f"bad utf-8 {junk!r} at {at}", raw[:at] + junk + raw[at:], NOT_JSON
    # Encodings and byte-order marks around a document that is wrong anyway.
    wrong = json.dumps({**VALID_POLICY, "format_version": 4})
    for label, data in [("utf-16", text.encode("utf-16")), ("utf-16-le", text.encode("utf-16-le")),
                        ("utf-32", text.encode("utf-32")), ("bom + wrong", b"\xef\xbb\xbf" + wrong.encode()),
                        ("two boms", b"\xef\xbb\xbf\xef\xbb\xbf" + raw), ("bom only", b"\xef\xbb\xbf"),
                        ("latin-1 name", json.dumps({**VALID_POLICY, "name": "\u00e9"}, ensure_ascii=False).encode("latin-1"))]:
        yield label, data, NOT_JSON
    # Empty, blank and non-object files.
    for label, data in [("empty", b""), ("blank", b"  \n\t "), ("nul", b"\x00"), ("nuls", b"\x00" * 1000),
                        ("null", b"null"), ("true", b"true"), ("number", b"1"), ("string", b'"policy"'),
                        ("array", b"[]"), ("array of policy", f"[{text}]".encode()), ("two documents", (text + text).encode()),
                        ("trailing garbage", (text + " x").encode()), ("comment", ("// c\n" + text).encode()),
                        ("single quotes", text.replace('"', "'").encode()), ("python literal", repr(VALID_POLICY).encode()),
                        ("yaml", yaml.safe_dump(VALID_POLICY).encode())]:
        yield label, data, NOT_JSON
    # Non-standard number literals and numbers too large to read.
    for where in ("format_version", "prob", "level", "pad_crop"):
        for literal in ("NaN", "Infinity", "-Infinity", "1e999", "-1e999", "9" * 5000, "-" + "9" * 5000,
                        "1" + "0" * 4300, "0x1", "+1", ".5", "1.", "01", "1e", "--1"):
            needle = f'"{where}": '
            at = text.index(needle) + len(needle)
            end = at + len(json.dumps(_first_value(where)))
            yield f"{where} = {literal[:10]}", (text[:at] + literal + text[end:]).encode(), NOT_JSON
    # Huge files: over the size limit in whitespace, in one string, in sub-policies.
    limit = policy_module.MAX_FILE_BYTES
    yield "padded past the limit", (text + " " * (limit - len(text) + 1)).encode(), NOT_JSON
    yield "huge name", json.dumps({**VALID_POLICY, "name": "x" * limit}).encode(), NOT_JSON
    step = {"op": "Rotate", "prob": 0.5, "level": 0.5}
    yield "huge policy", json.dumps({**VALID_POLICY, "sub_policies": [[step]] * (limit // 40)}).encode(), NOT_JSON


NOT_JSON = object()  # the document does not parse as JSON: only the file loader is checked


def _data_at(path: tuple) -> Any:
    value: Any = VALID_POLICY
    for part in path:
        value = value[part]
    return value


def _first_value(key: str) -> Any:
    for path in _paths(VALID_POLICY):
        if path and path[-1] == key:
            return _data_at(path)
    raise KeyError(key)


def _expect_policy_error(call: Callable[[], Any], label: str) -> None:
    try:
        result = call()
    except PolicyError:
        return
    except BaseException as exc:  # noqa: BLE001 - the point: no other exception may escape
        raise AssertionError(f"{label}: {type(exc).__name__} instead of PolicyError: {str(exc)[:200]}") from exc
    raise AssertionError(f"{label}: accepted as {result!r}")


def test_policy_corpus_gets_policy_error_from_file_and_dict(tmp_path):
    path = tmp_path / "policy.json"
    files = dicts = 0
    for label, data, parsed in policy_corpus():
        path.write_bytes(data)
        _expect_policy_error(lambda: Policy.load(path), label)
        files += 1
        if parsed is not NOT_JSON:
            _expect_policy_error(lambda: Policy.from_dict(parsed), label)
            dicts += 1
    assert files >= MIN_POLICY_DOCUMENTS, files
    assert dicts >= 500, dicts


def test_policy_errors_name_the_file_and_the_place(tmp_path):
    path = tmp_path / "p.json"
    cases = [
        (_replace(VALID_POLICY, ("sub_policies", 1, 0, "prob"), HUGE_INT), "sub_policies[1][0].prob"),
        (_replace(VALID_POLICY, ("sub_policies", 0, 1, "op"), "R" * 100_000), "sub_policies[0][1].op"),
        (_replace(VALID_POLICY, ("metadata", "extra"), Deep(100, "list")), "metadata.extra[0]...: nested deeper than 64 levels"),
        (_replace(VALID_POLICY, ("baseline", "pad_crop"), 1.0), "baseline.pad_crop: expected a whole number"),
    ]
    for doc, place in cases:
        path.write_text(_json_text(doc))
        with pytest.raises(PolicyError) as info:
            Policy.load(path)
        message = str(info.value)
        assert message.startswith(f"{path}: {place}"), message
        assert len(message) - len(str(path)) < 400 and "\n" not in message  # huge values are quoted shortened
    path.write_bytes(b'{"format_version": 1, "format_version": 1}')
    with pytest.raises(PolicyError, match="key 'format_version' appears twice"):
        Policy.load(path)
    path.write_bytes(b"\x89PNG\r\n")
    with pytest.raises(PolicyError, match=r"not UTF-8 text \(byte 0x89 at offset 0\)"):
        Policy.load(path)
    path.write_bytes(b"[" * 100_000)
    with pytest.raises(PolicyError, match="nested deeper than 64 levels"):
        Policy.load(path)


def test_parsed_data_that_is_not_json_gets_policy_error():
    """from_dict takes parsed data, possibly built in code: cycles, shared lists and non-JSON values."""
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    shared: Any = [0.5]
    for _ in range(12):
        shared = [shared] * 10  # 10**12 values reached through shared references
    cases = {"cycle": cycle, "shared": shared, "tuple": (1, 2), "set": {1}, "bytes": b"x", "object": object(),
             "int key": {1: "x"}, "tuple key": {(1, 2): "x"}, "complex": 1j}
    for label, value in cases.items():
        _expect_policy_error(lambda: Policy.from_dict(_replace(VALID_POLICY, ("metadata", "extra"), value)), label)


def test_policy_at_the_size_limit_still_loads(tmp_path):
    text = _valid_text()
    path = tmp_path / "p.json"
    path.write_text(text + " " * (policy_module.MAX_FILE_BYTES - len(text)))
    assert Policy.load(path) == Policy.from_dict(VALID_POLICY)
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())  # a byte-order mark, as some editors write
    assert Policy.load(path) == Policy.from_dict(VALID_POLICY)
    deep = _replace(VALID_POLICY, ("metadata", "extra"), Deep(policy_module.MAX_DEPTH - 2, "list").data())
    assert Policy.from_dict(deep).metadata["extra"] == deep["metadata"]["extra"]
    assert Policy.from_dict(VALID_POLICY_V1).baseline == Baseline()


def _policy_or_error(load: Callable[[], Policy], tmp: Path) -> None:
    """Either the package's error, or a valid policy that saves and loads back equal."""
    try:
        policy = load()
    except PolicyError:
        return
    policy.save(tmp)
    assert Policy.load(tmp) == policy


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | st.sampled_from(OP_NAMES),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["format_version", "sub_policies", "op", "prob", "level", "name", "metadata", "x"])
        | st.text(max_size=8), children, max_size=5),
    max_leaves=30)


@_settings("bytes")
@given(data=st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_random_bytes_get_policy_error(tmp_path, data):
    path = tmp_path / "policy.json"
    path.write_bytes(data)
    _policy_or_error(lambda: Policy.load(path), tmp_path / "out.json")


@_settings("json")
@given(value=json_values)
def test_random_json_values_get_policy_error(tmp_path, value):
    _policy_or_error(lambda: Policy.from_dict(value), tmp_path / "out.json")
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(value))
    _policy_or_error(lambda: Policy.load(path), tmp_path / "out.json")


def _mutations(valid: Any, values: st.SearchStrategy) -> st.SearchStrategy:
    """A valid document with one to three places replaced or deleted (a random-walk neighbour of it)."""
    paths = list(_paths(valid))

    @st.composite
    def mutate(draw):
        doc = copy.deepcopy(valid)
        for _ in range(draw(st.integers(1, 3))):
            live = [p for p in paths if _exists(doc, p)]
            path = draw(st.sampled_from(live))
            if path and draw(st.booleans()) and draw(st.booleans()):
                doc = _delete(doc, path)
            else:
                doc = _replace(doc, path, draw(values))
        return doc

    return mutate()


def _exists(doc: Any, path: tuple) -> bool:
    for part in path:
        if isinstance(doc, dict) and part in doc or isinstance(doc, list) and isinstance(part, int) and part < len(doc):
            doc = doc[part]
        else:
            return False
    return True


@_settings("mutated")
@given(doc=_mutations(VALID_POLICY, json_values | st.sampled_from([HUGE_INT, math.nan, math.inf, -0.0, 1, 0])))
def test_mutated_policies_load_or_get_policy_error(tmp_path, doc):
    _policy_or_error(lambda: Policy.from_dict(doc), tmp_path / "out.json")
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(doc))
    _policy_or_error(lambda: Policy.load(path), tmp_path / "out.json")


unit = st.floats(0.0, 1.0)
valid_policies = st.builds(
    lambda subs, baseline: Policy([[Operation(*s) for s in sub] for sub in subs], name="p", metadata={"note": "x"},
                                  baseline=baseline),
    st.lists(st.lists(st.tuples(st.sampled_from(OP_NAMES), unit, unit), min_size=1, max_size=3), min_size=1, max_size=8),
    st.builds(Baseline, st.integers(0, 4096), st.booleans()))


@_settings("roundtrip")
@given(policy=valid_policies)
def test_valid_policies_round_trip(tmp_path, policy):
    path = policy.save(tmp_path / "policy.json")
    loaded = Policy.load(path)
    assert loaded == policy
    assert loaded.name == policy.name and loaded.metadata["note"] == "x" and loaded.baseline == policy.baseline
    assert Policy.from_dict(policy.to_dict()) == policy


# ---------------------------------------------------------------------------------------------------
# Search-space files
# ---------------------------------------------------------------------------------------------------

VALID_SPACE: dict[str, Any] = {
    "name": "fuzz",
    "description": "a space",
    "sub_policies": 2,
    "ops_per_sub_policy": 2,
    "probability": {"type": "discrete", "steps": 11, "range": [0.0, 1.0]},
    "level": {"type": "continuous", "range": [0.0, 1.0]},
    "ops": {"Rotate": {"level": [0.0, 0.5]}, "Invert": None, "ShearX": {"level": [0.1, 1.0]}},
}
VALID_SPACE_LIST_OPS = {**VALID_SPACE, "ops": ["Rotate", {"ShearX": {"level": [0.0, 0.5]}}, "Invert"]}

SPACE_COMMON_BAD = [None, [], {}, [None], *DEEP]
BAD_COUNT = [*SPACE_COMMON_BAD, True, False, 0, -1, 1.5, 2.0, "2", "", HUGE_INT, -HUGE_INT, math.nan, math.inf]
BAD_RANGE = [*SPACE_COMMON_BAD, 0, 0.5, "01", "[0, 1]", [0], [0, 1, 1], [1, 0], [-0.1, 1], [0, 1.1], ["a", 1],
             [math.nan, 1], [0, math.inf], [-math.inf, 1], [0, HUGE_INT], [-HUGE_INT, 0], [True, 1], [0, None],
             [[0], 1], {"low": 0, "high": 1}]
BAD_AXIS = [*SPACE_COMMON_BAD, True, 0, "continuous", ["continuous"], {"type": "Continuous"}, {"type": None},
            {"type": "discrete"}, {"steps": 3}, {"type": "continuous", "steps": 3}, {"type": "continuous", "x": 1},
            {"type": ["continuous"]}, {"type": {"continuous": None}}]
BAD_STEPS = [*SPACE_COMMON_BAD, True, False, 1, 0, -1, 2.5, 3.0, "3", spaces_module.MAX_STEPS + 1, HUGE_INT,
             math.nan, math.inf]
BAD_OPS = [*SPACE_COMMON_BAD, True, 0, "Rotate", ["Nope"], ["Rotate", "Rotate"], [5], [[]], [{}], ["rotate"],
           [{"Rotate": 1}], [{"Rotate": {"level": [2, 3]}}], [{"Rotate": None, "Invert": None}], {"Rotate": 5},
           {"Rotate": "x"}, {"Rotate": {"level": [0.5, 0.1]}}, {"Rotate": {"lvl": [0, 1]}}, {"Nope": None},
           {"": None}, {"R" * 100_000: None}]


def _bad_space_values(path: tuple) -> list[Any]:
    if path == ():
        return [None, True, 0, 1.5, "space", "", [], [VALID_SPACE], *DEEP]
    top = path[0]
    if top == "name" and len(path) == 1:
        return [*SPACE_COMMON_BAD, True, 0, 1.5, HUGE_INT, "", "   ", ["x"], {"x": "y"}]
    if top == "description":
        return [*SPACE_COMMON_BAD[1:], True, 0, 1.5, HUGE_INT, ["x"]]
    if top in ("sub_policies", "ops_per_sub_policy"):
        most = spaces_module.MAX_SUB_POLICIES if top == "sub_policies" else spaces_module.MAX_OPS_PER_SUB_POLICY
        return [*BAD_COUNT, most + 1]
    if top in ("probability", "level") and len(path) == 1:
        return BAD_AXIS
    if top in ("probability", "level") and path[-1] == "type":
        return [*SPACE_COMMON_BAD, True, 0, "", "Discrete", "uniform"]
    if path[-1] == "steps":
        return BAD_STEPS
    if path[-1] in ("range", "level") or (len(path) >= 2 and path[-2] in ("range", "level")):
        return BAD_RANGE if path[-1] in ("range", "level") else [*SPACE_COMMON_BAD, True, "0", -1, 2, math.nan, HUGE_INT]
    if top == "ops" and len(path) == 1:
        return BAD_OPS
    if top == "ops" and len(path) == 2:
        return [[], [None], *DEEP, True, 0, "x", {"level": [0, 2]}, {"lvl": [0, 1]}, {"level": None}]
    return list(DEEP)


def _space_yaml(value: Any, flow: bool = True) -> str:
    """YAML text for a space document that may hold Deep markers (written as text)."""
    if isinstance(value, Deep):
        return value.yaml()
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_space_yaml(k)}: {_space_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_space_yaml(v) for v in value) + "]"
    if isinstance(value, float) and math.isnan(value):
        return ".nan"
    if isinstance(value, float) and math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    return json.dumps(value) if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()


def space_corpus() -> Iterator[tuple[str, bytes, Any]]:
    """(label, file bytes, parsed data or NOT_YAML) for every malformed document of the space corpus."""
    for valid in (VALID_SPACE, VALID_SPACE_LIST_OPS):
        for path in _paths(valid):
            for k, bad in enumerate(_bad_space_values(path)):
                doc = _replace(valid, path, bad)
                yield f"replace {path} #{k}", _space_yaml(doc).encode(), _data(doc)
            if len(path) == 1 and path[0] != "description" or path[-1:] in (("type",), ("steps",)):
                doc = _delete(valid, path)
                yield f"delete {path}", _space_yaml(doc).encode(), doc
        for path in [(), ("probability",), ("level",), ("ops", "Rotate")] if valid is VALID_SPACE else [()]:
            for key in ("extra", "Name", "sub_policy", "op", "levels", "", "x" * 10_000):
                doc = _replace(valid, path, {**_space_at(valid, path), key: 1})
                yield f"unknown key {key[:12]!r} at {path}", _space_yaml(doc).encode(), doc
    text = _space_yaml(VALID_SPACE)
    block = yaml.safe_dump(VALID_SPACE, sort_keys=False)
    for key in ("name", "sub_policies", "probability", "type", "ops", "Rotate", "level"):
        at = text.index(f'"{key}": ')
        yield f"duplicate {key}", (text[:at] + f'"{key}": 1, ' + text[at:]).encode(), NOT_YAML
    for end in range(len(text)):  # a flow mapping cut anywhere is unclosed
        yield f"truncated at {end}", text[:end].encode(), NOT_YAML
    raw = text.encode()
    for at in range(0, len(raw) + 1):
        for junk in (b"\xff", b"\xc3", b"\xed\xa0\x80"):
            yield f"bad utf-8 {junk!r} at {at}", raw[:at] + junk + raw[at:], NOT_YAML
    for label, data in [("utf-16", block.encode("utf-16")), ("utf-32", block.encode("utf-32")),
                        ("latin-1", block.replace("a space", "\u00e9t\u00e9").encode("latin-1")),
                        ("empty", b""), ("blank", b" \n\n "), ("comment only", b"# nothing\n"), ("nul", b"\x00"),
                        ("null", b"null"), ("tilde", b"~"), ("number", b"5"), ("string", b"fast_autoaugment"),
                        ("list", b"- name: x\n"), ("list of space", ("- " + text).encode()),
                        ("two documents", (block + "---\n" + block).encode()), ("document end only", b"...\n"),
                        ("tab indent", block.replace("  ", "\t").encode()), ("json array", b"[1, 2]"),
                        ("bom + list", b"\xef\xbb\xbf[1]"), ("yes as name", block.replace("name: fuzz", "name: yes").encode()),
                        ("date as name", block.replace("name: fuzz", "name: 2001-12-14").encode()),
                        ("null as name", block.replace("name: fuzz", "name: ~").encode()),
                        ("octal count", block.replace("sub_policies: 2", "sub_policies: 0o777777777777").encode()),
                        ("hex count", block.replace("sub_policies: 2", "sub_policies: 0xFFFFFFFFFFFF").encode()),
                        ("sexagesimal count", block.replace("sub_policies: 2", "sub_policies: 190:20:30").encode()),
                        ("digits count", block.replace("sub_policies: 2", "sub_policies: " + "9" * 5000).encode()),
                        ("digits steps", block.replace("steps: 11", "steps: " + "9" * 5000).encode()),
                        ("inf steps", block.replace("steps: 11", "steps: .inf").encode()),
                        ("e999 range", block.replace("- 1.0\n", "- 1e999\n", 1).encode()),
                        ("huge range", block.replace("- 1.0\n", "- " + "9" * 4000 + "\n", 1).encode())]:
        yield label, data, NOT_YAML
    # Tags that would build Python objects, and other non-plain types, on a scalar, a list and a mapping.
    for tag in ("!!python/object:os.system", "!!python/object/apply:os.system", "!!python/object/new:os.system",
                "!!python/name:os.system", "!!python/module:os", "!!python/tuple", "!!python/bytes",
                "!!binary", "!!timestamp", "!!set", "!!omap", "!!pairs", "!!float", "!!int", "!!bool", "!!str",
                "!custom", "!<tag:example.com,2000:x>", "!!map", "!!seq", "!!null", "!!merge", "!"):
        for where in ('"name": ', '"sub_policies": ', '"ops": ', '"range": '):
            yield f"tag {tag} on {where}", text.replace(where, f"{where}{tag} ", 1).encode(), NOT_YAML
        yield f"tag {tag} at the top", f"{tag} {text}".encode(), NOT_YAML
        yield f"tag {tag} in a block", block.replace("name: fuzz", f"name: {tag} fuzz").encode(), NOT_YAML
    yield "merge key", (block + "x: &a {k: 1}\ny:\n  <<: *a\n").encode(), NOT_YAML
    # Alias bombs ("billion laughs") in every field and at the top level, and self-referencing aliases.
    bomb = "".join(f"_{i}: &l{i} [" + ", ".join([f"*l{i - 1}" if i else '"lol"'] * 9) + "]\n" for i in range(10))
    for where in ("name", "sub_policies", "ops", "probability", "description"):
        yield f"alias bomb in {where}", (bomb + block.replace(f"{where}:", f"{where}: *l9\n_{where}:", 1)).encode(), NOT_YAML
    yield "alias bomb only", bomb.encode(), NOT_YAML
    yield "alias bomb as a key", (bomb + "? *l9\n: 1\n").encode(), NOT_YAML
    for depth in (3, 6):
        small = "".join(f"_{i}: &m{i} [" + ", ".join([f"*m{i - 1}" if i else "0"] * 9) + "]\n" for i in range(depth))
        yield f"alias {9 ** depth} values", (small + block.replace("ops:", f"ops: *m{depth - 1}\n_ops:", 1)).encode(), NOT_YAML
    yield "self alias", b"&a [*a]\n", NOT_YAML
    yield "self alias map", b"&a {x: *a}\n", NOT_YAML
    yield "self alias in ops", block.replace("ops:", "ops: &a [*a]\n_ops:", 1).encode(), NOT_YAML
    yield "unknown alias", b"name: *nope\n", NOT_YAML
    # Deep nesting in block and flow styles, unhashable keys.
    yield "deep block", "".join(" " * i + "a:\n" for i in range(500)).encode(), NOT_YAML
    yield "deep block list", "".join(" " * i + "- \n" for i in range(500)).encode(), NOT_YAML
    for deep in DEEP:
        yield f"deep {deep.kind} {deep.depth} at the top", deep.yaml().encode(), NOT_YAML
    for key in ("[a, b]", "{a: 1}", "[*x]"):
        yield f"key {key}", (block + f"? {key}\n: 1\n").encode(), NOT_YAML
        yield f"ops key {key}", block.replace("ops:", f"ops: {{? {key} : 1}}\n_ops:", 1).encode(), NOT_YAML
    limit = spaces_module.MAX_FILE_BYTES
    yield "padded past the limit", (block + "#" * (limit - len(block) + 1)).encode(), NOT_YAML
    yield "huge description", block.replace("a space", "x" * limit).encode(), NOT_YAML
    yield "huge ops list", (block.split("ops:")[0] + "ops:\n" + "  - Rotate\n" * (limit // 10)).encode(), NOT_YAML


NOT_YAML = object()


def _space_at(doc: Any, path: tuple) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _expect_space_error(call: Callable[[], Any], label: str) -> None:
    try:
        result = call()
    except SpaceError:
        return
    except BaseException as exc:  # noqa: BLE001 - the point: no other exception may escape
        raise AssertionError(f"{label}: {type(exc).__name__} instead of SpaceError: {str(exc)[:200]}") from exc
    raise AssertionError(f"{label}: accepted as {result!r}")


def test_space_corpus_gets_space_error_from_file_and_dict(tmp_path):
    path = tmp_path / "space.yaml"
    files = dicts = 0
    for label, data, parsed in space_corpus():
        path.write_bytes(data)
        _expect_space_error(lambda: load_space(path), label)
        files += 1
        if parsed is not NOT_YAML:
            _expect_space_error(lambda: space_from_dict(parsed), label)
            dicts += 1
    assert files >= MIN_SPACE_DOCUMENTS, files
    assert dicts >= 500, dicts


def test_valid_spaces_of_the_corpus_load(tmp_path):
    """The corpus's starting points (and their text forms) are valid: every mutation is the bad part."""
    path = tmp_path / "space.yaml"
    for valid in (VALID_SPACE, VALID_SPACE_LIST_OPS):
        for text in (_space_yaml(valid), yaml.safe_dump(valid, sort_keys=False)):
            path.write_text(text)
            assert load_space(path) == space_from_dict(valid, source=str(path))
    path.write_bytes(b"\xef\xbb\xbf" + yaml.safe_dump(VALID_SPACE).encode())
    assert load_space(path).name == "fuzz"
    text = yaml.safe_dump(VALID_SPACE)
    path.write_text(text + "#" * (spaces_module.MAX_FILE_BYTES - len(text)))
    assert load_space(path).name == "fuzz"
    most, per = spaces_module.MAX_SLOTS, spaces_module.MAX_OPS_PER_SUB_POLICY  # each limit, within the slots'
    for sizes in ((spaces_module.MAX_SUB_POLICIES, most // spaces_module.MAX_SUB_POLICIES), (most // per, per)):
        space = space_from_dict({**VALID_SPACE, "sub_policies": sizes[0], "ops_per_sub_policy": sizes[1]})
        assert (space.sub_policies, space.ops_per_sub_policy) == sizes
    steps = {"type": "discrete", "steps": spaces_module.MAX_STEPS}
    assert len(space_from_dict({**VALID_SPACE, "level": steps}).level.values) == spaces_module.MAX_STEPS
    assert Policy.from_dict(VALID_POLICY).name == "fuzz"


def test_space_errors_name_the_file_and_the_key(tmp_path):
    path = tmp_path / "s.yaml"
    block = yaml.safe_dump(VALID_SPACE, sort_keys=False)
    bomb = "".join(f"_{i}: &l{i} [" + ", ".join([f"*l{i - 1}" if i else '"lol"'] * 9) + "]\n" for i in range(10))
    cases = [
        (block.replace("sub_policies: 2", "sub_policies: 1000000000"), "sub_policies: must be at most 100,"),
        (block.replace("steps: 11", "steps: 100000000000"), "probability.steps: must be at most 10001"),
        (block.replace("- 1.0\n", "- " + "9" * 400 + "\n", 1), "probability.range: must lie within [0, 1], got [0, 999"),
        (bomb + block, "more than 100000 values once aliases are expanded (line 6)"),
        ("[" * 1000, "nested deeper than 32 levels (line 1)"),
        ("{a: " * 33, "nested deeper than 32 levels (line 1)"),
        (block + "? [a, b]\n: 1\n", f"line {block.count(chr(10)) + 1}, column 3: invalid YAML: a key must be a plain "
                                    "value, got list ['a', 'b']"),
        (block.replace("name: fuzz", "name: [" + "x" * 100_000 + "]"), "name: must be a non-empty string, got ['xxx"),
        (block.replace("sub_policies: 2", "sub_policies: !!int x"), "line 3: tag 'tag:yaml.org,2002:int' is not allowed"),
    ]
    for text, expected in cases:
        path.write_text(text)
        with pytest.raises(SpaceError) as info:
            load_space(path)
        assert str(info.value).startswith(f"{path}: {expected}"), str(info.value)[:300]
        assert len(str(info.value)) < 500
    path.write_bytes(b"name: \xe9t\xe9\n")
    with pytest.raises(SpaceError, match=r"not UTF-8 text \(byte 0xe9 at offset 6\)"):
        load_space(path)


def test_decoding_rejects_numbers_too_large_for_a_float():
    space = space_from_dict(VALID_SPACE)
    params = space.sample(__import__("numpy").random.default_rng(0))
    with pytest.raises(SpaceError, match=r"params\.prob_0_0: must be a number, got 1000"):
        space.decode_params({**params, "prob_0_0": HUGE_INT})


def _space_or_error(load: Callable[[], SearchSpace]) -> None:
    """Either the package's error, or a valid space that rebuilds from its own dict."""
    try:
        space = load()
    except SpaceError:
        return
    assert space_from_dict(space.to_dict(), source=space.source) == space


yaml_keys = st.sampled_from(["name", "description", "sub_policies", "ops_per_sub_policy", "probability", "level",
                             "ops", "type", "steps", "range", *OP_NAMES[:4]]) | st.text(max_size=6)
yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.sampled_from(["continuous", "discrete", *OP_NAMES]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(yaml_keys, children, max_size=5),
    max_leaves=30)
yaml_fragments = st.sampled_from(["&a ", "*a ", "!!python/object:os.system ", "!!binary ", "? ", ": ", "- ", "[", "]",
                                  "{", "}", ", ", "\n", "  ", "\t", "#", "'", '"', "|\n", ">\n", "---\n", "...\n",
                                  "name: ", "ops: ", "<<: ", "~", ".inf", ".nan", "0x", "1e999", "\\u0000"])


@_settings("yaml_text")
@given(parts=st.lists(yaml_fragments | st.text(max_size=10), max_size=40) | st.binary(max_size=300).map(lambda b: [b]))
def test_random_yaml_text_gets_space_error(tmp_path, parts):
    path = tmp_path / "space.yaml"
    data = parts[0] if parts and isinstance(parts[0], bytes) else "".join(parts).encode("utf-8", "surrogatepass")
    path.write_bytes(data)
    _space_or_error(lambda: load_space(path))


@_settings("space_data")
@given(value=yaml_values)
def test_random_space_data_gets_space_error(tmp_path, value):
    _space_or_error(lambda: space_from_dict(value))
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(value))
    _space_or_error(lambda: load_space(path))


@_settings("space_mutated")
@given(doc=_mutations(VALID_SPACE, yaml_values | st.sampled_from([HUGE_INT, math.nan, math.inf, 0, -1, 10**6])))
def test_mutated_spaces_load_or_get_space_error(tmp_path, doc):
    _space_or_error(lambda: space_from_dict(doc))
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    _space_or_error(lambda: load_space(path))
