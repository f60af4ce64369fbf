"""The augmentations users actually run, applied by their own libraries: the benchmark's anchors.

An anchor is torchvision's or timm's own transform class (``ANCHORS``: the exact constructor calls), built
as a user writes it in a ``Compose`` (default arguments, but AutoAugment's CIFAR-10 policy and the
hyper-parameters timm's ``create_transform`` passes) and applied by that library to one PIL image
at a time, so the benchmark compares with what users run rather than with our re-implementation (our
policy-format versions are separate rows). PIL and the v2 API: the fastest per-image path here (measured in
``docs/findings.md``). Grey images become mode ``L`` PIL images, which every anchor accepts.

The libraries draw from global generators (torch's, ``random``, numpy's): :class:`AnchorAugment` seeds them
per batch from the training's own generator inside :func:`isolated_global_rng` and restores them after, so
a run is reproducible from its seed and nothing leaks into other methods or the training's own draws.
"""

from __future__ import annotations

import contextlib
import importlib.util
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from policysearch.augment.policy import Baseline, installed_version
from policysearch.augment.transforms import BaselineAugment
from policysearch.training.randomness import kept_global_rng

__all__ = ["ANCHORS", "Anchor", "AnchorAugment", "AnchorUnavailable", "anchor_seed", "isolated_global_rng",
           "pil_to_uint8", "uint8_to_pil"]

PilTransform = Callable[[Image.Image], Image.Image]


class AnchorUnavailable(RuntimeError):
    """The library an anchor needs is not installed (the message says how to install it)."""


@dataclass(frozen=True)
class Anchor:
    """One augmentation as users run it: its library, the exact constructor call, and how to build it.

    ``build(image_size, mean)`` returns the library's transform (PIL image -> PIL image); ``mean`` is the
    data set's per-channel mean in [0, 1], which only timm's fill colour uses.
    """

    name: str
    library: str  # the importable module it needs: "torchvision" or "timm"
    call: str  # the constructor call, as results.md names it
    build: Callable[[int, Sequence[float]], PilTransform]
    note: str = ""  # where it departs from the library's own code, as results.md says it

    def available(self) -> str | None:
        """None when the library is installed, else why the anchor cannot run."""
        if importlib.util.find_spec(self.library) is None:
            return f"{self.library} is not installed (pip install 'policysearch[{self.library}]')"
        return None

    def version(self) -> str | None:
        """The installed version of its library; None when it is not installed (or has no package metadata)."""
        return installed_version(self.library)


def _torchvision(name: str, *args: object) -> Callable[[int, Sequence[float]], PilTransform]:
    def build(image_size: int, mean: Sequence[float]) -> PilTransform:
        from torchvision.transforms import v2

        resolved = [getattr(v2.AutoAugmentPolicy, a) if isinstance(a, str) else a for a in args]
        return getattr(v2, name)(*resolved)

    return build


TIMM_RAND = "rand-m9-mstd0.5-inc1"


def timm_hparams(image_size: int, mean: Sequence[float]) -> dict[str, object]:
    """The hyper-parameters timm's ``create_transform`` gives its RandAugment for training: translation by
    0.45 of the image side in pixels, fill with the data set's mean colour (0..255)."""
    return {"translate_const": int(image_size * 0.45), "img_mean": tuple(min(255, round(255 * m)) for m in mean)}


def _posterize_pillow12(img: Image.Image, bits_to_keep: int, **_: object) -> Image.Image:
    """timm's ``posterize`` with Pillow <= 12's meaning of 0 bits kept (every value 0, a black image).

    timm's ``PosterizeIncreasing`` keeps 0 bits at magnitude 10, which ``rand-m9-mstd0.5`` reaches whenever
    its Gaussian noise exceeds +1 (2.3 % of draws); Pillow 13 rejects 0 bits with a ValueError (timm
    1.0.31), Pillow 12 returned a black image. Every other value goes to timm's own function unchanged.
    """
    from timm.data import auto_augment

    if bits_to_keep <= 0:
        return img.point([0] * 256 * len(img.getbands()))
    return auto_augment.posterize(img, bits_to_keep)


def _timm_rand(image_size: int, mean: Sequence[float]) -> PilTransform:
    from timm.data import auto_augment

    transform = auto_augment.rand_augment_transform(TIMM_RAND, timm_hparams(image_size, mean))
    for op in transform.ops:  # this instance only; timm's module is left as it is
        if op.aug_fn is auto_augment.posterize:
            op.aug_fn = _posterize_pillow12
    return transform


