"""Tests for policysearch.training.data: loading, subsets, D_M/D_A splits, baseline augmentation, normalisation."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from policysearch.augment.policy import Baseline
from policysearch.augment.transforms import BaselineAugment
from policysearch.training.data import (
    BASELINES,
    MAX_AUTO_SIDE,
    DataError,
    ImageData,
    baseline_for,
    compute_mean_std,
    dataset_name,
    load_dataset,
    normalization_for,
    normalize,
    require_classes,
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


@pytest.mark.parametrize("name", ["", " ", "imagefolder:", "imagefolder:?classes=a,b", "imagefolder: "])
def test_an_empty_folder_path_is_refused_not_read_as_the_current_folder(tmp_path: Path, monkeypatch, capsys,
                                                                        name: str) -> None:
    """Regression (review): Path("") is ".", so `--dataset "$UNSET"` or `imagefolder:` trained on the folder the
    command ran in, and config.json recorded that folder as the data set."""
    from policysearch.cli import main
    from policysearch.search import SearchConfig
    from policysearch.search.config import SettingsError

    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(4):
            Image.new("L", (8, 8), 40 * i).save(tmp_path / label / f"{i}.png")
    monkeypatch.chdir(tmp_path)  # a folder of class subfolders: what an empty path used to load
    assert dataset_name(name) in (name, f"imagefolder:{name}")
    with pytest.raises(DataError, match="unknown data set|no folder after 'imagefolder:'|is not a folder"):
        load_dataset(dataset_name(name))
    with pytest.raises(SettingsError, match="dataset names no data set or folder"):
        SearchConfig(dataset=dataset_name(name))
    assert main(["search", "--dataset", name, "--out", str(tmp_path / "run")]) == 2
    assert "--dataset names no data set or folder" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


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
    assert "download=True to download it" not in message and "Dataset not found" not in message  # one voice


@pytest.mark.parametrize("name", ["cifar10", "svhn"])
def test_a_failed_download_leaves_no_empty_folders(tmp_path: Path, name: str, monkeypatch) -> None:
    """Regression: --download while offline left the --data-root folder it made, empty."""
    import os

    import torchvision.datasets as tvd

    def offline(root, *args, download=False, **kwargs):
        os.makedirs(root, exist_ok=True)  # as torchvision does before it fetches
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(tvd, "CIFAR10", offline)
    monkeypatch.setattr(tvd, "SVHN", offline)
    (tmp_path / "kept").mkdir()
    for root in (tmp_path / "new" / "data", tmp_path / "kept"):
        with pytest.raises(DataError, match=rf"^{name} train files could not be downloaded: .*Temporary failure"):
            load_dataset(name, data_root=root, download=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]  # made by the user: kept
    assert not any((tmp_path / "kept").iterdir())


def test_a_test_folder_without_a_class_says_so(tmp_path: Path) -> None:
    """Regression: a test/ folder lacking a class is allowed, but the benchmark's test error then covered
    two of three classes without a word."""
    _write_folder(tmp_path / "set" / "train", {"cat": 2, "dog": 2, "ship": 2})
    _write_folder(tmp_path / "set" / "test", {"cat": 2, "ship": 2})
    test = load_dataset(_folder(tmp_path / "set"), "test", image_size=8)
    assert test.labels.tolist() == [0, 0, 2, 2] and test.classes == ("cat", "dog", "ship")
    assert f"imagefolder:{tmp_path / 'set' / 'test'}: no images of 1 of the 3 classes (dog); its error covers the " \
           "other 2" in test.notes
    assert not any("no images of" in note for note in load_dataset(_folder(tmp_path / "set"), image_size=8).notes)


def test_links_to_one_missing_file_are_named_as_links_to_nothing(tmp_path: Path) -> None:
    """A review found two dangling links to one target in two classes called "one file in two classes"."""
    _write_folder(tmp_path / "set", {"a": 2, "b": 2})
    for cls in ("a", "b"):
        (tmp_path / "set" / cls / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(DataError, match=r"^'.*set/a/gone.png' is a link that leads to nothing"):
        load_dataset(_folder(tmp_path / "set"), image_size=8)


def test_a_folder_named_like_a_built_in_data_set_is_noted(tmp_path: Path, monkeypatch) -> None:
    """Regression: with a folder ./digits in the working folder, --dataset digits trained on the built-in digits
    without a word; the name still means the built-in set (./digits is the folder), and a note says so."""
    monkeypatch.chdir(tmp_path)
    assert not load_dataset("digits").notes
    _write_folder(tmp_path / "digits" / "train", {"a": 2, "b": 2})
    data = load_dataset("digits")
    assert data.name == "digits/train" and data.notes == (
        "digits: the built-in digits data set, not the folder ./digits here (give ./digits or "
        "imagefolder:digits for the folder)",)
    assert load_dataset("digits", "test").notes == data.notes  # one line for both splits
    assert not load_dataset("digits", data_root="digits").notes  # the data's own folder (as svhn's may be)
    assert load_dataset(dataset_name("./digits")).name == "imagefolder:digits/train"


def test_an_image_folders_notes_name_the_folder_that_exists(tmp_path: Path) -> None:
    # 16-bit images of another size, once as class folders alone and once inside train/: loading notes the resize
    for root in (tmp_path / "flat", tmp_path / "split" / "train"):
        for cls in ("a", "b"):
            (root / cls).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((12, 12), 40000, dtype=np.uint16)).save(root / cls / f"{i}.png")
    for given, folder in ((tmp_path / "flat", tmp_path / "flat"), (tmp_path / "split", tmp_path / "split" / "train")):
        data = load_dataset(_folder(given), image_size=8)
        assert data.name == f"imagefolder:{folder}" and folder.is_dir()
        assert data.notes and all(note.startswith(f"imagefolder:{folder}: ") for note in data.notes)


# ------------------------------------------------------------------------------------------ imagefolder


def _write_folder(root: Path, per_class: dict[str, int], size: tuple[int, int] = (10, 7)) -> None:
    rng = np.random.default_rng(0)
    for cls, count in per_class.items():
        (root / cls).mkdir(parents=True)
        for i in range(count):
            arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            mode_img = Image.fromarray(arr).convert("L") if i % 2 else Image.fromarray(arr)  # grey too
            mode_img.save(root / cls / f"{i}.png")


def _folder(path: Path) -> str:
    return f"imagefolder:{path}"


def test_imagefolder_without_test_folder_is_all_training_data(tmp_path: Path) -> None:
    _write_folder(tmp_path / "set", {"cat": 10, "dog": 5})
    train = load_dataset(_folder(tmp_path / "set"), "train", image_size=12)
    assert train.classes == ("cat", "dog")
    assert train.images.shape == (15, 3, 12, 12)  # every image: nothing held back
    assert torch.bincount(train.labels).tolist() == [10, 5]
    with pytest.raises(DataError, match=r"has no test split.*test/") as info:
        load_dataset(_folder(tmp_path / "set"), "test")
    assert str(tmp_path / "set") in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(DataError, match="no val split"):
        load_dataset(_folder(tmp_path / "set"), "val")


def test_imagefolder_uses_train_and_test_subfolders(tmp_path: Path) -> None:
    _write_folder(tmp_path / "set" / "train", {"a": 3, "b": 2})
    _write_folder(tmp_path / "set" / "test", {"a": 1, "b": 1})
    train = load_dataset(_folder(tmp_path / "set"), "train", image_size=8)
    test = load_dataset(_folder(tmp_path / "set"), "test", image_size=8)
    assert len(train) == 5 and len(test) == 2
    assert test.labels.tolist() == [0, 1]


@pytest.mark.parametrize("val_name", ["val", "valid", "validation", "Val"])
def test_imagefolder_val_is_its_own_split_never_a_class(tmp_path: Path, val_name: str) -> None:
    _write_folder(tmp_path / "set" / "train", {"a": 3, "b": 4})
    _write_folder(tmp_path / "set" / val_name, {"a": 2, "b": 1})
    train = load_dataset(_folder(tmp_path / "set"), "train", image_size=8)
    assert train.classes == ("a", "b") and len(train) == 7  # no "train"/"val" classes, no val images
    val = load_dataset(_folder(tmp_path / "set"), "val", image_size=8)
    assert val.classes == ("a", "b") and val.labels.tolist() == [0, 0, 1]
    with pytest.raises(DataError, match="no test split"):
        load_dataset(_folder(tmp_path / "set"), "test")


def test_imagefolder_split_folders_mixed_with_class_folders_are_refused(tmp_path: Path) -> None:
    _write_folder(tmp_path / "set" / "train", {"a": 2})
    _write_folder(tmp_path / "set", {"cat": 2, "test": 2})
    with pytest.raises(DataError, match=r"mixes split folders \(test, train\) with other folders \(cat\)"):
        load_dataset(_folder(tmp_path / "set"))
    _write_folder(tmp_path / "only", {"val": 2, "test": 2})
    with pytest.raises(DataError, match="no train/ folder"):
        load_dataset(_folder(tmp_path / "only"))
    _write_folder(tmp_path / "two" / "train", {"a": 2})
    _write_folder(tmp_path / "two" / "val", {"a": 2})
    _write_folder(tmp_path / "two" / "valid", {"a": 2})
    with pytest.raises(DataError, match="both val/ and valid/"):
        load_dataset(_folder(tmp_path / "two"))


def test_imagefolder_test_split_may_not_add_classes(tmp_path: Path) -> None:
    _write_folder(tmp_path / "set" / "train", {"a": 2, "b": 2})
    _write_folder(tmp_path / "set" / "test", {"a": 1, "zebra": 1})
    with pytest.raises(DataError, match="classes not in the training folder: zebra"):
        load_dataset(_folder(tmp_path / "set"), "test")


def test_imagefolder_keeps_only_the_selected_classes_of_every_split(tmp_path: Path) -> None:
    _write_folder(tmp_path / "set" / "train", {"bird": 2, "cat": 3, "dog": 4})
    _write_folder(tmp_path / "set" / "test", {"bird": 1, "cat": 2, "dog": 1})
    spec = f"{_folder(tmp_path / 'set')}?classes=dog, cat"  # any order, spaces ignored
    train = load_dataset(spec, "train", image_size=8)
    test = load_dataset(spec, "test", image_size=8)
    assert train.classes == test.classes == ("cat", "dog")  # the folders' order, labels 0 and 1
    assert torch.bincount(train.labels).tolist() == [3, 4] and test.labels.tolist() == [0, 0, 1]
    assert train.name.endswith("?classes=cat,dog")
    with pytest.raises(DataError, match=r"no class folder 'cow'; its classes are bird, cat, dog"):
        load_dataset(f"{_folder(tmp_path / 'set')}?classes=cat,cow")
    with pytest.raises(DataError, match="needs class folder names"):
        load_dataset(f"{_folder(tmp_path / 'set')}?classes=")
    _write_folder(tmp_path / "extra" / "train", {"a": 2, "b": 2})
    _write_folder(tmp_path / "extra" / "test", {"a": 1, "zebra": 1})
    with pytest.raises(DataError, match="classes not in the training folder: zebra"):
        load_dataset(f"{_folder(tmp_path / 'extra')}?classes=a,b", "test")


def test_imagefolder_names_the_files_it_skips(tmp_path: Path) -> None:
    """Regression: a file of another type in a class folder (notes, or an image format not read) was skipped
    without a word."""
    _write_folder(tmp_path / "set", {"a": 2, "b": 2})
    (tmp_path / "set" / "a" / "notes.txt").write_text("x")
    (tmp_path / "set" / "b" / ".hidden.txt").write_text("x")  # hidden: skipped quietly
    data = load_dataset(_folder(tmp_path / "set"), image_size=8)
    assert len(data) == 4
    (note,) = [n for n in data.notes if "skipped" in n]
    assert note.startswith(f"imagefolder:{tmp_path / 'set'}: 1 file skipped, not of an image type ('a/notes.txt'; "
                           "images end in .bmp, .gif")
    assert not [n for n in load_dataset(_folder(tmp_path / "set"), image_size=8).notes if "hidden" in n]


def test_imagefolder_of_one_class_is_refused_for_training_but_loads(tmp_path: Path) -> None:
    """Regression: a folder of one class was searched in full, every reward 1.0 (chance is 1.0). It still loads
    (``show`` draws it); training refuses it."""
    _write_folder(tmp_path / "single", {"cat": 3})
    data = load_dataset(_folder(tmp_path / "single"), image_size=8)
    with pytest.raises(DataError) as info:
        require_classes(data)
    assert str(info.value) == (f"imagefolder:{tmp_path / 'single'} has one class ('cat'); a classifier needs at "
                               "least 2 classes: add a subfolder of images for each other class")
    require_classes(load_dataset("digits"))

def test_imagefolder_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a folder"):
        load_dataset(_folder(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class subfolders"):
        load_dataset(_folder(tmp_path / "empty"))
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    (tmp_path / "noimg" / "a" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"class folder '.*noimg/a' has no images"):
        load_dataset(_folder(tmp_path / "noimg"))


def test_imagefolder_class_with_one_image_names_it(tmp_path: Path) -> None:
    _write_folder(tmp_path / "set", {"a": 3, "b": 1})
    with pytest.raises(DataError, match=r"class folder '.*set/b' has only one image; every class needs"):
        load_dataset(_folder(tmp_path / "set"))
    # regression (review): a class of photos in a format it does not read (HEIC) "has no images", without a word
    # of the files it skipped
    for name in ("1.heic", "2.HEIC", "notes.txt"):
        (tmp_path / "set" / "b" / name).write_bytes(b"x")
    with pytest.raises(DataError, match=r"class folder '.*set/b' has only one image \(beside 3 files of types it does "
                                        r"not read: \.heic, \.txt; it reads \.bmp, .*\.webp\); every class needs"):
        load_dataset(_folder(tmp_path / "set"))


def test_imagefolder_unreadable_file_is_named(tmp_path: Path) -> None:
    _write_folder(tmp_path / "set", {"a": 3, "b": 2})
    (tmp_path / "set" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DataError, match=r"cannot read image '.*set/a/broken.png'") as info:
        load_dataset(_folder(tmp_path / "set"))
    assert "\n" not in str(info.value)
    truncated = tmp_path / "set" / "a" / "broken.png"
    Image.fromarray(np.full((40, 40, 3), 7, dtype=np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])  # a valid header, the pixels cut off
    with pytest.raises(DataError, match=r"cannot read image '.*broken.png'"):
        load_dataset(_folder(tmp_path / "set"))


def test_imagefolder_too_large_for_memory_is_refused_before_reading(tmp_path: Path, monkeypatch) -> None:
    """Regression: --image-size 4096 on a folder was read until the machine ran out of memory."""
    from policysearch.training import data as data_module

    _write_folder(tmp_path / "set", {"a": 2, "b": 2})
    monkeypatch.setattr(data_module, "available_memory", lambda: 2**28)  # 256 MiB free
    with pytest.raises(DataError, match=r"imagefolder:.*set: 4 images of 3x4096x4096 take 0\.19 GiB in memory, more "
                                        r"than half of the 0\.25 GiB free here; choose a smaller --image-size"):
        load_dataset(_folder(tmp_path / "set"), image_size=4096)
    assert len(load_dataset(_folder(tmp_path / "set"), image_size=64)) == 4  # 48 KiB: fine


def test_a_built_in_set_too_large_for_memory_is_refused_before_resizing(monkeypatch) -> None:
    """A trial's find: --image-size 4096 on digits ended in a 20-line traceback from torch's allocator (or,
    with more memory, a minute of silence)."""
    from policysearch.training import data as data_module

    monkeypatch.setattr(data_module, "available_memory", lambda: 2**28)  # 256 MiB free
    with pytest.raises(DataError, match=r"^digits: 1797 images of 1x4096x4096 take 28\.08 GiB in memory, more than "
                                        r"half of the 0\.25 GiB free here; choose a smaller --image-size$"):
        load_dataset("digits", image_size=4096)
    assert load_dataset("digits", image_size=32).images.shape[-1] == 32


def test_resizing_in_chunks_of_bounded_memory_keeps_every_image(monkeypatch) -> None:
    from policysearch.training import data as data_module

    images = torch.randint(0, 256, (5, 3, 40, 40), dtype=torch.uint8)
    whole = data_module.resize_images(images, 16)
    monkeypatch.setattr(data_module, "RESIZE_CHUNK_BYTES", 2 * 4 * 3 * (40 * 40 + 16 * 16))  # two images a chunk
    chunked = data_module.resize_images(images, 16)
    assert chunked.shape == (5, 3, 16, 16) and torch.equal(whole, chunked)


def test_the_memory_a_container_leaves_bounds_what_is_available(tmp_path: Path, monkeypatch) -> None:
    """A container's or job's limit is not in /proc/meminfo: without it the check passed where the process
    would be killed."""
    from policysearch.training import data as data_module

    limit, usage, stat = tmp_path / "memory.max", tmp_path / "memory.current", tmp_path / "memory.stat"
    limit.write_text(f"{3 * 2**30}\n")
    usage.write_text(f"{2**30}\n")
    monkeypatch.setattr(data_module, "CGROUP_MEMORY", ((str(limit), str(usage), str(stat), "inactive_file"),))
    assert data_module.available_memory() == 2 * 2**30  # this machine has more than 2 GiB available
    # file cache the kernel can drop counts as free (a cache-filled container refused data that fits)
    stat.write_text(f"anon 123\ninactive_file {2**29}\n")
    assert data_module.available_memory() == 2 * 2**30 + 2**29
    limit.write_text("max\n")  # cgroup v2 without a limit: the machine's figure
    assert data_module.available_memory() > 0


def test_imagefolder_link_to_nothing_is_named_not_dropped(tmp_path: Path) -> None:
    """Regression: a dangling symbolic link in a class folder was left out without a word."""
    _write_folder(tmp_path / "set", {"a": 3, "b": 2})
    (tmp_path / "set" / "a" / "moved.jpg").symlink_to(tmp_path / "nowhere" / "x.jpg")
    # named as the link it is, as a class folder linked to nothing is (a trial: "cannot read image ...")
    with pytest.raises(DataError, match=r"^'.*set/a/moved.jpg' is a link that leads to nothing \('.*nowhere/x.jpg': "
                                        r"a drive not mounted, or a loop of links\); fix the link or remove it$"):
        load_dataset(_folder(tmp_path / "set"))
    (tmp_path / "set" / "a" / "moved.jpg").unlink()
    (tmp_path / "set" / "a" / "notes.txt").symlink_to(tmp_path / "nowhere" / "notes.txt")
    data = load_dataset(_folder(tmp_path / "set"))  # another type: skipped with a note, as a file of it is
    assert len(data) == 5 and any("notes.txt" in note for note in data.notes)


def test_imagefolder_class_folder_linked_to_nothing_is_named_not_dropped(tmp_path: Path) -> None:
    """A trial's find: a class folder that is a link to nothing (a drive not mounted) was left out without a
    word, and the data had one class fewer."""
    _write_folder(tmp_path / "set", {"a": 3, "b": 2})
    (tmp_path / "set" / "c").symlink_to(tmp_path / "unmounted" / "c", target_is_directory=True)
    with pytest.raises(DataError, match=r"'.*set/c' is a link that leads to nothing \('.*unmounted/c': a drive "
                                        r"not mounted, or a loop of links\); fix the link or remove it"):
        load_dataset(_folder(tmp_path / "set"))
    (tmp_path / "set" / ".c").symlink_to(tmp_path / "unmounted" / "c", target_is_directory=True)
    (tmp_path / "set" / "c").unlink()
    assert load_dataset(_folder(tmp_path / "set")).classes == ("a", "b")  # a hidden one is skipped, as any is


def test_imagefolder_follows_linked_folders_in_a_class(tmp_path: Path) -> None:
    """Regression: a linked folder inside a class folder was left out without a word (torchvision's
    ImageFolder follows it)."""
    _write_folder(tmp_path / "set", {"a": 3, "b": 2})
    _write_folder(tmp_path / "more", {"a": 4})
    (tmp_path / "set" / "a" / "more").symlink_to(tmp_path / "more" / "a", target_is_directory=True)
    (tmp_path / "set" / "a" / "again").symlink_to(tmp_path / "set" / "a" / "more", target_is_directory=True)
    data = load_dataset(_folder(tmp_path / "set"), image_size=8)
    assert data.labels.tolist() == [0] * 7 + [1] * 2  # a link within the class: its images once


LINKS = {  # a link (from, to) that would read images twice, and what the error says
    "to another class": (("set/train/a/bb", "set/train/b"), "are one file .*: its image would be in two classes"),
    "from train to test": (("set/train/a/t", "set/test/a"), "its image would be in two splits"),
    "up a loop": (("set/train/a/up", "set"), r"a folder that holds this class's folder \(a loop\)"),
    "to a folder holding the data set": (("set/train/a/up", "."), r"a folder that holds this class's folder \(a loop\)"),
    "from two classes": (("set/train/b/more", "more/a"), "two classes"),
    # a review found these still read images twice: nested folders, two splits, a linked class folder
    "to a folder inside one another class reaches": (("set/train/b/in", "more/a/sub"), r"/more/a/sub/.* two classes"),
    "from two splits": (("set/test/a/more", "more/a"), "two splits"),
    "a class folder that is another": (("set/train/c", "set/train/a"), "two classes"),
    "a class folder that is a test one": (("set/train/c", "set/test/a"), "two splits"),
    "a class folder that is its split": (("set/train/c", "set/train"), "two classes"),
    "a file of the test split": (("set/train/a/leak.png", "set/test/a/0.png"), r"test/a/0.png' and .*train/a/leak.png' "
                                                                             r"are one file .* two splits"),
}


@pytest.mark.parametrize("case", list(LINKS))
def test_imagefolder_links_that_would_read_images_twice_are_refused(tmp_path: Path, case: str) -> None:
    """A review found that following links put class b's images in class a too, and test images in training."""
    _write_folder(tmp_path / "set" / "train", {"a": 3, "b": 2})
    _write_folder(tmp_path / "set" / "test", {"a": 2, "b": 2})
    _write_folder(tmp_path / "more", {"a": 2, "a/sub": 2})
    (tmp_path / "set" / "train" / "a" / "more").symlink_to(tmp_path / "more" / "a", target_is_directory=True)
    assert len(load_dataset(_folder(tmp_path / "set"), image_size=8)) == 9  # one link from outside: followed
    assert len(load_dataset(_folder(tmp_path / "set"), "test", image_size=8)) == 4
    (link, target), message = LINKS[case]
    (tmp_path / link).symlink_to((tmp_path / target).resolve(), target_is_directory=True)
    with pytest.raises(DataError, match=message):
        load_dataset(_folder(tmp_path / "set"), "test", image_size=8)  # lists the training folder too


