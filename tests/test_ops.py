"""The op table: PIL reference against torchvision, and the batched path against the PIL reference.

Tolerances, stated once:

* PIL path vs torchvision's functional API on PIL images: bit-identical, for every op torchvision has.
* uint8 batched path vs PIL path, same argument and same random draws: bit-identical for every op with
  ``exact=True``. For ``exact=False`` ops: mean absolute difference <= 1 grey level and at least 99% of
  the pixels equal away from a 1-pixel border.
* float [0, 1] batched path vs uint8 batched path, same plan (values compared on the 0..255 scale):
  - identical for ops that only move, copy, compare or look up pixels (geometric ops, flips, Invert,
    Solarize, Cutout, ImpulseNoise) and for the ops defined on 256 levels (Equalize, Posterize): a
    float image holding k/255 is level k;
  - within 1 grey level (+1e-3) for ops the uint8 path rounds or truncates once (Brightness, Gamma,
    Blur, GaussianNoise, SamplePairing, AutoContrast);
  - within 1 + 0.5 * |factor - 1| grey levels (+1e-3) for Contrast, Color and Sharpness: the uint8 path,
    as PIL, also rounds the degenerate image (grey mean, luma, smoothed image) before the blend, and
    that half level is scaled by |1 - factor|.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode

from _images import natural_batch, natural_pil, pil_to_tensor
from policysearch.augment import cpu_kernels, kernels
from policysearch.augment.kernels import PLANE_COUNT_PIXELS, apply_lut, histogram
from policysearch.augment.ops import OP_RANGES, OPS, PilContext, TensorContext, pil_equalize_divisor
from policysearch.augment.warp import warp
from policysearch.augment.policy import Operation, Policy
from policysearch.augment.image_transform import _apply_pil
from policysearch.augment.transforms import BatchPolicyTransform

LEVELS = (0.0, 0.3, 0.7, 1.0)
IMAGES = [("RGB", 32, 32), ("L", 17, 23), ("RGB", 23, 17)]  # (mode, height, width)
NEAREST = InterpolationMode.NEAREST


def _signed_args(spec):
    """Every test level, both signs where the op is signed, in each op range where the op has its own."""
    ranges = OP_RANGES if spec.wide_high is not None else ("standard",)
    for name in ranges:
        for level in LEVELS:
            for sign in ((1, -1) if spec.signed else (1,)):
                yield level, sign * spec.argument(level, name)


# ---------------------------------------------------------------------------------------------------
# 1. PIL path == torchvision functional, bit for bit
# ---------------------------------------------------------------------------------------------------


def _torchvision(name: str, img: Image.Image, a: float) -> Image.Image:
    width, height = img.size
    calls = {
        "ShearX": lambda: F.affine(img, angle=0.0, translate=[0, 0], scale=1.0,
                                   shear=[math.degrees(math.atan(a)), 0.0], interpolation=NEAREST, fill=[0],
                                   center=[0, 0]),
        "ShearY": lambda: F.affine(img, angle=0.0, translate=[0, 0], scale=1.0,
                                   shear=[0.0, math.degrees(math.atan(a))], interpolation=NEAREST, fill=[0],
                                   center=[0, 0]),
        "TranslateX": lambda: F.affine(img, angle=0.0, translate=[int(a * width), 0], scale=1.0,
                                       shear=[0.0, 0.0], interpolation=NEAREST, fill=[0]),
        "TranslateY": lambda: F.affine(img, angle=0.0, translate=[0, int(a * height)], scale=1.0,
                                       shear=[0.0, 0.0], interpolation=NEAREST, fill=[0]),
        "TranslateXAbs": lambda: F.affine(img, angle=0.0, translate=[int(a), 0], scale=1.0,
                                          shear=[0.0, 0.0], interpolation=NEAREST, fill=[0]),
        "TranslateYAbs": lambda: F.affine(img, angle=0.0, translate=[0, int(a)], scale=1.0,
                                          shear=[0.0, 0.0], interpolation=NEAREST, fill=[0]),
        "Rotate": lambda: F.rotate(img, a, interpolation=NEAREST, fill=[0]),
        "Zoom": lambda: F.affine(img, angle=0.0, translate=[0, 0], scale=1.0 + a, shear=[0.0, 0.0],
                                 interpolation=NEAREST, fill=[0]),
        "Brightness": lambda: F.adjust_brightness(img, 1.0 + a),
        "Color": lambda: F.adjust_saturation(img, 1.0 + a),
        "Contrast": lambda: F.adjust_contrast(img, 1.0 + a),
        "Sharpness": lambda: F.adjust_sharpness(img, 1.0 + a),
        "Solarize": lambda: F.solarize(img, a),
        "Posterize": lambda: F.posterize(img, int(round(a))),
        "AutoContrast": lambda: F.autocontrast(img),
        "Equalize": lambda: F.equalize(img),
        "Invert": lambda: F.invert(img),
        "Gamma": lambda: F.adjust_gamma(img, math.exp(a)),
        "FlipLR": lambda: F.hflip(img),
        "FlipUD": lambda: F.vflip(img),
    }
    return calls[name]()


TORCHVISION_OPS = ["ShearX", "ShearY", "TranslateX", "TranslateY", "TranslateXAbs", "TranslateYAbs", "Rotate", "Zoom", "Brightness", "Color",
                   "Contrast", "Sharpness", "Solarize", "Posterize", "AutoContrast", "Equalize", "Invert",
                   "Gamma", "FlipLR", "FlipUD"]


@pytest.mark.parametrize("mode,height,width", IMAGES)
@pytest.mark.parametrize("name", TORCHVISION_OPS)
def test_pil_path_equals_torchvision(name, mode, height, width):
    spec = OPS[name]
    img = natural_pil(height, width, mode, seed=3)
    for level, a in _signed_args(spec):
        ours = np.asarray(spec.pil(img, a, {}, PilContext()))
        ref = np.asarray(_torchvision(name, img, a))
        assert ours.shape == ref.shape and ours.dtype == np.uint8
        assert np.array_equal(ours, ref), f"{name} level={level} arg={a} {mode} {height}x{width}"


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("name", ["Equalize", "AutoContrast", "Contrast", "Sharpness"])
def test_ops_on_an_image_s_bytes_equal_torchvision(name, mode):
    """PolicyTransform runs these ops on a PIL image's interleaved bytes with the compiled kernels: the same
    pixels as torchvision at every bin of both op ranges, from images too small to sharpen to 150x224,
    natural and noise (whose sums reach every remainder of 13), and as the PIL functions themselves."""
    rng = np.random.default_rng(5)
    spec = OPS[name]
    args = sorted({a for _, a in _signed_args(spec)} | (set(np.linspace(-0.99, 0.99, 23).tolist()) if spec.signed else set()))
    for height, width in ((1, 1), (2, 7), (3, 3), (17, 23), (95, 96), (150, 224)):
        noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        narrow = rng.integers(60, 90, (height, width, 3), dtype=np.uint8)
        for img in (natural_pil(height, width, mode, seed=4), *(Image.fromarray(a, "RGB").convert(mode) for a in (noise, narrow))):
            for a in args:
                ours = np.asarray(_apply_pil(spec, img, a, {}, PilContext()))
                assert np.array_equal(ours, np.asarray(_torchvision(name, img, a))), f"{name} arg={a} {mode} {height}x{width}"
                assert np.array_equal(ours, np.asarray(spec.pil(img, a, {}, PilContext()))), f"{name} arg={a}"


def test_compiled_ops_on_an_image_refuse_what_they_cannot_change_in_place():
    for pixels in (np.zeros((4, 4, 3)), np.zeros((4, 8, 3), dtype=np.uint8)[:, ::2], np.zeros(4, dtype=np.uint8),
                   np.zeros((4, 4, 2), dtype=np.uint8)):
        with pytest.raises(ValueError, match="writable contiguous uint8 array"):
            cpu_kernels.run_on_image(pixels, cpu_kernels.EQUALIZE, 0.0, 255)
    with pytest.raises(ValueError, match="computes its own table"):
        cpu_kernels.run_on_image(np.zeros((4, 4, 3), dtype=np.uint8), cpu_kernels.TABLE, 0.0, 255)


def test_ops_on_an_image_s_bytes_keep_its_info():
    """PIL's ops keep an image's info (dpi, icc_profile); so does the compiled route."""
    img = natural_pil(12, 10, "RGB", seed=1)
    img.info.update(dpi=(300, 300), icc_profile=b"profile")
    for name in ("Equalize", "AutoContrast", "Contrast", "Sharpness"):
        assert _apply_pil(OPS[name], img, 0.3, {}, PilContext()).info == img.info, name


def test_a_transform_compiles_the_kernels_where_it_is_built():
    """Built in the parent, a transform leaves both entry points compiled, so that forked DataLoader
    workers inherit them rather than compiling them again every epoch."""
    code = ("from policysearch.augment import cpu_kernels as k\n"
            "from policysearch.augment.image_transform import PolicyTransform\n"
            "from policysearch.augment.policy import Operation, Policy\n"
            "assert not k._run.signatures and not k._run_image.signatures\n"
            "PolicyTransform(Policy([[Operation('Sharpness', 1.0, 0.5)]]))\n"
            "assert k._run.signatures and k._run_image.signatures\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def _hard_images() -> list[Image.Image]:
    """Images where the histogram ops take their special branches: flat, one or two levels, a narrow
    range, a range touching 0 or 255, and natural ones, in L and RGB."""
    rng = np.random.default_rng(12)
    arrays = [np.full((9, 11, 3), 77), np.zeros((9, 11, 3)), np.full((9, 11, 3), 255),
              rng.choice([10, 200], size=(9, 11, 3)), rng.integers(100, 104, (9, 11, 3)),
              rng.integers(0, 256, (13, 7, 3)), rng.integers(0, 40, (13, 7, 3)), rng.integers(250, 256, (8, 8, 3))]
    rgb = [Image.fromarray(a.astype(np.uint8), "RGB") for a in arrays] + [natural_pil(19, 23, "RGB", seed=9)]
    return rgb + [img.convert("L") for img in rgb]


def test_pil_pixel_ops_equal_imageops_and_imageenhance():
    """The PIL references build their tables with numpy instead of Pillow's Python loops: the same
    images as ImageOps and ImageEnhance give, on images that take every branch and at every argument."""
    from PIL import ImageEnhance, ImageOps

    ctx = PilContext()
    for img in _hard_images():
        assert OPS["AutoContrast"].pil(img, 0.0, {}, ctx).tobytes() == ImageOps.autocontrast(img).tobytes()
        assert OPS["Equalize"].pil(img, 0.0, {}, ctx).tobytes() == ImageOps.equalize(img).tobytes()
        assert OPS["Invert"].pil(img, 0.0, {}, ctx).tobytes() == ImageOps.invert(img).tobytes()
        for threshold in (0.0, 0.5, 1.0, 77.0, 77.3, 128.0, 254.9, 255.0, 256.0):
            want = ImageOps.solarize(img, threshold)
            assert OPS["Solarize"].pil(img, threshold, {}, ctx).tobytes() == want.tobytes(), threshold
        for bits in range(1, 9):
            assert OPS["Posterize"].pil(img, float(bits), {}, ctx).tobytes() == ImageOps.posterize(img, bits).tobytes()
        for factor in (0.01, 0.1, 0.55, 1.0, 1.45, 1.99):
            want = ImageEnhance.Contrast(img).enhance(factor)
            assert OPS["Contrast"].pil(img, factor - 1.0, {}, ctx).tobytes() == want.tobytes(), factor
        assert all(OPS[name].pil(img, 0.5, {}, ctx).mode == img.mode for name in ("Contrast", "Equalize", "Invert"))


def test_every_magnitude_op_changes_a_natural_image_at_full_level():
    """Guards the tests above against comparing identities: level 1 really does something."""
    img = natural_pil(32, 32, "RGB", seed=3)
    for name in TORCHVISION_OPS:
        spec = OPS[name]
        if name in ("AutoContrast",):  # the test image already spans 0..255 in every channel
            continue
        out = np.asarray(spec.pil(img, spec.argument(1.0), {}, PilContext()))
        assert not np.array_equal(out, np.asarray(img)), name


def test_level_zero_is_identity_for_magnitude_ops():
    img = natural_pil(17, 23, "RGB", seed=5)
    for name, spec in OPS.items():
        if spec.has_magnitude:
            out = spec.pil(img, spec.argument(0.0), _draws(spec, 1, (3, 17, 23)), PilContext(pool=[img]))
            assert np.array_equal(np.asarray(out), np.asarray(img)), name


# ---------------------------------------------------------------------------------------------------
# 2. batched path == PIL path for every op, same arguments, same draws
# ---------------------------------------------------------------------------------------------------


def _draws(spec, n, chw, seed=0):
    gen = torch.Generator().manual_seed(seed)
    draw = spec.sample(n, chw, gen, torch.device("cpu")) if spec.sample else {}
    return {**draw, "index": torch.arange(n)}


def _per_sample(draw, i):
    return {key: value[i:i + 1] for key, value in draw.items()}


def _batch_args(spec):
    """One (level, signed argument) per sample: every level, both signs where the op is signed."""
    return list(_signed_args(spec))


def _run_compiled(spec, batch, args):
    """``spec`` on a uint8 batch through ``cpu_kernels`` (the CPU path of BatchPolicyTransform), one call."""
    n = len(batch)
    code = cpu_kernels.CODES.get(spec.name, cpu_kernels.TABLE)
    ctx = TensorContext(exact=True, fill=torch.zeros(batch.shape[1]))
    tables = (spec.table(batch, args, ctx)[:, 0].to(torch.uint8) if code == cpu_kernels.TABLE
              else torch.zeros((n, 256), dtype=torch.uint8))
    out = batch.clone()
    cpu_kernels.run_pixel_ops(out, torch.arange(n), torch.full((n,), code), args, tables, pil_equalize_divisor())
    return out


COMPILED_OPS = [name for name, spec in OPS.items() if spec.table is not None or name in cpu_kernels.CODES]


def _compare_batch_with_pil(name, mode, height, width, seed, compiled=False):
    spec = OPS[name]
    levels_args = _batch_args(spec)
    n = len(levels_args)
    channels = 1 if mode == "L" else 3
    batch = natural_batch(n, height, width, channels, seed=seed)
    args = torch.tensor([a for _, a in levels_args], dtype=torch.float64)
    draw = _draws(spec, n, (channels, height, width), seed=seed)
    x = batch.to(torch.float32)
    ctx = TensorContext(exact=True, fill=torch.zeros(channels), source=x.clone())
    if compiled:
        out = _run_compiled(spec, batch, args)
    else:
        out = spec.tensor(x.clone(), args, draw, ctx).round().clamp(0, 255).to(torch.uint8)
    assert out.shape == batch.shape
    images = [Image.fromarray(b.permute(1, 2, 0).squeeze(2).numpy(), mode) for b in batch]
    for i, (level, a) in enumerate(levels_args):
        # SamplePairing on a batch blends with another sample: index + 1 + floor(u * (n - 1)) mod n.
        # A pool of the other samples in that order makes the PIL path pick the same partner.
        pool = [images[(i + 1 + k) % n] for k in range(n - 1)]
        ref = pil_to_tensor(spec.pil(images[i], a, _per_sample(draw, i), PilContext(fill=(0,), pool=pool)))
        got = out[i]
        where = f"{name} level={level} arg={a} {mode} {height}x{width} sample {i}"
        if spec.exact or compiled:
            assert torch.equal(got, ref), f"{where}: {(got != ref).sum().item()} pixels differ"
        else:
            diff = (got.int() - ref.int()).abs()
            assert diff.float().mean() <= 1.0, where
            assert (diff[:, 1:-1, 1:-1] == 0).float().mean() >= 0.99, where


@pytest.mark.parametrize("mode,height,width", IMAGES)
@pytest.mark.parametrize("name", list(OPS))
def test_batched_uint8_equals_pil(name, mode, height, width):
    _compare_batch_with_pil(name, mode, height, width, seed=11)


@pytest.mark.parametrize("mode,height,width", IMAGES + [("RGB", 3, 3), ("L", 2, 5), ("RGB", 1, 1), ("RGB", 3, 40)])
@pytest.mark.parametrize("name", COMPILED_OPS)
def test_compiled_kernels_equal_pil(name, mode, height, width):
    """The CPU path's compiled kernels give PIL's pixels for every level and sign (Sharpness too: the kernel
    reproduces PIL's integer SMOOTH, so its stated tolerance is not needed), down to images too small to
    sharpen."""
    _compare_batch_with_pil(name, mode, height, width, seed=11, compiled=True)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("name", COMPILED_OPS)
def test_compiled_kernels_equal_pil_more_images(name, seed):
    for mode, height, width in [("RGB", 32, 32), ("L", 9, 40), ("RGB", 64, 48), ("RGB", 130, 97)]:
        _compare_batch_with_pil(name, mode, height, width, seed=100 + seed, compiled=True)


def test_compiled_kernels_run_mixed_ops_in_one_call_as_each_alone():
    """One call applies each listed sample's own op (tables, Equalize, AutoContrast, Contrast, Color,
    Sharpness mixed, in any order) exactly as a call for that op alone does; unlisted samples stay."""
    names = COMPILED_OPS * 2
    batch = natural_batch(len(names) + 3, 19, 21, 3, seed=4)
    rng = np.random.default_rng(4)
    order = torch.from_numpy(rng.permutation(len(batch))[:len(names)])
    args = torch.from_numpy(rng.uniform(-0.9, 0.9, len(names)))
    args = torch.where(torch.tensor([OPS[name].low > 1 for name in names]), 128.0, args)  # Solarize, Posterize
    ctx = TensorContext(exact=True, fill=torch.zeros(3))
    tables = torch.stack([OPS[name].table(batch[i:i + 1], args[k:k + 1], ctx)[0, 0].to(torch.uint8)
                          if name not in cpu_kernels.CODES else torch.zeros(256, dtype=torch.uint8)
                          for k, (name, i) in enumerate(zip(names, order.tolist()))])
    codes = torch.tensor([cpu_kernels.CODES.get(name, cpu_kernels.TABLE) for name in names])
    out = batch.clone()
    cpu_kernels.run_pixel_ops(out, order, codes, args, tables, pil_equalize_divisor())
    for k, (name, i) in enumerate(zip(names, order.tolist())):
        assert torch.equal(out[i], _run_compiled(OPS[name], batch[i:i + 1], args[k:k + 1])[0]), name
    untouched = sorted(set(range(len(batch))) - set(order.tolist()))
    assert torch.equal(out[untouched], batch[untouched])


def test_compiled_autocontrast_follows_pillow_for_every_range():
    """Every (lo, hi) pair of a grey image through the compiled AutoContrast: Pillow's double-precision table."""
    lo, hi = np.triu_indices(256, k=1)
    ramp = np.arange(256)
    x = np.zeros((len(lo), 1, 1, 258), dtype=np.uint8)
    x[:, 0, 0, 0], x[:, 0, 0, 1], x[:, 0, 0, 2:] = lo, hi, np.clip(ramp, lo[:, None], hi[:, None])
    batch = torch.from_numpy(x)
    out = _run_compiled(OPS["AutoContrast"], batch, torch.zeros(len(lo), dtype=torch.float64))[:, 0, 0, 2:].numpy()
    scale = 255.0 / (hi - lo).astype(np.float64)
    table = np.clip(np.trunc(ramp[None, :] * scale[:, None] + (-lo * scale)[:, None]), 0, 255)
    assert np.array_equal(out, np.take_along_axis(table, np.clip(ramp, lo[:, None], hi[:, None]), 1))


