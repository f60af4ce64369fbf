"""The policy model and its JSON file format: round trip, atomic save, and every validation message."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch

from policysearch.augment.ops import OP_NAMES
from policysearch.augment.policy import (
    FORMAT_VERSION,
    Baseline,
    Operation,
    Policy,
    PolicyError,
    merge_policies,
    policy_schema,
    validate_policy_dict,
)


def doc(subs=None, **extra) -> dict:
    """A valid policy document; ``subs`` replaces the sub-policies, ``extra`` adds or replaces keys."""
    subs = subs if subs is not None else [
        [{"op": "Rotate", "prob": 0.5, "level": 0.3}, {"op": "Invert", "prob": 0.2, "level": 0.0}],
        [{"op": "ShearX", "prob": 1.0, "level": 1.0}],
        [{"op": "Solarize", "prob": 0.0, "level": 0.0}],
        [{"op": "Color", "prob": 0.4, "level": 0.6}, {"op": "Posterize", "prob": 0.9, "level": 0.25}],
    ]
    return {"format_version": FORMAT_VERSION, "sub_policies": subs, **extra}


def write(path: Path, data) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def load_error(tmp_path: Path, data) -> str:
    path = write(tmp_path / "p.json", data)
    with pytest.raises(PolicyError) as info:
        Policy.load(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message[len(f"{path}: "):]


# --------------------------------------------------------------------------------------------- round trip


def test_save_load_round_trip_keeps_everything(tmp_path):
    policy = Policy.from_dict(doc(name="mine", metadata={"dataset": "digits", "score": {"acc": 0.93}, "note": [1, 2]}))
    out = policy.save(tmp_path / "sub" / "policy.json")  # parent folders are created
    loaded = Policy.load(out)
    assert loaded == policy
    assert loaded.sub_policies == policy.sub_policies
    assert loaded.name == "mine"
    assert loaded.metadata["dataset"] == "digits"
    assert loaded.metadata["score"] == {"acc": 0.93}
    assert loaded.metadata["note"] == [1, 2]
    assert loaded.metadata["created"]  # filled on save
    assert {"policysearch", "python", "torch", "torchvision", "pillow"} <= set(loaded.metadata["software"])
    # Saving again keeps the recorded creation time and software, and the file reads back the same.
    again = loaded.save(tmp_path / "again.json")
    assert json.loads(again.read_text()) == json.loads(out.read_text())


def test_floats_survive_exactly(tmp_path):
    policy = Policy([[("Rotate", 0.1 + 0.2, 1 / 3)]])
    assert Policy.load(policy.save(tmp_path / "p.json"))[0][0] == Operation("Rotate", 0.1 + 0.2, 1 / 3)


def test_save_does_not_change_the_policy_in_memory(tmp_path):
    policy = Policy([[("Rotate", 0.5, 0.5)]], metadata={"dataset": "digits"})
    policy.save(tmp_path / "p.json")
    assert policy.metadata == {"dataset": "digits"}


# --------------------------------------------------------------------------------------------- atomic save


def test_save_leaves_no_temporary_files(tmp_path):
    Policy.from_dict(doc()).save(tmp_path / "p.json")
    Policy.from_dict(doc()).save(tmp_path / "p.json")  # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json"]


def test_failed_save_keeps_the_previous_file(tmp_path):
    path = Policy.from_dict(doc(name="first")).save(tmp_path / "p.json")
    before = path.read_bytes()
    broken = Policy([[("Rotate", 0.5, 0.5)]])
    broken.metadata["oops"] = object()  # changed after it was built (which refuses it): not JSON-serialisable
    with pytest.raises(PolicyError, match="metadata.oops: object is not a JSON value"):
        broken.save(path)
    assert path.read_bytes() == before
    assert Policy.load(path).name == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json"]


# --------------------------------------------------------------------------------------------- validation


def test_prob_outside_range_names_the_place(tmp_path):
    data = doc()
    data["sub_policies"].insert(3, [{"op": "Rotate", "prob": 0.5, "level": 0.5}, {"op": "Rotate", "prob": 1.7, "level": 0.5}])
    assert load_error(tmp_path, data) == "sub_policies[3][1].prob: 1.7 is outside [0, 1]"


def test_negative_level(tmp_path):
    data = doc()
    data["sub_policies"][0][0]["level"] = -0.1
    assert load_error(tmp_path, data) == "sub_policies[0][0].level: -0.1 is outside [0, 1]"


def test_unknown_op_suggests_the_closest_names(tmp_path):
    data = doc()
    data["sub_policies"][1][0]["op"] = "Rotat"
    message = load_error(tmp_path, data)
    assert message.startswith("sub_policies[1][0].op: unknown op 'Rotat' (closest: Rotate")


def test_unknown_op_without_a_close_name_lists_the_known_ones(tmp_path):
    data = doc()
    data["sub_policies"][0][1]["op"] = "zzzzzz"
    message = load_error(tmp_path, data)
    assert message.startswith("sub_policies[0][1].op: unknown op 'zzzzzz' (known: ShearX, ")


@pytest.mark.parametrize("key", ["op", "prob", "level"])
def test_missing_key(tmp_path, key):
    data = doc()
    del data["sub_policies"][2][0][key]
    assert load_error(tmp_path, data) == f"sub_policies[2][0]: missing key {key!r}"


def test_missing_top_level_key(tmp_path):
    data = doc()
    del data["sub_policies"]
    assert load_error(tmp_path, data) == "(top level): missing key 'sub_policies'"


def test_unknown_key(tmp_path):
    data = doc()
    data["sub_policies"][0][0]["magnitude"] = 3
    assert load_error(tmp_path, data) == "sub_policies[0][0]: unknown key 'magnitude' (allowed: level, op, prob)"


def test_unknown_top_level_key(tmp_path):
    message = load_error(tmp_path, doc(policy=[]))
    assert message.startswith("(top level): unknown key 'policy' (allowed: ")


def test_string_prob(tmp_path):
    data = doc()
    data["sub_policies"][0][0]["prob"] = "0.5"
    assert load_error(tmp_path, data) == "sub_policies[0][0].prob: expected number, got str '0.5'"


def test_bool_prob(tmp_path):
    data = doc()
    data["sub_policies"][0][0]["prob"] = True
    message = load_error(tmp_path, data)
    assert message.startswith("sub_policies[0][0].prob: ")
    assert "True" in message


def test_nan_prob(tmp_path):
    data = doc()
    data["sub_policies"][1][0]["prob"] = float("nan")
    text = json.dumps(data)  # Python writes NaN, which json.loads accepts
    assert "NaN" in text
    assert load_error(tmp_path, text) == "sub_policies[1][0].prob: nan is not a number in [0, 1]"


@pytest.mark.parametrize("value", [True, math.nan, math.inf])
def test_bad_numbers_are_rejected_in_memory_too(value):
    with pytest.raises(PolicyError, match=r"sub_policies\[0\]\[0\]\.level"):
        Policy([[("Rotate", 0.5, value)]])


def test_numpy_numbers_are_stored_as_floats(tmp_path):
    policy = Policy([[("Rotate", np.float32(0.5), np.float64(0.3)), Operation("Invert", np.int64(1), np.float16(0))]])
    steps = policy[0]
    assert [(type(s.prob), type(s.level)) for s in steps] == [(float, float)] * 2
    assert steps == (Operation("Rotate", 0.5, 0.3), Operation("Invert", 1.0, 0.0))
    assert Policy.load(policy.save(tmp_path / "p.json")) == policy  # save() writes them as JSON numbers


def test_decimals_numpy_pixels_and_unknown_keys_in_python_policies(tmp_path):
    """Regression: a Decimal passed validation and then failed save(), a numpy integer was refused as a
    baseline's pixels, and an unknown key of an operation given as a mapping was dropped without a word."""
    from decimal import Decimal

    policy = Policy([[("Rotate", Decimal("0.5"), Decimal("0.25"))]], baseline=Baseline(np.int64(2)))
    assert policy[0] == (Operation("Rotate", 0.5, 0.25),) and policy.baseline == Baseline(2)
    assert Policy.load(policy.save(tmp_path / "p.json")) == policy
    with pytest.raises(PolicyError, match=r"^Policy: sub_policies\[1\]\[0\]: an operation has the keys op, prob and "
                                          "level; unknown: foo$"):
        Policy([[("Rotate", 0.5, 0.1)], [{"op": "Rotate", "prob": 0.5, "level": 0.1, "foo": 2}]])
    with pytest.raises(PolicyError, match=r"^Policy: sub_policies\[0\]\[0\]\.prob: nan is not a number"):
        Policy([[("Rotate", Decimal("sNaN"), 0.1)]])  # not the ValueError of float(sNaN)
    assert Baseline(1, np.bool_(True)) == Baseline(1, True) and type(Baseline(0, np.bool_(False)).hflip) is bool


