"""What a search found, as plain data: the input of the export and the report, and what ``run_search`` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from policysearch.search.candidates import Recipe
from policysearch.search.domain import DomainFit
from policysearch.augment.policy import Policy, merge_policies, remove_duplicates
from policysearch.search.selection import Decision
from policysearch.search.spaces import SearchSpace

__all__ = ["CHILD_FAILED", "Candidate", "Outcome", "SearchResult", "failed_child_splits", "merge_top",
           "top_candidates"]

CHILD_FAILED = "phase 1: child of split "  # how a failed child model's line in ``failures()`` begins


def failed_child_splits(failures: Sequence[str]) -> set[int]:
    """The splits whose child model failed, from :meth:`Outcome.failures`'s lines (``failed_trials`` in a
    policy file's metadata): phase 2 searched the others only."""
    return {int(line[len(CHILD_FAILED):].partition(":")[0]) for line in failures if line.startswith(CHILD_FAILED)}


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
    probes: list[dict[str, Any]]  # phase 1b, one per usable split (each phase-1 trial probes its child)
    fit: DomainFit  # the ops and levels the data allows, from the probes
    trials: list[dict[str, Any]]  # phase 2, one per candidate policy
    top: list[Candidate]  # the top N of every split and repeat, best first
    merged: Policy  # their sub-policies, duplicates removed within each candidate, best candidate first
    recipes: list[Recipe]  # phase 3's candidate recipes, simplest and most standard first
    selection: list[dict[str, Any]]  # phase 3, one per recipe and fold
    decision: Decision
    chosen: Recipe
    note: str
    costs: dict[str, float]
    cost_note: str = ""  # why the costs' wall seconds fall short (an unreadable ledger), else empty

    def failures(self) -> list[str]:
        """One line per failed trial: phase, what it was and its error."""
        lines = [f"{CHILD_FAILED}{r['split']}: {r['error']}" for r in self.children if r["status"] != "ok"]
        lines += [f"phase 2: candidate {r['index']} of split {r['split']}, repeat {r['repeat']} (trial {r['trial_id']}): "
                  f"{r['error']}" for r in self.trials if r["status"] != "ok"]
        lines += [f"phase 3: recipe {r['recipe']} on fold {r['fold']}: {r['error']}"
                  for r in self.selection if r["status"] != "ok"]
        return lines


@dataclass
class SearchResult:
    """Where a finished search put its outputs, and what it found.

    ``policy`` is the chosen recipe (its sub-policies and baseline, as ``policy.json`` holds them);
    :meth:`transform` and :meth:`batch_transform` apply it in training code, ``reason`` says why it was chosen.
    """

    run_dir: Path
    run_id: str
    policy_path: Path
    policy: Policy
    costs: dict[str, float]
    top: list[Candidate] = field(default_factory=list)
    decision: Decision | None = None
    failures: list[str] = field(default_factory=list)
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)  # phase -> (start, end), time.monotonic()
    chosen: Recipe | None = None  # the selected recipe (its policy is ``policy``)
    warnings: list[str] = field(default_factory=list)  # what weakens the decision (e.g. children near chance)
    already_complete: bool = False  # a --resume of a finished run: read from its files, nothing was run

    def __repr__(self) -> str:
        # A short line: the fields (every candidate, every comparison) would print thousands of characters.
        recipe = self.chosen.name if self.chosen is not None else f"{len(self.policy)} sub-policies"
        return (f"SearchResult(run_id={self.run_id!r}, recipe={recipe!r}, policy_path={str(self.policy_path)!r}, "
                f"{len(self.top)} top candidates, {len(self.failures)} failed trials"
                f"{', already complete' if self.already_complete else ''})")

    @property
    def reason(self) -> str:
        """Why the recipe was chosen (the selection's decision in one sentence)."""
        return self.decision.reason if self.decision is not None else ""

    def transform(self, **kwargs: Any) -> Any:
        """A :class:`~policysearch.augment.image_transform.PolicyTransform` of the recipe: per image, for torchvision pipelines."""
        from policysearch.augment.image_transform import PolicyTransform

        return PolicyTransform(self.policy, **kwargs)

    def batch_transform(self, **kwargs: Any) -> Any:
        """A :class:`~policysearch.augment.transforms.BatchPolicyTransform` of the recipe: per sample on a whole batch."""
        from policysearch.augment.transforms import BatchPolicyTransform

        return BatchPolicyTransform(self.policy, **kwargs)


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
    """The union of the candidates' sub-policies in the candidates' order, each candidate first cleaned of
    repeated op sequences as Fast AutoAugment does (exact duplicates across candidates are dropped too)."""
    return merge_policies([remove_duplicates(c.policy) for c in top])
