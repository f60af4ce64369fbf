"""The search's Markdown report (``report.md``) and the summary the command line prints."""

from __future__ import annotations

from policysearch.policy import Policy
from policysearch.search.config import SearchConfig
from policysearch.search.outcome import Candidate, Outcome, SearchResult

__all__ = ["describe_candidate", "render_report", "summary_text"]


def _count(n: int) -> str:
    return f"{n} sub-policy" if n == 1 else f"{n} sub-policies"


def _subs(policy: Policy) -> str:
    return "; ".join(" + ".join(f"{s.op}({s.prob:.2f}, {s.level:.2f})" for s in sub) for sub in policy)


def describe_candidate(candidate: Candidate) -> str:
    """``split 1, repeat 0, reward 0.9500: Rotate(0.70, 0.40) + Cutout(0.30, 0.50); ...`` on one line."""
    return f"split {candidate.split}, repeat {candidate.repeat}, reward {candidate.reward:.4f}: {_subs(candidate.policy)}"


def _fmt(x: float, digits: int = 2) -> str:
    return "-" if x is None or x != x else f"{x:.{digits}f}"


def render_report(config: SearchConfig, space_name: str, run_id: str, outcome: Outcome, policy: Policy,
                  pictures: str = "") -> str:
    """The whole ``report.md``; ``pictures`` (:func:`~policysearch.search.figures.figures_section`) follows the
    summary."""
    from policysearch.domain import MIN_SIGNAL

    costs, decision, fit = outcome.costs, outcome.decision, outcome.fit
    ok_trials = [r for r in outcome.trials if r["status"] == "ok"]
    folds = len({(r["fold"]) for r in outcome.selection}) or config.selection_folds
    lines = [f"# Search report: {config.dataset}", "",
             f"- result: `policy.json` holds the recipe **{outcome.chosen.name}** ({_count(len(policy))}; "
             f"{policy.baseline.describe()} after the policy)",
             f"- why: {decision.reason}" + (f" ({outcome.note})" if outcome.note else ""),
             f"- run {run_id}: {len(outcome.recipes)} candidate recipes trained at the final budget "
             f"({config.final_epochs or config.epochs} epochs, adapted to tiny data) on {config.selection_folds} "
             f"cross-fit folds x {folds // config.selection_folds} repeat(s) ("
             + (f"{len(outcome.recipes) - len(decision.stopped)} on every fold, the others on the first only"
                if decision.stopped else "all on every fold")
             + "), compared by paired differences of held-out error",
             f"- Fast AutoAugment: {config.splits} splits x {config.repeats} repeat(s) x {config.trials} trials "
             f"({config.algorithm}) in space `{space_name}` restricted by the domain fit, top {config.top_n} kept per "
             f"split and repeat ({len(outcome.merged)} sub-policies merged), reward `{config.reward}` over "
             f"{config.num_views} views",
             f"- child model `{config.model}`, {config.epochs} epochs (more on tiny data)",
             f"- trials: {len(ok_trials)} of {len(outcome.trials)} policy trials succeeded; "
             f"{len(outcome.failures())} trial(s) of all phases failed after {config.retries} retries", "",
             *([pictures.rstrip("\n"), ""] if pictures else []),
             "## Candidate recipes", "",
             (f"Held-out error over the same {folds} folds and seeds for every recipe that went on after the first "
              f"fold (the best {config.selection_keep:.0%} on it, every one within the first fold's noise of the best, and the reference); the others stopped there "
              "and show that fold's error. " if decision.stopped else
              f"Held-out error over the same {folds} folds and seeds for every recipe. ") +
             f"The difference is the chosen recipe minus the row's, with a {config.confidence:.0%} interval corrected "
             "for overlapping training sets (negative: the chosen one has the lower error).", "",
             "| recipe | mean held-out error % | chosen - this (pp) |", "|---|---|---|"]
    against = {c.candidate if c.candidate != decision.chosen else c.reference: c for c in decision.comparisons}
    for recipe in outcome.recipes:
        mean = decision.mean_error.get(recipe.name, decision.stopped.get(recipe.name))
        if mean is None:
            lines.append(f"| {recipe.name} | failed | - |")
            continue
        mark = " (chosen)" if recipe.name == decision.chosen else (" (reference)" if recipe.name == decision.reference
                                                                   else "")
        c = against.get(recipe.name)
        if recipe.name in decision.stopped:
            diff = "-" if c is None else f"{c.mean:+.2f} (first fold)"
            lines.append(f"| {recipe.name} (stopped after the first fold) | {mean:.2f} (first fold) | {diff} |")
            continue
        diff = "-" if c is None else f"{c.mean:+.2f} [{_fmt(c.low)}, {_fmt(c.high)}]"
        lines.append(f"| {recipe.name}{mark} | {mean:.2f} | {diff} |")
    lines += ["", "## Domain fit (what this data allows)", ""]
    if fit.note:
        lines += [f"Nothing was excluded: {fit.note}.", ""]
    else:
        lines += [f"Each op was applied at probability 1 to D_A and classified by the frozen children; retained = "
                  f"(accuracy - chance) / (clean accuracy - chance), clean accuracy {fit.clean_accuracy:.3f}, chance "
                  f"{fit.chance:.3f}. An op keeps the levels up to the last probed level with retained >= "
                  f"{fit.threshold:g}: that level bounds it in the Fast AutoAugment space, and an op failing at the "
                  "lowest level is excluded from the space and from every candidate but TrivialAugment as "
                  "published, the reference (TrivialAugment and RandAugment keep their own levels of the ops kept).", "", "| op | retained at levels | highest level in the search space |",
                  "|---|---|---|"]
        for op_fit in sorted(fit.ops.values(), key=lambda f: (f.max_level, f.op)):
            levels = ", ".join(f"{lv:g}: {r:.2f}" for lv, r in zip(op_fit.levels, op_fit.retained))
            verdict = "**excluded**" if op_fit.excluded else f"{op_fit.max_level:g}"
            lines.append(f"| {op_fit.op} | {levels} | {verdict} |")
        lines.append("")
    lines += ["## Child models (accuracy on D_A without a policy)", "", "| split | status | D_A accuracy | chance | train (s) | node |",
              "|---|---|---|---|---|---|"]
    chance = fit.chance
    weak = []
    for c in outcome.children:
        if c["status"] == "ok":
            lines.append(f"| {c['split']} | ok | {c['da_accuracy']:.4f} | {_fmt(chance, 4)} | {c['train_seconds']:.1f} "
                         f"| {c.get('node_id') or '-'} |")
            if chance == chance and c["da_accuracy"] - chance < MIN_SIGNAL:
                weak.append(c["split"])
        else:
            lines.append(f"| {c['split']} | failed | - | - | - | - |")
    if weak:
        lines += ["", f"**Warning:** the child(ren) of split(s) {', '.join(map(str, weak))} are within {MIN_SIGNAL:g} of "
                  "chance: too weak to score policies; their density scores and op probes mean little. Train longer "
                  "(--epochs) or give more images."]
    one = costs.get("one_final_training_s", float("nan"))
    total = costs.get("total_device_s", float("nan"))
    lines += ["", "## Cost", "", "| phase | wall (s) | device (s) |", "|---|---|---|",
              f"| 1: child models (wall with 1b) | {costs['phase1_wall_s']:.1f} | {costs['phase1_device_s']:.1f} |",
              f"| 1b: domain fit (at the end of each phase-1 trial) | - | {costs['phase1b_device_s']:.1f} |",
              f"| 2: policy trials | {costs['phase2_wall_s']:.1f} | {costs['phase2_device_s']:.1f} |",
              f"| 3: recipe selection | {costs['phase3_wall_s']:.1f} | {costs['phase3_device_s']:.1f} |", "",
              f"The whole search took {_fmt(total, 1)} device seconds, {_fmt(total / one, 1)} times one final training "
              f"on all the images ({_fmt(one, 1)} s, estimated from the selection's trainings).", "",
              "## Best Fast AutoAugment candidates", "", "| split | repeat | reward | sub-policies |", "|---|---|---|---|"]
    for candidate in outcome.top[:10]:
        lines.append(f"| {candidate.split} | {candidate.repeat} | {candidate.reward:.4f} | {_subs(candidate.policy)} |")
    failures = outcome.failures()
    if failures:
        lines += ["", "## Failed trials", "", f"Each was retried {config.retries} times; the search went on without it.",
                  ""]
        lines += [f"- {line}" for line in failures]
    return "\n".join(lines) + "\n"