@pytest.mark.parametrize("batch", [torch.zeros((2, 3, 4, 4)), torch.zeros((2, 3, 4, 4), dtype=torch.uint8)[..., ::2],
                                   torch.zeros((3, 4, 4), dtype=torch.uint8), torch.zeros((2, 2, 4, 4), dtype=torch.uint8)])
def test_compiled_kernels_refuse_a_batch_they_cannot_change_in_place(batch):
    with pytest.raises(ValueError, match="contiguous uint8 batch"):
        cpu_kernels.run_pixel_ops(batch, torch.arange(1), torch.zeros(1, dtype=torch.int64),
                                  torch.zeros(1, dtype=torch.float64), torch.zeros((1, 256), dtype=torch.uint8), 255)


@pytest.mark.parametrize("index,table_rows,error", [([0, 2], 2, "out of range for a batch of 2"),
                                                    ([-1], 1, "out of range"), ([0, 1], 1, "one table")])
def test_compiled_kernels_refuse_indices_and_tables_that_do_not_fit_the_batch(index, table_rows, error):
    """Regression: the kernels do not check their indices, and a hand-built plan with a sample outside the
    batch or a table too few wrote past the batch (or crashed the process) instead of raising."""
    batch = torch.zeros((2, 3, 4, 4), dtype=torch.uint8)
    k = len(index)
    with pytest.raises((ValueError, IndexError), match=error):
        cpu_kernels.run_pixel_ops(batch, torch.tensor(index), torch.full((k,), cpu_kernels.TABLE),
                                  torch.zeros(k, dtype=torch.float64), torch.zeros((table_rows, 256), dtype=torch.uint8), 255)
    plan_batch = natural_batch(2, 4, 4, 3, seed=1)
    transform = BatchPolicyTransform(Policy([[Operation("Equalize", 1.0, 0.0)]]))
    plan = transform.sample(plan_batch.shape, generator=torch.Generator().manual_seed(0))
    outside = dataclasses.replace(plan, steps=tuple(dataclasses.replace(step, index=step.index + 5) for step in plan.steps),
                                  drawn=False)
    with pytest.raises((ValueError, IndexError)):
        transform.apply(plan_batch, outside)