@pytest.mark.parametrize("metadata, message", [
    ({"score": np.float32(0.5)}, "metadata.score: float32 is not a JSON value"),
    ({"acc": torch.tensor(0.5)}, "metadata.acc: Tensor is not a JSON value"),
    ({"score": {"runs": [1.0, np.int64(2)]}}, "metadata.score.runs[1]: int64 is not a JSON value"),
    ({"score": math.nan}, "metadata.score: nan is not a JSON number (JSON has no NaN or infinity)"),
    ({"score": {"low": -math.inf}}, "metadata.score.low: -inf is not a JSON number (JSON has no NaN or infinity)"),
    ({"path": Path("x")}, "metadata.path: PosixPath is not a JSON value"),
])
def test_metadata_that_is_not_json_is_refused_when_the_policy_is_built(tmp_path, metadata, message):
    with pytest.raises(PolicyError) as info:
        Policy([[("Rotate", 0.5, 0.3)]], metadata=metadata)
    assert str(info.value) == f"Policy: {message}"
    assert not list(tmp_path.iterdir())


def test_metadata_changed_after_the_policy_was_built_is_checked_when_saved(tmp_path):
    """Regression: the metadata dict can be changed after the policy was built; save() then wrote a literal NaN
    (no strict JSON reader takes it) and a numpy number failed inside json with a TypeError."""
    policy = Policy([[("Rotate", 0.5, 0.3)]], metadata={"score": {}})
    policy.metadata["score"]["x"] = math.nan
    with pytest.raises(PolicyError, match=r"^policy: metadata\.score\.x: nan is not a JSON number"):
        policy.save(tmp_path / "p.json")
    policy.metadata["score"]["x"] = np.float32(0.5)
    with pytest.raises(PolicyError, match=r"^policy: metadata\.score\.x: float32 is not a JSON value"):
        policy.file_text()
    assert not list(tmp_path.iterdir())


