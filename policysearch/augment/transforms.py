"""Companion transforms that apply a policy per sample on a whole batch, and Cutout.

``BatchPolicyTransform`` is an ``nn.Module`` for ``[B, C, H, W]`` batches on any device: every sample
draws its own sub-policy, probability gates, signs and op parameters, all drawn first (``sample``) and
then applied (``apply``) with loops over ops only, never over samples. It applies the policy's
``Baseline`` (pad-and-crop, flip) after its ops, so a policy file reproduces the whole recipe.
The per-image, torchvision-compatible ``PolicyTransform`` is in :mod:`policysearch.augment.image_transform`
(importing this module does not import torchvision, which a search's workers never need).
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import itertools
import math
import numbers
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from policysearch.augment.cpu_kernels import CODES, TABLE, run_pixel_ops, warm_up
from policysearch.augment.kernels import apply_lut, to_uint8
from policysearch.augment.ops import OPS, OpSpec, TensorContext, pil_equalize_divisor, cutout_pil, cutout_tensor
from policysearch.augment.policy import Baseline, Policy, PolicyError
from policysearch.augment.standard import load_policy, load_policy_file
from policysearch.augment.warp import gather_warp, warp, warp_index, warp_shift
from policysearch.augment.worker_generator import SeededTransform

Fill = float | Sequence[float]


@dataclass(frozen=True)
class PlanStep:
    """One op applied to a group of samples: their indices, signed arguments and extra random draws."""

    op: OpSpec
    index: torch.Tensor  # [k] sample indices
    arg: torch.Tensor  # [k] float64
    draw: Mapping[str, torch.Tensor]
    slot: int  # the position in the sub-policy: every step of slot j runs before any of slot j + 1
    # Looked up per sample from the policy's entries when sample() draws the plan; computed from ``arg``
    # when absent: the affine matrices [k, 6] of a geometric op, the tables [k, 256] of an op whose
    # table depends on the argument alone.
    matrix: torch.Tensor | None = None
    table: torch.Tensor | None = None
    # A geometric op's source pixels [k, H * W] (``warp_index``), looked up per sample on accelerators so
    # that the warp runs there without its matrices going to the host, and on the CPU for small images.
    source: torch.Tensor | None = None


@dataclass(frozen=True)
class Plan:
    """Every random choice for one batch, drawn before anything is applied; replayable with ``apply``."""

    sub_policy: torch.Tensor  # [B] index of the sub-policy each sample uses
    steps: tuple[PlanStep, ...]
    shape: tuple[int, int, int, int]
    baseline: Baseline = Baseline()
    crop: torch.Tensor | None = None  # [B, 2] crop offsets (y, x) into the padded image, when pad_crop > 0
    flip: torch.Tensor | None = None  # [B] bool, when the baseline flips
    # Set by ``sample``, which gives the steps of one slot different samples by construction; a plan built
    # by hand is checked (``_check_slots``) before it is applied.
    drawn: bool = field(default=False, compare=False, repr=False)


def _check_generator(generator: torch.Generator | None, device: torch.device) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator, got {type(generator).__name__} "
                        "(for a seed, torch.Generator().manual_seed(seed))")
    if generator is not None and generator.device.type != device.type:
        raise ValueError(
            f"the generator is on {generator.device} but the batch is on {device}; "
            f"create it with torch.Generator(device=batch.device)"
        )


def draw_baseline(baseline: Baseline, b: int, device: torch.device | str,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The random choices of a baseline for ``b`` samples: crop offsets [B, 2] (y, x) and flips [B]."""
    device = torch.device(device)
    p = baseline.pad_crop
    crop = flip = None
    if p > 0:
        dy = torch.randint(0, 2 * p + 1, (b,), generator=generator, device=device)
        dx = torch.randint(0, 2 * p + 1, (b,), generator=generator, device=device)
        crop = torch.stack([dy, dx], dim=1)
    if baseline.hflip:
        flip = torch.rand((b,), generator=generator, device=device) < 0.5
    return crop, flip


def apply_baseline(batch: torch.Tensor, pad: int, crop: torch.Tensor | None,
                   flip: torch.Tensor | None) -> torch.Tensor:
    """Zero-pad by ``pad`` and crop each sample at its offsets, then flip the samples marked in ``flip``."""
    b, c, h, w = batch.shape
    if batch.device.type == "cpu" and b and ((crop is not None and pad > 0) or flip is not None):
        return _baseline_in_place(new_batch(batch.shape, batch.dtype, batch.device).copy_(batch), pad, crop, flip)
    out = batch
    if crop is not None and pad > 0 and b:
        # Gathered from the batch itself, positions outside it set to zero: the padded image is never
        # built (pad may be up to 4096, far larger than the image).
        dev = batch.device
        rows = crop[:, :1] - pad + torch.arange(h, device=dev)  # [B, H] source rows
        cols = crop[:, 1:] - pad + torch.arange(w, device=dev)  # [B, W]
        inside = (((rows >= 0) & (rows < h))[:, None, :, None] & ((cols >= 0) & (cols < w))[:, None, None, :])
        bi = torch.arange(b, device=dev)[:, None, None, None]
        ci = torch.arange(c, device=dev)[None, :, None, None]
        out = batch[bi, ci, rows.clamp(0, h - 1)[:, None, :, None], cols.clamp(0, w - 1)[:, None, None, :]]
        out = out.masked_fill_(~inside, 0)
    if flip is not None and b:
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    return out


