"""Phase 2, density matching: score a candidate policy with a frozen child model, without retraining.

A good policy makes the augment split D_A look like data the child (trained on D_M with the baseline
augmentation only) already knows: :func:`evaluate_policy` applies the policy to D_A ``num_views`` times
(every image and view drawing its own sub-policy) and measures the frozen model; :func:`score_policy`
does it for one candidate of a split. Rewards: ``any_view`` (the paper's: any view right), ``min_loss``,
and the mean ``accuracy`` / ``loss`` over every view; the search maximises ``accuracy`` by default (why:
docs/findings.md).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from policysearch.augment.policy import Policy
from policysearch.search.children import ChildSource, child_and_da
from policysearch.search.config import REWARDS
from policysearch.search.faults import Faults
from policysearch.search.prepare import Prepared, use_threads
from policysearch.augment.transforms import BatchPolicyTransform

__all__ = ["REWARDS", "PolicyScore", "evaluate_policy", "score_policy"]

# Off the CPU, the batched transform takes up to this many pixel values per call (16 MB of uint8; its
# temporaries a few times more): drawing a plan reads its group sizes back to the host once, so fewer,
# larger calls wait less. On the CPU it takes ``batch_size`` images, where memory traffic dominates.
AUGMENT_VALUES = 1 << 24


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


def _augment_size(device: torch.device, batch_size: int, values_per_image: int) -> int:
    """Images per call of the transform: ``batch_size`` on the CPU, up to ``AUGMENT_VALUES`` elsewhere."""
    if device.type == "cpu":
        return batch_size
    return max(batch_size, AUGMENT_VALUES // max(values_per_image, 1))


def evaluate_policy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, policy: Policy, *,
                    mean: Sequence[float], std: Sequence[float], num_views: int = 5, batch_size: int = 1024,
                    generator: torch.Generator | None = None, seed: int | None = None,
                    mixed_precision: bool = True) -> PolicyScore:
    """Score ``policy`` on uint8 ``images`` [N, C, H, W] (kept on the model's device) with the frozen model.

    Views are augmented and classified in chunks of ``batch_size`` images; there is no loop over images.
    Pass ``seed`` to score every candidate on common random numbers: each view of each chunk starts from
    its own generator seeded from (``seed``, view, chunk), so the draws that do not depend on the policy
    (sub-policy choice, gates, signs, the baseline's crops and flips) are the same for every candidate in
    every view, not only in the first. A ``generator`` instead is consumed across the views.
    The model is converted to channels_last in place (same values, faster convolutions) and runs on
    channels_last input; on CUDA in bfloat16 autocast (``mixed_precision``), on the CPU in float32.
    """
    if generator is not None and seed is not None:
        raise ValueError("pass either a generator or a seed, not both")
    if num_views < 1:
        raise ValueError(f"num_views must be at least 1, got {num_views}")
    if len(images) == 0 or len(images) != len(labels):
        raise ValueError(f"need a non-empty D_A with one label per image, got {len(images)} and {len(labels)}")
    device = next(model.parameters()).device
    images, labels = images.to(device), labels.to(device)
    augment = BatchPolicyTransform(policy).to(device)
    n = len(images)
    channels = images.shape[1]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean/std have {len(mean)}/{len(std)} values but the images have {channels} channels")
    # uploaded once, rather than on every chunk as data.normalize does
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, channels, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, channels, 1, 1)
    cuda = device.type == "cuda"
    model.to(memory_format=torch.channels_last)
    augment_size = _augment_size(device, batch_size, images[0].numel())
    any_correct = torch.zeros(n, dtype=torch.bool, device=device)
    min_loss = torch.full((n,), float("inf"), device=device)
    correct_sum = torch.zeros((), device=device)
    loss_sum = torch.zeros((), device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for view in range(num_views):
                for first in range(0, n, augment_size):
                    if seed is not None:
                        generator = torch.Generator(device=device).manual_seed(
                            (seed * 1_000_003 + view * 10_007 + first) % (1 << 62))
                    views = augment(images[first:first + augment_size], generator)
                    for start in range(0, len(views), batch_size):
                        part = views[start:start + batch_size]
                        chunk = slice(first + start, first + start + len(part))
                        x = ((part.float() / 255.0 - mean_t) / std_t).contiguous(memory_format=torch.channels_last)
                        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and mixed_precision):
                            logits = model(x).float()
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


def score_policy(prepared: Prepared, params: Mapping[str, Any], split: int, child: ChildSource | str | Path, *,
                 repeat: int = 0, index: int = 0, faults: Faults = Faults()) -> dict[str, Any]:
    """Phase 2: decode the candidate ``params`` and score it on D_A of ``split`` with its frozen child.

    ``child`` is where the frozen child is (a folder, or a :class:`ChildSource`). Returns the reward the
    optimiser maximises, every score of :class:`policysearch.search.density.PolicyScore`, the seconds spent and,
    to measure the cache, the seconds getting the child (``load_seconds``) and whether it was cached. ``repeat`` and ``index`` (the index-th candidate of that split and repeat)
    only name the trial.
    """
    faults.reach("score", split=split, repeat=repeat, index=index)
    config = prepared.config
    use_threads(config)
    started = time.perf_counter()
    model, images, labels, cached, load_seconds = child_and_da(prepared, split, child)
    policy = prepared.space.decode({k: params[k] for k in prepared.space.parameter_names()})
    # D_A views get the policy followed by the baseline augmentation the child trained with, and every
    # candidate of a split is scored on common random numbers in every view.
    score = evaluate_policy(model, images, labels, policy.with_baseline(prepared.baseline), mean=prepared.mean,
                            std=prepared.std, num_views=config.num_views, seed=config.seed * 1000 + split)
    return {"reward": score.reward(config.reward), **score.to_dict(), "split": split,
            "load_seconds": load_seconds, "child_cached": cached, "seconds": time.perf_counter() - started}
