"""Pixel kernels of the batched ops: per-sample lookup tables, histograms, blends and luma on uint8 levels.

The op table (``ops``) builds its pixel-wise ops from these; they reproduce PIL's integer arithmetic, so
the batched path agrees with the PIL path bit for bit.
"""

from __future__ import annotations

import torch


def per_sample(arg: torch.Tensor) -> torch.Tensor:
    """Per-sample argument [n] as [n, 1, 1, 1] for broadcasting over an image batch."""
    return arg.view(-1, 1, 1, 1)


def blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor, exact: bool) -> torch.Tensor:
    """PIL's Image.blend(degenerate, x, factor): in float32, clipped, truncated to uint8 when exact."""
    out = ((x - degenerate) * per_sample(factor).to(x.dtype)).add_(degenerate).clamp_(0.0, 255.0)
    return out.trunc_() if exact else out


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float levels in [0, 255] as uint8, truncated toward zero.

    On the CPU this goes through int16: converting float to uint8 directly is a scalar loop there, slower
    than the two vectorised conversions (float to int16 truncates the same way).
    """
    if x.device.type == "cpu" and x.is_floating_point():
        return x.to(torch.int16).to(torch.uint8)
    return x.to(torch.uint8)


def blend_uint8(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``blend`` in exact mode, returned as uint8: the same float32 steps, in place on ``x`` (a float32
    scratch copy), and no separate truncation since converting [0, 255] to uint8 truncates."""
    return to_uint8(x.sub_(degenerate).mul_(per_sample(factor).to(x.dtype)).add_(degenerate).clamp_(0.0, 255.0))


def grey(x: torch.Tensor, exact: bool) -> torch.Tensor:
    """Luma as PIL's convert('L') computes it (ITU-R 601-2), [n, 1, H, W]; grey input passes through."""
    if x.shape[1] == 1:
        return x
    if exact:
        # PIL's 16.16 fixed point, (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16: every product and
        # partial sum is an integer below 2**24, so float32 computes it exactly, in any order; one
        # matrix product over the channels is the cheapest way to sum them.
        # On other devices the channels are summed with scalar products instead: no weights to upload
        # (a host synchronisation) and no matrix unit that might round in TF32.
        n, _, h, w = x.shape
        xf = x.to(torch.float32)
        if x.device.type == "cpu":
            weights = torch.tensor([[19595.0, 38470.0, 7471.0]], device="cpu")
            luma = torch.matmul(weights, xf.reshape(n, 3, h * w)).view(n, 1, h, w)
        else:
            luma = xf[:, 0:1] * 19595.0 + xf[:, 1:2] * 38470.0 + xf[:, 2:3] * 7471.0
        return luma.add_(0x8000).mul_(1.0 / 65536).floor_().to(x.dtype)
    if x.device.type != "cpu":
        return x[:, 0:1] * 0.299 + x[:, 1:2] * 0.587 + x[:, 2:3] * 0.114
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device="cpu")
    return (x * weights.view(1, 3, 1, 1)).sum(1, keepdim=True)


def table_index(x: torch.Tensor) -> torch.Tensor:
    """For integer levels x [n, C, H, W] in 0..255: each pixel's entry in a flat [n, C, 256] table (int32)."""
    n, c, h, w = x.shape
    offset = torch.arange(0, n * c * 256, 256, dtype=torch.int32, device=x.device).view(n, c, 1)
    return x.reshape(n, c, h * w).to(torch.int32).add_(offset).reshape(-1)


def apply_lut(x: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """Map integer-valued x [n, C, H, W] through per-sample, per-channel tables lut [n, C, 256].

    One gather per plane, along its table's row: the index is each value itself (no per-plane offset to
    add), and the gather is split over the threads by plane, where a lookup in one flat table
    (index_select) is a single-threaded loop on the CPU.
    """
    n, c, h, w = x.shape
    planes = x.reshape(n * c, h * w)
    return lut.to(x.dtype).reshape(n * c, 256).gather(1, planes.to(torch.int64)).view(x.shape)


# From this many pixels per plane a uint8 batch on the CPU is counted plane by plane (see ``histogram``).
PLANE_COUNT_PIXELS = 128 * 128


def histogram(x: torch.Tensor) -> torch.Tensor:
    """256-bin histogram per sample and channel of integer levels x in 0..255, [n, C, 256] (int64).

    One bincount over every pixel's table entry (``table_index``) counts all samples and channels at once.
    On the CPU, uint8 planes of ``PLANE_COUNT_PIXELS`` or more are counted one by one instead, on their
    bytes: building the int32 index costs more than the extra calls there.
    """
    n, c, h, w = x.shape
    if x.device.type == "cpu" and x.dtype == torch.uint8 and n * c and h * w >= PLANE_COUNT_PIXELS:
        return torch.stack([torch.bincount(plane, minlength=256) for plane in x.reshape(n * c, h * w)]).view(n, c, 256)
    index = table_index(x)
    if x.device.type != "cpu":  # bincount reads its largest value back to the host there; this does not
        ones = torch.ones((), dtype=torch.int64, device=x.device).expand(len(index))
        return torch.zeros(n * c * 256, dtype=torch.int64, device=x.device).index_add_(0, index, ones).view(n, c, 256)
    return torch.bincount(index, minlength=n * c * 256).view(n, c, 256)


def quantised(x: torch.Tensor) -> torch.Tensor:
    """Integer levels 0..255 for ops defined on a histogram (float input is rounded to its level)."""
    return x.round().clamp(0, 255)
