"""Property-based tests of the transforms: any valid policy on any valid image keeps its shape, dtype,
device and value range, and leaves the input untouched.

Policies are drawn from the whole op table (1 to 5 sub-policies of 1 to 3 ops, probabilities and levels
anywhere in [0, 1], the ends included) with any baseline (pad-and-crop of 0 to 4096 pixels, flip or not). Images are PIL (L and RGB), uint8 tensors and float tensors
(float16, bfloat16, float32, float64), single or in batches of 0 to 64. Sizes are drawn small (large
images are expensive); the extremes 1x1, 384x512, 512x384 and batches of 0 and 64 are explicit examples.

The profile is chosen by ``POLICYSEARCH_HYPOTHESIS``: ``ci`` (the default) draws the counts in
``EXAMPLES`` from a fixed seed, so a run repeats; ``thorough`` draws ten times as many at random.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision import tv_tensors

from policysearch.augment.ops import OP_NAMES
from policysearch.augment.policy import Baseline, Operation, Policy
from policysearch.augment.image_transform import PolicyTransform
from policysearch.augment.transforms import BatchPolicyTransform

settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("thorough", deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PROFILE = os.environ.get("POLICYSEARCH_HYPOTHESIS", "ci")
SCALE = {"ci": 1, "thorough": 10}[PROFILE]

# Examples per property in the ci profile (the README's "Guarantees" quotes these).
EXAMPLES = {"pil": 250, "tensor": 200, "batch_uint8": 250, "batch_float": 250, "layout": 100}

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _settings(name: str) -> settings:
    return settings(settings.get_profile(PROFILE), max_examples=EXAMPLES[name] * SCALE)


unit = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0))
steps = st.tuples(st.sampled_from(OP_NAMES), unit, unit)
baselines = st.builds(Baseline, st.one_of(st.just(0), st.integers(0, 8), st.integers(0, 4096)), st.booleans())
policies = st.builds(
    lambda subs, baseline: Policy([[Operation(*step) for step in sub] for sub in subs], baseline=baseline),
    st.lists(st.lists(steps, min_size=1, max_size=3), min_size=1, max_size=5), baselines)
# Mostly small sides (cheap, and where off-by-one bugs live); now and then up to the largest size.
sides = st.one_of(st.integers(1, 12), st.integers(1, 12), st.integers(1, 40), st.integers(1, 96))
seeds = st.integers(0, 2**32 - 1)

# Every op at full probability and strength: the explicit examples exercise all of them at the extremes.
ALL_OPS = Policy([[Operation(name, 1.0, 1.0) for name in OP_NAMES[k:k + 3]] for k in range(0, len(OP_NAMES), 3)])
# The largest pad-and-crop a policy file may ask for, on batches of the largest size: the padded image
# must never be built (64 x 3 x 8193 x 8193 floats are 51 GB).
WIDEST = ALL_OPS.with_baseline(Baseline(pad_crop=4096, hflip=True))
# Lines and the smallest images, where a kernel or an index can run past the edge (ALL_OPS covers the
# largest sizes in the examples above).
EXTREME_SIZES = [(1, 1), (1, 2), (2, 2), (3, 3), (1, 384), (512, 1)]


def _pool(seed: int) -> list[Image.Image]:
    """SamplePairing's partners on the PIL path: other sizes and modes than the image, as in real use."""
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8), "RGB"),
            Image.fromarray(rng.integers(0, 256, (9, 4), dtype=np.uint8), "L")]


def _uint8(shape: tuple[int, ...], seed: int, device: str = "cpu") -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen).to(device)


