"""The search's Markdown report (``report.md``) and the summary the command line prints."""

from __future__ import annotations

import math
from collections.abc import Sequence

from policysearch.augment.policy import Policy
from policysearch.search.checks import NO_RESULT
from policysearch.search.config import SearchConfig
from policysearch.search.domain import DomainFit
from policysearch.search.outcome import Candidate, Outcome, SearchResult
from policysearch.search.spaces import SearchSpace
from policysearch.search.selection import (TIE_RULE, TIE_TOLERANCE, Decision, bound_correction, race_share, race_ties,
                                           signed_pp)
from policysearch.wording import counted

__all__ = ["decided_folds", "describe_candidate", "domain_fit_table", "ops_outside_space", "recipe_table", "render_report",
           "stopped_table", "summary_text", "weak_children"]


def _count(n: int) -> str:
    return counted(n, "sub-policy", "sub-policies")


def _subs(policy: Policy) -> str:
    return "; ".join(" + ".join(f"{s.op}(p={s.prob:.2f}, level={s.level:.2f})" for s in sub) for sub in policy)


def describe_candidate(candidate: Candidate) -> str:
    """``split 1, repeat 0, reward 0.9500: Rotate(p=0.70, level=0.40) + Cutout(p=0.30, level=0.50); ...`` on one
    line, as ``Policy.describe`` names an op's probability and level."""
    return f"split {candidate.split}, repeat {candidate.repeat}, reward {candidate.reward:.4f}: {_subs(candidate.policy)}"


def _fmt(x: float, digits: int = 2) -> str:
    return "-" if x is None or x != x else f"{x:.{digits}f}"


def _signed(x: float | None) -> str:
    return "-" if x is None or x != x else signed_pp(x)


def _marks(chosen: bool, reference: bool) -> str:
    marks = [word for word, on in (("chosen", chosen), ("the reference", reference)) if on]
    return f" ({'; '.join(marks)})" if marks else ""


def weak_children(outcome: Outcome, frozen: bool = False) -> str:
    """A warning when child models are within reach of chance (their scores and probes mean little), else '';
    for ``frozen`` backbones it names the weights as a likely cause."""
    from policysearch.search.domain import MIN_SIGNAL

    chance = outcome.fit.chance
    weak = [c["split"] for c in outcome.children
            if c["status"] == "ok" and chance == chance and c["da_accuracy"] - chance < MIN_SIGNAL]
    if not weak:
        return ""
    return (f"the child model(s) of split(s) {', '.join(map(str, weak))} are within {MIN_SIGNAL:g} of chance "
            f"({chance:.2f}): too weak to score policies, so their density scores and op probes mean little and the "
            "decision rests on weak evidence; train longer (--epochs; epochs= in Python) or give more images"
            + ("; with a frozen backbone, its weights may not suit this data: try without --freeze-backbone "
               "(freeze_backbone= in Python)" if frozen else ""))


# TrivialAugmentWide's translations in pixels are a space's TranslateX and TranslateY at other arguments.
_VARIANT_OF = {"TranslateXAbs": "TranslateX", "TranslateYAbs": "TranslateY"}


def domain_fit_table(fit: DomainFit) -> list[str]:
    """report.md's table of the domain fit: per op the retained signal at each probed level and the decision."""
    lines = ["| op | retained at levels | highest level kept |", "|---|---|---|"]
    for op_fit in sorted(fit.ops.values(), key=lambda f: (f.max_level, f.op)):
        levels = ", ".join(f"{lv:g}: {_floor2(r)}" for lv, r in zip(op_fit.levels, op_fit.retained))
        verdict = "**excluded**" if op_fit.excluded else f"{op_fit.max_level:g}"
        if op_fit.op in fit.left_out:
            verdict += f"; **left out of the space**, whose range for it starts at {fit.left_out[op_fit.op]:g}"
        lines.append(f"| {op_fit.op} | {levels} | {verdict} |")
    return lines


