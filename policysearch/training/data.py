"""Data sets, reduced training sets and the baseline augmentation.

Everything here keeps images as uint8 tensors [N, C, H, W] in memory: the data sets this product is
for are small, and a policy transform works on uint8 batches, so there is one representation from
loading to the training loop. How an image folder is read (layout, pixels, size) is spelled out in
`load_dataset`'s docstring. Ray is not imported here.
"""

from __future__ import annotations

import math
import os
import re
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

from policysearch.augment.policy import Baseline
from policysearch.wording import WordedError, counted

__all__ = [
    "BASELINES",
    "DATASET_NAMES",
    "MAX_AUTO_SIDE",
    "MAX_IMAGE_SIZE",
    "NORMALIZATION",
    "PYTHON_PREFIX",
    "DataError",
    "PIL_ERRORS",
    "ImageData",
    "baseline_for",
    "compute_mean_std",
    "dataset_key",
    "is_grey",
    "load_dataset",
    "require_memory",
    "normalization_for",
    "normalize",
    "pil_to_8bit",
    "dataset_name",
    "resize_images",
    "resize_note",
    "named_class",
    "stratified_indices",
    "stratified_subset",
    "target_side",
    "unreadable",
]

DATASET_NAMES: tuple[str, ...] = ("digits", "cifar10", "cifar100", "svhn", "imagefolder:PATH")
# The name of data given as Python objects (policysearch.search(data=...)): "python:WHAT#FINGERPRINT".
PYTHON_PREFIX = "python:"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"})
DIGITS_TEST_FRACTION = 0.4
DIGITS_SIDE = 16  # the side digits' 8x8 images are upsampled to, unless a size is asked for
SPLIT_SEED = 0
MAX_IMAGE_SIZE = 4096  # pixels per side a set may be resized to: 3 x 4096 x 4096 is 48 MiB per image


def dataset_name(data: str | os.PathLike[str]) -> str:
    """The data set name the loaders take for a name or a folder: a known name (or 'imagefolder:...') as it
    is, a path (a folder, or text with a path separator) as 'imagefolder:PATH'; anything else stays as given,
    for the loader to refuse in one line."""
    text = os.fspath(data)
    if not text.strip():  # Path("") is the current folder, not data: the settings' check refuses it
        return text
    named = text in DATASET_NAMES or text.startswith(("imagefolder:", PYTHON_PREFIX))
    a_path = isinstance(data, os.PathLike) or "/" in text or os.sep in text or Path(text).expanduser().is_dir()
    return text if named or not a_path else f"imagefolder:{text}"


class DataError(WordedError):
    """A data problem the user can fix; the message says what is wrong and what to do (a setting it names
    is worded as the command line or the Python API names it: :class:`~policysearch.wording.WordedError`)."""


def require_classes(data: "ImageData") -> None:
    """Refuse training data of one class: a classifier needs two (``show`` may still draw such a folder)."""
    if data.num_classes < 2:
        folder = data.name.startswith("imagefolder:")
        raise DataError(f"{data.name} has one class ({data.classes[0]!r}); a classifier needs at least 2 classes"
                        + (": add a subfolder of images for each other class" if folder else ""))


