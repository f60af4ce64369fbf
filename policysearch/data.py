"""Data sets, reduced training sets, K-fold D_M/D_A splits and the baseline augmentation.

Everything here keeps images as uint8 tensors [N, C, H, W] in memory: the data sets this product is
for are small, and a policy transform works on uint8 batches, so there is one representation from
loading to the training loop. Ray is not imported here.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from policysearch.policy import Baseline
from policysearch.transforms import BaselineAugment

__all__ = [
    "BASELINES",
    "DATASET_NAMES",
    "NORMALIZATION",
    "Baseline",
    "BaselineAugment",
    "DataError",
    "ImageData",
    "baseline_for",
    "compute_mean_std",
    "dataset_key",
    "load_dataset",
    "make_splits",
    "normalization_for",
    "normalize",
    "resize_images",
    "stratified_subset",
]

DATASET_NAMES: tuple[str, ...] = ("digits", "cifar10", "cifar100", "svhn", "imagefolder:PATH")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"})
DIGITS_TEST_FRACTION = 0.4
IMAGEFOLDER_TEST_FRACTION = 0.2
SPLIT_SEED = 0


class DataError(ValueError):
    """A data problem the user can fix; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class ImageData:
    """A labelled image set held in memory: uint8 images [N, C, H, W] (C is 1 or 3), int64 labels [N]."""

    images: Tensor
    labels: Tensor
    classes: tuple[str, ...]
    name: str

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
        return ImageData(self.images[idx], self.labels[idx], self.classes, self.name)


# --------------------------------------------------------------------------------------------- loading


def dataset_key(name: str) -> str:
    """The table key of a data set name: 'digits/train' -> 'digits', 'imagefolder:/x' -> 'imagefolder'."""
    if name.startswith("imagefolder:") or name == "imagefolder":
        return "imagefolder"
    return name.split("/", 1)[0]


def resize_images(images: Tensor, size: int) -> Tensor:
    """Resize uint8 images [N, C, H, W] to size x size with bilinear antialiased interpolation."""
    if size < 1:
        raise DataError(f"image_size must be a positive number of pixels, got {size}")
    if images.shape[-2:] == (size, size):
        return images
    if images.shape[0] == 0:
        return images.new_zeros((0, images.shape[1], size, size))
    out = []
    for chunk in images.split(4096):  # bounded float memory on large sets
        x = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def load_dataset(
    name: str,
    split: str = "train",
    data_root: str | Path = "data",
    download: bool = False,
    image_size: int | None = None,
) -> ImageData:
    """Load a data set split into memory as uint8 images.

    Names: 'digits' (scikit-learn's bundled 8x8 digits, upsampled to 16x16, with a fixed stratified
    60/40 train/test split since it has no official one), 'cifar10', 'cifar100', 'svhn' (files under
    `data_root`, fetched only with `download=True`) and 'imagefolder:PATH' (class subfolders; PATH/train and
    PATH/test are used when present, otherwise a fixed stratified 80/20 split). `image_size` resizes any set.
    """
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    if image_size is not None and image_size < 1:
        raise DataError(f"image_size must be a positive number of pixels, got {image_size}")
    root = Path(data_root)
    if name == "digits":
        data = _load_digits(split, image_size or 16)
    elif name in ("cifar10", "cifar100", "svhn"):
        data = _load_torchvision(name, split, root, download)
    elif name.startswith("imagefolder:"):
        data = _load_imagefolder(Path(name[len("imagefolder:") :]).expanduser(), split, image_size or 32)
    else:
        raise DataError(f"unknown data set {name!r}; known names: {', '.join(DATASET_NAMES)}")
    if image_size is not None and data.images.shape[-2:] != (image_size, image_size):
        data = ImageData(resize_images(data.images, image_size), data.labels, data.classes, data.name)
    return data


def _load_digits(split: str, size: int) -> ImageData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    raw = torch.from_numpy(bunch.images.astype(np.float32))  # [N, 8, 8], values 0..16
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    images = (raw * (255.0 / 16.0)).round_().clamp_(0, 255).to(torch.uint8).unsqueeze(1)
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
        what = "could not be downloaded" if download else "are missing"
        reason = " ".join(str(exc).split())  # keep the message on one line
        raise DataError(f"{name} {split} files {what}: expected {expected}; {hint} ({reason})") from exc
    return ImageData(images, labels, classes, f"{name}/{split}")


