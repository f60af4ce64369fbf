"""Tests for the search algorithm through the in-process runner: every phase on tiny digits, without Ray;
and (slow) the same search on Ray Tune, which must give the same rewards, selection and policy."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from _stops import stop_at_once_lines

from policysearch.augment.policy import Policy
from policysearch.search.config import SearchConfig
from policysearch.search.inprocess import run_search
from policysearch.search.ledger import Ledger
from policysearch.search.spaces import load_space, space_from_dict

TINY = dict(dataset="digits", train_size=60, splits=2, trials=3, epochs=1, top_n=1, algorithm="optuna", seed=3,
            cpus_per_trial=1.0, max_concurrent=1, min_steps=8, selection_folds=2, selection_repeats=1,
            strengths=(1.0,))


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open(encoding="utf-8")))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("phases") / "run"
    out = io.StringIO()
    result = run_search(SearchConfig(**TINY), run_dir, stream=out)
    return run_dir, result, out.getvalue()


def test_the_whole_algorithm_runs_in_process_without_ray(tiny_run):
    run_dir, result, out = tiny_run
    assert (run_dir / "config.json").is_file() and (run_dir / "report.md").is_file()
    policy = Policy.load(run_dir / "policy.json")
    assert policy.metadata["recipe"]["name"] == result.chosen.name and result.reason
    # regression (a trial): candidates.json's metadata named the chosen recipe and its sub-policy count
    candidates = Policy.load(run_dir / "candidates.json")
    assert "recipe" not in candidates.metadata and "selection" not in candidates.metadata["score"]
    assert candidates.metadata["note"].startswith("the merged Fast AutoAugment candidates")
    trials = _rows(run_dir / "trials.csv")
    assert len(trials) == 2 * 3 and all(row["status"] == "ok" for row in trials)
    assert sorted((int(r["split"]), int(r["index"])) for r in trials) == [(s, i) for s in range(2) for i in range(3)]
    selection = _rows(run_dir / "selection.csv")
    folds = {int(r["fold"]) for r in selection}  # 2 folds, and the repeats added while the decision was unclear
    assert {0, 1} <= folds == set(range(len(result.decision.fold_errors[result.decision.reference])))
    assert result.chosen.name in {r["recipe"] for r in selection}
    for phase in ("phase 1: child models", "phase 2: policy trials", "phase 3: recipe selection, first fold"):
        assert f"[{phase}]" in out
    # what the domain fit did to the space is said before phase 2 searches it (here: children too weak to judge)
    assert "\ndomain fit: the child models are too close to chance" in out
    assert set(result.costs) >= {"phase1_wall_s", "phase2_wall_s", "phase3_wall_s", "processes"}


def test_children_too_weak_to_judge_the_flip_leave_it_to_training(tiny_run):
    """One epoch on 60 digits leaves every child near chance: the flip is tried with the baseline and the
    reference (the reference itself without it), and the report says so."""
    run_dir, result, out = tiny_run
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "too close to chance" in report and "The flip is left to training" in report
    # regression (a trial): "Nothing was excluded: ...; no op was excluded." said it twice
    assert "Nothing was excluded: the child models are too close to chance" in report
    assert "no op was excluded" not in report
    assert "domain fit: the child models are too close to chance" in out and "; no op was excluded\n" in out
    tried = {r["recipe"] for r in _rows(run_dir / "selection.csv") if r["fold"] == "0"}
    assert {"baseline, crop 1, flip", "baseline, crop 0, flip", "randaugment (torchvision), crop 0, flip"} <= tried
    assert result.decision.reference == "randaugment (torchvision), crop 0"


def test_the_in_process_search_never_imports_ray(tmp_path):
    """In a fresh interpreter (this one may have imported Ray for other tests): a whole run, then no Ray."""
    script = (f"import io, sys; from policysearch.search.config import SearchConfig; "
              f"from policysearch.search.inprocess import run_search; "
              f"run_search(SearchConfig(**{TINY!r}), {str(tmp_path / 'run')!r}, stream=io.StringIO()); "
              f"print('ray' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_a_resume_of_an_unfinished_in_process_run_keeps_every_finished_trial(tiny_run, tmp_path):
    import shutil

    run_dir, result, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "policy.json").unlink()  # the export did not finish: the run is unfinished
    experiments = next((copy / "tune").iterdir())
    # phase 2 lost its last trial, phase 3's other folds were never run
    trials_file = experiments / "phase2_policies" / "trials.json"
    records = json.loads(trials_file.read_text(encoding="utf-8"))
    trials_file.write_text(json.dumps(records[:-1]), encoding="utf-8")
    shutil.rmtree(experiments / "phase3_selection_rest", ignore_errors=True)
    out = io.StringIO()
    again = run_search(SearchConfig(**TINY), copy, resume=True, stream=out)
    assert "resumed: 2/2 trials finished before" in out.getvalue()  # phase 1
    assert "resumed: 5/6 trials finished before" in out.getvalue()  # phase 2: one trial ran again
    assert [r["reward"] for r in _rows(copy / "trials.csv")] == [r["reward"] for r in _rows(run_dir / "trials.csv")]
    assert json.loads((copy / "policy.json").read_text())["sub_policies"] == \
        json.loads((run_dir / "policy.json").read_text())["sub_policies"]
    assert again.chosen.name == result.chosen.name
    resumed = run_search(SearchConfig(**TINY), copy, resume=True, stream=io.StringIO())
    assert resumed.already_complete


def test_a_resume_whose_cost_ledger_is_damaged_says_its_costs_leave_out_the_earlier_processes(tiny_run, tmp_path):
    """Regression (a review): a cut-short ledger.json was dropped without a word, and the report gave the last
    process's seconds as the whole search's cost."""
    import shutil

    run_dir, _, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "policy.json").unlink()  # unfinished: the export runs again
    (copy / "ledger.json").write_text('{"wall_s": {"phase1": {"2026', encoding="utf-8")
    again = run_search(SearchConfig(**TINY), copy, resume=True, stream=io.StringIO())
    note = [w for w in again.warnings if "ledger.json could not be read" in w]
    assert note == ["ledger.json could not be read (Unterminated string starting at: line 1 column 24 (char 23)): "
                    "the phases' wall seconds leave out the processes that worked on the run before it"]
    assert str(tmp_path) not in note[0]  # the warning goes into policy.json, which is shared: no local path
    assert f"**Warning:** {note[0]}." in (copy / "report.md").read_text(encoding="utf-8")
    assert json.loads((copy / "policy.json").read_text(encoding="utf-8"))["metadata"]["warnings"] == again.warnings
    (copy / "policy.json").unlink()  # a process after the one that found it damaged still says so
    assert run_search(SearchConfig(**TINY), copy, resume=True, stream=io.StringIO()).warnings == again.warnings
    (copy / "ledger.json").write_text('{"wall_s": 3}', encoding="utf-8")  # JSON of another shape
    assert Ledger(copy).lost.startswith("ledger.json could not be read ('int' object has no attribute 'items')")
    (copy / "ledger.json").write_text('{"wall_s": {}, "lost": null}', encoding="utf-8")
    assert Ledger(copy).lost == ""  # not "None"
    shutil.rmtree(copy)
    shutil.copytree(run_dir, copy)
    (copy / "policy.json").unlink()
    intact = run_search(SearchConfig(**TINY), copy, resume=True, stream=io.StringIO())
    assert not [w for w in intact.warnings if "ledger" in w]


def test_a_recipe_with_ops_the_search_space_leaves_out_says_so(tmp_path):
    """Regression (a new user's trial): with --space no_flips (no foreground/background swap, for scans and
    text) the search kept torchvision's RandAugment(), Solarize included, without a word that the space does
    not bound the standard recipes."""
    from policysearch.augment.standard import randaugment_tv_policy, trivialaugment_wide_policy
    from policysearch.search.report import ops_outside_space

    no_flips = load_space("no_flips")
    assert ops_outside_space(no_flips, randaugment_tv_policy()).startswith(
        "the recipe uses Color, Solarize, which the search space no_flips leaves out: a space bounds the policies the "
        "search proposes")
    assert ops_outside_space(load_space("fast_autoaugment"), randaugment_tv_policy()) == ""  # Identity aside
    # regression (a review): TrivialAugmentWide's translations in pixels were taken for ops outside every space
    for space in ("fast_autoaugment", "autoaugment", "wide"):
        assert ops_outside_space(load_space(space), trivialaugment_wide_policy()) == "", space
    taw_ops = sorted({step.op for sub in trivialaugment_wide_policy() for step in sub})
    own = space_from_dict({"name": "abs", "sub_policies": 1, "ops_per_sub_policy": 1, "ops": taw_ops,
                           "probability": {"type": "continuous"}, "level": {"type": "continuous"}})
    assert "TranslateXAbs" in own.ops and ops_outside_space(own, trivialaugment_wide_policy()) == ""
    result = run_search(SearchConfig(**{**TINY, "space": "no_flips"}), tmp_path / "run", stream=io.StringIO())
    note = ops_outside_space(no_flips, result.policy)
    assert (note in result.warnings) == bool(note)
    assert (f"- **warning:** {note}" in (tmp_path / "run" / "report.md").read_text(encoding="utf-8")) == bool(note)
    if result.chosen.name.startswith("randaugment (torchvision)"):
        assert note


def test_ops_the_fit_excluded_or_left_out_of_the_space_are_said_everywhere():
    """A trial's finds: torchvision's RandAugment() as shipped was chosen with Solarize, which the domain fit had
    excluded, without a word; an op whose range in the space started above its cap left the space, as the
    search printed, while policy.json said excluded: false and report.md gave it the cap as its level."""
    from policysearch.augment.standard import randaugment_tv_policy, trivialaugment_wide_policy
    from policysearch.search.domain import DomainFit, OpFit, restrict_space, restriction_text
    from policysearch.search.report import domain_fit_table, ops_outside_space

    space = space_from_dict({"name": "probe", "sub_policies": 2, "ops_per_sub_policy": 1,
                             "probability": {"type": "continuous"}, "level": {"type": "continuous"},
                             "ops": {"TranslateY": {"level": [0.6, 1.0]}, "Rotate": None, "Solarize": None}})
    fit = DomainFit({"TranslateY": OpFit("TranslateY", (0.5, 1.0), (0.9, 0.3), 0.5),
                     "Solarize": OpFit("Solarize", (0.5, 1.0), (0.2, 0.1), 0.0)}, clean_accuracy=0.9, chance=0.1)
    fit = fit.for_space(space)
    assert fit.left_out == {"TranslateY": 0.6} and restrict_space(space, fit).ops == ("Rotate",)
    assert fit.to_dict()["left_out_of_space"] == {"TranslateY": 0.6}
    note = ops_outside_space(space, randaugment_tv_policy(), fit)
    assert "Solarize, which the domain fit excluded (it loses this data's classes at the lowest level probed)" in note
    assert "Solarize" not in ops_outside_space(space, randaugment_tv_policy())  # in the space: said only with the fit
    rows = domain_fit_table(fit)
    assert "| Solarize | 0.5: 0.20, 1: 0.10 | **excluded** |" in rows
    assert "| TranslateY | 0.5: 0.90, 1: 0.30 | 0.5; **left out of the space**, whose range for it starts at 0.6 |" \
        in rows
    assert restriction_text(space, restrict_space(space, fit), fit) == (
        "1 of 3 ops of space 'probe' kept; excluded: Solarize; left out, their range in the space above their cap: "
        "TranslateY (from 0.6, cap 0.5)")
    # named once, in the first part that applies, and as the fit names it (TrivialAugmentWide's pixel translations)
    no_flips = load_space("no_flips")
    both = DomainFit({op: OpFit(op, (0.5,), (0.1,), 0.0) for op in ("Solarize", "Posterize", "TranslateX")})
    note = ops_outside_space(no_flips, randaugment_tv_policy(), both)
    assert note.startswith("the recipe uses Color, Solarize, which the search space no_flips leaves out; and "
                           "Posterize, TranslateX, which the domain fit excluded")
    assert "TranslateXAbs" not in ops_outside_space(no_flips, trivialaugment_wide_policy(), both)


def test_a_search_records_and_reports_what_the_fit_left_out_of_its_space(tmp_path, monkeypatch):
    """The wiring of the test above (a review's find: without it the search's files said nothing new): a fit
    that caps TranslateY below the space's range for it, and excludes Solarize."""
    from policysearch.search import phases
    from policysearch.search.domain import DomainFit, OpFit

    def fitted(probes, num_classes, threshold):
        return DomainFit({"TranslateY": OpFit("TranslateY", (0.5, 1.0), (0.9, 0.3), 0.5),
                          "Solarize": OpFit("Solarize", (0.5, 1.0), (0.2, 0.1), 0.0)}, clean_accuracy=0.9, chance=0.1)

    monkeypatch.setattr(phases, "fit_domain", fitted)
    space = tmp_path / "probe.yaml"
    space.write_text("name: probe\nsub_policies: 2\nops_per_sub_policy: 1\nprobability: {type: continuous}\n"
                     "level: {type: continuous}\nops:\n  Rotate:\n  Solarize:\n  TranslateY: {level: [0.6, 1.0]}\n",
                     encoding="utf-8")
    out = io.StringIO()
    result = run_search(SearchConfig(**{**TINY, "space": str(space)}), tmp_path / "run", stream=out)
    assert "domain fit: 1 of 3 ops of space 'probe' kept; excluded: Solarize; left out, their range in the space " \
           "above their cap: TranslateY (from 0.6, cap 0.5)" in out.getvalue()
    assert result.policy.metadata["domain_fit"]["left_out_of_space"] == {"TranslateY": 0.6}
    assert "0.5; **left out of the space**" in (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
    uses_solarize = any(step.op == "Solarize" for sub in result.policy for step in sub)
    assert any("Solarize, which the domain fit excluded" in w for w in result.warnings) == uses_solarize


def test_a_resume_on_other_training_images_is_refused(tiny_run, tmp_path):
    """A folder's files can change between a run and its resume while its name stays: config.json keeps the
    images' fingerprint and the resume compares it, rather than scoring new images with old children."""
    import shutil

    from policysearch.search.rundir import RunError

    run_dir, _, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "policy.json").unlink()
    stored = json.loads((copy / "config.json").read_text(encoding="utf-8"))
    assert len(stored["data_fingerprint"]) == 12
    stored["data_fingerprint"] = "0" * 12  # as if the images had changed since
    (copy / "config.json").write_text(json.dumps(stored), encoding="utf-8")
    with pytest.raises(RunError, match=r"the training images differ from those the run started on \(fingerprint "
                                       r"[0-9a-f]{12}, stored 0{12}\): their files changed since, or the run's "
                                       r"config.json was edited \(its data set, --image-size, --train-size and, with a --train-size, --seed choose them\)"):
        run_search(SearchConfig(**TINY), copy, resume=True, stream=io.StringIO())
    del stored["data_fingerprint"]  # a run from before the fingerprint: continued as it was
    (copy / "config.json").write_text(json.dumps(stored), encoding="utf-8")
    assert run_search(SearchConfig(**TINY), copy, resume=True, stream=io.StringIO()).policy_path.exists()


