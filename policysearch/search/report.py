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


def render_report(config: SearchConfig, space_name: str, run_id: str, outcome: Outcome, policy: Policy) -> str:
    """The whole ``report.md``."""
    costs, decision = outcome.costs, outcome.decision
    ok_trials = [r for r in outcome.trials if r["status"] == "ok"]
    lines = [f"# Search report: {config.dataset}, space {space_name}", "",
             f"- result: `policy.json` holds {decision.describe()} ({_count(len(policy))})",
             f"- run {run_id}: {config.splits} splits x {config.repeats} repeat(s) x {config.trials} trials "
             f"({config.algorithm}), top {config.top_n} kept per split and repeat ({len(outcome.merged)} "
             f"sub-policies merged), reward `{config.reward}` over {config.num_views} views",
             f"- child model `{config.model}`, {config.epochs} epochs",
             f"- trials: {len(ok_trials)} of {len(outcome.trials)} policy trials succeeded; "
             f"{len(outcome.failures())} trial(s) of all phases failed after {config.retries} retries", "",
             "## Cost", "", "| phase | wall (s) | device (s) |", "|---|---|---|",
             f"| 1: child models | {costs['phase1_wall_s']:.1f} | {costs['phase1_device_s']:.1f} |",
             f"| 2: policy trials | {costs['phase2_wall_s']:.1f} | {costs['phase2_device_s']:.1f} |",
             f"| 3: merge and check strength | {costs['phase3_wall_s']:.1f} | {costs['phase3_device_s']:.1f} |", ""]
    if decision.checked:
        lines += ["## Strength of the merged policy (held-out accuracy after training on D_M with it)", "",
                  "| strength | mean D_A accuracy | mean D_A loss | splits |", "|---|---|---|---|"]
        lines += [f"| {row['strength']:g}{' (baseline only)' if row['strength'] == 0 else ''} | "
                  f"{row['da_accuracy']:.4f} | {row['da_loss']:.4f} | {row['splits']} |" for row in decision.summary]
        lines.append("")
    else:
        lines += ["## Strength of the merged policy", "", "Not checked (`--strengths` was given no values): "
                  "`policy.json` holds the merged candidates at full strength.", ""]
    lines += ["## Child models (accuracy on D_A without a policy)", "", "| split | status | D_A accuracy | train (s) |",
              "|---|---|---|---|"]
    for c in outcome.children:
        if c["status"] == "ok":
            lines.append(f"| {c['split']} | ok | {c['da_accuracy']:.4f} | {c['train_seconds']:.1f} |")
        else:
            lines.append(f"| {c['split']} | failed | - | - |")
    lines += ["", "## Best candidates", "", "| split | repeat | reward | sub-policies |", "|---|---|---|---|"]
    for candidate in outcome.top[:10]:
        lines.append(f"| {candidate.split} | {candidate.repeat} | {candidate.reward:.4f} | {_subs(candidate.policy)} |")
    failures = outcome.failures()
    if failures:
        lines += ["", "## Failed trials", "", f"Each was retried {config.retries} times; the search went on without it.",
                  ""]
        lines += [f"- {line}" for line in failures]
    return "\n".join(lines) + "\n"


def summary_text(result: SearchResult, limit: int = 3) -> str:
    """What ``policysearch search`` prints at the end: where the policy is, what it is, the best candidates."""
    c, decision = result.costs, result.decision
    lines = [f"policy: {result.policy_path} ({_count(len(result.policy))}): {decision.describe()}",
             f"report: {result.run_dir / 'report.md'} (run {result.run_id})",
             f"cost: phase 1 {c['phase1_wall_s']:.0f} s, phase 2 {c['phase2_wall_s']:.0f} s, "
             f"phase 3 {c['phase3_wall_s']:.0f} s wall"]
    if result.failures:
        lines.append(f"failed trials: {len(result.failures)} (listed in report.md); first: {result.failures[0]}")
    where = ("candidates.json" if decision.kept_baseline else "policy.json")
    lines.append(f"best candidates by reward (their sub-policies are in {where}):")
    lines += [f"  {k + 1}. {describe_candidate(candidate)}" for k, candidate in enumerate(result.top[:limit])]
    return "\n".join(lines)

