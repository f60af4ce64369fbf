"""The policysearch console script: help texts, exit codes, one-line user errors, and the PNG grid."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from policysearch import __version__, cli
from policysearch.augment import grids
from policysearch.cli import COMMANDS, Command, from_module, main
from policysearch.augment.policy import Policy
from policysearch.augment.standard import load_policy
from policysearch.search.spaces import list_spaces

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    """The console script in a fresh interpreter (as ``python -m policysearch``) from the repository root."""
    return subprocess.run([sys.executable, "-m", "policysearch", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def good_policy(tmp_path: Path, name: str = "good.json", ops=("Rotate", "Invert")) -> Path:
    policy = Policy([[(ops[0], 0.8, 0.5), (ops[1], 0.5, 0.0)], [(ops[0], 1.0, 1.0)]], name="test-policy")
    return policy.save(tmp_path / name)


def bad_policy(tmp_path: Path) -> Path:
    data = json.loads(good_policy(tmp_path, "tmp.json").read_text())
    data["sub_policies"] += [[{"op": "Rotate", "prob": 0.5, "level": 0.5}]] * 2
    data["sub_policies"][3] = [{"op": "Rotate", "prob": 0.5, "level": 0.5}, {"op": "Invert", "prob": 1.7, "level": 0}]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    return path


# --------------------------------------------------------------------------------------------- help


def test_top_level_help(capsys):
    assert main(["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal width
    assert "Search augmentation policies" in out
    for command in COMMANDS:
        assert command.name in out and command.help in out


@pytest.mark.parametrize("name, purpose", [
    ("validate", "Check policy JSON files"),
    ("convert", "Convert another project's augmentation policy"),
    ("show", "Draw a PNG grid"),
    ("spaces", "List the search spaces"),
])
def test_subcommand_help(capsys, name, purpose):
    assert main([name, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: policysearch {name}")
    assert purpose in out
    assert "example" in out


def test_every_command_has_help_texts():
    for command in COMMANDS:
        assert command.help and command.description and "policysearch " + command.name in command.epilog


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"policysearch {__version__}"


def test_no_command_is_a_usage_error(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "policysearch: error: choose a command" in err


def test_unknown_command_and_bad_option(capsys):
    assert main(["frobnicate"]) == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err
    assert main(["show", "--samples", "0"]) == 2
    assert "--samples: must be at least 1, got 0" in capsys.readouterr().err
    assert main(["show", "--views", "many"]) == 2
    assert "expected a whole number, got 'many'" in capsys.readouterr().err


def test_a_usage_error_is_one_line_that_points_to_the_help(capsys):
    """argparse printed the usage of every option first: 20 lines for the benchmark's, above the error."""
    assert main(["benchmark", "--methods", "bogus"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "usage:" not in err
    assert err.startswith("policysearch benchmark: error: argument --methods: invalid choice: 'bogus'")
    assert err.endswith("; see policysearch benchmark --help\n")
    assert main(["search", "--epochs", "x"]) == 2
    # the wording show's options use (a trial found two: argparse's "invalid int value" on search's)
    assert capsys.readouterr().err == ("policysearch search: error: argument --epochs: expected a whole number, got "
                                       "'x'; see policysearch search --help\n")
    for command, option, value, expected in (("search", "--lr", "fast", "a number"),
                                             ("benchmark", "--seeds", "nan", "a whole number"),
                                             ("benchmark", "--lr", "x", "a number")):
        assert main([command, option, value]) == 2
        assert f"argument {option}: expected {expected}, got {value!r}" in capsys.readouterr().err
    # reported by the root parser, about the subcommand's options: named as the subcommand's other errors are
    assert main(["search", "--bogus", "1"]) == 2
    assert capsys.readouterr().err == ("policysearch search: error: unrecognized arguments: --bogus 1; see "
                                       "policysearch search --help\n")


def test_help_does_not_import_torch():
    code = "import sys; from policysearch.cli import main; main(['--help']); assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_output_into_a_closed_pipe_stops_quietly():
    """Regression: ``policysearch spaces | head -1`` ended with "policysearch: error: Broken pipe" (exit 2)."""
    import os

    read, write = os.pipe()
    os.close(read)  # the reader has gone, as head does after its lines
    try:
        result = subprocess.run([sys.executable, "-m", "policysearch", "spaces"], cwd=ROOT, stdout=write,
                                stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert (result.returncode, result.stderr) == (cli.EXIT_BROKEN_PIPE, "")


def test_a_broken_pipe_other_than_the_output_is_an_error(capsys, monkeypatch):
    """Only the output's reader going away is a quiet stop; another pipe's (a subprocess's) is reported."""
    import dataclasses

    def lost_a_worker(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "COMMANDS", tuple(dataclasses.replace(c, run=lost_a_worker) if c.name == "spaces" else c
                                               for c in cli.COMMANDS))
    assert main(["spaces"]) == cli.EXIT_USAGE
    assert capsys.readouterr().err == "policysearch: error: Broken pipe\n"


# --------------------------------------------------------------------------------------------- validate


def test_validate_ok(tmp_path, capsys):
    path = good_policy(tmp_path)
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: ok (2 sub-policies, ops: Rotate, Invert; baseline: no crop, no flip)\n"


def test_validate_names_wide_op_ranges(tmp_path, capsys):
    path = tmp_path / "wide.json"
    path.write_text(json.dumps({"format_version": 3, "op_ranges": "wide",
                                "sub_policies": [[{"op": "Rotate", "prob": 1.0, "level": 0.5}]]}))
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: ok (1 sub-policy, ops: Rotate; op ranges: wide; baseline: no crop, no flip)\n"


def test_validate_bad_file(tmp_path, capsys):
    path = bad_policy(tmp_path)
    assert main(["validate", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"{path}: sub_policies[3][1].prob: 1.7 is outside [0, 1]\n"


def test_validate_checks_every_file(tmp_path, capsys):
    good, bad, missing = good_policy(tmp_path), bad_policy(tmp_path), tmp_path / "missing.json"
    assert main(["validate", str(bad), str(good), str(missing)]) == 1
    captured = capsys.readouterr()
    assert captured.out == f"{good}: ok (2 sub-policies, ops: Rotate, Invert; baseline: no crop, no flip)\n"
    assert captured.err.splitlines() == [f"{bad}: sub_policies[3][1].prob: 1.7 is outside [0, 1]",
                                         f"{missing}: no such file"]


@pytest.mark.slow
def test_validate_in_a_subprocess(tmp_path):
    good, bad = good_policy(tmp_path), bad_policy(tmp_path)
    result = run("validate", str(good), str(bad))
    assert result.returncode == 1
    assert result.stdout == f"{good}: ok (2 sub-policies, ops: Rotate, Invert; baseline: no crop, no flip)\n"
    assert result.stderr == f"{bad}: sub_policies[3][1].prob: 1.7 is outside [0, 1]\n"


# --------------------------------------------------------------------------------------------- convert


@pytest.mark.slow
def test_convert_writes_a_file_that_validates(tmp_path):
    out = tmp_path / "nested" / "cifar10.json"
    result = run("convert", "torchvision:cifar10", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}: 25 sub-policies converted from torchvision:cifar10" in result.stdout
    assert main(["validate", str(out)]) == 0


def test_convert_to_standard_output_writes_the_json_alone_there(tmp_path, capsys, monkeypatch):
    """Regression: ``-o -`` wrote a file named "-"; it now writes the policy to standard output, the summary to
    standard error, so ``convert ... -o - | ...`` pipes a valid policy file."""
    monkeypatch.chdir(tmp_path)
    assert main(["convert", "torchvision:cifar10", "-o", "-"]) == 0
    out, err = capsys.readouterr()
    assert Policy.from_dict(json.loads(out)) == load_policy("torchvision:cifar10")
    assert "wrote standard output: 25 sub-policies converted from torchvision:cifar10" in err
    assert list(tmp_path.iterdir()) == []


def test_convert_reports_a_file_it_cannot_read_as_an_invalid_file_with_or_without_from(tmp_path, capsys):
    """Regression: the same empty file gave exit status 2 without --from and 1 with it, and said "Expecting
    value"."""
    empty = tmp_path / "empty.json"
    empty.write_text("")
    for form in ([], ["--from", "autoaugment"]):
        assert main(["convert", str(empty), *form, "-o", str(tmp_path / "out.json")]) == cli.EXIT_INVALID
        assert capsys.readouterr().err.strip() == (
            f"policysearch: error: {empty}: the file is empty (no JSON in it)")  # regression: "see policysearch convert"
    assert not (tmp_path / "out.json").exists()
    # the same for our own format, which a review found still differed: a file that does not load is invalid (1),
    # a valid one has nothing to convert, whatever --from says (2)
    broken, ours = tmp_path / "broken.json", good_policy(tmp_path, "ours.json")
    broken.write_text('{"format_version": 3, "sub_policies": 5}')
    for form in ([], ["--from", "autoaugment"]):
        assert main(["convert", str(broken), *form, "-o", str(tmp_path / "out.json")]) == cli.EXIT_INVALID
        # regression: the file was named twice ("F is in policysearch's own format but does not load: F: ...")
        assert capsys.readouterr().err.count(str(broken)) == 1
        assert main(["convert", str(ours), *form, "-o", str(tmp_path / "out.json")]) == cli.EXIT_USAGE
        assert "is already a policysearch policy file" in capsys.readouterr().err


def test_convert_with_from_and_a_policy_string_says_from_is_for_files(tmp_path, capsys):
    """Regression: ``convert autoaugment:cifar10 --from autoaugment`` said "no such file"."""
    assert main(["convert", "autoaugment:cifar10", "--from", "autoaugment", "-o", str(tmp_path / "o.json")]) == \
        cli.EXIT_USAGE
    assert capsys.readouterr().err.strip() == (
        "policysearch: error: autoaugment:cifar10 is a policy string, which convert reads without --from; --from "
        "names the form of a JSON file from another project")


# --------------------------------------------------------------------------------------------- show


def test_show_with_a_policy_file(tmp_path, capsys):
    out = tmp_path / "deep" / "er" / "grid.png"
    args = ["show", str(good_policy(tmp_path)), "--dataset", "digits", "-o", str(out), "--samples", "3",
            "--views", "2", "--scale", "2", "--seed", "1"]
    assert main(args) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    with Image.open(out) as img:
        assert img.format == "PNG" and img.mode == "RGB"
        width, height = img.size
    cells_w, cells_h = 3 * 16 * 2, 3 * 16 * 2  # 1 original + 2 views; 3 rows; 16 px digits at x2
    assert cells_w < width < cells_w + 400
    assert cells_h < height < cells_h + 200
    # The same command draws the same picture.
    again = tmp_path / "again.png"
    assert main(args[:5] + [str(again)] + args[6:]) == 0
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(again)))


def test_show_refuses_a_grid_too_large_to_draw_before_drawing(tmp_path, capsys):
    """Regression: --scale 1000 asked for about 170 GB and was killed by the system, taking other processes
    with it; a grid beyond SHOW_MAX_PIXELS is now one line naming the options."""
    out = tmp_path / "grid.png"
    assert main(["show", "--dataset", "digits", "--scale", "1000", "-o", str(out)]) == cli.EXIT_USAGE
    assert capsys.readouterr().err.strip() == (
        "policysearch: error: the grid would have about 18,432 million pixels (8 samples x 9 images of 16000x16000 "
        "px), more than 50 million; lower --scale, --samples or --views")
    assert not out.exists()


def test_show_and_benchmark_take_the_download_their_missing_data_message_names(tmp_path, capsys, monkeypatch):
    """Regression: show's and the benchmark's message for a missing data set said to run again with --download,
    which only search took."""
    import argparse

    import torch

    from policysearch.benchmark import command as benchmark_command
    from policysearch.training import data

    assert main(["show", "--dataset", "cifar10", "--data-root", str(tmp_path), "-o", str(tmp_path / "g.png")]) == 2
    assert "run again with --download" in capsys.readouterr().err
    asked = []

    def no_images(name, **settings):  # what the loader was asked; an empty set ends show before drawing
        asked.append(settings["download"])
        return data.ImageData(torch.zeros(0, 3, 32, 32, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64),
                              ("a",), "cifar10/train")

    monkeypatch.setattr(data, "load_dataset", no_images)
    assert main(["show", "--dataset", "cifar10", "--download", "-o", str(tmp_path / "g.png")]) == 2
    assert asked == [True]
    parser = argparse.ArgumentParser()
    benchmark_command.add_arguments(parser)
    assert parser.parse_args(["--download"]).download is True


def test_show_without_a_policy_uses_torchvision_cifar10(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["show", "--dataset", "digits", "--samples", "2", "--views", "3"]) == 0
    out = capsys.readouterr().out
    assert "wrote grid.png" in out and "torchvision:cifar10" in out
    with Image.open(tmp_path / "grid.png") as img:
        width, height = img.size
    assert 4 * 64 < width < 4 * 64 + 400  # default scale: 16 px digits shown at 64 px
    assert 2 * 64 < height < 2 * 64 + 200


def test_show_takes_a_folder_as_search_does(tmp_path, capsys):
    """Regression: search took --dataset PATH for an image folder, show only imagefolder:PATH."""
    rng = np.random.default_rng(0)
    for name in ("cats", "dogs"):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for k in range(3):
            pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "pets" / name / f"{k}.png")
    out = tmp_path / "grid.png"
    assert main(["show", "--dataset", str(tmp_path / "pets"), "-o", str(out), "--samples", "2", "--views", "1"]) == 0
    assert f"2 samples of imagefolder:{tmp_path / 'pets'}, 1 view each" in capsys.readouterr().out
    assert main(["show", "--dataset", str(tmp_path / "pets"), "-o", str(out), "--samples", "1", "--views", "1"]) == 0
    assert f"1 sample of imagefolder:{tmp_path / 'pets'}, 1 view each" in capsys.readouterr().out  # was "1 samples"
    # what loading skipped or changed is said, as the search says it (regression: show said nothing)
    (tmp_path / "pets" / "cats" / "notes.txt").write_text("not an image")
    assert main(["show", "--dataset", str(tmp_path / "pets"), "-o", str(out), "--samples", "1", "--views", "1"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("data: ") and "notes.txt" in printed.splitlines()[0]
    (tmp_path / "pets" / "cats" / "notes.txt").unlink()
    # Regression: a searched policy was shown on digits; its own data set is the default now
    def searched_on(dataset: str, name: str, **search) -> str:
        metadata = {"run_id": "r", "dataset": dataset, "search": {"dataset": dataset, "data_root": "data", **search}}
        return str(Policy([[("Rotate", 0.8, 0.5)]], metadata=metadata).save(tmp_path / name))

    pets = searched_on(f"imagefolder:{tmp_path / 'pets'}", "a.json")
    assert main(["show", pets, "-o", str(out), "--samples", "2"]) == 0
    # the same views per sample as the run's grid.png (show drew 6, the run 8: a trial's find)
    assert f"2 samples of imagefolder:{tmp_path / 'pets'}, 8 views each" in capsys.readouterr().out
    assert main(["show", searched_on("python:Dataset#0123456789ab", "b.json"), "-o", str(out), "--samples", "2"]) == 0
    printed = capsys.readouterr().out  # data given in Python cannot be read again; it says so (it was silent)
    assert "2 samples of digits/train" in printed and printed.startswith(
        "the policy was searched on data given in Python, which show cannot read; showing digits instead")
    assert main(["show", searched_on("cifar10", "c.json", data_root=str(tmp_path / "none")), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("the policy's data set cannot be read here (cifar10 train files are missing: expected "
                              f"{tmp_path / 'none'}") and "showing digits instead" in printed
    for root in (5, [], ""):  # a hand-edited data root: the default folder (regression: a traceback, "not int")
        assert main(["show", searched_on("cifar10", "e.json", data_root=root), "-o", str(out), "--samples", "2"]) == 0
        printed = capsys.readouterr().out
        assert "cifar10 train files are missing: expected data/" in printed and "showing digits" in printed
    hand_written = Policy([[("Rotate", 0.8, 0.5)]], metadata={"dataset": "CIFAR-10"})  # not a searched policy
    assert main(["show", str(hand_written.save(tmp_path / "d.json")), "-o", str(out), "--samples", "2"]) == 0
    assert "2 samples of digits/train" in capsys.readouterr().out


def test_show_draws_a_searched_policys_images_at_the_side_it_searched_at():
    """Regression (a review): show drew the search's data set at its default size, where the policy's
    pad_crop is in pixels of the side the search trained at (policy.json's metadata.image_size)."""
    import argparse

    from policysearch.cli import _show_data

    import torch

    from policysearch.cli import _drawn_at
    from policysearch.training.data import load_dataset, resize_images

    args = argparse.Namespace(dataset=None, data_root=None, download=False, samples=3, seed=0)
    for side, shown in ((32, 32), (None, 16), ("32", 16), (True, 16), (10 ** 9, 16)):  # absent or hand-edited
        metadata = {"run_id": "r", "search": {"dataset": "digits", "data_root": "data"},
                    **({"image_size": side} if side is not None else {})}
        data = _show_data(args, Policy([[("Rotate", 0.8, 0.5)]], metadata=metadata))
        assert data.images.shape[-1] == shown
    # resized once, from the originals, as the search resized them (a review: 8 -> 16 -> 32)
    assert torch.equal(data.images, load_dataset("digits").images) and torch.equal(
        _show_data(args, Policy([[("Rotate", 0.8, 0.5)]], metadata={**metadata, "image_size": 32})).images,
        load_dataset("digits", image_size=32).images)
    # a data set stored at one size (cifar10, svhn): only the samples drawn are resized, and sample_grid
    # draws them in the order it draws them from the whole set (a review: the rows came out reordered)
    for samples, seed in ((3, 0), (8, 5), (2000, 1)):
        args = argparse.Namespace(samples=samples, seed=seed)
        drawn = _drawn_at(data, 32, args)
        assert len(drawn) == min(samples, len(data))
        picks = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:samples]
        assert torch.equal(drawn.labels[torch.randperm(len(drawn), generator=torch.Generator().manual_seed(seed))],
                           data.labels[picks])
        assert torch.equal(drawn.images[torch.randperm(len(drawn), generator=torch.Generator().manual_seed(seed))],
                           resize_images(data.images[picks], 32))


def test_show_and_convert_check_their_output_before_work(tmp_path, capsys, monkeypatch):
    """Regression (trial): show read the data and drew the grid before finding -o unwritable; convert -o - with
    standard output closed ended in a traceback; show --seed beyond numpy's range said "Overflow when unpacking"."""
    from policysearch import cli

    monkeypatch.setattr(cli, "_show_data", lambda *a: pytest.fail("the data were read before -o was checked"))
    (tmp_path / "file").write_text("")
    assert main(["show", "identity", "-o", str(tmp_path / "file" / "g.png")]) == 2
    assert capsys.readouterr().err.endswith(f"{tmp_path / 'file'} is a file, not a folder\n")
    # review: the check must take what write_atomic writes: a device, and a link into a folder not yet made
    assert main(["convert", "randaugment:n=1,m=5", "-o", os.devnull]) == 0
    (tmp_path / "link.json").symlink_to(tmp_path / "later" / "p.json")
    assert main(["convert", "randaugment:n=1,m=5", "-o", str(tmp_path / "link.json")]) == 0
    assert (tmp_path / "later" / "p.json").is_file() and (tmp_path / "link.json").is_symlink()
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdout", None)
    assert main(["convert", "randaugment", "-o", "-"]) == 2
    assert capsys.readouterr().err == "policysearch: error: -o -: standard output is closed; give the policy file " \
                                      "to write\n"
    monkeypatch.undo()
    for seed in ("99999999999999999999999", "-1"):
        assert main(["show", "identity", "--seed", seed, "-o", str(tmp_path / "g.png")]) == 2
        assert "argument --seed: must be from 0 to 4294967295, got " in capsys.readouterr().err


def test_show_batch_backend(tmp_path):
    out = tmp_path / "grid.png"
    path = good_policy(tmp_path, ops=("Rotate", "Solarize"))
    assert main(["show", str(path), "-o", str(out), "--samples", "2", "--views", "2", "--backend", "batch"]) == 0
    assert Image.open(out).size[0] > 3 * 64


def test_show_batch_backend_with_posterize(tmp_path):
    out = tmp_path / "grid.png"
    path = good_policy(tmp_path, ops=("Posterize", "Invert"))
    assert main(["show", str(path), "-o", str(out), "--samples", "2", "--views", "2", "--backend", "batch"]) == 0


def test_render_grid_cells_hold_the_upscaled_images():
    rng = np.random.default_rng(0)
    rows = [[Image.fromarray(rng.integers(0, 256, (5, 7), dtype=np.uint8), "L") for _ in range(3)] for _ in range(2)]
    canvas, boxes = grids.render_grid(rows, ["original", "view 1", "view 2"], ["a", "b"], ["title", "subtitle"], 3)
    assert len(boxes) == 2 and len(boxes[0]) == 3
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            left, top, right, bottom = boxes[r][c]
            assert (right - left, bottom - top) == (21, 15)
            expected = np.asarray(img.convert("RGB").resize((21, 15), Image.Resampling.NEAREST))
            assert np.array_equal(np.asarray(canvas.crop(boxes[r][c])), expected)
    assert boxes[0][1][0] - boxes[0][0][2] == grids.GAP  # thin gaps between cells
    assert boxes[1][0][1] - boxes[0][0][3] == grids.GAP
    assert canvas.width >= boxes[0][-1][2] + grids.MARGIN and canvas.height >= boxes[-1][0][3] + grids.MARGIN


def test_grid_rows_name_classes_with_accents_and_number_those_the_font_cannot_draw(monkeypatch):
    """Regression (a trial): class names beyond ASCII ("chien é", "猫") were drawn as boxes in grid.png, the
    only place that shows them; the font now has accented, Greek and Cyrillic letters, and a name it cannot
    draw is the class's number."""
    import torch

    from policysearch.augment.policy import Policy
    from policysearch.training.data import ImageData

    drawn = {}
    real = grids.render_grid
    monkeypatch.setattr(grids, "render_grid", lambda rows, columns, labels, title, scale: (
        drawn.setdefault("labels", list(labels)), real(rows, columns, labels, title, scale))[1])
    data = ImageData(torch.zeros(3, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 2]), ("chien é", "猫", "Жук"),
                     "mine")
    grids.sample_grid(Policy([[{"op": "Identity", "prob": 1.0, "level": 0.0}]]), data, about="x", samples=3,
                      views=1, seed=0)
    assert sorted(drawn["labels"]) == sorted(["chien é", "class 1", "Жук"])
    # Pillow's bitmap font, where FreeType is missing, draws Latin-1 (a review: every label raised there)
    from PIL import ImageFont

    from PIL._util import DeferredError

    grids._font.cache_clear()
    monkeypatch.setattr(ImageFont, "core", DeferredError(ImportError("The _imagingft C module is not installed")))
    try:
        assert not isinstance(grids._font(11), ImageFont.FreeTypeFont)
        assert [grids._drawable(name) for name in ("cat", "chien é", "猫")] == [True, True, False]
        rows = [[Image.new("L", (7, 5)) for _ in range(2)]]  # a title in any script is drawn, '?' for the rest
        assert grids.render_grid(rows, ["original", "view 1"], ["猫"], ["Жук: 猫", "é"], 2)[0].size[0] > 0
    finally:
        grids._font.cache_clear()


# --------------------------------------------------------------------------------------------- spaces


def test_spaces_lists_the_shipped_spaces(capsys):
    assert main(["spaces"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list_spaces()
    fast = next(line for line in lines if line.startswith("fast_autoaugment "))
    assert "[15 ops, 5x2]" in fast and "Fast AutoAugment" in fast


# --------------------------------------------------------------------------------------------- user errors


@pytest.mark.parametrize("make_args, message, status", [
    (lambda t: ["show", "--dataset", "nope", "-o", str(t / "g.png")], "unknown data set 'nope'", 2),
    (lambda t: ["show", str(bad_policy(t)), "-o", str(t / "g.png")], "p.json: sub_policies[3][1].prob: 1.7 is outside",
     1),
    (lambda t: ["show", str(t / "missing.json")], "missing.json: no such file", 1),
    (lambda t: ["show", "randaugment:n=9", "-o", str(t / "g.png")], "randaugment:n=9: n=9 is outside 1..4", 2),
    (lambda t: ["show", str(good_policy(t)), "--dataset", "cifar10", "--data-root", str(t / "nodata")], "cifar10", 2),
    (lambda t: ["convert", str(t / "missing.json"), "--from", "autoaugment", "-o", str(t / "o.json")], "no such file",
     1),
    (lambda t: ["convert", str(bad_policy(t)), "-o", str(t / "o.json")], "is in policysearch's own format but does "
     "not load: ", 1),  # an invalid file, as validate says, with --from or without
    (lambda t: ["convert", str(good_policy(t)), "-o", str(t / "o.json")], "is already a policysearch policy file: "
     "use it as it is", 2),
    (lambda t: ["convert", "torchvision:cifar10", "-o", str(good_policy(t)) + "/inside.json"], "good.json", 2),
    (lambda t: ["convert", "randaugment", "-o", str(t)], "error: -o TMP: a folder, not a file\n", 2),  # TMP: tmp_path
    # regression (trial): "new/" wrote a file named new, and a file as a parent folder was "File exists"
    (lambda t: ["convert", "randaugment", "-o", str(t / "new") + "/"], "error: -o TMP/new/: a folder, not a file\n", 2),
    (lambda t: ["convert", "randaugment", "-o", str(good_policy(t)) + "/x.json"],
     "error: -o TMP/good.json/x.json: TMP/good.json is a file, not a folder\n", 2),
    (lambda t: ["show", "identity", "-o", str(good_policy(t)) + "/x.png"],
     "error: -o TMP/good.json/x.png: TMP/good.json is a file, not a folder\n", 2),
    # regression (trial): the hint for a name sent a command-line user to load_policy()
    (lambda t: ["convert", "-", "--from", "autoaugment", "-o", str(t / "o.json")],
     "error: -: no such file; standard input is not read, give the policy file's path\n", 1),
    # regression: an empty -o named a temporary file ("..xyz.tmp: Device or resource busy")
    (lambda t: ["convert", "randaugment", "-o", ""], "error: -o is empty; give the policy file to write, or - for "
     "standard output\n", 2),
    (lambda t: ["show", str(good_policy(t)), "-o", str(t)],
     "error: -o TMP: a folder; give the PNG file to write, e.g. TMP/grid.png\n", 2),
    # regression: an empty -o was "a folder" (Path("") is the current folder)
    (lambda t: ["show", str(good_policy(t)), "-o", ""], "error: -o is empty; give the PNG file to write, e.g. "
     "grid.png\n", 2),
    # regression: "nodir/" wrote a PNG file named nodir, and grid.jpg a PNG under a JPEG's name
    (lambda t: ["show", str(good_policy(t)), "-o", str(t / "nodir") + "/"], "-o TMP/nodir/: a folder", 2),
    (lambda t: ["show", str(good_policy(t)), "-o", str(t / "grid.jpg")],
     "-o TMP/grid.jpg: show writes a PNG; give a name ending in .png\n", 2),
])
def test_user_errors_are_one_line(tmp_path, capsys, make_args, message, status):
    """Exit status 1 for an invalid input file (as validate), 2 for a usage error."""
    assert main(make_args(tmp_path)) == status
    err = capsys.readouterr().err
    assert err.startswith("policysearch: error: ") and err.count("\n") == 1, err
    assert message.replace("TMP", str(tmp_path)) in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_user_error_in_a_subprocess_has_no_traceback(tmp_path):
    result = run("show", "--dataset", "nope", "-o", str(tmp_path / "g.png"))
    assert result.returncode == 2
    assert result.stderr.startswith("policysearch: error: unknown data set 'nope'")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_bugs_are_not_hidden(monkeypatch):
    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "COMMANDS", [Command("boom", "h", "d", "policysearch boom", lambda p: None, broken)])
    with pytest.raises(KeyError):
        main(["boom"])


# --------------------------------------------------------------------------------------------- extending


def test_a_module_command_is_imported_only_when_used(tmp_path, monkeypatch, capsys):
    (tmp_path / "fake_search_cmd.py").write_text(textwrap.dedent("""
        IMPORTED = True

        def add_arguments(parser):
            parser.add_argument("--trials", type=int, default=5)

        def run(args):
            print(f"searching {args.trials} trials")
            return 0
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    command = Command("lazysearch", "search a policy", "Search.", "example:\n  policysearch lazysearch",
                      from_module("fake_search_cmd", "add_arguments"), from_module("fake_search_cmd", "run"))
    monkeypatch.setattr(cli, "COMMANDS", [*COMMANDS, command])
    assert main(["--help"]) == 0
    assert "search a policy" in capsys.readouterr().out
    assert "fake_search_cmd" not in sys.modules
    assert main(["lazysearch", "--trials", "7"]) == 0
    assert capsys.readouterr().out == "searching 7 trials\n"
    monkeypatch.delitem(sys.modules, "fake_search_cmd")


def test_a_ctrl_c_while_a_command_loads_is_one_line(monkeypatch, capsys):
    """Regression: building a command's parser imports torch (seconds); a Ctrl-C then printed a traceback
    through importlib instead of one line."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["benchmark", "--list"]) == 130
    assert capsys.readouterr().err == "policysearch: interrupted before it started; nothing was written\n"


def test_readme_search_synopsis_lists_every_search_option():
    """The README's synopsis of `policysearch search` is where users look for the options; it left out
    some (--data-root, --download, --seed, ...) that only --help listed."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("policysearch search [")
    synopsis = readme[start:readme.index("```", start)]
    search = argparse.ArgumentParser()
    next(c for c in COMMANDS if c.name == "search").add_arguments(search)
    options = [s for action in search._actions for s in action.option_strings
               if s.startswith("--") and s != "--help"]
    missing = [o for o in options if f"[{o}" not in synopsis]
    assert options and not missing, f"README search synopsis lacks {missing}"
