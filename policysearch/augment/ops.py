"""The one op table: every augmentation operation, its magnitude range and its implementations.

Each op maps a level in [0, 1] linearly into an argument between ``low`` and ``high`` (a higher level is
always stronger, level 0 the identity) in the op ranges a policy names (``OP_RANGES``: AutoAugment's
"standard" or TrivialAugmentWide's "wide"); ``signed`` ops flip the argument's sign with probability 1/2.
Each op has two implementations that mean the same thing: ``pil`` on a PIL image (the reference, equal to
torchvision's functional result) and ``tensor`` on a batch ``[n, C, H, W]`` on the 0..255 scale with one
argument per sample, exact to PIL's rounding when the batch came from uint8 (``ctx.exact``).

Geometric ops declare only their affine ``matrix`` and pixel-wise ops their ``pixel_map`` or ``table``, so
the batched transform can run a slot's geometric ops as one ``warp`` and its pixel-wise ones as one table
lookup (``kernels``). Ops that need more randomness than a sign declare ``sample``, drawn per sample before
anything is applied, so a draw replays on either path. Adding an op is one ``OpSpec`` entry in ``OPS``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as nnf
from PIL import Image, ImageChops, ImageFilter, ImageOps
from PIL.ImageEnhance import Brightness, Color, Sharpness

from policysearch.augment.kernels import (apply_lut, blend, blend_uint8, grey, histogram, per_sample, quantised,
                                          to_uint8)
from policysearch.augment.warp import warp

Draw = Mapping[str, torch.Tensor]


@lru_cache(maxsize=None)
def _tv():
    """torchvision's functional API, imported on first use: only the PIL reference path (geometric ops,
    Gamma) uses it, and importing torchvision costs a process seconds (every Ray worker of a search pays it)."""
    import torchvision.transforms.functional as functional

    return functional


@dataclass(frozen=True)
class PilContext:
    """What a PIL op needs besides its argument: the fill colour and SamplePairing's image pool."""

    fill: tuple[int, ...] = (0,)
    pool: Sequence[Image.Image] = ()


@dataclass(frozen=True)
class TensorContext:
    """What a batched op needs: rounding mode, fill colour and the images SamplePairing draws from."""

    exact: bool
    fill: torch.Tensor  # [C] on the 0..255 scale
    source: torch.Tensor | None = None  # the untouched batch, [B, C, H, W]
    pool: torch.Tensor | None = None  # partners instead of the batch's other samples, [P, C, H, W] uint8


PilFn = Callable[[Image.Image, float, Draw, PilContext], Image.Image]
TensorFn = Callable[[torch.Tensor, torch.Tensor, Draw, TensorContext], torch.Tensor]
SampleFn = Callable[[int, tuple[int, int, int], torch.Generator | None, torch.device], dict]
MatrixFn = Callable[[torch.Tensor, int, int], torch.Tensor]
TableFn = Callable[[torch.Tensor, torch.Tensor, TensorContext], torch.Tensor]
MapFn = Callable[[torch.Tensor, torch.Tensor, TensorContext], Callable[[torch.Tensor], torch.Tensor]]
Uint8Fn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class OpSpec:
    """One augmentation operation: the level-to-argument map and its two implementations."""

    name: str
    low: float
    high: float
    signed: bool
    pil: PilFn
    tensor: TensorFn
    sample: SampleFn | None = None
    exact: bool = True  # the uint8 batch path equals the PIL path bit for bit
    uint8: bool = False  # ``tensor`` also takes a uint8 batch (exact mode) and returns uint8
    # Geometric ops: the affine map (arg [n], height, width) -> [n, 6] that ``warp`` applies.
    matrix: MatrixFn | None = None
    # Pixel-wise ops: the per-sample, per-channel table [n, C, 256] (x, arg, ctx) for a uint8 x.
    table: TableFn | None = None
    # The table depends on the argument alone, not on the image: computed once per policy entry.
    table_from_arg: bool = False
    # ``tensor`` has a uint8 kernel of a few vectorised passes (bitwise ops, max and min, float32
    # arithmetic): on a uint8 batch it is cheaper than a table lookup (an index per value, and one scalar
    # load each), so an op on its own runs it rather than its table.
    direct: bool = False
    description: str = field(default="", compare=False)
    # The top of the range in the "wide" op ranges (TrivialAugmentWide's); None: the same as "standard".
    wide_high: float | None = None

    @property
    def has_magnitude(self) -> bool:
        return self.low != self.high

    def bounds(self, ranges: str = "standard") -> tuple[float, float]:
        """The argument at level 0 and at level 1 in the named op ranges (``OP_RANGES``)."""
        if ranges not in OP_RANGES:
            raise ValueError(f"unknown op ranges {ranges!r}; choose from {', '.join(OP_RANGES)}")
        if ranges == "wide" and self.wide_high is not None:
            return self.low, self.wide_high
        return self.low, self.high

    def argument(self, level: float, ranges: str = "standard") -> float:
        """The unsigned argument for a level in [0, 1] in the named op ranges."""
        low, high = self.bounds(ranges)
        return low + level * (high - low)


# ---------------------------------------------------------------------------------------------------
# Shared helpers (the pixel kernels are in ``kernels``, the warp in ``warp``)
# ---------------------------------------------------------------------------------------------------