def test_metadata_tuples_are_json_arrays(tmp_path):
    policy = Policy([[("Rotate", 0.5, 0.3)]], metadata={"strengths": (0.5, 1.0)})
    assert Policy.load(policy.save(tmp_path / "p.json")).metadata["strengths"] == [0.5, 1.0]


def test_a_file_with_nan_in_its_metadata_loads_with_null_there_and_saves_strict_json(tmp_path):
    """Older searches wrote NaN for an accuracy they did not measure: their files still load, and save as
    strict JSON (null), which other JSON readers take."""
    path = tmp_path / "old.json"
    path.write_text(json.dumps(doc(metadata={"score": {"acc": float("nan")}, "runs": [1.0, float("inf")]})))
    policy = Policy.load(path)
    assert policy.metadata["score"] == {"acc": None} and policy.metadata["runs"] == [1.0, None]
    saved = policy.save(tmp_path / "new.json").read_text()
    assert "NaN" not in saved and "Infinity" not in saved
    json.loads(saved, parse_constant=lambda name: pytest.fail(f"{name} in a saved policy"))


def test_empty_sub_policies(tmp_path):
    assert load_error(tmp_path, doc(subs=[])) == "sub_policies: needs at least one sub-policy"


def test_empty_sub_policy(tmp_path):
    data = doc()
    data["sub_policies"][2] = []
    assert load_error(tmp_path, data) == "sub_policies[2]: needs at least one operation"