def ops_outside_space(space: SearchSpace, recipe: Policy, fit: DomainFit | None = None) -> str:
    """A warning when the chosen ``recipe`` uses ops that ``space`` leaves out, or that the domain ``fit``
    excluded (a space bounds the policies the search proposes; the standard recipes compete as shipped), else ''."""
    used = {step.op for sub in recipe for step in sub}
    allowed = {*space.ops, "Identity"}
    named = {op: _VARIANT_OF.get(op, op) for op in used}  # as the fit (and most spaces) name them
    outside = sorted({named[op] for op in used if op not in allowed and named[op] not in allowed})
    excluded = sorted({named[op] for op in used if fit is not None and not fit.allowed(named[op])} - set(outside))
    if not outside and not excluded:
        return ""
    said = [f"{', '.join(outside)}, which the search space {space.name} leaves out"] if outside else []
    said += [f"{', '.join(excluded)}, which the domain fit excluded (it loses this data's classes at the lowest level "
             "probed)"] if excluded else []
    bounds = "a space and the domain fit bound" if excluded else "a space bounds"
    return (f"the recipe uses {'; and '.join(said)}: {bounds} the policies the search proposes, while torchvision's "
            "recipes and their dials compete with their own ops; where those ops must not touch the data, train with "
            "the best fast_autoaugment recipe of report.md's table, or the merged policy of candidates.json with the "
            "data set's crop and flip")


def recipe_table(recipes: list[str], decision: Decision) -> list[dict[str, object]]:
    """The recipes that trained on every fold (and the failed ones), in ``recipes`` order: mean error, and
    the quantity the rule decides on - this recipe minus the reference, mean and one-sided upper bound."""
    against = {c.candidate: c for c in decision.versus_reference}
    out = []
    for name in recipes:
        if name in decision.stopped:
            continue
        c = against.get(name)
        out.append({"recipe": name, "mean_error": decision.mean_error.get(name), "chosen": name == decision.chosen,
                    "reference": name == decision.reference, "diff": None if c is None else c.mean,
                    "upper": None if c is None else c.upper,
                    "clears": None if c is None or c.upper != c.upper else c.clears})
    return out


def stopped_table(recipes: list[str], decision: Decision) -> list[dict[str, object]]:
    """The recipes stopped before the last fold: how many folds each trained on, its mean error on them, and
    its difference with the reference's mean on the same folds (no part in the decision)."""
    reference = decision.fold_errors.get(decision.reference) or (
        (decision.first_fold[decision.reference],) if decision.reference in decision.first_fold else ())
    rows = []
    for name in recipes:
        if name not in decision.stopped:
            continue
        folds = decision.folds_of(name)
        base = sum(reference[:folds]) / folds if len(reference) >= folds else None
        rows.append({"recipe": name, "folds": folds, "mean_error": decision.stopped[name],
                     "diff": None if base is None else decision.stopped[name] - base})
    return rows


def decided_folds(outcome: Outcome) -> int:
    """The folds the decision rests on: the reference's (every recipe compared trained on them)."""
    errors = outcome.decision.fold_errors.get(outcome.decision.reference)
    return len(errors) if errors else (len({row["fold"] for row in outcome.selection})
                                       or outcome.decision.first_pass or 1)


def _trained_text(outcome: Outcome, folds: int) -> str:
    """``16 on every fold, 8 on the first only, 1 failed``: how many recipes trained on how many folds."""
    decision = outcome.decision
    by_folds: dict[int, int] = {}
    for name in decision.stopped:
        by_folds[decision.folds_of(name)] = by_folds.get(decision.folds_of(name), 0) + 1
    on_all = len(decision.mean_error)
    failed = len(outcome.recipes) - on_all - len(decision.stopped)
    if not by_folds and not failed:
        return "all on every fold"
    parts = [f"{on_all} on every fold" if set(by_folds) <= {1} else f"{on_all} on all {folds}"]
    parts += [f"{count} on {n}" if n > 1 else f"{count} on the first only"
              for n, count in sorted(by_folds.items(), reverse=True)]
    return ", ".join(parts + ([f"{failed} failed"] if failed else []))


