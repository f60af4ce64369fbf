"""Writing a search's results: ``trials.csv``, ``candidates.json``, ``selection.csv``, the pictures, ``report.md``
and, last, ``policy.json``.

Every file is written atomically, and ``policy.json`` comes last: a run directory with a
``policy.json`` holds a complete export, and a search killed on the way leaves none (``--resume``
writes it).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from policysearch.atomic import write_text_atomic
from policysearch.augment.policy import Policy
from policysearch.invocation import command_line
from policysearch.search.config import SearchConfig
from policysearch.search.faults import Faults
from policysearch.search.figures import draw_figures, figures_section
from policysearch.search.candidates import Recipe, reference_name
from policysearch.search.outcome import Candidate, Outcome, SearchResult
from policysearch.search.report import ops_outside_space, render_report, weak_children
from policysearch.search.recipes import final_baseline, one_final_training_seconds
from policysearch.search.rundir import CONFIG_FILE, Run, check_resume
from policysearch.search.prepare import Prepared
from policysearch.search.selection import Decision

TOP_FILE = "top.json"  # the best phase-2 candidates, for a resume of the finished run

__all__ = ["TRIAL_COLUMNS", "export", "finished_on_resume", "finished_run", "write_trials_csv"]

# trials.csv: these first, then the search space's parameters.
TRIAL_COLUMNS = ("split", "repeat", "index", "trial_id", "status", "error", "reward", "accuracy", "any_view", "loss",
                 "min_loss", "seconds", "load_seconds", "child_cached", "data_seconds", "node_id")


def write_trials_csv(run: Run, rows: Sequence[dict[str, Any]], parameters: Sequence[str]) -> None:
    """One row per phase-2 trial; a failed trial has status ``failed``, its error and no scores."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*TRIAL_COLUMNS, *parameters], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(run.run_dir / "trials.csv", buffer.getvalue())


def write_selection_csv(run: Run, rows: Sequence[dict[str, Any]]) -> None:
    """One row per phase-3 training: recipe, fold, held-out error (%) and loss, or the error of a failed one."""
    buffer = io.StringIO()
    columns = ("recipe", "fold", "status", "error", "held_out_error", "held_out_loss", "train_seconds", "train_images")
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        ok = r["status"] == "ok"
        writer.writerow({"recipe": r["recipe"], "fold": r["fold"], "status": r["status"],
                         "error": "" if ok else r["error"], "held_out_error": r["error"] if ok else "",
                         "held_out_loss": r.get("loss", ""), "train_seconds": r.get("train_seconds", ""),
                         "train_images": r.get("train_images", "")})
    write_text_atomic(run.run_dir / "selection.csv", buffer.getvalue())


def _provenance(run: Run) -> dict[str, str]:
    """The command that started the run (its config.json's) and, when another one finished it, that one."""
    now = command_line()
    try:
        started = str(json.loads((run.run_dir / CONFIG_FILE).read_text(encoding="utf-8"))["command"])
    except (OSError, ValueError, KeyError, TypeError):  # no config.json: a run made by hand (tests)
        started = now
    return {"command": started, **({"resumed_by": now} if now != started else {})}


