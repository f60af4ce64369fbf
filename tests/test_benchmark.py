"""The benchmark: paired statistics, the RandAugment/TrivialAugment policies and a tiny end-to-end run."""

import argparse
import csv
import dataclasses
import io
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from policysearch.augment.policy import Baseline, Policy
from policysearch.augment.standard import RANDAUGMENT_OPS, randaugment_policy, trivialaugment_policy
from policysearch.augment.transforms import BatchPolicyTransform
from policysearch.benchmark import anchors, command, methods, presets, report, runner
from policysearch.benchmark.command import add_arguments, preset_from_args
from policysearch.benchmark.stats import paired_difference
from policysearch.training.data import DataError



def test_paired_difference_matches_hand_computation():
    # d = [2, 3, 4]: mean 3, sample sd 1, se 1/sqrt(3); t(0.975, df=2) = 4.302653
    result = paired_difference([3.0, 5.0, 7.0], [1.0, 2.0, 3.0])
    half = 4.302653 / math.sqrt(3)
    assert result["n"] == 3
    assert result["mean"] == pytest.approx(3.0)
    assert result["low"] == pytest.approx(3.0 - half, abs=1e-5)
    assert result["high"] == pytest.approx(3.0 + half, abs=1e-5)
    # identical differences: zero-width interval; one pair: no interval
    same = paired_difference([1.0, 2.0], [0.5, 1.5])
    assert same["low"] == pytest.approx(0.5) and same["high"] == pytest.approx(0.5)
    one = paired_difference([1.0], [3.0])
    assert one["mean"] == -2.0 and math.isnan(one["low"]) and math.isnan(one["high"])
    with pytest.raises(ValueError):
        paired_difference([1.0], [1.0, 2.0])


def test_randaugment_policy_is_all_ordered_pairs_at_level_point_nine():
    policy = randaugment_policy()
    assert len(RANDAUGMENT_OPS) == 14
    assert len(policy) == 14 * 14
    pairs = {(sub[0].op, sub[1].op) for sub in policy}
    assert len(pairs) == 196 and ("Rotate", "Rotate") in pairs and ("Identity", "Equalize") in pairs
    assert all(step.prob == 1.0 and step.level == pytest.approx(0.9) for sub in policy for step in sub)
    assert "Invert" not in policy.ops()


def test_trivialaugment_policy_gives_every_op_the_same_chance():
    policy = trivialaugment_policy()
    assert len(policy) == 14 * 31
    assert all(len(sub) == 1 and sub[0].prob == 1.0 for sub in policy)
    counts = {op: sum(1 for sub in policy if sub[0].op == op) for op in RANDAUGMENT_OPS}
    assert set(counts.values()) == {31}
    levels = sorted({sub[0].level for sub in policy if sub[0].op == "Rotate"})
    assert levels[0] == 0.0 and levels[-1] == 1.0 and len(levels) == 31


def test_policies_run_per_sample_on_a_batch():
    batch = torch.randint(0, 256, (16, 1, 16, 16), dtype=torch.uint8)
    for policy in (randaugment_policy(), trivialaugment_policy()):
        out = BatchPolicyTransform(policy)(batch, torch.Generator().manual_seed(0))
        assert out.dtype == torch.uint8 and out.shape == batch.shape


