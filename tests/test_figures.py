"""The report's pictures: drawn from a run directory's files, embedded in report.md, redrawn by
``policysearch report``; and the export draws them before report.md, with policy.json still last. No Ray."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
from PIL import Image

from policysearch.candidates import candidate_recipes, reference_name
from policysearch.cli import main
from policysearch.domain import DomainFit
from policysearch.policy import Baseline, Operation, Policy
from policysearch.search import SearchConfig, prepare
from policysearch.search.export import export, write_trials_csv
from policysearch.search.faults import Fault, Faults
from policysearch.search.figures import BEGIN, END, op_usage, plot_recipes, recipe_order
from policysearch.search.outcome import Candidate, Outcome
from policysearch.search.rundir import Run, write_config
from policysearch.selection import decide

PICTURES = ("trials.png", "recipes.png", "ops.png", "grid.png")
CONFIG = SearchConfig(dataset="digits", train_size=60, splits=2, trials=4, top_n=2, selection_folds=3, epochs=1)
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
    assert main(["report", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not finished" in err and str(run_dir) in err


def test_report_on_a_folder_that_is_no_run_says_so(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_a_data_set_not_found_here_skips_the_grid_with_a_note(tmp_path, capsys):
    config = SearchConfig(dataset="cifar10", data_root=str(tmp_path / "nowhere"), splits=2, trials=4, top_n=2)
    run_dir = _synthetic_run(tmp_path / "run", config)
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "note: grid.png not drawn" in out and "--data-root" in out
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "](grid.png)" not in report and "grid.png not drawn" in report
    assert all((run_dir / name).is_file() for name in PICTURES[:3]) and not (run_dir / "grid.png").exists()


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
    from policysearch.selection import compare

    errors = {"baseline, crop 1": [6.0, 5.0, 7.0], "trivialaugment, crop 1": [5.0, 4.0, 5.0]}
    decision = decide(errors, "trivialaugment, crop 1", test_fraction=1 / 3)
    one_fold = compare([5.0], [1.0], test_fraction=1 / 3, names=(decision.chosen, "randaugment n=1 m=5, crop 1"))
    selection = json.loads(json.dumps({**decision.to_dict(), "stopped": {"randaugment n=1 m=5, crop 1": 1.0},
                                       "comparisons": [*decision.to_dict()["comparisons"], one_fold.to_dict()]}))
    names = ["baseline, crop 1", "randaugment n=1 m=5, crop 1", "trivialaugment, crop 1", "failed one"]
    # its one fold's 1.0 is lower than every mean, but not comparable with them
    assert recipe_order(names, selection) == ["trivialaugment, crop 1", "baseline, crop 1",
                                              "randaugment n=1 m=5, crop 1", "failed one"]
    rows = [{"recipe": n, "fold": str(f), "status": "ok", "held_out_error": str(e)}
            for n, errs in [*errors.items(), ("randaugment n=1 m=5, crop 1", [1.0])] for f, e in enumerate(errs)]
    rows.append({"recipe": "failed one", "fold": "0", "status": "failed", "held_out_error": ""})
    assert plot_recipes(rows, selection, 0.8)[:4] == b"\x89PNG"  # null bounds of the one-fold comparison drawn
