"""Phase 3, the strength check: does the merged policy help at all, and at which strength?

Density matching prefers policies that barely change an image and cannot say whether augmentation helps.
So each split's child is trained again on D_M with the merged policy at a few strengths (probabilities
scaled) and scored on D_A; the strength with the best mean D_A accuracy wins, strength 0 being the
phase-1 child (the baseline augmentation alone). Ray is not imported here.

Interface for the search: :func:`strength_trial` (one training; a plain function) and :func:`decide`
(the final policy from the trials' rows).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from policysearch.data import baseline_for
from policysearch.policy import Operation, Policy
from policysearch.search.faults import Faults
from policysearch.search.trials import Prepared, use_threads, child_model, device_for
from policysearch.train import evaluate, train_model
from policysearch.transforms import BatchPolicyTransform

__all__ = ["Decision", "choose_strength", "decide", "strength_trial"]

IDENTITY = Policy([[Operation("Identity", 1.0, 0.0)]])


def strength_trial(prepared: Prepared, split: int, strength: float, policy: Policy,
                   faults: Faults = Faults()) -> dict[str, Any]:
    """Train the child of ``split`` on D_M with ``policy`` at ``strength``; its D_A accuracy and loss."""
    faults.reach("strength", split=split, strength=strength)
    config = prepared.config
    use_threads(config)
    dm, da = prepared.splits[split]
    data, device = prepared.data, device_for(config)
    model = child_model(prepared, split)
    started = time.perf_counter()
    train_model(model, data.subset(dm), config.train_config(), augment=BatchPolicyTransform(policy.scaled(strength)),
                baseline=baseline_for(config.dataset, data.images.shape[-1]), mean=prepared.mean, std=prepared.std,
                device=device)
    held_out = evaluate(model, data.images[da], data.labels[da], mean=prepared.mean, std=prepared.std, device=device)
    return {"split": split, "strength": strength, "da_accuracy": held_out["accuracy"], "da_loss": held_out["loss"],
            "train_seconds": time.perf_counter() - started}


def choose_strength(validation: Sequence[dict[str, Any]]) -> tuple[float, list[dict[str, float]]]:
    """The strength with the best mean held-out accuracy over the splits (then the lower mean loss).

    Returns it with one summary row per strength. Strength 0 is the baseline augmentation alone.
    """
    summary = []
    for strength in sorted({row["strength"] for row in validation}):
        rows = [row for row in validation if row["strength"] == strength]
        summary.append({"strength": strength, "da_accuracy": float(np.mean([r["da_accuracy"] for r in rows])),
                        "da_loss": float(np.mean([r["da_loss"] for r in rows])), "splits": len(rows)})
    best = max(summary, key=lambda row: (row["da_accuracy"], -row["da_loss"]))
    return best["strength"], summary


@dataclass(frozen=True)
class Decision:
    """What phase 3 concluded: the policy to write, at which strength, and whether it was checked."""

    policy: Policy
    strength: float  # the probability scale of the merged policy in ``policy`` (0: the identity was kept)
    checked: bool  # False when no strength was checked (``--strengths`` with no values)
    summary: list[dict[str, float]] = field(default_factory=list)

    @property
    def kept_baseline(self) -> bool:
        return self.checked and self.strength == 0.0

    def describe(self) -> str:
        if not self.checked:
            return "the merged policy at full strength (strength 1), not checked: --strengths was given no values"
        if self.kept_baseline:
            return ("the identity: no strength of the merged policy beat the baseline augmentation alone on the "
                    "held-out splits, so keep your baseline augmentation")
        return f"the merged policy at strength {self.strength:g}, the best of the strengths checked"


def decide(merged: Policy, strengths: Sequence[float], validation: Sequence[dict[str, Any]]) -> Decision:
    """The final policy: ``merged`` at the strength that won on D_A, the identity if strength 0 (the
    baseline alone) won, or ``merged`` unchecked at full strength when no strengths were given."""
    if not strengths:
        return Decision(merged, 1.0, False)
    strength, summary = choose_strength(validation)
    if strength == 0.0:
        return Decision(IDENTITY, 0.0, True, summary)
    return Decision(merged.scaled(strength), strength, True, summary)