def test_imagefolder_links_a_review_found_read_twice_or_dropped(tmp_path: Path) -> None:
    """A split folder that is a link to the other one passed the folder checks; a link to a hidden folder in
    the class dropped its images (the walk never enters hidden folders)."""
    _write_folder(tmp_path / "set" / "train", {"a": 3, "b": 2})
    (tmp_path / "set" / "test").symlink_to(tmp_path / "set" / "train", target_is_directory=True)
    with pytest.raises(DataError, match="two splits"):
        load_dataset(_folder(tmp_path / "set"), "test", image_size=8)
    _write_folder(tmp_path / "flat", {"a": 2, "b": 2, "a/.cache/real": 3})
    (tmp_path / "flat" / "a" / "seen").symlink_to(tmp_path / "flat" / "a" / ".cache" / "real",
                                                   target_is_directory=True)
    assert load_dataset(_folder(tmp_path / "flat"), image_size=8).labels.tolist() == [0] * 5 + [1] * 2


def test_imagefolder_images_outside_class_folders_are_refused(tmp_path: Path) -> None:
    _write_folder(tmp_path / "set", {"a": 2})
    Image.new("RGB", (4, 4)).save(tmp_path / "set" / "stray.png")
    with pytest.raises(DataError, match=r"1 image file outside class subfolders \(e.g. 'stray.png'\)"):
        load_dataset(_folder(tmp_path / "set"))