def _args(*argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cutout_scales_with_image_size_and_presets_parse():
    assert methods.cutout_pixels(32) == 16 and methods.cutout_pixels(16) == 8
    preset = preset_from_args(_args("--preset", "digits-small", "--epochs", "2", "--methods", "baseline"))
    assert preset.epochs == 2 and preset.methods == ("baseline",) and preset.dataset == "digits"
    cifar = preset_from_args(_args("--preset", "reduced-cifar10-wrn40-2"))
    assert cifar.model == "wrn40_2" and cifar.search_train_size == 4000 and cifar.epochs == 200
    assert cifar.train_size is None
    photos = preset_from_args(_args("--preset", "cifar10-dev-1000"))
    short = preset_from_args(_args("--preset", "cifar10-dev-1000-short"))
    two = preset_from_args(_args("--preset", "cifar10-dev-2class-200"))
    assert photos.model == "resnet8" and photos.epochs == presets.CIFAR10_DEV_EPOCHS and photos.train_size == 1000
    assert (short.model, short.epochs, short.batch_size, short.train_size) == ("small_cnn", 20, 50, 1000)
    assert two.dataset.endswith("cifar10-dev?classes=automobile,truck") and two.train_size == 200 and two.model == "resnet8"
    for name in ("cifar10-dev-1000", "cifar10-dev-2class-200", "digits-small", "digits-100-finetune"):
        preset_methods = presets.PRESETS[name].methods
        assert set(methods.ANCHOR_METHODS) <= set(preset_methods), name  # every preset trains the anchors


def test_methods_name_what_they_run():
    assert "tv-trivialaugmentwide-alone" in methods.METHODS and "timm-rand-m9-mstd0.5-inc1" in methods.METHODS
    assert not {"randaugment", "trivialaugment", "autoaugment"} & set(methods.ALL_METHODS)
    assert methods.LEGACY_METHOD_NAMES["trivialaugment-alone"] == "ours-trivialaugment-narrow-alone"
    assert set(methods.LEGACY_METHOD_NAMES.values()) == set(methods.STANDARD_METHODS)
    base = Baseline(pad_crop=4, hflip=False)
    describe = lambda m: methods.describe_method(m, base, 16, False)  # noqa: E731
    assert describe("tv-randaugment") == ("baseline (pad-and-crop 4 px, no flip), then "
                                          "`torchvision.transforms.v2.RandAugment()` per PIL image")
    assert describe("tv-augmix-alone") == "`torchvision.transforms.v2.AugMix()` per PIL image"
    assert describe("ours-randaugment-m0.9").startswith("our policy `randaugment:n=2,m=9`")
    assert describe("ours-trivialaugment-narrow-alone").startswith("our policy `trivialaugment`")
    assert describe("cutout") == "baseline (pad-and-crop 4 px, no flip), then Cutout 16 px"
    # the policy rows are the policies they name; an anchor is the library's transform after the baseline or alone
    recipe, _ = methods.method_recipe("ours-randaugment-m0.9-alone", base, None, 16, False)
    assert recipe.name == randaugment_policy(2, 9).name and recipe.baseline == Baseline()
    augment, cut = methods.method_augment("tv-trivialaugmentwide", base, None, 16, False, image_size=16, mean=[0.5])
    assert augment.baseline.baseline == base and cut == 0
    alone, _ = methods.method_augment("tv-trivialaugmentwide-alone", base, None, 16, True, image_size=16, mean=[0.5])
    assert alone.baseline is None
    assert methods.method_augment("tv-augmix", base, None, 16, True, image_size=16, mean=[0.5])[1] == 16


def test_an_anchor_run_draws_the_same_augmentations_for_the_same_seed():
    from policysearch.training.data import load_dataset, stratified_subset
    from policysearch.training.models import build_model
    from policysearch.training.train import TrainConfig, train_model

    data = stratified_subset(load_dataset("digits"), 20, seed=0)
    augment, _ = methods.method_augment("tv-trivialaugmentwide", Baseline(1, False), None, 8, False,
                                          image_size=16, mean=[0.3])

    def batches(seed):
        seen = []

        def record(x, generator):
            seen.append(augment(x, generator))
            return seen[-1]

        torch.manual_seed(0)
        train_model(build_model("small_cnn", 10, 1), data, TrainConfig(epochs=1, batch_size=10, seed=seed),
                    augment=record, mean=[0.3], std=[0.3])
        return seen

    first = batches(0)
    torch.manual_seed(1234)  # other global state in between changes nothing
    again = batches(0)
    assert len(first) == 2 and all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(batches(1)[0], first[0])


def test_results_of_one_seed_are_strict_json(tmp_path):
    """Regression (a trial): one seed gave "std": NaN in results.json, which strict JSON readers refuse."""
    out = tmp_path / "bench"
    args = _args("--preset", "digits-small", "--train-size", "30", "--epochs", "1", "--seeds", "0", "--methods",
                 "none", "--out", str(out), "--batch-size", "16")
    assert command.run(args) == 0

    def refuse(constant):
        raise ValueError(f"{constant} in results.json")

    (row,) = json.loads((out / "results.json").read_text(), parse_constant=refuse)["summary"]
    assert row["method"] == "none" and row["n"] == 1 and row["std"] is None


def test_smoke_benchmark_writes_results(tmp_path):
    policy_file = tmp_path / "p.json"
    randaugment_policy().save(policy_file)
    out = tmp_path / "bench"
    args = _args("--preset", "digits-small", "--train-size", "30", "--epochs", "1", "--seeds", "0", "1",
                 "--methods", "baseline", "cutout", "searched", "--policy", str(policy_file), "--out", str(out),
                 "--batch-size", "16")
    assert command.run(args) == 0
    for name in ("results.md", "runs.csv", "results.json", "errors.png"):
        assert (out / name).exists(), name
    assert (out / "errors.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (out / "runs.csv").read_text().splitlines()
    assert lines[0].startswith("# command:")
    rows = list(csv.DictReader(lines[1:]))
    assert [(r["method"], r["seed"]) for r in rows] == [(m, s) for s in "01" for m in ("baseline", "cutout", "searched")]
    assert {r["command"] for r in rows} == {command.command_line()}  # which command trained each run
    document = json.loads((out / "results.json").read_text())
    assert document["settings"]["cutout_pixels"] == 8 and document["settings"]["train_images"] == 30
    # regression (a trial): only the asked 1 epoch at batch 16 was recorded; 30 images train 40 at batch 7
    assert document["settings"]["epochs"] == 1 and document["trained"] == {"epochs": 40, "batch_size": 7}
    assert "policysearch" in document["software"] and document["command"]
    assert document["searched_policy"]["sub_policies"] == 196
    base = next(row for row in document["summary"] if row["method"] == "baseline")
    assert base["searched_minus"]["n"] == 2
    text = (out / "results.md").read_text()
    assert "| baseline |" in text and "| cutout |" in text and "searched - method" in text
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries
    # A search's costs: phase 1b runs inside phase 1's trials, so its wall time is phase 1's, not a row of its own.
    document["search"] = {"search_wall_s": 100.0, "total_device_s": 80.0, "phase1_wall_s": 30.0,
                          "phase1_device_s": 20.0, "phase1b_device_s": 4.0, "phase2_wall_s": 25.0,
                          "phase2_device_s": 20.0, "phase3_wall_s": 40.0, "phase3_device_s": 36.0}
    costs = report.render_markdown(document, document["summary"])
    assert "| - phase 1 child models (wall with 1b) | 30.0 | 20.0 |" in costs
    assert "| - phase 1b domain fit (in the phase-1 trials) | - | 4.0 |" in costs
    # one final training is measured here: the median of the searched trainings, so that one slowed by other work
    # on the machine does not make the search look cheap; the spread is shown
    for row, seconds in zip((r for r in document["runs"] if r["method"] == "searched"), (2.0, 40.0)):
        row["train_seconds"] = seconds
    costs = report.render_markdown(document, document["summary"])
    assert "| one final training of the searched recipe, measured here (median of 2, 2.0-40.0) | 21.0 | 21.0 |" in costs
    document["runs"].append({**document["runs"][-1], "seed": 9, "train_seconds": 3.0})
    costs = report.render_markdown(document, document["summary"])
    assert "(median of 3, 2.0-40.0) | 3.0 | 3.0 |" in costs and "times the device time of one final training measured here" in costs


def test_a_rerun_keeps_the_runs_made_the_same_way_and_trains_the_rest(tmp_path, monkeypatch, capsys):
    policy_file = tmp_path / "p.json"
    randaugment_policy().save(policy_file)
    out = tmp_path / "bench"
    common = ("--preset", "digits-small", "--train-size", "30", "--methods", "baseline", "searched", "--policy",
              str(policy_file), "--out", str(out), "--batch-size", "16")
    assert command.run(_args(*common, "--epochs", "1", "--seeds", "0")) == 0
    first = json.loads((out / "results.json").read_text())["runs"]
    trained = []
    real = runner.train_model

    def counting(model, data, config, **kwargs):
        trained.append(config.seed)
        return real(model, data, config, **kwargs)

    monkeypatch.setattr(runner, "train_model", counting)
    # one more seed: only its runs train; the finished ones are kept as they were
    assert command.run(_args(*common, "--epochs", "1", "--seeds", "0", "1")) == 0
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert trained == [1, 1] and runs[:2] == first and [(r["method"], r["seed"]) for r in runs] == [
        ("baseline", 0), ("searched", 0), ("baseline", 1), ("searched", 1)]
    # nothing left to train: the files still hold every run
    assert command.run(_args(*common, "--epochs", "1", "--seeds", "0", "1")) == 0
    assert trained == [1, 1] and json.loads((out / "results.json").read_text())["runs"] == runs
    assert len((out / "runs.csv").read_text().splitlines()) == 2 + 4
    # regression (a trial): a budget the step floor trains alike (1 and 2 epochs both train 40 epochs of 30
    # images) set every run aside and trained it again, to the same errors
    assert command.run(_args(*common, "--epochs", "2", "--seeds", "0", "1")) == 0
    assert trained == [1, 1] and json.loads((out / "results.json").read_text())["runs"] == runs
    # another budget is another benchmark: every run trains again, and the earlier files are set aside, not lost
    trained.clear()
    earlier = (out / "results.json").read_text()
    capsys.readouterr()
    assert command.run(_args(*common, "--epochs", "41", "--seeds", "0", "1")) == 0
    said = capsys.readouterr().out
    assert trained == [0, 0, 1, 1]
    (archive,) = (out / "earlier").iterdir()
    assert (archive / "results.json").read_text() == earlier and (archive / "results.md").exists()
    assert f"benchmark: set aside 4 of the 4 runs of the earlier benchmark in {out} (other settings: epochs as trained: " \
           f"was 40, now 41); its files are now in {archive}\n" in said
    # another policy in the same file: only the searched method trains again, the other methods are kept
    trained.clear()
    before = json.loads((out / "results.json").read_text())["runs"]
    trivialaugment_policy().save(policy_file)
    assert command.run(_args(*common, "--epochs", "41", "--seeds", "0", "1")) == 0
    assert trained == [0, 1]
    after = json.loads((out / "results.json").read_text())["runs"]
    assert [r for r in after if r["method"] == "baseline"] == [r for r in before if r["method"] == "baseline"]
    assert [r["method"] for r in after] == ["baseline", "searched", "baseline", "searched"]
    # fewer seeds or methods: nothing trains and the other runs, made the same way, stay in the files
    trained.clear()
    archives = len(list((out / "earlier").iterdir()))  # the new budget's set-aside files, and the new policy's
    before = json.loads((out / "results.json").read_text())["command"]
    monkeypatch.setattr(command, "command_line", lambda: "policysearch benchmark --methods baseline --seeds 1")
    assert command.run(_args(*common[:5], "baseline", *common[9:], "--epochs", "41", "--seeds", "1")) == 0
    assert trained == []
    document = json.loads((out / "results.json").read_text())
    kept = document["runs"]
    # searched is not trained by this command: its runs stay, with the record of the policy they trained
    assert [(r["method"], r["seed"]) for r in kept] == [("baseline", 1), ("baseline", 0), ("searched", 0),
                                                       ("searched", 1)]
    assert document["searched_policy"]["sha256"] == runner.policy_sha256(trivialaugment_policy())
    assert len((out / "runs.csv").read_text().splitlines()) == 2 + 4
    assert len(list((out / "earlier").iterdir())) == archives  # nothing more was set aside
    # the command alone cannot make the seed-0 row again: the report names the command that did
    assert document["earlier_commands"] == [before]
    assert f"Runs kept from earlier commands (trained the same way): `{document['earlier_commands'][0]}`" in (
        out / "results.md").read_text()
    # regression (a trial): runs.csv and errors.png named only the last command; each row names its own
    rows = list(csv.DictReader((out / "runs.csv").read_text().splitlines()[1:]))
    assert [r["command"] for r in rows] == [before] * 4 != [document["command"]] * 4
    assert report.footer_text(document, 1000) == (f"{document['command']}\nruns kept from earlier commands: "
                                                  f"{before}")


def test_the_searchs_own_settings_never_set_runs_aside_where_the_policy_is_hashed():
    """The searched runs are told apart by their policy's content: another --search-epochs that found the same
    policy keeps every run (the check a rerun test made before --search-* was refused without a search)."""
    settings = {"epochs": 1, "batch_size": 16, "train_images": 30, "search_epochs": 3, "methods": ["baseline"]}
    document = {"settings": settings, "software": {}, "searched_policy": {"sha256": "abc"}}
    other = {**document, "settings": {**settings, "search_epochs": 9, "search_trials": 2}}
    assert runner._compared(document) == runner._compared(other)
    assert runner._compared(document, hashed=False) != runner._compared(other, hashed=False)


def test_a_rerun_trains_again_when_the_weights_file_changed(tmp_path, monkeypatch):
    """Settings name the weights by path: a rerun after the file changed must not keep the runs (or the
    search) made from the old weights."""
    from policysearch.training.pretrained import ModelSpec

    weights = tmp_path / "w.pt"
    torch.manual_seed(0)
    torch.save(ModelSpec("small_cnn", 10, 1).build().state_dict(), weights)
    out = tmp_path / "bench"
    argv = ("--preset", "digits-small", "--train-size", "30", "--methods", "none", "--epochs", "1", "--seeds", "0",
            "--batch-size", "16", "--weights", str(weights), "--out", str(out))
    assert command.run(_args(*argv)) == 0
    trained = []
    real = runner.train_model
    monkeypatch.setattr(runner, "train_model", lambda *a, **k: trained.append(1) or real(*a, **k))
    assert command.run(_args(*argv)) == 0 and trained == []  # the same file: kept
    torch.manual_seed(1)
    torch.save(ModelSpec("small_cnn", 10, 1).build().state_dict(), weights)
    assert command.run(_args(*argv)) == 0 and trained == [1]
    preset = presets.Preset(dataset="digits", train_size=30, model="small_cnn", epochs=1, weights=str(weights))
    data = SimpleNamespace()
    assert set(runner.input_contents(preset, data, data)) == {"weights_sha256"}


@pytest.mark.parametrize("argv, problem", [
    (("--search-trials", "0"), "--search-trials must be at least 1, got 0"),
    (("--search-splits", "0"), "--search-splits must be at least 1, got 0"),
    (("--search-epochs", "0"), "--search-epochs must be at least 1, got 0"),
    (("--device", "tpu"), "--device must be a torch device such as cpu, cuda or cuda:1, got 'tpu'"),
    (("--methods", "none", "--policy", "randaugment"), "--policy is the searched method's policy"),
    # regression (a trial): recorded in results.json as the settings of a search that never ran
    (("--methods", "searched", "--policy", "randaugment", "--search-trials", "3"),
     "--policy gives the searched method its policy, so no search runs and --search-trials would change nothing; "
     "drop it"),
    (("--methods", "none", "baseline", "--search-epochs", "2", "--search-top-n", "1"),
     "--methods holds neither searched nor searched-scratch, so no search runs and --search-top-n, --search-epochs "
     "would change nothing; drop them"),
    (("--batch-size", "1"), "--batch-size must be at least 2 (BatchNorm needs 2 images), got 1"),
    (("--image-size", "0"), "--image-size must be a number of pixels from 1 to 4096, got 0"),
    (("--image-size", "4"), "--image-size must be at least 8 for small_cnn, the smallest side it is built for, got 4"),
    (("--lr", "0"), "--lr must be a finite number > 0, got 0.0"),
    (("--lr", "nan"), "--lr must be a finite number > 0, got nan"),
    # the range of the search's --seed (a seed beyond torch's 64 bits failed inside a training, "Overflow")
    (("--seeds", "0", "4294967296", "-1"), "--seeds must be whole numbers from 0 to 4294967295, got 4294967296, -1"),
])
def test_bad_benchmark_options_are_refused_before_anything_runs(tmp_path, argv, problem):
    with pytest.raises(ValueError, match=problem.replace("(", "\\(").replace(")", "\\)")):
        command.run(_args("--preset", "digits-small", "--out", str(tmp_path / "b"), *argv))
    assert not (tmp_path / "b").exists()


def test_lr_sets_every_training_and_the_search():
    """Regression: a recipe searched for fine-tuning at a low lr could only be benchmarked at the preset's."""
    preset = command.preset_from_args(_args("--preset", "digits-100-finetune", "--lr", "0.01"))
    assert preset.lr == 0.01  # the final trainings' and the search's (runner: lr=preset.lr in both)
    assert command.training_options(_args("--lr", "0.01"))["--lr"] == 0.01  # --report refuses it: trains nothing


def test_a_rerun_with_a_bad_option_is_refused_before_the_earlier_runs_are_set_aside(tmp_path, monkeypatch):
    """Regression: --batch-size 1 was refused only when the first training started, after the finished runs
    had been set aside for the new setting, so the next correct command trained them all again; a missing
    --weights file left an empty output folder."""
    out = tmp_path / "bench"
    argv = ("--preset", "digits-small", "--train-size", "30", "--methods", "none", "--epochs", "1", "--seeds", "0",
            "--out", str(out))
    assert command.run(_args(*argv, "--batch-size", "16")) == 0
    files = {path.name: path.read_bytes() for path in out.iterdir()}
    with pytest.raises(ValueError, match=r"^--batch-size must be at least 2"):
        command.run(_args(*argv, "--batch-size", "1"))
    assert {path.name: path.read_bytes() for path in out.iterdir()} == files
    monkeypatch.setattr(runner, "train_model", lambda *a, **k: pytest.fail("the finished run is kept"))
    assert command.run(_args(*argv, "--batch-size", "16")) == 0
    with pytest.raises(ValueError, match=r"--weights .*missing.pt: no such file"):
        command.run(_args(*argv[:-1], str(tmp_path / "other"), "--weights", str(tmp_path / "missing.pt")))
    assert not (tmp_path / "other").exists()


def test_report_writes_the_results_files_again_without_training(tmp_path, monkeypatch):
    out = tmp_path / "bench"
    argv = ("--preset", "digits-small", "--train-size", "30", "--methods", "none", "--epochs", "1", "--seeds", "0",
            "--batch-size", "16", "--out", str(out))
    assert command.run(_args(*argv)) == 0
    document = json.loads((out / "results.json").read_text())
    (out / "results.md").write_text("stale\n")
    (out / "runs.csv").unlink()
    monkeypatch.setattr(runner, "train_model", lambda *a, **k: pytest.fail("--report trains nothing"))
    assert command.run(_args("--preset", "digits-small", "--out", str(out), "--report")) == 0
    assert json.loads((out / "results.json").read_text()) == document
    assert "| none |" in (out / "results.md").read_text() and (out / "runs.csv").exists()
    with pytest.raises(DataError, match=r"--report: --out .*empty: no such folder"):  # not "no results.json in"
        command.run(_args("--report", "--out", str(tmp_path / "empty")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="--report: there is no results.json in .*empty: not a benchmark's results"):
        command.run(_args("--report", "--out", str(tmp_path / "empty")))
    (tmp_path / "empty" / "results.json").write_text("[]")
    with pytest.raises(DataError, match="--report: .*results.json is not the results of a benchmark"):
        command.run(_args("--report", "--out", str(tmp_path / "empty")))


def test_report_refuses_what_it_would_ignore(tmp_path):
    """--report trains nothing: options that say what to train, or another preset than the folder's, would be
    ignored without a word (a user checking a folder with --preset digits-100 got digits-small's results)."""
    out = tmp_path / "bench"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"preset": "digits-small", "command": "c", "runs": []}))
    with pytest.raises(ValueError, match=r"^--report writes the files again from OUT/results.json and trains "
                                         r"nothing, so --epochs, --seeds, --policy would change nothing; drop them$"):
        command.run(_args("--report", "--out", str(out), "--epochs", "3", "--seeds", "7", "--policy", "x.json"))
    with pytest.raises(DataError, match=r"results.json holds the results of preset digits-small, not digits-100; "
                                        "drop --preset, or give that preset's folder"):
        command.run(_args("--report", "--out", str(out), "--preset", "digits-100"))
    # results written before the preset was recorded cannot be checked; without runs there is nothing to report
    # (regression: "results.md written again" was printed, with exit 0, and no results.md was there)
    (out / "results.json").write_text(json.dumps({"command": "c", "runs": []}))
    with pytest.raises(DataError, match=r"^--report: .*results.json holds no finished runs yet; run the benchmark "
                                        r"\(its command: c\)$"):
        command.run(_args("--report", "--out", str(out), "--preset", "digits-100"))
    assert not (out / "results.md").exists()
    # regression (a trial): a file given as --out was "no such folder"
    with pytest.raises(DataError, match=r"^--report: --out .*results.json: is a file, not a folder; give the folder "):
        command.run(_args("--report", "--out", str(out / "results.json")))