@dataclass(frozen=True)
class ImageData:
    """A labelled image set held in memory: uint8 images [N, C, H, W] (C is 1 or 3), int64 labels [N].

    `notes` are one-line notices about what loading changed (for example a resize), for the caller to print.
    """

    images: Tensor
    labels: Tensor
    classes: tuple[str, ...]
    name: str
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] not in (1, 3):
            raise DataError(
                f"{self.name}: images must be uint8 [N, C, H, W] with C in (1, 3), "
                f"got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise DataError(f"{self.name}: labels must be int64 [N], got {self.labels.dtype} {tuple(self.labels.shape)}")
        if len(self.labels) != len(self.images):
            raise DataError(f"{self.name}: {len(self.images)} images but {len(self.labels)} labels")
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise DataError(f"{self.name}: labels must lie in 0..{len(self.classes) - 1} (one per class name)")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        """Number of classes (from the class names, so a subset keeps the full label space)."""
        return len(self.classes)

    def subset(self, indices: Sequence[int] | np.ndarray | Tensor) -> ImageData:
        """The images at `indices` (in that order), with the same class names and data set name."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64)) if not isinstance(indices, Tensor) else indices
        idx = idx.to(device=self.labels.device, dtype=torch.long)
        return ImageData(self.images[idx], self.labels[idx], self.classes, self.name, self.notes)


# --------------------------------------------------------------------------------------------- loading


def dataset_key(name: str) -> str:
    """The table key of a data set name: 'digits/train' -> 'digits', 'imagefolder:/x' -> 'imagefolder'."""
    if name.startswith("imagefolder:") or name == "imagefolder":
        return "imagefolder"
    if name.startswith(PYTHON_PREFIX):
        return "python"
    return name.split("/", 1)[0]


def _check_image_size(size: int) -> None:
    if not 1 <= size <= MAX_IMAGE_SIZE:
        raise DataError(f"image_size must be a number of pixels from 1 to {MAX_IMAGE_SIZE}, got {size}")


RESIZE_CHUNK_BYTES = 2**28  # float memory of one resized chunk


def resize_images(images: Tensor, size: int) -> Tensor:
    """Resize uint8 images [N, C, H, W] to size x size with bilinear antialiased interpolation."""
    _check_image_size(size)
    if images.shape[-2:] == (size, size):
        return images
    if images.shape[0] == 0:
        return images.new_zeros((0, images.shape[1], size, size))
    out = images.new_empty((images.shape[0], images.shape[1], size, size))  # filled chunk by chunk: no second copy
    per_image = 4 * images.shape[1] * (images.shape[-2] * images.shape[-1] + size * size)  # float in and out
    step = max(1, RESIZE_CHUNK_BYTES // per_image)  # bounded float memory on large sets
    for start in range(0, len(images), step):
        x = F.interpolate(images[start:start + step].float(), size=(size, size), mode="bilinear",
                          align_corners=False, antialias=True)
        out[start:start + step] = x.round_().clamp_(0, 255)
    return out


DATA_ROOT = "data"  # where downloadable data sets live unless a command or a caller says otherwise


def load_dataset(
    name: str,
    split: str = "train",
    data_root: str | Path = DATA_ROOT,
    download: bool = False,
    image_size: int | None = None,
    least_side: int = 1,
) -> ImageData:
    """Load a data set split ('train', 'val' or 'test') into memory as uint8 images.

    'digits' is scikit-learn's bundled 8x8 digits, upsampled to 16x16, with a fixed stratified 60/40
    train/test split since it has no official one. 'cifar10', 'cifar100' and 'svhn' are read from files
    under `data_root`, fetched only with `download=True`. None of these has a 'val' split.

    'imagefolder:PATH' reads one subfolder per class:
    - Layout: if PATH holds any of train/, val/ (or valid/, validation/) and test/ (any case), the class
      folders are read from train/ and the others are separate splits that never enter the training data;
      a split folder next to any other folder is an error. Otherwise PATH's subfolders are the classes and
      every image is training data: nothing is held back, and there is no test split (an error says so).
    - Each training class needs at least 2 images (and a classifier 2 classes, ``require_classes``); unreadable
      files, images outside class folders and empty folders are errors naming the path. Image files are found
      recursively, through linked folders as torchvision's ImageFolder does (a file reached twice counts once
      in its class and is an error in two classes or splits; a link up a loop, and a link to nothing beside the
      class folders, are errors; hidden entries skipped; other files skipped with a note).
    - Pixels: EXIF orientation is applied; 16-bit images are scaled to 8 bits (value * 255 / 65535);
      transparency is composited onto black; the images have 1 channel when every training image is grey
      (modes 1, L, LA, I, I;16, F or a grey palette) and 3 otherwise (grey images repeated on 3 channels).
    - Size: every image becomes S x S, S = `image_size` or else the median shorter side of the training
      images capped at MAX_AUTO_SIDE (64). A non-square image's centre square is cropped, then resized
      (bilinear, antialiased). Every split uses the training split's S and channel count, and the result's
      `notes` say when images were resized (original sizes, target, reason) or converted.
    - Some classes only: 'imagefolder:PATH?classes=A,B' keeps the class folders A and B of every split (labels
      0, 1, ... in the folders' sorted order, whatever order the list gives), as if the others were absent;
      an unknown name is an error listing the classes there are.

    `image_size` resizes any set. ``least_side`` (the smallest side the model is built for) raises S, and the
    digits' size, to it when no ``image_size`` is given, so that each image is resized once, from its original.
    """
    if split not in ("train", "val", "test"):
        raise DataError(f"split must be 'train', 'val' or 'test', got {split!r}")
    if image_size is not None:
        _check_image_size(image_size)
    root = Path(data_root)
    if name.startswith("imagefolder:"):
        path, classes = _folder_and_classes(name[len("imagefolder:") :])
        if not path.strip():  # Path("") is the current folder
            raise DataError(f"{name}: no folder after 'imagefolder:'; give one, e.g. imagefolder:data/train")
        return _load_imagefolder(Path(path).expanduser(), split, image_size, classes, least_side)
    if name.startswith(PYTHON_PREFIX):
        raise DataError(f"{name} names data that was given as Python objects to policysearch.search(); it cannot "
                        "be loaded again by name - pass the same data to policysearch.search() again")
    if name not in ("digits", "cifar10", "cifar100", "svhn"):
        raise DataError(f"unknown data set {name!r}; known names: {', '.join(DATASET_NAMES)}")
    if split == "val":
        raise DataError(f"{name} has no 'val' split; use 'train' (the search makes its own folds) or 'test'")
    if name == "digits":
        data = _load_digits(split, image_size or max(DIGITS_SIDE, least_side))
        if image_size is None and least_side > DIGITS_SIDE:
            note = (f"{data.name}: {len(data)} images resized to {least_side}x{least_side} from 8x8 (the smallest side "
                    "the model is built for; pass --image-size (image_size= in Python) to choose)")
            data = ImageData(data.images, data.labels, data.classes, data.name, (note,))
    else:
        data = _load_torchvision(name, split, root, download)
    if image_size is not None and data.images.shape[-2:] != (image_size, image_size):
        require_memory(len(data), data.images.shape[1], image_size, data.name, given=False)
        h, w = data.images.shape[-2:]
        note = (f"{data.name}: {len(data)} images resized to {image_size}x{image_size} from {w}x{h} (as --image-size "
                "asks; image_size= in Python)")
        data = ImageData(resize_images(data.images, image_size), data.labels, data.classes, data.name, (note,))
    stored = {root.resolve(), (root / "svhn").resolve()}  # the built-in's own files may lie in ./svhn
    if Path(name).is_dir() and Path(name).resolve() not in stored:  # another folder of that name: said
        note = (f"{name}: the built-in {name} data set, not the folder ./{name} here (give ./{name} or "
                f"imagefolder:{name} for the folder)")
        data = ImageData(data.images, data.labels, data.classes, data.name, (*data.notes, note))
    return data


def _load_digits(split: str, size: int) -> ImageData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    raw = torch.from_numpy(bunch.images.astype(np.float32))  # [N, 8, 8], values 0..16
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    images = (raw * (255.0 / 16.0)).round_().clamp_(0, 255).to(torch.uint8).unsqueeze(1)
    require_memory(len(images), 1, size, "digits", given=False)
    images = resize_images(images, size)
    test_idx = _stratified_pick(labels.numpy(), DIGITS_TEST_FRACTION, SPLIT_SEED)
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_idx] = True
    keep = np.flatnonzero(is_test if split == "test" else ~is_test)
    classes = tuple(str(c) for c in bunch.target_names)
    return ImageData(images[keep], labels[keep], classes, f"digits/{split}")


def _stratified_pick(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a seeded per-class pick of `fraction` of each class (at least 1, at most n-1)."""
    rng = np.random.default_rng(seed)
    picked = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if len(members) < 2:
            continue  # a single example stays on the training side
        count = min(max(1, round(fraction * len(members))), len(members) - 1)
        picked.append(rng.permutation(members)[:count])
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


_TORCHVISION_FILES = {
    "cifar10": "cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)",
    "cifar100": "cifar-100-python/ (train, test, meta)",
    "svhn": "svhn/train_32x32.mat and svhn/test_32x32.mat",
}


def _load_torchvision(name: str, split: str, root: Path, download: bool) -> ImageData:
    import torchvision.datasets as tvd

    expected = f"{root / _TORCHVISION_FILES[name]}"
    hint = "run again with --download (download=True) while online, or place the files there"
    target = root / "svhn" if name == "svhn" else root
    missing = [folder for folder in (target, *target.parents) if not folder.exists()]  # a download makes these
    try:
        if name == "svhn":
            ds = tvd.SVHN(str(root / "svhn"), split=split, download=download)
            images = torch.from_numpy(np.ascontiguousarray(ds.data))  # already [N, 3, 32, 32]
            labels = torch.from_numpy(np.asarray(ds.labels, dtype=np.int64))
            classes = tuple(str(i) for i in range(10))
        else:
            cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
            ds = cls(str(root), train=(split == "train"), download=download)
            images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
            labels = torch.as_tensor(ds.targets, dtype=torch.int64)
            classes = tuple(ds.classes)
    except (RuntimeError, OSError) as exc:  # torchvision: RuntimeError when missing; OSError/URLError offline
        if not download:  # torchvision's own text ("... You can use download=True ...") would repeat the hint
            raise DataError(f"{name} {split} files are missing: expected {expected}; {hint}") from exc
        reason = " ".join(str(exc).split())  # why the download failed, on one line
        _remove_empty(missing)
        raise DataError(f"{name} {split} files could not be downloaded: expected {expected}; {hint} ({reason})") from exc
    return ImageData(images, labels, classes, f"{name}/{split}")


def _remove_empty(folders: list[Path]) -> None:
    """Remove those of ``folders`` (deepest first) that exist and are empty: what a failed download made."""
    for folder in folders:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


# ------------------------------------------------------------------------------------------ imagefolder

# Folder names (compared in lower case) that mark a split layout, and the split each one holds.
SPLIT_FOLDERS: dict[str, str] = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
# Without --image-size, images are resized to the median shorter side of the training images, at most this.
MAX_AUTO_SIDE = 64  # 4x the pixels of the 32x32 the search's defaults and cost figures are for
# Transparent pixels are composited onto this grey level (black: the same fill as the baseline's pad-crop).
ALPHA_BACKGROUND = 0
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class _Header:
    """What a file's header says without decoding it: displayed width and height, and whether it is grey."""

    width: int
    height: int
    grey: bool


CLASSES_MARK = "?classes="


def _folder_and_classes(spec: str) -> tuple[str, tuple[str, ...] | None]:
    """'PATH?classes=A,B' -> ('PATH', ('A', 'B')); 'PATH' -> ('PATH', None)."""
    path, mark, names = spec.rpartition(CLASSES_MARK)
    if not mark:
        return spec, None
    classes = tuple(dict.fromkeys(n.strip() for n in names.split(",") if n.strip()))
    if not classes:
        raise DataError(f"imagefolder:{spec}: '{CLASSES_MARK}' needs class folder names, e.g. {CLASSES_MARK}cat,dog")
    return path, classes


def _load_imagefolder(path: Path, split: str, image_size: int | None,
                      selected: tuple[str, ...] | None = None, least_side: int = 1) -> ImageData:
    """Load one split of an image folder, of the ``selected`` classes only when given (rules in
    `load_dataset`'s docstring)."""
    if not path.is_dir():
        raise DataError(f"imagefolder path {str(path)!r} is not a folder; give a folder of class subfolders")
    layout = _folder_layout(path)
    if split not in layout:
        if split == "test":
            raise DataError(
                f"{str(path)!r} has no test split: without a test/ folder every image is training data for the "
                f"search; to benchmark, put held-out images in {str(path / 'test')!r} (one subfolder per class) "
                f"and the rest in {str(path / 'train')!r}"
            )
        raise DataError(f"{str(path)!r} has no {split} split; add a val/ folder of class subfolders next to train/")
    name = f"imagefolder:{layout[split]}"  # the folder the images come from (PATH itself without split folders)
    every = _class_names(layout["train"])
    classes = every
    if selected is not None:
        unknown = [c for c in selected if c not in every]
        if unknown:
            raise DataError(f"{str(layout['train'])!r} has no class folder {', '.join(map(repr, unknown))}; its "
                            f"classes are {', '.join(every)}")
        classes = tuple(c for c in every if c in selected)
        name += f"{CLASSES_MARK}{','.join(classes)}"
    reached: Reached = {}  # shared by the splits: a file linked from two splits would be in both
    train_files, train_labels, train_others = _list_images(layout["train"], classes, training=True, known=every,
                                                           reached=reached)
    headers = [_read_header(f) for f in train_files]
    channels = 1 if all(h.grey for h in headers) else 3
    size, why = _target_size(headers, image_size, least_side)
    if split == "train":
        files, labels, others = train_files, train_labels, train_others
    else:
        files, labels, others = _list_images(layout[split], classes, training=False, known=every,
                                             reached=reached)
        if not files:
            raise DataError(f"{str(layout[split])!r} has no images; expected image files "
                            f"({', '.join(sorted(IMAGE_SUFFIXES))}) in its class subfolders")
    require_memory(len(files), channels, size, name)
    images = torch.empty((len(files), channels, size, size), dtype=torch.uint8)
    originals: list[tuple[int, int]] = []
    converted = 0
    for i, f in enumerate(files):
        array, original, was_grey = _read_image(f, size, channels)
        images[i] = torch.from_numpy(array)
        originals.append(original)
        converted += was_grey != (channels == 1)
    notes = resize_note(name, originals, size, why)
    if others:
        shown = ", ".join(repr(str(p.relative_to(layout[split]))) for p in others[:2])
        notes += (f"{name}: {len(others)} file{'s' if len(others) != 1 else ''} skipped, not of an image type "
                  f"({shown}{' ...' if len(others) > 2 else ''}; images end in {', '.join(sorted(IMAGE_SUFFIXES))})",)
    present = set(labels) if split != "train" else set(range(len(classes)))
    absent = [cls for label, cls in enumerate(classes) if label not in present]
    if absent:  # allowed in a held-out split (a small test set may lack a class), but its error covers fewer
        notes += (f"{name}: no images of {len(absent)} of the {len(classes)} classes ({', '.join(absent[:5])}"
                  f"{' ...' if len(absent) > 5 else ''}); its error covers the other {len(classes) - len(absent)}",)
    if converted:
        notes += (f"{name}: {converted} {'colour' if channels == 1 else 'grey'} image"
                  f"{'s' if converted != 1 else ''} converted to {'grey' if channels == 1 else 'RGB'}, because "
                  f"the training images are {'all grey' if channels == 1 else 'not all grey'}",)
    return ImageData(images, torch.tensor(labels, dtype=torch.int64), classes, name, notes)


# A container's or job's memory limit, use and statistics (cgroup v2, then v1), which /proc/meminfo does not
# show; the use counts file cache, of which the inactive part can be dropped (what Kubernetes subtracts too).
CGROUP_MEMORY = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.stat",
                  "inactive_file"),
                 ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes",
                  "/sys/fs/cgroup/memory/memory.stat", "total_inactive_file"))


