"""What a search found, as plain data: the input of the export and the report, and what ``run_search`` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from policysearch.policy import Policy, merge_policies
from policysearch.search.strength import Decision
from policysearch.spaces import SearchSpace

__all__ = ["Candidate", "Outcome", "SearchResult", "merge_top", "top_candidates"]


@dataclass(frozen=True)
class Candidate:
    """One phase-2 candidate policy with its reward."""

    split: int
    repeat: int
    reward: float
    policy: Policy
    trial_id: str = ""


@dataclass
class Outcome:
    """Everything the phases produced. Rows are dicts with a ``status`` of ``ok`` or ``failed``."""

    children: list[dict[str, Any]]  # phase 1, one per split
    trials: list[dict[str, Any]]  # phase 2, one per candidate
    top: list[Candidate]  # the top N of every split and repeat, best first
    merged: Policy  # their sub-policies, without duplicates, best candidate first
    strength_trials: list[dict[str, Any]]  # phase 3
    decision: Decision
    costs: dict[str, float]

    def failures(self) -> list[str]:
        """One line per failed trial: phase, what it was and its error."""
        lines = [f"phase 1: child of split {r['split']}: {r['error']}" for r in self.children if r["status"] != "ok"]
        lines += [f"phase 2: candidate {r['index']} of split {r['split']}, repeat {r['repeat']} (trial {r['trial_id']}): "
                  f"{r['error']}" for r in self.trials if r["status"] != "ok"]
        lines += [f"phase 3: split {r['split']} at strength {r['strength']:g}: {r['error']}"
                  for r in self.strength_trials if r["status"] != "ok"]
        return lines


@dataclass
class SearchResult:
    """Where a finished search put its outputs, and what it found."""

    run_dir: Path
    run_id: str
    policy_path: Path
    policy: Policy
    costs: dict[str, float]
    top: list[Candidate] = field(default_factory=list)
    decision: Decision | None = None
    failures: list[str] = field(default_factory=list)
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)  # phase -> (start, end), time.monotonic()


def top_candidates(rows: Sequence[dict[str, Any]], space: SearchSpace, splits: int, repeats: int,
                   top_n: int) -> list[Candidate]:
    """The ``top_n`` best successful candidates of every split and repeat, all of them ordered by reward."""
    names = space.parameter_names()
    top: list[dict[str, Any]] = []
    for repeat in range(repeats):
        for split in range(splits):
            group = [r for r in rows if r["status"] == "ok" and r["split"] == split and r["repeat"] == repeat]
            top.extend(sorted(group, key=lambda r: r["reward"], reverse=True)[:top_n])
    top.sort(key=lambda r: r["reward"], reverse=True)
    return [Candidate(r["split"], r["repeat"], float(r["reward"]), space.decode({k: r[k] for k in names}),
                      str(r.get("trial_id", ""))) for r in top]


def merge_top(top: Sequence[Candidate]) -> Policy:
    """The sub-policies of the candidates, without duplicates, in the candidates' order."""
    return merge_policies([c.policy for c in top])
