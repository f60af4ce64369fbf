"""Density matching: score a candidate policy with a frozen child model, without retraining.

Fast AutoAugment's idea: a good policy makes the augment split D_A look like data the child model
(trained on D_M with the baseline augmentation only) already knows. The evaluator applies the policy to
D_A ``num_views`` times with the batched transform - every image and view drawing its own sub-policy -
and measures the frozen model on the result.

Rewards returned (all "higher is better" except the losses):

* ``any_view`` - the paper's reward: per image, whether any of the views is classified correctly;
* ``min_loss`` - per image, the lowest loss over the views (the paper's companion figure);
* ``accuracy`` / ``loss`` - plain mean accuracy and loss over every view.

The search optimises ``accuracy`` by default. On small augment splits the any-view reward sits at
1.0 for many policies (the best of five guesses is almost always right), so the optimiser cannot tell
them apart; mean accuracy keeps ranking them (it ranked candidates best of the three in a comparison on
100 digits).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from policysearch.data import normalize
from policysearch.policy import Policy
from policysearch.transforms import BatchPolicyTransform

REWARDS = ("accuracy", "any_view", "loss", "min_loss")


@dataclass(frozen=True)
class PolicyScore:
    """How well the frozen child model recognises D_A after the policy."""

    any_view: float
    min_loss: float
    accuracy: float
    loss: float
    images: int
    views: int

    def reward(self, name: str) -> float:
        """The named reward as a number to maximise (losses are negated)."""
        if name not in REWARDS:
            raise ValueError(f"unknown reward {name!r}; choose one of {', '.join(REWARDS)}")
        value = getattr(self, name)
        return -value if name in ("loss", "min_loss") else value

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def evaluate_policy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, policy: Policy, *,
                    mean: Sequence[float], std: Sequence[float], num_views: int = 5, batch_size: int = 1024,
                    generator: torch.Generator | None = None, seed: int | None = None) -> PolicyScore:
    """Score ``policy`` on uint8 ``images`` [N, C, H, W] (kept on the model's device) with the frozen model.

    Views are augmented and classified in chunks of ``batch_size`` images; there is no loop over images.
    Pass ``seed`` to score every candidate on common random numbers: each view of each chunk starts from
    its own generator seeded from (``seed``, view, chunk), so the draws that do not depend on the policy
    (sub-policy choice, gates, signs, the baseline's crops and flips) are the same for every candidate in
    every view, not only in the first. A ``generator`` instead is consumed across the views.
    """
    if generator is not None and seed is not None:
        raise ValueError("pass either a generator or a seed, not both")
    if num_views < 1:
        raise ValueError(f"num_views must be at least 1, got {num_views}")
    if len(images) == 0 or len(images) != len(labels):
        raise ValueError(f"need a non-empty D_A with one label per image, got {len(images)} and {len(labels)}")
    device = next(model.parameters()).device
    images, labels = images.to(device), labels.to(device)
    augment = BatchPolicyTransform(policy)
    n = len(images)
    any_correct = torch.zeros(n, dtype=torch.bool, device=device)
    min_loss = torch.full((n,), float("inf"), device=device)
    correct_sum = torch.zeros((), device=device)
    loss_sum = torch.zeros((), device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for view in range(num_views):
                for start in range(0, n, batch_size):
                    chunk = slice(start, start + batch_size)
                    if seed is not None:
                        generator = torch.Generator(device=device).manual_seed(
                            (seed * 1_000_003 + view * 10_007 + start) % (1 << 62))
                    x = augment(images[chunk], generator)
                    logits = model(normalize(x, mean, std)).float()
                    loss = F.cross_entropy(logits, labels[chunk], reduction="none")
                    correct = logits.argmax(1) == labels[chunk]
                    any_correct[chunk] |= correct
                    min_loss[chunk] = torch.minimum(min_loss[chunk], loss)
                    correct_sum += correct.sum()
                    loss_sum += loss.sum()
    finally:
        model.train(was_training)
    total = n * num_views
    return PolicyScore(any_view=float(any_correct.float().mean()), min_loss=float(min_loss.mean()),
                       accuracy=float(correct_sum) / total, loss=float(loss_sum) / total, images=n,
                       views=num_views)