@pytest.mark.parametrize("version", [4, 0, 4.0])
def test_wrong_format_version(tmp_path, version):
    message = load_error(tmp_path, doc(format_version=version))
    assert message == (f"format_version: unsupported format_version {version!r} "
                       "(this policysearch reads versions 1, 2 and 3)")


@pytest.mark.parametrize("version, shown", [("2", "the string '2'"), (None, "null"), (True, "true"), (2.5, "2.5"),
                                            (2.0, "2.0")])
def test_a_format_version_that_is_no_whole_number_says_so(tmp_path, version, shown):
    """Regression: "format_version": "2" was called an unsupported version, as if 2 were not one; 2.0 passed,
    where every other whole number of the file written as 2.0 is refused."""
    assert load_error(tmp_path, doc(format_version=version)) == \
        f"format_version: expected a whole number such as 3, got {shown}"


@pytest.mark.parametrize("text", ["", "  \n", "\ufeff"])
def test_an_empty_file_says_it_is_empty(tmp_path, text):
    """Regression: an empty file was "not valid JSON: Expecting value at line 1 column 1"."""
    assert load_error(tmp_path, text) == "the file is empty (no JSON in it)"


def test_unknown_op_ranges_reads_like_the_other_enums(tmp_path):
    message = load_error(tmp_path, doc(op_ranges="narrow"))
    assert message == "op_ranges: unknown op ranges 'narrow' (known: standard, wide)"


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("op", ["TranslateXAbs", "TranslateYAbs"])
def test_an_older_version_with_a_version_3_op_is_refused(tmp_path, version, op):
    data = doc(format_version=version)
    data["sub_policies"][3].append({"op": op, "prob": 0.5, "level": 0.5})
    message = load_error(tmp_path, data)
    assert message == f"sub_policies[3][2].op: format_version {version} has no {op}; write format_version 3 to use it"
    assert load_error(tmp_path, doc(format_version=2, op_ranges="wide")) == \
        "op_ranges: format_version 2 has no op_ranges; write format_version 3 to carry them"  # the same style
    data["format_version"] = 3
    assert Policy.load(write(tmp_path / "v3.json", data)).ops() >= {op}


def test_not_json_names_line_and_column(tmp_path):
    message = load_error(tmp_path, '{\n  "format_version": 1,\n  "sub_policies": [[{"op": "Rotate",}]]\n}')
    assert message.startswith("not valid JSON: ")
    assert "line 3 column" in message


def test_top_level_not_an_object(tmp_path):
    """Regression (a new user's trial): Fast AutoAugment's list form was refused without a word of convert."""
    assert load_error(tmp_path, [[["Rotate", 0.5, 0.5]]]) == (
        "(top level): expected object, got list [[['Rotate', 0.5, 0.5]]]: a list of sub-policies, as AutoAugment's "
        "and Fast AutoAugment's code write them; convert it with policysearch convert FILE --from fast-autoaugment "
        "-o OUT (or --from autoaugment)")
    for other in ([], [{"format_version": 3}], 3):  # no list of sub-policies: no word of convert
        assert "convert" not in load_error(tmp_path, other)
    assert load_error(tmp_path, None) == "(top level): expected object, got null"  # JSON's word, not NoneType


