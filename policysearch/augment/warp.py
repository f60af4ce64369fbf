"""The nearest-neighbour affine warp every geometric op runs through, exact to PIL's ``Image.transform``.

Samples of different geometric ops share one call; ``warp_index`` and ``gather_warp`` split it into a
source-pixel table computed once and a gather on the batch's device.
"""

from __future__ import annotations

import numpy as np
import torch


def warp(x: torch.Tensor, matrix: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour affine warp that reproduces PIL's Image.transform(AFFINE, NEAREST) exactly.

    ``matrix`` [n, 6] (float64), one row per sample, maps an output pixel centre (x + 0.5, y + 0.5) to
    input coordinates, as PIL's transform data does. Pixels mapped outside the image take ``fill``. Like
    PIL, a pure scale/translate matrix steps through positions in double precision and any other matrix
    uses 16.16 fixed point, so both pick the same source pixel as PIL. Samples of different ops can share
    one call: whole-pixel translations come out the same either way, so they join either kind; a batch
    that mixes other scales with rotations or shears is split in two. A gather on integer indices is also
    much cheaper than grid_sample on large images.

    The per-sample parameters are a handful of numbers, prepared on the host with numpy in the same
    float64 steps (a dozen tiny torch ops cost more than the gather itself on small images); the
    per-pixel work runs on the batch's device.
    """
    m = matrix.detach().to("cpu", torch.float64).numpy()
    separable = (m[:, 1] == 0) & (m[:, 3] == 0)
    shifts = m[:, [2, 5]]
    shift_only = separable & (m[:, 0] == 1) & (m[:, 4] == 1) & (shifts == np.round(shifts)).all(1)
    groups = [(rows, fn) for rows, fn in ((shift_only, warp_shift), (separable & ~shift_only, _warp_separable),
                                          (~separable, _warp_fixed_point)) if rows.any()]
    if len(groups) == 1:
        return groups[0][1](x, m, fill)
    parts, order = [], []
    for rows, fn in groups:
        index = np.flatnonzero(rows)
        parts.append(fn(x.index_select(0, torch.from_numpy(index).to(x.device)), m[rows], fill))
        order.append(index)
    inverse = torch.from_numpy(np.argsort(np.concatenate(order))).to(x.device)
    return torch.cat(parts).index_select(0, inverse)


def warp_shift(x: torch.Tensor, m: np.ndarray, fill: torch.Tensor) -> torch.Tensor:
    """Whole-pixel translations: out[y, x] = in[y + f, x + c] (c, f = m[:, 2], m[:, 5]), fill outside.

    In a plane laid out flat, a translation reads every pixel at one offset f * W + c: each plane is
    copied once between margins of fill, and its output is the window at its offset (one contiguous copy
    per plane). Rows moved in from above or below read the margins; columns moved in from the side
    would read the neighbouring row, so they are set to the fill afterwards. Memory copies only, several
    times cheaper than a gather.
    """
    n, c, h, w = x.shape
    dx = np.clip(m[:, 2], -w, w).astype(np.int64)
    dy = np.clip(m[:, 5], -h, h).astype(np.int64)
    offset = dy * w + dx  # [n]
    margin = int(np.abs(offset).max())
    size = h * w + 2 * margin
    planes = torch.empty((n, c, size), dtype=x.dtype, device=x.device)
    edge = fill.to(x.dtype).view(1, c, 1)
    planes[:, :, :margin] = edge
    planes[:, :, margin + h * w:] = edge
    planes[:, :, margin:margin + h * w] = x.reshape(n, c, h * w)
    starts = np.arange(n * c) * size + margin + np.repeat(offset, c)
    windows = planes.view(-1).as_strided((n * c * size - h * w + 1, h * w), (1, 1))
    out = windows.index_select(0, torch.from_numpy(starts).to(x.device)).view(n, c, h, w)
    if (dx != 0).any():  # multiplied by 0 or 1 (masked_fill_ and where are scalar loops on the CPU)
        columns = np.arange(w) + dx[:, None]  # [n, w]
        inside = torch.from_numpy((columns >= 0) & (columns < w)).to(x.device, x.dtype).view(n, 1, 1, w)
        out.mul_(inside)
        if bool((fill != 0).any()):
            out.add_((1 - inside) * fill.to(x.dtype).view(1, c, 1, 1))
    return out


def warp_index(matrix: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The source of every output pixel of ``warp`` for matrices [n, 6]: [n, h * w] int32 flat positions in
    the image padded by one pixel of fill (``gather_warp``), 0 (a fill pixel) where ``warp`` fills.

    Computed by warping an image whose pixels hold their own padded positions, so it picks exactly the
    pixels ``warp`` picks; the batched transform computes it once per policy entry and image size and then
    warps on the device with a gather alone.
    """
    rows = torch.arange(1, h + 1, dtype=torch.int64, device=matrix.device).view(h, 1) * (w + 2)
    positions = (rows + torch.arange(1, w + 1, dtype=torch.int64, device=matrix.device)).expand(len(matrix), 1, h, w).contiguous()
    return warp(positions, matrix, torch.zeros(1, device=matrix.device)).view(len(matrix), h * w).to(torch.int32)


def gather_warp(x: torch.Tensor, index: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """``warp`` from precomputed sources ``index`` [n, h * w] (``warp_index``): one gather on x's device."""
    n, c, h, w = x.shape
    source = index.to(torch.int64).view(n, 1, h * w).expand(n, c, h * w)
    return _padded(x, fill).view(n, c, -1).gather(2, source).view(n, c, h, w)


def _padded(x: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """x with a border of fill on every side: positions shifted by one clamp onto it when outside."""
    n, c, h, w = x.shape
    padded = fill.to(x.dtype).view(1, c, 1, 1).expand(n, c, h + 2, w + 2).clone()
    padded[:, :, 1:-1, 1:-1] = x
    return padded


def _warp_separable(x: torch.Tensor, m: np.ndarray, fill: torch.Tensor) -> torch.Tensor:
    """Scale/translate matrices: whole rows are selected (a copy per row), then pixels gathered along each
    row; either is skipped where it keeps every sample as it is (a translation along one axis)."""
    n, c, h, w = x.shape
    xin = np.clip(_coord(_accumulate(m[:, 2] + m[:, 0] * 0.5, m[:, 0], w)) + 1, 0, w + 1)  # [n, w]
    yin = np.clip(_coord(_accumulate(m[:, 5] + m[:, 4] * 0.5, m[:, 4], h)) + 1, 0, h + 1)  # [n, h]
    padded = _padded(x, fill)
    if (yin == np.arange(1, h + 1)).all():
        rows = padded[:, :, 1:-1]
    else:
        first = np.arange(0, n * c * (h + 2), h + 2).reshape(n, c, 1)
        index = torch.from_numpy((first + yin.reshape(n, 1, h)).reshape(-1)).to(x.device)
        rows = padded.view(-1, w + 2).index_select(0, index).view(n, c, h, w + 2)
    if (xin == np.arange(1, w + 1)).all():
        return rows[..., 1:-1].contiguous()
    return rows.gather(3, torch.from_numpy(xin).to(x.device).view(n, 1, 1, w).expand(n, c, h, w))


def _warp_fixed_point(x: torch.Tensor, m: np.ndarray, fill: torch.Tensor) -> torch.Tensor:
    """Any matrix in PIL's 16.16 fixed point; x and y positions are computed together as [n, 2, H, W].

    Adding 65536 before the shift is the shift by one onto the padded image. int32 holds every position
    while |offset| + |step| * size stays below 2**14 pixels, which is checked.
    """
    n, c, h, w = x.shape
    rows = m.reshape(n, 2, 3)  # (a, b, c) for x and (d, e, f) for y
    fixed = np.floor(rows[..., :2] * 65536.0 + 0.5)  # [n, 2, 2]: steps per column and per row
    start = np.floor((rows[..., 2] + rows[..., 0] * 0.5 + rows[..., 1] * 0.5) * 65536.0 + 0.5) + 65536
    reach = (np.abs(rows[..., 2]) + np.abs(rows[..., 0]) * w + np.abs(rows[..., 1]) * h).max()
    dtype = torch.int32 if reach < 2 ** 14 else torch.int64
    params = torch.from_numpy(np.concatenate([start.reshape(n, 2, 1), fixed], axis=2)).to(x.device, dtype)
    cols = torch.arange(w, device=x.device, dtype=dtype).view(1, 1, 1, w)
    lines = torch.arange(h, device=x.device, dtype=dtype).view(1, 1, h, 1)
    start, per_col, per_row = (params[..., k].view(n, 2, 1, 1) for k in range(3))
    pos = (start + lines * per_row) + cols * per_col
    pos = pos.bitwise_right_shift_(16).clamp_(min=0)
    xin, yin = pos[:, 0].clamp_(max=w + 1), pos[:, 1].clamp_(max=h + 1)
    index = yin.mul_(w + 2).add_(xin).to(torch.int64).view(n, 1, h * w)
    return _padded(x, fill).view(n, c, -1).gather(2, index.expand(n, c, h * w)).view(n, c, h, w)


def _accumulate(start: np.ndarray, step: np.ndarray, length: int) -> np.ndarray:
    """start, start + step, (start + step) + step, ... summed one step at a time in float64, [n, length]."""
    terms = np.concatenate([start.reshape(-1, 1), np.broadcast_to(step.reshape(-1, 1), (len(step), length - 1))], 1)
    return np.cumsum(terms, axis=1)


def _coord(v: np.ndarray) -> np.ndarray:
    """PIL's COORD: truncation for non-negative positions, -1 (outside) for negative ones."""
    return np.where(v < 0, -1, v.astype(np.int64))