def render_report(config: SearchConfig, space_name: str, run_id: str, outcome: Outcome, policy: Policy,
                  budgets: tuple[str, str], pictures: str = "", data_notes: Sequence[str] = (),
                  raced_with: str = "", space_note: str = "") -> str:
    """The whole ``report.md``; ``budgets``: the child models' and the recipes' trainings as they ran
    (:func:`~policysearch.training.train.budget_text`); ``pictures``
    (:func:`~policysearch.search.figures.figures_section`) follows the summary; ``data_notes``: what loading
    changed in the images (the size they were resized to and why), as the search printed it; ``raced_with``:
    the reference recipe the race kept whatever its error (default: the decision's reference)."""
    costs, decision, fit = outcome.costs, outcome.decision, outcome.fit
    ok_trials = [r for r in outcome.trials if r["status"] == "ok"]
    folds = decided_folds(outcome)
    lines = [f"# Search report: {config.dataset}", "",
             f"- result: `policy.json` holds the recipe **{outcome.chosen.name}** ({_count(len(policy))}; "
             f"{policy.baseline.describe()} after the policy)",
             f"- why: {decision.reason}",
             *([f"- **warning:** {weak}"] if (weak := weak_children(outcome, config.freeze_backbone)) else []),
             *([f"- **warning:** {space_note}"] if space_note else []),
             *[f"- data: {note}" for note in data_notes],
             f"- run {run_id}: {len(outcome.recipes)} candidate recipes trained at the final budget, "
             f"{budgets[1]}, on {config.selection_folds} "
             f"cross-fit folds x {counted(folds // config.selection_folds, 'repeat')} ("
             + _trained_text(outcome, folds) + "), compared by paired differences of held-out error",
             f"- Fast AutoAugment: {counted(config.splits, 'split')} x {counted(config.repeats, 'repeat')} x "
             f"{counted(config.trials, 'trial')} "
             f"({config.algorithm}) in space `{space_name}` restricted by the domain fit, the best "
             f"(up to) {min(config.top_n, config.trials)} of each split and repeat kept ({len(outcome.top)} in all, "
             f"{_count(len(outcome.merged))} merged), reward `{config.reward}` over "
             f"{config.num_views} views",
             f"- child model `{config.model}`{config.start_text()}, lr {config.lr:g}, {budgets[0]}",
             f"- trials: {len(ok_trials)} of {len(outcome.trials)} policy trials succeeded; "
             f"{len(outcome.failures())} trial(s) of all phases failed after {config.retries} retries", "",
             *([pictures.rstrip("\n"), ""] if pictures else []),
             *_candidate_section(config, outcome, raced_with or outcome.decision.reference)]
    lines += ["## Domain fit (what this data allows)", ""]
    if fit.note:
        # a flip the fit could not judge is tried by training where the data set does not flip on its own
        flips = {r.recipe.baseline.hflip for r in outcome.recipes}
        lines += [f"Nothing was excluded: {fit.note}."
                  + (" The flip is left to training: the baseline alone and the reference are also tried with it."
                     if "FlipLR" in fit.unjudged and len(flips) > 1 else ""), ""]
    else:
        lines += [f"Each op was applied at probability 1 to D_A and classified by the frozen children; retained = "
                  f"(accuracy - chance) / (clean accuracy - chance), clean accuracy {fit.clean_accuracy:.3f}, chance "
                  f"{fit.chance:.3f}. An op keeps the levels up to the last probed level with retained >= "
                  f"{fit.threshold:g}: that level bounds it in the Fast AutoAugment space, and an op failing at the "
                  "lowest level is excluded from the space and from every candidate but torchvision's RandAugment() "
                  "and TrivialAugmentWide() as shipped (the standard recipes keep their own levels of the ops "
                  "kept). Retained values are rounded down, so that one below the threshold never shows as on it.",
                  "", *domain_fit_table(fit), ""]
    lines += ["## Child models (accuracy on clean D_A: no policy, no baseline)", "", "| split | status | D_A accuracy | chance | train (s) | node |",
              "|---|---|---|---|---|---|"]
    chance = fit.chance
    for c in outcome.children:
        if c["status"] == "ok":
            lines.append(f"| {c['split']} | ok | {c['da_accuracy']:.4f} | {_fmt(chance, 4)} | {c['train_seconds']:.1f} "
                         f"| {c.get('node_id') or '-'} |")
        else:
            lines.append(f"| {c['split']} | failed | - | - | - | - |")
    weak = weak_children(outcome, config.freeze_backbone)
    if weak:
        lines += ["", f"**Warning:** {weak}."]
    one = costs.get("one_final_training_s", float("nan"))
    total = costs.get("total_device_s", float("nan"))
    lines += ["", "## Cost", "", "| phase | wall (s) | device (s) |", "|---|---|---|",
              f"| 1: child models (wall with 1b) | {costs['phase1_wall_s']:.1f} | {costs['phase1_device_s']:.1f} |",
              f"| 1b: domain fit (at the end of each phase-1 trial) | - | {costs['phase1b_device_s']:.1f} |",
              f"| 2: policy trials | {costs['phase2_wall_s']:.1f} | {costs['phase2_device_s']:.1f} |",
              f"| 3: recipe selection | {costs['phase3_wall_s']:.1f} | {costs['phase3_device_s']:.1f} |", "",
              f"The whole search took {_fmt(total, 1)} device seconds, {_fmt(total / one, 1)} times the estimated time "
              f"of one final training on all the images ({_fmt(one, 1)} s: the selection's trainings, scaled to all "
              "the images)."
              + _processes_text(int(costs.get("processes", 1)))
              + (f" **Warning:** {outcome.cost_note}." if outcome.cost_note else ""), "",
              "## Best Fast AutoAugment candidates", "", "| split | repeat | reward | sub-policies |", "|---|---|---|---|"]
    for candidate in outcome.top[:10]:
        lines.append(f"| {candidate.split} | {candidate.repeat} | {candidate.reward:.4f} | {_subs(candidate.policy)} |")
    failures = outcome.failures()
    if failures:
        stopped = any(line.endswith(NO_RESULT) for line in failures)
        lines += ["", "## Failed trials", "", f"Each was retried {config.retries} times; the search went on without it. "
                  "The trial's folder in the run's storage (`tune/` in the run folder unless "
                  "`--storage`, `storage=` in Python, was given) holds its whole traceback in `error.txt`"
                  + (f". Except those that say \"{NO_RESULT}\": a Ctrl-C stopped them, so they were not retried and "
                     "have no error.txt" if stopped else "") + ".", ""]
        lines += [f"- {line}" for line in failures]
    return "\n".join(lines) + "\n"