def test_missing_file(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(PolicyError, match=r"nope\.json: no such file$"):
        Policy.load(path)


def test_missing_file_named_like_a_policy_string_points_to_load_policy(tmp_path, monkeypatch):
    """Regression: ``Policy.load("trivialaugment")`` said only "no such file"."""
    monkeypatch.chdir(tmp_path)
    for name in ("trivialaugment", "randaugment:n=2,m=9"):
        with pytest.raises(PolicyError, match=rf"no such file; Policy.load reads files only, "
                                              rf"load_policy\('{re.escape(name)}'\) also reads policy strings$"):
            Policy.load(name)
    # a path, or a file's name (an extension, a space): no word of strings (review: every missing name had it)
    for path in ("nope.json", "sub/trivialaugment", Path("trivialaugment"), "best.yaml", "my policy", "-x",
                 "a:b.json"):
        with pytest.raises(PolicyError, match=r"no such file$"):
            Policy.load(path)
    from policysearch.augment.standard import load_policy

    with pytest.raises(PolicyError, match=r"^best\.yaml: no such file$"):  # load_policy never names itself
        load_policy("best.yaml")


def test_missing_file_is_named_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PolicyError) as info:
        Policy.load("./sub/../nope.json")
    assert str(info.value) == "./sub/../nope.json: no such file"


def test_loading_never_executes_anything(tmp_path):
    marker = tmp_path / "pwned"
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    data = doc()
    data["sub_policies"][0][0]["op"] = code
    with pytest.raises(PolicyError, match="unknown op"):
        Policy.load(write(tmp_path / "a.json", data))
    data = doc()
    data["sub_policies"][0][0]["prob"] = code
    with pytest.raises(PolicyError, match="expected number"):
        Policy.load(write(tmp_path / "b.json", data))
    # A free-form metadata string is kept as plain text, never evaluated.
    loaded = Policy.load(write(tmp_path / "c.json", doc(metadata={"note": code, "command": code})))
    assert loaded.metadata["note"] == code
    assert not marker.exists()


def test_validate_policy_dict_names_the_source():
    with pytest.raises(PolicyError, match=r"^here: sub_policies: needs at least one sub-policy$"):
        validate_policy_dict(doc(subs=[]), source="here")


# --------------------------------------------------------------------------------------------- schema


def test_shipped_schema_validates_a_saved_file_with_plain_jsonschema(tmp_path):
    path = Policy.from_dict(doc(name="x", metadata={"dataset": "digits"})).save(tmp_path / "p.json")
    schema = json.loads((Path(__file__).parents[1] / "policysearch" / "augment" / "schema" / "policy.schema.json").read_text())
    assert schema == policy_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(json.loads(path.read_text()), schema, cls=jsonschema.Draft202012Validator)
    bad = json.loads(path.read_text())
    bad["sub_policies"][0][0]["prob"] = 1.7
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema, cls=jsonschema.Draft202012Validator)


def test_schema_op_enum_is_the_op_table():
    op = policy_schema()["properties"]["sub_policies"]["items"]["items"]["properties"]["op"]
    assert tuple(op["enum"]) == OP_NAMES


# --------------------------------------------------------------------------------------------- construction


def test_policy_from_tuples_mappings_and_operations():
    a = Policy([[("Rotate", 0.5, 0.3), {"op": "Invert", "prob": 0.2, "level": 0.0}], [Operation("ShearX", 1.0, 1.0)]])
    b = Policy.from_dict(doc(subs=[
        [{"op": "Rotate", "prob": 0.5, "level": 0.3}, {"op": "Invert", "prob": 0.2, "level": 0.0}],
        [{"op": "ShearX", "prob": 1, "level": 1}],
    ]))
    assert a == b
    assert hash(a) == hash(b)
    assert a[0] == (Operation("Rotate", 0.5, 0.3), Operation("Invert", 0.2, 0.0))
    assert len(a) == 2 and a.ops() == {"Rotate", "Invert", "ShearX"}