def _pointwise_op(map_fn: MapFn, kernel: Uint8Fn | None, x: torch.Tensor, arg: torch.Tensor, draw: Draw,
                  ctx: TensorContext) -> torch.Tensor:
    """The tensor implementation of a pixel-wise op from its map: a float batch goes through the map
    directly, a uint8 batch through the op's uint8 ``kernel`` when it has one, else the map's table
    (``_map_table``)."""
    if x.dtype != torch.uint8:
        return map_fn(x, arg, ctx)(x)
    if kernel is not None:
        return kernel(x, arg)
    return apply_lut(x, _map_table(map_fn, x, arg, ctx))


def _map_table(map_fn: MapFn, x: torch.Tensor, arg: torch.Tensor, ctx: TensorContext) -> torch.Tensor:
    """The table [n, C, 256] of a pixel-wise map: the map (float32 values on the 0..255 scale, broadcast
    per sample) run once on the ramp 0..255. Looking it up per pixel gives the same values as running the
    map on the pixels, since each pixel's result depends on its value alone."""
    n, c = x.shape[:2]
    ramp = torch.arange(256, dtype=torch.float32, device=x.device).view(1, 1, 1, 256)
    return map_fn(x, arg, ctx)(ramp).expand(n, c, 1, 256).reshape(n, c, 256)


def _fill_pil(img: Image.Image, fill: tuple[int, ...]) -> int | tuple[int, ...]:
    bands = len(img.getbands())
    if len(fill) == 1:
        return fill[0] if bands == 1 else tuple(fill) * bands
    return fill if bands > 1 else fill[0]


# ---------------------------------------------------------------------------------------------------
# Geometric ops: each declares its affine matrix; one nearest-neighbour warp (``warp``) applies them all.
# ---------------------------------------------------------------------------------------------------


def _warp_op(matrix: MatrixFn, x: torch.Tensor, arg: torch.Tensor, draw: Draw, ctx: TensorContext) -> torch.Tensor:
    """The tensor implementation of a geometric op, from its matrix."""
    return warp(x, matrix(arg, x.shape[2], x.shape[3]), ctx.fill)


def _affine_rows(arg: torch.Tensor, entries: dict[int, torch.Tensor | float]) -> torch.Tensor:
    """[n, 6] float64 matrices: the identity with the given entries (0..5 = a, b, c, d, e, f) replaced."""
    m = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], dtype=torch.float64, device=arg.device).repeat(arg.shape[0], 1)
    for column, value in entries.items():
        m[:, column] = value
    return m


def _shear_x_pil(img, arg, draw, ctx):
    tv = _tv()
    return tv.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[math.degrees(math.atan(arg)), 0.0],
                     interpolation=tv.InterpolationMode.NEAREST, fill=list(ctx.fill), center=[0, 0])


def _shear_x_matrix(arg, h, w):
    return _affine_rows(arg, {1: arg})


def _shear_y_pil(img, arg, draw, ctx):
    tv = _tv()
    return tv.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[0.0, math.degrees(math.atan(arg))],
                     interpolation=tv.InterpolationMode.NEAREST, fill=list(ctx.fill), center=[0, 0])


def _shear_y_matrix(arg, h, w):
    return _affine_rows(arg, {3: arg})


# A shift in pixels is truncated toward zero, as torchvision's AutoAugment does with int(magnitude), after
# rounding to SHIFT_DECIMALS: at AutoAugment's 331 px reference size (and its multiples) a bin's shift is a
# whole number, which the float rounding of a level (torchvision's levels are float32) would take one pixel
# short; elsewhere a bin's shift is at least 1/331/bins of a pixel from a whole number, well above 5e-5.
SHIFT_DECIMALS = 4


def _translate_pixels(arg: float, size: int) -> int:
    return int(round(arg * size, SHIFT_DECIMALS))


def _shift_pil(img: Image.Image, dx: int, dy: int, ctx: PilContext) -> Image.Image:
    tv = _tv()
    return tv.affine(img, angle=0.0, translate=[dx, dy], scale=1.0, shear=[0.0, 0.0],
                     interpolation=tv.InterpolationMode.NEAREST, fill=list(ctx.fill))


def _translate_x_pil(img, arg, draw, ctx):
    return _shift_pil(img, _translate_pixels(arg, img.width), 0, ctx)


def _translate_x_matrix(arg, h, w):
    return _affine_rows(arg, {2: -(arg * w).round(decimals=SHIFT_DECIMALS).trunc()})


def _translate_y_pil(img, arg, draw, ctx):
    return _shift_pil(img, 0, _translate_pixels(arg, img.height), ctx)


def _translate_y_matrix(arg, h, w):
    return _affine_rows(arg, {5: -(arg * h).round(decimals=SHIFT_DECIMALS).trunc()})


# TrivialAugmentWide shifts by a number of pixels whatever the image size: its argument is in pixels,
# truncated toward zero as torchvision does.
def _translate_x_abs_pil(img, arg, draw, ctx):
    return _shift_pil(img, int(arg), 0, ctx)


def _translate_x_abs_matrix(arg, h, w):
    return _affine_rows(arg, {2: -arg.trunc()})


def _translate_y_abs_pil(img, arg, draw, ctx):
    return _shift_pil(img, 0, int(arg), ctx)


def _translate_y_abs_matrix(arg, h, w):
    return _affine_rows(arg, {5: -arg.trunc()})


def _rotate_pil(img, arg, draw, ctx):
    tv = _tv()
    return tv.rotate(img, arg, interpolation=tv.InterpolationMode.NEAREST, fill=list(ctx.fill))


