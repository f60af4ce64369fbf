"""Data given as Python objects, read once into an :class:`~policysearch.training.data.ImageData` (uint8 in
memory): what ``policysearch.search(data=...)`` accepts besides a data set name or folder.

:func:`read_data` takes a map-style dataset of ``(image, label)`` items, an ``(images, labels)`` pair of
arrays or tensors, or a Hugging Face ``datasets.Dataset`` (its ``Image`` and ``ClassLabel`` columns, or the
columns named). Images may be PIL images of any mode or integer (0..255) or float (0..1) arrays, grey or
colour but all the same; sizes follow the image-folder rule (:func:`policysearch.training.data.target_side`).
Every problem is one :class:`DataError` line naming the item. Ray is not imported, nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import numbers
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from policysearch.wording import a_kind, short_repr
from policysearch.training.data import (PIL_ERRORS, PYTHON_PREFIX, DataError, ImageData, is_grey, pil_to_8bit,
                                        require_memory, resize_images, resize_note, target_side, unreadable)

__all__ = ["IMAGE_COLUMNS", "LABEL_COLUMNS", "fingerprint", "is_huggingface", "read_data"]

# Column names tried, in this order, when a Hugging Face dataset has no Image / ClassLabel feature.
IMAGE_COLUMNS = ("image", "img", "images", "pixel_values", "pixels")
LABEL_COLUMNS = ("label", "labels", "target", "targets", "class", "y")


def is_huggingface(data: Any) -> bool:
    """Whether ``data`` is an object of the ``datasets`` package (checked by its type, without importing it)."""
    return type(data).__module__.split(".")[0] == "datasets"


def read_data(data: Any, *, image_column: str | None = None, label_column: str | None = None,
              image_size: int | None = None, least_side: int = 1) -> ImageData:
    """``data`` (a map-style dataset, an ``(images, labels)`` pair or a Hugging Face dataset) as uint8
    images in memory, named ``python:WHAT#FINGERPRINT``; a one-line DataError for anything it cannot use.
    Sizes follow the image-folder rule, ``least_side`` (the smallest side the model is built for) included."""
    if image_size is not None and image_size < 1:
        raise DataError(f"image_size must be a positive number of pixels, got {image_size}")
    if is_huggingface(data):
        images, labels, classes, what = _read_huggingface(data, image_column, label_column)
    else:
        if image_column is not None or label_column is not None:
            raise DataError(f"image_column= and label_column= name columns of a Hugging Face dataset; data is a "
                            f"{type(data).__name__}")
        if isinstance(data, tuple) and len(data) == 2:
            images, labels, classes, what = _read_pair(*data)
        else:
            images, labels, classes, what = _read_items(data)
    label_tensor = _check_labels(labels, classes)
    num_classes = len(classes) if classes else int(label_tensor.max()) + 1
    names = tuple(classes) if classes else tuple(str(c) for c in range(num_classes))
    name = f"{PYTHON_PREFIX}{what}"
    stacked, notes = _squared(images, image_size, name, least_side)
    image_data = ImageData(stacked, label_tensor, names, name, notes)
    return ImageData(stacked, label_tensor, names, f"{name}#{fingerprint(image_data)}", notes)


def fingerprint(data: ImageData) -> str:
    """12 hex digits of SHA-256 over the images, labels and class names: the same data gives the same value."""
    digest = hashlib.sha256()
    digest.update(repr((tuple(data.images.shape), data.classes)).encode())
    digest.update(data.images.contiguous().numpy().tobytes())
    digest.update(data.labels.contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


# ------------------------------------------------------------------------------------------- sources


def _keyed_from_0(data: Mapping[Any, Any]) -> bool:
    """Whether a mapping holds the keys 0..N-1 a dataset's items are read by (a mapping that refuses an
    integer key holds none)."""
    try:
        return all(k in data for k in range(len(data)))
    except (TypeError, ValueError):
        return False


def _read_items(data: Any) -> tuple[list[Tensor] | Tensor, list[int], list[str] | None, str]:
    """A map-style dataset of ``(image, label)`` items."""
    kind = type(data).__name__
    if isinstance(data, (str, bytes)) or not hasattr(data, "__getitem__"):
        raise DataError(f"data: {a_kind(data)} is not a data set; give a map-style dataset of (image, label) items, a "
                        "pair (images, labels), a Hugging Face dataset, a data set name or an image folder")
    try:
        count = len(data)
    except TypeError:
        raise DataError(f"data: {kind} has no len(); give a map-style dataset (len() and data[i]) - an iterable-"
                        "only dataset cannot be split into folds") from None
    if count == 0:
        raise DataError(f"data: {kind} is empty (0 items)")
    if isinstance(data, Mapping) and not _keyed_from_0(data):  # e.g. splits: {"train": ..., "test": ...}
        keys = [short_repr(k) for k in list(data)[:4]]
        image = next((k for k in data if k in IMAGE_COLUMNS), None)
        label = next((k for k in data if k in LABEL_COLUMNS), None)
        hint = ("items must be keyed 0..N-1; pass list(data.values())" if all(isinstance(k, int) for k in data) else
                f"for columns give the pair (data[{image!r}], data[{label!r}])" if image and label else
                f"pass one of its values, e.g. data[{keys[0]}]")
        raise DataError(f"data is a {kind} with keys {', '.join(keys)}{', ...' if count > 4 else ''}, not a data set "
                        f"of items 0..{count - 1}; {hint}")
    reader = _ImageReader()
    images, labels = [], []
    for i in range(count):
        where = f"data item {i}"
        try:
            item = data[i]
        except Exception as exc:  # the user's __getitem__: any error, named with the item it read
            raise DataError(f"{where}: reading it raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            if i == 0 and _pair_as_list(data):
                raise DataError(f"data is a list of 2 items, the first {_describe(item)}; for a pair (images, "
                                "labels) pass a tuple: (images, labels)")
            raise DataError(f"{where} is {_describe(item)}, not a pair (image, label); return (image, label) from "
                            "__getitem__, or pass a Hugging Face dataset with its column names")
        images.append(reader.read(item[0], where))
        labels.append(_label(item[1], where))
        if i < REREAD:  # before the rest is read: a large dataset is refused at once
            _require_same_on_reading_again(data, i, images[i], labels[i], reader)
    names = _class_names(_declared_classes(data))
    if names and not hasattr(data, "classes") and labels and 0 <= max(labels) < len(names) - 1:
        names = names[:max(labels) + 1]  # a Subset of the first classes: their names, not every class's
    return images, labels, names, kind


REREAD = 5  # items read a second time: a random flip goes unseen in one with chance 1/2, in all five 1/32


def _require_same_on_reading_again(data: Any, i: int, image: Tensor, label: int, reader: "_ImageReader") -> None:
    """Refuse a dataset whose item ``i`` changes from one read to the next (a random transform in
    ``__getitem__``): the search reads the data once, so it would take one random view of each image for the
    image itself, and a resumed run would not find the same data."""
    where = f"data item {i}"
    try:
        item = data[i]
    except Exception as exc:  # the user's __getitem__, as in the first read
        raise DataError(f"{where}: reading it again raised {type(exc).__name__}: {exc}") from exc
    if not torch.equal(reader.read(item[0], where), image) or _label(item[1], where) != label:
        raise DataError(f"{where} differs between two reads: the dataset draws at random (a random transform in "
                        "__getitem__?); give it without augmentation (e.g. only ToTensor()) - the search adds "
                        "augmentation itself and needs the images as they are")


def _declared_classes(data: Any) -> Any:
    """A dataset's ``classes``, looked for through torch's wrappers, which keep the labels of the datasets they
    wrap: a ``Subset`` (e.g. of an ``ImageFolder``) and a ``ConcatDataset`` whose parts all name the same
    classes. None where nothing names them."""
    if hasattr(data, "classes"):
        return data.classes
    if isinstance(data, torch.utils.data.Subset):
        return _declared_classes(data.dataset)
    if isinstance(data, torch.utils.data.ConcatDataset) and data.datasets:
        names = [_class_names(_declared_classes(part)) for part in data.datasets]
        return names[0] if all(n == names[0] for n in names) else None
    return None


def _pair_as_list(data: Any) -> bool:
    """Whether ``data`` is ``[images, labels]``: an image array [N, ...] and N labels, in a list."""
    if not (isinstance(data, list) and len(data) == 2 and isinstance(data[0], (Tensor, np.ndarray))):
        return False
    labels = data[1]
    return data[0].ndim >= 3 and isinstance(labels, (Tensor, np.ndarray, list, tuple)) and \
        len(labels) == len(data[0]) and all(np.ndim(label) == 0 for label in labels)


def _class_names(classes: Any) -> list[str] | None:
    """The class names of a data set's ``classes``: a sequence (or array) of names in label order, or a mapping
    of names to labels (torchvision's ``class_to_idx`` form) or of labels to names; None for anything else.
    One string is refused: read as a sequence it would name a class per letter."""
    if isinstance(classes, (str, bytes)):
        raise DataError(f"data.classes is the string {classes!r}; give the class names as a list in label order, "
                        "e.g. ['cat', 'dog']")
    if isinstance(classes, np.ndarray) and classes.ndim == 1:
        classes = classes.tolist()
    if isinstance(classes, Mapping) and classes:
        pairs = [(v, k) if isinstance(k, str) else (k, v) for k, v in classes.items()]  # (label, name)
        if not all(isinstance(label, numbers.Integral) and isinstance(name, str) for label, name in pairs):
            return None
        labels = sorted(int(label) for label, _ in pairs)
        if labels != list(range(len(pairs))):  # names the labels do not have: the data's labels need the same fix
            shown = ", ".join(f"{name!r}: {int(label)}" for label, name in sorted(pairs, key=lambda p: int(p[0]))[:6])
            raise DataError(f"data.classes maps its {len(pairs)} class names to the labels {{{shown}"
                            f"{', ...' if len(pairs) > 6 else ''}}}, not to 0..{len(pairs) - 1}: each label once, "
                            f"0..C-1 in label order; relabel the data and its classes so")
        return [name for _, name in sorted(pairs, key=lambda pair: int(pair[0]))]
    if isinstance(classes, Sequence) and classes and all(isinstance(c, str) for c in classes):
        return list(classes)
    return None


def _read_pair(images: Any, labels: Any) -> tuple[list[Tensor] | Tensor, list[int], None, str]:
    """``(images, labels)``: an image array [N, ...] (or a sequence of images) and N labels."""
    if isinstance(images, (Tensor, np.ndarray)) and images.ndim in (3, 4):
        stacked = _array_batch(images)
    elif isinstance(images, (Tensor, np.ndarray)):
        raise DataError(f"data (images, labels): images have shape {tuple(images.shape)}; expected [N, H, W], "
                        "[N, C, H, W] or [N, H, W, C] with C = 1 or 3")
    else:
        try:
            count = len(images)
        except TypeError:
            raise DataError(f"data (images, labels): images are {a_kind(images)}, not an array or a "
                            "sequence of images") from None
        reader = _ImageReader()
        stacked = [reader.read(images[i], f"images[{i}]") for i in range(count)]
    label_list = _label_array(labels)
    if len(label_list) != len(stacked):
        raise DataError(f"data (images, labels): {len(stacked)} images but {len(label_list)} labels")
    if len(label_list) == 0:
        raise DataError("data (images, labels) is empty (0 images)")
    return stacked, label_list, None, "arrays"


def _read_huggingface(data: Any, image_column: str | None,
                      label_column: str | None) -> tuple[list[Tensor], list[int], list[str] | None, str]:
    """A Hugging Face ``datasets.Dataset``: its image and label columns, class names from a ClassLabel."""
    import datasets  # the data is one of its objects, so it is installed and imported already
    from PIL import Image

    kind = type(data).__name__
    if isinstance(data, datasets.DatasetDict):
        raise DataError(f"data is a DatasetDict with splits {', '.join(data)}; pass one split, e.g. data['train']")
    if not isinstance(data, datasets.Dataset):
        raise DataError(f"data is a Hugging Face {kind}; give a map-style datasets.Dataset (e.g. from "
                        "load_from_disk) - a streaming dataset cannot be split into folds")
    features = data.features
    image_col = _column(features, image_column, "image_column", datasets.Image, IMAGE_COLUMNS)
    label_col = _column(features, label_column, "label_column", datasets.ClassLabel, LABEL_COLUMNS)
    if len(data) == 0:
        raise DataError("data: the Hugging Face dataset is empty (0 rows)")
    feature = features[label_col]
    classes = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    reader = _ImageReader()
    images, labels = [], []
    rows = iter(data.select_columns([image_col, label_col]).with_format(None))
    for i in range(len(data)):
        try:
            row = next(rows)  # datasets decodes the row's image here
        except (*PIL_ERRORS, Image.DecompressionBombError) as exc:
            raise unreadable(_hf_image_named(data, image_col, i), exc) from exc
        images.append(reader.read(row[image_col], f"row {i}, column {image_col!r}"))
        labels.append(_label(row[label_col], f"row {i}, column {label_col!r}"))
    return images, labels, classes, "datasets.Dataset"


def _hf_image_named(data: Any, image_col: str, row: int) -> str:
    """A row's image for an error: its row and column, and the file it was read from where the row names one."""
    import datasets

    where = f"row {row}, column {image_col!r}"
    if not isinstance(data.features[image_col], datasets.Image):
        return where
    stored = data.select_columns([image_col]).cast_column(image_col, datasets.Image(decode=False))[row][image_col]
    path = stored.get("path") if isinstance(stored, dict) else None
    return f"{where} (image {path!r})" if path else where


def _column(features: Any, given: str | None, keyword: str, feature_type: type, names: Sequence[str]) -> str:
    """The column named ``given``, else the one column of ``feature_type``, else the first of ``names``."""
    columns = list(features)
    if given is not None:
        if given not in features:
            raise DataError(f"{keyword}={given!r} is not a column of the dataset; its columns: {', '.join(columns)}")
        return given
    typed = [c for c in columns if isinstance(features[c], feature_type)]
    if len(typed) == 1:
        return typed[0]
    if len(typed) > 1:
        raise DataError(f"the dataset has several {feature_type.__name__} columns ({', '.join(typed)}); name one "
                        f"with {keyword}=")
    for name in names:
        if name in features:
            return name
    what = "image" if keyword == "image_column" else "label"
    raise DataError(f"found no {what} column among {', '.join(columns)} (none is a {feature_type.__name__} feature "
                    f"or named {'/'.join(names)}); name it with {keyword}=")


# -------------------------------------------------------------------------------------------- images


class _ImageReader:
    """Reads single images into uint8 [C, H, W] tensors and holds them to one kind: all grey or all colour."""

    def __init__(self) -> None:
        self.first: tuple[str, str, int] | None = None  # where, description, channels

    def read(self, image: Any, where: str) -> Tensor:
        tensor, described = _image_tensor(image, where)
        _check_pixels(tensor, where)
        channels = int(tensor.shape[0])
        if self.first is None:
            self.first = (where, described, channels)
        elif channels != self.first[2]:
            first_where, first_described, _ = self.first
            raise DataError(f"{where} is {described}, but {first_where} is {first_described}: the images of one data "
                            "set must be all grey or all colour; convert them first (e.g. PIL's "
                            "image.convert('RGB'))")
        return tensor


def _check_pixels(images: Tensor, where: str) -> None:
    """Refuse images without pixels ([..., C, H, W] with H or W 0): nothing to resize or learn from."""
    height, width = int(images.shape[-2]), int(images.shape[-1])
    if not height or not width:
        raise DataError(f"{where}: the image is {width}x{height} pixels (width x height); every image needs at "
                        "least one pixel")


def _kind(channels: int) -> str:
    return "grey" if channels == 1 else "colour"


def _image_tensor(image: Any, where: str) -> tuple[Tensor, str]:
    """One image as uint8 [C, H, W] (C 1 or 3), and a description for a mixed-modes error."""
    from PIL import Image

    if isinstance(image, Image.Image):
        try:  # an image opened from a file is decoded here (PIL opens lazily)
            grey = is_grey(image)
            converted = pil_to_8bit(image, grey, where, made_in_memory=image.format is None)  # not from a file
            array = np.array(converted, dtype=np.uint8)
        except (*PIL_ERRORS, Image.DecompressionBombError) as exc:
            if isinstance(exc, DataError):
                raise
            file = getattr(image, "filename", "")
            raise unreadable(f"{where} (image {file!r})" if file else where, exc) from exc
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(array)), f"{_kind(1 if grey else 3)} (PIL mode {image.mode})"
    if isinstance(image, (list, tuple)):
        image = np.asarray(image)
    if not isinstance(image, (Tensor, np.ndarray)):
        raise DataError(f"{where}: the image is {_describe(image)}; expected a PIL image or a uint8 or float "
                        "array or tensor [H, W], [C, H, W] or [H, W, C]")
    channels_first = isinstance(image, Tensor)
    if image.ndim == 2:
        image = image[None]
    elif image.ndim != 3:
        raise DataError(f"{where}: the image has shape {tuple(image.shape)}; expected [H, W], [C, H, W] or "
                        "[H, W, C] with C = 1 or 3")
    shape = tuple(image.shape)
    if shape[0] in (1, 3) and (channels_first or shape[-1] not in (1, 3)):
        chw = image
    elif shape[-1] in (1, 3):
        chw = image.permute(2, 0, 1) if isinstance(image, Tensor) else image.transpose(2, 0, 1)
    else:
        raise DataError(f"{where}: the image has shape {shape}; expected [C, H, W] or [H, W, C] with C = 1 or 3 "
                        "channels")
    tensor = _to_uint8(torch.as_tensor(np.ascontiguousarray(chw)) if isinstance(chw, np.ndarray) else chw, where)
    kind = "tensor" if isinstance(image, Tensor) else "array"
    return tensor.contiguous(), f"{_kind(int(tensor.shape[0]))} (a {tensor.shape[0]}-channel {kind})"


