"""One trainer for child models and final models, with exact resume from per-epoch checkpoints.

Per batch: policy `augment` (uint8 -> uint8) -> baseline pad-crop/flip -> Cutout (uint8) -> normalise ->
forward/backward. Data sits on the device once as uint8. Models and batches use the channels_last layout
(the same values, faster on the CPU; docs/findings.md). Ray is not imported here; a caller reports progress
through `on_epoch`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policysearch.atomic import save_torch_atomic
from policysearch.training.data import DataError, ImageData, normalize
from policysearch.augment.policy import Baseline
from policysearch.augment.transforms import BaselineAugment, Cutout

__all__ = ["MIN_STEPS", "MIN_STEPS_PER_EPOCH", "TrainConfig", "budget_text", "cutout", "evaluate", "fit_to_data", "predict", "train_mode", "train_model"]

CHECKPOINT_VERSION = 1
Augment = Callable[[Tensor, torch.Generator], Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters. `amp` only takes effect on CUDA; `cutout` is a side in pixels (0: off)."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    cutout: int = 0
    amp: bool = True
    seed: int = 0
    warmup_epochs: int = 0

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("invalid TrainConfig: " + "; ".join(f"{name} {text}" for name, text in problems))

    def problems(self) -> list[tuple[str, str]]:
        """(field, what is wrong) for every invalid value, e.g. ("lr", "must be > 0, got 0.0")."""
        checks = [
            ("epochs", self.epochs >= 1, f"must be >= 1, got {self.epochs}"),
            ("batch_size", self.batch_size >= 2, f"must be >= 2 (BatchNorm needs 2 images), got {self.batch_size}"),
            ("lr", math.isfinite(self.lr) and self.lr > 0, f"must be a finite number > 0, got {self.lr}"),
            ("momentum", 0 <= self.momentum < 1, f"must lie in [0, 1), got {self.momentum}"),
            ("nesterov", not (self.nesterov and self.momentum == 0), "needs momentum > 0"),
            ("weight_decay", math.isfinite(self.weight_decay) and self.weight_decay >= 0,
             f"must be a finite number >= 0, got {self.weight_decay}"),
            ("cutout", self.cutout >= 0, f"must be >= 0 pixels, got {self.cutout}"),
            ("warmup_epochs", 0 <= self.warmup_epochs < max(1, self.epochs),
             f"must lie in [0, epochs={self.epochs}), got {self.warmup_epochs}"),
        ]
        return [(name, text) for name, ok, text in checks if not ok]


MIN_STEPS = 200  # optimizer steps a training gets at least, however few the images
MIN_STEPS_PER_EPOCH = 4


def fit_to_data(config: TrainConfig, num_images: int, min_steps: int = MIN_STEPS) -> TrainConfig:
    """``config`` adapted to a training set of ``num_images``: enough optimizer steps on tiny data.

    The batch is bounded so an epoch has at least 4 steps, and epochs are added until the training makes
    at least ``min_steps`` steps (48 images at batch 128 for 20 epochs would be 20 steps). Larger sets
    keep the configuration as it is.
    """
    from dataclasses import replace

    batch = max(2, min(config.batch_size, num_images // MIN_STEPS_PER_EPOCH))
    steps_per_epoch = max(1, len(_batches(num_images, batch, torch.arange(num_images))))
    epochs = max(config.epochs, math.ceil(min_steps / steps_per_epoch))
    if (batch, epochs) == (config.batch_size, config.epochs):
        return config
    warmup = min(config.warmup_epochs, epochs - 1)
    return replace(config, batch_size=batch, epochs=epochs, warmup_epochs=warmup)


def budget_text(asked: TrainConfig, num_images: int | None, min_steps: int = MIN_STEPS, say_asked: bool = True) -> str:
    """'E epochs at batch B' as a training of ``asked`` runs on ``num_images`` images: on tiny data
    :func:`fit_to_data` raises the epochs and lowers the batch, and then (``say_asked``) the text says what was
    asked too."""
    trained = fit_to_data(asked, num_images, min_steps) if num_images else asked
    text = f"{trained.epochs} epochs at batch {trained.batch_size}"
    if (trained.epochs, trained.batch_size) == (asked.epochs, asked.batch_size) or not say_asked:
        return text
    return (f"{text} (asked: {asked.epochs} at batch {asked.batch_size}; tiny data gets at least {min_steps} steps, "
            f"{MIN_STEPS_PER_EPOCH} per epoch)")


def cutout(batch: Tensor, size: int, generator: torch.Generator | None = None) -> Tensor:
    """The trainer's Cutout: :class:`policysearch.augment.transforms.Cutout` with a ``size``-pixel side and fill 0.

    Applied in pixel space after the baseline augmentation and before normalisation, so it is the same
    augmentation as a policy's ``Cutout`` op of that side. Returns a new tensor (the batch itself for 0).
    """
    if size <= 0 or len(batch) == 0:
        return batch
    return Cutout(size, generator=generator)(batch)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to 0 at `total` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _batches(n: int, batch_size: int, perm: Tensor) -> list[Tensor]:
    """Shuffled index batches. The last partial batch is kept, except a lone 1-image batch (BatchNorm
    cannot train on one image), which is dropped - so every epoch sees n or n - 1 images."""
    chunks = list(perm.split(batch_size))
    if chunks and len(chunks[-1]) == 1 and n > 1:
        chunks.pop()
    return chunks


_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def train_mode(model: nn.Module) -> None:
    """``model.train()``, except that BatchNorm layers whose parameters are all frozen stay in eval mode, and
    so do those without parameters (``affine=False``) under a frozen backbone: a model whose only trainable
    layers are its ``nn.Linear`` head.

    A frozen backbone is a fixed function: its normalisation keeps the checkpoint's running statistics
    instead of drifting to the statistics of a few small augmented batches.
    """
    model.train()
    trained = [m for m in model.modules() if any(p.requires_grad for p in m.parameters(recurse=False))]
    frozen = any(not p.requires_grad for p in model.parameters()) and all(isinstance(m, nn.Linear) for m in trained)
    for module in model.modules():
        if isinstance(module, _BATCH_NORMS):
            params = list(module.parameters(recurse=False))
            if not any(p.requires_grad for p in params) and (params or frozen):
                module.eval()


def train_model(
    model: nn.Module,
    data: ImageData,
    config: TrainConfig,
    *,
    augment: Augment | None = None,
    baseline: Baseline | None = None,
    mean: Sequence[float],
    std: Sequence[float],
    device: str | torch.device = "cpu",
    checkpoint_path: str | Path | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train `model` in place on `data`; return the last epoch's metrics.

    SGD (Nesterov) with per-step cosine LR (optional linear warm-up), weight decay, and mixed precision
    on CUDA when `config.amp`. Only parameters with ``requires_grad`` train (a frozen backbone: see
    :func:`train_mode`). With `checkpoint_path`, the full state is saved atomically after every
    epoch, and an existing checkpoint is resumed from the next epoch; a resumed run on CPU ends with the
    same weights as an uninterrupted one. `on_epoch(epoch, metrics)` gets epoch (1-based), train_loss,
    train_accuracy, lr and seconds after each epoch.
    """
    if len(data) < 2:
        raise DataError(f"{data.name} has {len(data)} images; training needs at least 2")
    dev = torch.device(device)
    model.to(dev, memory_format=torch.channels_last)
    images = data.images.to(dev)  # once, as uint8
    labels = data.labels.to(dev)
    n = len(labels)
    steps_per_epoch = len(_batches(n, config.batch_size, torch.arange(n)))
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = steps_per_epoch * config.warmup_epochs

    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(f"{type(model).__name__} has no trainable parameters (all have requires_grad False)")
    optimizer = torch.optim.SGD(
        trainable,
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _lr_factor(step, total_steps, warmup_steps)
    )
    use_amp = config.amp and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    shuffle_gen = torch.Generator().manual_seed(config.seed)
    aug_gen = torch.Generator(device=dev).manual_seed(config.seed + 1)
    baseline = baseline or Baseline()  # none: `augment` carries the whole recipe (a policy with its baseline)
    base_aug = BaselineAugment(baseline)

    start_epoch = 0
    last: dict = {}
    identity = {"config": asdict(config), "num_images": n, "baseline": asdict(baseline)}
    if checkpoint_path is not None and Path(checkpoint_path).exists():
        state = torch.load(checkpoint_path, weights_only=True, map_location=dev)
        if state.get("version") != CHECKPOINT_VERSION or state.get("identity") != identity:
            raise ValueError(
                f"checkpoint {str(checkpoint_path)!r} was written by a different run (config, data size or "
                f"baseline differ); delete it or choose another checkpoint path"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        shuffle_gen.set_state(state["shuffle_rng"].cpu())
        aug_gen.set_state(state["augment_rng"].cpu())
        # the global RNGs matter only to code that ignores the generators (e.g. a model with dropout)
        torch.set_rng_state(state["torch_rng"].cpu())
        if dev.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), dev)
        start_epoch = int(state["epoch"])
        last = dict(state["metrics"])

    for epoch in range(start_epoch, config.epochs):
        train_mode(model)
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev, dtype=torch.long)
        seen = 0
        lr = optimizer.param_groups[0]["lr"]
        perm = torch.randperm(n, generator=shuffle_gen)
        for idx in _batches(n, config.batch_size, perm):
            idx = idx.to(dev)
            x = images[idx]
            y = labels[idx]
            if augment is not None:
                x = augment(x, aug_gen)
                if x.dtype != torch.uint8 or x.shape[0] != len(idx):
                    raise TypeError(
                        f"augment must return a uint8 batch of {len(idx)} images, got {x.dtype} {tuple(x.shape)}"
                    )
            x = base_aug(x, aug_gen)
            x = cutout(x, config.cutout, aug_gen)
            x = normalize(x, mean, std).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=use_amp):
                logits = model(x)
                loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            loss_sum += loss.detach().float() * len(idx)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(idx)
        if not math.isfinite(float(loss_sum)):
            raise FloatingPointError(f"training loss became {float(loss_sum)} in epoch {epoch + 1}; lower lr")
        last = {
            "epoch": epoch + 1,
            "train_loss": float(loss_sum) / seen,
            "train_accuracy": float(correct) / seen,
            "lr": float(lr),
            "seconds": time.perf_counter() - t0,
        }
        if checkpoint_path is not None:
            save_torch_atomic(
                Path(checkpoint_path),
                {
                    "version": CHECKPOINT_VERSION,
                    "identity": identity,
                    "epoch": epoch + 1,
                    "metrics": last,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "shuffle_rng": shuffle_gen.get_state(),
                    "augment_rng": aug_gen.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    **({"cuda_rng": torch.cuda.get_rng_state(dev)} if dev.type == "cuda" else {}),
                },
            )
        if on_epoch is not None:
            on_epoch(epoch + 1, dict(last))
    return last


def predict(
    model: nn.Module,
    images: Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 512,
    device: str | torch.device = "cpu",
) -> Tensor:
    """Logits [N, classes] (float32, on the CPU) of uint8 `images`, in eval mode without gradients."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
    dev = torch.device(device)
    was_training = model.training
    model.to(dev, memory_format=torch.channels_last).eval()
    out = []
    try:
        with torch.inference_mode():
            for chunk in images.split(batch_size):
                x = normalize(chunk.to(dev), mean, std).contiguous(memory_format=torch.channels_last)
                out.append(model(x).float().cpu())
    finally:
        model.train(was_training)
    if not out:
        return torch.zeros((0, 0))
    return torch.cat(out)


def evaluate(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 512,
    device: str | torch.device = "cpu",
) -> dict:
    """{'accuracy': fraction correct, 'loss': mean cross-entropy} of `model` on uint8 images."""
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"need a non-empty set with one label per image, got {len(images)} and {len(labels)}")
    logits = predict(model, images, mean=mean, std=std, batch_size=batch_size, device=device)
    y = labels.cpu().long()
    return {
        "accuracy": int((logits.argmax(1) == y).sum()) / len(y),  # exact: k / n in double, no float32 noise
        "loss": float(F.cross_entropy(logits, y)),
    }