def test_policy_rejects_a_bad_operation_shape():
    with pytest.raises(PolicyError, match="triple"):
        Policy([[("Rotate", 0.5)]])
    with pytest.raises(PolicyError, match=r"sub_policies\[0\]\[0\]\.prob: 2\.0 is outside \[0, 1\]"):
        Policy([[("Rotate", 2.0, 0.5)]])


def test_merge_policies_drops_duplicates_in_order():
    a = Policy([[("Rotate", 0.5, 0.3)], [("Invert", 0.2, 0.0)], [("Rotate", 0.5, 0.3)]])
    b = Policy([[("Invert", 0.2, 0.0)], [("ShearX", 1.0, 1.0), ("Rotate", 0.5, 0.3)], [("Rotate", 0.5, 0.3)]])
    merged = merge_policies([a, b], metadata={"source": "merge"})
    assert [tuple((s.op, s.prob, s.level) for s in sub) for sub in merged] == [
        (("Rotate", 0.5, 0.3),),
        (("Invert", 0.2, 0.0),),
        (("ShearX", 1.0, 1.0), ("Rotate", 0.5, 0.3)),
    ]
    assert merged.metadata == {"source": "merge"}


def test_scaled_multiplies_every_probability():
    policy = Policy([[Operation("Rotate", 0.8, 0.5), Operation("Invert", 1.0, 0.0)], [Operation("Cutout", 0.5, 0.2)]])
    half = policy.scaled(0.5)
    assert [[s.prob for s in sub] for sub in half] == [[0.4, 0.5], [0.25]]
    assert [[(s.op, s.level) for s in sub] for sub in half] == [[(s.op, s.level) for s in sub] for sub in policy]
    for bad in (1.5, "a", None, float("nan")):  # "a" and None: a TypeError from the comparison before
        with pytest.raises(PolicyError, match=r"^strength: expected a number in \[0, 1\], got "):
            policy.scaled(bad)


# --------------------------------------------------------------------------- the recipe (format 2)


def test_recipe_round_trip_keeps_the_baseline(tmp_path):
    from policysearch.augment.policy import Baseline

    policy = Policy([[("Rotate", 0.5, 0.3)]], baseline=Baseline(pad_crop=2, hflip=True))
    loaded = Policy.load(policy.save(tmp_path / "p.json"))
    assert loaded == policy and loaded.baseline == Baseline(2, True)
    assert json.loads((tmp_path / "p.json").read_text())["format_version"] == 2
    assert loaded != Policy([[("Rotate", 0.5, 0.3)]])  # the baseline is part of what a policy is


def test_version_1_files_load_without_a_baseline(tmp_path):
    from policysearch.augment.policy import Baseline

    loaded = Policy.load(write(tmp_path / "p.json", doc(format_version=1)))
    assert loaded.baseline == Baseline() and len(loaded) == len(doc()["sub_policies"])
    # a baseline block in a version-1 file is a mixed-up file: refused, not silently applied
    message = load_error(tmp_path, doc(format_version=1, baseline={"pad_crop": 2, "hflip": True}))
    assert message == "baseline: format_version 1 has no baseline; write format_version 2 to carry one"


@pytest.mark.parametrize("baseline, message", [
    ({"pad_crop": -1, "hflip": False}, "baseline.pad_crop: -1 is outside [0, 4096]"),
    ({"pad_crop": 1.5, "hflip": False}, "baseline.pad_crop: expected integer, got float 1.5"),
    ({"pad_crop": 1, "hflip": "yes"}, "baseline.hflip: expected boolean, got str 'yes'"),
    ({"pad_crop": 1}, "baseline: missing key 'hflip'"),
    ({"pad_crop": 1, "hflip": True, "vflip": True}, "baseline: unknown key 'vflip' (allowed: hflip, pad_crop)"),
])
def test_bad_baseline_names_the_place(tmp_path, baseline, message):
    assert load_error(tmp_path, doc(format_version=2, baseline=baseline)) == message


