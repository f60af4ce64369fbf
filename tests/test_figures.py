"""The report's pictures: drawn from a run directory's files, embedded in report.md, redrawn by
``policysearch report``; and the export draws them before report.md, with policy.json still last. No Ray."""

from __future__ import annotations

import csv
import json
import re
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from PIL import Image

from policysearch.search.candidates import candidate_recipes, reference_name
from policysearch.cli import main
from policysearch.search.domain import DomainFit
from policysearch.augment.policy import Baseline, Operation, Policy
from policysearch.search import SearchConfig, prepare
from policysearch.search.export import export, write_trials_csv
from policysearch.search.faults import Fault, Faults
from policysearch.search.figures import BEGIN, END, error_limits, op_usage, plot_recipes, recipe_data
from policysearch.search.outcome import Candidate, Outcome
from policysearch.search.rundir import Run, write_config
from policysearch.search.selection import decide

PICTURES = ("trials.png", "recipes.png", "ops.png", "grid.png")
CONFIG = SearchConfig(dataset="digits", train_size=60, splits=2, trials=4, top_n=2, selection_folds=3,
                      selection_repeats=1, epochs=1)
CHOSEN = "fast_autoaugment x1, crop 1"


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _synthetic_run(run_dir: Path, config: SearchConfig = CONFIG) -> Path:
    """A finished run's files as the search writes them, with a failed trial and a failed recipe."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"run_id": "test", "search": asdict(config)}), encoding="utf-8")
    trials = [{"split": s, "repeat": 0, "index": i, "trial_id": f"{s}{i}", "status": "ok", "error": "",
               "reward": 0.8 + 0.03 * i + 0.01 * s} for s in range(2) for i in range(4)]
    trials[5].update(status="failed", error="RuntimeError: CUDA out of memory", reward="")
    _write_csv(run_dir / "trials.csv", trials)
    errors = {"baseline, crop 1": [6.0, 5.0, 7.0], "trivialaugment, crop 1": [5.0, 4.0, 5.0], CHOSEN: [2.0, 1.0, 2.0]}
    rows = [{"recipe": name, "fold": f, "status": "ok", "error": "", "held_out_error": e}
            for name, errs in errors.items() for f, e in enumerate(errs)]
    rows += [{"recipe": "randaugment n=2 m=9, crop 1", "fold": f, "status": "failed", "error": "boom",
              "held_out_error": ""} for f in range(3)]
    _write_csv(run_dir / "selection.csv", rows)
    decision = decide(errors, "trivialaugment, crop 1", test_fraction=1 / 3)
    assert decision.chosen == CHOSEN
    policy = Policy([[Operation("Rotate", 0.7, 0.4), Operation("Cutout", 0.3, 0.5)],
                     [Operation("Equalize", 0.5, 0.0), Operation("Rotate", 0.9, 0.8)]],
                    {"recipe": {"name": CHOSEN}, "score": {"child_da_accuracy_without_policy": 0.95,
                                                           "selection": decision.to_dict()}},
                    name=f"policysearch-digits: {CHOSEN}", baseline=Baseline(1, False))
    policy.save(run_dir / "policy.json")
    (run_dir / "report.md").write_text("# Search report: digits\n\n- result: kept\n\n## Candidate recipes\n\ntable\n",
                                       encoding="utf-8")
    return run_dir


@pytest.fixture(scope="module")
def drawn(tmp_path_factory) -> Path:
    """A synthetic run after ``policysearch report`` (drawn once; tests copy it before changing it)."""
    run_dir = _synthetic_run(tmp_path_factory.mktemp("figures") / "run")
    assert main(["report", str(run_dir)]) == 0
    return run_dir


def _is_png(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        return img.size


def test_every_picture_is_a_png_of_a_readable_size(drawn):
    for name in PICTURES:
        width, height = _is_png(drawn / name)
        assert 300 <= width <= 3000 and 200 <= height <= 3000, (name, width, height)
    assert not list(drawn.glob(".*.tmp"))  # atomic writes leave no temporary file


def test_report_links_each_picture_once_and_keeps_the_rest(drawn):
    report = (drawn / "report.md").read_text(encoding="utf-8")
    for name in PICTURES:
        assert report.count(f"]({name})") == 1, name
    assert report.startswith("# Search report: digits\n\n- result: kept\n")
    # The pictures follow the summary, before the first section; the section itself is kept.
    assert report.index(BEGIN) < report.index("## Candidate recipes") and "table" in report


def test_report_again_replaces_its_section_instead_of_adding_one(drawn, tmp_path, capsys):
    run_dir = shutil.copytree(drawn, tmp_path / "run")
    before = (run_dir / "report.md").read_text(encoding="utf-8")
    assert main(["report", str(run_dir)]) == 0
    after = (run_dir / "report.md").read_text(encoding="utf-8")
    assert after == before and after.count(BEGIN) == 1 and after.count(END) == 1
    assert "wrote" in capsys.readouterr().out


def test_report_on_an_unfinished_run_says_so_in_one_line(drawn, tmp_path, capsys):
    run_dir = shutil.copytree(drawn, tmp_path / "run")
    (run_dir / "policy.json").unlink()
    assert main(["report", str(run_dir)]) == 1  # an invalid input, as show and convert report a bad file
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not finished" in err and str(run_dir) in err


@pytest.mark.parametrize("damage", ["{\n", "recipe,fold\n", "", "recipe,fold,status,held_out_error\n\"a\",0\n"])
def test_report_on_a_damaged_selection_csv_says_so_and_keeps_its_pictures(drawn, tmp_path, capsys, damage):
    """Regression: a damaged selection.csv drew an empty recipes.png over the good one, and said it wrote it."""
    run_dir = shutil.copytree(drawn, tmp_path / "run")
    (run_dir / "selection.csv").write_text(damage, encoding="utf-8")
    pictures = {name: (run_dir / name).read_bytes() for name in ("trials.png", "recipes.png")}
    assert main(["report", str(run_dir)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{run_dir / 'selection.csv'}: not as a search writes it" in err
    assert all((run_dir / name).read_bytes() == data for name, data in pictures.items())


@pytest.mark.parametrize("file, keep, message", [
    ("selection.csv", 4, r"no held-out error of the reference 'trivialaugment, crop 1'"),
    ("selection.csv", 7, r"the held-out errors of 'fast_autoaugment x1, crop 1' are not those of policy.json's "
                         r"decision \(a mean of 1.67% over 3 folds\)"),
    ("selection.csv", 0, r"the held-out errors of 'fast_autoaugment x1, crop 1' are not those"),
    ("trials.csv", 6, r"not as the search wrote it \(split 1 of repeat 0 has 1 of the 4 policies each split"),
    ("trials.csv", 5, r"not as the search wrote it \(split 1 of repeat 0 has 0 of the 4"),
])
def test_report_on_a_csv_cut_at_the_end_of_a_row_says_so(drawn, tmp_path, capsys, file, keep, message):
    """Regression (review): a selection.csv cut after a row drew every recipe that lost a fold as failed, the
    chosen one too, beside a report.md that had them trained on every fold; a cut trials.csv captioned fewer
    candidate policies than the search proposed."""
    run_dir = shutil.copytree(drawn, tmp_path / "run")
    path = run_dir / file
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    if not keep:  # a fold of the chosen recipe changed rather than cut
        lines[8], keep = lines[8].replace(",1.0", ",3.0"), len(lines)
    path.write_text("".join(lines[:keep]), encoding="utf-8")
    pictures = {name: (run_dir / name).read_bytes() for name in ("trials.png", "recipes.png")}
    assert main(["report", str(run_dir)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(re.escape(str(path)) + ": " + message, err), err
    assert all((run_dir / name).read_bytes() == data for name, data in pictures.items())


def test_report_on_a_folder_that_is_no_run_says_so(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 1
    assert "no config.json" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 1
    assert "no such run directory" in capsys.readouterr().err
    (tmp_path / "policy.json").write_text("{}")
    assert main(["report", str(tmp_path / "policy.json")]) == 1
    assert "policy.json: a file, not a run directory" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["config", "policy", "report"])
def test_report_names_a_bad_file_of_the_run_before_drawing(drawn, tmp_path, capsys, monkeypatch, damage):
    """Regression: a config.json of another shape leaked Python's "list indices must be integers"; a report.md
    that is not UTF-8 failed after every picture was redrawn, without its name; both exited 2 where show and
    convert give a bad input file 1, as did a policy.json of a later format."""
    from policysearch.search import figures

    run_dir = shutil.copytree(drawn, tmp_path / "run")
    file, content, message = {
        "config": ("config.json", b"[]", r"config.json: not a config policysearch wrote \(not a JSON object with the "
                                         r"'search' settings and a 'run_id'\)$"),
        "policy": ("policy.json", b'{"format_version": 99, "sub_policies": []}', r"policy.json: .*format_version.*99"),
        "report": ("report.md", b"\xff\xfe bad", r"report.md: not UTF-8 text \(invalid start byte at byte 0\)"),
    }[damage]
    (run_dir / file).write_bytes(content)
    monkeypatch.setattr(figures, "draw_figures", lambda *a, **k: pytest.fail("drew before naming the bad file"))
    assert main(["report", str(run_dir)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err


def test_a_data_set_not_found_here_skips_the_grid_with_a_note(tmp_path, capsys):
    config = SearchConfig(dataset="cifar10", data_root=str(tmp_path / "nowhere"), splits=2, trials=4, top_n=2)
    run_dir = _synthetic_run(tmp_path / "run", config)
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "note: grid.png not drawn" in out and "--data-root" in out
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "](grid.png)" not in report and "grid.png not drawn" in report
    assert all((run_dir / name).is_file() for name in PICTURES[:3]) and not (run_dir / "grid.png").exists()


def test_a_run_on_python_data_keeps_its_grid_with_a_note_that_fits(drawn, tmp_path, capsys):
    """Regression: the note advised --data-root and searching again, neither of which redraws such a grid."""
    run_dir = shutil.copytree(drawn, tmp_path / "run")
    document = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    document["search"]["dataset"] = "python:Shapes#0123456789ab"
    (run_dir / "config.json").write_text(json.dumps(document), encoding="utf-8")
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert ("note: grid.png not redrawn (the link shows the earlier one): the search's images were Python objects, "
            "which a later `policysearch report` cannot read again") in out
    assert "--data-root" not in out and "policysearch.search() again" not in out
    assert (run_dir / "report.md").read_text(encoding="utf-8").count("](grid.png)") == 1


def test_op_usage_counts_expected_applications_per_image():
    policy = Policy([[Operation("Rotate", 0.5, 0.2), Operation("Rotate", 1.0, 0.8)],
                     [Operation("Cutout", 0.4, 1.0), Operation("Identity", 1.0, 0.0)]])
    usage = {u["op"]: u for u in op_usage(policy)}
    assert usage["Rotate"]["expected"] == pytest.approx(0.75)  # (0.5 + 1.0) / 2 sub-policies
    assert usage["Rotate"]["share"] == pytest.approx(0.5)  # one sub-policy of two, counted once
    assert usage["Rotate"]["mean_level"] == pytest.approx((0.5 * 0.2 + 1.0 * 0.8) / 1.5)
    assert (usage["Rotate"]["min_level"], usage["Rotate"]["max_level"]) == (0.2, 0.8)
    assert usage["Cutout"]["expected"] == pytest.approx(0.2) and usage["Identity"]["expected"] == 0.5
    assert [u["op"] for u in op_usage(policy)][0] == "Rotate"  # most applied first


def test_the_export_draws_the_pictures_before_report_md_and_writes_policy_json_last(tmp_path):
    prepared = prepare(CONFIG)
    note = "digits: 60 of 60 images resized to 8x8 (as --image-size asks) from 16x16"
    prepared = replace(prepared, data=replace(prepared.data, notes=(note,)))  # what loading changed, kept
    run = Run(tmp_path / "run", "test-run", str(tmp_path / "tune"))
    run.run_dir.mkdir()
    write_config(run, CONFIG)
    fit = DomainFit({}, note="synthetic: nothing probed")
    merged = Policy([[Operation("Rotate", 0.6, 0.5), Operation("Cutout", 0.4, 0.3)]])
    recipes = candidate_recipes(prepared.baseline, fit, merged, strengths=(1.0,), randaugment_grid=((1, 5),))
    errors = {r.name: [4.0 - 0.5 * k, 3.0, 5.0] for k, r in enumerate(recipes)}
    selection = [{"recipe": name, "fold": f, "status": "ok", "error": e, "loss": 0.1, "train_seconds": 1.0,
                  "train_images": 40} for name, errs in errors.items() for f, e in enumerate(errs)]
    decision = decide(errors, reference_name(prepared.baseline), test_fraction=1 / 3)
    trials = [{"split": s, "repeat": 0, "index": i, "trial_id": f"{s}{i}", "status": "ok", "error": "",
               "reward": 0.5 + 0.1 * i} for s in range(2) for i in range(4)]
    write_trials_csv(run, trials, [])
    costs = {f"phase{p}_{k}_s": 1.0 for p in ("1", "1b", "2", "3") for k in ("wall", "device")}
    outcome = Outcome(children=[{"split": s, "status": "ok", "da_accuracy": 0.9, "train_seconds": 1.0} for s in range(2)],
                      probes=[], fit=fit, trials=trials, top=[Candidate(0, 0, 0.8, merged)], merged=merged,
                      recipes=recipes, selection=selection, decision=decision,
                      chosen=next(r for r in recipes if r.name == decision.chosen), note="", costs=costs)

    stop = Faults((Fault("raise", "export", (("after", "report.md"),)),))
    with pytest.raises(RuntimeError):
        export(prepared, run, outcome, stop)
    report = (run.run_dir / "report.md").read_text(encoding="utf-8")
    for name in PICTURES:
        _is_png(run.run_dir / name)
        assert f"]({name})" in report
    assert not (run.run_dir / "policy.json").exists()  # still last

    result = export(prepared, run, outcome)
    assert result.policy_path.is_file()
    assert result.policy.metadata["data_notes"] == [note]
    # the side the search trained at, in whose pixels the baseline's pad_crop is (a trial: only in the notes)
    assert result.policy.metadata["image_size"] == prepared.data.images.shape[-1] == 16
    assert f"- data: {note}" in (run.run_dir / "report.md").read_text(encoding="utf-8")
    assert main(["report", str(run.run_dir)]) == 0  # a run the export wrote redraws from its files
    assert (run.run_dir / "report.md").read_text(encoding="utf-8").count(BEGIN) == 1


def test_a_recipe_without_ops_gets_a_picture_that_says_so():
    from policysearch.search.figures import plot_ops

    png = plot_ops(Policy([[Operation("Identity", 1.0, 0.0)]], baseline=Baseline(2, True)), "baseline, crop 2, flip")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_search_summary_says_where_the_pictures_are(drawn):
    from policysearch.search.outcome import SearchResult
    from policysearch.search.report import summary_text

    costs = {f"phase{p}_wall_s": 1.0 for p in ("1", "1b", "2", "3")}
    result = SearchResult(drawn, "test", drawn / "policy.json", Policy.load(drawn / "policy.json"), costs)
    line = next(line for line in summary_text(result).splitlines() if line.startswith("report: "))
    assert line.endswith("with pictures trials.png, recipes.png, ops.png, grid.png beside it")


def test_a_raced_selection_draws_the_stopped_recipes_below_the_others():
    from policysearch.search.selection import compare

    errors = {"baseline, crop 1": [6.0, 5.0, 7.0], "trivialaugment, crop 1": [5.0, 4.0, 5.0]}
    decision = decide(errors, "trivialaugment, crop 1", test_fraction=1 / 3)
    one_fold = compare([5.0], [1.0], test_fraction=1 / 3, names=(decision.chosen, "randaugment n=1 m=5, crop 1"))
    selection = json.loads(json.dumps({**decision.to_dict(), "stopped": {"randaugment n=1 m=5, crop 1": 1.0},
                                       "comparisons": [*decision.to_dict()["comparisons"], one_fold.to_dict()]}))
    rows = [{"recipe": n, "fold": str(f), "status": "ok", "held_out_error": str(e)}
            for n, errs in [*errors.items(), ("randaugment n=1 m=5, crop 1", [1.0])] for f, e in enumerate(errs)]
    rows.append({"recipe": "failed one", "fold": "0", "status": "failed", "held_out_error": ""})
    # recipe_data's parts: ranked by mean, stopped by folds then mean (its one fold's 1.0 is lower than every
    # mean, but not comparable with them: drawn in a panel of its own), failed
    data = recipe_data(rows, selection, confidence=0.8, test_fraction=1 / 3)
    assert [r["recipe"] for part in ("ranked", "stopped", "failed") for r in data[part]] == [
        "trivialaugment, crop 1", "baseline, crop 1", "randaugment n=1 m=5, crop 1", "failed one"]
    assert plot_recipes(rows, selection, 0.8, 1 / 3)[:4] == b"\x89PNG"  # null bounds of the one-fold comparison drawn


# ----------------------------------------------------------------------------------------------------
# The report's words, tables and pictures agree
# ----------------------------------------------------------------------------------------------------


def _exported_run(tmp_path: Path, config: SearchConfig, *, weak: bool = False,
                  more_errors: dict[str, list[float]] | None = None, failed: tuple[str, ...] = (),
                  before_the_floor: bool = False, failed_error: str | None = None):
    """A search's export of a raced selection: the issue's case, where the chosen recipe clears the noise by
    the rule's one-sided bound while a two-sided interval at the same level crosses 0, and a recipe stopped
    after the first fold has a lower error there than the chosen recipe's mean."""
    from policysearch.search.recipes import choose_recipe

    prepared = prepare(config)
    run = Run(tmp_path / "run", "test-run", str(tmp_path / "tune"))
    run.run_dir.mkdir(parents=True)
    write_config(run, config)
    fit = DomainFit({}, chance=0.1, note="synthetic: nothing probed")
    merged = Policy([[Operation("Rotate", 0.6, 0.5), Operation("Cutout", 0.4, 0.3)]])
    recipes = candidate_recipes(prepared.baseline, fit, merged, strengths=(1.0,), randaugment_grid=((1, 5),))
    names = [r.name for r in recipes]
    reference = reference_name(prepared.baseline)
    errors = {name: [30.0, 31.0, 29.0] for name in names}
    errors[reference] = [20.0, 20.0, 20.0]
    errors[CHOSEN] = [2.4, 10.0, 17.6]  # 10 pp below the reference: one-sided bound < 0 < two-sided high
    stopped = "randaugment n=1 m=5 (torchvision scale), crop 0"
    errors[stopped] = [1.0]  # one fold, lower than every mean
    errors.update(more_errors or {})
    selection = [{"recipe": name, "fold": f, "status": "failed" if name in failed and f == 1 else "ok",
                  "error": failed_error if failed_error and name in failed and f == 1 else e, "loss": 0.1,
                  "train_seconds": 1.0, "train_images": 40}
                 for name, errs in errors.items() for f, e in enumerate(errs)]
    decision, note = choose_recipe(prepared, recipes, selection, prepared.baseline)
    if before_the_floor:  # as a decision written before the variance floor holds it
        decision = replace(decision, held_out=0)
    trials = [{"split": s, "repeat": 0, "index": i, "trial_id": f"{s}{i}", "status": "ok", "error": "",
               "reward": 0.5 + 0.1 * i} for s in range(config.splits) for i in range(4)]
    write_trials_csv(run, trials, [])
    costs = {f"phase{p}_{k}_s": 1.0 for p in ("1", "1b", "2", "3") for k in ("wall", "device")}
    accuracy = 0.15 if weak else 0.9
    outcome = Outcome(children=[{"split": s, "status": "ok", "da_accuracy": accuracy, "train_seconds": 1.0}
                                for s in range(config.splits)],
                      probes=[], fit=fit, trials=trials, top=[Candidate(0, 0, 0.8, merged)], merged=merged,
                      recipes=recipes, selection=selection, decision=decision,
                      chosen=next(r for r in recipes if r.name == decision.chosen), note=note, costs=costs)
    return export(prepared, run, outcome), stopped