def test_the_searchs_errors_name_the_benchmark_options_that_set_them(tmp_path, monkeypatch):
    """Regression (a review): a --search-train-size larger than the data was called --train-size, an option
    the user had not given (and the preset's own size too)."""
    # The search imports Ray, which reads its auth mode once per process: as the other tests' local Rays have it
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with pytest.raises(DataError, match=r"^--search-train-size 5000 is larger than the 1078 images of digits/train; "
                                        r"give at most 1078$"):
        command.run(_args("--preset", "digits-small", "--methods", "searched", "--search-train-size", "5000",
                          "--out", str(tmp_path / "bench")))
    with pytest.raises(DataError, match=r"^--train-size 5000 is larger than the 1078 images of digits/train; "):
        command.run(_args("--preset", "digits-small", "--methods", "baseline", "--train-size", "5000",
                          "--out", str(tmp_path / "bench")))
    # a setting the benchmark has no option for is the search's own, not a flag it does not take
    from policysearch.benchmark.runner import _search_mention

    mention = _search_mention(presets.PRESETS["digits-small"])
    assert mention("da_ratio", 0.4) == "the search's da_ratio 0.4 (which the benchmark sets)"
    assert (mention("resume", "b/search-1"), mention("epochs"), mention("final_epochs", 9), mention("model")) == (
        "the search folder b/search-1", "--search-epochs", "--epochs 9", "--model")
    assert f"start a new run with another {mention('out')}" == "start a new run with another search folder"