def available_memory() -> int | None:
    """Bytes of memory this process can get now without swapping or being killed: the least of Linux's
    MemAvailable (free memory and the cache it can drop) and what its container's limit leaves; the free
    pages elsewhere; None where the system says nothing."""
    bounds = []
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            bounds += [int(line.split()[1]) * 1024 for line in handle if line.startswith("MemAvailable:")]  # kB
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file, stat_file, cache_key in CGROUP_MEMORY:
        try:
            limit, usage = (Path(f).read_text(encoding="ascii").strip() for f in (limit_file, usage_file))
        except OSError:
            continue
        try:
            stats = dict(line.split() for line in Path(stat_file).read_text(encoding="ascii").splitlines())
            cache = int(stats.get(cache_key, 0))
        except (OSError, ValueError):
            cache = 0
        if limit.isdigit() and usage.isdigit():  # v2 says "max" without a limit
            bounds.append(max(int(limit) - max(int(usage) - cache, 0), 0))
        break
    if not bounds:
        try:
            bounds.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return min(bounds)


def require_memory(count: int, channels: int, size: int, name: str, given: bool = True) -> None:
    """Refuse, before reading (or resizing), images that would take more than half the free memory as uint8:
    the training needs more again, and running out of memory ends the process without a word. ``given``: the
    user chose the images, so fewer of them is advice too (a built-in set is loaded whole)."""
    needed, free = count * channels * size * size, available_memory()
    if free is not None and needed > free // 2:
        raise DataError(lambda say: f"{name}: {count} images of {channels}x{size}x{size} take {needed / 2**30:.2f} "
                        f"GiB in memory, more than half of the {free / 2**30:.2f} GiB free here; choose a smaller "
                        f"{say('image_size')}" + (" or give fewer images" if given else ""))