def test_imagefolder_skips_hidden_entries_and_reads_nested_folders(tmp_path: Path) -> None:
    _write_folder(tmp_path / "set", {"a": 2, "b": 2})
    (tmp_path / "set" / ".cache").mkdir()
    (tmp_path / "set" / "a" / ".ipynb_checkpoints").mkdir()
    (tmp_path / "set" / "a" / ".ipynb_checkpoints" / "junk.png").write_bytes(b"junk")
    (tmp_path / "set" / "b" / "more").mkdir()
    Image.new("L", (10, 7), 9).save(tmp_path / "set" / "b" / "more" / "x.png")
    data = load_dataset(_folder(tmp_path / "set"), image_size=4)
    assert data.classes == ("a", "b") and torch.bincount(data.labels).tolist() == [2, 3]


def _gradient16(width: int = 64, height: int = 8) -> np.ndarray:
    return np.tile(np.linspace(0, 65535, width).round().astype(np.uint16), (height, 1))


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_imagefolder_scales_16_bit_intensities(tmp_path: Path, suffix: str) -> None:
    values = _gradient16()
    for cls in ("a", "b"):
        (tmp_path / "set" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(values).save(tmp_path / "set" / cls / f"{i}{suffix}")
    assert Image.open(tmp_path / "set" / "a" / f"0{suffix}").mode.startswith("I")
    data = load_dataset(_folder(tmp_path / "set"))
    assert data.images.shape == (4, 1, 8, 8)  # grey kept; median shorter side 8
    # the centre 8x8 square of the ramp: columns 28..35 of 64, i.e. values 28/63 .. 35/63 of the range
    row = data.images[0, 0, 4].float()
    expected = torch.from_numpy(values[0, 28:36].astype(np.float64) * 255 / 65535).float()
    assert torch.all((row - expected).abs() <= 2.0), (row, expected)
    full = load_dataset(_folder(tmp_path / "set"), image_size=8)
    assert int(full.images.max()) < 255 and int(full.images.min()) > 0  # not clipped to 255
    wide = _Image16(tmp_path)
    assert int(wide.images.min()) == 0 and int(wide.images.max()) == 255


def _Image16(tmp_path: Path) -> ImageData:
    """A folder of 64x64 16-bit images spanning 0..65535; loaded at full size the 8-bit range is 0..255."""
    values = np.tile(_gradient16(64, 1), (64, 1))
    for cls in ("a", "b"):
        (tmp_path / "wide" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(values).save(tmp_path / "wide" / cls / f"{i}.png")
    data = load_dataset(_folder(tmp_path / "wide"))
    assert data.images.shape[-1] == 64 and not data.notes
    assert torch.equal(data.images[0, 0, 0].long(), torch.from_numpy((values[0].astype(np.int64) * 255 + 32767) // 65535))
    return data


def test_imagefolder_applies_exif_orientation(tmp_path: Path) -> None:
    stored = np.zeros((16, 16, 3), dtype=np.uint8)
    stored[:8] = 255  # top half white as stored; orientation 6 means "rotate 90 degrees clockwise to show"
    for cls in ("a", "b"):
        (tmp_path / "set" / cls).mkdir(parents=True)
        for i in range(2):
            img = Image.fromarray(stored)
            exif = img.getexif()
            exif[0x0112] = 6
            img.save(tmp_path / "set" / cls / f"{i}.jpg", exif=exif, quality=95)
    data = load_dataset(_folder(tmp_path / "set"))
    shown = data.images[0].float().mean(0)  # [16, 16]
    assert shown[:, 10:].mean() > 200 and shown[:, :6].mean() < 50  # white on the right, as displayed
    assert abs(float(shown[:6].mean()) - float(shown[10:].mean())) < 30  # not white on top


def test_imagefolder_composites_alpha_onto_black(tmp_path: Path) -> None:
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red everywhere, but ...
    rgba[:, :4, 3] = 0  # ... left half fully transparent
    rgba[:, 4:, 3] = 255
    rgba[:, 4:, :3] = (0, 200, 0)  # right half opaque green
    la = np.zeros((8, 8, 2), dtype=np.uint8)
    la[..., 0] = 200
    la[..., 1] = 128  # half transparent grey 200 -> about 100
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 255, 255, 255] + [0, 0, 0] * 254)
    pal.info["transparency"] = 1  # white, but every pixel transparent
    (tmp_path / "set" / "a").mkdir(parents=True)
    (tmp_path / "set" / "b").mkdir(parents=True)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "set" / "a" / "0.png")
    Image.fromarray(rgba, "RGBA").save(tmp_path / "set" / "a" / "1.png")
    Image.fromarray(la, "LA").save(tmp_path / "set" / "b" / "0.png")
    pal.save(tmp_path / "set" / "b" / "1.png", transparency=1)
    data = load_dataset(_folder(tmp_path / "set"))
    assert data.images.shape == (4, 3, 8, 8)
    assert torch.all(data.images[0, :, :, :4] == 0)  # transparent red shows the black background
    assert data.images[0, :, :, 4:].reshape(3, -1)[:, 0].tolist() == [0, 200, 0]
    assert torch.all((data.images[2].float() - 100).abs() <= 1)  # 200 at alpha 128 over black
    assert torch.all(data.images[3] == 0)  # fully transparent palette image


def test_imagefolder_keeps_one_channel_when_every_image_is_grey(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        (tmp_path / "grey" / cls).mkdir(parents=True)
        Image.new("L", (6, 6), 50).save(tmp_path / "grey" / cls / "0.png")
        Image.fromarray(np.full((6, 6), 30000, dtype=np.uint16)).save(tmp_path / "grey" / cls / "1.png")
    grey = load_dataset(_folder(tmp_path / "grey"))
    assert grey.images.shape == (4, 1, 6, 6)
    assert grey.images[0].unique().tolist() == [50] and grey.images[1].unique().tolist() == [117]  # 30000*255/65535
    Image.new("RGB", (6, 6), (255, 0, 0)).save(tmp_path / "grey" / "a" / "2.png")
    mixed = load_dataset(_folder(tmp_path / "grey"))
    assert mixed.images.shape == (5, 3, 6, 6)
    assert torch.all(mixed.images[0] == 50)  # grey repeated on 3 channels
    assert any("grey image" in note and "converted to RGB" in note for note in mixed.notes)


def test_imagefolder_test_split_follows_the_training_split(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        for split, count in (("train", 2), ("test", 1)):
            (tmp_path / "set" / split / cls).mkdir(parents=True)
            for i in range(count):
                Image.new("L", (12, 12), 60).save(tmp_path / "set" / split / cls / f"{i}.png")
    Image.new("RGB", (40, 30), (0, 0, 255)).save(tmp_path / "set" / "test" / "a" / "colour.png")
    test = load_dataset(_folder(tmp_path / "set"), "test")
    assert test.images.shape == (3, 1, 12, 12)  # the training images' channels and size
    assert any("1 colour image converted to grey" in note for note in test.notes)
    assert any("40x30" in note and "12x12" in note for note in test.notes)


def _solid_folder(root: Path, sizes: list[tuple[int, int]]) -> None:
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i, size in enumerate(sizes):
            Image.new("RGB", size, (10 * i, 80, 160)).save(root / cls / f"{i}.png")


def test_imagefolder_size_follows_the_data_and_is_announced(tmp_path: Path) -> None:
    _solid_folder(tmp_path / "small", [(20, 20), (20, 20)])
    small = load_dataset(_folder(tmp_path / "small"))
    assert small.images.shape[-2:] == (20, 20) and small.notes == ()  # kept, not blown up to 32
    _solid_folder(tmp_path / "mixed", [(24, 30), (40, 40), (50, 20)])
    mixed = load_dataset(_folder(tmp_path / "mixed"))
    assert mixed.images.shape[-2:] == (24, 24)  # median shorter side of 24, 40, 20
    (note,) = mixed.notes
    assert "6 of all its 6 images resized to 24x24" in note and "40x40 (2)" in note and "50x20 (2)" in note
    assert "median shorter side" in note and "centre square" in note
    _solid_folder(tmp_path / "big", [(300, 200), (300, 200)])
    big = load_dataset(_folder(tmp_path / "big"))
    assert big.images.shape[-2:] == (MAX_AUTO_SIDE, MAX_AUTO_SIDE)
    assert f"capped at {MAX_AUTO_SIDE}" in big.notes[0] and "300x200 (4)" in big.notes[0]
    asked = load_dataset(_folder(tmp_path / "big"), image_size=16)
    assert asked.images.shape[-2:] == (16, 16) and "as --image-size asks" in asked.notes[0]
    assert asked.subset([0]).notes == asked.notes


def test_imagefolder_non_square_images_are_centre_cropped(tmp_path: Path) -> None:
    wide = np.zeros((10, 30, 3), dtype=np.uint8)
    wide[:, :10] = (255, 0, 0)
    wide[:, 10:20] = (0, 255, 0)  # the centre square is green
    wide[:, 20:] = (0, 0, 255)
    for cls in ("a", "b"):
        (tmp_path / "set" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(wide).save(tmp_path / "set" / cls / f"{i}.png")
    data = load_dataset(_folder(tmp_path / "set"), image_size=5)
    assert data.images.shape == (4, 3, 5, 5)
    assert torch.all(data.images[:, 1] == 255) and torch.all(data.images[:, 0] == 0) and torch.all(data.images[:, 2] == 0)


CIFAR_DEV = Path("/work/shared/data/cifar10-dev")


@pytest.mark.slow
@pytest.mark.skipif(not (CIFAR_DEV / "train").is_dir(), reason="the shared cifar10-dev folder is not on this machine")
def test_shared_cifar10_dev_folder_loads_as_its_splits() -> None:
    train = load_dataset(_folder(CIFAR_DEV), "train")
    test = load_dataset(_folder(CIFAR_DEV), "test")
    assert train.images.shape == (4000, 3, 32, 32) and test.images.shape == (2000, 3, 32, 32)
    assert train.num_classes == 10 and train.classes == test.classes and "airplane" in train.classes
    assert torch.bincount(test.labels).tolist() == [200] * 10
    assert train.notes == () and test.notes == ()

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


def test_compute_mean_std_matches_a_float64_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (37, 3, 9, 11), dtype=torch.uint8, generator=gen)
    images[:, 2] = 200  # a constant channel: std floored, not zero
    data = ImageData(images, torch.zeros(37, dtype=torch.int64), ("a",), "x")
    mean, std = compute_mean_std(data)
    x = images.double() / 255
    assert np.allclose(mean, x.mean((0, 2, 3)).numpy(), atol=1e-12)
    assert np.allclose(std[:2], x.std((0, 2, 3))[:2].numpy(), atol=1e-12) and std[2] == 1e-3


def test_compute_mean_std_makes_no_float_copy_of_the_whole_set(tmp_path: Path) -> None:
    # 3000 x 3 x 64 x 64 uint8 is 37 MB; a float64 copy of it would add about 295 MB to the peak memory.
    script = (
        "import resource, torch\n"
        "from policysearch.training.data import ImageData, compute_mean_std\n"
        "images = torch.empty((3000, 3, 64, 64), dtype=torch.uint8).random_(0, 256)\n"  # no int64 temporary
        "data = ImageData(images, torch.zeros(3000, dtype=torch.int64), ('a',), 'big')\n"
        "compute_mean_std(data.subset([0, 1]))\n"  # warm up allocators and kernels
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "compute_mean_std(data)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    grown_mib = int(done.stdout.split()[-1])
    assert grown_mib < 150, f"peak memory grew by {grown_mib} MiB"


# ------------------------------------------------------------------------------------ dependency floors


def _floor(requirements: list[str], package: str) -> tuple[int, ...]:
    for req in requirements:
        match = re.fullmatch(rf"{package}\s*>=\s*([0-9.]+)", req.strip())
        if match:
            return tuple(int(p) for p in match.group(1).split("."))
    raise AssertionError(f"pyproject.toml declares no '{package}>=' floor")


def test_declared_floors_cover_the_apis_the_code_calls() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text("utf-8"))["project"]
    deps = project["dependencies"]
    from policysearch.augment.image_transform import PolicyTransform

    # torchvision calls a v2 Transform's public transform()/make_params() only from 0.21 (before: _transform)
    assert "transform" in vars(PolicyTransform)
    assert _floor(deps, "torchvision") >= (0, 21)
    # torchvision 0.21 is built against torch 2.6; torch.amp.GradScaler("cuda") needs torch >= 2.3
    assert _floor(deps, "torch") >= (2, 6)


def test_the_resize_note_counts_the_sizes_it_does_not_show() -> None:
    """A trial's find: "and 1 other sizes"."""
    from policysearch.training.data import resize_note

    sizes = [(40, 20), (40, 20), (17, 33), (64, 64), (100, 80)]
    assert resize_note("mixed", sizes, 24, "the median")[0].endswith("and 1 other size (non-square: the centre "
                                                                      "square cropped, then resized)")
    assert "and 2 other sizes" in resize_note("mixed", sizes + [(30, 30)], 24, "the median")[0]