def _table_row(report: str, recipe: str) -> list[str]:
    rows = [line for line in report.splitlines() if line.startswith(f"| {recipe} ")]
    assert len(rows) == 1, (recipe, rows)
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


def test_the_summary_the_table_and_recipes_png_show_the_quantity_the_rule_decides_on(tmp_path):
    from policysearch.search.report import summary_text
    from policysearch.search.selection import compare

    result, _ = _exported_run(tmp_path, CONFIG)
    run_dir, decision = result.run_dir, result.decision
    assert decision.chosen == CHOSEN
    reference = decision.reference
    rule = next(c for c in decision.versus_reference if c.candidate == CHOSEN)
    two_sided = compare([2.4, 10.0, 17.6], [20.0] * 3, test_fraction=1 / 3, confidence=0.8)
    assert rule.upper < 0 < two_sided.high  # the case where a two-sided picture contradicted the words

    why = next(line for line in summary_text(result).splitlines() if line.startswith("why: "))
    assert f"one-sided upper bound on ({CHOSEN} - {reference}), {rule.upper:+.2f} pp, is below 0" in why
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    assert why[len("why: "):] in report  # the report's summary says the same
    assert "80% one-sided upper bound (pp)" in report and "two-sided" not in report
    recipe, mean, diff, upper, verdict = _table_row(report, f"{CHOSEN} (chosen)")
    assert (diff, upper, verdict) == (f"{rule.mean:+.2f}", f"{rule.upper:+.2f}", "yes")

    with (run_dir / "selection.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    selection = Policy.load(run_dir / "policy.json").metadata["score"]["selection"]
    drawn = recipe_data(rows, selection, confidence=0.8, test_fraction=1 / 3)
    for row in drawn["ranked"]:  # every row of the picture is the table's row
        marks = [word for word, on in (("chosen", row["chosen"]), ("the reference", row["reference"])) if on]
        cells = _table_row(report, row["recipe"] + (f" ({'; '.join(marks)})" if marks else ""))
        assert cells[1] == f"{row['mean']:.2f}"
        if not row["reference"]:
            assert (cells[2], cells[3]) == (f"{row['diff']:+.2f}", f"{row['upper']:+.2f}")
            assert cells[4].startswith("yes" if row["clears"] else "no")
    chosen = next(row for row in drawn["ranked"] if row["chosen"])
    assert chosen["clears"] is True and chosen["upper"] == pytest.approx(rule.upper)


@pytest.mark.parametrize("before_the_floor", [False, True])
def test_the_report_and_the_caption_name_the_variance_floor_only_where_the_decision_had_it(tmp_path,
                                                                                           before_the_floor):
    """Regression: the reports of decisions written before the variance floor (committed runs, redrawn with
    `policysearch report`) said their bounds had it."""
    from policysearch.search.figures import draw_figures

    result, _ = _exported_run(tmp_path, CONFIG, before_the_floor=before_the_floor)
    floor = "with a variance at least what testing on each fold's held-out images alone gives"
    report = (result.run_dir / "report.md").read_text(encoding="utf-8")
    figures, _ = draw_figures(result.run_dir)
    caption = next(f.caption for f in figures if f.file == "recipes.png")
    if before_the_floor:
        assert floor not in report and "corrected for overlapping training sets;" in report
        assert floor not in caption and "upper bound (corrected for overlapping training sets)" in caption
    else:
        assert report.count(floor) == 2 and floor in caption  # the table's words and the picture's caption


def test_the_picture_holds_the_rules_variance_floor():
    """Two folds of 100 images, each one image better: the rule's floor keeps it within the noise, and the
    picture, redrawn from selection.csv and the decision, must say the same."""

    errors = {"ref": [10.0, 12.0], "one image better": [9.0, 11.0]}
    decision = decide(errors, "ref", test_fraction=0.5, held_out=100)
    rows = [{"recipe": name, "fold": str(f), "status": "ok", "held_out_error": str(e)}
            for name, errs in errors.items() for f, e in enumerate(errs)]
    drawn = recipe_data(rows, decision.to_dict(), confidence=0.8, test_fraction=0.5)
    row = next(r for r in drawn["ranked"] if r["recipe"] == "one image better")
    assert row["clears"] is False and row["upper"] == pytest.approx(decision.versus_reference[0].upper)


def test_recipes_stopped_by_the_race_are_shown_apart_from_the_means(tmp_path):

    result, stopped = _exported_run(tmp_path, CONFIG)
    report = (result.run_dir / "report.md").read_text(encoding="utf-8")
    main_table, rest = report.split("### Stopped after the first fold", 1)
    assert f"| {stopped} " not in main_table.split("## Candidate recipes", 1)[1]
    assert "not a mean" in rest.split("\n\n", 2)[1]
    assert "This one did not go on: its value is that one fold's error, not a mean" in rest  # not "These 1"
    first_fold, diff = _table_row(rest, stopped)[1:]
    assert (first_fold, diff) == ("1.00", "-19.00")  # that fold's error, against the reference's on that fold
    with (result.run_dir / "selection.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    drawn = recipe_data(rows, Policy.load(result.policy_path).metadata["score"]["selection"], confidence=0.8,
                        test_fraction=1 / 3)
    assert [row["recipe"] for row in drawn["stopped"]] == [stopped]
    assert stopped not in {row["recipe"] for row in drawn["ranked"]}


def test_a_weak_child_is_named_next_to_the_decision_in_the_terminal_summary(tmp_path):
    from policysearch.search.report import summary_text

    result, _ = _exported_run(tmp_path, CONFIG, weak=True)
    lines = summary_text(result).splitlines()
    why = next(k for k, line in enumerate(lines) if line.startswith("why: "))
    assert lines[why + 1].startswith("warning: the child model(s) of split(s) 0, 1 are within 0.2 of chance")
    assert "the decision rests on weak evidence" in lines[why + 1]
    assert Policy.load(result.policy_path).metadata["warnings"] == [lines[why + 1][len("warning: "):]]
    strong, _ = _exported_run(tmp_path / "strong", CONFIG)
    assert not any(line.startswith("warning: ") for line in summary_text(strong).splitlines())
    assert "--freeze-backbone" not in lines[why + 1]


def test_a_stand_in_reference_is_named_in_every_output(tmp_path):
    """Regression: where the reference recipe failed on a fold and another stood in, only report.md said so;
    the terminal summary, policy.json's reason and recipes.png's title gave the reason without it."""
    from policysearch.search.report import summary_text

    reference = "randaugment (torchvision), crop 0"
    result, _ = _exported_run(tmp_path, CONFIG, failed=(reference,))
    note = "the reference recipe failed on some fold, so baseline, crop 1 is the reference"
    why = next(line for line in summary_text(result).splitlines() if line.startswith("why: "))
    report = (result.run_dir / "report.md").read_text(encoding="utf-8")
    reason = Policy.load(result.policy_path).metadata["recipe"]["reason"]
    assert note in why and reason.count(note) == 1 and report.count(note) == 1


def test_a_trial_stopped_without_a_result_is_not_said_to_have_a_traceback(tmp_path):
    """A review's find: the failed trials' heading promised every one a retried run and an error.txt, which a
    trial a Ctrl-C stopped without a result has not."""
    from policysearch.search.checks import NO_RESULT

    result, _ = _exported_run(tmp_path, CONFIG, failed=("baseline, crop 1",), failed_error=NO_RESULT)
    report = (result.run_dir / "report.md").read_text(encoding="utf-8")
    assert f'Except those that say "{NO_RESULT}": a Ctrl-C stopped them, so they were not retried and have no ' \
           "error.txt." in report
    assert f"phase 3: recipe baseline, crop 1 on fold 1: {NO_RESULT}" in report


def test_weak_children_with_a_frozen_backbone_name_the_weights(tmp_path):
    """Regression: children at chance over a frozen backbone were told to train longer or get more images,
    where the frozen weights are the likelier cause."""
    import dataclasses

    import torch

    from policysearch.search.report import summary_text
    from policysearch.training.models import build_model

    torch.save(build_model("small_cnn", 10, 1).state_dict(), tmp_path / "w.pt")
    config = dataclasses.replace(CONFIG, weights=str(tmp_path / "w.pt"), freeze_backbone=True)
    result, _ = _exported_run(tmp_path, config, weak=True)
    warning = next(line for line in summary_text(result).splitlines() if line.startswith("warning: "))
    assert warning.endswith("; with a frozen backbone, its weights may not suit this data: try without "
                            "--freeze-backbone (freeze_backbone= in Python)")
    assert f"**warning:** {warning[len('warning: '):]}" in (result.run_dir / "report.md").read_text(encoding="utf-8")


def test_a_recipe_beyond_the_noise_that_the_rule_does_not_test_says_why_it_was_not_chosen(tmp_path):
    """Regression: a row said "yes" (beyond the noise) and was drawn green while the reference was kept: the rule
    tests only the recipe with the lowest mean, here one whose bound does not clear the noise."""
    lowest = "fast_autoaugment x1, crop 0"
    result, _ = _exported_run(tmp_path, CONFIG, more_errors={lowest: [0.0, 0.0, 27.0]})  # mean 9, spread wide
    decision = result.decision
    assert decision.best == lowest and decision.chosen == decision.reference
    report = (result.run_dir / "report.md").read_text(encoding="utf-8")
    assert _table_row(report, CHOSEN)[4] == "yes, but the rule tests only the lowest mean"
    assert _table_row(report, lowest)[4] == "no"
    assert "the rule does not test (it tests only the one with the lowest mean error)" in report  # the caption
    # the picture draws that row pale, not in the green of a tested recipe beyond the noise (a review found it
    # drawn like one that cleared)
    with (result.run_dir / "selection.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    drawn = {row["recipe"]: row for row in recipe_data(rows, Policy.load(result.policy_path).metadata["score"]
                                                       ["selection"], confidence=0.8, test_fraction=1 / 3)["ranked"]}
    assert drawn[CHOSEN]["clears"] and not drawn[CHOSEN]["tested"] and drawn[lowest]["tested"]
    assert "pale green: a bound below 0 too, on a recipe the rule does not test" in report


