"""Data given as Python objects (policysearch.training.user_data): each form read into memory, and each bad case one line.

No Ray here: the bad cases also go through ``policysearch.search`` with Ray refused, so they stop before
any work, and nothing is written.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

import policysearch
from policysearch.training.data import DataError, baseline_for, normalization_for
from policysearch.training.user_data import read_data

HF_REASON = "the Hugging Face part needs `datasets` (the test extra installs it)"


def _digits(count: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` of scikit-learn's digits: uint8 [N, 8, 8] and int labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images[:count] * (255 / 16)).round().astype(np.uint8), bunch.target[:count].astype(np.int64)


class Items(Dataset):
    """A map-style torch Dataset over a list of items (whatever they are), with optional class names."""

    def __init__(self, items: list, classes: list[str] | None = None) -> None:
        self.items = items
        if classes is not None:
            self.classes = classes

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def _pil_items(images: np.ndarray, labels: np.ndarray, mode: str = "L") -> list:
    return [(Image.fromarray(img, "L").convert(mode), int(y)) for img, y in zip(images, labels)]


# ---------------------------------------------------------------------------------------------- forms


def test_a_torch_dataset_of_pil_images_reads_as_the_arrays_do():
    images, labels = _digits()
    from_items = read_data(Items(_pil_items(images, labels), classes=[f"digit {c}" for c in range(10)]))
    assert from_items.images.shape == (60, 1, 8, 8) and from_items.images.dtype == torch.uint8
    assert torch.equal(from_items.images[:, 0], torch.from_numpy(images))
    assert from_items.labels.tolist() == labels.tolist() and from_items.classes[3] == "digit 3"
    assert from_items.name.startswith("python:Items#") and from_items.notes == ()
    from_arrays = read_data((images, labels))
    assert from_arrays.classes == tuple(str(c) for c in range(10))  # no names given: the labels' numbers
    assert torch.equal(from_arrays.images, from_items.images)
    assert from_arrays.name.split("#")[1] != from_items.name.split("#")[1]  # the class names differ
    assert read_data((images, labels)).name == from_arrays.name  # the fingerprint repeats


def test_one_element_labels_and_class_maps_read_as_a_user_means_them():
    """Regression: torch.tensor([y]) labels were refused with advice (argmax) that would make every label 0,
    and a dict of class names was silently dropped (the classes were named '0', '1', ...)."""
    images, labels = _digits()
    names = [f"digit {c}" for c in range(10)]
    plain = read_data(Items(_pil_items(images, labels), classes=names))
    for wrap in (lambda y: torch.tensor([y]), lambda y: np.array([y]), lambda y: torch.tensor([[y]])):
        wrapped = Items([(img, wrap(y)) for img, y in _pil_items(images, labels)], classes=names)
        assert read_data(wrapped).labels.tolist() == plain.labels.tolist()
    by_name = Items(_pil_items(images, labels), classes={name: c for c, name in enumerate(names)})
    by_label = Items(_pil_items(images, labels), classes=dict(enumerate(names)))
    assert read_data(by_name).classes == read_data(by_label).classes == tuple(names)
    # regression (review): a map to labels other than 0..C-1 ({"cat": 3, "dog": 7}) was dropped without a word,
    # and the data's labels 3 and 7 were then refused as "class 0 has no images"
    for gappy in ({"a": 0, "b": 5}, {"cat": 3, "dog": 7}, {"a": 0, "b": 0}):
        with pytest.raises(DataError, match=r"^data.classes maps its 2 class names to the labels \{'\w+': \d, '\w+': "
                                            r"\d\}, not to 0..1: each label once, 0..C-1 in label order; relabel"):
            read_data(Items(_pil_items(images, labels), classes=gappy))


def test_a_pair_given_as_a_list_says_to_pass_a_tuple():
    """Regression: [images, labels] read as a data set of two items: "data item 0 is a Tensor, not a pair"."""
    images, labels = _digits()
    with pytest.raises(DataError) as info:
        read_data([torch.from_numpy(images), torch.from_numpy(labels)])
    assert str(info.value).startswith("data is a list of 2 items, the first a Tensor")
    assert str(info.value).endswith("; for a pair (images, labels) pass a tuple: (images, labels)")
    two_images = [torch.from_numpy(images[0:1]), torch.from_numpy(images[1:2])]  # two images, no labels: no hint
    with pytest.raises(DataError, match=r"^data item 0 is a Tensor, not a pair \(image, label\)"):
        read_data(two_images)


def test_class_names_as_an_array_are_read_and_one_string_is_refused():
    """Regression: a numpy array of names was dropped (classes '0'..'9') and a string named a class per
    letter, which then blamed a label for lying outside the letters' indices."""
    images, labels = _digits()
    names = [f"digit {c}" for c in range(10)]
    assert read_data(Items(_pil_items(images, labels), classes=np.array(names))).classes == tuple(names)
    with pytest.raises(DataError) as info:
        read_data(Items(_pil_items(images, labels), classes="airplane"))
    assert str(info.value) == ("data.classes is the string 'airplane'; give the class names as a list in label "
                               "order, e.g. ['cat', 'dog']")