def export(prepared: Prepared, run: Run, outcome: Outcome, faults: Faults = Faults()) -> SearchResult:
    """Write the merged candidates, the selection, the report and, last, the chosen recipe with its provenance."""
    config, decision, costs, chosen = prepared.config, outcome.decision, outcome.costs, outcome.chosen
    phases = ("phase1", "phase1b", "phase2", "phase3")
    costs["total_device_s"] = sum(costs.get(f"{p}_device_s", 0.0) for p in phases)
    costs["one_final_training_s"] = one_final_training_seconds(outcome.selection, len(prepared.data))
    children = [c for c in outcome.children if c["status"] == "ok"]
    space_note = ops_outside_space(prepared.space, chosen.recipe, outcome.fit)
    warnings = [w for w in (weak_children(outcome, config.freeze_backbone), space_note, outcome.cost_note) if w]
    metadata = {
        "dataset": config.dataset,
        "search_space": prepared.space.name,
        "run_id": run.run_id,
        "recipe": {**chosen.to_dict(), "reason": decision.reason},
        "score": {"reward": config.reward, "top_mean": float(np.mean([c.reward for c in outcome.top])),
                  "child_da_accuracy_without_policy": float(np.mean([c["da_accuracy"] for c in children])),
                  "child_da_accuracy_by_split": {str(c["split"]): float(c["da_accuracy"]) for c in children},
                  "selection": decision.to_dict()},
        "domain_fit": outcome.fit.to_dict(),
        "failed_trials": outcome.failures(),
        "warnings": warnings,
        "data_notes": list(prepared.data.notes),  # what loading changed, e.g. the size images were resized to
        "image_size": int(prepared.data.images.shape[-1]),  # the side trained at: pad_crop is in its pixels
        "search_cost": {k: round(v, 3) for k, v in costs.items()},
        "search": {k: v for k, v in asdict(config).items() if k not in ("address", "storage", "dashboard")},
        **({"weights_digest": prepared.weights_digest} if prepared.weights_digest else {}),  # which weights, not a path
        **_provenance(run),
    }
    name = f"policysearch-{config.dataset}"
    # the chosen recipe and the selection describe policy.json, not these candidates
    merged = {**{k: v for k, v in metadata.items() if k != "recipe"},
              "score": {k: v for k, v in metadata["score"].items() if k != "selection"},
              "note": "the merged Fast AutoAugment candidates before the recipe selection, without a baseline"}
    Policy(outcome.merged.sub_policies, merged, name=f"{name}-fast_autoaugment-candidates").save(
        run.run_dir / "candidates.json")
    top = [{"split": c.split, "repeat": c.repeat, "reward": c.reward, "trial_id": c.trial_id,
            "policy": c.policy.to_dict()} for c in outcome.top]  # what a resume of the finished run returns
    write_text_atomic(run.run_dir / TOP_FILE, json.dumps({"top": top}, separators=(",", ":")) + "\n")
    faults.reach("export", after="candidates.json")
    write_selection_csv(run, outcome.selection)
    policy = Policy(chosen.recipe.sub_policies, metadata, name=f"{name}: {chosen.name}", baseline=chosen.recipe.baseline,
                    ranges=chosen.recipe.ranges)
    figures, notes = draw_figures(run.run_dir, policy=policy, data=prepared.data)
    raced_with = reference_name(final_baseline(prepared, outcome.fit))  # the reference the race kept
    write_text_atomic(run.run_dir / "report.md", render_report(config, prepared.space.name, run.run_id, outcome, policy,
                                                               prepared.budgets(), figures_section(figures, notes),
                                                               prepared.data.notes, raced_with, space_note))
    faults.reach("export", after="report.md")
    policy_path = policy.save(run.run_dir / "policy.json")
    return SearchResult(run.run_dir, run.run_id, policy_path, policy, costs, outcome.top, decision, outcome.failures(),
                        chosen=chosen, warnings=warnings)


def finished_run(run_dir: Path) -> SearchResult | None:
    """What the finished run in ``run_dir`` found, read from its ``policy.json`` (written last, so it means
    the run is complete); None when the run is not finished. Nothing is written."""
    path = Path(run_dir) / "policy.json"
    if not path.is_file():
        return None
    policy = Policy.load(path)
    meta = policy.metadata
    selection = meta.get("score", {}).get("selection")
    decision = Decision.from_dict(selection) if selection else None
    recipe = meta.get("recipe")
    chosen = Recipe(str(recipe["name"]), str(recipe.get("family", "")), policy, recipe.get("strength")) \
        if isinstance(recipe, dict) and "name" in recipe else None
    return SearchResult(Path(run_dir), str(meta.get("run_id", "")), path, policy, dict(meta.get("search_cost", {})),
                        top=_stored_top(Path(run_dir)), decision=decision, failures=list(meta.get("failed_trials", [])),
                        chosen=chosen, warnings=list(meta.get("warnings", [])), already_complete=True)


def _stored_top(run_dir: Path) -> list[Candidate]:
    """The best phase-2 candidates as ``top.json`` keeps them; none from a run exported before it was written,
    or when it is damaged: ``policy.json`` alone answers a resume of a finished run."""
    try:
        stored = json.loads((run_dir / TOP_FILE).read_text(encoding="utf-8"))["top"]
        return [Candidate(int(c["split"]), int(c["repeat"]), float(c["reward"]),
                          Policy.from_dict(c["policy"], source=f"{run_dir / TOP_FILE}: top"), str(c.get("trial_id", "")))
                for c in stored]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # PolicyError is a ValueError
        return []


def finished_on_resume(config: SearchConfig, run_dir: Path, resume: bool) -> SearchResult | None:
    """On a resume, what the finished run in ``run_dir`` found (None while it has work left), after refusing
    an option that contradicts the run, finished or not; None on a plain run."""
    if not resume:
        return None
    done = finished_run(run_dir)
    check_resume(config, run_dir, finished=done is not None)
    return done
