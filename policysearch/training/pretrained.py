"""The child models: ours, torchvision's and timm's architectures by name, or a Python callable, with an
optional local weights file (:class:`ModelSpec` carries one to Ray's workers).

Nothing is ever downloaded: torchvision models are built with ``weights=None`` and timm's with
``pretrained=False``; a starting point is a local file read with ``weights_only=True``. From a checkpoint
(:func:`create_model`) the classifier head is always new (the data's class count), every other tensor must
match (refused in one line otherwise), grey images into a 3-channel model sum the first convolution's
kernels over their input channels (what repeating the channel computes, at a third of the cost), and a
frozen backbone leaves only the head trainable. ImageNet-style networks downsample 32-fold, so smaller
images are resized up to 32 (:func:`fit_image_size`). Ray is not imported here.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from policysearch.augment.policy import installed_version
from policysearch.training.data import ImageData, resize_images
from policysearch.training.models import MODEL_NAMES, build_model
from policysearch.wording import Mention, WordedError, a_kind, few, first_line, flag_mention

__all__ = ["ARCHITECTURE_FORMULA", "CALLABLE_PREFIX", "STATE_DIGEST_FORMULA", "architecture", "library_versions",
           "same_formula",
           "state_digest", "TIMM_PREFIX", "TORCHVISION_PREFIX", "Builder", "ModelError", "ModelSpec", "WeightsError",
           "callable_name", "check_model", "create_model", "fit_image_size", "grey_input_note", "head_names", "min_image_size",
           "model_problem", "read_state_dict"]

TORCHVISION_PREFIX = "torchvision:"
TIMM_PREFIX = "timm:"
CALLABLE_PREFIX = "callable:"  # the settings' name of a model given as a Python callable
TORCHVISION_MIN_SIZE = 32  # the ImageNet networks' total stride (timm's too)
OUR_MIN_SIZE = 8
SHOWN = 3  # names shown per list in a mismatch line
# Where a checkpoint keeps its state dict: Lightning's, PyTorch's saving tutorial's, ours and others'.
CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model")
# A wrapped model's checkpoint keys start with these: a LightningModule's attribute that holds the network,
# DataParallel's ``module.``; nested in either order.
WRAPPER_PREFIXES = ("model.", "module.")
# A model given as a callable: (num_classes, in_channels) -> a fresh nn.Module.
Builder = Callable[[int, int], nn.Module]


class WeightsError(WordedError):
    """A weights file that cannot start the model: missing, unreadable, not a state dict, or not matching."""


class ModelError(WordedError):
    """A model that cannot be searched with: an unknown name, a callable that raises, returns no model or
    cannot reach Ray's workers, or a model that does not fit the data (channels, classes, size)."""


def is_torchvision(name: str) -> bool:
    return name.startswith(TORCHVISION_PREFIX)


def is_timm(name: str) -> bool:
    return name.startswith(TIMM_PREFIX)


def is_callable_model(name: str) -> bool:
    return name.startswith(CALLABLE_PREFIX)


def callable_name(builder: Any) -> str:
    """The settings' name of a model callable: ``callable:MODULE.QUALNAME`` (what config.json records)."""
    target = getattr(builder, "func", builder)  # functools.partial
    qualname = getattr(target, "__qualname__", None) or type(target).__qualname__
    module = getattr(target, "__module__", None) or type(target).__module__
    return f"{CALLABLE_PREFIX}{module}.{qualname}"


def model_ref(name: str, say: Mention = flag_mention) -> str:
    """How an error names the model: ``--model NAME`` (``model='NAME'`` in Python), or ``model=QUALNAME``
    for a callable."""
    return f"model={name[len(CALLABLE_PREFIX):]}" if is_callable_model(name) else say("model", name)


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise ModelError(lambda say: f"{say('model', 'timm:NAME')} needs timm, an optional extra: "
                         "pip install 'policysearch[timm]'") from None
    return timm


def _torchvision_names() -> list[str]:
    import torchvision.models

    return torchvision.models.list_models(module=torchvision.models)  # classification models only


def _closest(name: str, known: Sequence[str]) -> str | None:
    """The known name ``name`` most likely meant: the one that differs only in case, '-' and '_', else the
    closest spelling; None when none is close."""
    def plain(text: str) -> str:
        return text.lower().replace("-", "").replace("_", "")

    same = [k for k in known if plain(k) == plain(name)]
    close = same or difflib.get_close_matches(name, known, n=1)
    return close[0] if close else None