@pytest.mark.parametrize("mode,height,width", IMAGES + [("RGB", 3, 3)])
@pytest.mark.parametrize("name", list(OPS))
def test_exact_results_are_whole_levels(name, mode, height, width):
    """In exact mode every op returns whole levels 0..255: the batch path converts them to uint8 as they are."""
    spec = OPS[name]
    levels_args = _batch_args(spec)
    n, channels = len(levels_args), 1 if mode == "L" else 3
    x = natural_batch(n, height, width, channels, seed=9).float()
    x[0] = 0.0
    x[-1] = 255.0
    args = torch.tensor([a for _, a in levels_args], dtype=torch.float64)
    draw = _draws(spec, n, (channels, height, width), seed=9)
    out = spec.tensor(x.clone(), args, draw, TensorContext(exact=True, fill=torch.zeros(channels), source=x))
    assert torch.equal(out, out.round().clamp(0, 255)), name


@pytest.mark.parametrize("mode,height,width", IMAGES + [("RGB", 3, 3), ("L", 2, 5)])
@pytest.mark.parametrize("name", [name for name, spec in OPS.items() if spec.uint8])
def test_uint8_ops_on_uint8_equal_their_float_exact_path(name, mode, height, width):
    """Ops marked ``uint8`` take the uint8 batch as it is and return uint8 equal to the exact float path."""
    spec = OPS[name]
    levels_args = _batch_args(spec)
    n, channels = len(levels_args), 1 if mode == "L" else 3
    batch = natural_batch(n, height, width, channels, seed=5)
    args = torch.tensor([a for _, a in levels_args], dtype=torch.float64)
    draw = _draws(spec, n, (channels, height, width), seed=5)
    fill = torch.full((channels,), 7.0)
    want = spec.tensor(batch.float(), args, draw, TensorContext(exact=True, fill=fill))
    got = spec.tensor(batch.clone(), args, draw, TensorContext(exact=True, fill=fill))
    assert got.dtype == torch.uint8
    assert torch.equal(got, want.round().clamp(0, 255).to(torch.uint8)), name


