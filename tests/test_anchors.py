"""The benchmark's anchors: torchvision's and timm's own classes, per image, seeded per run, leaking nothing."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from policysearch.benchmark import anchors
from policysearch.benchmark.anchors import ANCHORS, AnchorAugment, AnchorUnavailable, anchor_seed, isolated_global_rng
from policysearch.augment.policy import Baseline
from policysearch.augment.transforms import BaselineAugment
from _images import natural_array

TORCHVISION = [name for name, a in ANCHORS.items() if a.library == "torchvision"]


def _batch(channels: int, n: int = 12, size: int = 16) -> torch.Tensor:
    arrays = [natural_array(size, size, channels, seed=i) for i in range(n)]
    return torch.stack([torch.from_numpy(a.reshape(size, size, channels).copy()).permute(2, 0, 1) for a in arrays])


def _by_hand(transform, batch: torch.Tensor, seed: int) -> torch.Tensor:
    """The library's transform on each image as PIL, its global generators seeded as a user would."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    out = []
    for image in batch:
        array = image.permute(1, 2, 0).numpy()
        pil = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
        result = np.array(transform(pil)).reshape(array.shape)
        out.append(torch.from_numpy(result).permute(2, 0, 1))
    return torch.stack(out)


def test_anchor_table_names_the_constructor_calls() -> None:
    assert set(ANCHORS) == {"tv-autoaugment", "tv-randaugment", "tv-trivialaugmentwide", "tv-augmix",
                            "timm-rand-m9-mstd0.5-inc1"}
    assert ANCHORS["tv-trivialaugmentwide"].call == "torchvision.transforms.v2.TrivialAugmentWide()"
    assert "AutoAugmentPolicy.CIFAR10" in ANCHORS["tv-autoaugment"].call
    assert '"rand-m9-mstd0.5-inc1"' in ANCHORS["timm-rand-m9-mstd0.5-inc1"].call


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_anchor_is_torchvisions_class_with_its_defaults(name: str, channels: int) -> None:
    from torchvision.transforms import v2

    classes = {"tv-autoaugment": lambda: v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10),
               "tv-randaugment": v2.RandAugment, "tv-trivialaugmentwide": v2.TrivialAugmentWide,
               "tv-augmix": v2.AugMix}
    batch = _batch(channels)
    augment = AnchorAugment(ANCHORS[name], 16, [0.5] * channels)
    assert repr(augment.transform) == repr(classes[name]())  # the class, at its default arguments
    out = augment(batch, torch.Generator().manual_seed(3))
    seed = anchor_seed(torch.Generator().manual_seed(3))
    expected = _by_hand(classes[name](), batch, seed)
    assert out.dtype == torch.uint8 and out.shape == batch.shape
    assert torch.equal(out, expected)
    assert not torch.equal(out, batch)  # it did augment


def test_after_the_baseline_the_crop_and_flip_come_first() -> None:
    from torchvision.transforms import v2

    batch = _batch(3)
    baseline = Baseline(pad_crop=2, hflip=True)
    augment = AnchorAugment(ANCHORS["tv-trivialaugmentwide"], 16, [0.5] * 3, baseline)
    out = augment(batch, torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(5)
    cropped = BaselineAugment(baseline)(batch, generator)
    assert torch.equal(out, _by_hand(v2.TrivialAugmentWide(), cropped, anchor_seed(generator)))


def test_a_run_is_reproducible_from_its_seed_and_leaks_no_global_state() -> None:
    batch = _batch(3)
    augment = AnchorAugment(ANCHORS["tv-randaugment"], 16, [0.5] * 3)
    torch.manual_seed(123)
    random.seed(4)
    np.random.seed(5)
    states = torch.get_rng_state(), random.getstate(), np.random.get_state()
    threads = torch.get_num_threads()
    first = augment(batch, torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), states[0]) and random.getstate() == states[1]
    after = np.random.get_state()
    assert after[0] == states[2][0] and np.array_equal(after[1], states[2][1]) and after[2:] == states[2][2:]
    assert torch.get_num_threads() == threads
    torch.manual_seed(999)  # the global state does not change the result: only the run's generator does
    assert torch.equal(augment(batch, torch.Generator().manual_seed(0)), first)
    assert not torch.equal(augment(batch, torch.Generator().manual_seed(1)), first)
    generator = torch.Generator().manual_seed(0)  # successive batches of one run differ
    assert not torch.equal(augment(batch, generator), augment(batch, generator))


