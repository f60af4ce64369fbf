"""Converters: the applied argument of every converted op equals the one the source meant."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode

from policysearch.cli import main
from policysearch.augment.convert import convert, from_autoaugment_paper, from_fast_autoaugment
from policysearch.augment.ops import OPS, TRANSLATE_MAX, PilContext
from policysearch.augment.policy import MAX_DEPTH, MAX_FILE_BYTES, Operation, Policy, PolicyError
from policysearch.augment.standard import load_policy
from policysearch.augment.torchvision_policies import from_torchvision

SIZE = 32
BINS = 10


def test_image() -> Image.Image:
    """32x32 RGB: gradients plus noise, so every op changes something and every pixel is distinct-ish."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    base = np.stack([x * 8, y * 8, (x + y) * 4], axis=-1).astype(np.int64)
    noise = rng.integers(0, 40, size=(SIZE, SIZE, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


test_image.__test__ = False  # a helper, not a test


def tv_magnitudes(op: str) -> torch.Tensor:
    """torchvision AutoAugment's magnitude bins, from its documented formulas, for a SIZE x SIZE image."""
    return {
        "ShearX": torch.linspace(0.0, 0.3, BINS),
        "ShearY": torch.linspace(0.0, 0.3, BINS),
        "TranslateX": torch.linspace(0.0, 150.0 / 331.0 * SIZE, BINS),
        "TranslateY": torch.linspace(0.0, 150.0 / 331.0 * SIZE, BINS),
        "Rotate": torch.linspace(0.0, 30.0, BINS),
        "Brightness": torch.linspace(0.0, 0.9, BINS),
        "Color": torch.linspace(0.0, 0.9, BINS),
        "Contrast": torch.linspace(0.0, 0.9, BINS),
        "Sharpness": torch.linspace(0.0, 0.9, BINS),
        "Posterize": 8 - (torch.arange(BINS) / ((BINS - 1) / 4)).round().int(),
        "Solarize": torch.linspace(255.0, 0.0, BINS),
    }[op]


def tv_apply(img: Image.Image, op: str, magnitude: float) -> Image.Image:
    """torchvision's functional op at ``magnitude``, as its AutoAugment applies it (fill 0, nearest)."""
    nearest, fill = InterpolationMode.NEAREST, [0.0]
    if op == "ShearX":
        return F.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[math.degrees(math.atan(magnitude)), 0.0],
                        interpolation=nearest, fill=fill, center=[0, 0])
    if op == "ShearY":
        return F.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[0.0, math.degrees(math.atan(magnitude))],
                        interpolation=nearest, fill=fill, center=[0, 0])
    if op == "TranslateX":
        return F.affine(img, angle=0.0, translate=[int(magnitude), 0], scale=1.0, shear=[0.0, 0.0],
                        interpolation=nearest, fill=fill)
    if op == "TranslateY":
        return F.affine(img, angle=0.0, translate=[0, int(magnitude)], scale=1.0, shear=[0.0, 0.0],
                        interpolation=nearest, fill=fill)
    if op == "Rotate":
        return F.rotate(img, magnitude, interpolation=nearest, fill=fill)
    if op == "Brightness":
        return F.adjust_brightness(img, 1.0 + magnitude)
    if op == "Color":
        return F.adjust_saturation(img, 1.0 + magnitude)
    if op == "Contrast":
        return F.adjust_contrast(img, 1.0 + magnitude)
    if op == "Sharpness":
        return F.adjust_sharpness(img, 1.0 + magnitude)
    if op == "Posterize":
        return F.posterize(img, int(magnitude))
    if op == "Solarize":
        return F.solarize(img, magnitude)
    if op == "AutoContrast":
        return F.autocontrast(img)
    if op == "Equalize":
        return F.equalize(img)
    if op == "Invert":
        return F.invert(img)
    raise AssertionError(f"no torchvision op {op}")


