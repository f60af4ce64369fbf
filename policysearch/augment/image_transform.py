"""The per-image companion transform: a policy file applied to one PIL image or tensor, a drop-in for
torchvision ``transforms`` and ``transforms.v2`` pipelines.

The PIL path applies each op's PIL reference (equal to torchvision's functional result), or for a few ops
the compiled kernels that give the same pixels faster (``_COMPILED_ON_IMAGES``); a tensor takes
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

from policysearch.augment.cpu_kernels import CODES, run_on_image, warm_up
from policysearch.augment.ops import OPS, OpSpec, PilContext, pil_equalize_divisor
from policysearch.augment.policy import Baseline, Policy
from policysearch.augment.standard import load_policy, load_policy_file
from policysearch.augment.transforms import (BatchPolicyTransform, Fill, check_fill_channels, check_image,
                                            check_image_batch)
from policysearch.augment.worker_generator import SeededTransform

__all__ = ["PolicyTransform"]


class PolicyTransform(SeededTransform, v2.Transform):
    """Apply a policy to one image (PIL or tensor [C, H, W]); a drop-in for torchvision pipelines.

    Tensors take the batched path, so a [B, C, H, W] tensor also works and draws per sample.
    ``pool`` is the set of PIL images SamplePairing blends with (a policy with SamplePairing needs one for a
    single image; a batch without one pairs its samples). With a ``generator`` the draws are reproducible;
    in a DataLoader worker it is reseeded from the worker's seed, so that workers and epochs draw
    differently, as they do without one.
    """

    def __init__(self, policy: Policy | str | os.PathLike[str], fill: Fill = 0,
                 pool: Sequence[Image.Image] | None = None, generator: torch.Generator | None = None) -> None:
        super().__init__()
        policy = load_policy(policy)
        self.batch = BatchPolicyTransform(policy, fill=fill)
        self.policy = policy
        self.pool = _checked_pool(pool)
        self.generator = generator
        self._pool_tensor: tuple[tuple, torch.Tensor] | None = None  # the pool as the last tensor input needs it
        self._context = PilContext(fill=self.batch.fill, pool=self.pool)
        self._pairs = "SamplePairing" in policy.ops()
        if policy.ops() & _COMPILED_ON_IMAGES.keys():
            warm_up(images=True)  # compiled here, so that forked DataLoader workers inherit the kernels

    @classmethod
    def from_json(cls, path: str | os.PathLike[str], **kwargs: Any) -> "PolicyTransform":
        """Load a policy file and build the transform: one line in anyone's training code."""
        return cls(load_policy_file(path), **kwargs)

    def forward(self, *inputs: Any) -> Any:
        # transforms.v2 passes what it cannot transform through unchanged: an image of another type would
        # silently go without augmentation (or a tensor label be taken for the image), so a sample whose
        # image may be a numpy array (no PIL or torchvision image beside it) or that holds no image is
        # refused, and, as torchvision's AutoAugment does, one of two images. Arrays beside an image (a
        # label, boxes, logits) pass through, as v2 passes them.
        leaves = _leaves(inputs)
        images = [v for v in leaves if isinstance(v, (Image.Image, tv_tensors.Image, tv_tensors.Video))]
        array = next((v for v in leaves if isinstance(v, np.ndarray) and v.ndim >= 2), None)
        if array is not None and not images:
            raise TypeError(f"PolicyTransform expects a PIL image or a tensor [C, H, W], got a numpy array "
                            f"{tuple(array.shape)} of {array.dtype}; {_array_advice(array)}")
        if not any(isinstance(leaf, (Image.Image, torch.Tensor)) for leaf in leaves):
            found = ", ".join(sorted({type(v).__name__ for v in leaves})) or "nothing"
            raise TypeError(f"PolicyTransform expects a PIL image or a tensor [C, H, W], got {found}")
        if len(images) > 1:
            raise TypeError(f"PolicyTransform augments one image per sample, got {len(images)} "
                            f"({', '.join(type(v).__name__ for v in images)}): each would get its own draws; "
                            "call it on each image where that is meant")
        return super().forward(*inputs)

    def _generator(self) -> torch.Generator | None:
        return self._draws.current()

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, Image.Image):
            return self.apply_pil(inpt)
        if isinstance(inpt, tv_tensors.Video):
            raise TypeError("PolicyTransform augments images only, got Video: every frame of a clip would need "
                            "the same draws, which it does not make")
        if isinstance(inpt, tv_tensors.TVTensor) and not isinstance(inpt, tv_tensors.Image):
            raise TypeError(f"PolicyTransform augments images only, got {type(inpt).__name__}: "
                            "geometric ops would not move boxes or masks with the image")
        if isinstance(inpt, torch.Tensor):
            out = self.apply_tensor(inpt.as_subclass(torch.Tensor))
            return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.Image) else out
        raise TypeError(f"PolicyTransform expects a PIL image or a tensor, got {type(inpt).__name__}")

    def apply_tensor(self, image: torch.Tensor) -> torch.Tensor:
        if image.ndim == 3:
            check_image(image)
            # contiguous: an image in [H, W, C] memory order (v2.ToImage) is a channels_last batch of one
            return self.apply_tensor(image.unsqueeze(0)).squeeze(0).contiguous()
        if image.ndim != 4:
            raise ValueError(f"image: expected [C, H, W] or [B, C, H, W], got shape {tuple(image.shape)}")
        if self._pairs and not self.pool and image.shape[0] == 1:
            self._refuse_without_pool()
        pool = None
        if self._pairs and self.pool and image.numel():
            check_image_batch(image, where="image")
            pool = self._pool_like(image)
        return self.batch(image, self._generator(), pool=pool)

    def _refuse_without_pool(self) -> None:
        raise ValueError("this policy uses SamplePairing: a single image blends with an image from a pool, so "
                         "build PolicyTransform(policy, pool=[PIL images])")

    def _pool_like(self, batch: torch.Tensor) -> torch.Tensor:
        """The pool as uint8 images of the batch's channels, size and device, made as the PIL path makes a
        partner (converted, resized bilinearly); kept for the last such batch."""
        c, h, w = batch.shape[1:]
        key = (c, h, w, batch.device)
        cached = self._pool_tensor  # read once: another thread may replace it meanwhile
        if cached is None or cached[0] != key:
            mode = "L" if c == 1 else "RGB"
            images = [p.convert(mode) for p in self.pool]
            images = [p if p.size == (w, h) else p.resize((w, h), Image.Resampling.BILINEAR) for p in images]
            arrays = np.stack([np.asarray(p).reshape(h, w, c) for p in images])
            cached = (key, torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous().to(batch.device))
            self._pool_tensor = cached
        return cached[1]

    def apply_pil(self, img: Image.Image) -> Image.Image:
        if img.mode not in ("L", "RGB"):
            raise ValueError(f"image: PIL mode {img.mode!r} is not supported; {_mode_advice(img)}")
        if self._pairs and not self.pool:
            self._refuse_without_pool()
        check_fill_channels(self.batch.fill, len(img.getbands()))
        gen = self._generator()
        s, gate, coin, crop, flip = self.batch.draw_choices(gen)
        size = (len(img.getbands()), img.height, img.width)
        for j, step in enumerate(self.policy[s]):
            if not gate[j] < step.prob:
                continue
            spec = OPS[step.op]
            arg = spec.argument(step.level, self.policy.ranges)
            if spec.signed and coin[j]:
                arg = -arg
            draw = spec.sample(1, size, gen, torch.device("cpu")) if spec.sample else {}
            img = _apply_pil(spec, img, arg, draw, self._context)
        return _baseline_pil(img, self.policy.baseline.pad_crop, crop, flip)

    def extra_repr(self) -> str:
        return f"{len(self.policy)} sub-policies, fill={self.batch.fill}"


