"""Models that start from a checkpoint: torchvision architectures by name or our own, with a local weights file.

A model is named as in :data:`policysearch.models.MODEL_NAMES` (``small_cnn``, ...) or as
``torchvision:NAME`` for a torchvision classification architecture (``torchvision:resnet18``). A
torchvision model is always constructed with ``weights=None``, so nothing is ever downloaded; its
starting point is the local file given as ``weights``, read with ``torch.load(..., weights_only=True)``.

What building a model from a checkpoint does (:class:`ModelSpec`, :func:`create_model`):

- **The classifier head is always new**: the last ``nn.Linear`` of the model gets the data set's class
  count and a fresh initialisation; the checkpoint's head, whatever its shape, is dropped. A checkpoint is
  a starting point for the backbone, as when an ImageNet network is fine-tuned on other classes.
- **Every other tensor must match**: a missing or unexpected key, or a shape that differs, is refused in
  one line naming the first few of them. A file holding ``{"model": state}`` or ``{"state_dict": state}``
  (our trainer's checkpoints, Lightning's) is read as that state, and a ``module.`` prefix on every key
  (DataParallel) is removed.
- **Grey images into a 3-channel model**: the first convolution's kernels are summed over their input
  channels, which computes exactly what repeating the grey channel three times would, at a third of the
  cost. Our own models are built with the checkpoint's channel count; torchvision models take 3.
- **Image size**: torchvision networks downsample 32-fold (ImageNet stems: a stride-2 7x7 conv and a
  max-pool), so images smaller than 32 x 32 are resized up to 32 unless an image size is given
  (:func:`fit_image_size`); our models run on any size from 8 up. ImageNet weights are used to
  224 x 224 inputs and often fine-tune better at that size (``--image-size 224``), at a much higher cost.
- **A frozen backbone** (``freeze_backbone``) leaves only the head's parameters trainable
  (``requires_grad``); :func:`policysearch.train.train_model` skips the frozen ones and keeps the frozen
  BatchNorm layers in eval mode, so their running statistics stay those of the checkpoint.

Ray is not imported here.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from policysearch.data import ImageData, resize_images
from policysearch.models import MODEL_NAMES, build_model

__all__ = ["TORCHVISION_PREFIX", "ModelSpec", "WeightsError", "check_model", "create_model", "fit_image_size",
           "head_name", "min_image_size", "model_problem", "read_state_dict"]

TORCHVISION_PREFIX = "torchvision:"
TORCHVISION_MIN_SIZE = 32  # the ImageNet networks' total stride
OUR_MIN_SIZE = 8
SHOWN = 3  # names shown per list in a mismatch line


class WeightsError(ValueError):
    """A weights file that cannot start the model: missing, unreadable, not a state dict, or not matching."""


def is_torchvision(name: str) -> bool:
    return name.startswith(TORCHVISION_PREFIX)


def _torchvision_names() -> list[str]:
    import torchvision.models

    return torchvision.models.list_models(module=torchvision.models)  # classification models only


def model_problem(name: str) -> str | None:
    """What is wrong with a model name (None when it names a model), for a one-line settings error."""
    if is_torchvision(name):
        arch = name[len(TORCHVISION_PREFIX):]
        known = _torchvision_names()
        if arch not in known:
            return (f"names no torchvision classification model: {arch!r}; for example "
                    f"{', '.join(TORCHVISION_PREFIX + n for n in ('resnet18', 'mobilenet_v3_small', 'efficientnet_b0'))}"
                    f" ({len(known)} in torchvision.models.list_models)")
        return None
    if name not in MODEL_NAMES:
        return f"must be one of {', '.join(MODEL_NAMES)} or torchvision:NAME, got {name!r}"
    return None


def min_image_size(name: str) -> int:
    """The smallest image side the model is built for: 32 for torchvision networks, 8 for ours."""
    return TORCHVISION_MIN_SIZE if is_torchvision(name) else OUR_MIN_SIZE


def fit_image_size(data: ImageData, model: str, image_size: int | None) -> ImageData:
    """``data`` resized up to :func:`min_image_size` when no ``image_size`` was asked for and it is smaller
    (with a note saying so); otherwise ``data`` as it is (an asked-for size was applied when loading)."""
    side = int(data.images.shape[-1])
    least = min_image_size(model)
    if image_size is not None or side >= least:
        return data
    note = (f"{data.name}: {len(data)} images resized to {least}x{least} from {side}x{side} ({model} expects at "
            f"least {least}; --image-size sets another size)")
    return ImageData(resize_images(data.images, least), data.labels, data.classes, data.name, (*data.notes, note))


def _few(names: Sequence[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown if len(names) <= SHOWN else f"{shown} and {len(names) - SHOWN} more"


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The state dict in the weights file at ``path``, read with ``weights_only=True`` (no code runs)."""
    path = Path(path)
    where = f"--weights {path}"
    if not path.exists():
        raise WeightsError(f"{where}: no such file")
    if path.is_dir():
        raise WeightsError(f"{where} is a folder; give the weights file (a saved state dict)")
    try:
        content: Any = torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise WeightsError(f"{where} cannot be read with torch.load(weights_only=True): {reason}") from None
    if isinstance(content, Mapping):
        for key in ("state_dict", "model"):  # Lightning's and our trainer's checkpoints
            if isinstance(content.get(key), Mapping):
                content = content[key]
                break
    if not isinstance(content, Mapping) or not content or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in content.items()):
        what = "an empty mapping" if isinstance(content, Mapping) and not content else (
            "a mapping with values that are not tensors" if isinstance(content, Mapping) else type(content).__name__)
        raise WeightsError(f"{where} holds {what}, not a state dict (names to tensors); save one with "
                           "torch.save(model.state_dict(), PATH)")
    state = dict(content)
    if all(k.startswith("module.") for k in state):  # saved from DataParallel / DistributedDataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def head_name(model: nn.Module) -> str:
    """The name of the classifier head: the model's last ``nn.Linear``."""
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise WeightsError(f"{type(model).__name__} has no nn.Linear classifier head to replace")
    return linears[-1]


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    raise WeightsError(f"{type(model).__name__} has no Conv2d stem to adapt to the image channels")