def _to_uint8(values: Tensor, where: str) -> Tensor:
    """uint8 values as they are (other integers too, when in 0..255); floating-point values in 0..1 scaled to
    0..255 and rounded."""
    values = values.detach().cpu()
    if values.dtype == torch.uint8:
        return values
    if values.is_floating_point():
        if values.numel() and not bool(torch.isfinite(values).all()):
            raise DataError(f"{where}: the image holds NaN or infinite values")
        low, high = (float(values.min()), float(values.max())) if values.numel() else (0.0, 0.0)
        if low < 0.0 or high > 1.0:
            raise DataError(f"{where}: float image values lie in {low:.3g}..{high:.3g}, not 0..1; give images "
                            "before normalisation (uint8, or floats in 0..1) - the search normalises them itself")
        return values.float().mul(255.0).round_().to(torch.uint8)
    if values.dtype != torch.bool:  # other integers: values 0..255, as uint8 (numpy: torch has no uint16 min)
        low, high = (int(values.numpy().min()), int(values.numpy().max())) if values.numel() else (0, 0)
        if low >= 0 and high <= 255:
            return values.to(torch.uint8)
        raise DataError(f"{where}: integer image values lie in {low}..{high}, not 0..255; give uint8 (0..255) or "
                        "floating-point (0..1) images")
    raise DataError(f"{where}: images of dtype bool are not read; give uint8 (0..255) or floating-point (0..1) images")