def test_failed_recipes_are_not_counted_as_trained_and_a_stand_in_reference_is_named(tmp_path):
    """Regressions: a recipe that failed was counted "on every fold"; and the rule's paragraph called a
    stand-in reference torchvision's RandAugment()."""
    failing = "trivialaugment (AutoAugment ranges), crop 1"
    prepared = prepare(CONFIG)
    reference = reference_name(prepared.baseline)
    result, _ = _exported_run(tmp_path, CONFIG, failed=(failing, reference))
    decision = result.decision
    assert decision.reference != reference and failing not in decision.mean_error
    report = (result.run_dir / "report.md").read_text(encoding="utf-8")
    assert f"({len(decision.mean_error)} on every fold, 1 on the first only, 2 failed)" in report
    assert (f"replaces the reference, {decision.reference} (standing in for torchvision's RandAugment() without "
            "the crop, which failed on a fold)") in report
    assert "(torchvision's RandAugment(), no crop)" not in report


def test_a_bound_just_below_zero_never_reads_plus_zero():
    """Regression: a bound of -0.004 pp was shown as +0.00 next to "yes" (it clears); float noise is 0."""
    from policysearch.search.report import recipe_table
    from policysearch.search.selection import signed_pp

    x = 0.488
    errors = {"ref": [10.0, 12.0, 14.0], "a": [10 - x, 11.5 - x, 14.5 - x]}
    decision = decide(errors, "ref", test_fraction=1 / 3)
    row = next(r for r in recipe_table(["ref", "a"], decision) if r["recipe"] == "a")
    assert -0.005 < row["upper"] < 0 and row["clears"] and decision.chosen == "a"
    assert signed_pp(row["upper"]) == "-0.00" and "-0.00 pp, is below 0" in decision.reason
    assert [signed_pp(v) for v in (-1e-12, 1e-12, 0.004, -1.234)] == ["+0.00", "+0.00", "+0.00", "-1.23"]