def _unknown(kind: str, arch: str, prefix: str, known: Sequence[str], examples: Sequence[str], listing: str) -> str:
    """The problem text for a torchvision or timm name that is not a model: the likely one meant, else examples."""
    close = _closest(arch, known)
    hint = f"did you mean {prefix}{close}?" if close else f"for example {', '.join(prefix + n for n in examples)}"
    return f"names no {kind}: {arch!r}; {hint} ({len(known)} in {listing})"


def model_problem(name: str) -> str | None:
    """What is wrong with a model name (None when it names a model), for a one-line settings error."""
    if is_torchvision(name):
        arch = name[len(TORCHVISION_PREFIX):]
        known = _torchvision_names()
        if arch not in known:
            return _unknown("torchvision classification model", arch, TORCHVISION_PREFIX, known,
                            ("resnet18", "mobilenet_v3_small", "efficientnet_b0"), "torchvision.models.list_models")
        return None
    if is_timm(name):
        arch = name[len(TIMM_PREFIX):]
        try:
            timm = _timm()
        except ValueError as exc:
            return str(exc).removeprefix("--model ")
        if not timm.is_model(arch):
            return _unknown("timm model", arch, TIMM_PREFIX, timm.list_models(),
                            ("resnet18", "efficientnet_b0", "convnext_atto"), "timm.list_models()")
        return None
    if is_callable_model(name):
        return None  # the callable itself comes with policysearch.search(model=...); prepare() checks it is there
    if name not in MODEL_NAMES:
        close = _closest(name, MODEL_NAMES)
        hint = f" (did you mean {close}?)" if close else ""
        return f"must be one of {', '.join(MODEL_NAMES)}, torchvision:NAME or timm:NAME, got {name!r}{hint}"
    return None


def min_image_size(name: str) -> int:
    """The smallest image side the model is built for: 32 for torchvision and timm networks, 8 for ours, and 1
    for a callable (its images keep their size; the check on one batch says when it cannot take them)."""
    if is_callable_model(name):
        return 1
    return TORCHVISION_MIN_SIZE if is_torchvision(name) or is_timm(name) else OUR_MIN_SIZE


def fit_image_size(data: ImageData, model: str, image_size: int | None) -> ImageData:
    """``data`` resized up to :func:`min_image_size` when no ``image_size`` was asked for and it is smaller
    (with a note saying so); otherwise ``data`` as it is (an asked-for size was applied when loading), with a
    note where that size is below the model's least (the search and the benchmark refuse it for our models)."""
    side = int(data.images.shape[-1])
    least = min_image_size(model)
    if side >= least:
        return data
    if image_size is not None:
        note = (f"{data.name}: images kept at {side}x{side} as --image-size (image_size= in Python) asks, below the "
                f"{least}x{least} {model} is built for; it runs on them, at a size it was not designed for (leave "
                f"the size out to have the images resized up to {least})")
        return ImageData(data.images, data.labels, data.classes, data.name, (*data.notes, note))
    note = (f"{data.name}: {len(data)} images resized to {least}x{least} from {side}x{side} ({model} expects at "
            f"least {least}; --image-size, or image_size= in Python, sets another size)")
    return ImageData(resize_images(data.images, least), data.labels, data.classes, data.name, (*data.notes, note))


