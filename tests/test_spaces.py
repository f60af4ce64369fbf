"""Search spaces: shipped files, parameter encoding, decoding, and the error messages of bad files."""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import yaml

from policysearch.search import spaces
from policysearch.search.spaces import (
    Parameter,
    SearchSpace,
    SpaceError,
    list_spaces,
    load_space,
    space_from_dict,
)

SHIPPED = ["autoaugment", "fast_autoaugment", "no_flips", "wide"]
FAA_OPS = (
    "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "AutoContrast", "Invert", "Equalize",
    "Solarize", "Posterize", "Contrast", "Color", "Brightness", "Sharpness", "Cutout",
)  # fmt: skip


def minimal(**overrides) -> dict:
    """A small valid space as parsed YAML; overrides replace (or, with value ..., delete) keys."""
    data = {
        "name": "tiny",
        "description": "for tests",
        "sub_policies": 2,
        "ops_per_sub_policy": 2,
        "probability": {"type": "continuous"},
        "level": {"type": "continuous"},
        "ops": ["ShearX", "Rotate", "Invert"],
    }
    for key, value in overrides.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    return data


def write_space(tmp_path: Path, data: dict | str, name: str = "mine.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


# ---- shipped spaces ----------------------------------------------------------------------------


def test_list_spaces_names_every_shipped_file():
    assert set(SHIPPED) <= set(list_spaces())
    assert list_spaces() == sorted(list_spaces())


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_space_loads_and_round_trips(name):
    space = load_space(name)
    assert isinstance(space, SearchSpace)
    assert space.name == name
    assert space.description
    assert space.source == f"search_spaces/{name}.yaml"
    assert len(space.ops) == len(set(space.ops)) == len(space.level_ranges)
    assert set(space.ops) <= set(spaces.default_op_names())
    rebuilt = space_from_dict(space.to_dict(), source=space.source)
    assert rebuilt == space
    # to_dict is plain data, safe to write into a run's config file
    assert yaml.safe_load(yaml.safe_dump(space.to_dict())) == space.to_dict()


def test_shipped_spaces_are_found_through_importlib_resources():
    folder = resources.files("policysearch") / "search_spaces"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".yaml"))
    assert names == [f"{n}.yaml" for n in list_spaces()]
    # the packaged folder and the repository folder are the same files in a checkout
    repo_file = Path(__file__).resolve().parents[1] / "search_spaces" / "fast_autoaugment.yaml"
    if repo_file.exists():
        assert (folder / "fast_autoaugment.yaml").read_text() == repo_file.read_text()


def test_fast_autoaugment_has_the_papers_30_parameters():
    space = load_space("fast_autoaugment")
    assert space.ops == FAA_OPS
    assert (space.sub_policies, space.ops_per_sub_policy) == (5, 2)
    params = space.parameters()
    assert len(params) == 30
    assert [p.name for p in params[:6]] == ["op_0_0", "prob_0_0", "level_0_0", "op_0_1", "prob_0_1", "level_0_1"]
    assert params[-1].name == "level_4_1"
    by_kind = {p.name.split("_")[0]: p for p in params}
    assert by_kind["op"] == Parameter("op_4_1", "choice", choices=FAA_OPS)
    assert by_kind["prob"] == Parameter("prob_4_1", "uniform", low=0.0, high=1.0)
    assert by_kind["level"] == Parameter("level_4_1", "uniform", low=0.0, high=1.0)


def test_autoaugment_is_discrete_11_probabilities_by_10_levels():
    space = load_space("autoaugment")
    assert space.ops == FAA_OPS + ("SamplePairing",)
    params = {p.name: p for p in space.parameters()}
    assert len(params) == 30
    prob, level = params["prob_2_1"], params["level_2_1"]
    assert prob.kind == level.kind == "grid"
    assert prob.values == pytest.approx([k / 10 for k in range(11)])
    assert prob.values[0] == 0.0 and prob.values[-1] == 1.0 and prob.values[3] == 0.3
    assert level.values == pytest.approx([k / 9 for k in range(10)])
    assert len(level.values) == 10