def test_a_folder_a_rerun_cannot_set_aside_into_is_refused_before_any_work(tmp_path, monkeypatch):
    """A results.json a benchmark did not write was overwritten, and an ``earlier`` file failed the rerun only once
    its search and pretraining were done."""
    monkeypatch.setattr(runner, "load_dataset", lambda *a, **k: pytest.fail("refused before the data loads"))
    out = tmp_path / "bench"
    out.mkdir()
    for text in ("not json", '{"runs": [{"method": "none", "seed": null}]}', "[]"):
        (out / "results.json").write_text(text)
        with pytest.raises(DataError, match=r"results.json is not the results of a benchmark \(.*\); move it away, "
                                            "or give another --out"):
            command.run(_args("--out", str(out)))
        assert (out / "results.json").read_text() == text
    # Regression (review): another preset's folder was noticed after the whole benchmark, which set it all aside
    (out / "results.json").write_text(json.dumps({"preset": "digits-100", "runs": [{"method": "none", "seed": 0}]}))
    with pytest.raises(DataError, match=r"^--out .*bench holds the results of the preset digits-100, not digits-small: "
                                        "give this benchmark a folder of its own$"):
        command.run(_args("--preset", "digits-small", "--out", str(out)))
    (out / "results.json").unlink()
    (out / "earlier").write_text("")
    with pytest.raises(DataError, match=r"earlier is a file; a rerun sets earlier results aside in that folder"):
        command.run(_args("--out", str(out)))


def test_what_changed_names_only_real_changes():
    """The earlier document comes from JSON (lists), this one from the preset (tuples): a fake change led the line."""
    preset = presets.PRESETS["digits-100-finetune"]
    now = {"settings": dataclasses.asdict(preset), "software": {"torch": "2.1"}}
    earlier = json.loads(json.dumps({**now, "software": {"torch": "2.0"}}))
    assert runner.what_changed(earlier, now, {"none"}) == "other settings: software torch: was '2.0', now '2.1'"


def test_an_out_that_is_a_file_and_a_gpu_asked_for_are_named(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"^--out .*file is a file, not a folder$"):
        command.run(_args("--out", str(tmp_path / "file")))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DataError, match=r"^--device cuda wants a GPU but torch sees no CUDA device here"):
        command.run(_args("--device", "cuda", "--out", str(tmp_path / "b")))
    with pytest.raises(DataError, match=r"^preset reduced-cifar10-wrn40-2 wants a GPU"):
        command.run(_args("--preset", "reduced-cifar10-wrn40-2", "--out", str(tmp_path / "b")))
    with pytest.raises(DataError, match="unknown data set 'nosuch'"):
        command.run(_args("--dataset", "nosuch", "--out", str(tmp_path / "b")))
    assert not (tmp_path / "b").exists()  # a data set that does not load leaves no empty folder behind


def test_a_rerun_with_other_settings_leaves_no_report_of_the_runs_it_set_aside(tmp_path, monkeypatch, capsys):
    """Other settings keep none of the earlier runs: results.md and errors.png must not go on showing them
    beside a results.json without runs, and a Ctrl-C before the first training names no such file."""
    from policysearch import cli

    out = tmp_path / "bench"
    argv = ["benchmark", "--preset", "digits-small", "--train-size", "30", "--methods", "none", "--seeds", "0",
            "--batch-size", "16", "--out", str(out)]
    assert cli.main([*argv, "--epochs", "1"]) == 0 and (out / "results.md").exists()
    capsys.readouterr()

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "train_model", stopped)
    assert cli.main([*argv, "--epochs", "41"]) == 130  # 1 epoch trains 40 on 30 images (the step floor), 41 more
    assert json.loads((out / "results.json").read_text())["runs"] == []
    assert not (out / "results.md").exists() and not (out / "errors.png").exists()
    err = capsys.readouterr().err
    assert "the benchmark's one training has not finished yet" in err and "results.md" not in err
    assert "; continue with the same command: " in err  # nothing kept: no "which keeps them"