def test_class_names_are_read_through_subset_and_concat():
    """Regression: ``Subset(ImageFolder(...), indices)`` - the usual way to take part of a data set - lost the
    folder's class names (the classes were named '0', '1', ...), as did a ``ConcatDataset`` of its parts."""
    images, labels = _digits(60)
    names = [f"digit {c}" for c in range(10)]
    whole = Items(_pil_items(images, labels), classes=names)
    part = torch.utils.data.Subset(whole, list(range(10, 60)))
    assert read_data(part).classes == tuple(names)
    assert read_data(torch.utils.data.Subset(part, list(range(40)))).classes == tuple(names)
    joined = torch.utils.data.ConcatDataset([part, Items(_pil_items(images[:10], labels[:10]), classes=names)])
    assert read_data(joined).classes == tuple(names)
    renamed = Items(_pil_items(images[:10], labels[:10]), classes=[f"class {c}" for c in range(10)])
    assert read_data(torch.utils.data.ConcatDataset([part, renamed])).classes == tuple(str(c) for c in range(10))
    first = torch.utils.data.Subset(whole, [k for k in range(60) if labels[k] < 5])  # the first classes: theirs
    assert read_data(first).classes == tuple(names[:5])
    missing = torch.utils.data.Subset(whole, [k for k in range(60) if labels[k] != 7])  # a class left out: named
    with pytest.raises(DataError, match=r"^class 7 \('digit 7'\) has no images"):
        read_data(missing)


@pytest.mark.parametrize("form", ["uint8 CHW tensor", "float CHW tensor", "uint8 HWC array", "float HW array"])
def test_a_torch_dataset_of_tensors_or_arrays(form):
    images, labels = _digits(40)
    colour = np.repeat(images[:, None], 3, axis=1)  # [N, 3, 8, 8]
    make = {"uint8 CHW tensor": lambda i: torch.from_numpy(colour[i]),
            "float CHW tensor": lambda i: torch.from_numpy(colour[i]).float() / 255,
            "uint8 HWC array": lambda i: colour[i].transpose(1, 2, 0),
            "float HW array": lambda i: images[i].astype(np.float32) / 255}[form]
    data = read_data(Items([(make(i), torch.tensor(int(labels[i]))) for i in range(len(labels))]))
    channels = 1 if form == "float HW array" else 3
    assert data.images.shape == (40, channels, 8, 8)
    assert torch.equal(data.images[:, 0], torch.from_numpy(images))  # float 0..1 rounds back to the same bytes