def _processes_text(processes: int) -> str:
    if processes <= 1:
        return ""
    return (f" The run was worked on by {processes} processes (it was stopped and resumed): each wall time is the "
            "sum of theirs, each device time the sum over every trial they finished.")


def _floor2(value: float) -> str:
    """``value`` rounded down to 2 decimals: 0.4951 is 0.49, never the 0.50 of a threshold it misses."""
    return f"{math.floor(value * 100 + 1e-9) / 100:.2f}" if math.isfinite(value) else f"{value}"


def _reference_text(outcome: Outcome) -> str:
    """What the reference is: torchvision's RandAugment(), or the recipe that stood in for it and why."""
    return ("standing in for torchvision's RandAugment() without the crop, which failed on a fold" if outcome.note
            else "torchvision's RandAugment(), no crop")


def _candidate_section(config: SearchConfig, outcome: Outcome, raced_with: str) -> list[str]:
    """The candidate recipes: the rule, a table of the quantity it decides on, and the recipes the race
    stopped after the first fold in a table of their own."""
    decision = outcome.decision
    names = [recipe.name for recipe in outcome.recipes]
    folds = decided_folds(outcome)
    level = f"{decision.confidence:.0%}"
    others = ": the others are listed apart below" if decision.stopped else ""
    among = (f" over all {folds} folds (after the first {decision.first_pass}, the repeats added for the recipes "
             f"that could still clear the noise{others})" if 0 < decision.first_pass < folds else "")
    lines = ["## Candidate recipes", "",
             f"The rule: the recipe with the lowest mean held-out error{among} replaces the reference, "
             f"{decision.reference} "
             f"({_reference_text(outcome)}), only when the {level} one-sided upper bound on (its error - the "
             "reference's) is below 0. The table gives that quantity for every recipe that trained on "
             f"{'both' if folds == 2 else f'all {folds}'} folds (the same folds and seeds for each): the mean "
             f"difference and its upper bound, {bound_correction(decision.held_out)}; negative means a lower error "
             "than the reference.", "",
             f"| recipe | mean held-out error % ({folds} folds) | this - reference (pp) | "
             f"{level} one-sided upper bound (pp) | beyond the noise (bound < 0) |", "|---|---|---|---|---|"]
    for row in recipe_table(names, decision):
        mark = _marks(bool(row["chosen"]), bool(row["reference"]))
        if row["mean_error"] is None:
            lines.append(f"| {row['recipe']} | failed | - | - | - |")
        elif row["reference"]:
            lines.append(f"| {row['recipe']}{mark} | {row['mean_error']:.2f} | 0 | - | the reference |")
        else:
            verdict = "-" if row["clears"] is None else ("yes" if row["clears"] else "no")
            if row["clears"] and row["recipe"] != decision.best:  # the rule tests one recipe: no multiple testing
                tied = abs(float(row["mean_error"]) - decision.mean_error[decision.best]) <= TIE_TOLERANCE
                verdict = (f"yes, but tied on the mean with {decision.best}, listed first, which the rule tests"
                           if tied else "yes, but the rule tests only the lowest mean")
            lines.append(f"| {row['recipe']}{mark} | {row['mean_error']:.2f} | {_signed(row['diff'])} | "
                         f"{_signed(row['upper'])} | {verdict} |")
    stopped = stopped_table(names, decision)
    raced = [row for row in stopped if row["folds"] == 1]
    if raced:
        keep = config.selection_keep
        cut, tied = race_ties(decision.first_fold, names, keep, decision.race_margin, raced_with)
        ties = (f"; here {tied} more recipe(s) tied at the cut ({cut:.2f}%) went on by that rule alone" if tied
                else "; here that rule kept none the others did not")
        lines += ["", "### Stopped after the first fold", "",
                  f"Every recipe trained on the first fold; the best {keep:.0%} on it "
                  f"({race_share(keep, len(names))} of {len(names)}), every one within one fold's noise of the best "
                  f"({decision.race_margin:.1f} pp), the reference, and - the tie rule - "
                  f"{TIE_RULE}{ties}. "
                  + (f"These {len(raced)} did not go on: each value is that one fold's error" if len(raced) > 1 else
                     "This one did not go on: its value is that one fold's error")
                  + f", not a mean over the {folds} folds, so it is not comparable with the means above, and "
                  + ("they take" if len(raced) > 1 else "it takes") + " no part in the decision.", "",
                  "| recipe | first-fold held-out error % | this - reference on the first fold (pp) |", "|---|---|---|"]
        lines += [f"| {row['recipe']} | {row['mean_error']:.2f} | {_signed(row['diff'])} |" for row in raced]
    left = [row for row in stopped if row["folds"] > 1]
    if left:
        first = decision.first_pass
        lines += ["", "### Left out of the added repeats", "",
                  f"After the first {first} folds the decision was unclear: the lowest mean error was not the "
                  "reference's and its bound did not clear the noise. A repeat of the cross-fit was added, while the "
                  "decision stayed unclear, for the recipes that beat the reference on the mean and whose bound would "
                  f"fall below 0 with {config.selection_folds} more folds if their mean and spread held, and for the "
                  f"reference (within --selection-extra {config.selection_extra:g}, selection_extra= in Python, "
                  f"times the first pass's trainings). These {len(left)} did not go on: each value is a mean over "
                  "the folds it trained on, against the reference's on the same folds; they take no part in the "
                  "decision.", "",
                  "| recipe | folds | mean held-out error % on them | this - reference on the same folds (pp) |",
                  "|---|---|---|---|"]
        failed = {r["recipe"]: r["fold"] for r in outcome.selection if r["status"] != "ok" and r["fold"] >= first}
        lines += [f"| {row['recipe']}"
                  + (f" (failed on fold {failed[row['recipe']]}, counted up to its last whole repeat)"
                     if row["recipe"] in failed else "")
                  + f" | {row['folds']} | {row['mean_error']:.2f} | {_signed(row['diff'])} |" for row in left]
    return lines + [""]