# The ops that the per-image path runs on the image's bytes with the compiled kernels (``cpu_kernels``):
# PIL's pixels, faster than PIL's own functions at 32x32 and at 224x224 (``docs/findings.md``). Color is
# not among them: PIL's is faster than the kernel on interleaved channels.
_COMPILED_ON_IMAGES = {name: CODES[name] for name in ("Equalize", "AutoContrast", "Contrast", "Sharpness")}


def _apply_pil(spec: OpSpec, img: Image.Image, arg: float, draw: dict, context: PilContext) -> Image.Image:
    """One op on an 'L' or 'RGB' image: its PIL function, or the compiled kernel that gives the same pixels."""
    code = _COMPILED_ON_IMAGES.get(spec.name)
    if code is None:
        return spec.pil(img, arg, draw, context)
    pixels = np.array(img)
    run_on_image(pixels, code, arg, pil_equalize_divisor())
    out = Image.fromarray(pixels, img.mode)
    out.info = dict(img.info)  # as PIL's ops keep it (dpi, icc_profile)
    return out


def _checked_pool(pool: Sequence[Image.Image] | None) -> tuple[Image.Image, ...]:
    """SamplePairing's pool as a tuple, refused unless it holds PIL images only."""
    if pool is None:
        return ()
    if isinstance(pool, (str, bytes, Image.Image, torch.Tensor, np.ndarray)):
        raise TypeError(f"pool: expected a sequence of PIL images, got {type(pool).__name__}")
    pool = tuple(pool)
    if not pool:
        raise ValueError("pool: empty; SamplePairing blends with an image from it, so give at least one PIL image, "
                         "or leave pool out")
    for i, item in enumerate(pool):
        if not isinstance(item, Image.Image):
            raise TypeError(f"pool[{i}]: expected a PIL image, got {type(item).__name__}; pass the images "
                            "alone (not (image, label) pairs), converted with PIL.Image.fromarray if needed")
        if item.mode not in ("L", "RGB"):  # as an input image: a partner converted here would lose content
            raise ValueError(f"pool[{i}]: PIL mode {item.mode!r} is not supported; {_mode_advice(item)}")
    return pool