@pytest.mark.parametrize("layout", ["numpy NHWC", "numpy NHW", "torch NCHW float", "list of PIL"])
def test_a_pair_of_images_and_labels(layout):
    images, labels = _digits(40)
    given = {"numpy NHWC": images[..., None], "numpy NHW": images,
             "torch NCHW float": torch.from_numpy(images)[:, None].float() / 255,
             "list of PIL": [Image.fromarray(img, "L") for img in images]}[layout]
    data = read_data((given, torch.from_numpy(labels) if layout == "torch NCHW float" else list(labels)))
    assert data.images.shape == (40, 1, 8, 8) and torch.equal(data.images[:, 0], torch.from_numpy(images))
    assert data.labels.dtype == torch.int64 and data.labels.tolist() == labels.tolist()


def test_python_data_gets_the_image_folder_baseline_and_its_own_normalisation():
    data = read_data(_digits())
    assert baseline_for(data.name, 32) == baseline_for("imagefolder:x", 32)
    assert baseline_for(data.name, 8).pad_crop == 1
    mean, std = normalization_for(data.name, data)
    assert len(mean) == 1 and 0 < mean[0] < 1 and std[0] > 0


def test_mixed_sizes_follow_the_image_folder_rule_in_one_note():
    images, labels = _digits(30)
    items = [(Image.fromarray(img, "L").resize((8 + 2 * (k % 3), 8 + 2 * (k % 2))), int(y))
             for k, (img, y) in enumerate(zip(images, labels))]
    data = read_data(Items(items))
    assert data.images.shape[-2:] == (8, 8)  # the median shorter side
    (note,) = data.notes
    assert "images resized to 8x8 (the training images' median shorter side" in note
    assert "the centre square cropped, then resized" in note and "\n" not in note
    sized = read_data(Items(items), image_size=12)
    assert sized.images.shape[-2:] == (12, 12) and "as --image-size asks; image_size= in Python" in sized.notes[0]
    big = read_data((np.zeros((4, 100, 100, 3), np.uint8), [0, 0, 1, 1]))
    assert big.images.shape == (4, 3, 64, 64) and "capped at 64" in big.notes[0]


def test_pil_modes_are_read_as_image_folders_read_them():
    grey16 = Image.fromarray(np.full((8, 8), 65535, np.uint16))  # mode I;16 (or I): 16-bit, scaled to 8
    rgba = Image.new("RGBA", (8, 8), (200, 100, 50, 0))  # fully transparent: black
    assert read_data(Items([(grey16, 0), (grey16, 0), (grey16, 1), (grey16, 1)])).images.max() == 255
    colour = read_data(Items([(rgba, 0), (rgba, 0), (rgba.convert("RGB"), 1), (rgba.convert("RGB"), 1)]))
    assert colour.images.shape[1] == 3 and colour.images[0].max() == 0 and colour.images[2].max() == 200


def test_32_bit_grey_images_of_8_bit_values_are_read_as_their_array_is():
    """Regression: mode 'I' (``Image.fromarray`` of an int32 array, ``convert('I')``) was always read as 16-bit,
    so 0..255 pixels became 0 or 1: near-black images, without a word."""
    pixels = np.arange(64, dtype=np.int32).reshape(8, 8) * 4
    as_i = Image.fromarray(pixels)
    assert as_i.mode == "I"
    items = [(as_i, 0), (as_i, 0), (as_i.convert("L").convert("I"), 1), (as_i, 1)]
    read = read_data(Items(items)).images
    assert torch.equal(read, read_data((np.stack([pixels] * 4), [0, 0, 1, 1])).images)
    assert read.max() == 252
    wide = Image.fromarray(pixels * 256)  # above 255: 16-bit values in a 32-bit image, scaled to 8 bits
    assert read_data(Items([(wide, 0), (wide, 0), (wide, 1), (wide, 1)])).images.max() == 251



def test_32_bit_images_from_files_are_scaled_alike_whatever_their_values(tmp_path):
    """A file's 'I' image is 16-bit data (e.g. a 16-bit PGM): scaled whether it is dark or bright, so that one
    data set's images keep their relative intensities."""
    dark, bright = np.full((8, 8), 200, np.int32), np.full((8, 8), 60000, np.int32)
    for name, pixels in (("dark", dark), ("bright", bright)):
        Image.fromarray(pixels).save(tmp_path / f"{name}.tif")
    opened = [Image.open(tmp_path / f"{name}.tif") for name in ("dark", "bright", "dark", "bright")]
    assert {im.mode for im in opened} == {"I"} and opened[0].format == "TIFF"
    read = read_data(Items(list(zip(opened, [0, 0, 1, 1])))).images
    assert read[0].max() == 1 and read[1].max() == 233  # 200 and 60000 of 65535