ANCHORS: dict[str, Anchor] = {a.name: a for a in (
    Anchor("tv-autoaugment", "torchvision",
           "torchvision.transforms.v2.AutoAugment(AutoAugmentPolicy.CIFAR10)", _torchvision("AutoAugment", "CIFAR10")),
    Anchor("tv-randaugment", "torchvision", "torchvision.transforms.v2.RandAugment()", _torchvision("RandAugment")),
    Anchor("tv-trivialaugmentwide", "torchvision", "torchvision.transforms.v2.TrivialAugmentWide()",
           _torchvision("TrivialAugmentWide")),
    Anchor("tv-augmix", "torchvision", "torchvision.transforms.v2.AugMix()", _torchvision("AugMix")),
    Anchor(f"timm-{TIMM_RAND}", "timm",
           f'timm.data.auto_augment.rand_augment_transform("{TIMM_RAND}", '
           '{"translate_const": int(0.45 * size), "img_mean": mean as 0..255})', _timm_rand,
           "its posterize to 0 bits (magnitude 10) gives a black image, as under Pillow 12: Pillow 13 refuses 0 bits"),
)}


# ------------------------------------------------------------------------------------------ randomness


def anchor_seed(generator: torch.Generator) -> int:
    """One seed for a batch's global generators, drawn from the training's augmentation generator."""
    return int(torch.randint(0, 2**63 - 1, (1,), generator=generator, device=generator.device))


@contextlib.contextmanager
def isolated_global_rng(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator, Python's ``random`` and numpy's global generator from ``seed`` for the
    body, and restore all three states afterwards (also on an error)."""
    with kept_global_rng():
        torch.random.default_generator.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        yield


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """torch's intra-op threads set to 1 for the body, then restored.

    The anchors run torch ops on one small image at a time (AugMix mixes its chains as tensors even on a PIL
    image), where a second thread only adds synchronisation: on this shared 2-core machine, under load,
    AugMix ran at 63 images/s with 1 thread and 4 with 2.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------- images


def uint8_to_pil(image: Tensor) -> Image.Image:
    """A uint8 [C, H, W] CPU tensor (C 1 or 3) as a PIL image of mode L or RGB."""
    array = image.permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(array[..., 0] if array.shape[2] == 1 else array))


def pil_to_uint8(image: Image.Image, channels: int) -> Tensor:
    """A PIL image back to a uint8 [C, H, W] tensor of ``channels`` channels."""
    array = np.array(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[2] != channels:
        raise ValueError(f"the anchor returned a {image.mode} image of {array.shape[2]} channels, expected {channels}")
    return torch.from_numpy(array).permute(2, 0, 1)


class AnchorAugment:
    """A training ``augment`` (uint8 batch, generator -> uint8 batch) that runs an anchor per image.

    With a ``baseline``, its pad-and-crop and flip come first, then the anchor, as in torchvision's and
    timm's training recipes (crop and flip, then the auto-augmentation). Images go to the CPU and back,
    since the libraries work on PIL images.
    """

    def __init__(self, anchor: Anchor, image_size: int, mean: Sequence[float],
                 baseline: Baseline | None = None) -> None:
        problem = anchor.available()
        if problem:
            raise AnchorUnavailable(f"{anchor.name}: {problem}")
        self.anchor = anchor
        self.transform = anchor.build(image_size, mean)
        self.baseline = BaselineAugment(baseline) if baseline is not None else None

    def __call__(self, batch: Tensor, generator: torch.Generator) -> Tensor:
        if batch.dtype != torch.uint8 or batch.dim() != 4:
            raise ValueError(f"expected a uint8 batch [B, C, H, W], got {batch.dtype} {tuple(batch.shape)}")
        if self.baseline is not None:
            batch = self.baseline(batch, generator)
        seed = anchor_seed(generator)
        images = batch.cpu()
        out = torch.empty_like(images)
        with isolated_global_rng(seed), _one_thread():
            for i, image in enumerate(images):
                out[i] = pil_to_uint8(self.transform(uint8_to_pil(image)), images.shape[1])
        return out.to(batch.device)

    def __repr__(self) -> str:
        return f"AnchorAugment({self.anchor.call}, baseline={self.baseline})"
