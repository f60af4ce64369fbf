"""The per-image companion transform: a policy file applied to one PIL image or tensor, a drop-in for
torchvision ``transforms`` and ``transforms.v2`` pipelines.

The PIL path applies each op's PIL reference (equal to torchvision's functional result); a tensor takes
the batched path of :class:`~policysearch.augment.transforms.BatchPolicyTransform`. Both end with the policy's
baseline, so a policy file reproduces the whole recipe.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch
import torchvision.transforms.v2 as v2
from PIL import Image
from torchvision import tv_tensors

from policysearch.augment.ops import OPS, PilContext
from policysearch.augment.policy import Baseline, Policy
from policysearch.augment.standard import load_policy
from policysearch.augment.transforms import BatchPolicyTransform, Fill, check_image_batch, draw_baseline

__all__ = ["PolicyTransform"]


class PolicyTransform(v2.Transform):
    """Apply a policy to one image (PIL or tensor [C, H, W]); a drop-in for torchvision pipelines.

    Tensors take the batched path, so a [B, C, H, W] tensor also works and draws per sample.
    ``pool`` is the set of images SamplePairing blends with on the PIL path. With a ``generator`` the draws
    are reproducible; in a DataLoader worker it is reseeded from the worker's seed, so that workers and
    epochs draw differently, as they do without one.
    """

    def __init__(self, policy: Policy | str | os.PathLike[str], fill: Fill = 0,
                 pool: Sequence[Image.Image] | None = None, generator: torch.Generator | None = None) -> None:
        super().__init__()
        policy = load_policy(policy)
        self.batch = BatchPolicyTransform(policy, fill=fill)
        self.policy = policy
        self.pool = tuple(pool or ())
        self.generator = generator
        self._worker_seed: int | None = None  # the DataLoader worker seed the generator was reseeded for
        self._context = PilContext(fill=self.batch.fill, pool=self.pool)
        self._needs_pool = "SamplePairing" in policy.ops() and not self.pool

    @classmethod
    def from_json(cls, path: str | os.PathLike[str], **kwargs: Any) -> "PolicyTransform":
        """Load a policy file and build the transform: one line in anyone's training code."""
        return cls(Policy.load(path), **kwargs)

    def forward(self, *inputs: Any) -> Any:
        # transforms.v2 passes what it cannot transform through unchanged: an image of another type would
        # silently go without augmentation, so a sample without any image is refused, as torchvision's
        # AutoAugment does.
        if not _holds_image(inputs):
            found = ", ".join(sorted({type(v).__name__ for v in _leaves(inputs)})) or "nothing"
            raise TypeError(f"PolicyTransform expects a PIL image or a tensor [C, H, W], got {found}; convert a "
                            "numpy array with PIL.Image.fromarray(array) or torch.from_numpy(array).permute(2, 0, 1)")
        return super().forward(*inputs)

    def _generator(self) -> torch.Generator | None:
        """The generator to draw from: in a DataLoader worker, the user's reseeded once per worker seed (a
        worker holds a copy of it, so every worker and, without persistent workers, every epoch would
        otherwise draw the same augmentations)."""
        info = torch.utils.data.get_worker_info()
        if self.generator is None or info is None or info.seed == self._worker_seed:
            return self.generator
        seed = int(np.random.SeedSequence([self.generator.initial_seed(), info.seed]).generate_state(1, np.uint64)[0])
        self.generator = torch.Generator(self.generator.device).manual_seed(seed)
        self._worker_seed = info.seed
        return self.generator

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, Image.Image):
            return self.apply_pil(inpt)
        if isinstance(inpt, tv_tensors.TVTensor) and not isinstance(inpt, tv_tensors.Image):
            raise TypeError(f"PolicyTransform augments images only, got {type(inpt).__name__}: "
                            "geometric ops would not move boxes or masks with the image")
        if isinstance(inpt, torch.Tensor):
            out = self.apply_tensor(inpt.as_subclass(torch.Tensor))
            return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.Image) else out
        raise TypeError(f"PolicyTransform expects a PIL image or a tensor, got {type(inpt).__name__}")

    def apply_tensor(self, image: torch.Tensor) -> torch.Tensor:
        if image.ndim == 3:
            check_image_batch(image.unsqueeze(0), where="image")
            return self.batch(image.unsqueeze(0), self._generator()).squeeze(0)
        if image.ndim == 4:
            return self.batch(image, self._generator())
        raise ValueError(f"image: expected [C, H, W] or [B, C, H, W], got shape {tuple(image.shape)}")

    def apply_pil(self, img: Image.Image) -> Image.Image:
        if img.mode not in ("L", "RGB"):
            raise ValueError(f"image: PIL mode {img.mode!r} is not supported; convert to 'RGB' or 'L' first")
        if self._needs_pool:
            raise ValueError("this policy uses SamplePairing: on PIL images it blends with an image from a pool, "
                             "so build PolicyTransform(policy, pool=[PIL images])")
        gen = self._generator()
        sub = self.policy[int(torch.randint(len(self.policy), (1,), generator=gen))]
        size = (len(img.getbands()), img.height, img.width)
        for step in sub:
            spec = OPS[step.op]
            gate = float(torch.rand(1, generator=gen, dtype=torch.float64))
            negative = bool(torch.rand(1, generator=gen) < 0.5)
            if gate >= step.prob:
                continue
            arg = spec.argument(step.level, self.policy.ranges)
            if spec.signed and negative:
                arg = -arg
            draw = spec.sample(1, size, gen, torch.device("cpu")) if spec.sample else {}
            img = spec.pil(img, arg, draw, self._context)
        return _baseline_pil(img, self.policy.baseline, gen)

    def extra_repr(self) -> str:
        return f"{len(self.policy)} sub-policies, fill={self.batch.fill}"


def _leaves(value: Any) -> list[Any]:
    """The values inside nested tuples, lists and dicts (a transform's sample)."""
    if isinstance(value, (tuple, list)):
        return [leaf for item in value for leaf in _leaves(item)]
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    return [value]


def _holds_image(sample: Any) -> bool:
    return any(isinstance(leaf, (Image.Image, torch.Tensor)) for leaf in _leaves(sample))


def _baseline_pil(img: Image.Image, baseline: Baseline, generator: torch.Generator | None) -> Image.Image:
    """The baseline on one PIL image, drawing in the order of ``draw_baseline``."""
    crop, flip = draw_baseline(baseline, 1, "cpu", generator)
    if crop is not None:
        p = baseline.pad_crop
        dy, dx = (int(v) for v in crop[0])
        # Cropping past the border fills with zero: the same as padding first, without the padded image.
        img = img.crop((dx - p, dy - p, dx - p + img.width, dy - p + img.height))
    if flip is not None and bool(flip[0]):
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img
