"""The search algorithm, phase by phase, over a trial runner; Ray is not imported here.

:func:`run_phases` reads as the algorithm: phase 1 trains one child model per split, and each child
probes the ops on its D_A as it finishes (1b); the domain fit restricts the space; phase 2 scores
candidate policies with the frozen children (density matching), one optimiser per split and repeat;
phase 3 trains the candidate recipes on cross-fit folds, raced, adds repeats of them while the decision
is unclear, and the stated rule picks one. The export (:mod:`~policysearch.search.export`) follows.
Each phase is one batch of trials of a plain function, handed to a
:class:`~policysearch.search.runner.TrialRunner` (Ray Tune, or this process).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Any, Sequence, TextIO

from policysearch.progress import Progress
from policysearch.search.candidates import Recipe, candidate_recipes
from policysearch.search.checks import SearchFailed, check_failures
from policysearch.search.children import ChildSource, train_child
from policysearch.search.density import score_policy
from policysearch.search.domain import fit_domain, probe_child, restrict_space, restriction_text
from policysearch.search.export import write_trials_csv
from policysearch.search.interrupts import SearchInterrupted, resume_command
from policysearch.search.ledger import Ledger
from policysearch.search.outcome import Outcome, merge_top, top_candidates
from policysearch.search.prepare import Prepared
from policysearch.search.recipes import (added_repeat, choose_recipe, final_baseline, flip_undecided,
                                         race_survivors, selection_trial, trained_folds)
from policysearch.search.rundir import Run, record_failure
from policysearch.search.runner import Streams, TrialContext, TrialResult, TrialRunner, Trials

__all__ = ["Stage", "child_trial", "policy_trial", "recipe_trial", "run_phases"]

TRIAL_METRICS = ("reward", "accuracy", "any_view", "loss", "min_loss", "seconds", "load_seconds", "child_cached",
                 "data_seconds", "node_id")  # a phase-2 trial's columns in trials.csv, before its parameters


# ------------------------------------------------------------------------------------ the trials


def child_trial(prepared: Prepared, trial: dict[str, Any], context: TrialContext) -> None:
    """Phase 1 and 1b: train the child of ``trial["split"]``, then probe the ops with it, still in memory."""
    split = int(trial["split"])

    def probe(model: Any) -> dict[str, Any]:
        return {"probe": probe_child(prepared, split, model, context.faults)}

    train_child(prepared, split, context.folder, context.report, context.faults, on_trained=probe,
                spent=context.spent)


def policy_trial(prepared: Prepared, trial: dict[str, Any], context: TrialContext, *, space: Any,
                 children: dict[int, ChildSource]) -> dict[str, Any]:
    """Phase 2: score the candidate policy ``trial`` suggests in ``space`` with its stream's frozen child."""
    splits = prepared.config.splits
    stream, index = int(trial["stream"]), int(trial["index"])
    return score_policy(dataclasses.replace(prepared, space=space), trial, stream % splits,
                        children[stream % splits], repeat=stream // splits, index=index, faults=context.faults)


def recipe_trial(prepared: Prepared, trial: dict[str, Any], context: TrialContext, *,
                 recipes: Sequence[Recipe]) -> dict[str, Any]:
    """Phase 3: train recipe ``trial["recipe"]`` on fold ``trial["fold"]``; its held-out error."""
    index = int(trial["recipe"])
    return selection_trial(prepared, recipes[index], int(trial["fold"]), context.faults, index=index)


# ------------------------------------------------------------------------------------ the stage


class Stage:
    """Where the search is, for the one line a Ctrl-C prints: what is kept and how to continue.
    ``save_period``: how long before a stop at once the finished trials were last saved (what it may lose)."""

    def __init__(self, run_dir: Path, resume: bool, from_python: bool = False,
                 save_period: str = "at most a second") -> None:
        self.run_dir, self.resume, self.from_python, self.save_period = run_dir, resume, from_python, save_period
        self.started = resume  # config.json is written: there is a run to continue
        self.phase = ""
        self.finished = ""  # the last phase that finished, which a Ctrl-C between two phases names
        self.progress: Progress | None = None
        self.noun = ""
        self.kept: list[str] = []
        self.stop_saved = False  # a Ctrl-C's stop has written what finished: only Ray's shutdown is left

    def enter(self, phase: str, progress: Progress | None = None, noun: str = "") -> None:
        self.phase, self.progress, self.noun = phase, progress, noun

    def done(self, what: str) -> None:
        """The current phase finished; ``what`` names what it keeps."""
        self.kept.append(what)
        self.phase, self.finished, self.progress = "", self.phase, None

    def interrupted(self) -> SearchInterrupted:
        """The exception a Ctrl-C ends the search with now: the line, the run's folder, whether it resumes."""
        return SearchInterrupted(self.message(), self.run_dir, self.started)

    def message(self, at_once: str = "") -> str:
        """The line for a Ctrl-C now; ``at_once``: what stopped the search at once ("SIGTERM"), which is said
        unless the stop had already saved (then only Ray's shutdown was cut short, and nothing is lost)."""
        if not self.started:
            return (f"search interrupted before it started; nothing was written to {self.run_dir}: run the same "
                    "command again")
        lost_last = bool(at_once) and not self.stop_saved  # the trials finished since the last save run again
        kept = list(self.kept)
        if self.progress is not None and self.progress.done:
            kept.append(f"{'up to ' if lost_last else ''}{self.progress.done} of {self.progress.total} {self.noun}")
        if not kept:
            kept.append("the settings" if not self.resume else "every trial finished before")
        where = f" in {self.phase}" if self.phase else f" after {self.finished}" if self.finished else ""
        how = f" (stopped at once by {at_once}: kept as last saved, {self.save_period} before)" if lost_last else ""
        return (f"search interrupted{where}{how}; kept in {self.run_dir}: {', '.join(kept)}; continue with: "
                f"{resume_command(self.run_dir, self.from_python)}")


def count(n: int, noun: str) -> str:
    """``n noun`` with the noun singular for one."""
    return f"{n} {noun}" if n != 1 else f"{n} {noun.removesuffix('s')}"


# ------------------------------------------------------------------------------------ the phases


def run_phases(prepared: Prepared, run: Run, runner: TrialRunner, stream: TextIO, stage: Stage,
               concurrency: int = 1) -> tuple[Outcome, dict[str, tuple[float, float]]]:
    """Run the phases of the search on ``runner``; what they found and each phase's (start, end) time.
    A Ctrl-C anywhere in them leaves this process's time in its phase, up to the stop, in the cost ledger.

    ``concurrency`` (how many trials the runner runs at once) only appears in the first line printed.
    """
    ledger = Ledger(run.run_dir)
    try:
        return _run_phases(prepared, run, runner, stream, stage, ledger, concurrency)
    except SearchInterrupted:
        ledger.stopped()
        stage.stop_saved = True
        raise
    except SearchFailed as exc:
        record_failure(run.run_dir, str(exc))  # a resume would keep the failed trials and stop again
        where = f"; each failed trial's whole traceback is in the error.txt of its folder under {run.experiments}"
        raise SearchFailed(f"{exc}{where}. What finished is kept in {run.run_dir}, but a resume keeps failed trials "
                           "as they were: fix the cause and start a new run in another folder") from None


def _run_phases(prepared: Prepared, run: Run, runner: TrialRunner, stream: TextIO, stage: Stage, ledger: Ledger,
                concurrency: int) -> tuple[Outcome, dict[str, tuple[float, float]]]:
    config = prepared.config
    costs: dict[str, float] = {}
    spans: dict[str, tuple[float, float]] = {}
    print(f"search {run.run_id}: {len(prepared.data)} images of {config.dataset}, {count(config.splits, 'splits')}, "
          f"model {config.model}{config.start_text()}, space {prepared.space.name}, {config.algorithm}, "
          f"{concurrency} concurrent trial(s); run dir {run.run_dir}", file=stream, flush=True)
    children_budget, recipes_budget = prepared.budgets()
    print(f"training: child models {children_budget}; candidate recipes {recipes_budget}", file=stream, flush=True)
    for note in prepared.data.notes:  # what loading changed, e.g. the size images were resized to and why
        print(f"data: {note}", file=stream, flush=True)

    def run_trials(trials: Trials) -> tuple[list[TrialResult], list[TrialResult]]:
        """One phase's trials on the runner: (succeeded, failed), the ledger kept after each and at the end."""
        progress = Progress(trials.title, trials.total, trials.metric, stream)
        stage.enter(trials.stage, progress, trials.noun)
        results = runner.run(trials, progress, lambda: ledger.record(trials.ledger))
        ledger.record(trials.ledger)
        return [r for r in results if r.ok], [r for r in results if not r.ok]

    # Phase 1: one child model per split; each trial ends with phase 1b, the trained child's domain probe.
    t1 = time.monotonic()
    ledger.start("phase1")
    ok, failed = run_trials(Trials("phase1_children", child_trial, [{"split": s} for s in range(config.splits)],
                                   "phase1", "phase 1: child models", "phase 1 (child models)", "child models",
                                   "da_accuracy"))
    children = sorted([{"split": r.metrics["split"], "status": "ok", "error": "", "trial_id": r.trial_id,
                        **{k: r.metrics[k] for k in ("da_accuracy", "da_loss", "train_seconds", "node_id")}}
                       for r in ok]
                      + [{"split": int(r.config["split"]), "status": "failed", "error": r.error,
                          "trial_id": r.trial_id} for r in failed], key=lambda c: c["split"])
    check_failures("phase 1 (child models)", config.splits,
                   [f"split {c['split']}: {c['error']}" for c in children if c["status"] != "ok"], len(ok))
    sources = {int(r.metrics["split"]): ChildSource(f"{run.run_id}/split{int(r.metrics['split'])}", r.fetch)
               for r in ok if r.fetch is not None}
    costs["phase1_device_s"] = sum(c["train_seconds"] for c in children if c["status"] == "ok")
    stage.done(f"phase 1's {count(len(ok), 'child models')}")

    # Phase 1b: the frozen children said which ops, up to which level, keep this data's classes.
    probes = sorted((r.metrics["probe"] for r in ok), key=lambda p: p["split"])
    fit = fit_domain(probes, prepared.data.num_classes, config.domain_threshold).for_space(prepared.space)
    searched = dataclasses.replace(prepared, space=restrict_space(prepared.space, fit))
    print(f"domain fit: {restriction_text(prepared.space, searched.space, fit)}", file=stream, flush=True)
    costs["phase1b_device_s"] = sum(p["seconds"] for p in probes)

    # Phase 2: candidate policies scored on D_A, one optimiser per usable split and repeat, in the restricted space.
    t2 = time.monotonic()
    spans["phase1"] = (t1, t2)  # as the ledger counts: a phase runs to the next one's start
    ledger.start("phase2")
    streams = Streams(tuple(repeat * config.splits + split for repeat in range(config.repeats)
                            for split in sorted(sources)), config.trials, searched.space)
    ok, failed = run_trials(Trials("phase2_policies", functools.partial(policy_trial, space=searched.space,
                                                                        children=sources),
                                   streams, "phase2", "phase 2: policy trials", "phase 2 (policy trials)",
                                   "policy trials", "reward"))
    names = searched.space.parameter_names()
    rows = [_trial_row(r, config.splits, names) for r in ok + failed]
    rows.sort(key=lambda row: (row["repeat"], row["split"], row["index"]))
    write_trials_csv(run, rows, names)
    check_failures("phase 2 (policy trials)", streams.total,
                   [f"split {r['split']} candidate {r['index']}: {r['error']}" for r in rows if r["status"] != "ok"],
                   len(ok))
    costs["phase2_device_s"] = sum(r["seconds"] for r in rows if r["status"] == "ok")
    stage.done(f"phase 2's {count(len(rows), 'policy trials')}")

    # Phase 3: the candidate recipes trained on the cross-fit folds at the final budget; the stated rule picks.
    t3 = time.monotonic()
    spans["phase2"] = (t2, t3)
    ledger.start("phase3")
    top = top_candidates(rows, searched.space, config.splits, config.repeats, config.top_n)
    merged = merge_top(top)
    baseline = final_baseline(prepared, fit)
    recipes = candidate_recipes(baseline, fit, merged, strengths=config.strengths,
                                flip_from_fit=baseline.hflip and not prepared.baseline.hflip,
                                try_flip=flip_undecided(prepared, fit))
    folds = prepared.first_folds

    def train_recipes(name: str, indices: list[int], fold_range: list[int], title: str,
                      phase: str) -> list[dict[str, Any]]:
        grid = [{"recipe": i, "fold": f} for i in indices for f in fold_range]
        ok, failed = run_trials(Trials(name, functools.partial(recipe_trial, recipes=recipes), grid, "phase3", title,
                                       phase, "recipe trainings"))
        return [{"status": "ok", "error": "", **{k: r.metrics[k] for k in
                                                 ("recipe", "fold", "error", "loss", "train_seconds", "train_images")}}
                for r in ok] + [{"status": "failed", "error": r.error, "recipe": recipes[int(r.config["recipe"])].name,
                                 "fold": int(r.config["fold"])} for r in failed]

    # Raced: every recipe on the first fold, the best share of them (and the standard one) on the others.
    selection = train_recipes("phase3_selection", list(range(len(recipes))), [0],
                              "phase 3: recipe selection, first fold", "phase 3 (recipe selection, first fold)")
    stage.done(f"phase 3's {count(len(selection), 'first-fold trainings')}")
    survivors = race_survivors(prepared, recipes, selection, baseline)
    if survivors:
        rest = train_recipes("phase3_selection_rest", survivors, list(range(1, folds)),
                             "phase 3: recipe selection, other folds", "phase 3 (recipe selection, other folds)")
        selection += rest
        stage.done(f"{count(len(rest), 'trainings')} on the other folds")
    check_failures("phase 3 (recipe selection)", len(recipes) + len(survivors) * (folds - 1),
                   [f"{r['recipe']} fold {r['fold']}: {r['error']}" for r in selection if r["status"] != "ok"],
                   len([f for f in trained_folds(prepared, recipes, selection).values() if len(f) >= folds]))
    # Sequential: while the decision is unclear, another repeat of the folds for the recipes that could clear it.
    while True:
        contenders, fold_range = added_repeat(prepared, recipes, selection, baseline)
        if not contenders:
            break
        repeat = fold_range[0] // config.selection_folds + 1
        added = train_recipes(f"phase3_selection_repeat{repeat}", contenders, fold_range,
                              f"phase 3: recipe selection, repeat {repeat} (decision unclear)",
                              f"phase 3 (recipe selection, repeat {repeat})")
        selection += added
        stage.done(f"{count(len(added), 'trainings')} of repeat {repeat}")
    decision, note = choose_recipe(prepared, recipes, selection, baseline)
    chosen = next(recipe for recipe in recipes if recipe.name == decision.chosen)
    ledger.record("phase3")
    spans["phase3"] = (t3, time.monotonic())
    costs.update({f"{phase}_wall_s": ledger.wall(phase) for phase in ("phase1", "phase2", "phase3")})
    costs["phase3_device_s"] = sum(r["train_seconds"] for r in selection if r["status"] == "ok")
    costs["processes"] = ledger.processes()
    return Outcome(children, probes, fit, rows, top, merged, recipes, selection, decision, chosen, note,
                   costs, ledger.lost), spans


def _trial_row(result: TrialResult, splits: int, names: Sequence[str]) -> dict[str, Any]:
    """A phase-2 trial as a row of trials.csv: where it ran, its scores (empty when it failed), its parameters."""
    stream = int(result.config["stream"])
    row: dict[str, Any] = {"split": stream % splits, "repeat": stream // splits, "index": int(result.config["index"]),
                           "trial_id": result.trial_id, "status": "ok" if result.ok else "failed",
                           "error": result.error}
    for key in TRIAL_METRICS:
        row[key] = result.metrics[key] if result.ok else ""
    row.update({k: result.config[k] for k in names})
    return row