def test_another_data_set_is_taken_whole_and_a_bare_folder_as_search_takes_it(tmp_path, monkeypatch):
    """Regression: ``--dataset FOLDER`` was "unknown data set" (search takes it), and another data set kept the
    preset's subset size (digits-small's --train-size 150, larger than the folder) and pretraining; the report
    was titled with the preset alone."""
    folder = tmp_path / "mine"
    (folder / "train" / "a").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    for preset_name in ("digits-small", "reduced-cifar10-wrn40-2"):
        preset = preset_from_args(_args("--preset", preset_name, "--dataset", "mine"))
        assert preset.dataset == "imagefolder:mine"
        assert (preset.train_size, preset.search_train_size, preset.pretrain) == (None, None, None)
    with pytest.raises(ValueError, match="searched-scratch method compares with a search from weights; give --weights"):
        preset_from_args(_args("--preset", "digits-100-finetune", "--dataset", "mine"))  # its pretraining is dropped
    asked = preset_from_args(_args("--dataset", "mine", "--train-size", "40", "--search-train-size", "20"))
    assert (asked.train_size, asked.search_train_size) == (40, 20)
    same = preset_from_args(_args("--preset", "digits-small", "--dataset", "digits"))
    assert same.train_size == presets.PRESETS["digits-small"].train_size  # the preset's own data: its sizes
    # a preset's folder (here one under tmp_path: a fresh clone need not have the shared data) written relative
    photos = dataclasses.replace(presets.PRESETS["cifar10-dev-1000"], dataset=f"imagefolder:{tmp_path / 'photos'}")
    monkeypatch.setitem(presets.PRESETS, "cifar10-dev-1000", photos)
    (tmp_path / "photos").mkdir()
    for written in ("photos", "photos/", "imagefolder:photos", "./photos"):
        assert preset_from_args(_args("--preset", "cifar10-dev-1000", "--dataset", written)).train_size == 1000
    document = {"preset": "digits-small", "command": "c", "summary": [], "software": {}, "other_data": True,
                "settings": {"dataset": "imagefolder:mine", "train_images": 82, "image_size": 32, "data_seed": 0,
                             "test_images": 20, "model": "small_cnn", "epochs": 3, "batch_size": 32, "lr": 0.1,
                             "weight_decay": 5e-4, "seeds": [0], "baseline": {"pad_crop": 4, "hflip": False},
                             "cutout_pixels": 16, "cutout_with_policies": False}}
    text = report.render_markdown(document, [])
    assert text.startswith("# Benchmark: digits-small settings on imagefolder:mine\n")
    assert "baseline augmentation: pad-and-crop 4 px, no flip (methods" in text
    assert "82 training images (32 x 32, the whole training split)" in text  # no subset: no subset seed
    # the flag, not the folder's path, says so: results re-rendered in another checkout keep the preset's title
    assert report.render_markdown({**document, "other_data": False}, []).startswith("# Benchmark: digits-small\n")
    one = {"recipe": "baseline, crop 0, flip", "sub_policies": 1, "baseline": {"pad_crop": 0, "hflip": True},
           "source": "s1/policy.json"}
    assert "- searched recipe: baseline, crop 0, flip (1 sub-policy, " in report.render_markdown(
        {**document, "searched_policy": one}, [])


def test_the_data_notes_printed_are_kept_in_results_md_and_json(tmp_path, capsys):
    """Regression (a trial): the benchmark printed its data: lines (a test split without a class, images
    resized or converted) but kept none of them in the files that get shared, where the search keeps them."""
    from _images import natural_pil

    for split, classes in (("train", "abc"), ("test", "ab")):
        for cls in classes:
            (tmp_path / "mine" / split / cls).mkdir(parents=True)
            for k in range(4 if split == "train" else 2):
                natural_pil(20 if k else 26, 20, seed=k).save(tmp_path / "mine" / split / cls / f"{k}.png")
    out = tmp_path / "bench"
    assert command.run(_args("--dataset", str(tmp_path / "mine"), "--methods", "none", "--epochs", "1", "--seeds",
                             "0", "--batch-size", "4", "--out", str(out))) == 0
    printed = [line.removeprefix("data: ") for line in capsys.readouterr().out.splitlines() if line.startswith("data: ")]
    assert any("no images of 1 of the 3 classes (c)" in note for note in printed), printed
    assert json.loads((out / "results.json").read_text())["data_notes"] == printed
    text = (out / "results.md").read_text()
    assert all(f"\n  - {note}\n" in text for note in printed)
    # without the searched method nothing is compared with it (a trial: a column of "-" and a sentence about it)
    assert "| method | mean test error % | std | n | training accuracy % | train s/run |" in text
    assert "searched" not in text.split("## What each method ran")[0]


def test_the_report_names_the_seeds_of_runs_kept_from_earlier_commands():
    """Regression: after a rerun with fewer seeds the report said "seeds 0" above rows of two seeds each."""
    document = {"preset": "digits-small", "command": "c", "summary": [], "software": {},
                "settings": {"dataset": "digits", "train_images": 30, "image_size": 16, "data_seed": 0,
                             "test_images": 20, "model": "small_cnn", "epochs": 3, "batch_size": 16, "lr": 0.1,
                             "weight_decay": 5e-4, "seeds": [0], "baseline": {"pad_crop": 2, "hflip": False},
                             "cutout_pixels": 8, "cutout_with_policies": False, "train_size": 30},
                "runs": [{"method": "none", "seed": 0}, {"method": "none", "seed": 2}, {"method": "none", "seed": 1}]}
    assert ", seeds 0 (and 1 2 in runs kept from earlier commands)\n" in report.render_markdown(document, [])
    document["runs"] = document["runs"][:1]
    assert ", seeds 0\n" in report.render_markdown(document, [])


def test_the_report_of_an_unfinished_benchmark_says_which_trainings_are_missing():
    """Regression (a trial): after a Ctrl-C results.md said "seeds 0 1 2" above a row of one seed, not a word
    about the trainings the command had not finished."""
    document = {"preset": "digits-small", "command": "c", "summary": [], "software": {},
                "settings": {"dataset": "digits", "train_images": 30, "image_size": 16, "data_seed": 0,
                             "test_images": 20, "model": "small_cnn", "epochs": 3, "batch_size": 16, "lr": 0.1,
                             "weight_decay": 5e-4, "seeds": [0, 1, 2], "baseline": {"pad_crop": 2, "hflip": False},
                             "cutout_pixels": 8, "cutout_with_policies": False, "train_size": 30,
                             "methods": ["none", "baseline", "timm-rand-m9-mstd0.5-inc1"]},
                "skipped": {"timm-rand-m9-mstd0.5-inc1": "timm is not installed"},
                "runs": [{"method": "none", "seed": s} for s in (0, 1, 2)] + [{"method": "baseline", "seed": 0}]}
    assert report.missing_runs(document) == {"baseline": [1, 2]}
    assert ("\n**Not finished**: 2 of the command's 6 trainings have no result yet (baseline seeds 1 2); the command "
            "was stopped or is still running, and running it again trains only these.\n") in report.render_markdown(
        document, [])
    document["runs"] += [{"method": "baseline", "seed": 1}, {"method": "baseline", "seed": 2}]
    assert report.missing_runs(document) == {} and "Not finished" not in report.render_markdown(document, [])