def _hf(images: np.ndarray, labels: np.ndarray, *, names: tuple[str, str] = ("image", "label"), class_label=True):
    datasets = pytest.importorskip("datasets", reason=HF_REASON)
    features = datasets.Features({names[0]: datasets.Image(),
                                  names[1]: datasets.ClassLabel(names=[f"d{c}" for c in range(10)]) if class_label
                                  else datasets.Value("int64")})
    return datasets.Dataset.from_dict({names[0]: [Image.fromarray(img, "L") for img in images],
                                       names[1]: labels.tolist()}, features=features)


def test_a_hugging_face_dataset_finds_its_columns_and_class_names(tmp_path):
    datasets = pytest.importorskip("datasets", reason=HF_REASON)
    images, labels = _digits()
    hf = _hf(images, labels, names=("picture", "digit"))  # found by their Image and ClassLabel features
    hf.save_to_disk(str(tmp_path / "hf"))
    data = read_data(datasets.load_from_disk(str(tmp_path / "hf")))  # a local copy: nothing is downloaded
    assert data.classes[:2] == ("d0", "d1") and data.name.startswith("python:datasets.Dataset#")
    assert torch.equal(data.images, read_data((images, labels)).images)
    plain = _hf(images, labels, names=("img", "target"), class_label=False)  # found by their names
    assert read_data(plain).labels.tolist() == labels.tolist()
    named = datasets.Dataset.from_dict({"a": [img.tolist() for img in images], "b": labels.tolist(),
                                        "c": [0] * len(labels)})
    chosen = read_data(named, image_column="a", label_column="b")  # array columns, named by the caller
    assert torch.equal(chosen.images, data.images) and chosen.classes == tuple(str(c) for c in range(10))


def test_the_three_forms_of_the_same_images_and_names_are_the_same_data():
    images, labels = _digits()
    names = [f"d{c}" for c in range(10)]
    torch_set = read_data(Items(_pil_items(images, labels), classes=names))
    hf_set = read_data(_hf(images, labels))
    assert torch.equal(torch_set.images, hf_set.images) and torch_set.name.split("#")[1] == hf_set.name.split("#")[1]


def test_the_api_reads_names_folders_and_objects(tmp_path):
    from policysearch.search.api import _data

    assert _data("digits", None, None, 1, None, None) == ("digits", None)
    assert _data("imagefolder:/x", None, None, 1, None, None) == ("imagefolder:/x", None)
    (tmp_path / "cats").mkdir()
    assert _data(str(tmp_path), None, None, 1, None, None) == (f"imagefolder:{tmp_path}", None)
    assert _data(tmp_path, None, None, 1, None, None) == (f"imagefolder:{tmp_path}", None)
    assert _data("mnist", None, None, 1, None, None) == ("mnist", None)  # refused as an unknown name
    assert _data("no/such/folder", None, None, 1, None, None) == ("imagefolder:no/such/folder", None)
    name, read = _data(_digits(), None, 12, 1, None, None)
    assert name == read.name and read.images.shape[-1] == 12  # image_size applies when reading


# ------------------------------------------------------------------------------------------ bad data


def _mixed_modes():
    images, labels = _digits(20)
    items = _pil_items(images, labels)
    items[7] = (items[7][0].convert("RGB"), items[7][1])
    return Items(items)


def _bad_label(label, classes: list[str] | None = None):
    images, labels = _digits(20)
    items = _pil_items(images, labels % 3 if classes and len(classes) == 3 else labels)
    items[4] = (items[4][0], label)
    return Items(items, classes)