def _rotate_matrix(arg, h, w):
    # PIL's Image.rotate: about the image centre (w/2, h/2), counter-clockwise for a positive angle.
    theta = -torch.deg2rad(arg.to(torch.float64))
    cos, sin = torch.cos(theta), torch.sin(theta)
    cx, cy = w / 2.0, h / 2.0
    c = cos * -cx + sin * -cy + cx
    f = -sin * -cx + cos * -cy + cy
    return torch.stack([cos, sin, c, -sin, cos, f], dim=1)


def _zoom_pil(img, arg, draw, ctx):
    tv = _tv()
    return tv.affine(img, angle=0.0, translate=[0, 0], scale=1.0 + arg, shear=[0.0, 0.0],
                     interpolation=tv.InterpolationMode.NEAREST, fill=list(ctx.fill))


def _zoom_matrix(arg, h, w):
    inv = 1.0 / (1.0 + arg.to(torch.float64))
    cx, cy = w * 0.5, h * 0.5
    return _affine_rows(arg, {0: inv, 2: cx - cx * inv, 4: inv, 5: cy - cy * inv})


def _flip_lr_pil(img, arg, draw, ctx):
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def _flip_lr(x, arg, draw, ctx):
    return x.flip(3)


def _flip_ud_pil(img, arg, draw, ctx):
    return img.transpose(Image.Transpose.FLIP_TOP_BOTTOM)


def _flip_ud(x, arg, draw, ctx):
    return x.flip(2)


# ---------------------------------------------------------------------------------------------------
# Colour and pixel ops
# ---------------------------------------------------------------------------------------------------


def _identity_pil(img, arg, draw, ctx):
    return img


def _identity(x, arg, draw, ctx):
    return x


# The PIL references of the pixel-wise ops give exactly what ImageOps and ImageEnhance give (the tests
# compare them with torchvision's functional API), but build their tables with numpy rather than Python
# loops over 256 levels per band, which took most of an op's time on small images.


def _point(img: Image.Image, lut: np.ndarray) -> Image.Image:
    """``img.point`` through per-band tables ``lut`` [bands, 256] (or one table [256] for every band)."""
    bands = len(img.getbands())
    table = np.broadcast_to(lut.reshape(-1, 256), (bands, 256)) if lut.size == 256 else lut
    return img.point(table.reshape(-1).tolist())


def _band_histograms(img: Image.Image) -> np.ndarray:
    """The image's 256-bin histogram per band, [bands, 256] int64."""
    return np.asarray(img.histogram(), dtype=np.int64).reshape(-1, 256)


_LEVELS = np.arange(256, dtype=np.int64)
_LEVELS.setflags(write=False)


def _invert_pil(img, arg, draw, ctx):
    return ImageChops.invert(img)  # ImageOps.invert's table 255 - v, as one C pass


def _invert_map(x, arg, ctx):
    return lambda v: 255 - v


def _invert_uint8(x: torch.Tensor, arg: torch.Tensor) -> torch.Tensor:
    return torch.bitwise_not(x)  # 255 - v in one pass


def _solarize_pil(img, arg, draw, ctx):
    # ImageOps.solarize: levels below the threshold kept, the others inverted
    return _point(img, np.where(_LEVELS < arg, _LEVELS, 255 - _LEVELS))


def _solarize_map(x, arg, ctx):
    # Pixels at or above the threshold are inverted (threshold 256 leaves the image unchanged).
    return lambda v: torch.where(v >= per_sample(arg), 255 - v, v)  # compared in double precision, as PIL


def _solarize_uint8(x: torch.Tensor, arg: torch.Tensor) -> torch.Tensor:
    """Solarize on levels without a comparison (uint8 comparisons and ``where`` are scalar loops on CPU,
    max and min are vectorised): v >= arg holds for a whole level v exactly when v > u = ceil(arg) - 1,
    that is when max(v, u) - u >= 1. A threshold of 0 inverts every level; above 255, none."""
    threshold = torch.ceil(arg).clamp_(0, 256)
    below = per_sample((threshold - 1).clamp_(0, 255).to(torch.uint8))
    every = per_sample((threshold == 0).to(torch.uint8))
    flag = torch.maximum(x, below).sub_(below).clamp_(max=1)  # 1 where inverted, else 0
    return torch.maximum(flag, every, out=flag).neg_().bitwise_xor_(x)  # 1 -> 255: xor inverts


def _posterize_bits(arg: float) -> int:
    return int(round(arg))


def _posterize_pil(img, arg, draw, ctx):
    bits = _posterize_bits(arg)
    if not 1 <= bits <= 8:
        raise ValueError("bits must be between or equal to 1 and 8")  # as ImageOps.posterize
    return _point(img, _LEVELS & ~(2 ** (8 - bits) - 1))


def _posterize_map(x, arg, ctx):
    step = torch.pow(2.0, 8.0 - per_sample(arg).round()).to(torch.float32)  # arg is float64: compute in float32
    return lambda v: torch.floor(v / step) * step


def _posterize_uint8(x: torch.Tensor, arg: torch.Tensor) -> torch.Tensor:
    """floor(v / step) * step for step = 2 ** (8 - bits) is v with its low 8 - bits bits cleared."""
    step = torch.pow(2, 8 - arg.round().to(torch.int64))
    return torch.bitwise_and(x, per_sample((256 - step).to(torch.uint8)))