def _array_batch(images: Tensor | np.ndarray) -> Tensor:
    """A whole image array [N, H, W], [N, C, H, W] or [N, H, W, C] as uint8 [N, C, H, W]."""
    where = "data (images, labels): images"
    shape = tuple(images.shape)
    if len(shape) == 3:
        images = images[:, None]
    elif shape[1] in (1, 3) and (isinstance(images, Tensor) or shape[-1] not in (1, 3)):
        pass
    elif shape[-1] in (1, 3):
        images = images.permute(0, 3, 1, 2) if isinstance(images, Tensor) else images.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"{where} have shape {shape}; expected [N, H, W], [N, C, H, W] or [N, H, W, C] with C = 1 "
                        "or 3")
    tensor = torch.as_tensor(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    _check_pixels(tensor, where)
    return _to_uint8(tensor, where).contiguous()


def _squared(images: list[Tensor] | Tensor, image_size: int | None, name: str,
             least_side: int = 1) -> tuple[Tensor, tuple[str, ...]]:
    """Every image as S x S (the image-folder rule: the centre square, resized), stacked; and the note."""
    if isinstance(images, Tensor):
        sizes = [(int(images.shape[-1]), int(images.shape[-2]))] * len(images)  # (width, height)
    else:
        sizes = [(int(t.shape[-1]), int(t.shape[-2])) for t in images]
    side, why = target_side([min(w, h) for w, h in sizes], image_size, least_side)
    if isinstance(images, Tensor) and images.shape[-2:] == (side, side):
        return images, ()
    channels = int(images[0].shape[0])
    require_memory(len(sizes), channels, side, name)
    out = torch.empty((len(sizes), channels, side, side), dtype=torch.uint8)
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, size in enumerate(sizes):
        groups[size].append(i)
    for (w, h), members in groups.items():
        batch = images[members] if isinstance(images, Tensor) else torch.stack([images[i] for i in members])
        short = min(w, h)
        top, left = (h - short) // 2, (w - short) // 2
        out[members] = resize_images(batch[..., top:top + short, left:left + short].contiguous(), side)
    return out, resize_note(name, sizes, side, why)


# -------------------------------------------------------------------------------------------- labels


def _label(value: Any, where: str) -> int:
    """One integer class index; a DataError naming ``where`` for anything else (floats, vectors, text)."""
    if isinstance(value, (Tensor, np.ndarray)) and (value.numel() if isinstance(value, Tensor) else value.size) == 1:
        value = value.reshape(()).item()  # torch.tensor(3) or torch.tensor([3]): the class index 3
    elif isinstance(value, (Tensor, np.ndarray)):
        raise DataError(f"{where}: the label is {'a tensor' if isinstance(value, Tensor) else 'an array'} of shape "
                        f"{tuple(value.shape)}, not one integer class index (for one-hot labels give argmax)")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        shown = short_repr(value) if isinstance(value, (str, bytes, numbers.Number)) or value is None else \
            a_kind(value)  # not an object's repr, with its memory address
        raise DataError(f"{where}: the label {shown} is not an integer class index ({type(value).__name__}); "
                        "labels must be the integers 0..C-1")
    return int(value)


def _label_array(labels: Any) -> list[int]:
    """The labels of an ``(images, labels)`` pair, one integer per image."""
    try:
        array = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    except (TypeError, ValueError) as exc:
        raise DataError(f"data (images, labels): labels cannot be read as an array ({exc})") from None
    if array.ndim != 1:
        raise DataError(f"data (images, labels): labels have shape {array.shape}; expected one integer class index "
                        "per image (for one-hot labels give argmax)")
    if array.dtype.kind not in "iu" and array.size:
        bad = next((i for i, v in enumerate(array.tolist())
                    if isinstance(v, bool) or not isinstance(v, numbers.Integral)), 0)
        raise DataError(f"data (images, labels): labels[{bad}] = {array.tolist()[bad]!r} is not an integer class index "
                        f"(labels of dtype {array.dtype}); labels must be the integers 0..C-1")
    return [int(v) for v in array.tolist()]


def _check_labels(labels: list[int], classes: list[str] | None) -> Tensor:
    """The labels as int64, after checking they are 0..C-1 with at least 2 images in every class."""
    array = np.asarray(labels, dtype=np.int64)
    if array.min() < 0:
        first = int(np.argmax(array < 0))
        raise DataError(f"data item {first}: label {int(array[first])} is negative; labels must be the class "
                        "indices 0..C-1")
    if classes and array.max() >= len(classes):
        first = int(np.argmax(array >= len(classes)))
        raise DataError(f"data item {first}: label {int(array[first])} is outside 0..{len(classes) - 1}, the indices of "
                        f"the data's {len(classes)} class names")
    if classes and len(set(classes)) < len(classes):
        twice = next(name for k, name in enumerate(classes) if name in classes[:k])
        raise DataError(f"class names: {twice!r} is given twice; each class needs its own name")
    count = len(classes) if classes else int(array.max()) + 1
    if count < 2:
        raise DataError(f"every image has label {int(array[0])}: a classifier needs at least 2 classes, each with "
                        "images")
    per_class = np.bincount(array, minlength=count)

    def named(c: int) -> str:
        return f"class {c} ({classes[c]!r})" if classes else f"class {c}"

    for c, n in enumerate(per_class):
        if n == 0:
            whole = (f"the {count} class names" if classes else
                     f"0..{count - 1}, up to the largest label, {count - 1} at data item {int(np.argmax(array))}")
            raise DataError(f"{named(c)} has no images; labels must be 0..C-1 with every class present ({whole}) - "
                            "relabel the classes as 0..C-1, or add images of it")
        if n == 1:
            raise DataError(f"{named(c)} has only one image; every class needs at least 2 (one to train a child "
                            "model, one to score it), and a search with the default settings at least 3 - add "
                            "images or drop the class")
    return torch.from_numpy(array)


def _describe(value: Any) -> str:
    """A few words on what ``value`` is, for an error."""
    if isinstance(value, dict):
        keys = ", ".join(repr(k) for k in list(value)[:4])
        return f"a dict with keys {keys}"
    if isinstance(value, (tuple, list)):
        return f"{a_kind(value)} of {len(value)}"
    return a_kind(value)