def test_no_flips_leaves_out_meaning_changing_ops():
    space = load_space("no_flips")
    for op in ("FlipLR", "FlipUD", "Invert", "Solarize", "SamplePairing"):
        assert op not in space.ops
    for op in ("Identity", "Rotate", "Contrast", "GaussianNoise", "Cutout"):
        assert op in space.ops
    assert space.level_range("Rotate") == (0.0, 0.5)
    assert space.level_range("Contrast") == (0.0, 1.0)


def test_wide_keeps_probabilities_high_and_offers_identity():
    space = load_space("wide")
    # every op but the pixel shifts, which are TranslateX/Y in another unit (TrivialAugmentWide's)
    assert set(space.ops) == set(spaces.default_op_names()) - {"TranslateXAbs", "TranslateYAbs"}
    assert "Identity" in space.ops
    prob = {p.name: p for p in space.parameters()}["prob_0_0"]
    assert (prob.kind, prob.low, prob.high) == ("uniform", 0.5, 1.0)


# ---- sampling and decoding ---------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_sample_then_decode(name):
    space = load_space(name)
    rng = np.random.default_rng(0)
    for _ in range(20):
        params = space.sample(rng)
        assert list(params) == [p.name for p in space.parameters()]
        subs = space.decode_params(params)
        assert len(subs) == space.sub_policies
        for sub in subs:
            assert len(sub) == space.ops_per_sub_policy
            for op, prob, level in sub:
                assert op in space.ops
                assert space.probability.low <= prob <= space.probability.high
                low, high = space.level_range(op)
                assert low <= level <= high


def test_sample_is_reproducible_and_discrete_values_come_from_the_grid():
    space = load_space("autoaugment")
    a = space.sample(np.random.default_rng(7))
    assert a == space.sample(np.random.default_rng(7))
    grid = {p.name: p.values for p in space.parameters()}
    for key, value in a.items():
        assert value in grid[key]


def test_decode_round_trip_keeps_every_slot_in_order():
    space = space_from_dict(minimal())
    params = {
        "op_0_0": "ShearX", "prob_0_0": 0.25, "level_0_0": 0.5,
        "op_0_1": "Rotate", "prob_0_1": 1.0, "level_0_1": 0.0,
        "op_1_0": "Invert", "prob_1_0": 0.0, "level_1_0": 1.0,
        "op_1_1": "ShearX", "prob_1_1": 0.75, "level_1_1": 0.125,
    }  # fmt: skip
    assert space.decode_params(params) == [
        [("ShearX", 0.25, 0.5), ("Rotate", 1.0, 0.0)],
        [("Invert", 0.0, 1.0), ("ShearX", 0.75, 0.125)],
    ]


def test_decode_snaps_discrete_values_and_tolerates_rounding():
    space = space_from_dict(
        minimal(probability={"type": "discrete", "steps": 11}, level={"type": "discrete", "steps": 10})
    )
    params = space.sample(np.random.default_rng(0))
    params.update({"prob_0_0": 0.33, "level_0_0": 0.5, "op_0_0": "Rotate", "prob_0_1": 1.0 + 1e-12})
    subs = space.decode_params(params)
    assert subs[0][0] == ("Rotate", pytest.approx(0.3), pytest.approx(4 / 9))
    assert subs[0][1][1] == 1.0