class Broken(Items):
    """A dataset whose item 3 raises, as a user's __getitem__ with a bug does."""

    def __getitem__(self, i: int):
        return 1 / 0 if i == 3 else self.items[i]


def _relabelled(mapping):
    images, labels = _digits(40)
    return images, np.array([mapping.get(int(y), int(y)) for y in labels])


class RandomlyTransformed(Dataset):
    """Digits with a training transform left in ``__getitem__``: each read draws another rotation."""

    def __init__(self) -> None:
        from torchvision import transforms

        self.images, self.labels = _digits(40)
        self.transform = transforms.Compose([transforms.RandomRotation(30), transforms.ToTensor()])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i], "L")), int(self.labels[i])


BAD_DATA = {
    # regression: one random view of each image became the image, and a resume then found other data
    "random transform in __getitem__": (RandomlyTransformed, r"^data item \d differs between two reads: the dataset "
                                                             r"draws at random \(a random transform in __getitem__\?\)"),
    "label not an integer": (lambda: _bad_label(2.0), r"^data item 4: the label 2\.0 is not an integer class index"),
    "label text": (lambda: _bad_label("two"), r"^data item 4: the label 'two' is not an integer class index"),
    # regression (review): an image in the label's place was shown by its repr, with its memory address
    "image as the label": (lambda: _bad_label(Image.new("L", (8, 8))),
                           r"^data item 4: the label an Image is not an integer class index \(Image\)"),
    # regression (review): a dict of splits was read as items 0, 1, ...: "data item 0: reading it raised KeyError: 0"
    "a dict of splits": (lambda: {"train": _pil_items(*_digits(20)), "test": []},
                         r"^data is a dict with keys 'train', 'test', not a data set of items 0\.\.1; pass one of "
                         r"its values, e\.g\. data\['train'\]$"),
    "a dict of items keyed from 1": (lambda: dict(enumerate(_pil_items(*_digits(20)), start=1)),
                                     r"^data is a dict with keys 1, 2, 3, 4, \.\.\., not a data set of items "
                                     r"0\.\.19; items must be keyed 0\.\.N-1; pass list\(data\.values\(\)\)$"),
    "a dict of columns": (lambda: {"image": [Image.new("L", (8, 8))] * 2, "label": [0, 1]},
                          r"^data is a dict with keys 'image', 'label', not a data set of items 0\.\.1; for columns "
                          r"give the pair \(data\['image'\], data\['label'\]\)$"),
    "one-hot label": (lambda: _bad_label(torch.eye(10)[2]), r"^data item 4: the label is a tensor of shape \(10,\)"),
    "float labels of a pair": (lambda: (_digits(20)[0], _digits(20)[1].astype(float)),
                               r"labels\[0\] = 0\.0 is not an integer class index \(labels of dtype float64\)"),
    "negative label": (lambda: _bad_label(-1), "^data item 4: label -1 is negative; labels must be the class indices 0..C-1"),
    "label beyond the class names": (lambda: _bad_label(3, classes=["a", "b", "c"]),
                                     r"^data item 4: label 3 is outside 0\.\.2, the indices of the data's 3 class names"),
    "a class name twice": (lambda: _bad_label(1, classes=[f"c{k}" for k in range(9)] + ["c4"]),
                           r"^class names: 'c4' is given twice; each class needs its own name"),
    "an item that cannot be read": (lambda: Broken(_pil_items(*_digits(20))),
                                    r"^data item 3: reading it raised ZeroDivisionError: division by zero"),
    "labels not 0..C-1": (lambda: _relabelled({3: 12}),
                          r"class 3 has no images; labels must be 0\.\.C-1 with every class present \(0\.\.12, "
                          r"up to the largest label, 12 at data item 3\)"),
    "a class with one image": (lambda: _one_image_class(), r"class 10 has only one image; every class needs at least"),
    "mixed image modes": (_mixed_modes, r"^data item 7 is colour \(PIL mode RGB\), but data item 0 is grey "
                                        r"\(PIL mode L\): the images of one data set must be all grey or all colour"),
    "mixed channels of tensors": (lambda: Items([(torch.zeros(1, 8, 8, dtype=torch.uint8), 0),
                                                 (torch.zeros(3, 8, 8, dtype=torch.uint8), 0)]),
                                  r"^data item 1 is colour \(a 3-channel tensor\), but data item 0 is grey"),
    "items not (image, label)": (lambda: Items([{"image": torch.zeros(1, 8, 8), "label": 0}]),
                                 r"^data item 0 is a dict with keys 'image', 'label', not a pair \(image, label\)"),
    "items of three": (lambda: Items([(torch.zeros(1, 8, 8), 0, "x")]),
                       r"^data item 0 is a tuple of 3, not a pair \(image, label\)"),
    "an image alone": (lambda: Items([torch.zeros(1, 8, 8)]), r"^data item 0 is a Tensor, not a pair"),
    "empty data set": (lambda: Items([]), r"^data: Items is empty \(0 items\)"),
    "empty pair": (lambda: (np.zeros((0, 8, 8), np.uint8), []), r"is empty \(0 images\)"),
    "normalised floats": (lambda: Items([(torch.full((1, 8, 8), -0.5), 0)]),
                          r"^data item 0: float image values lie in -0\.5\.\.-0\.5, not 0\.\.1; give images before "
                          r"normalisation"),
    "no len": (lambda: iter([(torch.zeros(1, 8, 8), 0)]), r"is not a data set|has no len\(\)"),
    "an image without pixels": (lambda: Items([(Image.new("RGB", (24, 24)), 0), (Image.new("RGB", (0, 0)), 1)]),
                                r"^data item 1: the image is 0x0 pixels \(width x height\); every image needs"),
    "an array without pixels": (lambda: (np.zeros((4, 0, 8), np.uint8), [0, 1, 0, 1]),
                                r"^data \(images, labels\): images: the image is 8x0 pixels"),
    "one class": (lambda: (_digits(20)[0], np.zeros(20, np.int64)),
                  r"^every image has label 0: a classifier needs at least 2 classes"),
    "uint16 values above 255": (lambda: (np.full((20, 8, 8), 1000, np.uint16), np.arange(20) % 2),
                                r"^data \(images, labels\): images: integer image values lie in 1000\.\.1000, "
                                r"not 0\.\.255"),
    "uint32 item above 255": (lambda: Items([(np.full((8, 8), 300, np.uint32), k % 2) for k in range(6)]),
                              r"^data item 0: integer image values lie in 300\.\.300, not 0\.\.255"),
    "a data set that is an int": (lambda: 5, r"^data: an int is not a data set"),
}


