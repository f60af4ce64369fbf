"""Compiled pixel kernels for uint8 batches on the CPU: every pixel-wise op of one slot in one call.

On the CPU a torch op costs a few microseconds whatever its size, and a table op on a batch of small
images takes dozens of them (histograms, tables, lookups). These kernels (numba) run each sample's op
start to end while the sample is in cache: compute its table from its own pixels, apply it, write the
sample back in place. They repeat the integer and float32 steps of the torch kernels (``kernels``,
``ops``), so the batched path still agrees with the PIL path bit for bit.
"""

from __future__ import annotations

from typing import Callable

import numba
import numpy as np
import torch

# What a sample's op is, for the kernels: a table given per sample, or an op whose table (or result)
# depends on the image and is computed here.
TABLE, EQUALIZE, AUTOCONTRAST, CONTRAST, COLOR, SHARPNESS = range(6)
CODES = {"Equalize": EQUALIZE, "AutoContrast": AUTOCONTRAST, "Contrast": CONTRAST, "Color": COLOR,
         "Sharpness": SHARPNESS}

def _jit(function: Callable) -> Callable:
    """Compile ``function`` with numba on first call, cached on disk (0.3 s to load instead of 2 s to
    compile); without caching where numba finds no writable place for it (a read-only install and home)."""
    options = {"nogil": True, "error_model": "numpy"}  # no Python exceptions for integer division by zero
    try:
        return numba.njit(cache=True, **options)(function)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return numba.njit(**options)(function)


@_jit
def _blend(value, degenerate, factor):
    """PIL's blend of one level: (value - degenerate) * factor + degenerate in float32, clipped, truncated."""
    out = (np.float32(value) - degenerate) * factor + degenerate
    # clipped with comparisons, not min and max (whose NaN handling stops the loops from vectorising)
    out = np.float32(0.0) if out < np.float32(0.0) else out
    out = np.float32(255.0) if out > np.float32(255.0) else out
    return np.uint8(np.int32(out))


@_jit
def _luma(r, g, b):
    """PIL's convert('L') of one pixel: ITU-R 601-2 luma in 16.16 fixed point."""
    return (np.int32(r) * 19595 + np.int32(g) * 38470 + np.int32(b) * 7471 + 0x8000) >> 16  # below 2**24