def summary_text(result: SearchResult, limit: int = 3) -> str:
    """What ``policysearch search`` prints at the end: where the recipe is, what it is and why."""
    from policysearch.search.figures import FILES

    c, decision = result.costs, result.decision
    pictures = [name for name in FILES if (result.run_dir / name).is_file()]
    name = result.chosen.name if result.chosen else result.policy.metadata.get("recipe", {}).get("name") or \
        result.policy.name
    processes = int(c.get("processes", 1))
    lines = [f"complete: the search in {result.run_dir} had already finished; this resume ran nothing and changed "
             "no file" if result.already_complete else ""]
    if result.failures:
        lines.append(f"failed trials: {len(result.failures)} (listed in report.md); first: {result.failures[0]}")
    if result.top:  # phase 2's candidates, before the recipe the selection chose among them and the others
        lines.append("best Fast AutoAugment candidates by reward (merged in candidates.json):")
        lines += [f"  {k + 1}. {describe_candidate(candidate)}" for k, candidate in enumerate(result.top[:limit])]
    lines += [f"policy: {result.policy_path} - recipe {name} ({_count(len(result.policy))}, "
              f"{result.policy.baseline.describe()})",
              f"why: {decision.reason}" if decision else "",
              *[f"warning: {warning}" for warning in result.warnings],
              f"report: {result.run_dir / 'report.md'} (run {result.run_id})" + (
                  f" with pictures {', '.join(pictures)} beside it" if pictures else ""),
              f"cost: phase 1 (with 1b) {c['phase1_wall_s']:.0f} s, phase 2 "
              f"{c['phase2_wall_s']:.0f} s, phase 3 {c['phase3_wall_s']:.0f} s wall"
              + (f", summed over the {processes} processes that worked on the run" if processes > 1 else ""),
              f"use it: from policysearch import PolicyTransform; PolicyTransform.from_json("
              f"{str(result.policy_path)!r}) augments each image (BatchPolicyTransform a batch; README: Use a "
              "policy in your training code)"]
    return "\n".join(line for line in lines if line)
