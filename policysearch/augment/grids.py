"""Grids of augmented samples: the picture ``policysearch show`` writes and the search report embeds.

Each row is one image of a data set, the first column the original and the others views drawn through
a policy (its baseline crop and flip included). Pillow and torch draw it (with matplotlib's DejaVu Sans,
which has accented, Greek and Cyrillic letters), imported inside the functions so that the command line's
``--help`` stays fast.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Sequence

from policysearch.wording import counted

if TYPE_CHECKING:  # imported by the functions that draw, so that --help stays fast
    import torch
    from PIL import Image, ImageFont

    from policysearch.augment.policy import Policy

__all__ = ["CELL_TARGET", "GAP", "GRID_SAMPLES", "GRID_VIEWS", "LabelledImages", "MARGIN", "augmented_views", "from_pil", "grid_scale", "render_grid",
           "sample_grid", "to_pil"]


class LabelledImages(Protocol):
    """What a grid is drawn from (``training.data.ImageData`` is one): uint8 images [N, C, H, W], their labels,
    the class names the labels index and the data set's name."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: Sequence[str]
    name: str

    def __len__(self) -> int: ...


CELL_TARGET = 64  # pixels; the default scale brings images near this size
GRID_SAMPLES, GRID_VIEWS = 8, 8  # rows and augmented views per row: `show` and a run's grid.png alike
GAP = 4
MARGIN = 10
BACKGROUND = (255, 255, 255)
TEXT = (30, 30, 30)
MUTED = (110, 110, 110)


@functools.lru_cache(maxsize=None)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    import matplotlib
    from PIL import ImageFont

    try:  # Pillow's own font has no accented letters: class names such as "chien é" came out as boxes
        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)
    except (OSError, ImportError):  # a matplotlib without its fonts, a Pillow without FreeType
        pass
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 (one size), or without FreeType: its bitmap font
        return ImageFont.load_default()