def _baseline_in_place(x: torch.Tensor, pad: int, crop: torch.Tensor | None, flip: torch.Tensor | None) -> torch.Tensor:
    """``apply_baseline`` on the CPU, in place on a contiguous batch of our own, a piece of samples at a time.

    A crop is a whole-pixel translation filled with zeros (``warp.warp_shift``: window copies, no gather)
    and a flip reverses the marked samples only: much faster than gathering every pixel and choosing
    between the flipped and the kept batch.
    """
    b, c = x.shape[:2]
    shifts = (crop - pad).numpy() if crop is not None and pad > 0 else None  # [B, 2]: (y, x) source offsets
    if shifts is None and flip is None:
        return x
    most = max(1, CHUNK_LIMIT * torch.get_num_threads() // max(x[0].numel(), 1))
    zero = torch.zeros(c, device="cpu")
    for start in range(0, b, most):
        part = x[start:start + most]
        if shifts is not None:
            matrix = np.zeros((len(part), 6))
            matrix[:, 0] = matrix[:, 4] = 1.0
            matrix[:, 2], matrix[:, 5] = shifts[start:start + len(part), 1], shifts[start:start + len(part), 0]
            part.copy_(warp_shift(part, matrix, zero))
        if flip is not None:
            rows = flip[start:start + len(part)].nonzero().view(-1)
            if len(rows):
                copy_rows(part, rows, part.index_select(0, rows).flip(-1))
    return x


class BaselineAugment(torch.nn.Module):
    """Per-sample random zero-pad crop and horizontal flip of a [B, C, H, W] batch, on any device.

    All random values are drawn first (crop offsets y, x, then flips) from `generator`, so the same
    generator state gives the same output. No Python loop over samples.
    """

    def __init__(self, baseline: Baseline) -> None:
        super().__init__()
        self.baseline = baseline

    def forward(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if batch.dim() != 4:
            raise ValueError(f"expected a batch [B, C, H, W], got shape {tuple(batch.shape)}")
        if batch.shape[0] == 0:
            return batch
        _check_generator(generator, batch.device)
        crop, flip = draw_baseline(self.baseline, batch.shape[0], batch.device, generator)
        return apply_baseline(batch, self.baseline.pad_crop, crop, flip)

    def extra_repr(self) -> str:
        return f"pad_crop={self.baseline.pad_crop}, hflip={self.baseline.hflip}"


def _tv_tensors() -> Any:
    """torchvision's ``tv_tensors`` where it is imported, else None (then no value is one of them): this module
    does not import torchvision, which would cost every Ray worker of a search seconds."""
    return sys.modules.get("torchvision.tv_tensors")


def _plain_images(value: Any, where: str) -> Any:
    """``value`` as a plain tensor when it is torchvision's ``tv_tensors.Image``; a TypeError for its tensors that
    hold no image (masks, boxes, videos): augmenting them as images would not keep them aligned with the images
    they belong to. Anything else as it is, for the caller's checks."""
    tv = _tv_tensors()
    if tv is None or not isinstance(value, tv.TVTensor):
        return value
    if not isinstance(value, tv.Image):
        raise TypeError(f"{where}: augments images only, got {type(value).__name__}: geometric ops would not move "
                        "boxes or masks with their image, nor draw alike for a video's frames")
    return value.as_subclass(torch.Tensor)


def _like(out: torch.Tensor, given: Any) -> torch.Tensor:
    """``out`` in the memory format of a ``given`` batch in channels_last (training code that uses it would
    otherwise pay for a copy back), and as a ``tv_tensors.Image`` where ``given`` was one."""
    if given.ndim == 4 and not given.is_contiguous() and given.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    tv = _tv_tensors()
    return tv.wrap(out, like=given) if tv is not None and isinstance(given, tv.Image) else out


def run_step(part: torch.Tensor, step: PlanStep, ctx: TensorContext) -> torch.Tensor:
    """Run one plan step on its samples ``part``; the result has part's dtype.

    A uint8 ``part`` goes to ops that declare ``uint8`` as it is; for the others it is converted to float32
    and the result (whole levels 0..255 in exact mode) back to uint8.
    """
    if part.dtype != torch.uint8 or step.op.uint8:
        return step.op.tensor(part, step.arg, step.draw, ctx).to(part.dtype)
    return to_uint8(step.op.tensor(part.to(torch.float32), step.arg, step.draw, ctx))


# A fused stage holds at most this many pixel values (samples x C x H x W). Below it a step's cost is
# mostly its fixed per-op overhead, which fusing saves; above it, memory traffic dominates and fusing
# would only add large temporaries (the limit was timed: docs/findings.md).
FUSE_LIMIT = 1 << 18

# On the CPU a step of more values than this per thread runs in pieces of at most that many (at least
# one sample): an op makes several passes over its samples, and its temporaries (int32 indices, float32
# copies) then stay in each thread's cache between passes instead of going to memory and back.
CHUNK_LIMIT = 1 << 19

# On the CPU, plans for images of at most this many pixels carry each geometric step's source pixels
# (``warp_index``, looked up per distinct op and argument), so that its warp is one gather: faster than
# preparing the warp from the matrices, where that preparation is most of the work. Larger images
# compute them in the warp, which keeps the plan small (its size does not grow with the image).
SOURCE_PIXELS = 64 * 64

# copy_rows copies samples of at least this many bytes one by one when there are at most ROW_COPY_MOST.
ROW_COPY_BYTES = 1 << 14
ROW_COPY_MOST = 64

# Draws that hold one value for the whole step rather than one per sample: not split with the samples.
_SHARED_DRAWS = frozenset({"radii"})


def has_compiled_kernel(op: OpSpec) -> bool:
    """Whether ``cpu_kernels`` runs ``op`` on uint8 batches on the CPU: every table op, Color and Sharpness."""
    return op.table is not None or op.name in CODES


def compiles(x: torch.Tensor) -> bool:
    """Whether the ops of ``cpu_kernels`` run compiled on batch x: uint8 on the CPU."""
    return x.device.type == "cpu" and x.dtype == torch.uint8


def _kind(step: PlanStep, exact: bool, compiled: bool) -> str:
    if step.op.matrix is not None:
        return "warp"
    if compiled and has_compiled_kernel(step.op):
        return "compiled"
    return "table" if exact and step.op.table is not None else "op"


def _pieces(step: PlanStep, most: int) -> list[PlanStep]:
    """The step as steps of at most ``most`` samples each; per-sample fields and draws are split with them."""
    count = step.index.shape[0]
    if count <= most:
        return [step]

    def cut(value: torch.Tensor | None, part: slice) -> torch.Tensor | None:
        return None if value is None else value[part]

    out = []
    for start in range(0, count, most):
        part = slice(start, start + most)
        draw = {key: value if key in _SHARED_DRAWS else value[part] for key, value in step.draw.items()}
        out.append(dataclasses.replace(step, index=step.index[part], arg=step.arg[part], draw=draw,
                                       matrix=cut(step.matrix, part), table=cut(step.table, part),
                                       source=cut(step.source, part)))
    return out


def stages(steps: Sequence[PlanStep], exact: bool, sample_size: int, split: bool = False,
           compiled: bool = False) -> list[tuple[PlanStep, ...]]:
    """Group the steps of a plan into stages that each run as one op, in order.

    The steps of one slot touch different samples, so they can run in any order or together: the
    geometric ops of a slot share one warp and, on a uint8 batch, the pixel-wise ops one table lookup,
    as long as a stage stays under ``FUSE_LIMIT`` values (``sample_size`` values per sample). With
    ``split`` (the CPU), a step of more than ``CHUNK_LIMIT`` values per thread is first cut into pieces.
    With ``compiled`` (a uint8 batch on the CPU) the ops that ``cpu_kernels`` runs share one call per slot,
    whatever its size.
    """
    most = max(1, CHUNK_LIMIT * torch.get_num_threads() // max(sample_size, 1)) if split else None
    out: list[tuple[PlanStep, ...]] = []
    for _, group in itertools.groupby(steps, key=lambda step: step.slot):
        open_stages: dict[str, tuple[list[PlanStep], int]] = {}
        for step in group:
            kind = _kind(step, exact, compiled)
            for piece in [step] if kind == "compiled" or not most else _pieces(step, most):
                out.extend(_add_to_stage(open_stages, piece, kind, sample_size))
        out.extend(tuple(fused) for fused, _ in open_stages.values())
    return out


def _add_to_stage(open_stages: dict[str, tuple[list[PlanStep], int]], step: PlanStep, kind: str,
                  sample_size: int) -> list[tuple[PlanStep, ...]]:
    """Add ``step`` to the open stage of its kind (a compiled stage has no size limit); returns the stages
    that this closed."""
    count = step.index.shape[0]
    if kind == "op":
        return [(step,)]
    done = []
    fused, total = open_stages.get(kind, ([], 0))
    if fused and kind != "compiled" and (total + count) * sample_size > FUSE_LIMIT:
        done.append(tuple(fused))
        fused, total = [], 0
    open_stages[kind] = (fused + [step], total + count)
    return done


def _check_slots(plan: Plan) -> None:
    """Refuse a plan in which one slot applies two steps to the same sample: its steps are run together.

    sample() never draws such a plan; a plan built by hand must give each op of a sub-policy its own slot.
    """
    b = plan.shape[0]
    runs = [(slot, list(group)) for slot, group in itertools.groupby(plan.steps, key=lambda step: step.slot)]
    if not runs:
        return
    # One count over every (run of a slot, sample) pair, read back once rather than once per slot.
    codes = torch.cat([step.index + k * b for k, (_, group) in enumerate(runs) for step in group])
    counts = torch.bincount(codes)
    worst, most = torch.stack([counts.argmax(), counts.max()]).tolist()
    if most > 1:
        run, sample = divmod(worst, b)
        raise ValueError(f"plan: slot {runs[run][0]} has more than one step for sample {sample}; the steps of one "
                         "slot must touch different samples (give each op of a sub-policy its own slot)")


def run_stage(x: torch.Tensor, stage: Sequence[PlanStep], ctx: TensorContext, compiled: bool = False) -> None:
    """Run one stage (``stages``, with the same ``compiled``) on its samples of x, in place."""
    index = stage[0].index if len(stage) == 1 else torch.cat([step.index for step in stage])
    kind = _kind(stage[0], ctx.exact, compiled)
    if kind == "compiled":
        _run_compiled(x, index, stage, ctx)
        return
    # index_select and copy_rows rather than x[index] and x[index] = ...: several times faster on CPU
    part = x.index_select(0, index)
    if kind == "warp" and all(step.source is not None for step in stage):
        sources = stage[0].source if len(stage) == 1 else torch.cat([step.source for step in stage])
        out = gather_warp(part, sources, ctx.fill)
    elif kind == "warp":
        h, w = x.shape[2], x.shape[3]
        matrices = [step.matrix if step.matrix is not None else step.op.matrix(step.arg, h, w) for step in stage]
        out = warp(part, matrices[0] if len(stage) == 1 else torch.cat(matrices), ctx.fill)
    elif kind == "table" and len(stage) == 1 and stage[0].op.direct:  # its uint8 kernel beats a lookup
        out = run_step(part, stage[0], ctx)
    elif kind == "table" and (len(stage) > 1 or stage[0].table is not None):
        bounds = [0] + list(itertools.accumulate(step.index.shape[0] for step in stage))
        tables = [_step_table(step, part[start:end], ctx) for step, start, end in zip(stage, bounds, bounds[1:])]
        out = apply_lut(part, tables[0] if len(stage) == 1 else torch.cat(tables))
    else:  # an op on its own runs its own implementation
        out = run_step(part, stage[0], ctx)
    copy_rows(x, index, out)


def _run_compiled(x: torch.Tensor, index: torch.Tensor, stage: Sequence[PlanStep], ctx: TensorContext) -> None:
    """Run a compiled stage (``cpu_kernels``) on x, uint8 on the CPU, in place: one call for all its steps."""
    codes = torch.cat([torch.full((len(step.index),), CODES.get(step.op.name, TABLE), device="cpu") for step in stage])
    args = torch.cat([step.arg.to(torch.float64) for step in stage])
    tables = torch.cat([_sample_tables(x, step, ctx) for step in stage])
    run_pixel_ops(x, index, codes, args, tables, pil_equalize_divisor())


def _sample_tables(x: torch.Tensor, step: PlanStep, ctx: TensorContext) -> torch.Tensor:
    """The table [k, 256] uint8 of each sample of a step whose op's table depends on its argument alone
    (from the plan, or computed when a hand-built plan has none); unused rows for the other ops."""
    if step.op.name in CODES:
        return torch.empty((len(step.index), 256), dtype=torch.uint8, device="cpu")
    if step.table is not None:
        return step.table.to(torch.uint8)
    return step.op.table(x.index_select(0, step.index), step.arg, ctx)[:, 0].to(torch.uint8)


def _step_table(step: PlanStep, part: torch.Tensor, ctx: TensorContext) -> torch.Tensor:
    if step.table is not None:
        return step.table.view(-1, 1, 256).expand(-1, part.shape[1], -1)
    return step.op.table(part, step.arg, ctx)


def copy_rows(x: torch.Tensor, index: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``x[index] = rows`` along dimension 0, in place.

    On CPU, index_copy_ moves uint8 data one byte at a time; moving the same bytes as int32 words is
    much faster, so contiguous uint8 samples whose size is a multiple of 4 bytes are copied that way.
    Samples of ``ROW_COPY_BYTES`` and more are copied one by one, each a plain memory copy, faster still
    (on the CPU such samples come in pieces of a few, ``CHUNK_LIMIT``).
    """
    rows = rows.contiguous()
    if x.device.type == "cpu" and x[0].nbytes >= ROW_COPY_BYTES and len(index) <= ROW_COPY_MOST:
        for i, row in zip(index.tolist(), rows):
            x[i].copy_(row)
    elif x.dtype == torch.uint8 and x.is_contiguous() and x[0].numel() % 4 == 0 and rows.storage_offset() % 4 == 0:
        words = x.view(x.shape[0], -1).view(torch.int32)
        words.index_copy_(0, index, rows.view(rows.shape[0], -1).view(torch.int32))
    else:
        x.index_copy_(0, index, rows)
    return x


_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # float8 has no arithmetic on the CPU
# How far a float image may stray outside [0, 1] and be clamped: the overshoot of bicubic resizing or of a blur's
# rounding in a pipeline before the policy, which is not an error. torchvision's bicubic kernel (a = -0.75) can
# overshoot by (1.375 ** 2 - 1) / 2 = 0.445 at most, at high-contrast edges (text, line drawings); a normalised
# data set strays further on its first images (ImageNet's statistics reach -2.1 for black).
FLOAT_SLACK = 0.5
NORMALISED_MOST = 3.0  # at most this, floats out of [0, 1] are normalised ones (ImageNet's reach 2.64)
SURELY_0_255 = 25.5  # above this, and none below 0, 0..255 values (normalised ones would need a std under 0.04)


def check_image(image: torch.Tensor) -> torch.Tensor:
    """``image`` [C, H, W] as a checked batch of one (``check_image_batch``), or an error that names its shape."""
    if image.shape[0] not in (1, 3):
        raise ValueError(f"image: expected 1 (grey) or 3 (RGB) channels in dimension 0 of [C, H, W], got "
                         f"{image.shape[0]} (shape {tuple(image.shape)}); drop alpha, or permute an "
                         "[H, W, C] image with .permute(2, 0, 1)")
    return check_image_batch(image.unsqueeze(0), where="image")


def check_image_batch(batch: Any, where: str = "batch") -> torch.Tensor:
    """``batch`` if it is a [B, C, H, W] uint8 or [0, 1] float tensor with C in {1, 3}, else a clear error; a
    float batch that strays at most ``FLOAT_SLACK`` outside [0, 1] comes back clamped into it (a copy)."""
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"{where}: expected a torch.Tensor [B, C, H, W], got {type(batch).__name__}")
    if batch.ndim != 4:
        raise ValueError(f"{where}: expected 4 dimensions [B, C, H, W], got shape {tuple(batch.shape)}")
    if batch.shape[1] not in (1, 3):
        raise ValueError(f"{where}: expected 1 (grey) or 3 (RGB) channels in dimension 1, "
                         f"got {batch.shape[1]} (shape {tuple(batch.shape)}); drop alpha or reorder to [B, C, H, W]")
    if batch.dtype != torch.uint8 and batch.dtype not in _FLOATS:
        raise TypeError(f"{where}: expected dtype uint8 (0..255) or float (0..1: float16, bfloat16, float32 or "
                        f"float64), got {batch.dtype}")
    if batch.is_meta:
        raise ValueError(f"{where}: a tensor on the meta device holds no pixels to augment")
    if not batch.is_floating_point() or not batch.numel():
        return batch
    low, high = (value.item() for value in torch.aminmax(batch))
    if 0 <= low and high <= 1:
        return batch
    # the bounds as the batch's dtype holds them: float32's 1.1 is 1.10000002 in double, over a double 1.1
    lowest, highest = (float(torch.tensor(v, dtype=batch.dtype, device="cpu")) for v in (-FLOAT_SLACK, 1 + FLOAT_SLACK))
    if lowest <= low and high <= highest:
        return batch.clamp(0.0, 1.0)
    # Normalised images reach about 1/std, 0..255 ones far above 3 (a resize may undershoot 0); between the two,
    # or below 0 and above NORMALISED_MOST, either may be, and the message names both. Up to NORMALISED_MOST
    # and none below 0: divided by a std alone, or scaled wrongly.
    hint = ("NaN or infinite values" if not (math.isfinite(low) and math.isfinite(high)) else
            "none below 0: normalised by a std alone, or scaled wrongly, it seems: augment before Normalize, or "
            "bring the values into [0, 1]" if low >= 0 and high <= NORMALISED_MOST else
            "normalised images, it seems: augment before Normalize" if high <= NORMALISED_MOST else
            "0..255 values, it seems: divide by 255 or pass uint8" if low >= lowest and high > SURELY_0_255 else
            "normalised images or 0..255 values, it seems: augment before Normalize, or divide 0..255 values by "
            "255 or pass uint8")
    raise ValueError(f"{where}: float images must hold values in [0, 1], found [{low:.6g}, {high:.6g}]; {hint}")


_HUGE_PAGE = 1 << 21
_MADV_HUGEPAGE = 14  # Linux


@functools.lru_cache(maxsize=1)
def _madvise() -> Any:
    """libc's ``madvise`` on Linux (None elsewhere, or where it cannot be found)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def _read_half_levels(x: torch.Tensor, batch: torch.Tensor) -> None:
    """Read a float16 or bfloat16 value that is the rounding of a level k / 255 as k itself, in place in
    ``x`` (the batch times 255, float32). Those types hold k / 255 up to 0.06 and 0.5 of a level off, which
    put a level just below a step of Posterize, Solarize or Equalize into the bin beneath and left Invert's
    output off the levels; any other value is kept as it is."""
    levels = x.round()
    torch.where(levels.div(255.0).to(batch.dtype) == batch, levels, x, out=x)


def new_batch(shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised contiguous tensor for an output batch.

    A large CPU buffer is fresh memory from the system, and the first write to each 4 KiB page costs a
    page fault: for a batch of 256 images of 224x224 that was three quarters of the time of copying it.
    Asking the kernel for 2 MiB pages (``MADV_HUGEPAGE``, before anything is written) makes that 512x
    fewer faults; it is advice only, and where it is refused or not available nothing changes.
    """
    out = torch.empty(tuple(shape), dtype=dtype, device=device)
    madvise = _madvise() if out.device.type == "cpu" and out.nbytes >= 4 * _HUGE_PAGE else None
    if madvise is not None:
        start = -(-out.data_ptr() // _HUGE_PAGE) * _HUGE_PAGE
        end = (out.data_ptr() + out.nbytes) // _HUGE_PAGE * _HUGE_PAGE
        madvise(start, end - start, _MADV_HUGEPAGE)
    return out


def _check_pool(pool: Any, batch: torch.Tensor) -> None:
    """Refuse a SamplePairing pool that is not uint8 images [P, C, H, W] of the batch's channels, size and device."""
    if not isinstance(pool, torch.Tensor) or pool.dtype != torch.uint8 or pool.ndim != 4 or not len(pool):
        found = f"{pool.dtype} tensor of shape {tuple(pool.shape)}" if isinstance(pool, torch.Tensor) else type(pool).__name__
        raise ValueError(f"pool: expected a uint8 tensor [P, C, H, W] of at least one image, got {found}")
    if pool.shape[1:] != batch.shape[1:] or pool.device != batch.device:
        raise ValueError(f"pool: its images {tuple(pool.shape[1:])} on {pool.device} must match the batch's "
                         f"{tuple(batch.shape[1:])} on {batch.device}")


def _host_kernels(device: torch.device) -> bool:
    """Whether plans for ``device`` use the host-side kernels: the warp's per-sample parameters prepared
    with numpy and Blur grouped by radius (fastest on the CPU); elsewhere precomputed sources and masks keep
    every value on the device."""
    return device.type == "cpu"


def _device_argument(args: tuple, kwargs: dict) -> torch.device | None:
    """The device named in ``Module.to``'s arguments (a device, a string, an ordinal or a tensor), if any."""
    for value in (kwargs.get("device"), *args):
        if isinstance(value, torch.Tensor):
            return value.device
        if isinstance(value, (str, torch.device)) or (isinstance(value, int) and not isinstance(value, bool)):
            return torch.device(value)
    return None


def check_fill_channels(fill: tuple[int, ...], channels: int) -> None:
    """Refuse a fill of neither one value nor one per channel of the images it fills (as torchvision does)."""
    if len(fill) not in (1, channels):
        raise ValueError(f"fill: {len(fill)} values for images of {channels} channel{'s' if channels > 1 else ''}; "
                         f"give one grey level{f' or {channels}' if channels > 1 else ''}")


def _fill_tensor(fill: tuple[int, ...], channels: int, device: torch.device) -> torch.Tensor:
    check_fill_channels(fill, channels)
    return torch.tensor([float(v) for v in fill], dtype=torch.float32, device=device).expand(channels).clone()


def _check_fill(fill: Fill) -> tuple[int, ...]:
    """The fill as a tuple of grey levels, refused unless it is a level or a sequence of levels: whole numbers in
    [0, 255], whatever the images' dtype (a fill on the 0..1 scale of float images would round to black)."""
    def level(v: Any) -> bool:
        return (isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and 0 <= v <= 255
                and float(v).is_integer())

    if isinstance(fill, (np.ndarray, torch.Tensor)):  # one level per channel as an array
        fill = fill.tolist()
    if level(fill):
        values: tuple = (fill,)
    elif isinstance(fill, Sequence) and not isinstance(fill, (str, bytes)):
        values = tuple(fill)
    else:
        values = ()
    if not values or not all(level(v) for v in values):
        raise ValueError(f"fill: expected a grey level or a sequence of grey levels, whole numbers in [0, 255] "
                         f"also for float images (0.5 of the range is 128), got {fill!r}")
    if any(isinstance(v, (float, np.floating)) and 0 < v <= 1 for v in values):  # torchvision's white for floats
        raise ValueError(f"fill: {fill!r} reads as grey level 1 of 255, nearly black, not as 1.0 of a float image's "
                         "range; give whole numbers in [0, 255] also for float images (white is 255)")
    return tuple(int(round(v)) for v in values)


class BatchPolicyTransform(torch.nn.Module):
    """Apply a policy to a ``[B, C, H, W]`` batch with independent random choices per sample.

    uint8 batches come back as uint8 and agree bit for bit with the PIL path for pixel-wise ops;
    float batches must hold values in [0, 1] and come back in their dtype, computed in float32 and not
    rounded to grey levels, but for the histogram ops (Equalize) that bin them to the nearest level.
    """

    def __init__(self, policy: Policy | str | os.PathLike[str], fill: Fill = 0) -> None:
        super().__init__()
        policy = load_policy(policy)
        if len(policy) == 0:
            raise PolicyError("policy has no sub-policies")
        self.policy = policy
        self.fill = _check_fill(fill)
        if len(self.fill) not in (1, 3):  # its images have 1 or 3 channels: refused now, not at the first image
            raise ValueError(f"fill: {len(self.fill)} values; give one grey level or 3 (R, G, B), for images of 1 "
                             "or 3 channels")
        length = max(len(sub) for sub in policy)
        cpu = torch.device("cpu")  # named: the tables are host tables whatever torch.set_default_device says
        names = sorted(policy.ops())
        self._ops = [OPS[name] for name in names]
        op_index = {name: i for i, name in enumerate(names)}
        ops = torch.full((len(policy), length), -1, dtype=torch.int64, device=cpu)
        prob = torch.zeros((len(policy), length), dtype=torch.float64, device=cpu)
        level = torch.zeros((len(policy), length), dtype=torch.float64, device=cpu)
        for s, sub in enumerate(policy):
            for j, step in enumerate(sub):
                ops[s, j], prob[s, j], level[s, j] = op_index[step.op], step.prob, step.level
        bounds = torch.tensor([spec.bounds(policy.ranges) for spec in self._ops], dtype=torch.float64, device=cpu).view(-1, 2)
        low, high = bounds[:, 0], bounds[:, 1]
        signed = torch.tensor([spec.signed for spec in self._ops], dtype=torch.bool, device=cpu)
        safe = ops.clamp_min(0)
        # The policy as tables [S, L] (sub-policy, slot). They are plain CPU tensors rather than buffers and
        # go to the batch's device when a plan is drawn: they must stay float64 (module.half() would change
        # the arguments) and the module holds no device memory (it pickles anywhere).
        self._op_table = ops
        self._prob_table = prob
        self._arg_table = low[safe] + level * (high[safe] - low[safe])
        self._signed_table = signed[safe] & (ops >= 0)
        # A policy entry (sub-policy, slot, sign) maps to its distinct (op, signed argument): RandAugment at
        # n=4 has 307,328 entries and 28 distinct ones. Per distinct one: the tables of ops whose table depends
        # on the argument alone, computed once; and the matrices of geometric ops for the last image size seen.
        entry_ops = self._op_table.view(-1).repeat_interleave(2)
        entry_args = (self._arg_table.view(-1, 1) * torch.tensor([1.0, -1.0], dtype=torch.float64, device=cpu)).view(-1)
        distinct, self._entry_row = torch.unique(torch.stack([entry_ops.to(torch.float64), entry_args], 1), dim=0,
                                                 return_inverse=True)
        self._distinct_op, self._distinct_arg = distinct[:, 0].to(torch.int64), distinct[:, 1].contiguous()
        placeholder = TensorContext(exact=True, fill=torch.zeros(1, device=cpu))
        self._entry_tables = self._per_distinct(
            lambda spec, args: spec.table(torch.empty((len(args), 1, 0, 0), dtype=torch.uint8, device=cpu), args,
                                          placeholder).reshape(-1, 256) if spec.table_from_arg else None,
            256, torch.uint8)
        self._matrices: tuple[tuple[int, int], torch.Tensor] | None = None
        # Blur's radii in this policy (CPU): on accelerators Blur applies each where it matches.
        blur = [k for k, spec in enumerate(self._ops) if spec.name == "Blur"]
        self._blur_radii = torch.unique(self._arg_table[self._op_table == blur[0]]) if blur else None
        # The tables above on each device they were used on, uploaded once rather than on every call.
        self._device = torch.device("cpu")
        self._on_device: dict[torch.device, dict[str, Any]] = {}
        if any(has_compiled_kernel(spec) for spec in self._ops):
            warm_up()  # compiled here, so that forked DataLoader workers inherit the kernels

    def _per_distinct(self, compute: Any, width: int, dtype: torch.dtype) -> torch.Tensor:
        """``compute(spec, args)`` -> [m, width] (or None) for the distinct entries of each op, as one CPU
        tensor [D, width]; ``_entry_row[(s * L + j) * 2 + negative]`` is the row of sub-policy s, slot j, sign."""
        out = torch.zeros((len(self._distinct_op), width), dtype=dtype, device="cpu")
        for k, spec in enumerate(self._ops):
            rows = (self._distinct_op == k).nonzero().view(-1)
            values = compute(spec, self._distinct_arg[rows]) if len(rows) else None
            if values is not None:
                out[rows] = values.view(-1, width).to(dtype)
        return out

    def _entry_matrices(self, h: int, w: int) -> torch.Tensor:
        cached = self._matrices  # read once: another thread may replace it meanwhile
        if cached is None or cached[0] != (h, w):
            cached = ((h, w), self._per_distinct(lambda spec, args: spec.matrix(args, h, w) if spec.matrix else None,
                                                 6, torch.float64))
            self._matrices = cached
        return cached[1]

    def _tables(self, device: torch.device) -> dict[str, Any]:
        """The policy's tables on ``device``, uploaded on first use and kept (``.to(device)`` does it early)."""
        cached = self._on_device.get(device)
        if cached is None:
            names = ("op", "prob", "arg", "signed", "entry_row", "entry_tables")
            tensors = (self._op_table, self._prob_table, self._arg_table, self._signed_table, self._entry_row,
                       self._entry_tables)
            cached = {name: t.to(device) for name, t in zip(names, tensors)}
            cached["fill"] = {}
            self._on_device[device] = cached
        return cached

    def _sized(self, device: torch.device, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per distinct policy entry on ``device``: the matrices of geometric ops for an h x w image and, off the
        CPU or for images of at most ``SOURCE_PIXELS`` pixels, their source pixels (``warp_index``). Kept
        for the last image size seen on each device (one entry, read and replaced whole, so that threads
        sharing the transform never mix two sizes' values)."""
        tables = self._tables(device)
        sized = tables.get("sized")
        if sized is None or sized[0] != (h, w):
            matrices = self._entry_matrices(h, w)
            sources = None
            if not _host_kernels(device) or h * w <= SOURCE_PIXELS:
                sources = torch.zeros((len(matrices), h * w), dtype=torch.int32, device="cpu")
                kinds = torch.tensor([k for k, spec in enumerate(self._ops) if spec.matrix is not None],
                                     dtype=torch.int64, device="cpu")
                rows = torch.isin(self._distinct_op, kinds).nonzero().view(-1)
                if len(rows) and h * w:
                    sources[rows] = warp_index(matrices[rows], h, w)
                sources = sources.to(device)
            sized = ((h, w), matrices.to(device), sources)
            tables["sized"] = sized
        return sized[1], sized[2]

    def _fill(self, device: torch.device, channels: int) -> torch.Tensor:
        fills = self._tables(device)["fill"]
        if channels not in fills:
            fills[channels] = _fill_tensor(self.fill, channels, device)
        return fills[channels]

    @property
    def device(self) -> torch.device:
        """Where ``sample`` draws by default and where the tables were last moved (``.to(device)``)."""
        return self._device

    def to(self, *args: Any, **kwargs: Any) -> "BatchPolicyTransform":
        """``module.to(device)``: upload the policy's tables to ``device`` now and draw plans there by default.

        The tables stay float64 whatever dtype is asked for (a dtype changes nothing); a batch on another
        device still works, its tables are uploaded on first use.
        """
        device = _device_argument(args, kwargs)
        super().to(*args, **kwargs)
        if device is not None:
            if device.type == "cuda" and device.index is None:
                device = torch.device("cuda", torch.cuda.current_device())
            self._tables(device)  # first: a device that fails leaves the transform where it was
            self._device = device
        return self

    def cuda(self, device: int | torch.device | None = None) -> "BatchPolicyTransform":
        """``module.cuda()``: the same as ``.to("cuda")`` (or that device)."""
        if isinstance(device, torch.device):
            return self.to(device)
        return self.to(torch.device("cuda") if device is None else torch.device("cuda", device))

    def cpu(self) -> "BatchPolicyTransform":
        """``module.cpu()``: the same as ``.to("cpu")``."""
        return self.to("cpu")

    def __getstate__(self) -> dict[str, Any]:
        # The device copies are a cache: a pickled transform holds no device memory.
        state = dict(self.__dict__)
        state["_on_device"] = {}
        state["_device"] = torch.device("cpu")
        return state

    @classmethod
    def from_json(cls, path: str | os.PathLike[str], **kwargs: Any) -> "BatchPolicyTransform":
        return cls(load_policy_file(path), **kwargs)

    def sample(self, shape: Sequence[int], device: torch.device | str | None = None,
               generator: torch.Generator | None = None) -> Plan:
        """Draw every random choice for a batch of ``shape`` [B, C, H, W] on ``device`` (default: ``.device``).

        On an accelerator this reads one small tensor back to the host (the size of each group of samples);
        everything else stays on the device.
        """
        shape = tuple(shape)
        whole = all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in shape)
        if len(shape) != 4 or not whole or shape[1] not in (1, 3) or any(int(v) < 0 for v in shape):
            raise ValueError(f"shape: expected [B, C, H, W], whole numbers with 1 or 3 channels, got {shape}")
        b, c, h, w = (int(v) for v in shape)
        device = self._device if device is None else torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device.type == "meta":
            raise ValueError("sample: the meta device holds no random draws; give device= (or .to()) the device "
                             "of the batches to augment")
        _check_generator(generator, device)
        if b == 1 and device.type == "cpu":
            return self._sample_one(c, h, w, generator)
        return self._sample_batch(b, c, h, w, device, generator)

    def _sample_batch(self, b: int, c: int, h: int, w: int, device: torch.device,
                      generator: torch.Generator | None) -> Plan:
        """``sample`` for any batch: every sample's draws at once, grouped by (slot, op) on the device."""
        cached = self._tables(device)
        op_table, prob_table, arg_table, signed_table = (cached[k] for k in ("op", "prob", "arg", "signed"))
        sub = torch.randint(len(self.policy), (b,), device=device, generator=generator)
        gate = torch.rand((b, op_table.shape[1]), device=device, generator=generator, dtype=torch.float64)
        coin = torch.rand((b, op_table.shape[1]), device=device, generator=generator) < 0.5
        # drawn before the op-specific draws, whose number depends on the policy: two policies with the
        # same baseline share its crops and flips on the same generator state (common random numbers)
        crop, flip = draw_baseline(self.policy.baseline, b, device, generator)
        ops = op_table[sub]
        applied = (ops >= 0) & (gate < prob_table[sub])
        negative = signed_table[sub] & coin
        args = torch.where(negative, -arg_table[sub], arg_table[sub])
        ops = torch.where(applied, ops, -1)
        # Group the samples by (slot, op) with one stable sort and one count, rather than a unique and a
        # nonzero per slot and op (each a host sync). Codes run slot by slot and within a slot in op order,
        # the same order of draws as before; not applied gets the last code. Within a group the samples
        # stay in ascending order (stable sort of a sample-major layout).
        slots, kinds = op_table.shape[1], len(self._ops)
        slot_base = torch.arange(0, slots * kinds, kinds, device=device)
        code = torch.where(ops >= 0, ops + slot_base, slots * kinds).view(-1)
        order = torch.sort(code, stable=True).indices
        if device.type == "cpu":
            counts = torch.bincount(code, minlength=slots * kinds + 1)[:-1].tolist()
        else:  # the one read back to the host (bincount would add a second, for its largest value)
            ones = torch.ones((), dtype=torch.int64, device=device).expand(len(code))
            counts = torch.zeros(slots * kinds + 1, dtype=torch.int64, device=device).index_add_(0, code, ones)
            counts = counts[:-1].tolist()
        sizes = counts + [b * slots - sum(counts)]
        groups = (order // slots).split(sizes)
        flat_args = args.view(-1)[order].split(sizes)
        entry = (sub.view(-1, 1) * slots + torch.arange(slots, device=device)) * 2 + negative
        applied_entries = cached["entry_row"][entry.view(-1)[order][:sum(counts)]]
        # The per-entry values of all groups that have them, looked up at once and then split by group.
        specs = [self._ops[group % kinds] for group in range(len(counts))]
        geometric = self._lookup(applied_entries, counts, [spec.matrix is not None for spec in specs])
        tabled = self._lookup(applied_entries, counts, [spec.table_from_arg for spec in specs])
        matrices, sources = self._sized(device, h, w) if geometric is not None else (None, None)
        matrix_parts = source_parts = table_parts = None
        if geometric is not None:
            matrix_parts = matrices.index_select(0, geometric[0]).split(geometric[1])
            source_parts = sources.index_select(0, geometric[0]).split(geometric[1]) if sources is not None else None
        if tabled is not None:
            table_parts = cached["entry_tables"].index_select(0, tabled[0]).split(tabled[1])
        radii = {"radii": self._blur_radii} if not _host_kernels(device) and self._blur_radii is not None else {}
        steps = []
        for group, (spec, count) in enumerate(zip(specs, counts)):
            if count == 0 or spec.name == "Identity":  # Identity changes nothing: no step to run
                continue
            index = groups[group]
            draw = spec.sample(count, (c, h, w), generator, device) if spec.sample else {}
            if spec.name == "Blur":
                draw = {**draw, **radii}
            matrix = matrix_parts[group] if spec.matrix else None
            source = source_parts[group] if spec.matrix and source_parts is not None else None
            table = table_parts[group] if spec.table_from_arg else None
            steps.append(PlanStep(spec, index, flat_args[group], {**draw, "index": index}, group // kinds,
                                  matrix, table, source))
        return Plan(sub, tuple(steps), (b, c, h, w), self.policy.baseline, crop, flip, drawn=True)

    def draw_choices(self, generator: torch.Generator | None
                     ) -> tuple[int, list[float], list[bool], torch.Tensor | None, torch.Tensor | None]:
        """One image's choices on the CPU in the order every path draws them (the batch's for one sample):
        the sub-policy, each slot's gate and sign, the baseline's crop and flip; the applied ops' own draws
        follow slot by slot. So the per-image PIL path and a tensor take the same augmentation."""
        cpu = torch.device("cpu")
        slots = self._op_table.shape[1]
        sub = int(torch.randint(len(self.policy), (1,), generator=generator, device=cpu))
        gate = torch.rand(slots, generator=generator, dtype=torch.float64, device=cpu).tolist()
        coin = [v < 0.5 for v in torch.rand(slots, generator=generator, device=cpu).tolist()]  # 0.5: exact in float32
        crop, flip = draw_baseline(self.policy.baseline, 1, cpu, generator)
        return sub, gate, coin, crop, flip

    def _sample_one(self, c: int, h: int, w: int, generator: torch.Generator | None) -> Plan:
        """``sample`` for one image on the CPU: the same draws in the same order, so the same plan, with the
        policy's entries looked up in Python rather than by the batch's sorts and splits (which cost most of
        the time of one small image)."""
        cpu = torch.device("cpu")  # named, as the batch path does: torch.set_default_device must not move it
        cached = self._tables(cpu)
        slots = self._op_table.shape[1]
        s, gate, coin, crop, flip = self.draw_choices(generator)
        sub = torch.tensor([s], dtype=torch.int64, device=cpu)
        steps = []
        entries = zip(*(table[s].tolist() for table in (self._op_table, self._prob_table, self._arg_table,
                                                        self._signed_table)))
        for j, (k, prob, arg, signed) in enumerate(entries):
            if k < 0 or not gate[j] < prob or self._ops[k].name == "Identity":
                continue
            spec = self._ops[k]
            negative = signed and coin[j]
            row = int(cached["entry_row"][(s * slots + j) * 2 + negative])
            index = torch.zeros(1, dtype=torch.int64, device=cpu)
            draw = spec.sample(1, (c, h, w), generator, cpu) if spec.sample else {}
            matrix = source = table = None
            if spec.matrix is not None:  # copies, as the batch path's: a plan does not hold the caches
                matrices, sources = self._sized(cpu, h, w)
                matrix = matrices[row:row + 1].clone()
                source = sources[row:row + 1].clone() if sources is not None else None
            if spec.table_from_arg:
                table = cached["entry_tables"][row:row + 1].clone()
            signed_arg = torch.tensor([-arg if negative else arg], dtype=torch.float64, device=cpu)
            steps.append(PlanStep(spec, index, signed_arg, {**draw, "index": index}, j, matrix, table, source))
        return Plan(sub, tuple(steps), (1, c, h, w), self.policy.baseline, crop, flip, drawn=True)

    @staticmethod
    def _lookup(entries: torch.Tensor, counts: list[int], wanted: list[bool]) -> tuple[torch.Tensor, list[int]] | None:
        """The policy entries of the groups marked ``wanted`` (``entries`` holds every group's in turn, each
        group ``counts`` long) and per group how many of them it holds (0 for the others); None if none."""
        parts = [entries[start:start + count] for start, count, want
                 in zip(itertools.accumulate([0] + counts), counts, wanted) if want and count]
        if not parts:
            return None
        return (parts[0] if len(parts) == 1 else torch.cat(parts)), [count if want else 0
                                                                       for want, count in zip(wanted, counts)]

    def apply(self, batch: torch.Tensor, plan: Plan, pool: torch.Tensor | None = None) -> torch.Tensor:
        """Apply a drawn plan; deterministic. SamplePairing blends a sample with another of the batch, or
        with an image of ``pool`` (uint8 [P, C, H, W], the batch's channels and size) when one is given."""
        plain = check_image_batch(_plain_images(batch, "batch"))
        if not isinstance(plan, Plan):
            raise TypeError(f"plan: expected the Plan that sample() drew, got {type(plan).__name__}")
        return _like(self._replay(plain, plan, pool), batch)

    def _replay(self, batch: torch.Tensor, plan: Plan, pool: torch.Tensor | None) -> torch.Tensor:
        if pool is not None:
            _check_pool(pool, batch)
        if tuple(batch.shape) != plan.shape:
            raise ValueError(f"batch shape {tuple(batch.shape)} does not match the plan's {plan.shape}")
        if batch.numel() == 0:
            return batch.clone()  # never the input itself: the caller may change the output in place
        if not plan.steps:
            out = apply_baseline(batch, plan.baseline.pad_crop, plan.crop, plan.flip)
            return batch.clone() if out is batch else out
        if not plan.drawn:
            _check_slots(plan)
        exact = batch.dtype == torch.uint8
        # A uint8 batch stays uint8; only the samples of ops that need arithmetic are converted (run_step).
        if exact:
            x = new_batch(batch.shape, batch.dtype, batch.device).copy_(batch)
        else:
            x = new_batch(batch.shape, torch.float32, batch.device).copy_(batch).mul_(255.0)
            if batch.dtype.itemsize < 4:
                _read_half_levels(x, batch)
        source = None
        if any(step.op.name == "SamplePairing" for step in plan.steps):
            source = batch if exact else x.clone()
        ctx = TensorContext(exact=exact, fill=self._fill(x.device, x.shape[1]), source=source, pool=pool)
        compiled = compiles(x)
        for stage in stages(plan.steps, exact, x[0].numel(), split=_host_kernels(x.device), compiled=compiled):
            run_stage(x, stage, ctx, compiled)
        if x.device.type == "cpu":  # x is our own contiguous buffer: changed in place
            x = _baseline_in_place(x, plan.baseline.pad_crop, plan.crop, plan.flip)
        else:
            x = apply_baseline(x, plan.baseline.pad_crop, plan.crop, plan.flip)
        if exact:
            return x
        return (x / 255.0).clamp_(0.0, 1.0).to(batch.dtype)

    def forward(self, batch: torch.Tensor, generator: torch.Generator | None = None,
                pool: torch.Tensor | None = None) -> torch.Tensor:
        plain = check_image_batch(_plain_images(batch, "batch"))
        if plain.numel() == 0:  # no samples, or images without pixels
            return _like(plain.clone(), batch)
        return _like(self._replay(plain, self.sample(plain.shape, plain.device, generator), pool), batch)

    def extra_repr(self) -> str:
        return f"{len(self.policy)} sub-policies, fill={self.fill}, baseline: {self.policy.baseline.describe()}"


class Cutout(SeededTransform, torch.nn.Module):
    """Cutout: fill one ``size`` x ``size`` square at a uniformly random centre, clipped at the border.

    This is the package's one Cutout: the policy op ``Cutout`` (side = its argument times the shorter
    image side) and the trainer's ``TrainConfig.cutout`` (side in pixels) both run this geometry with the
    same fill, in pixel space before normalisation. The fill is a grey level or one per channel (default
    0, black). Works per image (PIL or [C, H, W]) and per sample on a [B, C, H, W] batch. A ``generator``
    makes the draws reproducible and is reseeded in each DataLoader worker, as ``PolicyTransform``'s is.
    """

    def __init__(self, size: int, fill: Fill = 0, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not isinstance(size, numbers.Real) or isinstance(size, bool) or not math.isfinite(size) \
                or int(size) != size or size < 0:
            raise ValueError(f"Cutout size must be a non-negative integer number of pixels, got {size!r}")
        self.size = int(size)
        self.fill = _check_fill(fill)
        self.generator = generator

    def forward(self, image: Any) -> Any:
        gen = self._draws.current()
        if isinstance(image, Image.Image):
            if image.mode in ("P", "PA"):  # the fill would be a palette index
                raise ValueError(f"image: PIL mode {image.mode!r} (a palette) is not supported; convert it to "
                                 "'RGB' or 'RGBA' first")
            check_fill_channels(self.fill, len(image.getbands()))
            centre = torch.rand(2, generator=gen, device="cpu").tolist()
            return cutout_pil(image, self.size, (centre[0], centre[1]), self.fill)
        if not isinstance(image, torch.Tensor):
            raise TypeError(f"Cutout expects a PIL image, a tensor [C, H, W] or a batch [B, C, H, W], got "
                            f"{type(image).__name__}")
        plain = _plain_images(image, "image")
        single = plain.ndim == 3
        batch = check_image(plain) if single else check_image_batch(plain)
        centre = torch.rand((batch.shape[0], 2), generator=gen, device=batch.device)
        out = self.apply(batch, centre)
        return _like(out.squeeze(0) if single else out, image)

    def apply(self, batch: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        """Cut the square out of every sample of ``batch`` at ``centre`` [B, 2] ((y, x) as fractions)."""
        n, c = batch.shape[:2]
        side = torch.full((n,), float(self.size), device=batch.device)
        fill = _fill_tensor(self.fill, c, batch.device)
        return cutout_tensor(batch, side, centre, fill / 255.0 if batch.is_floating_point() else fill)

    def extra_repr(self) -> str:
        return f"size={self.size}, fill={self.fill}"