def test_isolated_global_rng_restores_on_error() -> None:
    torch.manual_seed(7)
    state = torch.get_rng_state()
    with pytest.raises(RuntimeError), isolated_global_rng(1):
        torch.rand(3)
        raise RuntimeError("boom")
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("channels", [3, 1])
def test_timm_anchor_is_timms_randaugment_with_create_transforms_hparams(channels: int) -> None:
    pytest.importorskip("timm", reason="timm is an optional extra: pip install 'policysearch[timm]'")
    from timm.data.auto_augment import rand_augment_transform

    batch = _batch(channels, n=40)
    mean = [0.4] * channels
    augment = AnchorAugment(ANCHORS["timm-rand-m9-mstd0.5-inc1"], 16, mean)
    assert anchors.timm_hparams(16, mean) == {"translate_const": 7, "img_mean": (102,) * channels}
    out = augment(batch, torch.Generator().manual_seed(2))
    reference = rand_augment_transform("rand-m9-mstd0.5-inc1", anchors.timm_hparams(16, mean))
    assert [op.name for op in augment.transform.ops] == [op.name for op in reference.ops]
    assert {op.magnitude for op in reference.ops} == {9} and reference.num_layers == 2
    assert all(op.magnitude_std == 0.5 for op in reference.ops)
    expected = _by_hand(reference, batch, anchor_seed(torch.Generator().manual_seed(2)))
    assert torch.equal(out, expected) and not torch.equal(out, batch)


def test_timm_zero_bit_posterize_is_black_as_under_pillow_12() -> None:
    pytest.importorskip("timm", reason="timm is an optional extra: pip install 'policysearch[timm]'")
    from timm.data import auto_augment

    image = Image.fromarray(natural_array(8, 8, 3))
    assert np.array_equal(np.array(anchors._posterize_pillow12(image, 0)), np.zeros((8, 8, 3), np.uint8))
    grey = image.convert("L")
    assert np.array(anchors._posterize_pillow12(grey, 0)).max() == 0
    for bits in (1, 3, 8):
        assert np.array_equal(np.array(anchors._posterize_pillow12(image, bits)),
                              np.array(auto_augment.posterize(image, bits)))
    transform = AnchorAugment(ANCHORS["timm-rand-m9-mstd0.5-inc1"], 16, [0.5] * 3).transform
    posterize = next(op for op in transform.ops if op.name == "PosterizeIncreasing")
    assert posterize.level_fn(10.0, posterize.hparams) == (0,)  # magnitude 9 + noise, clipped at 10: 0 bits
    posterize.prob, posterize.magnitude, posterize.magnitude_std = 1.0, 10, 0
    assert np.array(posterize(image)).max() == 0  # timm's op itself, no ValueError


def test_missing_library_is_reported_not_raised_at_import(monkeypatch) -> None:
    real = anchors.importlib.util.find_spec
    monkeypatch.setattr(anchors.importlib.util, "find_spec", lambda name: None if name == "timm" else real(name))
    anchor = ANCHORS["timm-rand-m9-mstd0.5-inc1"]
    assert anchor.available() == "timm is not installed (pip install 'policysearch[timm]')"
    with pytest.raises(AnchorUnavailable, match="timm-rand-m9-mstd0.5-inc1: timm is not installed"):
        AnchorAugment(anchor, 16, [0.5])
    assert ANCHORS["tv-augmix"].available() is None