def test_the_report_gives_the_trainings_as_they_ran(tmp_path):
    """Regression: the report said "1 epochs (more on tiny data)" where tiny data had raised them to 50."""
    result, _ = _exported_run(tmp_path, CONFIG)
    report = (result.run_dir / "report.md").read_text(encoding="utf-8")
    prepared = prepare(CONFIG)
    children, recipes = prepared.budgets()
    assert children.startswith("50 epochs at batch 9 (asked: 1 at batch 128; tiny data gets at least 200 steps")
    assert f"- child model `small_cnn`, lr 0.1, {children}" in report
    assert f"candidate recipes trained at the final budget, {recipes}, on 3 cross-fit folds" in report


def test_the_report_says_what_the_models_were_fine_tuned_from(tmp_path):
    """Regression: a fine-tuning search's report named the model alone, not its weights, the frozen backbone
    or the learning rate, which the first printed line and the benchmark's results.md give."""
    import dataclasses

    import torch

    from policysearch.training.models import build_model

    torch.save(build_model("small_cnn", 10, 1).state_dict(), tmp_path / "w.pt")
    config = dataclasses.replace(CONFIG, weights=str(tmp_path / "w.pt"), freeze_backbone=True, lr=0.01)
    result, _ = _exported_run(tmp_path, config)
    report = (result.run_dir / "report.md").read_text(encoding="utf-8")
    assert f"- child model `small_cnn` from {tmp_path / 'w.pt'} (frozen backbone), lr 0.01, 50 epochs" in report