def _autocontrast_pil(img, arg, draw, ctx):
    # ImageOps.autocontrast (no cutoff): per band lut[i] = int(i * scale + offset) in double precision,
    # clipped, with scale = 255 / (hi - lo) and offset = -lo * scale; the identity where hi <= lo.
    # The lowest and highest used levels of a band are its extrema (an image without pixels has none).
    extrema = img.getextrema() if img.width and img.height else None
    bands = [extrema] if img.mode == "L" else extrema or [None] * len(img.getbands())
    tables = []
    for band in bands:
        lo, hi = band if band is not None else (255, 0)
        if hi <= lo:
            tables.append(_LEVELS)
            continue
        scale = 255.0 / (hi - lo)
        tables.append(np.clip(np.trunc(_LEVELS * scale + (-lo * scale)), 0, 255).astype(np.int64))
    return _point(img, np.stack(tables))


def _autocontrast(x, arg, draw, ctx):
    if ctx.exact and x.dtype == torch.uint8 and x.device.type == "cpu":
        # The table's double-precision steps on the pixels themselves: the same value for every level,
        # in vectorised passes that beat the lookup's scalar loop on the CPU (elsewhere the lookup wins).
        scale, offset = _autocontrast_scale(x)
        stretched = x.to(torch.float64).mul_(scale.unsqueeze(-1)).add_(offset.unsqueeze(-1)).clamp_(0.0, 255.0)
        return to_uint8(stretched)
    if ctx.exact:
        return apply_lut(x, _autocontrast_table(x, arg, ctx))
    flat = x.flatten(2)
    lo, hi = flat.amin(2, keepdim=True), flat.amax(2, keepdim=True)  # [n, C, 1]
    stretched = ((flat - lo) * (255.0 / (hi - lo).clamp_min(1e-6))).clamp(0, 255)
    return torch.where(hi > lo, stretched, flat).view_as(x)