def test_a_resume_with_a_changed_search_space_is_refused(tiny_run, tmp_path):
    """A space file can be edited between a run and its resume while its name stays: config.json keeps the
    space as loaded, and the resume compares it, rather than mixing trials of two spaces."""
    import shutil

    from policysearch.search.rundir import RunError, check_same_inputs

    run_dir, _, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "policy.json").unlink()
    stored = json.loads((copy / "config.json").read_text(encoding="utf-8"))
    assert stored["space"] == json.loads(json.dumps(load_space(stored["resolved_space"]).to_dict()))
    original = json.loads(json.dumps(stored["space"]))
    stored["space"]["description"] = "older wording"  # a description decides nothing: resumed
    (copy / "config.json").write_text(json.dumps(stored), encoding="utf-8")
    check_same_inputs(copy, stored["data_fingerprint"], load_space(stored["resolved_space"]).to_dict())
    for change, changed in [(lambda space: space.update(sub_policies=space["sub_policies"] + 1), "sub_policies"),
                            # an op's place is its index in the optimiser's choice: a new order is another space
                            (lambda space: space.update(ops=dict(reversed(space["ops"].items()))), "ops")]:
        stored["space"] = json.loads(json.dumps(original))
        change(stored["space"])  # as if the shipped file had been changed since, by an upgrade
        (copy / "config.json").write_text(json.dumps(stored), encoding="utf-8")
        with pytest.raises(RunError, match=rf"the search space {stored['resolved_space']} differs from the one the "
                                           rf"run started with \({changed} changed\); the installed policysearch "
                                           r"ships it changed; install the version that ran it again, or start a new"):
            run_search(SearchConfig(**TINY), copy, resume=True, stream=io.StringIO())
    del stored["space"]  # a run from before the space was recorded: continued as it was
    (copy / "config.json").write_text(json.dumps(stored), encoding="utf-8")
    assert run_search(SearchConfig(**TINY), copy, resume=True, stream=io.StringIO()).policy_path.exists()