def _latin1(texts: Sequence[str], font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> list[str]:
    """``texts`` as ``font`` can take them: Pillow's bitmap font encodes Latin-1 only (a title may hold a
    path or a policy name in any script), so another character becomes '?'."""
    from PIL import ImageFont

    if isinstance(font, ImageFont.FreeTypeFont):
        return list(texts)
    return ["".join(ch if ord(ch) < 256 else "?" for ch in text) for text in texts]


def _drawn(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> bytes:
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (64, 32))
    ImageDraw.Draw(canvas).text((0, 0), text, font=font, fill=255)
    return canvas.tobytes()


def _drawable(text: str, size: int = 11) -> bool:
    """Whether the grid's font has a glyph for every character of ``text`` (a missing one is drawn as the
    font's empty box, which is what U+10FFFD, a character no font has, draws)."""
    from PIL import ImageFont

    font = _font(size)
    if not isinstance(font, ImageFont.FreeTypeFont):  # Pillow's bitmap font: Latin-1 only
        return all(ord(ch) < 256 for ch in text)
    box = _drawn("\U0010fffd", font)
    return all(ch.isspace() or _drawn(ch, font) != box for ch in text)


def render_grid(rows: Sequence[Sequence[Image.Image]], column_labels: Sequence[str], row_labels: Sequence[str],
                title: Sequence[str], scale: int) -> tuple[Image.Image, list[list[tuple[int, int, int, int]]]]:
    """Draw ``rows`` (lists of same-sized PIL images) as a labelled grid; returns (image, cell boxes).

    ``boxes[r][c]`` is the (left, top, right, bottom) pixel box of cell (r, c): its content is the image
    upscaled ``scale`` times with nearest neighbour.
    """
    from PIL import Image, ImageDraw

    title_font, font = _font(14), _font(11)
    title, column_labels, row_labels = (_latin1(texts, font) for texts in (title, column_labels, row_labels))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def size(text, f):
        left, top, right, bottom = probe.textbbox((0, 0), text, font=f)
        return right - left, bottom - top

    cell_w, cell_h = rows[0][0].width * scale, rows[0][0].height * scale
    label_w = max(size(t, font)[0] for t in row_labels) + 8 if row_labels else 0
    header_h = max(size(t, font)[1] for t in column_labels) + 6
    title_h = sum(size(t, title_font if i == 0 else font)[1] + 5 for i, t in enumerate(title))
    columns = len(rows[0])
    grid_w = label_w + columns * cell_w + (columns - 1) * GAP
    grid_h = header_h + len(rows) * cell_h + (len(rows) - 1) * GAP
    title_w = max(size(t, title_font if i == 0 else font)[0] for i, t in enumerate(title))
    width = 2 * MARGIN + max(grid_w, title_w)
    height = 2 * MARGIN + title_h + 6 + grid_h
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)

    y = MARGIN
    for i, line in enumerate(title):
        f = title_font if i == 0 else font
        draw.text((MARGIN, y), line, fill=TEXT if i == 0 else MUTED, font=f)
        y += size(line, f)[1] + 5
    top = y + 6
    x0 = MARGIN + label_w
    for c, text in enumerate(column_labels):
        w, _ = size(text, font)
        draw.text((x0 + c * (cell_w + GAP) + (cell_w - w) // 2, top), text, fill=MUTED if c else TEXT, font=font)
    y0 = top + header_h
    boxes = []
    for r, row in enumerate(rows):
        y = y0 + r * (cell_h + GAP)
        if row_labels:
            w, h = size(row_labels[r], font)
            draw.text((MARGIN + label_w - 8 - w, y + (cell_h - h) // 2), row_labels[r], fill=MUTED, font=font)
        row_boxes = []
        for c, img in enumerate(row):
            x = x0 + c * (cell_w + GAP)
            canvas.paste(img.convert("RGB").resize((cell_w, cell_h), Image.Resampling.NEAREST), (x, y))
            row_boxes.append((x, y, x + cell_w, y + cell_h))
        boxes.append(row_boxes)
    # A thin line between the originals and the augmented views.
    line_x = x0 + cell_w + GAP // 2
    draw.line([(line_x, y0 - 2), (line_x, y0 + grid_h - header_h + 1)], fill=(170, 170, 170), width=1)
    return canvas, boxes


def augmented_views(policy: Policy, images: torch.Tensor, views: int, seed: int,
                    backend: str) -> list[list[torch.Tensor]]:
    """``views`` augmented versions of every image of ``images`` (uint8 [S, C, H, W]) -> [S][views] tensors."""
    import torch

    from policysearch.augment.image_transform import PolicyTransform
    from policysearch.augment.transforms import BatchPolicyTransform

    generator = torch.Generator().manual_seed(seed)
    if backend == "batch":
        transform = BatchPolicyTransform(policy)
        batch = images.repeat_interleave(views, dim=0)  # sample 0 x views, sample 1 x views, ...
        out = transform(batch, generator=generator)
        return [[out[s * views + v] for v in range(views)] for s in range(len(images))]
    pil = [to_pil(img) for img in images]
    transform = PolicyTransform(policy, pool=pil, generator=generator)
    return [[from_pil(transform(img)) for _ in range(views)] for img in pil]


def to_pil(image: torch.Tensor) -> Image.Image:
    """A uint8 [C, H, W] tensor (1 or 3 channels) as a PIL image."""
    from PIL import Image

    array = image.permute(1, 2, 0).numpy()
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array, "L" if array.shape[2] == 1 else "RGB")


def from_pil(img: Image.Image) -> torch.Tensor:
    """A PIL image as a uint8 [C, H, W] tensor."""
    import numpy as np
    import torch

    array = np.asarray(img)
    array = array[:, :, None] if array.ndim == 2 else array
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def grid_scale(height: int, width: int, scale: int | None = None) -> int:
    """The upscaling of an image in a sample grid: ``scale``, or about ``CELL_TARGET`` pixels per image."""
    return scale or max(1, round(CELL_TARGET / max(height, width)))


def sample_grid(policy: Policy, data: LabelledImages, *, about: str, samples: int = GRID_SAMPLES, views: int = GRID_VIEWS, seed: int = 0,
                backend: str = "batch", scale: int | None = None) -> tuple[Image.Image, int, int]:
    """The grid of ``samples`` seeded picks of ``data`` (an ``ImageData``) and ``views`` augmented views of
    each through ``policy``; returns (PIL image, samples drawn, scale). ``about`` names the policy in the title.
    """
    import torch

    samples = min(samples, len(data))
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randperm(len(data), generator=generator)[:samples]
    images = data.images[picks]
    drawn = augmented_views(policy, images, views, seed, backend)
    height, width = images.shape[-2:]
    scale = grid_scale(height, width, scale)
    rows = [[to_pil(images[s])] + [to_pil(v) for v in drawn[s]] for s in range(samples)]
    columns = ["original"] + [f"view {v + 1}" for v in range(views)]
    # a name the font cannot draw (Chinese, say) is the class's number instead of a row of boxes
    labels = [name if _drawable(name) else f"class {k}" for k, name in
              ((int(data.labels[i]), str(data.classes[int(data.labels[i])])) for i in picks)]
    title = [f"{about}: {counted(len(policy), 'sub-policy', 'sub-policies')}",
             f"{data.name}, {counted(samples, 'sample')} x {counted(views, 'view')}, seed {seed}, "
             f"{backend} path, {width}x{height} px shown x{scale}"]
    canvas, _ = render_grid(rows, columns, labels, title, scale)
    return canvas, samples, scale