def ours(img: Image.Image, op: str, level: float, negative: bool) -> Image.Image:
    spec = OPS[op]
    arg = spec.argument(level)
    return spec.pil(img, -arg if negative else arg, {}, PilContext())


@pytest.mark.parametrize("name", ["imagenet", "cifar10", "svhn"])
def test_torchvision_policies_convert_exactly(name):
    source = T.AutoAugment(T.AutoAugmentPolicy(name)).policies
    policy = from_torchvision(name)
    assert len(policy) == len(source)
    img = test_image()
    signed_ops = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
                  "Sharpness"}
    for i, (sub, ref) in enumerate(zip(policy, source)):
        assert [s.op for s in sub] == [r[0] for r in ref], f"sub-policy {i}"
        assert [s.prob for s in sub] == pytest.approx([r[1] for r in ref], abs=1e-12)
        for step, (op, _, bin_index) in zip(sub, ref):
            assert OPS[op].signed == (op in signed_ops)
            magnitude = 0.0 if bin_index is None else float(tv_magnitudes(op)[bin_index])
            for negative in (False, True) if op in signed_ops else (False,):
                expected = tv_apply(img, op, -magnitude if negative else magnitude)
                got = ours(img, op, step.level, negative)
                assert np.array_equal(np.asarray(got), np.asarray(expected)), (
                    f"{name} sub-policy {i}: {op} bin {bin_index} ({'-' if negative else '+'}{magnitude}) "
                    f"-> level {step.level}")


def test_every_torchvision_bin_converts_exactly():
    """Not only the bins the shipped policies use: all 10 bins of every op with a magnitude."""
    from policysearch.augment.torchvision_policies import _tv_magnitude, level_for

    img = test_image()
    for op in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
               "Sharpness", "Posterize", "Solarize"):
        for bin_index in range(BINS):
            level = level_for(op, _tv_magnitude(op, bin_index))
            magnitude = float(tv_magnitudes(op)[bin_index])
            for negative in (False, True) if OPS[op].signed else (False,):
                expected = tv_apply(img, op, -magnitude if negative else magnitude)
                assert np.array_equal(np.asarray(ours(img, op, level, negative)), np.asarray(expected)), (op, bin_index)


def test_torchvision_policy_metadata_and_entry_points():
    policy = from_torchvision("cifar10")
    assert policy == from_torchvision("torchvision:cifar10") == convert("torchvision:cifar10")
    assert policy.name == "torchvision-cifar10"
    assert policy.metadata["source"] == "torchvision:cifar10"
    assert from_torchvision("CIFAR10") == policy


def test_unknown_torchvision_policy():
    with pytest.raises(PolicyError, match=r"unknown torchvision policy 'mnist'; choose one of imagenet, cifar10, svhn"):
        from_torchvision("mnist")
    with pytest.raises(PolicyError, match=r"^torchvision:mnist: unknown torchvision recipe 'mnist' \(known: cifar10, "
                                          r"imagenet, svhn, randaugment, trivialaugmentwide\)$"):
        convert("torchvision:mnist")


@pytest.mark.parametrize("text", ["torchvision:randaugment", "torchvision:trivialaugmentwide", "torchvision:cifar10",
                                  "TORCHVISION:svhn", "autoaugment:imagenet", "randaugment:n=1,m=5", "identity"])
def test_convert_takes_every_policy_string_load_policy_takes(text):
    assert convert(text) == load_policy(text)


# --------------------------------------------------------------------------------------------- AutoAugment paper


def paper_level(op: str, magnitude: float) -> float:
    return from_autoaugment_paper([[[op, 0.5, magnitude]]])[0][0].level