def _one_image_class():
    images, labels = _digits(40)
    labels = labels.copy()
    labels[5] = 10  # class 10: one image
    return images, labels


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_is_one_line_before_any_work(case, tmp_path, monkeypatch):
    from policysearch.search import tuning

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started although the search should have stopped before")

    monkeypatch.setattr(tuning, "start_ray", refuse)
    make, message = BAD_DATA[case]
    with pytest.raises(DataError, match=message) as caught:
        policysearch.search(make(), out=tmp_path / "run", epochs=1)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "run").exists()


def test_bad_hugging_face_datasets_are_one_line():
    datasets = pytest.importorskip("datasets", reason=HF_REASON)
    images, labels = _digits(20)
    hf = _hf(images, labels)
    with pytest.raises(DataError, match="data is a DatasetDict with splits train; pass one split"):
        read_data(datasets.DatasetDict({"train": hf}))
    with pytest.raises(DataError, match=r"image_column='photo' is not a column of the dataset; its columns: image"):
        read_data(hf, image_column="photo")
    with pytest.raises(DataError, match="found no label column among image, other"):
        read_data(datasets.Dataset.from_dict({"image": [Image.fromarray(i, "L") for i in images],
                                              "other": labels.tolist()}))
    with pytest.raises(DataError, match="data: the Hugging Face dataset is empty"):
        read_data(hf.select([]))
    with pytest.raises(DataError, match="image_column= and label_column= name columns of a Hugging Face dataset"):
        read_data((images, labels), image_column="image")