def summary_text(result: SearchResult, limit: int = 3) -> str:
    """What ``policysearch search`` prints at the end: where the recipe is, what it is and why."""
    from policysearch.search.figures import FILES

    c, decision = result.costs, result.decision
    pictures = [name for name in FILES if (result.run_dir / name).is_file()]
    name = result.chosen.name if result.chosen else result.policy.name
    lines = [f"policy: {result.policy_path} - recipe {name} ({_count(len(result.policy))}, "
             f"{result.policy.baseline.describe()})",
             f"why: {decision.reason}" if decision else "",
             f"report: {result.run_dir / 'report.md'} (run {result.run_id})" + (
                 f" with pictures {', '.join(pictures)} beside it" if pictures else ""),
             f"cost: phase 1 (with 1b) {c['phase1_wall_s']:.0f} s, phase 2 "
             f"{c['phase2_wall_s']:.0f} s, phase 3 {c['phase3_wall_s']:.0f} s wall"]
    if result.failures:
        lines.append(f"failed trials: {len(result.failures)} (listed in report.md); first: {result.failures[0]}")
    lines.append("best Fast AutoAugment candidates by reward (merged in candidates.json):")
    lines += [f"  {k + 1}. {describe_candidate(candidate)}" for k, candidate in enumerate(result.top[:limit])]
    return "\n".join(line for line in lines if line)