def test_a_seed_given_twice_trains_once():
    assert preset_from_args(_args("--seeds", "0", "1", "0")).seeds == (0, 1)


def test_the_report_gives_the_budget_the_models_trained_at():
    """On tiny data the step floor raises the epochs and lowers the batch: the report, the picture's title
    and the preset list say what ran, and what was asked."""
    text = presets.budget_text(30, 32, 100)
    assert text.startswith("50 epochs at batch 25 (asked: 30 at batch 32;")
    assert presets.budget_text(30, 32, 100, asked=False) == "50 epochs at batch 25"
    assert presets.budget_text(60, 50, 1000) == "60 epochs at batch 50"
    assert presets.budget_text(200, 128, None) == "200 epochs at batch 128"


def test_kept_runs_follow_the_policy_each_method_trains(tmp_path):
    runs = [{"method": m, "seed": 0, "test_error": 1.0} for m in ("baseline", "searched", "searched-scratch")]
    methods = ["baseline", "searched", "searched-scratch"]
    old = {"settings": {"epochs": 2, "seeds": [0], "methods": methods}, "software": {"torch": "x"}, "runs": runs,
           "searched_policy": {"recipe": "r", "sha256": "a"}, "search_scratch": {"policy_file": "s/policy.json"}}
    (tmp_path / "results.json").write_text(json.dumps(old))
    # a results file from before the scratch search's hash: the same scratch file still counts as the same policy
    now = {**old, "settings": {"epochs": 2, "seeds": [0, 1], "methods": methods}, "runs": [],
           "search_scratch": {"policy_file": "s/policy.json", "sha256": "b"}}
    assert sorted(m for m, _ in runner.finished_runs(tmp_path, now)) == ["baseline", "searched", "searched-scratch"]
    # a new searched policy retrains only the searched method; a new scratch search only its own
    assert sorted(m for m, _ in runner.finished_runs(tmp_path, {**now, "searched_policy": {"recipe": "r", "sha256": "c"}})
                  ) == ["baseline", "searched-scratch"]
    old["search_scratch"]["sha256"] = "b"
    (tmp_path / "results.json").write_text(json.dumps(old))
    assert sorted(m for m, _ in runner.finished_runs(
        tmp_path, {**now, "search_scratch": {"policy_file": "s/policy.json", "sha256": "d"}})) == ["baseline", "searched"]
    # other settings: nothing is kept
    assert runner.finished_runs(tmp_path, {**now, "settings": {"epochs": 3, "methods": methods}}) == {}
    # a method this command does not train keeps its runs, whichever policy made them
    assert sorted(m for m, _ in runner.finished_runs(tmp_path, {
        **now, "settings": {**now["settings"], "methods": ["baseline"]}, "searched_policy": None})) == methods
    # the search's own settings: aside where the policy's content tells the searched runs apart; in a file from
    # before the hash (recipe name and size only) other search settings may have found another policy
    other_search = {**now, "settings": {**now["settings"], "search_trials": 9}}
    assert sorted(m for m, _ in runner.finished_runs(tmp_path, other_search)) == methods
    old["searched_policy"] = {"recipe": "r"}
    (tmp_path / "results.json").write_text(json.dumps(old))
    assert runner.finished_runs(tmp_path, {**other_search, "searched_policy": {"recipe": "r"}}) == {}


def test_timm_runs_record_its_version_and_another_version_trains_only_them(tmp_path, monkeypatch):
    """Regression (review): the software record lacks timm, so a rerun after a timm upgrade kept the timm anchor's
    runs as made the same way, and results.md named no timm version; nor did it say that the anchor gives timm's
    posterize to 0 bits Pillow 12's black image."""
    timm = "timm-rand-m9-mstd0.5-inc1"
    monkeypatch.setattr(anchors.Anchor, "version", lambda self: {"timm": "1.0.31"}.get(self.library, "0.29.1"))
    assert runner.anchor_library(timm) == "timm 1.0.31"
    assert runner.anchor_library("tv-randaugment") is None and runner.anchor_library("baseline") is None
    methods = ["baseline", "tv-randaugment", timm, f"{timm}-alone"]
    runs = [{"method": m, "seed": 0, "test_error": 1.0, **({"library": "timm 1.0.31"} if "timm" in m else {})}
            for m in methods]
    old = {"settings": {"epochs": 2, "seeds": [0], "methods": methods}, "software": {"torch": "x"}, "runs": runs}
    (tmp_path / "results.json").write_text(json.dumps(old))
    assert sorted(m for m, _ in runner.finished_runs(tmp_path, old)) == sorted(methods)
    monkeypatch.setattr(anchors.Anchor, "version", lambda self: {"timm": "1.1.0"}.get(self.library, "0.29.1"))
    assert sorted(m for m, _ in runner.finished_runs(tmp_path, old)) == ["baseline", "tv-randaugment"]
    # a rerun of other methods keeps the timm runs as they are (regression, review: it dropped them untrained)
    others = {**old, "settings": {**old["settings"], "methods": ["baseline"]}}
    assert sorted(m for m, _ in runner.finished_runs(tmp_path, others)) == sorted(methods)
    assert "anchor's library" not in runner.what_changed(old, others, {"baseline"})  # nor named as why others went
    assert runner.what_changed(old, old, {timm, f"{timm}-alone"}) == (
        f"another version of an anchor's library: {timm} (timm 1.0.31, now timm 1.1.0), {timm}-alone (timm 1.0.31, "
        "now timm 1.1.0)")
    # both reasons where both apply (regression, review: the timm version alone was named)
    searched = {**old, "runs": [*runs, {"method": "searched", "seed": 0, "test_error": 1.0}]}
    assert runner.what_changed(searched, searched, {timm, "searched"}) == (
        f"another version of an anchor's library: {timm} (timm 1.0.31, now timm 1.1.0); another policy for the "
        "searched methods")
    for run in runs:
        run.pop("library", None)  # a file from before the version was recorded
    assert "version not recorded" in runner.what_changed(old, old, {timm})
    # regression (review): without timm (an optional extra) the timm runs of a results file crashed a rerun
    monkeypatch.setattr(anchors.Anchor, "version", lambda self: None if self.library == "timm" else "0.29.1")
    assert runner.anchor_library(timm) is None
    assert runner.what_changed(old, old, {"searched"}) == "another policy for the searched methods"
    assert sorted(m for m, _ in runner.finished_runs(tmp_path, old)) == sorted(methods)  # kept as they are
    assert "(its posterize to 0 bits (magnitude 10) gives a black image, as under Pillow 12" in methods_module_text(timm)
    document = json.loads((Path(__file__).parents[1] / "benchmarks/results/digits-small/results.json").read_text())
    document["runs"] = [{**r, "library": "timm 1.1.0"} if "timm" in r["method"] else r for r in document["runs"]]
    software = ", ".join(f"{k} {v}" for k, v in document["software"].items())
    assert report.render_markdown(document, document["summary"]).endswith(f"Software: {software}, timm 1.1.0\n")


def methods_module_text(method: str) -> str:
    from policysearch.augment.policy import Baseline

    return methods.describe_method(method, Baseline(2, False), 8, False)