def _image_files(tmp_path, count: int = 6, truncated: int = 3) -> list[str]:
    """``count`` PNG files of digits, the one at index ``truncated`` cut after its header."""
    images, _ = _digits(count)
    paths = []
    for k, image in enumerate(images):
        paths.append(str(tmp_path / f"{k}.png"))
        Image.fromarray(image, "L").save(paths[-1])
    data = (tmp_path / f"{truncated}.png").read_bytes()
    (tmp_path / f"{truncated}.png").write_bytes(data[:60])
    return paths


def test_a_damaged_file_opened_by_a_dataset_is_named(tmp_path):
    """Regression: a __getitem__ returning Image.open(path) (PIL decodes lazily) of a truncated file gave a
    traceback from inside Pillow, naming neither the item nor the file."""
    paths = _image_files(tmp_path)
    lazy = Items([(Image.open(path), k % 2) for k, path in enumerate(paths)])
    with pytest.raises(DataError, match=rf"^cannot read data item 3 \(image '{paths[3]}'\): image file is "
                                        r"truncated.*; remove or replace the file$"):
        read_data(lazy)


def test_a_damaged_hugging_face_image_is_named(tmp_path):
    """Regression: datasets decodes a row's image while the rows are iterated; a damaged one gave Pillow's
    traceback without its row."""
    datasets = pytest.importorskip("datasets", reason=HF_REASON)
    paths = _image_files(tmp_path)
    files = datasets.Dataset.from_dict({"image": paths, "label": [k % 2 for k in range(6)]})
    with pytest.raises(DataError, match=rf"^cannot read row 3, column 'image' \(image '{paths[3]}'\): image file "
                                        r"is truncated.*; remove or replace the file$"):
        read_data(files.cast_column("image", datasets.Image()))
    good = (tmp_path / "0.png").read_bytes()
    stored = datasets.Dataset.from_dict({"image": [{"bytes": b"not an image", "path": None}] + [
        {"bytes": good, "path": None}] * 3, "label": [0, 1, 0, 1]}).cast_column("image", datasets.Image())
    with pytest.raises(DataError, match=r"^cannot read row 0, column 'image': cannot identify image file; remove"):
        read_data(stored)


def test_a_python_data_name_cannot_be_loaded_by_name():
    from policysearch.training.data import load_dataset

    with pytest.raises(DataError, match="names data that was given as Python objects"):
        load_dataset("python:arrays#0123456789ab")


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.uint64])
def test_wide_unsigned_images_in_0_255_read_as_their_levels(dtype):
    """Regression: torch has no min/max for uint16-64, so such images crashed inside the range check."""
    images, labels = _digits(20)
    data = read_data((images.astype(dtype), labels))
    assert data.images.dtype == torch.uint8 and torch.equal(data.images, read_data((images, labels)).images)
    items = read_data(Items([(torch.from_numpy(images[k].astype(dtype)), int(labels[k])) for k in range(20)]))
    assert torch.equal(items.images, data.images)


def test_images_too_large_for_memory_at_the_asked_size_are_refused_before_resizing(monkeypatch, tmp_path):
    """Regression: image_size=4096 resized every image until the machine ran out of memory."""
    from policysearch.training import data as data_module

    images, labels = np.zeros((16, 8, 8), dtype=np.uint8), np.arange(16) % 2
    monkeypatch.setattr(data_module, "available_memory", lambda: 2**28)  # 256 MiB free
    with pytest.raises(DataError, match=r"16 images of 1x4096x4096 take 0\.25 GiB in memory, more than half of the "
                                        r"0\.25 GiB free here") as caught:
        read_data((images, labels), image_size=4096)
    assert "--image-size" in str(caught.value)  # the command line's words, which the Python API rewords:
    with pytest.raises(DataError, match=r"choose a smaller image_size= or give fewer images$"):
        policysearch.search((images, labels), image_size=4096, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert len(read_data((images, labels), image_size=32)) == 16