def test_the_domain_fit_table_rounds_down_so_a_value_below_the_threshold_never_shows_on_it():
    from policysearch.search.report import _floor2

    assert [_floor2(v) for v in (0.4951, 0.5, 0.999, 1.0, 0.0)] == ["0.49", "0.50", "0.99", "1.00", "0.00"]


def test_the_report_counts_in_words_that_fit_the_number(tmp_path):
    result, _ = _exported_run(tmp_path, SearchConfig(**{**asdict(CONFIG), "splits": 1, "strengths": (1.0,)}))
    report = (result.run_dir / "report.md").read_text(encoding="utf-8")
    assert "Fast AutoAugment: 1 split x 1 repeat x 4 trials" in report
    assert "1 splits" not in report and "1 repeats" not in report and "a 80%" not in report


def test_ops_png_of_a_trivialaugment_recipe_says_what_it_is_and_shows_the_levels_it_uses():
    from policysearch.search.figures import describe_one_op_per_image, one_op_per_image, plot_ops
    from policysearch.augment.standard import randaugment_policy, trivialaugment_policy

    policy = trivialaugment_policy().with_baseline(Baseline(1, False))
    policy.metadata["domain_fit"] = {"ops": [{"op": "Solarize", "max_level": 0.25, "excluded": False}]}
    choice = one_op_per_image(policy)
    assert choice is not None and len(choice["ops"]) == 14 and len(choice["levels"]) == 31
    assert describe_one_op_per_image(choice) == ("each image gets exactly one op, drawn uniformly from 14 ops (7% "
                                                 "each), at a level drawn uniformly from 31 levels between 0 and 1")
    solarize = next(u for u in choice["ops"] if u["op"] == "Solarize")
    assert (solarize["low"], solarize["high"], solarize["cap"]) == (0.0, 1.0, 0.25)  # the levels it really uses
    assert plot_ops(policy, "trivialaugment, crop 1")[:8] == b"\x89PNG\r\n\x1a\n"
    one = one_op_per_image(randaugment_policy(1, 5))
    assert describe_one_op_per_image(one).endswith("at level 0.5")
    faa = Policy([[Operation("Rotate", 0.7, 0.4), Operation("Cutout", 0.3, 0.5)]])
    assert one_op_per_image(faa) is None  # drawn as before: expected applications and levels per op
    # a baseline-only recipe was "exactly one op, drawn uniformly from 1 ops (100% each), at level 0"
    baseline_only = one_op_per_image(Policy([[Operation("Identity", 1.0, 0.0)]]))
    assert describe_one_op_per_image(baseline_only) == "no op of the policy changes an image (it holds the identity alone)"