def test_remove_duplicates_keeps_one_sub_policy_per_op_sequence():
    from policysearch.augment.policy import remove_duplicates

    policy = Policy([[("Rotate", 0.5, 0.3), ("Invert", 0.2, 0.0)], [("Rotate", 0.9, 0.1), ("Invert", 0.1, 0.0)],
                     [("Invert", 0.2, 0.0), ("Rotate", 0.5, 0.3)], [("Rotate", 0.4, 0.2)]])
    kept = remove_duplicates(policy)
    assert [tuple(s.op for s in sub) for sub in kept] == [("Rotate", "Invert"), ("Invert", "Rotate"), ("Rotate",)]
    assert kept[0] == policy[0]  # the first of each sequence


def test_a_folder_given_for_a_policy_file_points_to_the_one_inside(tmp_path):
    """Regression: Policy.load("runs/s1") said "cannot read (Is a directory)"."""
    with pytest.raises(PolicyError, match=r": a folder, not a policy file$"):
        Policy.load(tmp_path)
    Policy([[("Rotate", 0.5, 0.5)]]).save(tmp_path / "policy.json")
    with pytest.raises(PolicyError, match=rf"a folder, not a policy file; a search's policy is {tmp_path}/policy.json"):
        Policy.load(tmp_path)


def test_a_pipe_given_for_a_policy_file_is_refused_at_once(tmp_path):
    """Regression (a trial): validate, show and convert given a named pipe waited for a writer for ever."""
    pipe = tmp_path / "policy.json"
    os.mkfifo(pipe)
    with pytest.raises(PolicyError, match=r"policy.json: not a regular file \(a pipe or a device\)"):
        Policy.load(pipe)


def test_a_model_name_close_to_ours_gets_the_name_it_meant():
    from policysearch.search import SearchConfig
    from policysearch.search.config import SettingsError

    with pytest.raises(SettingsError, match=r"got 'resnet-18' \(did you mean resnet18\?\)"):
        SearchConfig(model="resnet-18")


def test_a_policy_string_where_a_file_or_list_is_expected_says_what_takes_it(tmp_path, capsys):
    """Regression: Policy("randaugment") complained about sub_policies[0][0] being 'r', and
    PolicyTransform.from_json("randaugment:n=2,m=9") said only "no such file"; validate's summary left out
    the baseline, so a policy that flips every other image read as "ops: Identity"."""
    from policysearch.augment.image_transform import PolicyTransform
    from policysearch.augment.policy import Baseline
    from policysearch.augment.transforms import BatchPolicyTransform
    from policysearch.cli import main

    with pytest.raises(PolicyError, match=r"^Policy: sub_policies must be a list of sub-policies, got 'randaugment'; "
                                          r"for a policy string or file use load_policy\(...\) or PolicyTransform"):
        Policy("randaugment")
    with pytest.raises(PolicyError, match=r"^'randaugment:n=2,m=9' is a policy string, not a file; "
                                          r"PolicyTransform\('randaugment:n=2,m=9'\) or load_policy"):
        PolicyTransform.from_json("randaugment:n=2,m=9")
    with pytest.raises(PolicyError, match=r"^'trivialaugment' is a policy string"):
        BatchPolicyTransform.from_json("trivialaugment")
    with pytest.raises(PolicyError, match=r"^best_policy: no such file$"):  # a missing file is not a policy string
        PolicyTransform.from_json("best_policy")
    flips = Policy([[("Identity", 1.0, 0.0)]], baseline=Baseline(hflip=True)).save(tmp_path / "flips.json")
    assert main(["validate", str(flips)]) == 0
    assert capsys.readouterr().out == f"{flips}: ok (1 sub-policy, ops: Identity; baseline: no crop, horizontal flip)\n"