def _folder_layout(path: Path) -> dict[str, Path]:
    """{split: folder of class subfolders}: split folders when there are any, else the folder itself as train."""
    subdirs = _subfolders(path)
    marked = [p for p in subdirs if p.name.lower() in SPLIT_FOLDERS]
    if not marked:
        _refuse_loose_images(path)
        return {"train": path}
    others = [p.name for p in subdirs if p not in marked]
    if others:
        raise DataError(
            f"{str(path)!r} mixes split folders ({', '.join(p.name for p in marked)}) with other folders "
            f"({', '.join(others[:5])}{', ...' if len(others) > 5 else ''}); put every class folder inside "
            f"train/ (and val/, test/), or rename the folders if they are classes"
        )
    _refuse_loose_images(path)
    layout: dict[str, Path] = {}
    for folder in marked:
        split = SPLIT_FOLDERS[folder.name.lower()]
        if split in layout:
            raise DataError(f"{str(path)!r} has both {layout[split].name}/ and {folder.name}/ for the {split} "
                            f"split; keep one")
        layout[split] = folder
    if "train" not in layout:
        raise DataError(f"{str(path)!r} has {', '.join(p.name + '/' for p in marked)} but no train/ folder; "
                        f"the search trains on train/ (one subfolder per class)")
    return layout