def _load_backbone(model: nn.Module, state: Mapping[str, Tensor], head: str, label: str) -> None:
    """Load every tensor but the head's from ``state``; any other difference is one clear error."""
    own = {k: v for k, v in model.state_dict().items() if not _under(k, head)}
    given = {k: v for k, v in state.items() if not _under(k, head)}
    # old checkpoints lack BatchNorm's counter; torch fills it in
    missing = [k for k in own if k not in given and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in given if k not in own]
    shapes = [f"{k} {list(given[k].shape)} vs {list(v.shape)}" for k, v in own.items()
              if k in given and given[k].shape != v.shape]
    problems = [f"{what}: {_few(names)}" for what, names in
                (("missing keys", missing), ("unexpected keys", unexpected),
                 ("shapes differ (checkpoint vs model)", shapes)) if names]
    if problems:
        raise WeightsError(f"{label} does not fit the model: {'; '.join(problems)}")
    model.load_state_dict(given, strict=False)


def _replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


@dataclass(frozen=True)
class ModelSpec:
    """Everything that makes a model: architecture, classes, image channels and the optional checkpoint.

    Hashable, so a worker can cache the models it built from one spec."""

    name: str
    num_classes: int
    in_channels: int
    weights: str | None = None
    freeze_backbone: bool = False

    def build(self) -> nn.Module:
        """The model (see the module docstring); seed torch first for reproducible fresh layers."""
        return create_model(self.name, self.num_classes, self.in_channels, weights=self.weights,
                            freeze_backbone=self.freeze_backbone)


def create_model(name: str, num_classes: int, in_channels: int = 3, *, weights: str | Path | None = None,
                 freeze_backbone: bool = False) -> nn.Module:
    """A classifier for ``num_classes`` classes on ``in_channels``-channel images, started from ``weights``.

    Without weights it is a fresh model (``torchvision:NAME`` with ``weights=None``). ``freeze_backbone``
    needs weights: a frozen random backbone would learn nothing.
    """
    problem = model_problem(name)
    if problem:
        raise ValueError(f"--model {problem}")
    if freeze_backbone and weights is None:
        raise ValueError("--freeze-backbone needs --weights: a frozen backbone must come from a checkpoint")
    state = read_state_dict(weights) if weights is not None else None
    if is_torchvision(name):
        import torchvision.models

        model = torchvision.models.get_model(name[len(TORCHVISION_PREFIX):], weights=None)
        channels = 3
    else:
        channels = in_channels
        if state is not None:  # built with the checkpoint's channels; the probe leaves the RNG as it was
            with torch.random.fork_rng(devices=[]):
                stem, _ = _first_conv(build_model(name, num_classes, in_channels))
            kernel = state.get(f"{stem}.weight")
            if kernel is not None and kernel.dim() == 4 and int(kernel.shape[1]) in (1, 3):
                channels = int(kernel.shape[1])
        model = build_model(name, num_classes, channels)
    head = head_name(model)
    if state is not None:
        _load_backbone(model, state, head, f"--weights {weights}")
    old = model.get_submodule(head)
    assert isinstance(old, nn.Linear)
    if old.out_features != num_classes:
        _replace_module(model, head, nn.Linear(old.in_features, num_classes))
    elif state is not None:
        old.reset_parameters()  # the head is always new, also where the class count happens to match
    if in_channels != channels:
        if not (in_channels == 1 and channels == 3):
            raise WeightsError(f"--weights {weights}: the model's first layer takes {channels}-channel images, "
                               f"the data has {in_channels} channels")
        _grey_input(model)
    if freeze_backbone:
        for key, param in model.named_parameters():
            param.requires_grad_(_under(key, head))
    return model


def _grey_input(model: nn.Module) -> None:
    """Make a 3-channel model take 1-channel images: summed stem kernels equal a repeated grey channel."""
    name, conv = _first_conv(model)
    if conv.in_channels != 3 or conv.groups != 1:
        raise WeightsError(f"cannot adapt {type(model).__name__}'s first convolution {name} to grey images")
    summed = nn.Conv2d(1, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                       dilation=conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode)
    with torch.no_grad():
        summed.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        if conv.bias is not None:
            summed.bias.copy_(conv.bias)
    _replace_module(model, name, summed)


def check_model(spec: ModelSpec, image_size: int) -> None:
    """Build ``spec`` and run it on two ``image_size`` images: every problem is one line, before any work."""
    model = spec.build()
    x = torch.zeros(2, spec.in_channels, image_size, image_size)
    try:
        with torch.no_grad():
            out = model(x)
    except RuntimeError as exc:
        reason = (str(exc).strip().splitlines() or ["error"])[0][:160]
        raise ValueError(f"--model {spec.name} cannot run on {image_size}x{image_size} images ({reason}); "
                         "choose another --image-size") from None
    if not isinstance(out, Tensor) or tuple(out.shape) != (2, spec.num_classes):
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"--model {spec.name} returns {got}, not logits [batch, {spec.num_classes}]; only "
                         "models whose training forward returns logits can be trained here")