def test_paper_magnitudes_map_to_the_meant_arguments():
    assert paper_level("Rotate", 10) == pytest.approx(1.0)
    assert OPS["Rotate"].argument(paper_level("Rotate", 10)) == pytest.approx(30.0)
    assert OPS["Rotate"].argument(paper_level("Rotate", 5)) == pytest.approx(15.0)
    assert OPS["ShearX"].argument(paper_level("ShearX", 7)) == pytest.approx(0.21)
    assert OPS["TranslateY"].argument(paper_level("TranslateY", 10)) == pytest.approx(150 / 331)
    # Regression: the enhance ops' magnitude m was read as 1 +- 0.09 m; the paper's factor is 0.1 + 0.18 m,
    # unsigned, which ours keep as the distance from 1 (magnitude 5 is factor 1, no change; 0 and 10 the strongest)
    for op in ("Brightness", "Color", "Contrast", "Sharpness"):
        for m in range(11):
            assert OPS[op].argument(paper_level(op, m)) == pytest.approx(abs(0.1 + 0.18 * m - 1.0))
    assert paper_level("Brightness", 5) == 0.0 and paper_level("Color", 0) == paper_level("Color", 10) == 1.0
    assert OPS["Cutout"].argument(paper_level("Cutout", 10)) == pytest.approx(60 / 331)
    assert OPS["SamplePairing"].argument(paper_level("SamplePairing", 5)) == pytest.approx(0.2)
    for m in range(11):
        assert OPS["Solarize"].argument(paper_level("Solarize", m)) == pytest.approx(256 * (1 - m / 10))
        assert OPS["Posterize"].argument(paper_level("Posterize", m)) == pytest.approx(8 - round(4 * m / 10))
    assert OPS["Posterize"].argument(paper_level("Posterize", 10)) == pytest.approx(4.0)
    assert paper_level("Posterize", 10) == pytest.approx(1.0)
    for op in ("AutoContrast", "Equalize", "Invert"):
        assert paper_level(op, 7) == 0.0


def test_paper_form_keeps_structure_and_probabilities():
    data = [[["Invert", 0.1, 7], ["Contrast", 0.2, 6]], [["Rotate", 0.7, 2]]]
    policy = from_autoaugment_paper(data)
    assert [[(s.op, s.prob) for s in sub] for sub in policy] == [[("Invert", 0.1), ("Contrast", 0.2)], [("Rotate", 0.7)]]
    assert policy.metadata["converted_from"] == "AutoAugment paper form"


@pytest.mark.parametrize("data, message", [
    ([[["Rotate", 0.5, 11]]], r"^x: \[0\]\[0\]: magnitude 11 is outside \[0, 10\]$"),
    ([[["Rotate", 0.5, 3]], [["Rotate", 0.5, 1], ["Rotate", 0.5, -1]]], r"^x: \[1\]\[1\]: magnitude -1 is outside"),
    ([[["Rotate", 0.5, "3"]]], r"^x: \[0\]\[0\]: magnitude '3' is not a number in"),
    ([[["Rotate", 0.5, True]]], r"^x: \[0\]\[0\]: magnitude True is not a number in"),
    ([[["Rotate", 0.5, float("nan")]]], r"^x: \[0\]\[0\]: magnitude nan is outside"),
    ([[["Rotate", 1.5, 3]]], r"^x: \[0\]\[0\]: prob 1\.5 is outside \[0, 1\]$"),
    # Regression: Fast AutoAugment's 0..1 levels were read as tenths of the paper's magnitudes.
    ([[["Rotate", 0.5, 0.2], ["Equalize", 0.5, 0.0]], [["ShearX", 0.4, 0.73], ["TranslateX", 0.4, 0.0]]],
     r"^x: every magnitude is below 1, as Fast AutoAugment's levels are, .*--from fast-autoaugment \(paper "),
    ([[["Rotate", True, 3]]], r"^x: \[0\]\[0\]: prob True is not a number in \[0, 1\]$"),
    ([[["Rotate", "x", 3]]], r"^x: \[0\]\[0\]: prob 'x' is not a number in \[0, 1\]$"),  # was "is outside"
    ([[["Rotat", 0.5, 3]]], r"^x: \[0\]\[0\]: unknown op 'Rotat' for the AutoAugment paper form \(its ops: "),
    ([[[["Rotate"], 0.5, 3]]], r"^x: \[0\]\[0\]: unknown op \['Rotate'\] for the AutoAugment paper form"),
    ([[["Rotate", 0.5]]], r"^x: \[0\]\[0\]: expected \[name, prob, magnitude\]"),
    ([[]], r"^x: \[0\]: expected a non-empty list"),
    ([], r"^x: expected a non-empty list of sub-policies"),
    ({"policy": []}, r"^x: expected a non-empty list of sub-policies"),
])
def test_paper_form_errors_name_the_place(data, message):
    with pytest.raises(PolicyError, match=message):
        from_autoaugment_paper(data, source="x")