def test_level_range_restriction_maps_the_unit_level_into_the_range():
    ops = {"Rotate": {"level": [0.2, 0.6]}, "ShearX": None, "Cutout": {"level": [0.5, 0.5]}}
    space = space_from_dict(minimal(ops=ops, sub_policies=1))
    assert space.level_ranges == ((0.2, 0.6), (0.0, 1.0), (0.5, 0.5))
    # the search still proposes levels on [0, 1] ...
    assert {(p.low, p.high) for p in space.parameters() if p.name.startswith("level")} == {(0.0, 1.0)}

    def decode(op, level):
        first = {"op_0_0": op, "prob_0_0": 1.0, "level_0_0": level}
        second = {"op_0_1": "ShearX", "prob_0_1": 0.5, "level_0_1": level}
        return space.decode_params(first | second)[0]

    # ... and decoding maps them linearly onto the op's range
    assert decode("Rotate", 0.0)[0][2] == pytest.approx(0.2)
    assert decode("Rotate", 0.5)[0][2] == pytest.approx(0.4)
    assert decode("Rotate", 1.0)[0][2] == pytest.approx(0.6)
    assert decode("Rotate", 1.0)[1][2] == pytest.approx(1.0)  # ShearX keeps the full range
    assert decode("Cutout", 0.9)[0][2] == pytest.approx(0.5)  # a fixed strength


def test_discrete_levels_in_a_restricted_range_keep_their_count():
    space = space_from_dict(
        minimal(level={"type": "discrete", "steps": 3}, ops={"Rotate": {"level": [0.0, 0.5]}}, sub_policies=1)
    )
    seen = set()
    for unit in (0.0, 0.2, 0.5, 0.8, 1.0):
        params = {"op_0_0": "Rotate", "prob_0_0": 1.0, "level_0_0": unit}
        params |= {"op_0_1": "Rotate", "prob_0_1": 1.0, "level_0_1": 0.0}
        seen.add(space.decode_params(params)[0][0][2])
    assert sorted(seen) == pytest.approx([0.0, 0.25, 0.5])


def test_discrete_levels_in_a_range_are_grid_values_without_float_noise():
    """Regression (a trial): candidates.json held levels such as 0.2999999999997 for a grid value of 0.3."""
    space = space_from_dict(
        minimal(level={"type": "discrete", "steps": 4}, ops={"Rotate": {"level": [0.0, 0.9]}}, sub_policies=1)
    )
    levels = []
    for unit in (0.0, 1 / 3, 2 / 3, 1.0):
        params = {"op_0_0": "Rotate", "prob_0_0": 1.0, "level_0_0": unit}
        params |= {"op_0_1": "Rotate", "prob_0_1": 1.0, "level_0_1": 0.0}
        levels.append(space.decode_params(params)[0][0][2])
    assert levels == [0.0, 0.3, 0.6, 0.9]  # exactly: as written to candidates.json and policy.json


def test_a_probability_range_that_never_applies_an_op_is_refused():
    """A trial's find: probability range [0, 0] was searched in full, every candidate the identity."""
    for kind in ({"type": "continuous"}, {"type": "discrete", "steps": 3}):
        with pytest.raises(SpaceError, match=r"probability\.range: \[0, 0\] never applies an op, so every policy "
                                             r"would be the identity"):
            space_from_dict(minimal(probability={**kind, "range": [0.0, 0.0]}))
    assert space_from_dict(minimal(probability={"type": "continuous", "range": [0.0, 0.1]})).probability.high == 0.1


def test_global_ranges_apply_to_probability_and_to_ops_without_their_own_range():
    space = space_from_dict(
        minimal(
            probability={"type": "discrete", "steps": 3, "range": [0.5, 1.0]},
            level={"type": "continuous", "range": [0.3, 0.9]},
            ops=["ShearX", {"Rotate": {"level": [0.0, 0.2]}}],
        )
    )
    assert space.level_ranges == ((0.3, 0.9), (0.0, 0.2))
    prob = space.parameters()[1]
    assert prob.values == (0.5, 0.75, 1.0)
    params = space.sample(np.random.default_rng(1))
    params["prob_0_0"] = 0.2
    with pytest.raises(SpaceError, match=r"params\.prob_0_0: 0\.2 is outside \[0\.5, 1\]"):
        space.decode_params(params)