def test_a_search_run_before_the_benchmark_reports_its_phases_not_the_reload(tmp_path, monkeypatch):
    import policysearch.search as search_api

    finished = SimpleNamespace(costs={"phase1_wall_s": 30.0, "phase2_wall_s": 20.0, "phase3_wall_s": 50.0},
                               policy=randaugment_policy(), policy_path=randaugment_policy().save(tmp_path / "policy.json"))
    monkeypatch.setattr(search_api, "run_search", lambda *a, **k: finished)  # returns at once: finished before
    _, costs = runner._search(presets.PRESETS["digits-small"], tmp_path, None, io.StringIO(), {}, "for a policy")
    assert costs["search_wall_s"] == 100.0 and costs["search_ran_before"]
    policy_file = tmp_path / "p.json"
    randaugment_policy().save(policy_file)
    assert command.run(_args("--preset", "digits-small", "--train-size", "30", "--epochs", "1", "--seeds", "0",
                             "--methods", "baseline", "searched", "--policy", str(policy_file), "--out",
                             str(tmp_path / "bench"), "--batch-size", "16")) == 0
    document = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert document["other_data"] is False  # the preset's own data: titled with the preset alone
    document["search"] = {**costs, "total_device_s": 90.0, "phase1_device_s": 1.0, "phase2_device_s": 1.0}
    text = report.render_markdown(document, document["summary"])
    assert "| search (its phases, summed over every process that ran them) | 100.0 |" in text


def test_a_fresh_search_and_its_reuse_give_the_policy_the_same_hash(tmp_path, monkeypatch):
    """Regression: a fresh search's own policy object lacks what saving adds (creation time, software), so a
    rerun, which reads the finished search's file, saw another hash and retrained the searched method once; the
    rerun also said it was searching."""
    import policysearch.search as search_api

    def fake_search(config, run_dir, resume, stream, stop_text=None):
        policy = randaugment_policy()
        if not resume:  # a fresh search: the run folder, then the file written last; its own object returned
            run_dir.mkdir(parents=True)
            (run_dir / "config.json").write_text("{}")
            policy_path = policy.save(run_dir / "policy.json")
        else:  # a finished search read back
            policy_path = run_dir / "policy.json"
            policy = Policy.load(policy_path)
        return SimpleNamespace(costs={}, policy=policy, policy_path=policy_path)

    monkeypatch.setattr(search_api, "run_search", fake_search)
    said = [io.StringIO(), io.StringIO()]
    hashes = [runner._search(presets.PRESETS["digits-small"], tmp_path, None, stream, {}, "for a policy")[1]["sha256"]
              for stream in said]
    assert hashes[0] == hashes[1]
    # the hash leaves out what saving adds, so the results committed from a fresh search's object still match
    saved = randaugment_policy().save(tmp_path / "p.json")
    assert runner.policy_sha256(randaugment_policy()) == runner.policy_sha256(Policy.load(saved))
    assert said[0].getvalue().startswith("benchmark: searching for a policy (")
    assert said[1].getvalue().startswith("benchmark: reusing the finished search for a policy (")


def test_the_search_line_counts_the_images_the_search_uses(tmp_path, monkeypatch):
    """Regression: a preset that searches on fewer images than it trains on (``search_train_size``, as
    ``reduced-cifar10-wrn40-2``) said the search ran on the final training's count."""
    said = []

    class Stop(Exception):
        pass

    def fake_search(preset, out, args, stream, contents, what, from_scratch=False, stop_text=None):
        said.append(what)
        raise Stop

    monkeypatch.setattr(runner, "_search", fake_search)
    preset = dataclasses.replace(presets.PRESETS["digits-small"], search_train_size=60, methods=("searched",))
    with pytest.raises(Stop):
        runner.run_benchmark(preset, tmp_path, stream=io.StringIO())
    assert said == ["for a policy on 60 training images"]


def test_the_default_output_folder_never_holds_the_committed_results(tmp_path, monkeypatch):
    outs = []

    def fake_benchmark(preset, out, **kwargs):  # where the benchmark would write, without training
        outs.append(Path(out))
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "results.md").write_text("results\n", encoding="utf-8")
        return {"runs": [{}]}

    monkeypatch.setattr(command, "run_benchmark", fake_benchmark)
    monkeypatch.chdir(tmp_path)  # as if run from the repository root
    assert command.run(_args("--preset", "digits-small", "--policy", "randaugment:n=1,m=5")) == 0
    assert outs[-1] == Path("runs") / "benchmark" / "digits-small"
    assert not (tmp_path / "benchmarks").exists()
    # named with --out, the committed folder is written
    assert command.run(_args("--preset", "digits-small", "--policy", "randaugment:n=1,m=5",
                               "--out", "benchmarks/results/digits-small")) == 0
    assert outs[-1] == Path("benchmarks/results/digits-small")


def test_presets_are_listed_one_line_each(capsys):
    for argv in (["--list"], ["--preset", "list"]):
        assert command.run(_args(*argv)) == 0
        lines = capsys.readouterr().out.splitlines()
        assert [line.split()[0] for line in lines] == sorted(presets.PRESETS)
        for line in lines:
            preset = presets.PRESETS[line.split()[0]]
            budget = presets.budget_text(preset.epochs, preset.batch_size, preset.train_size)
            assert budget in line and "seeds " + " ".join(map(str, preset.seeds)) in line
    assert "50 epochs at batch 25 (asked: 30 at batch 32" in presets.preset_lines()[
        sorted(presets.PRESETS).index("digits-100-finetune")]


def test_every_benchmark_option_has_help_that_states_the_real_defaults():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    helps = {action.dest: action.help or "" for action in parser._actions}
    assert all(helps[dest] for dest in helps if dest != "help"), [d for d, h in helps.items() if not h]
    assert "0 1 2 3 4 (" in helps["seeds"] and "default: 0 1 2)" not in helps["seeds"]
    assert "preset's" in helps["epochs"] and "preset's" in helps["batch_size"]
    # regression: nine options with a default gave none; every option that takes a value names it now
    valued = [a for a in parser._actions if a.dest != "help" and a.nargs != 0 and a.option_strings]
    assert not [a.dest for a in valued if "default" not in (a.help or "")], "an option's default is not stated"


@pytest.mark.slow
def test_benchmark_runs_anchors_reports_training_accuracy_and_skips_a_missing_library(tmp_path, monkeypatch):
    from policysearch.benchmark import anchors

    real = anchors.importlib.util.find_spec
    monkeypatch.setattr(anchors.importlib.util, "find_spec", lambda name: None if name == "timm" else real(name))
    out = tmp_path / "bench"
    methods = ["none", "tv-trivialaugmentwide", "tv-augmix-alone", "timm-rand-m9-mstd0.5-inc1",
               "ours-trivialaugment-narrow"]
    args = _args("--preset", "digits-small", "--train-size", "30", "--epochs", "1", "--seeds", "0", "--methods",
                 *methods, "--out", str(out), "--batch-size", "16")
    assert command.run(args) == 0
    document = json.loads((out / "results.json").read_text())
    why = "timm is not installed (pip install 'policysearch[timm]')"
    assert document["skipped"] == {"timm-rand-m9-mstd0.5-inc1": why}
    assert [r["method"] for r in document["runs"]] == [m for m in methods if not m.startswith("timm")]
    assert all(0.0 <= r["clean_train_accuracy"] <= 1.0 for r in document["runs"])
    assert all(row["clean_train_accuracy"] == r["clean_train_accuracy"]
               for row, r in zip(document["summary"], document["runs"]))
    text = (out / "results.md").read_text()
    assert "Skipped: `timm-rand-m9-mstd0.5-inc1`: timm is not installed" in text
    assert "| tv-augmix-alone | `torchvision.transforms.v2.AugMix()` per PIL image |" in text
    assert ("| tv-trivialaugmentwide | baseline (pad-and-crop 1 px, no flip), then "
            "`torchvision.transforms.v2.TrivialAugmentWide()` per PIL image |") in text
    assert "| timm-rand-m9-mstd0.5-inc1 | baseline" in text and "(skipped) |" in text
    assert "training accuracy %" in text
    header = (out / "runs.csv").read_text().splitlines()[1]
    assert "clean_train_accuracy" in header.split(",")