# --------------------------------------------------------------------------------------------- Fast AutoAugment


def faa_level(op: str, level: float) -> float:
    return from_fast_autoaugment([[[op, 0.5, level]]])[0][0].level


@pytest.mark.parametrize("level", [0.0, 0.1, 0.25, 0.5, 0.8, 1.0])
def test_faa_levels(level):
    for op in ("ShearX", "ShearY", "Rotate", "Contrast", "Color", "Brightness", "Sharpness"):
        assert faa_level(op, level) == pytest.approx(abs(2 * level - 1))
    for op in ("TranslateX", "TranslateY"):
        assert OPS[op].argument(faa_level(op, level)) == pytest.approx(abs(2 * level - 1) * 0.45)
    assert faa_level("Solarize", level) == pytest.approx(1 - level)
    assert OPS["Solarize"].argument(faa_level("Solarize", level)) == pytest.approx(256 * level)
    assert OPS["Posterize"].argument(faa_level("Posterize", level)) == pytest.approx(int(4 + 4 * level))
    assert faa_level("Cutout", level) == pytest.approx(level)
    assert faa_level("SamplePairing", level) == pytest.approx(level)
    for op in ("AutoContrast", "Equalize", "Invert"):
        assert faa_level(op, level) == 0.0


def test_faa_examples():
    assert faa_level("ShearX", 0.1) == pytest.approx(0.8)
    assert faa_level("Rotate", 0.5) == pytest.approx(0.0)
    assert OPS["Posterize"].argument(faa_level("Posterize", 0.0)) == 4  # FAA's strongest
    assert OPS["Solarize"].argument(faa_level("Solarize", 0.0)) == 0  # FAA's strongest: invert everything
    assert TRANSLATE_MAX >= 0.45


@pytest.mark.parametrize("data, message", [
    ([[["ShearX", 0.5, 1.2]]], r"^faa\.json: \[0\]\[0\]: level 1\.2 is outside \[0, 1\]$"),
    ([[["ShearX", -0.1, 0.2]]], r"^faa\.json: \[0\]\[0\]: prob -0\.1 is outside \[0, 1\]$"),
    ([[["ShearX", 0.5, 0.2], ["Sheer", 0.5, 0.2]]], r"^faa\.json: \[0\]\[1\]: unknown op 'Sheer' for the Fast "),
    ("ShearX", r"^faa\.json: expected a non-empty list"),
])
def test_faa_errors_name_the_place(data, message):
    with pytest.raises(PolicyError, match=message):
        from_fast_autoaugment(data, source="faa.json")


FORM_OPS = ("ShearX, ShearY, TranslateX, TranslateY, Rotate, AutoContrast, Invert, Equalize, Solarize, Posterize, "
            "Contrast, Color, Brightness, Sharpness, Cutout, SamplePairing")


@pytest.mark.parametrize("convert_form, what, magnitude", [
    (from_autoaugment_paper, "AutoAugment paper form", 10),
    (from_fast_autoaugment, "Fast AutoAugment list form", 1.0),
])
@pytest.mark.parametrize("op", ["GaussianNoise", "Blur", "Zoom", "TranslateXAbs", "Identity", "FlipLR"])
def test_forms_refuse_our_ops_that_they_do_not_have(convert_form, what, magnitude, op):
    """An op of ours outside the source's own table has no meaning there: refused, not converted to level 0."""
    data = [[["Rotate", 0.5, magnitude]], [["Rotate", 0.5, magnitude], [op, 0.7, magnitude]]]
    with pytest.raises(PolicyError) as info:
        convert_form(data, "x.json")
    assert str(info.value) == f"x.json: [1][1]: unknown op {op!r} for the {what} (its ops: {FORM_OPS})"


