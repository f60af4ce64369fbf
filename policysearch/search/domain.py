"""Phase 1b, the domain fit: which ops, and up to which level, keep the class information of this data.

Each frozen child (:func:`probe_child`) is measured on its D_A under every op at probability 1 at a few
levels; the share of its accuracy above chance that an op keeps (``retained``) decides. An op keeps its
levels up to the highest probed level at which every lower one retains at least ``threshold``; an op
failing at the lowest level is excluded. The fit bounds the Fast AutoAugment space
(:func:`restrict_space`); the standard recipes keep their own levels over the ops kept. Children too
close to chance exclude nothing, and the fit says why. The reasoning and literature: docs/findings.md.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from policysearch.augment.ops import OPS
from policysearch.augment.policy import Operation, Policy
from policysearch.search.density import evaluate_policy
from policysearch.search.faults import Faults
from policysearch.search.prepare import Prepared, use_threads
from policysearch.search.spaces import SearchSpace
from policysearch.augment.standard import RANDAUGMENT_OPS

__all__ = ["PROBE_LEVELS", "DomainFit", "OpFit", "fit_domain", "probe_child", "probe_ops", "probed_ops",
           "restrict_space", "restriction_text"]

PROBE_LEVELS: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
THRESHOLD = 0.5  # an op must keep half of the child's signal above chance
PROBE_VIEWS = 1  # views per D_A image and probe: the fit averages over every child, which bounds the noise
MIN_SIGNAL = 0.2  # a child with less than this (clean accuracy - chance) cannot judge ops


@dataclass(frozen=True)
class OpFit:
    """The evidence for one op: mean retained signal per probed level, and the decision."""

    op: str
    levels: tuple[float, ...]
    retained: tuple[float, ...]
    max_level: float  # 0.0: excluded

    @property
    def excluded(self) -> bool:
        return self.max_level == 0.0

    def to_dict(self) -> dict[str, object]:
        return {"op": self.op, "levels": list(self.levels), "retained": [round(r, 4) for r in self.retained],
                "max_level": self.max_level, "excluded": self.excluded}


@dataclass(frozen=True)
class DomainFit:
    """Per op the highest level that keeps the class information; ``note`` says when it could not judge."""

    ops: Mapping[str, OpFit]
    threshold: float = THRESHOLD
    clean_accuracy: float = float("nan")
    chance: float = float("nan")
    note: str = ""
    unjudged: tuple[str, ...] = field(default=())
    left_out: Mapping[str, float] = field(default_factory=dict)  # op -> its range's low end in the space, above its cap

    def for_space(self, space: SearchSpace) -> "DomainFit":
        """This fit, naming the ops of ``space`` kept by the fit whose level range there starts above their cap:
        :func:`restrict_space` leaves them out of the space; the standard recipes keep their own levels of them."""
        left_out = {op: low for op, (low, _) in zip(space.ops, space.level_ranges)
                    if self.allowed(op) and low > self.max_level(op)}
        return dataclasses.replace(self, left_out=left_out)

    def allowed(self, op: str) -> bool:
        """An op not probed is allowed (nothing speaks against it)."""
        fit = self.ops.get(op)
        return fit is None or not fit.excluded

    def max_level(self, op: str) -> float:
        fit = self.ops.get(op)
        return 1.0 if fit is None else fit.max_level

    def allowed_ops(self, ops: Iterable[str]) -> tuple[str, ...]:
        return tuple(op for op in ops if self.allowed(op))

    def excluded(self) -> list[OpFit]:
        return [fit for fit in self.ops.values() if fit.excluded]

    def without_excluded(self, policy: Policy) -> Policy:
        """``policy`` with every excluded op replaced by Identity (same probabilities; levels untouched)."""
        subs = [[step if self.allowed(step.op) else Operation("Identity", step.prob, 0.0) for step in sub]
                for sub in policy]
        return Policy(subs, policy.metadata, policy.name, policy.baseline, policy.ranges)

    def to_dict(self) -> dict[str, object]:
        """As plain JSON: an accuracy that was not measured (nothing probed) is None, not NaN."""
        def finite(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {"threshold": self.threshold, "clean_accuracy": finite(self.clean_accuracy),
                "chance": finite(self.chance), "note": self.note, "ops": [fit.to_dict() for fit in self.ops.values()],
                "left_out_of_space": dict(self.left_out)}


def probe_levels(op: str, levels: Sequence[float] = PROBE_LEVELS) -> tuple[float, ...]:
    """The levels an op is probed at: all of ``levels``, or 1.0 alone for an op without a magnitude."""
    return tuple(levels) if OPS[op].has_magnitude else (1.0,)


def probe_ops(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, ops: Iterable[str], *,
              mean: Sequence[float], std: Sequence[float], levels: Sequence[float] = PROBE_LEVELS,
              seed: int = 0, num_views: int = PROBE_VIEWS) -> dict[str, object]:
    """Accuracy of a frozen model on ``images`` clean and under each op at probability 1 at each level.

    Returns ``{"clean": accuracy, "ops": {op: [(level, accuracy), ...]}}``; every probe is drawn from the
    same seed, so two ops are compared on the same random numbers where their draws coincide.
    """
    device = next(model.parameters()).device

    def accuracy(policy: Policy) -> float:
        generator = torch.Generator(device=device).manual_seed(seed)
        return evaluate_policy(model, images, labels, policy, mean=mean, std=std, num_views=num_views,
                               generator=generator).accuracy

    clean = accuracy(Policy([[Operation("Identity", 1.0, 0.0)]]))
    measured = {}
    for op in ops:
        if op == "Identity" or op == "SamplePairing" and len(images) < 2:
            continue
        measured[op] = [(level, accuracy(Policy([[Operation(op, 1.0, level)]]))) for level in probe_levels(op, levels)]
    return {"clean": clean, "ops": measured}


def fit_domain(probes: Sequence[Mapping[str, object]], num_classes: int,
               threshold: float = THRESHOLD) -> DomainFit:
    """Decide per op from the probes of several children (``probe_ops`` results): mean retained signal."""
    chance = 1.0 / num_classes
    signals = [float(p["clean"]) - chance for p in probes]
    clean = float(np.mean([float(p["clean"]) for p in probes])) if probes else float("nan")
    if not probes or min(signals) < MIN_SIGNAL:
        low = int(np.argmin(signals)) if probes else 0
        weakest = (f"the weakest, of split {int(probes[low].get('split', low))}, has clean accuracy "
                   f"{chance + min(signals):.3f}, mean {clean:.3f}" if probes else "no child model")
        note = (f"the child models are too close to chance ({weakest}; chance {chance:.3f}, each needs "
                f"{MIN_SIGNAL:g} above it) to judge which ops destroy class information")
        names = sorted({op for p in probes for op in p["ops"]})  # type: ignore[union-attr]
        return DomainFit({}, threshold, clean, chance, note, tuple(names))
    ops: dict[str, OpFit] = {}
    names = [op for op in probes[0]["ops"]]  # type: ignore[union-attr]
    for op in names:
        per_child = [dict(p["ops"][op]) for p in probes]  # type: ignore[index]
        levels = tuple(sorted(per_child[0]))
        retained = tuple(float(np.mean([(child[level] - chance) / signal for child, signal in zip(per_child, signals)]))
                         for level in levels)
        max_level = 0.0
        for level, kept in zip(levels, retained):
            if kept < threshold:
                break
            max_level = level
        if not OPS[op].has_magnitude and max_level > 0:
            max_level = 1.0
        ops[op] = OpFit(op, levels, retained, max_level)
    return DomainFit(ops, threshold, clean, chance)


def probed_ops(space: SearchSpace) -> list[str]:
    """Every op a candidate may use - the space's, RandAugment's and TrivialAugment's - and the flip."""
    return list(dict.fromkeys([*space.ops, *RANDAUGMENT_OPS, "FlipLR"]))