@pytest.mark.parametrize("name", [name for name, spec in OPS.items() if spec.direct])
def test_uint8_kernels_equal_their_tables_on_every_level(name):
    """An op with a uint8 kernel (bitwise ops, compares) gives exactly its table's value for every level
    0..255 and every argument: a dense sweep of both op ranges, both signs and the whole-number edges."""
    spec = OPS[name]
    ranges = [spec.bounds(r) for r in OP_RANGES]
    args = torch.cat([torch.linspace(lo, hi, 101, dtype=torch.float64) for lo, hi in ranges]
                     + [torch.arange(min(min(r) for r in ranges), max(max(r) for r in ranges) + 1,
                                     dtype=torch.float64)])
    args = torch.cat([args, -args]) if spec.signed else args
    levels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(len(args), 3, 16, 16).contiguous()
    ctx = TensorContext(exact=True, fill=torch.zeros(3))
    got = spec.tensor(levels, args, {}, ctx)
    assert got.dtype == torch.uint8
    assert torch.equal(got, apply_lut(levels, spec.table(levels, args, ctx)))


def test_autocontrast_table_follows_pillow_for_every_range():
    """Pillow: scale = 255.0 / (hi - lo), lut[i] = int(i * scale + -lo * scale) clipped, in double precision.
    Every (lo, hi) pair, so a last-bit difference in the scale cannot hide (natural images span 0..255)."""
    lo, hi = np.triu_indices(256, k=1)
    x = torch.from_numpy(np.stack([lo, hi], 1).astype(np.uint8)).view(-1, 1, 1, 2)
    ours = OPS["AutoContrast"].table(x, torch.zeros(len(lo), dtype=torch.float64),
                                     TensorContext(exact=True, fill=torch.zeros(1)))[:, 0].numpy()
    scale = 255.0 / (hi - lo).astype(np.float64)  # numpy divides exactly as Python does
    reference = np.clip(np.trunc(np.arange(256)[None, :] * scale[:, None] + (-lo * scale)[:, None]), 0, 255)
    assert np.array_equal(ours, reference)


