"""The standard policies, the one-string form, and the rule that tells a string from a file."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from policysearch import PolicyTransform, load_policy
from policysearch.cli import main
from policysearch.augment.policy import Operation, Policy, PolicyError
from policysearch.augment.standard import (AUTOAUGMENT_VARIANTS, POLICY_NAMES, RANDAUGMENT_OPS, autoaugment_policy,
                                           identity_policy, is_policy_string, parse_policy_string, randaugment_policy,
                                           randaugment_tv_policy, trivialaugment_policy, trivialaugment_wide_policy)
from policysearch.augment.torchvision_policies import from_torchvision
from policysearch.augment.transforms import BatchPolicyTransform

# --------------------------------------------------------------------------------------------- every name


@pytest.mark.parametrize("text, expected", [
    ("randaugment", lambda: randaugment_policy(2, 9)),
    ("randaugment:n=2,m=9", lambda: randaugment_policy(2, 9)),
    ("randaugment:n=1", lambda: randaugment_policy(1, 9)),
    ("randaugment:m=5.5", lambda: randaugment_policy(2, 5.5)),
    (" RandAugment : M=3 , N=3 ", lambda: randaugment_policy(3, 3)),
    ("trivialaugment", lambda: trivialaugment_policy(31)),
    ("trivialaugment:bins=5", lambda: trivialaugment_policy(5)),
    ("autoaugment:cifar10", lambda: from_torchvision("cifar10")),
    ("autoaugment:imagenet", lambda: from_torchvision("imagenet")),
    ("AutoAugment:SVHN", lambda: from_torchvision("svhn")),
    ("torchvision:cifar10", lambda: from_torchvision("cifar10")),
    ("torchvision:randaugment", lambda: randaugment_tv_policy(2, 9, 31)),
    ("randaugment:n=1,m=5,bins=11", lambda: randaugment_tv_policy(1, 5, 11)),
    ("trivialaugmentwide", lambda: trivialaugment_wide_policy(31)),
    ("TorchVision:TrivialAugmentWide", lambda: trivialaugment_wide_policy(31)),
    ("trivialaugmentwide:bins=5,max=0.5", lambda: trivialaugment_wide_policy(5, 0.5)),
    ("identity", identity_policy),
    ("none", identity_policy),
])
def test_every_name_parses_to_its_policy(text, expected):
    policy = parse_policy_string(text)
    assert policy == expected()
    assert policy == load_policy(text) == parse_policy_string(text)


def test_every_listed_name_is_covered():
    assert set(POLICY_NAMES) == {"randaugment", "trivialaugment", "trivialaugmentwide", "autoaugment", "torchvision",
                                 "identity", "none"}
    assert AUTOAUGMENT_VARIANTS == ("cifar10", "imagenet", "svhn")


@pytest.mark.parametrize("text", ["randaugment", "randaugment:m=4,n=1", "randaugment:m=0.5", "trivialaugment",
                                  "trivialaugment:bins=7", "autoaugment:svhn", "torchvision:imagenet", "none",
                                  "torchvision:randaugment", "trivialaugmentwide:max=0.25", "randaugment:m=3,bins=11"])
def test_the_name_is_the_canonical_string_and_parses_back(text):
    policy = parse_policy_string(text)
    again = parse_policy_string(policy.name)
    assert again == policy and again.name == policy.name  # a fixed point
    assert again.describe() == policy.describe()
    assert policy.name.islower() and " " not in policy.name


def test_a_saved_standard_policy_loads_back(tmp_path):
    policy = parse_policy_string("randaugment:n=1,m=7")
    loaded = Policy.load(policy.save(tmp_path / "ra.json"))
    assert loaded == policy and loaded.name == "randaugment:n=1,m=7"


def test_randaugment_meaning_is_m_over_ten_with_all_ordered_tuples():
    policy = randaugment_policy(3, 4)
    assert len(policy) == 14 ** 3
    assert all(len(sub) == 3 and all(s.prob == 1.0 and s.level == pytest.approx(0.4) for s in sub) for sub in policy)
    assert policy.ops() == set(RANDAUGMENT_OPS)


def test_identity_leaves_images_unchanged():
    batch = torch.randint(0, 256, (8, 3, 12, 12), dtype=torch.uint8)
    assert torch.equal(BatchPolicyTransform("none")(batch, torch.Generator().manual_seed(0)), batch)


# --------------------------------------------------------------------------------------------- ops=


def test_ops_restricts_randaugment_and_trivialaugment_and_ignores_other_allowed_ops():
    allowed = ["Rotate", "Zoom", "Equalize", "Cutout"]  # e.g. a search space's list: Zoom and Cutout are not RA ops
    ra = randaugment_policy(2, 9, ops=allowed)
    assert ra.ops() == {"Rotate", "Equalize"} and len(ra) == 4
    assert ra.metadata["ops"] == ["Rotate", "Equalize"] and "(2 of 14 ops)" in ra.name
    ta = trivialaugment_policy(ops=allowed)
    assert ta.ops() == {"Rotate", "Equalize"} and len(ta) == 2 * 31
    assert randaugment_policy(ops=RANDAUGMENT_OPS) == randaugment_policy()


def test_ops_restricts_autoaugment_keeping_every_sub_policy():
    full = autoaugment_policy("cifar10")
    policy = autoaugment_policy("cifar10", ops=("Rotate", "Contrast"))
    assert len(policy) == len(full) == 25  # each sub-policy keeps its chance
    assert policy.ops() <= {"Rotate", "Contrast", "Identity"}
    for sub, original in zip(policy, full):
        kept = [s for s in original if s.op in ("Rotate", "Contrast")]
        assert list(sub) == (kept or [Operation("Identity", 1.0, 0.0)])


@pytest.mark.parametrize("call, message", [
    (lambda: randaugment_policy(ops=[]), "randaugment_policy: ops: the restriction is empty"),
    (lambda: randaugment_policy(ops=["Zoom", "FlipLR"]), "ops: Zoom, FlipLR leaves none of RandAugment's ops"),
    (lambda: trivialaugment_policy(ops=["Rotat"]), "trivialaugment_policy: ops: unknown op 'Rotat' (closest: Rotate)"),
    (lambda: randaugment_policy(ops="Rotate"), "ops: expected a list of op names, got the string 'Rotate'"),
    (lambda: autoaugment_policy("svhn", ops=["FlipLR"]), "leaves none of AutoAugment svhn's ops"),
    (lambda: autoaugment_policy("cifar100"), "unknown AutoAugment variant 'cifar100' (closest: cifar10)"),
    (lambda: autoaugment_policy("foo"), "unknown AutoAugment variant 'foo' (known: cifar10, imagenet, svhn)"),
    (lambda: randaugment_policy(0, 9), "randaugment_policy: n=0 is outside 1..4"),
    (lambda: randaugment_policy(2.0, 9), "n=2.0 is not a whole number"),
    (lambda: randaugment_policy(2, 10.5), "m=10.5 is outside 0..10"),
    (lambda: randaugment_policy(2, "9"), "m='9' is not a number"),
    (lambda: trivialaugment_policy(1), "bins=1 is outside 2..256"),
])
def test_bad_arguments_to_the_functions(call, message):
    with pytest.raises(PolicyError) as info:
        call()
    assert message in str(info.value)


def test_an_unknown_autoaugment_variant_lists_the_choices_once():
    for variant in ("foo", "cifar100"):
        with pytest.raises(PolicyError) as info:
            autoaugment_policy(variant)
        assert str(info.value).count("imagenet") <= 1 and "choose from" not in str(info.value)
    assert str(info.value).endswith("(closest: cifar10)")


# --------------------------------------------------------------------------------------------- bad strings


@pytest.mark.parametrize("text, message", [
    ("randaugment:n=2,m=x", "randaugment:n=2,m=x: m='x' is not a number"),
    ("randaugment:n=2,m=inf", "m='inf' is not a number"),
    ("randaugment:n=x", "randaugment:n=x: n='x' is not a whole number"),
    ("randaugment:n=1.5", "n='1.5' is not a whole number"),
    ("randaugment:n=0", "randaugment:n=0: n=0 is outside 1..4"),
    ("randaugment:m=11", "m=11 is outside 0..10"),
    ("randaugment:k=1", "randaugment:k=1: unknown key 'k' for randaugment (known: n, m, bins)"),
    ("randaugment:n=1,n=2", "n is given twice"),
    ("randaugment:2,9", "'2' is not key=value (randaugment takes n=, m=, bins=)"),
    ("randaugment:m=", "m= has no value"),
    ("randaugment:", "randaugment:: nothing after ':'"),
    ("randaugment:n=2,,m=9", "an empty argument between commas"),
    ("randaugmnet", "randaugmnet: unknown policy name 'randaugmnet' (closest: randaugment)"),
    ("trivalaugment:bins=3", "unknown policy name 'trivalaugment' (closest: trivialaugment)"),
    ("trivialaugment:bins=1", "trivialaugment:bins=1: bins=1 is outside 2..256"),
    ("trivialaugment:n=2", "unknown key 'n' for trivialaugment"),
    ("autoaugment", "autoaugment: AutoAugment needs a variant: autoaugment:cifar10, autoaugment:imagenet"),
    ("autoaugment:cifar100", "autoaugment:cifar100: unknown AutoAugment variant 'cifar100' (closest: cifar10)"),
    ("autoaugment:cifar10,svhn", "AutoAugment takes one variant, got 2"),
    ("identity:strong", "identity:strong: identity takes no arguments"),
    (":n=2", "no policy name"),
])
def test_a_bad_string_names_its_bad_part(text, message):
    with pytest.raises(PolicyError) as info:
        parse_policy_string(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------- string or file


def test_string_or_file_rules(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    policy = Policy([[("Rotate", 0.5, 0.5)]], name="mine")
    policy.save(tmp_path / "randaugment")  # a file named like a policy
    policy.save(tmp_path / "mypolicy")
    policy.save(tmp_path / "trivialaugment.json")
    assert load_policy(policy) is policy
    assert load_policy("randaugment") == randaugment_policy()  # a known name is a string, file or not
    assert load_policy("./randaugment") == policy  # a path separator makes it a file
    assert load_policy(tmp_path / "randaugment") == policy  # so does a PathLike
    assert load_policy("trivialaugment.json") == policy  # and .json
    assert load_policy("mypolicy") == policy  # an unknown name that exists is a file
    assert is_policy_string("randaugment:n=1") and not is_policy_string("mypolicy")
    assert is_policy_string("nosuchthing") and not is_policy_string("no such thing")
    with pytest.raises(PolicyError, match=r"^nosuch: unknown policy name 'nosuch' \(known: .*\); and there is no "
                                          r"file 'nosuch'$"):
        load_policy("nosuch")
    with pytest.raises(PolicyError, match="missing.json: no such file"):
        load_policy("missing.json")
    with pytest.raises(PolicyError, match=r"^\./nosuchfile: no such file$"):  # the path as the user wrote it
        load_policy("./nosuchfile")
    (tmp_path / "randaugment").unlink()
    with pytest.raises(PolicyError, match=r"^\./randaugment: no such file$"):  # not the policy string's name
        load_policy("./randaugment")
    with pytest.raises(PolicyError, match="sub/dir: no such file"):
        load_policy("sub/dir")
    # Regression: these reached the file system's own errors (File name too long, embedded null byte)
    with pytest.raises(PolicyError, match=r"^this is the JSON text of a policy, not a file or a policy string"):
        load_policy(json.dumps(load_policy("randaugment").to_dict()))
    with pytest.raises(PolicyError, match=r"^'a\\x00b': not a file name \(it holds a NUL byte\)$"):
        load_policy("a\x00b")
    with pytest.raises(PolicyError, match=r"^'x{20,}\.\.\.x+\.json': cannot read \(File name too long\)$"):
        load_policy("x" * 300 + ".json")
    with pytest.raises(PolicyError, match="empty policy"):
        load_policy(" ")
    with pytest.raises(TypeError, match="expected a Policy, a policy string or a policy file path, got list"):
        load_policy([["Rotate", 1.0, 0.5]])
    # regression: a policy document (a dict, e.g. json.load of a file) was told to build Policy from a list
    with pytest.raises(TypeError, match=r"got dict; read a policy document with Policy.from_dict\(document\)$"):
        load_policy({"format_version": 3, "sub_policies": [[{"op": "Rotate", "prob": 1.0, "level": 0.5}]]})


# --------------------------------------------------------------------------------------------- transforms


def test_transforms_take_a_string_a_policy_or_a_path(tmp_path):
    path = randaugment_policy(1, 5).save(tmp_path / "ra.json")
    img = Image.new("RGB", (16, 16), (90, 40, 200))
    for source in ("randaugment:n=1,m=5", randaugment_policy(1, 5), path, str(path)):
        transform = PolicyTransform(source, generator=torch.Generator().manual_seed(0))
        assert transform.policy == randaugment_policy(1, 5)
        assert transform(img).size == (16, 16)
        assert BatchPolicyTransform(source).policy == randaugment_policy(1, 5)
    with pytest.raises(PolicyError, match="randaugment:m=x: m='x' is not a number"):
        PolicyTransform("randaugment:m=x")


# --------------------------------------------------------------------------------------------- CLI


def test_cli_convert_a_string(tmp_path, capsys):
    out = tmp_path / "ta.json"
    assert main(["convert", "trivialaugment:bins=3", "-o", str(out)]) == 0
    assert f"wrote {out}: 42 sub-policies" in capsys.readouterr().out
    loaded = Policy.load(out)
    assert loaded == trivialaugment_policy(3) and loaded.name == "trivialaugment:bins=3"
    assert loaded.metadata["command"] == f"policysearch convert trivialaugment:bins=3 -o {out}"


def test_cli_show_a_string(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["show", "randaugment:n=1,m=5", "-o", str(out), "--samples", "2", "--views", "2"]) == 0
    assert "randaugment:n=1,m=5" in capsys.readouterr().out
    assert Image.open(out).format == "PNG"


def test_cli_validate_a_string(capsys):
    assert main(["validate", "identity", "randaugment:n=2,m=x"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "identity: ok (1 sub-policy, ops: Identity; baseline: no crop, no flip)\n"
    assert captured.err == "randaugment:n=2,m=x: m='x' is not a number\n"


@pytest.mark.parametrize("argv, message", [
    (["show", "randaugmnet:n=2"], "randaugmnet:n=2: unknown policy name 'randaugmnet' (closest: randaugment)"),
    (["convert", "randaugment:m=x", "-o", "x.json"], "randaugment:m=x: m='x' is not a number"),
    (["benchmark", "--policy", "autoaugment:cifar100", "--epochs", "1"], "unknown AutoAugment variant 'cifar100'"),
])
def test_cli_bad_strings_are_one_line_errors(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"policysearch: error: {message}\n" or (message in err and err.count("\n") == 1), err
    assert not list(tmp_path.iterdir())  # nothing written before the error


def test_cli_benchmark_with_a_policy_string(tmp_path, capsys):
    import json

    out = tmp_path / "bench"
    assert main(["benchmark", "--preset", "digits-small", "--train-size", "20", "--epochs", "1", "--seeds", "0",
                 "--methods", "searched", "--policy", "randaugment:n=1,m=5", "--batch-size", "10",
                 "--out", str(out)]) == 0
    document = json.loads((out / "results.json").read_text())
    searched = document["searched_policy"]
    assert len(searched.pop("sha256")) == 64  # the policy's content, which a rerun compares
    assert searched == {"source": "randaugment:n=1,m=5", "sub_policies": 14,
                        "recipe": "randaugment:n=1,m=5",  # a string carries no baseline
                        "baseline": {"pad_crop": 0, "hflip": False}}
    assert [r["method"] for r in document["runs"]] == ["searched"]


@pytest.mark.parametrize("text", ["randaugment:m=" + "9" * 5000, "x" * 5000 + ":a=1",
                                  "randaugment:n=2,q=" + "x" * 5000])
def test_a_pasted_value_of_thousands_of_characters_gives_one_short_line(text):
    """Regression: ``randaugment:m=<5,000 digits>`` gave a 10 kB message; a long word shows its start and length."""
    with pytest.raises(PolicyError) as caught:
        load_policy(text)
    message = str(caught.value)
    assert len(message) < 400 and "\n" not in message and "characters)" in message
