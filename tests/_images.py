"""Deterministic, natural-looking test images: smooth gradients, blobs, shapes, edges and mild noise."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw


def natural_array(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A uint8 image [H, W, C] (or [H, W] for C=1) with gradients, a disc, a rectangle, a line and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    yy /= max(height - 1, 1)
    xx /= max(width - 1, 1)
    planes = []
    for c in range(3):
        a, b, phase = rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0, 2 * np.pi)
        base = 128 + 70 * (a * xx + b * yy) + 35 * np.sin(2 * np.pi * (xx * rng.uniform(0.5, 2) + yy) + phase)
        planes.append(base)
    img = np.stack(planes, axis=-1)
    img += rng.normal(0, 6, img.shape)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(pil)
    for _ in range(3):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        x1, y1 = x0 + rng.integers(2, max(3, width // 2)), y0 + rng.integers(2, max(3, height // 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse([x0, y0, x1, y1], fill=colour)
        else:
            draw.rectangle([x0, y0, x1, y1], fill=colour)
    draw.line([0, int(height * 0.7), width - 1, int(height * 0.2)], fill=(250, 250, 250), width=1)
    draw.point([(0, 0)], fill=(0, 0, 0))  # full range present: AutoContrast/Equalize have work to do
    out = np.asarray(pil).copy()
    out[height - 1, width - 1] = 255
    if channels == 1:
        return np.asarray(pil.convert("L"))
    return out


def natural_pil(height: int, width: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    arr = natural_array(height, width, 1 if mode == "L" else 3, seed)
    return Image.fromarray(arr, mode)


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """uint8 [C, H, W]."""
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    arr = x.permute(1, 2, 0).numpy()
    return Image.fromarray(arr[:, :, 0], "L") if arr.shape[2] == 1 else Image.fromarray(arr, "RGB")


def natural_batch(n: int, height: int, width: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """uint8 [n, C, H, W] of distinct natural images."""
    mode = "L" if channels == 1 else "RGB"
    return torch.stack([pil_to_tensor(natural_pil(height, width, mode, seed + i)) for i in range(n)])