def probe_child(prepared: Prepared, split: int, model: torch.nn.Module, faults: Faults = Faults()) -> dict[str, Any]:
    """Phase 1b, at the end of each child's training: the frozen child's D_A accuracy clean and under
    every op at the probed levels."""
    faults.reach("probe", split=split)
    config = prepared.config
    use_threads(config)
    started = time.perf_counter()
    device = next(model.parameters()).device
    index = torch.as_tensor(prepared.splits[split][1])
    images, labels = prepared.data.images[index].to(device), prepared.data.labels[index].to(device)
    probes = probe_ops(model, images, labels, probed_ops(prepared.space), mean=prepared.mean, std=prepared.std,
                       seed=config.seed * 1000 + split)
    return {"split": split, "clean": probes["clean"], "ops": {op: [list(p) for p in v] for op, v in probes["ops"].items()},
            "seconds": time.perf_counter() - started}


def restrict_space(space: SearchSpace, fit: DomainFit) -> SearchSpace:
    """The space without the excluded ops and with every kept op's levels capped at its highest allowed level.

    An op whose level range in the space starts above its cap leaves too: no level the space allows keeps
    the classes. With no op left the space holds the identity alone."""
    kept = [(op, r) for op, r in zip(space.ops, space.level_ranges) if fit.allowed(op) and r[0] <= fit.max_level(op)]
    if not kept:
        kept = [("Identity", (0.0, 0.0))]
    ranges = tuple((min(low, fit.max_level(op)), min(high, fit.max_level(op))) for op, (low, high) in kept)
    return dataclasses.replace(space, ops=tuple(op for op, _ in kept), level_ranges=ranges,
                               name=f"{space.name} (domain fit)")


def restriction_text(space: SearchSpace, searched: SearchSpace, fit: DomainFit) -> str:
    """What the domain fit did to ``space`` (``searched`` is :func:`restrict_space`'s result), for one line."""
    if fit.note:
        return f"{fit.note}; no op was excluded"
    ranges = dict(zip(searched.ops, searched.level_ranges))
    removed = [op for op in space.ops if op not in ranges]
    capped = [f"{op} {ranges[op][1]:g}" for op, (_, high) in zip(space.ops, space.level_ranges)
              if op in ranges and ranges[op][1] < high]
    if len(removed) == len(space.ops):
        return (f"every op of space {space.name!r} loses this data's classes at the lowest level the space allows "
                "it, so phase 2 searches the identity alone; the report's domain fit section has the measurements")
    parts = [f"{len(space.ops) - len(removed)} of {len(space.ops)} ops of space {space.name!r} kept"]
    excluded = [op for op in removed if op not in fit.left_out]
    if excluded:
        parts.append(f"excluded: {', '.join(excluded)}")
    if fit.left_out:
        parts.append("left out, their range in the space above their cap: "
                     + ", ".join(f"{op} (from {low:g}, cap {fit.max_level(op):g})" for op, low in fit.left_out.items()))
    if capped:
        parts.append(f"levels capped: {', '.join(capped)}")
    return "; ".join(parts)