def _subfolders(folder: Path) -> list[Path]:
    """The class (or split) folders in ``folder``, hidden ones skipped; a link to nothing is an error, since
    it may be a class's folder on a drive not mounted, which would otherwise go missing without a word."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    for path in entries:
        if _dangling(path):
            raise _dangling_error(path)
    return [p for p in entries if p.is_dir()]


def _dangling_error(path: Path) -> DataError:
    return DataError(f"{str(path)!r} is a link that leads to nothing ({os.readlink(path)!r}: a drive not mounted, "
                     "or a loop of links); fix the link or remove it")


def _refuse_loose_images(folder: Path) -> None:
    """Images lying next to class (or split) folders belong to no class; say so rather than skip them."""
    loose = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if loose:
        raise DataError(f"{str(folder)!r} has {len(loose)} image file{'s' if len(loose) != 1 else ''} outside "
                        f"class subfolders (e.g. {loose[0]!r}); move each into its class's subfolder")


def _class_names(folder: Path) -> tuple[str, ...]:
    classes = tuple(p.name for p in _subfolders(folder))
    if not classes:
        raise DataError(f"{str(folder)!r} has no class subfolders; put each class's images in its own subfolder")
    return classes


# The image files an image folder's listing reached, by real path: (the split folder and label it was
# listed for, the path it was listed as). Shared by the splits: a file under two of them is refused.
Reached = dict[Path, tuple[tuple[Path, int], Path]]


def _list_images(folder: Path, classes: tuple[str, ...], training: bool, known: tuple[str, ...] | None = None,
                 reached: Reached | None = None) -> tuple[list[Path], list[int], list[Path]]:
    """Image files under each of ``classes``' subfolders (recursively, hidden entries skipped), their labels,
    and the other files there, which are skipped (a note names them: a file of another image format would
    otherwise go missing without a word).

    A training class needs two images (one to fit a child model, one to score it); a val/test folder may
    lack a class but may not add one outside ``known`` (default: ``classes``; the training folder's classes
    when only some are selected). One file reached twice through links counts once in its class, and is an
    error in two classes or in two splits (``reached`` holds the other splits' files).
    """
    _refuse_loose_images(folder)
    unknown = sorted(set(_class_names(folder)) - set(known or classes))
    if unknown:
        raise DataError(f"{str(folder)!r} has classes not in the training folder: {', '.join(unknown)}")
    reached = {} if reached is None else reached
    files: list[Path] = []
    labels: list[int] = []
    others: list[Path] = []
    for label, cls in enumerate(classes):
        sub = folder / cls
        if not sub.is_dir():
            continue
        found, skipped = [], []
        for path, real in _visible_files(sub):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append(path)
                continue
            if _dangling(path):  # a link to nothing: read, to be named as unreadable, not compared
                found.append(path)
                continue
            owner, first = reached.setdefault(real, ((folder, label), path))
            if owner != (folder, label):
                where = "classes" if owner[0] == folder else "splits (training and held-out images)"
                raise DataError(f"{str(path)!r} and {str(first)!r} are one file ({str(real)!r}, reached through a "
                                f"link): its image would be in two {where}; copy the images instead, or remove the "
                                "link")
            if first == path:  # else the same file reached again in this class: it counts once
                found.append(path)
        if training and len(found) < 2:
            kinds = ", ".join(sorted({p.suffix.lower() or p.name for p in skipped})[:5])
            beside = (f" (beside {len(skipped)} file{'s' if len(skipped) != 1 else ''} of types it does not read: "
                      f"{kinds}; it reads {', '.join(sorted(IMAGE_SUFFIXES))})" if skipped else "")
            raise DataError(
                f"class folder {str(sub)!r} has {'no images' if not found else 'only one image'}{beside}; every class "
                f"needs at least 2 (one to train a child model, one to score it) - add images or remove the folder"
            )
        files += found
        others += skipped
        labels += [label] * len(found)
    return files, labels, others


def _visible_files(folder: Path) -> list[tuple[Path, Path]]:
    """The files under the class folder ``folder`` with their real paths, sorted, hidden entries skipped.
    Linked folders are followed, as torchvision's ImageFolder does, each real folder once; a link to a
    folder that holds ``folder`` (a loop) is an error."""
    top = folder.resolve()
    real_of = {os.fspath(folder): top}  # each walked folder's real path (a link's target, else its parent's)
    seen = {top}
    files = []
    for here, dirs, names in os.walk(folder, followlinks=True):
        kept = []
        for name in sorted(dirs):
            link = Path(here) / name
            real = link.resolve() if link.is_symlink() else real_of[here] / name
            if name.startswith(".") or real in seen:
                continue
            if top.is_relative_to(real):
                raise DataError(f"{str(link)!r} links to {str(real)!r}, a folder that holds this class's folder (a "
                                "loop); remove the link")
            seen.add(real)
            real_of[os.path.join(here, name)] = real
            kept.append(name)
        dirs[:] = kept
        for name in names:
            path = Path(here) / name
            if not name.startswith(".") and (path.is_file() or _dangling(path)):
                files.append((path, path.resolve() if path.is_symlink() else real_of[here] / name))
    return sorted(files)


def _dangling(path: Path) -> bool:
    """A symbolic link to nothing: listed like a file, so that reading it names it rather than dropping it."""
    return path.is_symlink() and not path.exists()


def unreadable(what: str, exc: BaseException) -> DataError:
    """The error for an image Pillow could not decode; ``what`` names it (``image 'PATH'``, ``data item 3``)."""
    reason = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", " ".join(str(exc).split())) or type(exc).__name__
    return DataError(f"cannot read {what}: {reason}; remove or replace the file")


def _unreadable(path: Path, exc: BaseException) -> DataError:
    if _dangling(path):  # listed so that it is named: as a link, not as a file that cannot be read
        return _dangling_error(path)
    return unreadable(f"image {str(path)!r}", exc)


# What Pillow raises for a damaged, truncated, unsupported or oversized file (with Image.DecompressionBombError).
PIL_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, SyntaxError, EOFError)


def _read_header(path: Path) -> _Header:
    from PIL import Image

    try:
        with Image.open(path) as img:
            width, height = img.size
            if img.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):  # quarter turns swap the sides
                width, height = height, width
            return _Header(width, height, is_grey(img))
    except (*PIL_ERRORS, Image.DecompressionBombError) as exc:
        raise _unreadable(path, exc) from exc


def is_grey(img: PILImage) -> bool:
    """Whether a PIL image holds grey values only (grey modes, or a palette of greys)."""
    if img.mode in _GREY_MODES:
        return True
    if img.mode in ("P", "PA"):
        palette = np.asarray(img.getpalette("RGB") or [0, 0, 0], dtype=np.uint8).reshape(-1, 3)
        return bool((palette == palette[:, :1]).all())
    return False


def _target_size(headers: list[_Header], image_size: int | None, least_side: int = 1) -> tuple[int, str]:
    """The square side every image is resized to, and why (for the notice)."""
    return target_side([min(h.width, h.height) for h in headers], image_size, least_side)


def target_side(shorter_sides: Sequence[int], image_size: int | None, least_side: int = 1) -> tuple[int, str]:
    """The square side S every image becomes, and why (for the notice): ``image_size`` when given, else the
    median of the images' shorter sides capped at MAX_AUTO_SIDE (the rule of image folders), and at least
    ``least_side``, the smallest side the model is built for."""
    if image_size is not None:
        return image_size, "as --image-size asks; image_size= in Python"
    median = int(statistics.median_low(shorter_sides))
    if median < least_side:
        return least_side, (f"the smallest side the model is built for; the training images' median shorter side "
                            f"is {median} px; pass --image-size (image_size= in Python) to choose")
    if median > MAX_AUTO_SIDE:
        return MAX_AUTO_SIDE, (f"the training images' median shorter side is {median} px, capped at "
                               f"{MAX_AUTO_SIDE}; pass --image-size (image_size= in Python) to choose")
    return median, "the training images' median shorter side; pass --image-size (image_size= in Python) to choose"


def _read_image(path: Path, size: int, channels: int) -> tuple[np.ndarray, tuple[int, int], bool]:
    """One file as uint8 [channels, size, size], its displayed (width, height), and whether it was grey.

    EXIF orientation is applied; 16-bit intensities are scaled to 8 bits; transparency is composited onto
    ALPHA_BACKGROUND; the centre square (side = the shorter side) is resized to size x size.
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as raw:
            original = raw.size
            if raw.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
                original = original[::-1]
            if raw.format == "JPEG":
                raw.draft(raw.mode, (size, size))  # decode at a reduced scale that stays >= size
            img = ImageOps.exif_transpose(raw)
            grey = is_grey(img)
            img = pil_to_8bit(img, grey, f"image {str(path)!r}")
            if channels == 1 and img.mode != "L":
                img = img.convert("L")
            elif channels == 3 and img.mode != "RGB":
                img = img.convert("RGB")
            w, h = img.size
            if (w, h) != (size, size):
                side = min(w, h)
                left, top = (w - side) // 2, (h - side) // 2
                if w != h:  # crop first: a box given to resize would let the filter read outside it
                    img = img.crop((left, top, left + side, top + side))
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            array = np.array(img, dtype=np.uint8)  # a writable copy for torch.from_numpy
    except (*PIL_ERRORS, Image.DecompressionBombError) as exc:
        if isinstance(exc, DataError):
            raise
        raise _unreadable(path, exc) from exc
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return np.ascontiguousarray(array), original, grey


def pil_to_8bit(img: PILImage, grey: bool, where: str, made_in_memory: bool = False) -> PILImage:
    """An 8-bit 'L' (grey) or 'RGB' image: 16-bit scaled by 255/65535, alpha composited, other modes converted.
    A mode 'I' (32-bit integer) image ``made_in_memory`` that holds only 0..255 is read as 8-bit, as an integer
    array is: ``fromarray`` of an int32 array and ``convert('I')`` make it from 8-bit pixels. A file's is
    always scaled, so that every image of a data set of 16-bit files is scaled alike, dark or not. ``where``
    names the image in an error (``image 'PATH'``, ``data item 3``)."""
    from PIL import Image

    if img.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(img)
        if values.size and (int(values.min()) < 0 or int(values.max()) > 65535):
            raise DataError(f"{where} has {img.mode} values outside 0..65535 "
                            f"({int(values.min())}..{int(values.max())}); save it as 8- or 16-bit")
        if made_in_memory and img.mode == "I" and int(values.max(initial=0)) <= 255:
            return Image.fromarray(values.astype(np.uint8), "L")
        scaled = (values.astype(np.uint32) * 255 + 32767) // 65535
        return Image.fromarray(scaled.astype(np.uint8), "L")
    if img.mode == "F":
        values = np.asarray(img, dtype=np.float32)
        if not np.isfinite(values).all() or values.min(initial=0.0) < 0.0 or values.max(initial=0.0) > 1.0:
            raise DataError(f"{where} holds floating-point values outside 0..1; save it as 8- or 16-bit")
        return Image.fromarray(np.rint(values * 255.0).astype(np.uint8), "L")
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        with_alpha = np.asarray(img.convert("LA" if grey else "RGBA"), dtype=np.uint16)
        colour, alpha = with_alpha[..., :-1], with_alpha[..., -1:]
        blended = (colour * alpha + ALPHA_BACKGROUND * (255 - alpha) + 127) // 255
        out = blended.astype(np.uint8)
        return Image.fromarray(out[..., 0], "L") if grey else Image.fromarray(out, "RGB")
    return img.convert("L" if grey else "RGB")


def resize_note(name: str, originals: list[tuple[int, int]], size: int, why: str) -> tuple[str, ...]:
    """One line naming the original sizes and the target when any image was resized; () when none was."""
    counts = Counter(o for o in originals if o != (size, size))
    if not counts:
        return ()
    shown = ", ".join(f"{w}x{h} ({n})" for (w, h), n in counts.most_common(3))
    more = f" and {counted(len(counts) - 3, 'other size')}" if len(counts) > 3 else ""
    crop = (" (non-square: the centre square cropped, then resized)"
            if any(w != h for w, h in counts) else "")
    resized = sum(counts.values())
    return (f"{name}: {resized} of all its {len(originals)} images resized to {size}x{size} ({why}) from {shown}{more}"
            f"{crop}",)

# --------------------------------------------------------------------------------- subsets and splits


def stratified_subset(data: ImageData, size: int, seed: int) -> ImageData:
    """A seeded class-proportional subset of `size` images (the papers' reduced training sets).

    Each class gets its share of `size` rounded by largest remainder, so the class proportions of the
    full set are kept as closely as whole images allow. The chosen images keep their original order.
    """
    if size > len(data):
        raise DataError(lambda say: f"{say('train_size', size)} is larger than the {len(data)} images of {data.name}; "
                                    f"give at most {len(data)}")
    return data.subset(stratified_indices(data.labels.cpu().numpy(), size, seed, names=data.classes))


def stratified_indices(labels: np.ndarray, size: int, seed: int, names: Sequence[str] | None = None) -> np.ndarray:
    """The sorted indices :func:`stratified_subset` picks from images with these `labels`; a size that would
    leave a class without an image is refused (``names``: the classes', for the message)."""
    if size < 1:
        raise DataError(lambda say: f"{say('train_size')} must be at least 1, got {size}")
    if size > len(labels):
        raise DataError(lambda say: f"{say('train_size', size)} is larger than the {len(labels)} images")
    classes, counts = np.unique(labels, return_counts=True)
    alloc = _class_shares(counts, size)
    if not alloc.all():
        lost = classes[alloc == 0][0]
        enough = math.ceil(len(labels) / counts.min())  # every class's share is then at least one image
        raise DataError(lambda say: (
            f"{say('train_size', size)} leaves {named_class(lost, names)} ({counts[classes == lost][0]} of the "
            f"{len(labels)} images) without an image in the class-proportional subset; every size from "
            f"{say('train_size', enough)} keeps one of each class"))
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:n] for c, n in zip(classes, alloc)]
    return np.sort(np.concatenate(chosen))