@pytest.mark.parametrize("levels", [(0, 7), (3, 81), (100, 180), (37, 250)])
@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("compiled", [False, True])
def test_pixel_ops_equal_pil_on_images_with_a_narrow_range(levels, mode, compiled):
    """Images squeezed into [lo, hi] (natural test images span 0..255): histogram and range ops see real
    work, in the torch kernels and in the compiled ones (regression: the compiled AutoContrast negated
    the lowest level as uint8, which wrapped around)."""
    lo, hi = levels
    channels = 1 if mode == "L" else 3
    batch = (lo + natural_batch(6, 13, 17, channels, seed=4).double() * (hi - lo) / 255).round().to(torch.uint8)
    images = [Image.fromarray(b.permute(1, 2, 0).squeeze(2).numpy(), mode) for b in batch]
    ctx = TensorContext(exact=True, fill=torch.zeros(channels))
    for name in ["AutoContrast", "Equalize", "Contrast", "Brightness", "Color", "Solarize", "Posterize", "Gamma"]:
        spec = OPS[name]
        signs = (1, -1, 1, 1, -1, 1) if spec.signed else (1,) * 6
        args = torch.tensor([s * spec.argument(v) for s, v in zip(signs, (0.1, 0.4, 0.55, 0.8, 1.0, 1.0))],
                            dtype=torch.float64)
        out = _run_compiled(spec, batch, args) if compiled else spec.tensor(batch, args, {}, ctx)
        for i, img in enumerate(images):
            ref = pil_to_tensor(spec.pil(img, float(args[i]), {}, PilContext()))
            assert torch.equal(out[i], ref), f"{name} arg={float(args[i])} range {levels} {mode} sample {i}"