def test_the_recipes_caption_says_how_the_stopped_recipes_are_drawn():
    """Regression: the caption always said "with that one fold's error", also for recipes left out of an added
    repeat, which the picture draws as a mean over their folds."""
    from policysearch.search.figures import _stopped_caption

    def selection(stopped_folds: dict[str, int]) -> dict:
        folds = {"ref": [5.0] * 6, "kept": [4.0] * 6, **{n: [6.0] * k for n, k in stopped_folds.items()}}
        decision = decide({"ref": folds["ref"], "kept": folds["kept"]}, "ref", test_fraction=1 / 3)
        return replace(decision, stopped={n: 6.0 for n in stopped_folds},
                       fold_errors={n: tuple(v) for n, v in folds.items()}).to_dict()

    assert _stopped_caption(selection({})) == ""
    assert "with that one fold's error" in _stopped_caption(selection({"raced": 1}))
    left = _stopped_caption(selection({"left": 3}))
    assert "(left out of (or failed in) the repeats added)" in left and "mean over the folds each trained on" in left
    assert "raced out after the first fold, or left out" in _stopped_caption(selection({"raced": 1, "left": 3}))


def test_the_report_counts_the_candidates_kept_when_a_split_had_fewer_trials_than_top_n(tmp_path):
    """Regression: "top 10 kept per split" was said where each split had 4 trials."""
    result, _ = _exported_run(tmp_path, SearchConfig(**{**asdict(CONFIG), "top_n": 10}))
    report = (result.run_dir / "report.md").read_text(encoding="utf-8")
    assert "the best (up to) 4 of each split and repeat kept (1 in all, 1 sub-policy merged)" in report
    assert "top 10" not in report and "rings mark the best (up to) 4 of each split and repeat" in report
    # Regression: "without a policy" hid that the rewards include the baseline (its pad-and-crop), the line not.
    # Regression (a trial): one line at the children's mean put a split's rewards above "clean accuracy" that
    # were below its own child's; each split now has its child's line
    assert ("a dashed line in a split's colour is its child model's accuracy on clean D_A images (no policy and no "
            "baseline, which every reward includes)") in report
    assert result.policy.metadata["score"]["child_da_accuracy_by_split"] == {
        str(s): 0.9 for s in range(CONFIG.splits)}
    document = json.loads(result.policy_path.read_text(encoding="utf-8"))  # a run from before: the mean's line
    del document["metadata"]["score"]["child_da_accuracy_by_split"]
    result.policy_path.write_text(json.dumps(document), encoding="utf-8")
    assert main(["report", str(result.run_dir)]) == 0
    assert ("the dashed line is the child models' mean accuracy on clean D_A images (no policy and no baseline, "
            "which every reward includes)") in (result.run_dir / "report.md").read_text(encoding="utf-8")