def _class_shares(counts: np.ndarray, size: int) -> np.ndarray:
    """Each class's whole share of `size` images, in proportion to its `counts`, by largest remainder."""
    share = counts * (size / counts.sum())
    alloc = np.floor(share).astype(np.int64)
    rest = size - int(alloc.sum())
    if rest:
        order = np.lexsort((-counts, -(share - alloc)))  # largest remainder, ties to larger classes
        alloc[order[:rest]] += 1
    return alloc


def named_class(label: object, names: Sequence[str] | None) -> str:
    """``class 2 ('ship')``, or ``class 2`` where the classes have no names."""
    name = names[int(label)] if names is not None and 0 <= int(label) < len(names) else str(label)
    return f"class {label}" + (f" ({name!r})" if name != str(label) else "")


# ------------------------------------------------------------------------------ baseline augmentation


# The image size the table's pad_crop refers to; other sizes scale it.
_BASELINE_SIZE = {"cifar10": 32, "cifar100": 32, "svhn": 32, "digits": 16, "imagefolder": 32, "python": 32}

BASELINES: dict[str, Baseline] = {
    "cifar10": Baseline(pad_crop=4, hflip=True),
    "cifar100": Baseline(pad_crop=4, hflip=True),
    "svhn": Baseline(pad_crop=4, hflip=False),  # Fast AutoAugment trained SVHN without flips
    "digits": Baseline(pad_crop=1, hflip=False),  # a flipped digit is another (or no) digit
    "imagefolder": Baseline(pad_crop=4, hflip=False),  # meaning of a flip unknown: users opt in
    "python": Baseline(pad_crop=4, hflip=False),  # data given in Python: as an image folder
}