@pytest.mark.parametrize("names", [["Zoom", "Rotate", "ShearX", "TranslateY", "ShearY", "TranslateX"],
                                   ["Zoom", "TranslateX", "TranslateY"], ["Rotate", "TranslateY", "ShearX"]])
def test_one_warp_of_mixed_geometric_ops_equals_each_op_alone(names):
    """Samples of different geometric ops share one warp (a fused stage): zooms step in double precision,
    rotations and shears in fixed point and translations either way, exactly as each op alone."""
    per_op, h, w = 4, 19, 23
    batch = natural_batch(per_op * len(names), h, w, 3, seed=2)
    ctx = TensorContext(exact=True, fill=torch.tensor([7.0, 0.0, 255.0]))
    args = {name: torch.tensor([OPS[name].argument(v) for v in (0.3, -0.6, 1.0, -1.0)], dtype=torch.float64)
            for name in names}
    matrices = torch.cat([OPS[name].matrix(args[name], h, w) for name in names])
    together = warp(batch, matrices, ctx.fill)
    alone = torch.cat([OPS[name].tensor(part, args[name], {}, ctx)
                       for name, part in zip(names, batch.split(per_op))])
    assert together.dtype == torch.uint8
    assert torch.equal(together, alone)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_whole_pixel_translations_copy_windows_exactly_as_the_other_warps(dtype):
    """Translations run as window copies of each flat plane between margins of fill (columns moved in
    from the side set to the fill): the same pixels as the row/column warp and the fixed-point warp, for
    shifts in both directions, beyond the image, and with a fill of a colour per channel."""
    from policysearch.augment.warp import _warp_fixed_point, _warp_separable, warp_shift

    rng = np.random.default_rng(5)
    for channels, h, w in ((3, 13, 17), (1, 6, 5), (3, 1, 9), (3, 8, 1)):
        n = 24
        x = natural_batch(n, h, w, channels, seed=int(rng.integers(100))).to(dtype)
        m = np.tile([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], (n, 1))
        m[:, 2] = rng.integers(-w - 2, w + 3, n)
        m[:, 5] = rng.integers(-h - 2, h + 3, n)
        m[:3, [2, 5]] = 0.0  # and no move at all
        for fill in (torch.zeros(channels), torch.tensor([7.0, 0.0, 255.0][:channels])):
            got = warp_shift(x, m, fill)
            assert got.dtype == dtype
            assert torch.equal(got, _warp_separable(x, m, fill))
            assert torch.equal(got, _warp_fixed_point(x, m, fill))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("name", list(OPS))