def _load_imagefolder(path: Path, split: str, size: int) -> ImageData:
    if not path.is_dir():
        raise DataError(f"imagefolder path {str(path)!r} is not a folder; give a folder of class subfolders")
    if (path / "train").is_dir() and (path / "test").is_dir():
        classes = _class_names(path / "train")
        files, labels = _list_images(path / split, classes)
        name = f"imagefolder:{path}/{split}"
    else:
        classes = _class_names(path)
        files, labels = _list_images(path, classes)
        test_idx = _stratified_pick(np.asarray(labels), IMAGEFOLDER_TEST_FRACTION, SPLIT_SEED)
        is_test = np.zeros(len(files), dtype=bool)
        is_test[test_idx] = True
        keep = np.flatnonzero(is_test if split == "test" else ~is_test)
        files = [files[i] for i in keep]
        labels = [labels[i] for i in keep]
        name = f"imagefolder:{path}/{split}"
    if not files:
        raise DataError(f"{name} has no images; expected image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    images = torch.stack([_read_rgb(f, size) for f in files])
    return ImageData(images, torch.tensor(labels, dtype=torch.int64), classes, name)


def _class_names(folder: Path) -> tuple[str, ...]:
    classes = tuple(sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if not classes:
        raise DataError(f"{str(folder)!r} has no class subfolders; put each class's images in its own subfolder")
    return classes


def _list_images(folder: Path, classes: tuple[str, ...]) -> tuple[list[Path], list[int]]:
    if not folder.is_dir():
        raise DataError(f"{str(folder)!r} is missing; expected a folder of class subfolders")
    unknown = sorted(set(_class_names(folder)) - set(classes))
    if unknown:
        raise DataError(f"{str(folder)!r} has classes not in the training folder: {', '.join(unknown)}")
    files: list[Path] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        sub = folder / cls
        if not sub.is_dir():
            continue
        found = sorted(p for p in sub.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        files += found
        labels += [label] * len(found)
    return files, labels


def _read_rgb(path: Path, size: int) -> Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image {str(path)!r}: {exc}; remove or replace the file") from exc
    return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


# --------------------------------------------------------------------------------- subsets and splits


def stratified_subset(data: ImageData, size: int, seed: int) -> ImageData:
    """A seeded class-proportional subset of `size` images (the papers' reduced training sets).

    Each class gets its share of `size` rounded by largest remainder, so the class proportions of the
    full set are kept as closely as whole images allow. The chosen images keep their original order.
    """
    if size < 1:
        raise DataError(f"--train-size must be at least 1, got {size}")
    if size > len(data):
        raise DataError(f"--train-size {size} is larger than the {len(data)} images of {data.name}")
    labels = data.labels.cpu().numpy()
    classes, counts = np.unique(labels, return_counts=True)
    share = counts * (size / len(labels))
    alloc = np.floor(share).astype(np.int64)
    rest = size - int(alloc.sum())
    if rest:
        order = np.lexsort((-counts, -(share - alloc)))  # largest remainder, ties to larger classes
        alloc[order[:rest]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:n] for c, n in zip(classes, alloc)]
    return data.subset(np.sort(np.concatenate(chosen)))


def make_splits(
    labels: Tensor | np.ndarray, k: int = 5, da_ratio: float = 0.4, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """K stratified shuffle splits of the training set into (D_M, D_A) index arrays.

    D_M trains a child model, D_A (a `da_ratio` share) scores candidate policies, as in Fast AutoAugment.
    Every class must be able to put at least one example on each side; otherwise a DataError names it.
    """
    from sklearn.model_selection import StratifiedShuffleSplit

    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise DataError(f"k (number of splits) must be an integer >= 1, got {k!r}")
    if not 0.0 < da_ratio < 1.0:
        raise DataError(f"da_ratio must lie strictly between 0 and 1, got {da_ratio}")
    y = labels.cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if y.ndim != 1:
        raise DataError(f"labels must be one-dimensional, got shape {y.shape}")
    n = len(y)
    n_a = math.ceil(round(da_ratio * n, 9))
    n_m = n - n_a
    if n_a < 1 or n_m < 1:
        raise DataError(f"{n} examples are too few to split with da_ratio={da_ratio}; use more data")
    # sklearn allocates D_M per class as about count * n_m / n (floor or ceil) and gives D_A the rest, so
    # a class needs count * n_m >= n and count * n_a >= n to land at least once on both sides.
    needed = math.ceil(n / min(n_m, n_a))
    classes, counts = np.unique(y, return_counts=True)
    for cls, count in zip(classes, counts):
        if count < max(2, needed):
            raise DataError(
                f"class {cls} has {count} example{'s' if count != 1 else ''}; with da_ratio={da_ratio} every "
                f"class needs at least {max(2, needed)} to appear in both D_M and D_A - add examples of it, "
                f"drop it, or change --da-ratio"
            )
    splitter = StratifiedShuffleSplit(n_splits=int(k), test_size=n_a, train_size=n_m, random_state=seed)
    splits = []
    for d_m, d_a in splitter.split(np.zeros(n), y):
        missing = set(classes) - set(y[d_a]) or set(classes) - set(y[d_m])
        if missing:  # guards the allocation argument above against sklearn changes
            raise DataError(f"classes {sorted(missing)} did not land on both sides of a split; add examples")
        splits.append((np.sort(d_m).astype(np.int64), np.sort(d_a).astype(np.int64)))
    return splits


# ------------------------------------------------------------------------------ baseline augmentation


# The image size the table's pad_crop refers to; other sizes scale it.
_BASELINE_SIZE = {"cifar10": 32, "cifar100": 32, "svhn": 32, "digits": 16, "imagefolder": 32}

BASELINES: dict[str, Baseline] = {
    "cifar10": Baseline(pad_crop=4, hflip=True),
    "cifar100": Baseline(pad_crop=4, hflip=True),
    "svhn": Baseline(pad_crop=4, hflip=False),  # Fast AutoAugment trained SVHN without flips
    "digits": Baseline(pad_crop=1, hflip=False),  # a flipped digit is another (or no) digit
    "imagefolder": Baseline(pad_crop=4, hflip=False),  # meaning of a flip unknown: users opt in
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
    """Per-channel mean and std of a data set's images scaled to [0, 1] (for a user's own images)."""
    if len(data) == 0:
        raise DataError(f"{data.name} is empty; cannot compute its mean and std")
    x = data.images.double().div_(255.0)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


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