def _float(shape: tuple[int, ...], seed: int, dtype: torch.dtype, device: str = "cpu") -> torch.Tensor:
    """Values in [0, 1] with both ends present (ops that stretch or invert reach them)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=gen, dtype=torch.float64)
    x.view(-1)[:: 7] = 0.0
    x.view(-1)[3:: 11] = 1.0
    return x.to(dtype).to(device)


def _check_tensor(out: torch.Tensor, image: torch.Tensor) -> None:
    assert type(out) is type(image)
    assert out.shape == image.shape
    assert out.dtype == image.dtype
    assert out.device == image.device
    if out.is_floating_point() and out.numel():
        assert not torch.isnan(out).any()
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


# ---------------------------------------------------------------------------------------------------
# PolicyTransform on PIL images
# ---------------------------------------------------------------------------------------------------


@_settings("pil")
@given(policy=policies, mode=st.sampled_from(["L", "RGB"]), height=sides, width=sides, seed=seeds)
@example(policy=ALL_OPS, mode="RGB", height=1, width=1, seed=0)
@example(policy=ALL_OPS, mode="L", height=1, width=1, seed=1)
@example(policy=ALL_OPS, mode="RGB", height=384, width=512, seed=2)
@example(policy=ALL_OPS, mode="L", height=512, width=384, seed=3)
@example(policy=WIDEST, mode="RGB", height=1, width=1, seed=4)
def test_pil_images_keep_mode_and_size(policy, mode, height, width, seed):
    channels = 3 if mode == "RGB" else 1
    pixels = _uint8((height, width, channels), seed).numpy()
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)
    before = image.tobytes()
    transform = PolicyTransform(policy, pool=_pool(seed), generator=torch.Generator().manual_seed(seed))
    out = transform(image)
    assert isinstance(out, Image.Image)
    assert (out.mode, out.size) == (mode, (width, height))
    assert image.tobytes() == before  # the input is not changed in place


# ---------------------------------------------------------------------------------------------------
# PolicyTransform on single tensors [C, H, W] (plain and tv_tensors.Image)
# ---------------------------------------------------------------------------------------------------


@_settings("tensor")
@given(policy=policies, channels=st.sampled_from([1, 3]), height=sides, width=sides, seed=seeds,
       dtype=st.sampled_from([torch.uint8, *FLOATS]), wrap=st.booleans(), device=st.sampled_from(DEVICES))
@example(policy=ALL_OPS, channels=3, height=1, width=1, seed=0, dtype=torch.uint8, wrap=False, device="cpu")
@example(policy=ALL_OPS, channels=1, height=1, width=1, seed=0, dtype=torch.float32, wrap=False, device="cpu")
@example(policy=ALL_OPS, channels=3, height=512, width=384, seed=1, dtype=torch.float32, wrap=True, device="cpu")
@example(policy=ALL_OPS, channels=1, height=384, width=512, seed=2, dtype=torch.uint8, wrap=False, device="cpu")
def test_single_tensors_keep_shape_dtype_device_and_range(policy, channels, height, width, seed, dtype, wrap,
                                                          device):
    shape = (channels, height, width)
    image = _uint8(shape, seed, device) if dtype == torch.uint8 else _float(shape, seed, dtype, device)
    if wrap:
        image = tv_tensors.Image(image)
    before = image.clone()
    out = PolicyTransform(policy, pool=_pool(seed), generator=torch.Generator(device).manual_seed(seed))(image)
    _check_tensor(out, image)
    assert torch.equal(image, before)


# ---------------------------------------------------------------------------------------------------
# BatchPolicyTransform on batches [B, C, H, W], B from 0 to 64
# ---------------------------------------------------------------------------------------------------

batch_sizes = st.one_of(st.integers(0, 8), st.integers(0, 64))


@_settings("batch_uint8")
@given(policy=policies, batch=batch_sizes, channels=st.sampled_from([1, 3]), height=sides, width=sides,
       seed=seeds, device=st.sampled_from(DEVICES))
@example(policy=ALL_OPS, batch=0, channels=3, height=1, width=1, seed=0, device="cpu")
@example(policy=ALL_OPS, batch=64, channels=3, height=1, width=1, seed=0, device="cpu")
@example(policy=ALL_OPS, batch=64, channels=1, height=9, width=5, seed=1, device="cpu")
@example(policy=ALL_OPS, batch=0, channels=3, height=512, width=384, seed=0, device="cpu")
@example(policy=ALL_OPS, batch=3, channels=3, height=384, width=512, seed=2, device="cpu")
@example(policy=ALL_OPS, batch=1, channels=3, height=2, width=2, seed=3, device="cpu")
@example(policy=WIDEST, batch=64, channels=3, height=1, width=1, seed=4, device="cpu")
@example(policy=WIDEST, batch=2, channels=3, height=384, width=512, seed=5, device="cpu")
def test_uint8_batches_keep_shape_dtype_and_device(policy, batch, channels, height, width, seed, device):
    images = _uint8((batch, channels, height, width), seed, device)
    before = images.clone()
    out = BatchPolicyTransform(policy)(images, torch.Generator(device).manual_seed(seed))
    _check_tensor(out, images)
    assert torch.equal(images, before)


@_settings("batch_float")
@given(policy=policies, batch=batch_sizes, channels=st.sampled_from([1, 3]), height=sides, width=sides,
       seed=seeds, dtype=st.sampled_from(FLOATS), device=st.sampled_from(DEVICES))
@example(policy=ALL_OPS, batch=0, channels=1, height=1, width=1, seed=0, dtype=torch.float32, device="cpu")
@example(policy=ALL_OPS, batch=64, channels=3, height=1, width=1, seed=0, dtype=torch.float32, device="cpu")
@example(policy=ALL_OPS, batch=64, channels=3, height=7, width=6, seed=1, dtype=torch.float16, device="cpu")
@example(policy=ALL_OPS, batch=0, channels=3, height=384, width=512, seed=0, dtype=torch.float32, device="cpu")
@example(policy=ALL_OPS, batch=3, channels=1, height=512, width=384, seed=2, dtype=torch.float64, device="cpu")
@example(policy=ALL_OPS, batch=2, channels=3, height=384, width=512, seed=3, dtype=torch.bfloat16, device="cpu")
@example(policy=WIDEST, batch=64, channels=3, height=1, width=1, seed=4, dtype=torch.float32, device="cpu")
def test_float_batches_keep_shape_dtype_device_and_range(policy, batch, channels, height, width, seed, dtype,
                                                         device):
    images = _float((batch, channels, height, width), seed, dtype, device)
    before = images.clone()
    out = BatchPolicyTransform(policy)(images, torch.Generator(device).manual_seed(seed))
    _check_tensor(out, images)
    assert torch.equal(images, before)


def _layout(images: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values in another memory layout: as a permuted [B, H, W, C] array (numpy and PIL data
    arrive so), channels-last, or every other column of a wider batch."""
    if layout == "hwc":
        return images.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    if layout == "channels_last":
        return images.contiguous(memory_format=torch.channels_last)
    wide = torch.zeros((*images.shape[:3], images.shape[3] * 2), dtype=images.dtype, device=images.device)
    wide[..., ::2] = images
    return wide[..., ::2]


