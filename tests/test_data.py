"""Tests for policysearch.data: loading, subsets, D_M/D_A splits, baseline augmentation, normalisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from policysearch.data import (
    BASELINES,
    Baseline,
    BaselineAugment,
    DataError,
    ImageData,
    baseline_for,
    load_dataset,
    make_splits,
    normalization_for,
    normalize,
    stratified_subset,
)


@pytest.fixture(scope="module")
def digits_train() -> ImageData:
    return load_dataset("digits", "train")


@pytest.fixture(scope="module")
def digits_test() -> ImageData:
    return load_dataset("digits", "test")


def _fingerprint(data: ImageData) -> int:
    return int(data.images.long().sum()) * 7 + int((data.labels * torch.arange(len(data))).sum())


# ----------------------------------------------------------------------------------------------- digits


def test_digits_loads_offline_with_expected_shape_and_range(digits_train: ImageData, digits_test: ImageData) -> None:
    assert digits_train.images.shape == (1078, 1, 16, 16)
    assert digits_test.images.shape == (719, 1, 16, 16)
    assert digits_train.images.dtype == torch.uint8 and digits_train.labels.dtype == torch.int64
    assert int(digits_train.images.min()) == 0 and int(digits_train.images.max()) == 255
    assert digits_train.num_classes == 10 and digits_train.classes == tuple("0123456789")
    assert len(digits_train) == 1078
    assert set(digits_test.labels.tolist()) == set(range(10))


def test_digits_train_and_test_are_disjoint_and_fixed(digits_train: ImageData, digits_test: ImageData) -> None:
    # compare the 8x8 originals (image_size=8 keeps them unresized)
    train8 = load_dataset("digits", "train", image_size=8)
    test8 = load_dataset("digits", "test", image_size=8)
    assert len(train8) + len(test8) == 1797
    rows_train = {bytes(r) for r in train8.images.flatten(1).numpy()}
    rows_test = {bytes(r) for r in test8.images.flatten(1).numpy()}
    # a few digits images are exact duplicates of each other; nearly all must be on one side only
    assert len(rows_train & rows_test) <= 5
    again = load_dataset("digits", "test")
    assert torch.equal(again.images, digits_test.images) and torch.equal(again.labels, digits_test.labels)
    # stratified: each class is about 40% test
    total = torch.bincount(torch.cat([digits_train.labels, digits_test.labels]), minlength=10).float()
    frac = torch.bincount(digits_test.labels, minlength=10).float() / total
    assert torch.all((frac - 0.4).abs() < 0.02)


def test_image_size_resizes(digits_train: ImageData) -> None:
    big = load_dataset("digits", "train", image_size=32)
    assert big.images.shape == (1078, 1, 32, 32)
    assert torch.equal(big.labels, digits_train.labels)


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(DataError, match="digits.*cifar10.*imagefolder"):
        load_dataset("mnist")


def test_bad_split_is_rejected() -> None:
    with pytest.raises(DataError, match="split"):
        load_dataset("digits", "val")


@pytest.mark.parametrize(
    "name, expected",
    [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"), ("svhn", "train_32x32.mat")],
)
def test_missing_torchvision_files_say_what_and_where(tmp_path: Path, name: str, expected: str) -> None:
    with pytest.raises(DataError) as info:
        load_dataset(name, data_root=tmp_path)
    message = str(info.value)
    assert expected in message and str(tmp_path) in message and "--download" in message
    assert "\n" not in message


# ------------------------------------------------------------------------------------------ imagefolder


def _write_folder(root: Path, per_class: dict[str, int], size: tuple[int, int] = (10, 7)) -> None:
    rng = np.random.default_rng(0)
    for cls, count in per_class.items():
        (root / cls).mkdir(parents=True)
        for i in range(count):
            arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            mode_img = Image.fromarray(arr).convert("L") if i % 2 else Image.fromarray(arr)  # grey too
            mode_img.save(root / cls / f"{i}.png")


def test_imagefolder_split_80_20_rgb_resized(tmp_path: Path) -> None:
    _write_folder(tmp_path / "set", {"cat": 10, "dog": 5})
    train = load_dataset(f"imagefolder:{tmp_path / 'set'}", "train", image_size=12)
    test = load_dataset(f"imagefolder:{tmp_path / 'set'}", "test", image_size=12)
    assert train.classes == ("cat", "dog") and test.classes == ("cat", "dog")
    assert train.images.shape == (12, 3, 12, 12) and test.images.shape == (3, 3, 12, 12)
    assert torch.bincount(test.labels).tolist() == [2, 1]
    assert len(load_dataset(f"imagefolder:{tmp_path / 'set'}").images[0, 0]) == 32  # default size
    again = load_dataset(f"imagefolder:{tmp_path / 'set'}", "test", image_size=12)
    assert torch.equal(again.images, test.images)


def test_imagefolder_uses_train_and_test_subfolders(tmp_path: Path) -> None:
    _write_folder(tmp_path / "set" / "train", {"a": 3, "b": 2})
    _write_folder(tmp_path / "set" / "test", {"a": 1, "b": 1})
    train = load_dataset(f"imagefolder:{tmp_path / 'set'}", "train", image_size=8)
    test = load_dataset(f"imagefolder:{tmp_path / 'set'}", "test", image_size=8)
    assert len(train) == 5 and len(test) == 2
    assert test.labels.tolist() == [0, 1]


def test_imagefolder_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a folder"):
        load_dataset(f"imagefolder:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class subfolders"):
        load_dataset(f"imagefolder:{tmp_path / 'empty'}")
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        load_dataset(f"imagefolder:{tmp_path / 'noimg'}")


# ------------------------------------------------------------------------------------ subsets and splits


def test_stratified_subset_keeps_proportions_and_is_seeded(digits_train: ImageData) -> None:
    sub = stratified_subset(digits_train, 300, seed=1)
    assert len(sub) == 300
    counts = torch.bincount(sub.labels, minlength=10)
    expected = torch.bincount(digits_train.labels, minlength=10).float() * 300 / len(digits_train)
    assert torch.all((counts.float() - expected).abs() < 1.0)
    assert _fingerprint(stratified_subset(digits_train, 300, seed=1)) == _fingerprint(sub)
    assert _fingerprint(stratified_subset(digits_train, 300, seed=2)) != _fingerprint(sub)
    assert sub.classes == digits_train.classes


def test_stratified_subset_too_large_says_sizes(digits_train: ImageData) -> None:
    with pytest.raises(DataError, match=r"--train-size 5000 is larger than the 1078 images of digits/train"):
        stratified_subset(digits_train, 5000, seed=0)


def test_make_splits_partition_ratio_stratification(digits_train: ImageData) -> None:
    labels = digits_train.labels
    splits = make_splits(labels, k=5, da_ratio=0.4, seed=0)
    assert len(splits) == 5
    n = len(labels)
    for d_m, d_a in splits:
        assert len(np.intersect1d(d_m, d_a)) == 0
        assert np.array_equal(np.sort(np.concatenate([d_m, d_a])), np.arange(n))
        assert abs(len(d_a) / n - 0.4) < 0.01
        frac = np.bincount(labels.numpy()[d_a], minlength=10) / np.bincount(labels.numpy(), minlength=10)
        assert np.all(np.abs(frac - 0.4) < 0.03)
    assert not np.array_equal(splits[0][1], splits[1][1])  # different shuffles
    again = make_splits(labels, k=5, da_ratio=0.4, seed=0)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again))


def test_make_splits_small_classes_land_on_both_sides() -> None:
    labels = np.repeat(np.arange(4), 3)  # 3 per class, the minimum at da_ratio 0.4
    for seed in range(20):
        for d_m, d_a in make_splits(labels, k=3, da_ratio=0.4, seed=seed):
            assert set(labels[d_m]) == set(labels[d_a]) == {0, 1, 2, 3}


def test_make_splits_names_the_class_that_is_too_small() -> None:
    labels = torch.tensor([0] * 10 + [1] * 10 + [7])
    with pytest.raises(DataError, match=r"class 7 has 1 example"):
        make_splits(labels)


@pytest.mark.parametrize("kwargs, match", [({"k": 0}, "k"), ({"da_ratio": 1.0}, "da_ratio"), ({"da_ratio": 0}, "da_ratio")])
def test_make_splits_validates_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        make_splits(np.repeat(np.arange(3), 10), **kwargs)


# --------------------------------------------------------------------------------- baseline augmentation


def test_baseline_table() -> None:
    assert BASELINES["cifar10"] == Baseline(pad_crop=4, hflip=True)
    assert baseline_for("digits/train") == Baseline(pad_crop=1, hflip=False)
    assert baseline_for("svhn").hflip is False
    assert baseline_for("imagefolder:/some/where", image_size=64) == Baseline(pad_crop=8, hflip=False)
    with pytest.raises(DataError, match="no baseline"):
        baseline_for("mnist")


def _ramp_batch(b: int, c: int = 3, h: int = 8, w: int = 8) -> torch.Tensor:
    base = (torch.arange(h * w).view(1, 1, h, w) + 1).to(torch.uint8)  # unique non-zero pixel values
    return base.expand(b, c, h, w).clone()


def test_baseline_augment_shape_dtype_and_empty() -> None:
    aug = BaselineAugment(Baseline(pad_crop=2, hflip=True))
    gen = torch.Generator().manual_seed(0)
    x = _ramp_batch(5)
    out = aug(x, gen)
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert aug(x[:0], gen).shape == (0, 3, 8, 8)
    flt = aug(x.float(), gen)
    assert flt.dtype == torch.float32


def test_crops_are_zero_filled_shifts_and_per_sample() -> None:
    p = 2
    aug = BaselineAugment(Baseline(pad_crop=p, hflip=False))
    x = _ramp_batch(64, c=1)
    out = aug(x, torch.Generator().manual_seed(3))
    padded = torch.nn.functional.pad(x[0, 0], (p, p, p, p))
    shifts = set()
    for i in range(len(out)):
        matches = [
            (dy, dx)
            for dy in range(2 * p + 1)
            for dx in range(2 * p + 1)
            if torch.equal(out[i, 0], padded[dy : dy + 8, dx : dx + 8])
        ]
        assert len(matches) == 1, "each output must be exactly one zero-padded shift of its input"
        shifts.add(matches[0])
    assert len(shifts) > 10  # offsets drawn per sample, not once per batch


def test_flip_frequency_and_reproducibility() -> None:
    aug = BaselineAugment(Baseline(pad_crop=0, hflip=True))
    x = _ramp_batch(4000, c=1)
    out = aug(x, torch.Generator().manual_seed(0))
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert torch.all(flipped ^ kept)
    assert abs(flipped.float().mean().item() - 0.5) < 0.03
    again = aug(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    other = aug(x, torch.Generator().manual_seed(1))
    assert not torch.equal(out, other)


def test_channels_move_together() -> None:
    x = torch.stack([_ramp_batch(32, c=1)[:, 0], _ramp_batch(32, c=1)[:, 0] * 2], dim=1)
    out = BaselineAugment(Baseline(pad_crop=3, hflip=True))(x, torch.Generator().manual_seed(0))
    assert torch.equal(out[:, 1], out[:, 0] * 2)


def test_digits_baseline_never_flips() -> None:
    aug = BaselineAugment(baseline_for("digits"))
    columns = ((torch.arange(16) + 1) * 10).to(torch.uint8)  # grows left to right in every row
    x = columns.expand(500, 1, 16, 16).clone()
    out = aug(x, torch.Generator().manual_seed(0))
    inner = out[:, 0, 1:15, 1:15].long()  # away from the zero fill of the 1 px crop
    assert torch.all(inner[..., 1:] > inner[..., :-1]), "a flip would reverse the order"


def test_generator_on_wrong_device_is_explained() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU to have two device types")
    aug = BaselineAugment(Baseline(pad_crop=1, hflip=True))
    with pytest.raises(ValueError, match="generator"):
        aug(_ramp_batch(2).cuda(), torch.Generator())


# ---------------------------------------------------------------------------------------- normalisation


def test_normalize_uses_per_channel_stats() -> None:
    x = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    out = normalize(x, (0.5, 0.0, 1.0), (0.5, 1.0, 0.25))
    assert out.dtype == torch.float32
    assert torch.allclose(out[:, 0], torch.tensor(1.0)) and torch.allclose(out[:, 1], torch.tensor(1.0))
    assert torch.allclose(out[:, 2], torch.tensor(0.0))
    with pytest.raises(ValueError, match="channels"):
        normalize(x, (0.5,), (0.5,))


def test_digits_stats_match_the_data(digits_train: ImageData) -> None:
    mean, std = normalization_for("digits")
    z = normalize(digits_train.images, mean, std)
    assert abs(z.mean().item()) < 0.05 and abs(z.std().item() - 1) < 0.05


def test_imagefolder_stats_computed_from_data(tmp_path: Path) -> None:
    _write_folder(tmp_path / "set", {"a": 4, "b": 4})
    data = load_dataset(f"imagefolder:{tmp_path / 'set'}", image_size=8)
    mean, std = normalization_for(f"imagefolder:{tmp_path / 'set'}", data)
    assert len(mean) == 3 and all(0.2 < m < 0.8 for m in mean) and all(s > 0 for s in std)
    with pytest.raises(DataError, match="pass its training data"):
        normalization_for("imagefolder:/x")