def test_batched_uint8_equals_pil_more_images(name, seed):
    for mode, height, width in [("RGB", 32, 32), ("L", 9, 40), ("RGB", 64, 48), ("RGB", 3, 3)]:
        _compare_batch_with_pil(name, mode, height, width, seed=100 + seed)


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_large_planes_are_counted_one_by_one_with_the_same_result(mode, monkeypatch):
    """From PLANE_COUNT_PIXELS on, a uint8 batch on the CPU is counted plane by plane (no flat index is
    built): the same counts as numpy, and Equalize the same pixels as torchvision, just below, at and
    well above the bound, on natural images, a noise image and a flat one (Equalize leaves it as it is)."""
    flat_counts = []
    flat_index = kernels.table_index
    monkeypatch.setattr(kernels, "table_index", lambda x: flat_counts.append(x.shape) or flat_index(x))
    side = math.isqrt(PLANE_COUNT_PIXELS)
    channels = 1 if mode == "L" else 3
    rng = np.random.default_rng(8)
    spec = OPS["Equalize"]
    for height, width in ((side, side - 1), (side, side), (150, 224)):
        batch = torch.cat([natural_batch(2, height, width, channels, seed=8),
                           torch.from_numpy(rng.integers(0, 256, (1, channels, height, width), dtype=np.uint8)),
                           torch.full((1, channels, height, width), 93, dtype=torch.uint8)])
        flat_counts.clear()
        counts = np.stack([np.bincount(plane, minlength=256) for plane in batch.reshape(-1, height * width).numpy()])
        assert np.array_equal(histogram(batch).reshape(-1, 256).numpy(), counts), f"{mode} {height}x{width}"
        assert bool(flat_counts) == (height * width < PLANE_COUNT_PIXELS), f"{mode} {height}x{width}"
        out = spec.tensor(batch, torch.zeros(len(batch), dtype=torch.float64), {},
                          TensorContext(exact=True, fill=torch.zeros(channels)))
        for i, sample in enumerate(batch):
            assert torch.equal(out[i], F.equalize(sample)), f"Equalize {mode} {height}x{width} sample {i}"


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 3, 130, 130), (0, 3, 32, 32), (2, 0, 32, 32), (0, 3, 130, 130)])
def test_equalize_takes_channels_last_and_empty_batches(shape):
    """Regression: below the plane-count bound Equalize's flat index was a view of the input, which failed on
    a channels-last batch; a batch without samples or channels failed to reshape."""
    n, c, h, w = shape
    batch = natural_batch(n, h, w, 3, seed=2)[:, :c] if n else torch.zeros(shape, dtype=torch.uint8)
    args = torch.zeros(n, dtype=torch.float64)
    ctx = TensorContext(exact=True, fill=torch.zeros(c))
    expected = OPS["Equalize"].tensor(batch.contiguous(), args, {}, ctx)
    out = OPS["Equalize"].tensor(batch.contiguous(memory_format=torch.channels_last), args, {}, ctx)
    assert out.shape == batch.shape and torch.equal(out, expected)
    for i, sample in enumerate(batch if c else []):  # torchvision takes 1 or 3 channels
        assert torch.equal(out[i], F.equalize(sample))


def test_equalize_follows_the_installed_pillow_on_a_32x32_rgb_image():
    """Regression: the batched Equalize used // 256 for PIL's step; Pillow 13 uses // 255."""
    _compare_batch_with_pil("Equalize", "RGB", 32, 32, seed=3)


@pytest.mark.parametrize("radius", [0.15, 0.45, 0.75, 1.0, 1.05, 1.5, 2.7])
def test_blur_fixed_point_matches_pil_at_fractional_radii(radius):
    """Regression: PIL's BoxBlur weights are 8.24 fixed point with a float32 division."""
    from PIL import ImageFilter

    batch = natural_batch(3, 21, 30, 3, seed=7)
    spec = OPS["Blur"]
    out = spec.tensor(batch.float(), torch.full((3,), radius, dtype=torch.float64), {},
                      TensorContext(exact=True, fill=torch.zeros(3)))
    for i in range(3):
        img = Image.fromarray(batch[i].permute(1, 2, 0).numpy(), "RGB")
        assert torch.equal(out[i].to(torch.uint8), pil_to_tensor(img.filter(ImageFilter.BoxBlur(radius))))


