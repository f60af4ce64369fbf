"""scripts/regret.py: regrets and worst regrets from the presets' results.json, old method names included."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from _scripts import load_file

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "regret.py"


@pytest.fixture(scope="module")
def regret():
    return load_file(SCRIPT, "regret_script")


def _runs(errors: dict[str, list[float]]) -> list[dict]:
    return [{"method": m, "seed": s, "test_error": e} for m, es in errors.items() for s, e in enumerate(es)]


def _write(root: Path, folder: str, document: dict) -> None:
    (root / folder).mkdir(parents=True)
    (root / folder / "results.json").write_text(json.dumps(document))


def test_regret_numbers_on_synthetic_results(regret, tmp_path: Path) -> None:
    results = tmp_path / "results"
    # preset a: none 10, 12 (mean 11); searched 9, 9 (9, the best); tv-randaugment 10, 11 (10.5)
    _write(results, "a", {"preset": "a", "command": "bench a", "searched_policy": {"recipe": "baseline, crop 1"},
                          "runs": _runs({"none": [10, 12], "searched": [9, 9], "tv-randaugment": [10, 11]})})
    # preset b, an old file: no "preset" key, the old name trivialaugment, no tv-randaugment
    _write(results, "b", {"command": "bench b",
                          "runs": _runs({"none": [5, 5], "searched": [6, 7], "trivialaugment": [4, 4]})})
    # preset c: only a summary (no runs), as a hand-made or truncated file
    _write(results, "c", {"summary": [{"method": "none", "mean": 20.0, "n": 3},
                                      {"method": "searched", "mean": 20.5, "n": 3}]})
    (results / "history" / "old").mkdir(parents=True)  # a level deeper: never read
    (results / "history" / "old" / "results.json").write_text(json.dumps({"runs": _runs({"none": [0.0]})}))
    out = tmp_path / "out"
    assert regret.main(["--results", str(results), "--out", str(out)]) == 0
    table = json.loads((out / "regret.json").read_text())
    assert table["command"] == f"scripts/regret.py --results {results} --out {out}"
    assert set(table["presets"]) == {"a", "b", "c"}
    assert table["presets"]["a"]["best_method"] == "searched" and table["presets"]["a"]["best_mean"] == 9.0
    assert table["presets"]["b"]["best_method"] == "ours-trivialaugment-narrow"  # the old name, read as today's
    methods = table["methods"]
    assert methods["none"]["regret"] == {"a": 2.0, "b": 1.0, "c": 0.0}
    assert methods["searched"]["regret"] == {"a": 0.0, "b": 2.5, "c": 0.5}
    assert methods["searched"]["worst_regret"] == 2.5 and methods["searched"]["worst_preset"] == "b"
    assert methods["none"]["worst_regret"] == 2.0 and methods["none"]["presets_ran"] == 3
    # a method missing on some presets: its worst regret is over the presets where it ran
    assert methods["tv-randaugment"] == {"regret": {"a": 1.5}, "worst_regret": 1.5, "worst_preset": "a",
                                         "presets_ran": 1, "presets_missing": ["b", "c"]}
    assert table["order"] == ["none", "searched", "ours-trivialaugment-narrow", "tv-randaugment"]
    text = (out / "regret.md").read_text()
    assert f"Command: `scripts/regret.py --results {results} --out {out}`" in text
    assert "| none | 2.00 | 3/3 | 2.00 | 1.00 | **0.00** |" in text
    assert "| searched | 2.50 | 3/3 | **0.00** | 2.50 | 0.50 |" in text
    assert "| tv-randaugment | 1.50 | 1/3 | 1.50 | - | - |" in text
    assert "| lowest mean test error % | | | searched 9.00 | ours-trivialaugment-narrow 4.00 | none 20.00 |" in text
    assert "| the searched recipe | | | baseline, crop 1 | - | - |" in text  # which recipe "searched" ran
    assert "old names read as today's: trivialaugment -> ours-trivialaugment-narrow" in text
    # each regret with its paired 95 % interval against the preset's best (t with 1 degree of freedom:
    # 12.706 x sd / sqrt(2)); a summary-only file has no seeds to pair
    none_a = table["presets"]["a"]["methods"]["none"]["interval"]
    assert none_a["mean"] == 2.0 and none_a["n"] == 2
    assert none_a["low"] == pytest.approx(2.0 - 12.7062, abs=1e-3) and none_a["high"] == pytest.approx(14.7062, abs=1e-3)
    assert "interval" not in table["presets"]["a"]["methods"]["searched"]  # the best itself
    assert "interval" not in table["presets"]["c"]["methods"]["searched"]
    assert "| none | 2.00 [-10.71, 14.71] | 1.00 [1.00, 1.00] | **best** |" in text
    assert "| searched | **best** | 2.50 [-3.85, 8.85] | 0.50 (no seed paired: the regret, no interval) |" in text
    assert "tested equal to torchvision's output" not in text  # no preset's searched recipe is a fixed method's
    assert "| tv-randaugment | 1.50 [-4.85, 7.85] | - | - |" in text


def test_a_searched_recipe_that_a_fixed_method_runs_is_named_only_where_it_is(regret, tmp_path: Path) -> None:
    """Regression (a trial): regret.md said of every input that the searched recipe was RandAugment() alone."""
    results = tmp_path / "results"
    ran = {"none": [10, 12], "searched": [9, 9], "tv-randaugment-alone": [9, 10],
           "tv-trivialaugmentwide-alone": [11, 10]}
    for preset, recipe in [("a", "randaugment (torchvision), crop 0"), ("b", "randaugment (torchvision), crop 0"),
                           ("c", "trivialaugmentwide (torchvision), crop 0"),
                           ("d", "randaugment (torchvision), crop 4, flip"),
                           ("e", "randaugment (torchvision), crop 0")]:  # e: RandAugment() alone did not run there
        runs = {k: v for k, v in ran.items() if preset != "e" or k in ("none", "searched")}
        _write(results, preset, {"preset": preset, "searched_policy": {"recipe": recipe}, "runs": _runs(runs)})
    assert regret.main(["--results", str(results), "--out", str(tmp_path / "out")]) == 0
    said = [line for line in (tmp_path / "out" / "regret.md").read_text().splitlines() if "tested equal" in line]
    assert said == [
        "On `a`, `b` the searched recipe `randaugment (torchvision), crop 0` is what `tv-randaugment-alone` runs, in "
        "the policy format and tested equal to torchvision's output: the two rows differ only by the trainings' "
        "random draws, the seeds' noise the intervals below show.",
        "On `c` the searched recipe `trivialaugmentwide (torchvision), crop 0` is what `tv-trivialaugmentwide-alone` "
        "runs, in the policy format and tested equal to torchvision's output: the two rows differ only by the "
        "trainings' random draws, the seeds' noise the intervals below show."]


@pytest.mark.parametrize("damage, message", [
    ("{not json", "Expecting property name"),
    (json.dumps({"runs": _runs({"none": [1.0]}) + [7]}), r"runs\[1\] is not a run with a method name"),
    (json.dumps({"runs": _runs({"none": [1.0, float("nan")]})}), r"runs\[1\] \(none\) test_error is nan, not a test"),
    (json.dumps({"runs": _runs({"none": [1.0]}) + [{"method": "none", "seed": 0, "test_error": 99}]}),
     r"runs\[1\] is a second run of none with seed 0"),
    (json.dumps({"runs": [{"method": "none", "seed": 0, "test_error": "9"}]}), r"runs\[0\] \(none\) test_error is '9', not a test"),
    (json.dumps({"summary": [{"method": "none", "mean": None}]}), r"summary\[0\] \(none\) mean is None"),
])
def test_a_damaged_preset_stops_the_script_before_it_writes(regret, tmp_path: Path, capsys, damage, message) -> None:
    """Regression (review): a results.json that could not be read was left out with exit 0, and the table, its
    presets column and every worst regret then covered the other presets only, over the committed regret.md;
    a run that was no object gave a traceback, a NaN test error a NaN regret under a worst regret without it,
    and a second run of one seed entered regret.md's mean while results.md keeps one per seed."""
    results = tmp_path / "results"
    _write(results, "a", {"runs": _runs({"none": [10, 12], "searched": [9, 9]})})
    (results / "b").mkdir()
    (results / "b" / "results.json").write_text(damage)
    (results / "regret.md").write_text("before")
    assert regret.main(["--results", str(results)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert re.match(re.escape(f"regret: {results / 'b' / 'results.json'}: ") + message, err[0]), err
    assert err[1].startswith("regret: nothing written") and len(err) == 2
    assert (results / "regret.md").read_text() == "before" and not (results / "regret.json").exists()


def test_a_preset_named_that_has_no_results_is_an_error(regret, tmp_path: Path, capsys) -> None:
    """Regression (review): --presets with a misspelt folder wrote a table of the others, exit 0."""
    _write(tmp_path / "results", "a", {"runs": _runs({"none": [10, 12], "searched": [9, 9]})})
    assert regret.main(["--results", str(tmp_path / "results"), "--presets", "a", "bb"]) == 1
    assert f"regret: {tmp_path / 'results' / 'bb' / 'results.json'}: No such file or directory" in capsys.readouterr().err
    assert not (tmp_path / "results" / "regret.md").exists()


def test_nothing_to_read_is_an_error(regret, tmp_path: Path, capsys) -> None:
    assert regret.main(["--results", str(tmp_path)]) == 1
    assert regret.main(["--results", str(tmp_path / "missing")]) == 1
    assert capsys.readouterr().err.endswith(f"regret: --results {tmp_path / 'missing'}: no such folder\n")


def test_methods_tied_at_the_lowest_mean_are_all_best(regret, tmp_path: Path) -> None:
    """Regression: of methods sharing the lowest mean only the alphabetically first was bold and "best"."""
    _write(tmp_path / "results", "a", {"runs": _runs({"none": [1, 3], "cutout": [2, 2], "searched": [4, 4]})})
    assert regret.main(["--results", str(tmp_path / "results")]) == 0
    text = (tmp_path / "results" / "regret.md").read_text()
    assert "| cutout | 0.00 | 1/1 | **0.00** |" in text and "| none | 0.00 | 1/1 | **0.00** |" in text
    assert "| cutout | **best** |" in text and "| none | **best** |" in text
    assert "| lowest mean test error % | | | cutout, none 2.00 |" in text


def test_an_out_that_is_a_file_is_one_line(regret, tmp_path: Path, capsys) -> None:
    _write(tmp_path / "results", "a", {"runs": _runs({"none": [10, 12], "searched": [9, 9]})})
    (tmp_path / "afile").write_text("")
    assert regret.main(["--results", str(tmp_path / "results"), "--out", str(tmp_path / "afile")]) == 1
    assert f"regret: --out {tmp_path / 'afile'}: cannot make that folder" in capsys.readouterr().err
    assert not (tmp_path / "regret.md").exists()


def test_the_presets_own_results_read(regret) -> None:
    """Every results.json in the repository reads, whatever method names it was written with."""
    root = SCRIPT.parents[1] / "benchmarks" / "results"
    files = sorted(root.glob("*/results.json"))
    if not files:
        pytest.skip("no benchmark results in this checkout")
    for path in files:
        methods, info = regret.read_preset(path)
        assert methods and all(v["n"] >= 1 for v in methods.values()), path
        assert not set(methods) & {"randaugment", "trivialaugment", "autoaugment"}, path


def test_intervals_pair_only_the_seeds_both_ran(regret, tmp_path: Path) -> None:
    """A method with a seed the best lacks is paired over the shared seeds, and the cell says how many; a
    method with a run without a seed (an old file) is not paired at all (its mean keeps every run)."""
    results = tmp_path / "results"
    runs = [{"method": "searched", "seed": s, "test_error": 1.0} for s in (0, 1)]
    runs += [{"method": "none", "seed": s, "test_error": e} for s, e in ((0, 2.0), (1, 3.0), (2, 10.0))]
    runs += [{"method": "baseline", "seed": 0, "test_error": 5.0}, {"method": "baseline", "test_error": 6.0}]
    runs += [{"method": "cutout", "test_error": e} for e in (7.0, 8.0)]
    _write(results, "d", {"preset": "d", "runs": runs})
    assert regret.main(["--results", str(results)]) == 0
    table = json.loads((results / "regret.json").read_text())
    rows = table["presets"]["d"]["methods"]
    assert rows["none"]["regret"] == 4.0 and rows["none"]["interval"]["mean"] == 1.5 and rows["none"]["interval"]["n"] == 2
    assert rows["baseline"]["mean"] == 5.5 and rows["baseline"]["n"] == 2 and "interval" not in rows["baseline"]
    assert rows["cutout"]["mean"] == 7.5 and "interval" not in rows["cutout"]
    text = (results / "regret.md").read_text()
    assert "| none | 1.50 [-4.85, 7.85] (2 seeds paired) |" in text
    assert "| baseline | 4.50 (no seed paired: the regret, no interval) |" in text
    assert "| cutout | 6.50 (no seed paired: the regret, no interval) |" in text
    assert "| seeds per method | | | 2 to 3 |" in text  # how many seeds, not which


def test_one_shared_seed_gives_the_paired_difference_and_two_folders_of_one_preset_stop(regret, tmp_path: Path,
                                                                                       capsys) -> None:
    """Regression (a trial): with one seed shared the cell showed the unpaired regret under "paired"; and two
    folders of one preset's results counted as two presets."""
    results = tmp_path / "results"
    runs = [{"method": "baseline", "seed": s, "test_error": e} for s, e in ((0, 4.03), (1, 3.0))]
    runs += [{"method": "none", "seed": 0, "test_error": 4.45}]
    _write(results, "c1", {"preset": "digits-small", "runs": runs})
    assert regret.main(["--results", str(results)]) == 0
    text = (results / "regret.md").read_text()
    assert "| none | 0.42 (1 seed paired: no interval) |" in text  # 4.45 - 4.03 on seed 0, not 4.45 - 3.515
    _write(results, "d1", {"preset": "digits-small", "runs": runs})
    before = (results / "regret.md").read_text()
    assert regret.main(["--results", str(results)]) == 1
    assert ("regret: c1, d1: results of one preset, digits-small, on the same data, which would count as 2 presets"
            in capsys.readouterr().err)
    assert (results / "regret.md").read_text() == before
    # the preset's settings on other data (--dataset) are another benchmark (a review's find)
    (results / "d1" / "results.json").write_text(json.dumps({"preset": "digits-small", "runs": runs,
                                                             "settings": {"dataset": "imagefolder:mine"}}))
    assert regret.main(["--results", str(results)]) == 0