def _load_reason(exc: Exception) -> str:
    """What torch.load's error says about the file, in one line: its weights-only unpickler's own finding
    rather than the advice around it (which suggests weights_only=False, the unsafe load)."""
    text = str(exc).strip()
    blocked = re.search(r"unsupported GLOBAL (\S+) whose module \S+ is blocked", text)
    if blocked:  # a function torch never allows (os.system and the like): the file would run code
        return (f"it holds Python objects, not only tensors (it needs {blocked[1]}, which torch blocks); save "
                "model.state_dict() instead")
    detail = text.split("WeightsUnpickler error:", 1)[1].strip() if "WeightsUnpickler error:" in text else ""
    if detail:
        finding = detail.splitlines()[0].strip()
        if finding.startswith("Unsupported global"):
            needed = finding.split("GLOBAL ", 1)[-1].split(" ", 1)[0]
            return f"it holds Python objects, not only tensors (it needs {needed}); save model.state_dict() instead"
        return f"not a file of tensors saved by torch.save ({finding[:120]})"
    if not text:
        return type(exc).__name__
    if "failed finding central directory" in text:  # a torch.save zip archive without its end: cut short
        return "the file is cut short or damaged (torch.save's archive has no end); copy or save it again"
    line = first_line(exc)
    line = line if len(line) <= 120 else line[:117] + "..."  # torch's zip reader adds paragraphs of advice
    return line if isinstance(exc, (OSError, RuntimeError)) else f"not a file saved by torch.save ({type(exc).__name__}: {line})"


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The state dict in the weights file at ``path``, read with ``weights_only=True`` (no code runs)."""
    path = Path(path)
    where = _weights(path)
    if not path.exists():
        raise WeightsError(lambda say: f"{where(say)}: no such file")
    if path.is_dir():
        raise WeightsError(lambda say: f"{where(say)} is a folder; give the weights file (a saved state dict)")
    if not path.is_file():  # a pipe's open() would wait for a writer; a device has no size
        raise WeightsError(lambda say: f"{where(say)} is not a regular file (a pipe or a device); give the weights "
                           "file (a saved state dict)")
    if path.stat().st_size == 0:
        raise WeightsError(lambda say: f"{where(say)} is empty (0 bytes); save the weights again with "
                           "torch.save(model.state_dict(), PATH)")
    try:
        with warnings.catch_warnings():  # torch's advice to file an issue for a pickle of another protocol
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            content: Any = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # a file torch cannot read raises many kinds (KeyError, UnpicklingError, ...)
        reason = _load_reason(exc)
        raise WeightsError(lambda say: f"{where(say)} cannot be read with torch.load(weights_only=True): {reason}") \
            from None
    if isinstance(content, Mapping):
        for key in CHECKPOINT_KEYS:
            if isinstance(content.get(key), Mapping):
                content = content[key]
                break
    if not isinstance(content, Mapping) or not content or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in content.items()):
        what = "an empty mapping" if isinstance(content, Mapping) and not content else (
            f"a mapping with values that are not tensors (keys: {few([str(k) for k in content], SHOWN)})"
            if isinstance(content, Mapping) else type(content).__name__)
        raise WeightsError(lambda say: f"{where(say)} holds {what}, not a state dict (names to tensors); save one "
                           "with torch.save(model.state_dict(), PATH)")
    state = dict(content)
    if all(k.startswith("module.") for k in state):  # saved from DataParallel / DistributedDataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def head_names(model: nn.Module, num_classes: int | None = None) -> tuple[str, ...]:
    """The names of the classifier heads: the modules timm's ``get_classifier()`` returns (distilled models
    have two), else the model's last ``nn.Linear``. Where that one has not ``num_classes`` outputs and a
    ``Conv2d`` of ``num_classes`` outputs comes after it, the model classifies with the convolution, which would
    be loaded and frozen while the Linear starts anew: refused."""
    classifier = getattr(model, "get_classifier", None)
    if callable(classifier):
        given = classifier()
        heads = given if isinstance(given, (tuple, list)) else (given,)
        found = tuple(name for head in heads for name, m in model.named_modules()
                      if m is head and isinstance(m, nn.Module) and any(True for _ in m.parameters()))
        if found and len(found) == len(heads):
            return found
    modules = list(model.named_modules())
    linears = [k for k, (_, m) in enumerate(modules) if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError(f"{type(model).__name__} has no nn.Linear classifier head (it classifies with another "
                         "layer, such as SqueezeNet's Conv2d), which is what is replaced to fit the data's classes "
                         "and started anew on pretrained weights: choose a model that ends in an nn.Linear")
    last, linear = modules[linears[-1]]
    after = [name for name, m in modules[linears[-1] + 1:] if isinstance(m, nn.Conv2d) and m.out_channels == num_classes]
    if num_classes is not None and after and linear.out_features != num_classes:  # that Linear classifies nothing
        raise WeightsError(f"{type(model).__name__} seems to classify with the Conv2d {after[-1]} ({num_classes} "
                           f"outputs, after its last nn.Linear {last}): the head that starts anew and trains when "
                           "the backbone is frozen is an nn.Linear; end the model with an nn.Linear classifier")
    return (last,)


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


def _in_heads(key: str, heads: tuple[str, ...]) -> bool:
    return any(_under(key, head) for head in heads)


def _unwrapped(state: Mapping[str, Tensor], own: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    """``state`` without the ``WRAPPER_PREFIXES`` every one of its keys starts with (a Lightning module's
    ``model.``, DataParallel's ``module.``, one inside the other), where the model's own keys do not start so."""
    while state:  # an empty mapping starts with every prefix
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in state)
                       and not all(k.startswith(p) for k in own)), None)
        if prefix is None:
            return state
        state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    raise WeightsError(f"{type(model).__name__} has no Conv2d stem to adapt to the image channels")


def _weights(path: str | Path) -> Callable[[Mention], str]:
    """How an error names the weights file: ``--weights PATH``, ``weights='PATH'`` in Python."""
    return lambda say: say("weights", str(path))


def _load_backbone(model: nn.Module, state: Mapping[str, Tensor], heads: tuple[str, ...],
                   label: Callable[[Mention], str], name: str) -> None:
    """Load every tensor but the heads' from ``state``; any other difference is one clear error."""
    own = {k: v for k, v in model.state_dict().items() if not _in_heads(k, heads)}
    given = {k: v for k, v in _unwrapped(state, own).items() if not _in_heads(k, heads)}
    # old checkpoints lack BatchNorm's counter; torch fills it in
    missing = [k for k in own if k not in given and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in given if k not in own]
    shapes = [f"{k} {list(given[k].shape)} vs {list(v.shape)}" for k, v in own.items()
              if k in given and given[k].shape != v.shape]
    problems = [f"{what}: {few(names, SHOWN)}" for what, names in
                (("missing keys", missing), ("unexpected keys", unexpected),
                 ("shapes differ (checkpoint vs model)", shapes)) if names]
    if problems:
        raise WeightsError(lambda say: f"{label(say)} does not fit the model ({model_ref(name, say)}): "
                           f"{'; '.join(problems)}")
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
    # The callable of a ``callable:`` model; pickled with the spec (cloudpickle) when Ray ships it to a worker.
    builder: Builder | None = field(default=None, compare=False, repr=False)
    # The state dict in ``weights``, read once where the file is; None: read from the file at each build.
    state: Mapping[str, Tensor] | None = field(default=None, compare=False, repr=False)

    def build(self) -> nn.Module:
        """The model (see the module docstring); seed torch first for reproducible fresh layers."""
        return create_model(self.name, self.num_classes, self.in_channels, weights=self.weights,
                            freeze_backbone=self.freeze_backbone, builder=self.builder, state=self.state)


def _architecture(name: str, num_classes: int, channels: int, builder: Builder | None) -> nn.Module:
    """A fresh model of ``name`` (a torchvision one has its own 1000-class head and 3 channels)."""
    if is_torchvision(name):
        import torchvision.models

        return torchvision.models.get_model(name[len(TORCHVISION_PREFIX):], weights=None)
    if is_timm(name):
        return _timm().create_model(name[len(TIMM_PREFIX):], pretrained=False, num_classes=num_classes,
                                    in_chans=channels)
    if is_callable_model(name):
        if builder is None:
            raise ModelError(f"--model {name} names a Python callable, which only policysearch.search(model=...) "
                             "can take; continue such a run from Python, with the same callable")
        try:
            model = builder(num_classes, channels)
        except Exception as exc:  # the user's code: whatever it raises becomes one line
            download = ("; if it downloads weights, build it without them (pretrained=False) and give them as "
                        "a local file with weights=" if isinstance(exc, OSError) else "")
            raise ModelError(f"{model_ref(name)} raised {type(exc).__name__} when called as ({num_classes}, "
                             f"{channels}), positionally (num_classes, in_channels): {first_line(exc)}{download}"
                             ) from exc
        if not isinstance(model, nn.Module):
            raise ModelError(f"{model_ref(name)} returned {a_kind(model)}, not a torch.nn.Module; it is "
                             "called as (num_classes, in_channels) and must return a fresh model")
        return model
    return build_model(name, num_classes, channels)


def create_model(name: str, num_classes: int, in_channels: int = 3, *, weights: str | Path | None = None,
                 freeze_backbone: bool = False, builder: Builder | None = None,
                 state: Mapping[str, Tensor] | None = None) -> nn.Module:
    """A classifier for ``num_classes`` classes on ``in_channels``-channel images, started from ``weights``.

    Without weights it is a fresh model (``torchvision:NAME`` with ``weights=None``, ``timm:NAME`` with
    ``pretrained=False``). A ``callable:`` model is ``builder(num_classes, in_channels)``. ``freeze_backbone``
    needs weights: a frozen random backbone would learn nothing. ``state`` is the state dict of ``weights``
    already read (the file is then only named in messages).
    """
    problem = model_problem(name)
    if problem:
        raise ModelError(f"--model {problem}")
    if freeze_backbone and weights is None:
        raise ModelError(lambda say: f"{say('freeze_backbone')} needs {say('weights')}: a frozen backbone must come "
                         "from a checkpoint")
    if weights is None:
        state = None
    elif state is None:
        state = read_state_dict(weights)
    channels = 3 if is_torchvision(name) else in_channels
    if state is not None and not is_torchvision(name) and not is_callable_model(name):
        # built with the checkpoint's channels; the probe leaves the RNG as it was
        with torch.random.fork_rng(devices=[]):
            probe = _architecture(name, num_classes, in_channels, builder)
        stem, _ = _first_conv(probe)
        kernel = _unwrapped(state, probe.state_dict()).get(f"{stem}.weight")
        if kernel is not None and kernel.dim() == 4 and int(kernel.shape[1]) in (1, 3):
            channels = int(kernel.shape[1])
    model = _architecture(name, num_classes, channels, builder)
    if state is not None or freeze_backbone or is_torchvision(name):  # these need the head
        heads = head_names(model, num_classes)
        if state is not None:
            _load_backbone(model, state, heads, _weights(weights), name)
        for head in heads:
            old = model.get_submodule(head)
            if isinstance(old, nn.Linear) and old.out_features != num_classes and not is_callable_model(name):
                _replace_module(model, head, nn.Linear(old.in_features, num_classes))  # a callable's is checked
            elif state is not None:  # the heads are always new, also where the class count happens to match
                for layer in old.modules():
                    if hasattr(layer, "reset_parameters"):
                        layer.reset_parameters()
    if in_channels != channels:
        if not (in_channels == 1 and channels == 3):
            raise WeightsError(lambda say: f"{_weights(weights)(say)}: the model's first layer takes {channels}-"
                               f"channel images, the data has {in_channels} channels")
        _grey_input(model)
    if freeze_backbone:
        heads = head_names(model, num_classes)
        for key, param in model.named_parameters():
            param.requires_grad_(_in_heads(key, heads))
    return model


def grey_input_note(spec: ModelSpec) -> str:
    """A line for the data notes when grey images go into weights made for colour (their first convolution
    summed over its 3 channels), else ''."""
    if spec.weights is None or spec.in_channels != 1 or is_callable_model(spec.name):  # a callable builds for 1
        return ""
    state = spec.state if spec.state is not None else read_state_dict(spec.weights)
    with torch.random.fork_rng(devices=[]), torch.device("meta"):  # only the layers' names: nothing allocated
        model = _architecture(spec.name, spec.num_classes, 3, spec.builder)
    stem, _ = _first_conv(model)
    kernel = _unwrapped(state, model.state_dict()).get(f"{stem}.weight")
    if kernel is None or kernel.dim() != 4 or int(kernel.shape[1]) != 3:
        return ""
    return (f"1-channel images into weights made for 3 ({spec.weights}): the first convolution {stem} sums its "
            "kernels over the colour channels, the same as repeating the grey channel 3 times")


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


# The formulas of the fingerprints below, as the first part of each: a resume compares only fingerprints of
# the same formula, so that a later change to one does not refuse the runs that an earlier one recorded.
STATE_DIGEST_FORMULA, ARCHITECTURE_FORMULA = "w1", "a1"


def library_versions(model: str) -> dict[str, str]:
    """The version of the library that builds ``model`` where the software record lacks it: timm's for a ``timm:``
    model (none when timm has no package metadata), for the records a rerun or a resume compares."""
    version = installed_version("timm") if is_timm(model) else None
    return {"timm": version} if version else {}


def same_formula(stored: str, now: str) -> bool:
    """Whether two fingerprints (``state_digest``, ``architecture``) were made by the same formula."""
    return isinstance(stored, str) and stored.partition("-")[0] == now.partition("-")[0]


def _plain_bytes(tensor: Tensor) -> bytes:
    """A tensor's values as bytes: sparse, quantized, conjugate and negative views made plain first."""
    if tensor.is_quantized:
        tensor = tensor.dequantize()
    if tensor.layout != torch.strided:
        tensor = tensor.to_dense()
    tensor = tensor.resolve_conj().resolve_neg()
    return tensor.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()


def state_digest(state: Mapping[str, Tensor]) -> str:
    """A fingerprint of a state dict's names, shapes, types and values: a resume must start its models from the
    weights the run started from, which the file's path alone does not show."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach()
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype}:{tensor.layout}".encode("utf-8"))
        if not tensor.is_meta:  # a meta tensor has a shape but no values
            digest.update(_plain_bytes(tensor.cpu()))
    return f"{STATE_DIGEST_FORMULA}-{digest.hexdigest()[:16]}"


def architecture(model: nn.Module) -> str:
    """A fingerprint of a model's state names, shapes and types: a model callable is recorded by its name alone,
    which another build of the same name (another width or depth) shares. Not the layers' classes, which a
    library's new release may move without changing the network."""
    parts = [f"{key}:{type(t).__name__}" if not isinstance(t, Tensor) or nn.parameter.is_lazy(t)
             else f"{key}:{tuple(t.shape)}:{t.dtype}"  # get_extra_state() may keep other objects
             for key, t in model.state_dict().items()]
    return f"{ARCHITECTURE_FORMULA}-{hashlib.sha256(chr(10).join(parts).encode('utf-8')).hexdigest()[:16]}"


def _runs_contiguous(model: nn.Module, x: Tensor) -> bool:
    """Whether ``model`` runs on the contiguous batch ``x`` (after it failed on the channels_last one)."""
    try:
        with torch.no_grad():
            model.to(memory_format=torch.contiguous_format)(x)
    except Exception:  # the model's own code, which failed once already: any failure means no
        return False
    return True


def check_model(spec: ModelSpec, image_size: int) -> str:
    """Build ``spec`` and run it on two ``image_size`` images: every problem is one line, before any work.
    Returns the built model's :func:`architecture`."""
    model = spec.build()
    where = functools.partial(model_ref, spec.name)
    given = is_callable_model(spec.name)
    if given:  # a callable must build for the data's channels and classes; the others are built to fit
        _, stem = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), ("", None))
        if stem is not None and stem.in_channels != spec.in_channels:
            channels = f"{spec.in_channels} channel{'s' if spec.in_channels != 1 else ''}"
            raise ModelError(lambda say: f"{where(say)} takes {stem.in_channels}-channel images (its first "
                              f"convolution), but the data has {channels}; it is called with "
                              f"in_channels={spec.in_channels} and must build its first layer for it")
    parameters = list(model.parameters())
    if not any(p.requires_grad for p in parameters):
        why = (f"all {len(parameters)} of its parameters are frozen (requires_grad=False)" if parameters else
               "none is registered; its layers must be nn.Module attributes (an nn.ModuleList for a list of them)")
        raise ModelError(lambda say: f"{where(say)} has no trainable parameters, so there is nothing to train: "
                          f"{why}")
    lazy = sorted({type(m).__name__ for m in model.modules() if isinstance(m, nn.modules.lazy.LazyModuleMixin)})
    if lazy:  # training moves the model to its device and layout before any batch: unsized weights cannot go
        raise ModelError(lambda say: f"{where(say)} has lazy layers ({', '.join(lazy)}), whose sizes are known only "
                          "after a first batch; build it with sized layers (nn.Linear(in_features, num_classes))")
    x = torch.zeros(2, spec.in_channels, image_size, image_size)
    try:  # as training runs it: model and batches in the channels_last layout
        with torch.no_grad():
            out = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    except Exception as exc:  # the model's own code (a callable's, a timm one's): whatever it raises is one line,
        failure = f"{type(exc).__name__}: {first_line(exc)}"  # its traceback kept as the cause for Python callers
        if _runs_contiguous(model, x):
            fix = ("; if it flattens with x.view(...), use torch.flatten(x, 1) or x.reshape(len(x), -1)" if given
                   else "")
            raise ModelError(lambda say: f"{where(say)} fails on batches in the channels_last memory layout, "
                              f"which training uses ({failure}), and runs on contiguous ones{fix}") from exc
        raise ModelError(lambda say: f"{where(say)} cannot run on {spec.in_channels}x{image_size}x{image_size} "
                          f"images ({failure}); if the size is the cause, choose another {say('image_size')}"
                          + (", else fix the model" if given else "")) from exc
    if not isinstance(out, Tensor) or tuple(out.shape) != (2, spec.num_classes):
        got = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
        hint = (f"; it is called with num_classes={spec.num_classes} and must return that many logits" if given else
                "; only models whose training forward returns logits can be trained here")
        raise ModelError(lambda say: f"{where(say)} returns {got} for a batch of 2 images, not logits "
                          f"[2, {spec.num_classes}]{hint}")
    return architecture(model)