@_jit
def _equalize_table(plane, divisor, lut):
    """PIL's ImageOps.equalize table of one plane (see ``ops._equalize_table``)."""
    hist = np.zeros(256, np.int64)
    for v in plane:
        hist[v] += 1
    top = 255
    while top > 0 and hist[top] == 0:
        top -= 1
    step = (plane.size - hist[top]) // divisor
    below = 0
    for level in range(256):
        lut[level] = level if step == 0 else min(255, (step // 2 + below) // step)
        below += hist[level]


@_jit
def _autocontrast_table(plane, lut):
    """PIL's ImageOps.autocontrast table of one plane: stretch its extrema to 0 and 255, in double precision."""
    lo, hi = np.uint8(255), np.uint8(0)
    for v in plane:
        lo = v if v < lo else lo
        hi = v if v > hi else hi
    low, high = np.float64(lo), np.float64(hi)  # as uint8, -lo would wrap around
    scale = 255.0 / (high - low) if hi > lo else 1.0
    offset = -low * scale if hi > lo else 0.0
    for level in range(256):
        lut[level] = np.uint8(min(max(np.floor(level * scale + offset), 0.0), 255.0))


@_jit
def _contrast_table(image, factor, lut):
    """ImageEnhance.Contrast's table: a blend of each level with the image's rounded mean luma."""
    channels, pixels = image.shape
    total = 0
    for i in range(pixels):
        total += image[0, i] if channels == 1 else _luma(image[0, i], image[1, i], image[2, i])
    mean = np.float32(np.floor(total / pixels + 0.5))
    for level in range(256):
        lut[level] = _blend(level, mean, factor)


@_jit
def _color(image, factor):
    """ImageEnhance.Color in place: a blend of each pixel with its own luma (grey images stay as they are)."""
    if image.shape[0] == 3:
        r, g, b = image[0], image[1], image[2]
        for i in range(image.shape[1]):
            grey = np.float32(_luma(r[i], g[i], b[i]))
            r[i], g[i], b[i] = _blend(r[i], grey, factor), _blend(g[i], grey, factor), _blend(b[i], grey, factor)


@_jit
def _sharpness(image, factor):
    """ImageEnhance.Sharpness in place on [C, H, W]: a blend of each interior pixel with PIL's SMOOTH of it
    (the 3x3 kernel 1 1 1 / 1 5 1 / 1 1 1, rounded: floor(total / 13 + 0.5)); the border stays. Written
    with a loop over the 3x3 window, which numba vectorises (loops over whole rows did not)."""
    channels, h, w = image.shape
    if h < 3 or w < 3:
        return
    source = image.copy()
    for c in range(channels):
        for y in range(1, h - 1):
            for x in range(1, w - 1):
                total = np.int64(4) * source[c, y, x]
                for dy in range(-1, 2):
                    for dx in range(-1, 2):
                        total += source[c, y + dy, x + dx]
                image[c, y, x] = _blend(source[c, y, x], np.float32((2 * total + 13) // 26), factor)


@_jit
def _one_sample(planes, code, arg, table, divisor, lut):
    """Apply one sample's op (not Sharpness) in place on its planes [C, H * W]."""
    channels = planes.shape[0]
    factor = np.float32(1.0 + arg)
    if code == COLOR:
        _color(planes, factor)
        return
    if code == CONTRAST:
        _contrast_table(planes, factor, lut)
    for c in range(channels):
        plane = planes[c]
        if code == EQUALIZE:
            _equalize_table(plane, divisor, lut)
        elif code == AUTOCONTRAST:
            _autocontrast_table(plane, lut)
        chosen = table if code == TABLE else lut
        for i in range(plane.size):
            plane[i] = chosen[plane[i]]


@_jit
def _run(batch, index, codes, args, tables, divisor):
    lut = np.empty(256, np.uint8)
    _, channels, h, w = batch.shape
    for s in range(index.size):
        image = batch[index[s]]
        if codes[s] == SHARPNESS:
            _sharpness(image, np.float32(1.0 + args[s]))
        else:
            _one_sample(image.reshape(channels, h * w), codes[s], args[s], tables[s], divisor, lut)


@_jit
def _run_image(pixels, code, arg, divisor):
    h, w, channels = pixels.shape
    if code == SHARPNESS:  # on planes: interleaved channels do not vectorise (slower than the copies)
        planes = pixels.transpose(2, 0, 1).copy()
        _sharpness(planes, np.float32(1.0 + arg))
        pixels[:] = planes.transpose(1, 2, 0)
    else:
        lut = np.empty(256, np.uint8)
        _one_sample(pixels.reshape(h * w, channels).T, code, arg, lut, divisor, lut)


def run_pixel_ops(batch: torch.Tensor, index: torch.Tensor, codes: torch.Tensor, args: torch.Tensor,
                  tables: torch.Tensor, equalize_divisor: int) -> None:
    """Apply one op per listed sample of ``batch`` (contiguous uint8 [B, C, H, W] on the CPU), in place.

    Sample ``index[s]`` gets op ``codes[s]`` with argument ``args[s]`` (the factor is 1 + arg for Contrast,
    Color and Sharpness) or, for ``TABLE``, the table ``tables[s]`` ([256], every channel). The listed
    samples must differ. ``equalize_divisor`` is PIL's (``ops.pil_equalize_divisor``). Everything is
    checked first: the kernels do not check their indices.
    """
    if not (batch.device.type == "cpu" and batch.dtype == torch.uint8 and batch.ndim == 4 and batch.is_contiguous()
            and batch.shape[1] in (1, 3)):
        raise ValueError("run_pixel_ops: expected a contiguous uint8 batch [B, C, H, W] with 1 or 3 channels "
                         "on the CPU")
    k = len(index)
    if index.shape != (k,) or codes.shape != (k,) or args.shape != (k,) or tables.shape != (k, 256):
        raise ValueError(f"run_pixel_ops: expected one index, code and argument and one table [256] per listed "
                         f"sample, got index {tuple(index.shape)}, codes {tuple(codes.shape)}, args "
                         f"{tuple(args.shape)} and tables {tuple(tables.shape)}")
    if k and not (0 <= int(index.min()) and int(index.max()) < batch.shape[0]):
        raise IndexError(f"run_pixel_ops: sample index out of range for a batch of {batch.shape[0]}: "
                         f"{int(index.min())}..{int(index.max())}")
    if k and batch[0].numel():
        _run(batch.numpy(), index.to(torch.int64).numpy(), codes.to(torch.int64).numpy(),
             args.to(torch.float64).numpy(), tables.to(torch.uint8).numpy(), equalize_divisor)


def run_on_image(pixels: np.ndarray, code: int, arg: float, equalize_divisor: int) -> None:
    """Apply op ``code`` (not ``TABLE``) with argument ``arg`` to one image's pixels, in place: a writable,
    contiguous uint8 array [H, W, 3] or [H, W], the layout of an RGB or 'L' PIL image's bytes."""
    if not (isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8 and pixels.flags.c_contiguous
            and pixels.flags.writeable and (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 3))):
        found = (f"{pixels.dtype} array of shape {pixels.shape}" if isinstance(pixels, np.ndarray)
                 else type(pixels).__name__)
        raise ValueError(f"run_on_image: expected a writable contiguous uint8 array [H, W, 3] or [H, W], got {found}")
    if code not in CODES.values():
        raise ValueError(f"run_on_image: expected the code of an op that computes its own table, got {code}")
    if pixels.size:  # a grey image as [H, W, 1]: the same array type as RGB, one compiled version for both
        _run_image(pixels.reshape(pixels.shape[0], pixels.shape[1], -1), code, float(arg), equalize_divisor)


def warm_up(images: bool = False) -> None:
    """Compile (or load from numba's cache) the batch kernels now, and with ``images`` those of
    ``run_on_image``, on a tiny input.

    A transform built in a process compiles them there, so that forked ``DataLoader`` workers inherit the
    compiled code instead of each loading or compiling it again (every epoch, without persistent workers).
    """
    one = torch.zeros(1, dtype=torch.int64, device="cpu")
    run_pixel_ops(torch.zeros((1, 3, 1, 1), dtype=torch.uint8, device="cpu"), one, one, one.double(),
                  torch.zeros((1, 256), dtype=torch.uint8, device="cpu"), 255)
    if images:
        run_on_image(np.zeros((1, 1, 3), dtype=np.uint8), EQUALIZE, 0.0, 255)