def test_the_widest_baseline_crops_without_building_the_padded_image():
    """pad_crop up to 4096 is valid: on a 1x1 image each sample is its pixel or zero, never an allocation
    failure; on PIL and on a batch alike."""
    policy = Policy([[Operation("Identity", 1.0, 0.0)]], baseline=Baseline(pad_crop=4096))
    images = torch.full((64, 3, 1, 1), 0.5)
    out = BatchPolicyTransform(policy)(images, torch.Generator().manual_seed(0))
    assert set(out.unique().tolist()) <= {0.0, 0.5} and out.shape == images.shape
    image = Image.new("RGB", (1, 1), (9, 9, 9))
    pixels = {PolicyTransform(policy, generator=torch.Generator().manual_seed(k))(image).getpixel((0, 0))
              for k in range(20)}
    assert pixels <= {(0, 0, 0), (9, 9, 9)}


@_settings("layout")
@given(policy=policies, batch=st.integers(1, 8), channels=st.sampled_from([1, 3]), height=sides, width=sides,
       seed=seeds, dtype=st.sampled_from([torch.uint8, torch.float32]),
       layout=st.sampled_from(["hwc", "channels_last", "strided"]))
def test_memory_layout_does_not_change_the_result(policy, batch, channels, height, width, seed, dtype, layout):
    shape = (batch, channels, height, width)
    images = _uint8(shape, seed) if dtype == torch.uint8 else _float(shape, seed, dtype)
    strided = _layout(images, layout)
    transform = BatchPolicyTransform(policy)
    out = transform(strided, torch.Generator().manual_seed(seed))
    _check_tensor(out, images)
    assert torch.equal(out, transform(images, torch.Generator().manual_seed(seed)))
    assert torch.equal(strided, images)


# ---------------------------------------------------------------------------------------------------
# Each op alone at full strength, at every extreme size and on every kind of input
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("height, width", EXTREME_SIZES, ids=[f"{h}x{w}" for h, w in EXTREME_SIZES])
@pytest.mark.parametrize("op", OP_NAMES)
def test_every_op_at_full_strength_on_extreme_sizes(op, height, width):
    policy = Policy([[Operation(op, 1.0, 1.0)]], baseline=Baseline(pad_crop=height % 3, hflip=True))
    gen = torch.Generator().manual_seed(0)
    for channels in (1, 3):
        for images in (_uint8((2, channels, height, width), 0), _float((2, channels, height, width), 0, torch.float32)):
            _check_tensor(BatchPolicyTransform(policy)(images, gen), images)
        pixels = _uint8((height, width, channels), 1).numpy()
        mode = "RGB" if channels == 3 else "L"
        image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)
        out = PolicyTransform(policy, pool=_pool(0), generator=gen)(image)
        assert (out.mode, out.size) == (mode, (width, height))