def test_ctrl_c_says_what_the_benchmark_kept_and_the_same_command_goes_on(tmp_path, monkeypatch, capsys):
    """Ctrl-C during the second training: exit 130 and one line (the finished runs kept, the command to go
    on), no traceback; the same command then trains only the rest. Stopped in the search, the line carries
    what the search kept, and not the search's own resume command."""
    from policysearch import cli
    from policysearch.search.interrupts import SearchInterrupted

    out = tmp_path / "bench"
    argv = ["benchmark", "--preset", "digits-small", "--train-size", "30", "--methods", "none", "baseline",
            "--epochs", "1", "--seeds", "0", "--batch-size", "16", "--out", str(out)]
    real, calls = runner.train_model, []

    def stopped_on_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "train_model", stopped_on_the_second)
    monkeypatch.setattr(sys, "argv", ["/env/lib/policysearch/__main__.py", *argv])  # python -m policysearch
    assert cli.main(argv) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err == (f"policysearch: benchmark interrupted; 1 of 2 trainings finished in {out} (results.json, results.md, runs.csv); "
                   "continue with the same command, which keeps them: python -m policysearch " + " ".join(argv))
    assert json.loads((out / "results.json").read_text())["command"] == "python -m policysearch " + " ".join(argv)
    monkeypatch.setattr(sys, "argv", ["scripts/benchmark.py", *argv[1:]])
    assert command.command_line() == "scripts/benchmark.py " + " ".join(argv[1:])
    monkeypatch.setattr(sys, "argv", ["/venv/bin/policysearch", *argv])  # the installed command
    calls.clear()
    assert cli.main(argv) == 0 and len(calls) == 1  # only the interrupted training
    assert [r["method"] for r in json.loads((out / "results.json").read_text())["runs"]] == ["none", "baseline"]

    def in_the_search(preset, out, **kwargs):
        raise SearchInterrupted(f"search interrupted in phase 2; kept in {out}/search-x: phase 1's 2 child models; "
                                f"continue with: policysearch search --resume {out}/search-x")

    monkeypatch.setattr(command, "run_benchmark", in_the_search)
    fresh = tmp_path / "fresh"
    monkeypatch.setattr(sys, "argv", ["/venv/bin/policysearch", *argv[:-1], str(fresh)])
    assert cli.main([*argv[:-1], str(fresh)]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"policysearch: benchmark interrupted; search interrupted in phase 2; kept in {fresh}/"
                          "search-x: phase 1's 2 child models; none of the benchmark's 2 trainings finished yet;")
    assert "search --resume" not in err and err.endswith(f"--out {fresh}")


def test_a_search_stopped_at_once_inside_a_benchmark_says_the_benchmarks_line(tmp_path, monkeypatch):
    """Regression: SIGTERM (timeout, a scheduler) or a second Ctrl-C while the benchmark searched printed the
    search's line, "continue with: policysearch search --resume ...", which finishes the search alone."""
    from policysearch.search import interrupts

    given = {}

    def capture(*args, stop_text, **kwargs):
        given["stop_text"] = stop_text
        raise KeyboardInterrupt  # the first Ctrl-C, which the benchmark words itself

    monkeypatch.setattr(command, "run_benchmark", capture)
    out = tmp_path / "b"
    argv = ("--preset", "digits-small", "--methods", "none", "searched", "--seeds", "0", "--out", str(out))
    assert command.run(_args(*argv)) == 130
    said: list[bytes] = []
    monkeypatch.setattr(interrupts, "_say", said.append)
    monkeypatch.setattr(interrupts.os, "_exit", lambda status: (_ for _ in ()).throw(SystemExit(status)))
    search_line = (f"search interrupted in phase 2 (policy trials) (stopped at once by SIGTERM: kept as last saved); "
                   f"kept in {out}/search-x: 5 child models; continue with: policysearch search --resume {out}/search-x")
    ctrl_c = interrupts.CtrlC(lambda at_once: search_line, given["stop_text"])
    with pytest.raises(SystemExit):
        ctrl_c.stop_now("SIGTERM")
    line = said[0].decode().strip()
    assert line.startswith("policysearch: benchmark interrupted; search interrupted in phase 2 (policy trials) "
                           "(stopped at once by SIGTERM: kept as last saved); kept in ")
    assert "none of the benchmark's 2 trainings finished yet; continue with the same command, which keeps them: " in line
    assert "policysearch search --resume" not in line


def test_results_name_every_command_that_trained_a_kept_run(tmp_path, monkeypatch):
    """Regression: a rerun that covered every kept run recorded no history, so a later results.md named the
    rerun (which trained nothing) and left out the command that trained the runs."""
    out = tmp_path / "bench"
    common = ("--preset", "digits-small", "--train-size", "30", "--methods", "none", "--epochs", "1", "--out", str(out))
    steps = [("A", ("--seeds", "0")), ("B", ("--seeds", "0", "1")), ("C", ("--seeds", "0", "1")), ("D", ("--seeds", "0"))]
    for name, seeds in steps:
        monkeypatch.setattr(command, "command_line", lambda name=name: f"policysearch benchmark {name}")
        assert command.run(_args(*common, *seeds)) == 0
    document = json.loads((out / "results.json").read_text())
    assert [(r["seed"], r["command"]) for r in document["runs"]] == [(0, "policysearch benchmark A"),
                                                                    (1, "policysearch benchmark B")]
    assert document["earlier_commands"] == ["policysearch benchmark A", "policysearch benchmark B"]  # not C
    assert ("Runs kept from earlier commands (trained the same way): `policysearch benchmark A`, `policysearch "
            "benchmark B`") in (out / "results.md").read_text()


def test_a_preset_whose_image_folder_is_missing_says_where_it_reads_before_training(tmp_path, monkeypatch):
    """Regression: on a fresh clone, the cifar10-dev presets (their photographs lie beside the checkout, not in
    it) said only "imagefolder path ... is not a folder", without saying the folder is not part of the
    repository or how to run the preset on other images."""
    for name, suffix in (("cifar10-dev-1000", ""), ("cifar10-dev-2class-200", "?classes=automobile,truck")):
        moved = dataclasses.replace(presets.PRESETS[name], dataset=f"imagefolder:{tmp_path / 'gone'}{suffix}")
        monkeypatch.setitem(presets.PRESETS, name, moved)
        args = _args("--preset", name, "--out", str(tmp_path / "out"))
        with pytest.raises(ValueError) as error:
            command.run(args)
        text = str(error.value)
        assert f"preset {name} reads its images from {tmp_path / 'gone'}, which is missing" in text
        assert "not part of the repository" in text and f"--train-size {moved.train_size}" in text
        assert ("imagefolder:DIR?classes=automobile,truck" in text) == bool(suffix)
        assert ("--dataset cifar10 --download" in text) == (not suffix)
        assert not (tmp_path / "out").exists()  # refused before anything was written
        # the same folder spelled another way keeps the preset's settings, and this message (a review's find)
        again = _args("--preset", name, "--dataset", f"imagefolder:{tmp_path / 'gone'}/{suffix}", "--out",
                      str(tmp_path / "out"))
        with pytest.raises(ValueError, match=f"preset {name} reads its images from"):
            command.run(again)
    (tmp_path / "gone").mkdir()
    assert presets.missing_data_text("cifar10-dev-1000", presets.PRESETS["cifar10-dev-1000"]) is None
    other = preset_from_args(_args("--preset", "cifar10-dev-1000", "--dataset", "digits"))
    assert presets.missing_data_text("cifar10-dev-1000", other) is None  # --dataset replaced the folder