def test_the_policy_names_the_command_that_started_the_run_and_the_one_that_finished_it(tiny_run, tmp_path,
                                                                                        monkeypatch):
    import shutil

    from policysearch.invocation import command_line

    run_dir, _, _ = tiny_run
    stored = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))["command"]
    assert json.loads((run_dir / "policy.json").read_text())["metadata"]["command"] == stored
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "policy.json").unlink()
    monkeypatch.setattr(sys, "argv", ["/venv/lib/policysearch/__main__.py", "search", "--resume", "my run"])
    assert command_line() == "python -m policysearch search --resume 'my run'"
    run_search(SearchConfig(**TINY), copy, resume=True, stream=io.StringIO())
    metadata = json.loads((copy / "policy.json").read_text())["metadata"]
    assert metadata["command"] == stored and metadata["resumed_by"] == "python -m policysearch search --resume 'my run'"


def test_a_resume_of_a_finished_run_returns_what_the_run_found(tiny_run):
    """Regression: a finished run's resume (a notebook run again) returned no top candidates and no recipe."""
    run_dir, result, _ = tiny_run
    done = run_search(SearchConfig(**TINY), run_dir, resume=True, stream=io.StringIO())
    assert done.already_complete and result.top and len(done.top) == len(result.top)
    for again, first in zip(done.top, result.top):
        assert (again.split, again.repeat, again.reward, again.trial_id) == \
            (first.split, first.repeat, first.reward, first.trial_id)
        assert again.policy.sub_policies == first.policy.sub_policies and again.policy.ranges == first.policy.ranges
    assert (done.chosen.name, done.chosen.family, done.chosen.strength) == \
        (result.chosen.name, result.chosen.family, result.chosen.strength)
    assert done.chosen.recipe.sub_policies == result.chosen.recipe.sub_policies
    assert done.chosen.recipe.baseline == result.chosen.recipe.baseline and done.reason == result.reason