@pytest.mark.parametrize(
    "change, pattern",
    [
        (lambda p: p.pop("level_1_1"), r"<dict>: params: missing key 'level_1_1'"),
        (lambda p: p.update(op_9_9="Rotate"), r"<dict>: params: unexpected key 'op_9_9'"),
        (lambda p: p.update(op_0_1="Solarize"), r"params\.op_0_1: 'Solarize' is not an op of space 'tiny'"),
        (lambda p: p.update(op_0_1="Rotat"), r"params\.op_0_1: .*did you mean 'Rotate'"),
        (lambda p: p.update(prob_0_0="high"), r"params\.prob_0_0: must be a number, got 'high'"),
        (lambda p: p.update(level_1_0=1.5), r"params\.level_1_0: 1\.5 is outside \[0, 1\]"),
        (lambda p: p.update(level_1_0=float("nan")), r"params\.level_1_0: must be a number"),
    ],
)
def test_decode_rejects_bad_parameter_sets(change, pattern):
    space = space_from_dict(minimal())
    params = space.sample(np.random.default_rng(0))
    change(params)
    with pytest.raises(SpaceError, match=pattern):
        space.decode_params(params)


def test_decode_accepts_numpy_scalars():
    space = space_from_dict(minimal(sub_policies=1))
    params = {"op_0_0": np.str_("Rotate"), "prob_0_0": np.float64(0.5), "level_0_0": np.float32(0.25),
              "op_0_1": "ShearX", "prob_0_1": np.int64(1), "level_0_1": 0}  # fmt: skip
    sub = space.decode_params(params)[0]
    assert sub == [("Rotate", 0.5, 0.25), ("ShearX", 1.0, 0.0)]
    assert all(type(v) is float for _, p, lv in sub for v in (p, lv))
    assert all(type(op) is str for op, _, _ in sub)


def test_decode_builds_a_policy():
    policy = pytest.importorskip("policysearch.augment.policy", reason="policysearch.augment.policy is not on this branch yet")

    space = load_space("fast_autoaugment")
    assert isinstance(space.decode(space.sample(np.random.default_rng(0))), policy.Policy)


# ---- user files --------------------------------------------------------------------------------


def test_a_users_yaml_path_loads(tmp_path):
    text = """
# my space
name: mine
sub_policies: 3
ops_per_sub_policy: 1
probability: {type: discrete, steps: 5}
level: {type: continuous}
ops:
  - Rotate: {level: [0.1, 0.3]}
  - Cutout
"""
    path = write_space(tmp_path, text)
    for arg in (path, str(path)):
        space = load_space(arg)
        assert space.name == "mine"
        assert space.description == ""
        assert space.source == str(path)
        assert space.ops == ("Rotate", "Cutout")
        assert space.level_ranges == ((0.1, 0.3), (0.0, 1.0))
        assert len(space.parameters()) == 9


def test_known_ops_can_be_given(tmp_path):
    path = write_space(tmp_path, minimal(ops=["Wobble"]))
    assert load_space(path, known_ops=["Wobble"]).ops == ("Wobble",)
    with pytest.raises(SpaceError, match="unknown op 'Wobble'"):
        load_space(path)


# ---- error messages: one line, naming the file and the key -------------------------------------