# --------------------------------------------------------------------------------------------- convert()


def test_convert_reads_files(tmp_path):
    paper = tmp_path / "paper.json"
    paper.write_text(json.dumps([[["Rotate", 0.5, 10]]]))
    assert convert(str(paper), "autoaugment")[0][0] == Operation("Rotate", 0.5, 1.0)
    faa = tmp_path / "faa.json"
    faa.write_text(json.dumps([[["ShearX", 0.5, 0.1]]]))
    assert convert(str(faa), "fast-autoaugment")[0][0].level == pytest.approx(0.8)
    with pytest.raises(PolicyError, match="say which form"):
        convert(str(faa))
    with pytest.raises(PolicyError, match="no such file"):
        convert(str(tmp_path / "missing.json"), "autoaugment")
    with pytest.raises(PolicyError, match="no such file"):  # not "say which form" for a file that is not there
        convert(str(tmp_path / "missing.json"))
    ours = Policy([[Operation("Rotate", 0.5, 0.5)]]).save(tmp_path / "ours.json")
    for form in (None, "autoaugment"):  # our own format: nothing to convert, whatever form is named
        with pytest.raises(PolicyError, match="already a policysearch policy file: use it as it is"):
            convert(str(ours), form)
    (tmp_path / "bad.json").write_text("[[")
    with pytest.raises(PolicyError, match="not valid JSON: .* line 1 column 3"):
        convert(str(tmp_path / "bad.json"), "autoaugment")


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe[[]]", "not UTF-8 text (byte 0xff at offset 0)"),
    (b"[" * 100_000 + b"]" * 100_000, f"nested deeper than {MAX_DEPTH} levels"),
    (b"[" * 100 + b"]" * 100, f"[0][0][0]...: nested deeper than {MAX_DEPTH} levels"),
    (b" " * (MAX_FILE_BYTES + 1), f"larger than {MAX_FILE_BYTES} bytes, too large for a policy file"),
    (b'[[["Rotate", 0.5, 1, 2]], {"a": 1, "a": 2}]', "not valid JSON: key 'a' appears twice in one object"),
])
@pytest.mark.parametrize("form", ["autoaugment", "fast-autoaugment"])
def test_convert_reads_its_file_as_policy_load_does(tmp_path, form, content, message):
    path = tmp_path / "source.json"
    path.write_bytes(content)
    with pytest.raises(PolicyError) as info:
        convert(str(path), form)
    assert str(info.value) == f"{path}: {message}"
    with pytest.raises(PolicyError) as info:
        Policy.load(path)
    assert str(info.value) == f"{path}: {message}"  # the same reader


# --------------------------------------------------------------------------------------------- CLI convert