def _mode_advice(img: Any) -> str:
    """How to make an 'L' or 'RGB' image of a PIL image without losing its content."""
    mode = img.mode
    if mode == "F":
        return ("scale its values to 0..255 and make an 'L' image (for values in 0..1: Image.fromarray("
                "(np.asarray(img) * 255).round().astype(np.uint8)))")
    if mode.startswith("I"):
        if int(np.asarray(img).max(initial=0)) <= 255 and int(np.asarray(img).min(initial=0)) >= 0:
            return "its values lie in 0..255, so img.convert('L') keeps them"
        return ("scale its values to 0..255 and make an 'L' image (for 16 bits: Image.fromarray((np.asarray(img) "
                ">> 8).astype(np.uint8))); convert('L') would clip every value above 255")
    if mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        return ("the search reads transparency composited onto black; do the same first: Image.alpha_composite("
                "Image.new('RGBA', img.size, 'black'), img.convert('RGBA')).convert('RGB') (or 'L' for grey)")
    return "convert to 'RGB' or 'L' first"


def _leaves(value: Any) -> list[Any]:
    """The values inside nested tuples, lists and dicts (a transform's sample)."""
    if isinstance(value, (tuple, list)):
        return [leaf for item in value for leaf in _leaves(item)]
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    return [value]


def _array_advice(array: np.ndarray) -> str:
    """How to make the image a numpy array holds into one the transform takes, by the array's layout."""
    floats = " (floats in 0..1)" if np.issubdtype(array.dtype, np.floating) else ""
    if array.ndim > 3:
        return "convert each image with PIL.Image.fromarray or torch.from_numpy"
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        return f"it is [C, H, W]: convert it with torch.from_numpy(array){floats}"
    tensor = "torch.from_numpy(array)[None]" if array.ndim == 2 else "torch.from_numpy(array).permute(2, 0, 1)"
    pil = "PIL.Image.fromarray(array) or " if array.dtype == np.uint8 else ""
    return f"convert it with {pil}{tensor}{floats}"


def _baseline_pil(img: Image.Image, pad: int, crop: torch.Tensor | None, flip: torch.Tensor | None) -> Image.Image:
    """The baseline on one PIL image: the crop at offsets ``crop`` [1, 2] of the image padded by ``pad``, then
    the flip if ``flip`` [1] says so (both from ``draw_baseline``, None where the baseline has none)."""
    if crop is not None and pad > 0:
        dy, dx = (int(v) for v in crop[0])
        # Cropping past the border fills with zero: the same as padding first, without the padded image.
        img = img.crop((dx - pad, dy - pad, dx - pad + img.width, dy - pad + img.height))
    if flip is not None and bool(flip[0]):
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img