def baseline_for(name: str, image_size: int | None = None) -> Baseline:
    """The baseline augmentation of a data set; pad_crop scales with `image_size` if given."""
    key = dataset_key(name)
    if key not in BASELINES:
        raise DataError(f"no baseline augmentation for {name!r}; known: {', '.join(BASELINES)}")
    base = BASELINES[key]
    ref = _BASELINE_SIZE[key]
    if image_size is None or image_size == ref or base.pad_crop == 0:
        return base
    return Baseline(pad_crop=max(1, round(base.pad_crop * image_size / ref)), hflip=base.hflip)


# ------------------------------------------------------------------------------------- normalisation

# Per-channel mean/std of the training images in [0, 1]. digits: measured on all 1797 images at 16x16.
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "digits": ((0.3053,), (0.3187,)),
}


def compute_mean_std(data: ImageData) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of a data set's images scaled to [0, 1] (for a user's own images).

    Exact integer sums over chunks of images, so memory stays bounded and no float copy of the set is made.
    """
    if len(data) == 0:
        raise DataError(f"{data.name} is empty; cannot compute its mean and std")
    n_img, channels, h, w = data.images.shape
    per_chunk = max(1, (1 << 22) // max(1, channels * h * w))  # about 4M values (32 MiB as int64) at a time
    total = [0] * channels
    squares = [0] * channels
    for chunk in data.images.split(per_chunk):
        values = chunk.to(torch.int64)
        sums = values.sum(dim=(0, 2, 3))
        sq = values.mul_(values).sum(dim=(0, 2, 3))
        for c in range(channels):
            total[c] += int(sums[c])
            squares[c] += int(sq[c])
    n = n_img * h * w
    mean = tuple(t / (n * 255.0) for t in total)
    # sample variance from exact integers: (n * sum(x^2) - sum(x)^2) / (n (n - 1)), in [0, 255] units
    var = [(n * q - t * t) / (n * max(n - 1, 1)) for t, q in zip(total, squares)]
    std = tuple(max(math.sqrt(v) / 255.0, 1e-3) for v in var)
    return mean, std


def normalization_for(name: str, data: ImageData | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of a data set from the table; an image folder's are computed from `data`."""
    key = dataset_key(name)
    if key in NORMALIZATION:
        return NORMALIZATION[key]
    if data is None:
        raise DataError(f"no stored mean/std for {name!r}; pass its training data to compute them")
    return compute_mean_std(data)


def normalize(batch: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 [B, C, H, W] -> float32 (x / 255 - mean) / std per channel, on the batch's device."""
    c = batch.shape[1]
    if len(mean) != c or len(std) != c:
        raise ValueError(f"mean/std have {len(mean)}/{len(std)} values but the batch has {c} channels")
    m = torch.tensor(mean, dtype=torch.float32, device=batch.device).view(1, c, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=batch.device).view(1, c, 1, 1)
    return (batch.float() / 255.0 - m) / s