@pytest.mark.parametrize("name", ["cifar10", "imagenet", "svhn"])
def test_cli_convert_torchvision(tmp_path, capsys, name):
    out = tmp_path / f"{name}.json"
    assert main(["convert", f"torchvision:{name}", "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    loaded = Policy.load(out)
    assert loaded == from_torchvision(name)
    assert loaded.metadata["command"] == f"policysearch convert torchvision:{name} -o {out}"
    assert loaded.metadata["source"] == f"torchvision:{name}"


@pytest.mark.parametrize("form, data, first", [
    ("autoaugment", [[["Rotate", 0.5, 10], ["Posterize", 0.3, 10]], [["Invert", 0.1, 3]]], Operation("Rotate", 0.5, 1.0)),
    ("fast-autoaugment", [[["Solarize", 0.5, 0.25]], [["Cutout", 0.1, 0.3]]], Operation("Solarize", 0.5, 0.75)),
])
def test_cli_convert_files(tmp_path, capsys, form, data, first):
    source = tmp_path / "source.json"
    source.write_text(json.dumps(data))
    out = tmp_path / "out" / "policy.json"
    assert main(["convert", str(source), "--from", form, "-o", str(out)]) == 0
    assert main(["validate", str(out)]) == 0
    loaded = Policy.load(out)
    assert loaded[0][0] == first
    assert len(loaded) == 2
    assert loaded.name == "source"


def test_cli_convert_errors(tmp_path, capsys):
    source = tmp_path / "source.json"
    source.write_text(json.dumps([[["Rotate", 0.5, 12]]]))
    assert main(["convert", str(source), "--from", "autoaugment", "-o", str(tmp_path / "o.json")]) == 1  # as validate
    err = capsys.readouterr().err
    assert err == f"policysearch: error: {source}: [0][0]: magnitude 12 is outside [0, 10]\n"
    missing = tmp_path / "missing.json"
    assert main(["convert", str(missing), "--from", "autoaugment", "-o", str(tmp_path / "o.json")]) == 1
    assert capsys.readouterr().err == f"policysearch: error: {missing}: no such file\n"
    assert main(["convert", str(source), "-o", str(tmp_path / "o.json")]) == 2  # usage errors stay 2
    assert "--from autoaugment or --from fast-autoaugment" in capsys.readouterr().err
    assert main(["convert", "torchvision:mnist", "-o", str(tmp_path / "o.json")]) == 2
    assert "unknown torchvision recipe 'mnist' (known: cifar10, imagenet, svhn, randaugment, trivialaugmentwide)" \
        in capsys.readouterr().err
    # regressions (a trial): a name it does not know did not say that no file has it either, as validate does,
    # and an empty source said ": no such file", naming nothing
    assert main(["convert", "foo", "-o", str(tmp_path / "o.json")]) == 2
    assert capsys.readouterr().err.endswith("; and there is no file 'foo'\n")
    assert main(["convert", " ", "-o", str(tmp_path / "o.json")]) == 2
    assert capsys.readouterr().err == ("policysearch: error: the source is empty: give a policy string such as "
                                       "torchvision:cifar10, or another project's policy file with --from\n")
    assert not (tmp_path / "o.json").exists()


@pytest.mark.parametrize("text", ["torchvision:randaugment", "torchvision:trivialaugmentwide"])
def test_cli_convert_torchvision_transforms(tmp_path, capsys, text):
    out = tmp_path / "p.json"
    assert main(["convert", text, "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert Policy.load(out) == load_policy(text)


def test_a_policy_too_large_for_a_file_is_refused_before_anything_is_written(tmp_path, capsys):
    """Regression: ``randaugment:n=4`` (38,416 sub-policies, which the README lists) was saved as a 13 MB file
    that ``Policy.load`` refuses, and ``convert`` said "more than 250000 values" without naming the cause."""
    big = load_policy("randaugment:n=4,m=10")
    with pytest.raises(PolicyError, match=r"^randaugment:n=4,m=10: its 38,416 sub-policies and metadata make a file of [\d,]+ "
                                          r"bytes, more than the 1,048,576 a policy file may hold; use fewer "
                                          r"sub-policies \(a policy string works by its name: "
                                          r"PolicyTransform\('randaugment:n=4,m=10'\)\)$"):
        big.save(tmp_path / "big.json")
    assert not list(tmp_path.iterdir())
    assert main(["convert", "randaugment:n=4,m=10", "-o", str(tmp_path / "big.json")]) == 2
    assert "its 38,416 sub-policies and metadata make a file of" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    largest = load_policy("randaugment:n=3,m=10")  # the largest RandAugment that fits, read back as saved
    assert Policy.load(largest.save(tmp_path / "n3.json")) == largest
    assert main(["convert", "randaugment:n=3", "-o", "-"]) == 0
    assert Policy.from_dict(json.loads(capsys.readouterr().out)) == load_policy("randaugment:n=3")