def _autocontrast_scale(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PIL's scale and offset per sample and channel, [n, C, 1] float64 (1 and 0 where a channel is flat)."""
    flat = x.flatten(2)
    lo, hi = flat.amin(2, keepdim=True).to(torch.float64), flat.amax(2, keepdim=True).to(torch.float64)
    flat_channel = hi <= lo  # [n, C, 1]
    # Tensor by tensor: torch computes scalar / tensor as reciprocal times scalar, which can differ from
    # PIL's 255.0 / (hi - lo) in the last bit and move a level across a whole number.
    scale = (torch.full_like(hi, 255.0) / (hi - lo).clamp_min(1.0)).masked_fill_(flat_channel, 1.0)
    offset = (-lo * scale).masked_fill_(flat_channel, 0.0)
    return scale, offset


def _autocontrast_table(x, arg, ctx):
    # PIL: lut[i] = int(i * scale + offset) in double precision, clipped; no change when hi <= lo, which
    # scale 1 and offset 0 give. Flooring instead of truncating differs only below 0, which is clipped.
    scale, offset = _autocontrast_scale(x)
    ramp = torch.arange(256, dtype=torch.float64, device=x.device).view(1, 1, 256)
    return (ramp * scale + offset).floor_().clamp_(0, 255)


def _equalize_pil(img, arg, draw, ctx):
    # ImageOps.equalize: per band, step = (pixels - pixels of the last used level) // divisor and
    # lut[i] = (step // 2 + pixels below level i) // step; the identity with one level used or step 0.
    tables = []
    for hist in _band_histograms(img):
        used = hist[hist > 0]
        step = (int(used.sum()) - int(used[-1])) // pil_equalize_divisor() if len(used) > 1 else 0
        if step == 0:
            tables.append(_LEVELS)
            continue
        below = np.concatenate([[0], np.cumsum(hist)[:-1]])
        tables.append((step // 2 + below) // step)
    return _point(img, np.stack(tables))


@lru_cache(maxsize=1)
def pil_equalize_divisor() -> int:
    """The divisor of PIL's equalize step: 256 in older Pillow, 255 (as torchvision's tensor path) since.

    Probed once on a 256-pixel image where the two give different tables (step 1 versus 0).
    """
    probe = np.array([0] * 128 + [100] * 127 + [255], dtype=np.uint8).reshape(1, -1)
    return 255 if np.asarray(ImageOps.equalize(Image.fromarray(probe, "L")))[0, 200] != 100 else 256


def _equalize(x, arg, draw, ctx):
    levels = x if ctx.exact else quantised(x)
    return apply_lut(levels, _equalize_table(levels, arg, ctx))


def _equalize_table(x, arg, ctx):
    hist = histogram(x)  # [n, C, 256]
    n, c, h, w = x.shape
    # PIL: step = (pixels - pixels at the highest used level) // 255 in current Pillow (// 256 in older
    # releases); lut[i] = (step // 2 + pixels below level i) // step. Where step is 0 (one level used,
    # or none) PIL leaves the image as it is. The highest used level is the plane's maximum.
    top = x.flatten(2).amax(2, keepdim=True).to(torch.int64) if h * w else hist[..., :1]
    step = (h * w - hist.gather(2, top)) // pil_equalize_divisor()  # [n, C, 1]
    below = torch.cumsum(hist, 2).sub_(hist).to(torch.float64)
    # (step // 2 + below) // step in float64: exact for integers below 2**53, and much faster than int64.
    lut = below.add_(step // 2).div_(step.clamp_min(1)).floor_().clamp_(0, 255)
    return torch.where(step == 0, torch.arange(256, dtype=torch.float64, device=x.device), lut)


def _enhance_factor(arg: float) -> float:
    return 1.0 + arg


def _brightness_pil(img, arg, draw, ctx):
    return Brightness(img).enhance(_enhance_factor(arg))


def _brightness_map(x, arg, ctx):
    return lambda v: blend(torch.zeros_like(v), v, 1.0 + arg, ctx.exact)


def _brightness_uint8(x: torch.Tensor, arg: torch.Tensor) -> torch.Tensor:
    # blend with a black image: (v - 0) * f + 0 is v * f, and truncating [0, 255] is converting it
    return to_uint8(x.to(torch.float32).mul_(per_sample(1.0 + arg).to(torch.float32)).clamp_(0.0, 255.0))


def _color_pil(img, arg, draw, ctx):
    return Color(img).enhance(_enhance_factor(arg))


def _color(x, arg, draw, ctx):
    if x.shape[1] == 1:
        return x
    if x.dtype == torch.uint8:
        xf = x.to(torch.float32)
        return blend_uint8(grey(xf, True), xf, 1.0 + arg)
    return blend(grey(x, ctx.exact).expand_as(x), x, 1.0 + arg, ctx.exact)


def _contrast_pil(img, arg, draw, ctx):
    # ImageEnhance.Contrast: blend with a flat image of the rounded mean luma (ImageStat's mean of the
    # L image's histogram: an exact integer sum over the pixel count)
    hist = _band_histograms(img if img.mode == "L" else img.convert("L"))[0]
    count = int(hist.sum())
    mean = int((int(hist @ _LEVELS) / count if count else 0) + 0.5)
    degenerate = Image.new(img.mode, img.size, mean if img.mode == "L" else (mean,) * len(img.getbands()))
    return Image.blend(degenerate, img, _enhance_factor(arg))


def _contrast_mean(x: torch.Tensor, exact: bool) -> torch.Tensor:
    """The degenerate image of Contrast: the mean luma per sample, [n, 1, 1, 1] float32 (rounded when exact)."""
    mean = grey(x, exact).flatten(1).to(torch.float64).mean(1)
    return per_sample(torch.floor(mean + 0.5) if exact else mean).to(torch.float32)


def _contrast_map(x, arg, ctx):
    mean = _contrast_mean(x, ctx.exact)
    return lambda v: blend(mean, v, 1.0 + arg, ctx.exact)


def _contrast_uint8(x: torch.Tensor, arg: torch.Tensor) -> torch.Tensor:
    # blend's float32 steps on the pixels themselves: cheaper than a table on large images
    mean = _contrast_mean(x, True)
    factor = per_sample(1.0 + arg).to(torch.float32)
    return to_uint8(x.to(torch.float32).sub_(mean).mul_(factor).add_(mean).clamp_(0.0, 255.0))


def _sharpness_pil(img, arg, draw, ctx):
    return Sharpness(img).enhance(_enhance_factor(arg))


def _smooth_total(x: torch.Tensor) -> torch.Tensor:
    """The SMOOTH kernel's weighted sum around each interior pixel, [n, C, H - 2, W - 2]: a 3x3 box sum
    from shifted slices plus 4 times the centre (at most 13 * 255 for levels, so int16 holds it)."""
    rows = x[:, :, :-2] + x[:, :, 1:-1]
    rows += x[:, :, 2:]
    total = rows[..., :-2] + rows[..., 1:-1]
    total += rows[..., 2:]
    return total.add_(x[:, :, 1:-1, 1:-1], alpha=4)


def _smooth(x: torch.Tensor, exact: bool) -> torch.Tensor:
    """PIL's ImageFilter.SMOOTH (3x3 kernel 1 1 1 / 1 5 1 / 1 1 1, sum 13); the border stays as it is.

    The kernel is a 3x3 box sum plus 4 times the centre, summed separably from shifted slices. On integer
    levels the sums are exact in float32 and sum / 13 is never within rounding error of a .5 tie (its
    fraction is k / 13), so rounding it gives PIL's integer result.
    """
    total = _smooth_total(x)
    out = (total + 6.5).div_(13).floor_() if exact else total / 13  # floor(total / 13 + 0.5), one pass less
    smoothed = x.clone()
    smoothed[:, :, 1:-1, 1:-1] = out
    return smoothed


def _sharpness(x, arg, draw, ctx):
    if x.shape[2] < 3 or x.shape[3] < 3:
        return x
    if x.dtype == torch.uint8:
        return _sharpness_uint8(x, arg)
    return blend(_smooth(x, ctx.exact), x, 1.0 + arg, ctx.exact)


def _sharpness_uint8(x: torch.Tensor, arg: torch.Tensor) -> torch.Tensor:
    """Sharpness on uint8 levels [n, C, H, W] (H, W >= 3): PIL's SMOOTH and blend, as uint8.

    The border keeps its pixels (its smoothed value is the pixel itself), so only the interior is
    computed: the kernel sums in int16, then _smooth's rounding and the blend in float32. The total t is an
    integer, so t / 13 is never within 1/26 of a .5 tie: rounding it is _smooth's floor((t + 6.5) / 13), in
    two passes rather than three.
    """
    smooth = _smooth_total(x.to(torch.int16)).to(torch.float32).mul_(1.0 / 13).round_()
    centre = x[:, :, 1:-1, 1:-1].to(torch.float32)
    out = x.clone()
    # blend's steps, then truncated as to_uint8 does: through int16, which writes into uint8 fast
    factor = per_sample(1.0 + arg).to(torch.float32)
    out[:, :, 1:-1, 1:-1] = centre.sub_(smooth).mul_(factor).add_(smooth).clamp_(0.0, 255.0).to(torch.int16)
    return out


def _gamma_value(arg: float) -> float:
    return math.exp(arg)


def _gamma_pil(img, arg, draw, ctx):
    tv = _tv()
    return tv.adjust_gamma(img, _gamma_value(arg))


def _gamma(x, arg, draw, ctx):
    if ctx.exact:
        return apply_lut(x, _gamma_table(x, arg, ctx))
    return 255.0 * (x / 255.0).pow(per_sample(torch.exp(arg.to(torch.float64)).to(x.dtype)))


def _gamma_table(x, arg, ctx):
    # torchvision's PIL path: lut[i] = int(255.999 * (i / 255) ** gamma), in double precision.
    gamma = torch.exp(arg.to(torch.float64)).view(-1, 1, 1)
    ramp = torch.arange(256, dtype=torch.float64, device=x.device).view(1, 1, 256) / 255.0
    return (255.999 * ramp.pow(gamma)).trunc().expand(-1, x.shape[1], -1)


def _blur_pil(img, arg, draw, ctx):
    return img.filter(ImageFilter.BoxBlur(arg)) if arg > 0 else img


def _blur(x, arg, draw, ctx):
    """Mean filter of radius ``arg`` (fractional radii weight the outermost taps), edges extended.

    ``draw["radii"]``, when given, is a CPU tensor of every radius ``arg`` may hold (the batched transform
    passes its policy's on accelerators): each is applied where it matches, without reading ``arg`` back
    to the host.
    """
    if "radii" in draw:
        out = x.clone()
        for radius in draw["radii"].tolist():
            out = torch.where(per_sample(arg == radius), _box_blur(x, radius, ctx.exact), out)
        return out
    out = torch.empty_like(x)
    for radius in torch.unique(arg).tolist():  # a handful of distinct radii per batch
        rows = (arg == radius).nonzero().view(-1)
        out[rows] = _box_blur(x[rows], radius, ctx.exact)
    return out


def _box_blur_line_exact(x: torch.Tensor, radius: float) -> torch.Tensor:
    """One pass of PIL's fixed-point box blur along the last dimension of integer x (int64), edges extended.

    PIL weighs the 2r+1 inner taps by ww = float32(2**24) / float32(2 * radius + 1) (truncated) and the
    two outer taps by fw = (2**24 - (2r+1) * ww) // 2, then rounds: (sum + 2**23) >> 24.
    """
    whole = int(math.floor(radius))
    ww = int(np.float32(1 << 24) / (np.float32(radius) * np.float32(2.0) + np.float32(1.0)))
    fw = ((1 << 24) - (2 * whole + 1) * ww) // 2
    length = x.shape[-1]
    padded = x[..., torch.arange(-(whole + 1), length + whole + 1, device=x.device).clamp(0, length - 1)]
    cumulative = nnf.pad(torch.cumsum(padded, -1), (1, 0))
    inner = cumulative[..., 2 * whole + 2:2 * whole + 2 + length] - cumulative[..., 1:1 + length]
    outer = padded[..., :length] + padded[..., 2 * whole + 2:]
    return (inner * ww + outer * fw + (1 << 23)) >> 24


def _box_blur(x: torch.Tensor, radius: float, exact: bool) -> torch.Tensor:
    if radius <= 0:
        return x
    if exact:  # bit for bit as PIL: horizontal pass, then vertical, each rounded to integers
        y = _box_blur_line_exact(x.to(torch.int64), radius)
        return _box_blur_line_exact(y.transpose(2, 3), radius).transpose(2, 3).to(x.dtype)
    whole = int(math.floor(radius))
    taps = torch.ones(2 * whole + 3, dtype=x.dtype, device=x.device)
    edge = radius - whole
    taps[0] = taps[-1] = edge
    taps /= 2 * radius + 1
    pad = whole + 1
    c = x.shape[1]
    y = nnf.pad(x, (pad, pad, 0, 0), mode="replicate")
    y = nnf.conv2d(y, taps.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = nnf.pad(y, (0, 0, pad, pad), mode="replicate")
    y = nnf.conv2d(y, taps.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return y.clamp(0, 255)


# ---------------------------------------------------------------------------------------------------
# Ops with their own randomness: values are drawn per sample by ``sample`` and then applied.
# ---------------------------------------------------------------------------------------------------


def _uniform(n: int, shape: tuple[int, ...], generator, device) -> torch.Tensor:
    return torch.rand((n, *shape), generator=generator, device=device)


def _sample_centre(n, chw, generator, device):
    return {"centre": _uniform(n, (2,), generator, device)}  # (y, x) as fractions of the size


def _cutout_box(h: int, w: int, side: int, centre_y: float, centre_x: float) -> tuple[int, int, int, int]:
    cy, cx = min(int(centre_y * h), h - 1), min(int(centre_x * w), w - 1)
    y0, x0 = max(0, cy - side // 2), max(0, cx - side // 2)
    return y0, x0, min(h, y0 + side), min(w, x0 + side)


def _cutout_side(arg: float, h: int, w: int) -> int:
    return int(round(arg * min(h, w)))


def cutout_pil(img: Image.Image, side: int, centre: tuple[float, float], fill: tuple[int, ...]) -> Image.Image:
    """Fill a ``side`` x ``side`` square centred at ``centre`` (fractions of the size), clipped at the border."""
    if side <= 0:
        return img
    y0, x0, y1, x1 = _cutout_box(img.height, img.width, side, *centre)
    out = img.copy()
    out.paste(_fill_pil(img, fill), (x0, y0, x1, y1))
    return out


def cutout_tensor(x: torch.Tensor, side: torch.Tensor, centre: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Batched Cutout: per-sample side [n] (pixels) and centre [n, 2] (fractions); no loop over samples."""
    n, c, h, w = x.shape
    cy = (centre[:, 0] * h).floor().clamp(max=h - 1)
    cx = (centre[:, 1] * w).floor().clamp(max=w - 1)
    half = torch.div(side, 2, rounding_mode="floor")
    y0, x0 = (cy - half).clamp_min(0), (cx - half).clamp_min(0)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((rows >= y0.view(n, 1, 1)) & (rows < (y0 + side).view(n, 1, 1))
              & (cols >= x0.view(n, 1, 1)) & (cols < (x0 + side).view(n, 1, 1)))
    return torch.where(inside.unsqueeze(1), fill.to(x.dtype).view(1, c, 1, 1), x)


def _cutout_pil(img, arg, draw, ctx):
    centre = draw["centre"][0].tolist()
    return cutout_pil(img, _cutout_side(arg, img.height, img.width), (centre[0], centre[1]), ctx.fill)


def _cutout(x, arg, draw, ctx):
    side = (arg * min(x.shape[2], x.shape[3])).round()
    return cutout_tensor(x, side, draw["centre"], ctx.fill)


def _sample_noise(n, chw, generator, device):
    return {"noise": torch.randn((n, *chw), generator=generator, device=device)}


def _gaussian_noise_pil(img, arg, draw, ctx):
    pixels = np.asarray(img, dtype=np.float32)
    noise = draw["noise"][0].numpy()  # [C, H, W]
    noise = noise[0] if pixels.ndim == 2 else noise.transpose(1, 2, 0)
    out = np.clip(pixels + (np.float32(arg) * np.float32(255.0)) * noise, 0, 255)
    return Image.fromarray(np.floor(out + 0.5).astype(np.uint8), mode=img.mode)


def _gaussian_noise(x, arg, draw, ctx):
    scale = per_sample(arg.to(x.dtype) * 255.0)
    out = (x + scale * draw["noise"].to(x.dtype)).clamp(0, 255)
    return torch.floor(out + 0.5) if ctx.exact else out


def _sample_impulse(n, chw, generator, device):
    return {"u": _uniform(n, chw[1:], generator, device)}  # one draw per pixel, shared by the channels


def _impulse_noise_pil(img, arg, draw, ctx):
    u = draw["u"][0].numpy()
    pixels = np.array(img)
    a = np.float32(arg)
    mask_pepper, mask_salt = u < a / np.float32(2), (u >= a / np.float32(2)) & (u < a)
    pixels[mask_pepper] = 0
    pixels[mask_salt] = 255
    return Image.fromarray(pixels, mode=img.mode)


def _impulse_noise(x, arg, draw, ctx):
    u = draw["u"].unsqueeze(1).to(torch.float32)
    a = per_sample(arg).to(torch.float32)
    out = torch.where(u < a / 2, torch.zeros_like(x), x)
    return torch.where((u >= a / 2) & (u < a), torch.full_like(x, 255), out)


def _sample_partner(n, chw, generator, device):
    return {"u": _uniform(n, (), generator, device)}


def _sample_pairing_pil(img, arg, draw, ctx):
    if not ctx.pool:
        raise ValueError("SamplePairing needs an image pool: PolicyTransform(policy, pool=[...images])")
    partner = ctx.pool[min(int(draw["u"][0] * len(ctx.pool)), len(ctx.pool) - 1)]
    partner = partner.convert(img.mode)
    if partner.size != img.size:
        partner = partner.resize(img.size, Image.Resampling.BILINEAR)
    return Image.blend(img, partner, arg)


def _sample_pairing(x, arg, draw, ctx):
    if ctx.pool is not None:  # an image of the pool, drawn as the PIL path draws it
        pick = (draw["u"] * len(ctx.pool)).floor().to(torch.int64).clamp(max=len(ctx.pool) - 1)
        return blend(x, ctx.pool[pick].to(x.dtype), arg, ctx.exact)
    # The partner is another sample of the batch, drawn uniformly among the others.
    size = ctx.source.shape[0]
    offset = 1 + (draw["u"] * (size - 1)).floor().to(torch.int64).clamp(max=max(size - 2, 0))
    partner = ctx.source[(draw["index"] + offset) % size].to(x.dtype)
    return blend(x, partner, arg, ctx.exact)


# ---------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------


def _op(name, low, high, signed, pil, tensor=None, sample=None, exact=True, uint8=False, matrix=None,
        table=None, table_from_arg=False, pixel_map=None, kernel=None, description="", wide=None):
    """One table entry. A geometric op gives its ``matrix`` and a pixel-wise op its ``pixel_map`` (and
    optionally a uint8 ``kernel`` equal to its table); their tensor implementation (and table) follow from
    it, and both take uint8 batches as they are."""
    if matrix is not None:
        tensor, uint8 = partial(_warp_op, matrix), True
    if pixel_map is not None:
        tensor, table, uint8 = partial(_pointwise_op, pixel_map, kernel), partial(_map_table, pixel_map), True
    return OpSpec(name, float(low), float(high), signed, pil, tensor, sample, exact, uint8, matrix, table,
                  table_from_arg, kernel is not None, description, None if wide is None else float(wide))


# Named op ranges a policy can use: AutoAugment's ("standard") or TrivialAugmentWide's wider ones
# ("wide": shear 0.99, rotate 135 degrees, enhance 1 +- 0.99, posterize down to 2 bits). An op without
# a wide entry has the same range in both.
OP_RANGES: tuple[str, ...] = ("standard", "wide")
TRANSLATE_ABS_MAX = 32.0  # pixels, TrivialAugmentWide's
WIDE_FACTOR = float(np.float32(0.99))  # torchvision's bins are float32: its top is 0.99000001, not 0.99

# Fast AutoAugment shifts by up to 0.45 of the size and AutoAugment/torchvision by up to 150/331 (0.453);
# our range covers both so that either converts without clipping.
TRANSLATE_MAX = 150.0 / 331.0

OPS: dict[str, OpSpec] = {
    spec.name: spec
    for spec in [
        _op("ShearX", 0, 0.3, True, _shear_x_pil, matrix=_shear_x_matrix, description="shear factor", wide=WIDE_FACTOR),
        _op("ShearY", 0, 0.3, True, _shear_y_pil, matrix=_shear_y_matrix, description="shear factor", wide=WIDE_FACTOR),
        _op("TranslateX", 0, TRANSLATE_MAX, True, _translate_x_pil, matrix=_translate_x_matrix,
            description="shift, fraction of the width"),
        _op("TranslateY", 0, TRANSLATE_MAX, True, _translate_y_pil, matrix=_translate_y_matrix,
            description="shift, fraction of the height"),
        _op("Rotate", 0, 30, True, _rotate_pil, matrix=_rotate_matrix, description="degrees", wide=135),
        _op("AutoContrast", 0, 0, False, _autocontrast_pil, _autocontrast, uint8=True, table=_autocontrast_table),
        _op("Invert", 0, 0, False, _invert_pil, pixel_map=_invert_map, table_from_arg=True,
            kernel=_invert_uint8),
        _op("Equalize", 0, 0, False, _equalize_pil, _equalize, uint8=True, table=_equalize_table),
        _op("Solarize", 256, 0, False, _solarize_pil, pixel_map=_solarize_map, table_from_arg=True,
            kernel=_solarize_uint8, description="threshold, grey levels"),
        _op("Posterize", 8, 4, False, _posterize_pil, pixel_map=_posterize_map, table_from_arg=True,
            kernel=_posterize_uint8, description="bits kept", wide=2),
        _op("Contrast", 0, 0.9, True, _contrast_pil, pixel_map=_contrast_map, kernel=_contrast_uint8,
            description="factor 1 +- arg", wide=WIDE_FACTOR),
        _op("Color", 0, 0.9, True, _color_pil, _color, uint8=True, description="factor 1 +- arg", wide=WIDE_FACTOR),
        _op("Brightness", 0, 0.9, True, _brightness_pil, pixel_map=_brightness_map, table_from_arg=True,
            kernel=_brightness_uint8, description="factor 1 +- arg", wide=WIDE_FACTOR),
        _op("Sharpness", 0, 0.9, True, _sharpness_pil, _sharpness, exact=False, uint8=True,
            description="factor 1 +- arg", wide=WIDE_FACTOR),
        _op("Cutout", 0, 0.2, False, _cutout_pil, _cutout, _sample_centre,
            uint8=True, description="square side, fraction of the shorter side"),
        _op("SamplePairing", 0, 0.4, False, _sample_pairing_pil, _sample_pairing, _sample_partner,
            description="weight of another image"),
        _op("Identity", 0, 0, False, _identity_pil, _identity, uint8=True),
        _op("FlipLR", 0, 0, False, _flip_lr_pil, _flip_lr, uint8=True),
        _op("FlipUD", 0, 0, False, _flip_ud_pil, _flip_ud, uint8=True),
        _op("GaussianNoise", 0, 0.2, False, _gaussian_noise_pil, _gaussian_noise, _sample_noise,
            description="noise std, fraction of the range"),
        _op("ImpulseNoise", 0, 0.1, False, _impulse_noise_pil, _impulse_noise, _sample_impulse,
            uint8=True, description="fraction of pixels set to black or white"),
        _op("Gamma", 0, math.log(2.0), True, _gamma_pil, _gamma, uint8=True, table=_gamma_table, table_from_arg=True,
            description="gamma exp(+-arg)"),
        _op("Blur", 0, 1.5, False, _blur_pil, _blur, description="box radius, pixels"),
        _op("Zoom", 0, 0.5, True, _zoom_pil, matrix=_zoom_matrix, description="scale 1 +- arg"),
        _op("TranslateXAbs", 0, TRANSLATE_ABS_MAX, True, _translate_x_abs_pil, matrix=_translate_x_abs_matrix,
            description="shift, pixels"),
        _op("TranslateYAbs", 0, TRANSLATE_ABS_MAX, True, _translate_y_abs_pil, matrix=_translate_y_abs_matrix,
            description="shift, pixels"),
    ]
}

OP_NAMES: tuple[str, ...] = tuple(OPS)