# ---------------------------------------------------------------------------------------------------
# float [0, 1] batches agree with uint8 batches (same plan)
# ---------------------------------------------------------------------------------------------------

FLOAT_IDENTICAL = {"ShearX", "ShearY", "TranslateX", "TranslateY", "TranslateXAbs", "TranslateYAbs", "Rotate", "Zoom", "FlipLR", "FlipUD",
                   "Invert", "Solarize", "Cutout", "ImpulseNoise", "Identity", "Equalize", "Posterize"}
FLOAT_DEGENERATE_ROUNDED = {"Contrast", "Color", "Sharpness"}


def test_float_tolerance_table_covers_every_op():
    rounded_once = set(OPS) - FLOAT_IDENTICAL - FLOAT_DEGENERATE_ROUNDED
    assert rounded_once == {"Brightness", "Gamma", "Blur", "GaussianNoise", "SamplePairing", "AutoContrast"}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", list(OPS))
def test_float_batch_agrees_with_uint8_batch(name, channels, dtype):
    """A float batch of levels k / 255 gives the uint8 batch's result, up to the rounding of its own dtype:
    exactly so for the ops that need no rounding, also in float16 and bfloat16, whose k / 255 lie off the
    level (regression: float16 Posterize was one bin off where the level read just below a step)."""
    batch = natural_batch(24, 17, 23, channels, seed=21)
    policy = Policy([[Operation(name, 1.0, level)] for level in (0.3, 0.7, 1.0)])
    transform = BatchPolicyTransform(policy)
    plan = transform.sample(batch.shape, generator=torch.Generator().manual_seed(5))
    out8 = transform.apply(batch, plan)
    outf = transform.apply((batch.double() / 255.0).to(dtype), plan)
    assert out8.dtype == torch.uint8 and outf.dtype == dtype
    assert float(outf.min()) >= 0.0 and float(outf.max()) <= 1.0
    if name in FLOAT_IDENTICAL:
        # float16 and bfloat16 steps are far wider than 1e-6: equal to the levels' own rounding
        assert torch.allclose(outf, (out8.double() / 255.0).to(dtype), rtol=0.0, atol=1e-6), name
        return
    # the output's own rounding: half a unit in the last place of values up to 1, in grey levels
    rounding = 255.0 * torch.finfo(dtype).eps / 2 if dtype.itemsize < 4 else 1e-3
    diff = (outf.double() * 255.0 - out8.double()).abs()
    if name in FLOAT_DEGENERATE_ROUNDED:
        factor_gap = max(OPS[name].argument(level) for level in (0.3, 0.7, 1.0))
        assert float(diff.max()) <= 1.0 + 0.5 * factor_gap + rounding, name
    else:
        assert float(diff.max()) <= 1.0 + rounding, name
    assert float(diff.mean()) <= 0.75, name


# ---------------------------------------------------------------------------------------------------
# The op table itself
# ---------------------------------------------------------------------------------------------------


def test_op_table_shape():
    for name, spec in OPS.items():
        assert spec.name == name
        assert spec.argument(0.0) == spec.low and spec.argument(1.0) == spec.high
        assert callable(spec.pil) and callable(spec.tensor)
    assert {"ShearX", "Rotate", "Equalize", "Cutout", "SamplePairing"} <= set(OPS)


def test_sample_draws_are_per_sample_and_seeded():
    for name, spec in OPS.items():
        if spec.sample is None:
            continue
        a = spec.sample(8, (3, 16, 16), torch.Generator().manual_seed(1), torch.device("cpu"))
        b = spec.sample(8, (3, 16, 16), torch.Generator().manual_seed(1), torch.device("cpu"))
        c = spec.sample(8, (3, 16, 16), torch.Generator().manual_seed(2), torch.device("cpu"))
        for key in a:
            assert a[key].shape[0] == 8, (name, key)
            assert torch.equal(a[key], b[key]) and not torch.equal(a[key], c[key]), (name, key)
            assert not torch.equal(a[key][0], a[key][1]), (name, key)


def test_kernels_compile_without_a_disk_cache_where_numba_finds_no_place_for_one(monkeypatch):
    """numba refuses cache=True when neither the package's folder nor the home folder is writable (a
    read-only install): the kernels are then compiled in memory rather than failing to import."""
    import numba

    real = numba.njit

    def njit(cache=False, **options):
        if cache:
            raise RuntimeError("cannot cache function 'f': no locator available for file 'f.py'")
        return real(**options)

    def double(values):
        for i in range(values.size):
            values[i] *= 2

    with monkeypatch.context() as patch:  # only while decorating: numba's own compiler calls njit too
        patch.setattr(numba, "njit", njit)
        compiled = cpu_kernels._jit(double)
    values = np.arange(4)
    compiled(values)
    assert values.tolist() == [0, 2, 4, 6] and compiled._cache.__class__.__name__ == "NullCache"