@pytest.mark.parametrize(
    "data, key, problem",
    [
        (minimal(ops=["ShearX", "Rotate", "Invert", "Rotat"]), "ops[3]", "unknown op 'Rotat' (did you mean 'Rotate'?)"),
        (minimal(ops=["shearx"]), "ops[0]", "unknown op 'shearx' (did you mean 'ShearX'?)"),
        (minimal(ops={"Rotate": None, "Equalise": None}), "ops.Equalise", "did you mean 'Equalize'?"),
        (minimal(ops=["Rotate", "Rotate"]), "ops[1]", "op 'Rotate' is listed twice"),
        (minimal(ops=[]), "ops", "must name at least one op"),
        (minimal(ops={}), "ops", "must name at least one op"),
        (minimal(ops="Rotate"), "ops", "must be a list of op names or a mapping"),
        (minimal(ops=[3]), "ops[0]", "must be an op name, got int 3"),
        (minimal(probability={"type": "foo"}), "probability.type", "must be 'continuous' or 'discrete', got 'foo'"),
        (minimal(level={"steps": 10}), "level.type", "missing required key"),
        (minimal(level="continuous"), "level", "must be a mapping like {type: continuous}"),
        (minimal(probability={"type": "discrete"}), "probability.steps", "missing required key"),
        (minimal(probability={"type": "discrete", "steps": 1}), "probability.steps", "must be at least 2, got 1"),
        (minimal(level={"type": "discrete", "steps": 2.5}), "level.steps", "must be an integer"),
        (minimal(level={"type": "continuous", "steps": 10}), "level.steps", "unknown key"),
        (minimal(level={"type": "continuous", "range": [0.5, 0.2]}), "level.range", "low must not exceed high"),
        (minimal(ops={"Rotate": {"level": [0.0, 1.5]}}), "ops.Rotate.level", "must lie within [0, 1], got [0, 1.5]"),
        (minimal(ops=[{"Rotate": {"level": [-0.1, 0.5]}}]), "ops[0].level", "must lie within [0, 1]"),
        (minimal(ops={"Rotate": {"level": [0.6, 0.4]}}), "ops.Rotate.level", "low must not exceed high, got [0.6, 0.4]"),
        (minimal(ops={"Rotate": {"level": 0.5}}), "ops.Rotate.level", "must be a list [low, high] of two numbers"),
        (minimal(ops={"Rotate": {"levels": [0, 1]}}), "ops.Rotate.levels", "unknown key (did you mean 'level'?)"),
        (minimal(ops={"Rotate": 0.5}), "ops.Rotate", "options must be a mapping"),
        (minimal(ops={"Invert": {"level": [0.0, 0.5]}}), "ops.Invert.level",
         "Invert has no magnitude (it always has the same effect), so a level range means nothing for it"),
        (minimal(sub_policies=...), "sub_policies", "missing required key"),
        (minimal(name=...), "name", "missing required key"),
        (minimal(sub_policies="5"), "sub_policies", "must be an integer, got str '5'"),
        (minimal(sub_policies=True), "sub_policies", "must be an integer"),
        (minimal(ops_per_sub_policy=0), "ops_per_sub_policy", "must be at least 1, got 0"),
        (minimal(name=""), "name", "must be a non-empty string"),
        (minimal(description=["x"]), "description", "must be a string"),
        (minimal(sub_policy=5), "sub_policy", "unknown key (did you mean 'sub_policies'?)"),
        # regression (a new user's trial): the typo itself was not named, only the key it stood for as missing
        (minimal(sub_policies=..., sub_policy=5), "sub_policy", "unknown key (did you mean 'sub_policies'?)"),
        # regression: a name over two lines split the first printed line and report.md
        (minimal(name="identity\nonly"), "name", "must be one line of printable text, got 'identity\\nonly'"),
        # regression: 1,000 x 10 slots passed, and phase 2 spent a minute building the optimiser's choices
        (minimal(sub_policies=51, ops_per_sub_policy=2), "sub_policies x ops_per_sub_policy",
         "at most 100 slots (each an op, a probability and a level for the optimiser to propose), got 51 x 2 = 102"),
    ],
)
def test_bad_files_name_the_file_and_the_key(tmp_path, data, key, problem):
    path = write_space(tmp_path, data)
    with pytest.raises(SpaceError) as info:
        load_space(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert problem in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "text, problem",
    [
        ("- just\n- a list\n", "the file must hold a mapping of keys, got list"),
        ("", "the file must hold a mapping of keys, got nothing"),
        ("name: a\nname: b\n", "invalid YAML: "),
        ("name: [unclosed\n", "invalid YAML: "),
    ],
)
def test_bad_yaml_is_one_line_naming_the_file(tmp_path, text, problem):
    path = write_space(tmp_path, text)
    with pytest.raises(SpaceError) as info:
        load_space(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and problem in message and "\n" not in message


@pytest.mark.parametrize(
    "text, where, problem",
    [
        ("name: x\nops:\n\t- Rotate\n", "line 3, column 1", "(a tab: YAML indents with spaces)"),
        ("name: x\nsub_policies: [2\nops: 3\n", "line 3, column 4",
         "did not find expected ',' or ']' (while parsing a flow sequence that began on line 2)"),
    ],
)
def test_a_yaml_error_says_where_and_what_in_the_users_words(tmp_path, text, where, problem):
    """PyYAML's own text names "<unicode string>" twice and never says that a tab is the problem."""
    path = write_space(tmp_path, text)
    with pytest.raises(SpaceError) as info:
        load_space(path)
    assert str(info.value).startswith(f"{path}: {where}: invalid YAML: ")
    assert problem in str(info.value) and "unicode string" not in str(info.value)


def test_a_level_range_on_an_op_without_magnitude_is_accepted_where_it_is_the_default(tmp_path):
    """``to_dict`` writes every op with its range, so a saved space with Invert at the default range reloads."""
    space = space_from_dict(minimal(ops=["Invert", "Rotate"], level={"type": "continuous", "range": [0.0, 0.5]}))
    assert space_from_dict(space.to_dict()) == space


def test_a_copy_of_a_shipped_space_may_keep_its_name_only_unchanged(tmp_path):
    """The name is what the run, the report and the policy record: a changed copy under a shipped name would
    pass for the shipped space."""
    shipped = (resources.files("policysearch") / "search_spaces" / "no_flips.yaml").read_text(encoding="utf-8")
    same = tmp_path / "same.yaml"
    same.write_text(shipped, encoding="utf-8")
    assert load_space(same).to_dict() == load_space("no_flips").to_dict()
    changed = tmp_path / "changed.yaml"
    changed.write_text(shipped.replace("sub_policies: 5", "sub_policies: 3"), encoding="utf-8")
    assert "sub_policies: 3" in changed.read_text(encoding="utf-8")
    with pytest.raises(SpaceError, match=rf"^{re.escape(str(changed))}: name: 'no_flips' is the name of a shipped "
                                         "space, which this file differs from; give your space a name of its own$"):
        load_space(changed)
    changed.write_text(changed.read_text(encoding="utf-8").replace("name: no_flips", "name: my_no_flips"),
                       encoding="utf-8")
    assert load_space(changed).name == "my_no_flips"


def test_duplicate_keys_are_reported(tmp_path):
    text = (
        "name: t\nsub_policies: 1\nops_per_sub_policy: 1\nprobability: {type: continuous}\n"
        "level: {type: continuous}\nops:\n  ShearX:\n  ShearX:\n"
    )
    with pytest.raises(SpaceError, match="invalid YAML: .*duplicate key 'ShearX'"):
        load_space(write_space(tmp_path, text))


def test_unknown_shipped_name_suggests_and_lists():
    with pytest.raises(SpaceError) as info:
        load_space("fast_autoaugmnt")
    message = str(info.value)
    assert message.startswith("--space fast_autoaugmnt: no shipped search space")
    assert "did you mean 'fast_autoaugment'?" in message and "shipped: autoaugment" in message


def test_a_space_file_is_found_as_a_user_writes_it(tmp_path, monkeypatch):
    """Regression: MINE.YAML was looked up as a shipped name (the suffix check was case-sensitive), a file
    without a suffix in the current folder got no word about it, and an empty --space ran the default."""
    shipped = (resources.files("policysearch") / "search_spaces" / "no_flips.yaml").read_text(encoding="utf-8")
    (tmp_path / "MINE.YAML").write_text(shipped, encoding="utf-8")
    (tmp_path / "myspace").write_text(shipped, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert load_space("MINE.YAML").ops == load_space("no_flips").ops
    with pytest.raises(SpaceError, match=r"no shipped search space of that name.*; for the file myspace here, "
                                         r"write \./myspace$"):
        load_space("myspace")
    assert load_space("./myspace").ops == load_space("no_flips").ops
    (tmp_path / "adir.json").mkdir()  # regression (a trial): a folder was called a file, to be written ./adir.json
    with pytest.raises(SpaceError, match=r"no shipped search space of that name.*; adir.json here is a folder, not "
                                         r"a search space file$"):
        load_space("adir.json")
    from policysearch.search.config import SearchConfig, SettingsError

    assert SearchConfig(space="MINE.YAML").space == str(tmp_path / "MINE.YAML")  # kept absolute, as a file
    with pytest.raises(SettingsError, match=r"--space is empty; give a shipped space's name"):
        SearchConfig(space="")


def test_merge_keys_and_pipes_are_refused_in_one_line(tmp_path):
    """Regression (a new user's trial): a YAML merge key (<<) gave PyYAML's "could not determine a constructor
    for the tag", and a named pipe as --space waited for a writer for ever."""
    text = "name: mk\nsub_policies: 2\nops_per_sub_policy: 2\nprobability: {type: continuous}\n" \
           "level: {type: continuous}\nops:\n  Rotate:\n    <<: {level: [0, 0.5]}\n"
    path = write_space(tmp_path, text)
    with pytest.raises(SpaceError, match=r"line 8, column 5: .*merge keys \(<<\) are not supported; write the keys "
                                          r"out \(an alias, \*name, works\)"):
        load_space(path)
    pipe = tmp_path / "pipe.yaml"
    os.mkfifo(pipe)
    with pytest.raises(SpaceError, match=r"pipe.yaml: not a regular file \(a pipe or a device\)"):
        load_space(pipe)
    assert load_space(write_space(tmp_path, minimal(sub_policies=50, ops_per_sub_policy=2))).sub_policies == 50
    # the pipe check raised the file system's own error for a name it cannot look at (a review's find)
    with pytest.raises(SpaceError, match=r"cannot read search space file \(File name too long\)"):
        load_space("a" * 300 + ".yaml")


@pytest.mark.parametrize("name", ["データ\u3000空間", "café\xa0noir", "می\u200cخواهم", "🙂 mine", "Ünïcode space"])
def test_a_space_name_in_any_script_is_taken(tmp_path, name):
    """A review found that the first one-line check (str.isprintable) refused no-break and ideographic spaces
    and the joiners of Persian and emoji."""
    assert load_space(write_space(tmp_path, minimal(name=name))).name == name


@pytest.mark.parametrize("name", ["ok\u202eevil", "a\u2028b", "tab\x00nul"])
def test_a_space_name_that_would_break_its_line_is_refused(tmp_path, name):
    with pytest.raises(SpaceError, match="name: must be one line of printable text"):
        load_space(write_space(tmp_path, minimal(name=name)))


def test_a_misspelt_axis_key_is_named(tmp_path):
    with pytest.raises(SpaceError, match=r"probability\.typ: unknown key \(did you mean 'type'\?\)"):
        load_space(write_space(tmp_path, minimal(probability={"typ": "continuous"})))


def test_a_missing_file_named_like_a_shipped_space_names_it_as_the_api_and_the_command_line_say_it(tmp_path,
                                                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpaceError) as info:
        load_space("no_flips.yaml")
    assert str(info.value) == ("no_flips.yaml: cannot read search space file (No such file or directory); the "
                               "shipped space of that name is --space no_flips")
    assert str(info.value.worded(lambda name, value: f"{name}={value!r}")).endswith("is space='no_flips'")


def test_missing_file_is_a_space_error(tmp_path):
    with pytest.raises(SpaceError, match=r"nope\.yaml: cannot read search space file"):
        load_space(tmp_path / "nope.yaml")


def test_spaces_module_does_not_import_ray():
    source = Path(spaces.__file__).read_text()
    assert "import ray" not in source and "from ray" not in source