@pytest.mark.parametrize("damage", ["missing", "truncated", "wrong shape"])
def test_a_finished_run_without_a_readable_top_file_still_resumes(tiny_run, tmp_path, damage):
    """top.json only adds to what policy.json answers: a run exported before it existed, or a damaged one,
    resumes as complete with its recipe and no top candidates, never an error."""
    import shutil

    from policysearch.search.export import TOP_FILE

    run_dir = shutil.copytree(tiny_run[0], tmp_path / "run")
    top = run_dir / TOP_FILE
    if damage == "missing":
        top.unlink()
    else:
        top.write_text(top.read_text(encoding="utf-8")[:40] if damage == "truncated" else '{"top": [{"split": "x"}]}',
                       encoding="utf-8")
    done = run_search(SearchConfig(**TINY), run_dir, resume=True, stream=io.StringIO())
    assert done.already_complete and done.top == [] and done.chosen.name == tiny_run[1].chosen.name


def test_a_failing_trial_is_recorded_and_the_in_process_search_goes_on(tmp_path, monkeypatch):
    from policysearch.search.faults import ENV, LOG_ENV

    monkeypatch.setenv(ENV, "raise@score:split=1,index=0")
    monkeypatch.setenv(LOG_ENV, str(tmp_path / "faults.log"))
    config = SearchConfig(**{**TINY, "retries": 1})
    result = run_search(config, tmp_path / "run", stream=io.StringIO())
    failed = [r for r in _rows(tmp_path / "run" / "trials.csv") if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["split"] == "1" and failed[0]["index"] == "0"
    assert "CUDA out of memory" in failed[0]["error"] and failed[0]["reward"] == ""
    assert sum("@score" in line for line in (tmp_path / "faults.log").read_text().splitlines()) == 2  # 1 retry
    assert any("candidate 0 of split 1" in line for line in result.failures)


def test_a_search_stopped_by_failures_says_where_the_tracebacks_are_and_refuses_a_resume(tmp_path, monkeypatch):
    """Regression: the one line gave the first error's message only, without file or line, and pointed
    nowhere; and a resume would keep the failed trials and stop again."""
    from policysearch.search.checks import SearchFailed
    from policysearch.search.faults import ENV, LOG_ENV
    from policysearch.search.rundir import RunError

    monkeypatch.setenv(ENV, "raise@child")
    monkeypatch.setenv(LOG_ENV, str(tmp_path / "faults.log"))
    config = SearchConfig(**{**TINY, "retries": 0})
    with pytest.raises(SearchFailed, match=r"phase 1 \(child models\): 2 of 2 trials failed .*; each failed trial's "
                                           r"whole traceback is in the error.txt of its folder under "):
        run_search(config, tmp_path / "run", stream=io.StringIO())
    tracebacks = sorted((tmp_path / "run" / "tune").rglob("error.txt"))
    assert len(tracebacks) == 2 and "Traceback (most recent call last)" in tracebacks[0].read_text(encoding="utf-8")
    with pytest.raises(RunError, match="this run stopped because too many trials failed"):
        run_search(config, tmp_path / "run", resume=True, stream=io.StringIO())


@pytest.mark.parametrize("stopped_in, phase", [("policy_trial", "phase2"), ("fit_domain", "phase1")])
def test_a_ctrl_c_keeps_the_phase_s_time_up_to_the_stop_in_the_cost_ledger(stopped_in, phase, tmp_path, monkeypatch):
    """The time a stopped process spent in its phase after its last record (a finished trial, or the end of
    the phase's trials) is part of the run's cost, which a resume sums over every process.

    Regression (CI): a stop at once after that (SIGTERM's grace over while Ray shut down, a second Ctrl-C) said
    "stopped at once ... kept as last saved, at most a second before", as if finished work were lost."""
    import time

    from policysearch.search import phases
    from policysearch.search.interrupts import SearchInterrupted

    def stopped(*args, **kwargs):
        time.sleep(0.5)
        raise SearchInterrupted()

    at_once_lines = stop_at_once_lines(monkeypatch)
    # Ctrl-C in the first policy trial, or after phase 1's trials (the domain fit runs in the driver)
    monkeypatch.setattr(phases, stopped_in, stopped)
    with pytest.raises(SearchInterrupted, match="search interrupted.*continue with") as caught:
        run_search(SearchConfig(**TINY), tmp_path / "run", stream=io.StringIO())
    # Regression: code that continues a stopped run had to parse the folder out of the message
    assert caught.value.run_dir == tmp_path / "run" and caught.value.resumable is True
    ledger = json.loads((tmp_path / "run" / "ledger.json").read_text(encoding="utf-8"))["wall_s"]
    assert len(ledger[phase]) == 1 and next(iter(ledger[phase].values())) >= 0.5
    assert at_once_lines == [str(caught.value)]


def test_a_search_stopped_before_it_started_says_it_cannot_be_resumed(tmp_path):
    import pickle

    from policysearch.search.phases import Stage

    stage = Stage(tmp_path / "run", resume=False)
    before = stage.interrupted()
    assert before.run_dir == tmp_path / "run" and before.resumable is False and "run the same command" in str(before)
    stage.started = True
    after = pickle.loads(pickle.dumps(stage.interrupted()))  # it travels as it is, e.g. out of a worker
    assert (after.run_dir, after.resumable, str(after)) == (tmp_path / "run", True, stage.message())


def test_the_domain_fit_between_phases_counts_in_phase_1_without_a_ctrl_c(tmp_path, monkeypatch):
    """Regression: phase 1's seconds ended with its trials, so the driver's domain fit after them counted only
    when a Ctrl-C fell in it; a phase now runs to the next one's start, in the ledger and in the costs."""
    import time

    from policysearch.search import phases
    from policysearch.search.ledger import Ledger

    fit_domain, start = phases.fit_domain, Ledger.start
    entered: dict[str, float] = {}

    def slow_fit(*args, **kwargs):
        time.sleep(0.5)
        return fit_domain(*args, **kwargs)

    def timed_start(self, phase):
        entered[phase] = time.monotonic()
        start(self, phase)

    monkeypatch.setattr(phases, "fit_domain", slow_fit)
    monkeypatch.setattr(Ledger, "start", timed_start)
    result = run_search(SearchConfig(**TINY), tmp_path / "run", stream=io.StringIO())
    ledger = json.loads((tmp_path / "run" / "ledger.json").read_text(encoding="utf-8"))["wall_s"]
    phase1 = next(iter(ledger["phase1"].values()))
    # the 0.5 s fit included; the test's clock and the ledger's are read apart, which a loaded machine may delay
    assert phase1 == pytest.approx(entered["phase2"] - entered["phase1"], abs=0.25)
    assert result.costs["phase1_wall_s"] == pytest.approx(phase1)
    first, second = result.spans["phase1"], result.spans["phase2"]  # the spans count as the ledger does
    assert first[1] == second[0] and first[1] - first[0] == pytest.approx(phase1, abs=0.05)


def test_hyperopt_runs_on_ray_only_and_says_so_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="runs on Ray only"):
        run_search(SearchConfig(**{**TINY, "algorithm": "hyperopt"}), tmp_path / "run", stream=io.StringIO())
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.slow
def test_the_in_process_and_the_ray_runner_give_the_same_search(tiny_run, tmp_path, monkeypatch):
    """The same seed on both runners: the same phase-2 rewards, selection and policy. Ray runs one trial at a
    time here (``max_concurrent=1``), so each optimiser sees its trials in the same order."""
    from policysearch.search import run_search as run_on_ray

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    run_dir, result, _ = tiny_run
    on_ray = tmp_path / "ray"
    ray_result = run_on_ray(SearchConfig(**TINY), on_ray, stream=io.StringIO())
    here, there = _rows(run_dir / "trials.csv"), _rows(on_ray / "trials.csv")
    columns = [c for c in here[0] if c not in ("trial_id", "seconds", "load_seconds", "data_seconds", "node_id",
                                                 "child_cached")]
    assert [{c: r[c] for c in columns} for r in here] == [{c: r[c] for c in columns} for r in there]
    timing = ("train_seconds",)
    assert ([{k: v for k, v in r.items() if k not in timing} for r in _rows(run_dir / "selection.csv")]
            == [{k: v for k, v in r.items() if k not in timing} for r in _rows(on_ray / "selection.csv")])
    a, b = (json.loads((d / "policy.json").read_text()) for d in (run_dir, on_ray))
    assert a["sub_policies"] == b["sub_policies"] and a.get("baseline") == b.get("baseline")
    assert a["metadata"]["recipe"] == b["metadata"]["recipe"]
    assert ray_result.chosen.name == result.chosen.name