def test_a_recipe_tied_with_the_lowest_mean_says_it_was_not_the_one_tested(tmp_path):
    """Regression: a recipe tied with the lowest mean read "the rule tests only the lowest mean", which it has."""
    twin = "randaugment n=1 m=5 (torchvision scale), crop 1"
    result, _ = _exported_run(tmp_path, CONFIG, more_errors={twin: [2.4, 10.0, 17.6]})  # CHOSEN's errors
    report = (result.run_dir / "report.md").read_text(encoding="utf-8")
    assert result.decision.best == twin or result.decision.best == CHOSEN
    other = CHOSEN if result.decision.best == twin else twin
    assert _table_row(report, other)[4] == f"yes, but tied on the mean with {result.decision.best}, listed first, " \
                                           "which the rule tests"


def test_the_report_counts_failed_recipes_when_none_stopped():
    """Regression: with no recipe stopped, "all on every fold" was said where some had failed."""
    from types import SimpleNamespace

    from policysearch.search.report import _trained_text

    decision = decide({"ref": [10.0, 12, 14], "a": [9.0, 11, 13]}, "ref", test_fraction=1 / 3)
    assert _trained_text(SimpleNamespace(decision=decision, recipes=[1, 2, 3, 4]), 3) == "2 on every fold, 2 failed"
    assert _trained_text(SimpleNamespace(decision=decision, recipes=[1, 2]), 3) == "all on every fold"


def test_the_recipes_error_axis_zooms_on_errors_far_from_zero():
    """A trial's find: folds at 82-94% error were squeezed into the last tenth of an axis from 0."""
    low, high = error_limits([82.0, 88.5, 94.0])
    assert 81.0 < low < 82.0 and 94.0 < high < 95.0
    assert error_limits([3.0, 12.0]) == (-0.04 * 12.0, 1.08 * 12.0)  # near 0: the axis starts at 0
    assert error_limits([]) == (-0.04, 1.08)
    low, high = error_limits([90.0, 90.0])  # one value: still a span to see it in
    assert low < 90.0 < high and high - low >= 1.0