def test_an_unclear_selection_adds_a_repeat_for_its_contenders_and_a_resume_keeps_it(tmp_path, monkeypatch):
    """Phase 3 with held-out errors made up per recipe and fold: the first candidate is 3 pp ahead of the
    reference on 3 folds but does not clear the noise, so a repeat is added for it and the reference; it
    then clears. A resume that lost the repeat trains just those 6 again and decides the same."""
    from policysearch.search import phases

    names: dict[int, str] = {}

    def made_up(prepared, recipe, fold, faults=None, index=0):
        names[index] = recipe.name
        reference = [55.09, 53.15, 57.66, 55.0, 54.0, 56.0]
        errors = {0: [52.99, 53.15, 50.45, 50.0, 52.0, 49.0]}.get(index)
        error = (reference if recipe.name == "randaugment (torchvision), crop 0" else errors or
                 [60.0 + f for f in range(12)])[fold]
        return {"recipe": recipe.name, "fold": fold, "error": error, "loss": 1.0, "train_seconds": 0.1,
                "train_images": 40}

    monkeypatch.setattr(phases, "selection_trial", made_up)
    config = SearchConfig(**{**TINY, "selection_folds": 3})
    result = run_search(config, tmp_path / "run", stream=io.StringIO())
    selection = _rows(tmp_path / "run" / "selection.csv")
    added = sorted((r["recipe"], int(r["fold"])) for r in selection if int(r["fold"]) >= 3)
    first = names[0]
    assert added == sorted((name, f) for name in (first, "randaugment (torchvision), crop 0") for f in (3, 4, 5))
    assert result.chosen.name == first and "1 repeat of the cross-fit was added" in result.reason
    report = (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
    assert "### Left out of the added repeats" in report and "(6 folds)" in report
    # the rule's words say which recipes the lowest mean is taken over (regression: "the lowest mean" alone,
    # where a recipe left out after the first pass had a lower mean on its folds)
    assert ("The rule: the recipe with the lowest mean held-out error over all 6 folds (after the first 3, the "
            "repeats added for the recipes that could still clear the noise: the others are listed apart below) "
            "replaces the reference") in report
    experiments = next((tmp_path / "run" / "tune").iterdir())
    assert (experiments / "phase3_selection_repeat2").is_dir()
    import shutil

    shutil.rmtree(experiments / "phase3_selection_repeat2")
    (tmp_path / "run" / "policy.json").unlink()
    out = io.StringIO()
    again = run_search(config, tmp_path / "run", resume=True, stream=out)
    assert "[phase 3: recipe selection, repeat 2 (decision unclear)]" in out.getvalue()
    assert again.chosen.name == first and again.decision.to_dict() == result.decision.to_dict()
