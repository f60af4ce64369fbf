"""Models that start from a checkpoint: loading, a new head, grey images, a frozen backbone, and the search
and benchmark starting from weights. Every checkpoint is made here, in tmp_path."""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from policysearch.benchmark import command, presets, runner
from policysearch.training.data import load_dataset, normalization_for, stratified_indices
from policysearch.training.models import build_model
from policysearch.training.pretrained import ModelSpec, WeightsError, check_model, create_model, fit_image_size, head_names
from policysearch.search.config import SearchConfig
from policysearch.training.train import TrainConfig, train_model

# A search setting whose trainings are a few steps each (as in test_search.SMALL).
SMALL = dict(dataset="digits", train_size=200, splits=2, trials=4, epochs=1, top_n=2, seed=3, cpus_per_trial=1.0,
             max_concurrent=1, min_steps=20, selection_folds=2, strengths=(1.0,))


def _backbone(model: nn.Module) -> dict[str, torch.Tensor]:
    heads = head_names(model)
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith(heads)}


def _saved(tmp_path: Path, model: nn.Module, name: str = "w.pt") -> str:
    path = tmp_path / name
    torch.save(model.state_dict(), path)
    return str(path)


@pytest.fixture
def small_cnn_weights(tmp_path: Path) -> str:
    torch.manual_seed(7)
    model = build_model("small_cnn", 10, 1)
    with torch.no_grad():  # not the fresh initialisation, so loading is visible
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return _saved(tmp_path, model)


def test_our_models_state_dict_loads_and_gets_a_new_head(small_cnn_weights: str, tmp_path: Path) -> None:
    saved = torch.load(small_cnn_weights, weights_only=True)
    model = create_model("small_cnn", 4, 1, weights=small_cnn_weights)
    assert model.fc.out_features == 4
    for key, value in model.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(value, saved[key]), key
    # the head is new also where the class count is the same
    same = create_model("small_cnn", 10, 1, weights=small_cnn_weights)
    assert not torch.equal(same.fc.weight, saved["fc.weight"])
    # our trainer's checkpoints ({"model": state, ...}) and DataParallel's "module." keys load too
    torch.save({"version": 1, "model": saved}, tmp_path / "ckpt.pt")
    torch.save({f"module.{k}": v for k, v in saved.items()}, tmp_path / "dp.pt")
    for path in (tmp_path / "ckpt.pt", tmp_path / "dp.pt"):
        loaded = create_model("small_cnn", 10, 1, weights=path)
        assert torch.equal(loaded.features[0].weight, saved["features.0.weight"])


def test_a_3_channel_checkpoint_takes_grey_images_as_repeated_channels(tmp_path: Path) -> None:
    torch.manual_seed(0)
    weights = _saved(tmp_path, build_model("small_cnn", 10, 3))
    torch.manual_seed(1)
    grey = create_model("small_cnn", 10, 1, weights=weights).eval()
    torch.manual_seed(1)
    colour = create_model("small_cnn", 10, 3, weights=weights).eval()
    x = torch.randn(4, 1, 16, 16)
    assert grey.features[0].in_channels == 1
    torch.testing.assert_close(grey(x), colour(x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-5)
    with pytest.raises(WeightsError, match="takes 1-channel images, the data has 3 channels"):
        create_model("small_cnn", 10, 3, weights=_saved(tmp_path, build_model("small_cnn", 10, 1), "grey.pt"))


def test_grey_images_into_colour_weights_are_said_with_the_data_notes(tmp_path: Path) -> None:
    """A trial's find: grey data ran on RGB weights with their first convolution summed, and nothing said so."""
    from policysearch.search.prepare import prepare
    from policysearch.training.pretrained import ModelSpec, grey_input_note

    colour = _saved(tmp_path, build_model("small_cnn", 10, 3))
    prepared = prepare(SearchConfig(**SMALL, weights=colour))  # digits: 1 channel
    assert prepared.data.notes[-1] == (f"1-channel images into weights made for 3 ({colour}): the first convolution "
                                       "features.0 sums its kernels over the colour channels, the same as repeating "
                                       "the grey channel 3 times")
    grey = _saved(tmp_path, build_model("small_cnn", 10, 1), "grey.pt")
    assert grey_input_note(ModelSpec("small_cnn", 10, 1, grey)) == ""  # grey weights: nothing to say
    assert grey_input_note(ModelSpec("small_cnn", 10, 3, colour)) == ""
    assert grey_input_note(ModelSpec("small_cnn", 10, 1)) == ""


def test_a_searched_policy_records_the_digest_of_its_weights(small_cnn_weights: str, tmp_path: Path) -> None:
    """A trial's find: only config.json held the digest; policy.json named a path whose file may change."""
    from policysearch.search.inprocess import run_search

    result = run_search(SearchConfig(**{**SMALL, "algorithm": "optuna"}, weights=small_cnn_weights), tmp_path / "run",
                        stream=io.StringIO())
    stored = json.loads((tmp_path / "run" / "config.json").read_text(encoding="utf-8"))["weights_digest"]
    assert stored.startswith("w1-") and result.policy.metadata["weights_digest"] == stored


def test_torchvision_resnet18_by_name_from_a_local_state_dict(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None)  # 1000 classes, as an ImageNet checkpoint
    weights = _saved(tmp_path, reference)
    torch.manual_seed(1)
    model = create_model("torchvision:resnet18", 10, 3, weights=weights)
    assert isinstance(model.fc, nn.Linear) and model.fc.out_features == 10
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in _backbone(model).items())
    torch.manual_seed(1)
    grey = create_model("torchvision:resnet18", 10, 1, weights=weights).eval()
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(grey(x), model.eval()(x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-4)
    check_model(ModelSpec("torchvision:resnet18", 10, 1, weights), 32)


def test_a_torchvision_model_without_a_linear_head_is_a_model_error() -> None:
    """Regression (a trial): torchvision:squeezenet1_0 without weights was refused as a WeightsError, which names
    no weights problem; the model is what does not fit."""
    from policysearch.training.pretrained import ModelError

    with pytest.raises(ModelError, match=r"^SqueezeNet has no nn.Linear classifier head \(it classifies with another "
                                         r"layer, such as SqueezeNet's Conv2d\)"):
        create_model("torchvision:squeezenet1_0", 10, 3)


def test_torchvision_models_get_at_least_32_pixels_unless_a_size_is_asked() -> None:
    digits = load_dataset("digits", split="train")  # 16 x 16
    bigger = fit_image_size(digits, "torchvision:resnet18", None)
    assert bigger.images.shape[-1] == 32 and "resized to 32x32 from 16x16" in bigger.notes[-1]
    assert fit_image_size(digits, "small_cnn", None) is digits
    # asked for: as loaded, and said (regression: a timm or torchvision model trained on 4x4 images without a word)
    kept = fit_image_size(digits, "torchvision:resnet18", 16)
    assert kept.images is digits.images and kept.notes[-1] == (
        "digits/train: images kept at 16x16 as --image-size (image_size= in Python) asks, below the 32x32 "
        "torchvision:resnet18 is built for; it runs on them, at a size it was not designed for (leave the size out "
        "to have the images resized up to 32)")
    assert fit_image_size(digits, "small_cnn", 16) is digits


def test_images_are_resized_once_from_their_originals_to_the_side_a_model_needs(tmp_path: Path) -> None:
    """Regression (a trial): images were first resized to their median shorter side (17 px), then again to the
    32 px a timm model needs, losing the detail of the larger ones; digits went 8 -> 16 -> 32. The loaders now
    take the model's least side, so each image is resized once, exactly as an asked-for 32 does."""
    from _images import natural_pil

    from policysearch.search.api import _data
    from policysearch.training.pretrained import min_image_size
    from policysearch.training.user_data import read_data

    least = min_image_size("timm:resnet18")
    assert least == 32
    digits = load_dataset("digits", least_side=least)
    assert torch.equal(digits.images, load_dataset("digits", image_size=least).images)
    assert not torch.equal(digits.images, fit_image_size(load_dataset("digits"), "timm:resnet18", None).images)
    assert digits.notes == ("digits/train: 1078 images resized to 32x32 from 8x8 (the smallest side the model is "
                            "built for; pass --image-size (image_size= in Python) to choose)",)
    assert fit_image_size(digits, "timm:resnet18", None) is digits
    pictures = [natural_pil(41, 30, seed=k) if k % 2 else natural_pil(17, 23, seed=k) for k in range(8)]
    labels = [k % 2 for k in range(8)]
    for cls in ("a", "b"):
        (tmp_path / "folder" / cls).mkdir(parents=True)
    for k, picture in enumerate(pictures):
        picture.save(tmp_path / "folder" / "ab"[labels[k]] / f"{k}.png")
    folder = f"imagefolder:{tmp_path / 'folder'}"
    once = load_dataset(folder, least_side=least)
    assert torch.equal(once.images, load_dataset(folder, image_size=least).images)
    assert "resized to 32x32 (the smallest side the model is built for; the training images' median shorter side " \
           "is 17 px;" in once.notes[0]
    tensors = [torch.from_numpy(np.array(p)).permute(2, 0, 1).contiguous() for p in pictures]
    _, read = _data((tensors, labels), None, None, least, None, None)  # what search(data, model="timm:...") reads
    assert torch.equal(read.images, read_data((tensors, labels), image_size=least).images)
    assert "32x32 (the smallest side the model is built for" in read.notes[0]


def test_a_run_from_before_the_one_resize_resumes_with_its_images_as_they_were(tmp_path: Path) -> None:
    """Regression (a review): a run an earlier version started (images resized to their own rule, then up to
    the model's side) was refused on --resume as "the training images differ", since they now load at the
    model's side at once. Its config.json has no "sizing": it loads as it did; a new run records it."""
    from policysearch.search import rundir
    from policysearch.search.prepare import prepare
    from policysearch.training.data import stratified_subset
    from policysearch.training.user_data import fingerprint

    model = "torchvision:resnet18"
    config = SearchConfig(dataset="digits", model=model, train_size=60, splits=2, selection_folds=2)
    old = fit_image_size(stratified_subset(load_dataset("digits"), 60, seed=0), model, None)  # 8 -> 16 -> 32
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "config.json").write_text(json.dumps({"run_format": rundir.RUN_FORMAT, "search": {},
                                                     "data_fingerprint": fingerprint(old)}), encoding="utf-8")
    assert rundir.least_side(earlier, model, resume=True) == 1
    resumed = prepare(config, new_run=False, least_side=rundir.least_side(earlier, model, resume=True))
    assert fingerprint(resumed.data) == fingerprint(old)
    new = rundir.Run(tmp_path / "new", "new-run", str(tmp_path / "new" / "tune"))
    new.run_dir.mkdir()
    rundir.write_config(new, config)
    assert rundir.least_side(new.run_dir, model, resume=True) == rundir.least_side(earlier, model, resume=False) == 32
    (earlier / "config.json").write_text(json.dumps({"sizing": 3}), encoding="utf-8")  # not from before it
    assert rundir.least_side(earlier, model, resume=True) == 32
    assert fingerprint(prepare(config).data) != fingerprint(old)  # resized once, 8 -> 32


def _one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text and len(text) < 400, text
    return text


def test_a_checkpoint_that_does_not_fit_is_one_line(small_cnn_weights: str, tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as caught:
        create_model("wrn40_2", 10, 1, weights=small_cnn_weights)
    text = _one_line(caught)
    assert "does not fit the model (--model wrn40_2): missing keys: stem.weight" in text and "unexpected keys: features.0.weight" in text
    assert "more" in text  # the lists are shortened
    state = torch.load(small_cnn_weights, weights_only=True)
    state["features.4.weight"] = torch.zeros(32, 32, 3, 3)  # the second stage narrowed
    torch.save(state, tmp_path / "narrow.pt")
    with pytest.raises(WeightsError) as caught:
        create_model("small_cnn", 10, 1, weights=tmp_path / "narrow.pt")
    assert "shapes differ (checkpoint vs model): features.4.weight [32, 32, 3, 3] vs [64, 32, 3, 3]" in _one_line(caught)


class _Payload:
    """Unpickling this would create a file: weights_only loading must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


class _ShellPayload(_Payload):
    """The same through os.system, a function torch blocks by its module (its error is worded otherwise)."""

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.parametrize("kind", ["missing", "folder", "text", "junk", "code", "shell", "pickle", "tensor",
                                  "numbers"])
def test_a_file_that_is_not_a_state_dict_is_refused(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    marker = tmp_path / "code-ran"
    expected = {"missing": "no such file", "folder": "is a folder",
                "text": r"cannot be read with torch.load\(weights_only=True\): not a file of tensors saved by "
                        r"torch.save \(Unsupported operand \d+\)$",
                "code": r"cannot be read with torch.load\(weights_only=True\): it holds Python objects, not only "
                        r"tensors \(it needs \S+\); save model.state_dict\(\) instead$",
                # regression: torch's advice to re-run with weights_only=False was shown, its finding cut off
                "shell": r"cannot be read with torch.load\(weights_only=True\): it holds Python objects, not only "
                         r"tensors \(it needs \w+\.system, which torch blocks\); save model.state_dict\(\) instead$",
                "pickle": r"cannot be read with torch.load\(weights_only=True\): not a file of tensors saved by "
                          r"torch.save \(Unsupported operand \d+\)$",
                "tensor": "holds Tensor, not a state dict",
                # torch's loader raises KeyError on these five bytes: it was a 56-line traceback
                "junk": r"cannot be read with torch.load\(weights_only=True\): not a file saved by torch.save "
                        r"\(KeyError: \d+\)$",
                "numbers": r"holds a mapping with values that are not tensors \(keys: lr, epoch\), not a state dict"}[kind]
    if kind == "folder":
        path.mkdir()
    elif kind == "text":
        path.write_text("not weights\n")
    elif kind == "code":
        torch.save({"w": torch.zeros(1), "x": _Payload(marker)}, path)
    elif kind == "shell":
        torch.save({"w": torch.zeros(1), "x": _ShellPayload(marker)}, path)
    elif kind == "pickle":  # regression: torch warned the user to file an issue about its protocol
        path.write_bytes(pickle.dumps({"w": [1.0]}, protocol=4))
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "junk":
        path.write_bytes(b"hello")
    elif kind == "numbers":
        torch.save({"lr": 0.1, "epoch": 3}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one line, nothing else
        with pytest.raises(WeightsError, match=expected) as caught:
            create_model("small_cnn", 10, 1, weights=path)
    assert _one_line(caught).startswith(f"--weights {path}")
    assert not marker.exists()


def test_the_checkpoints_of_pytorchs_tutorial_and_of_lightning_load(small_cnn_weights: str, tmp_path: Path) -> None:
    """Regression: ``{"model_state_dict": ..., "epoch": 3}`` (PyTorch's saving tutorial) was "a mapping with
    values that are not tensors", and a Lightning checkpoint's keys, which start with the attribute holding
    the network (``model.``), were "unexpected keys"."""
    saved = torch.load(small_cnn_weights, weights_only=True)
    torch.save({"model_state_dict": saved, "epoch": 3}, tmp_path / "tutorial.pt")
    torch.save({"state_dict": {f"model.{k}": v for k, v in saved.items()}, "epoch": 3}, tmp_path / "lightning.ckpt")
    for name in ("tutorial.pt", "lightning.ckpt"):
        model = create_model("small_cnn", 10, 1, weights=tmp_path / name)
        assert torch.equal(model.features[0].weight, saved["features.0.weight"]), name
    colour = build_model("small_cnn", 10, 3).state_dict()  # an RGB model's Lightning file, fine-tuned on grey
    torch.save({"state_dict": {f"model.{k}": v for k, v in colour.items()}}, tmp_path / "rgb.ckpt")
    grey = create_model("small_cnn", 10, 1, weights=tmp_path / "rgb.ckpt")
    assert torch.equal(grey.features[0].weight, colour["features.0.weight"].sum(1, keepdim=True))

    # Regression: a Lightning module holding a DataParallel model ("model.module.") was refused as unexpected keys
    torch.save({"state_dict": {f"model.module.{k}": v for k, v in colour.items()}}, tmp_path / "dp.ckpt")
    torch.save({f"module.model.module.{k}": v for k, v in saved.items()}, tmp_path / "dp-lightning-dp.pt")
    from policysearch.training.pretrained import _unwrapped

    assert _unwrapped({}, {"a": torch.zeros(1)}) == {}  # an empty mapping starts with every prefix (review: a hang)
    grey = create_model("small_cnn", 10, 1, weights=tmp_path / "dp.ckpt")  # RGB, so the stem is found under both
    assert torch.equal(grey.features[0].weight, colour["features.0.weight"].sum(1, keepdim=True))
    model = create_model("small_cnn", 10, 1, weights=tmp_path / "dp-lightning-dp.pt")
    assert torch.equal(model.features[0].weight, saved["features.0.weight"])

    class Wrapper(nn.Module):  # a model whose own keys start with "model.": nothing is stripped
        def __init__(self, num_classes: int, in_channels: int) -> None:
            super().__init__()
            self.model = build_model("small_cnn", num_classes, in_channels)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x)

    torch.save(Wrapper(10, 1).state_dict(), tmp_path / "wrapper.pt")
    wrapped = torch.load(tmp_path / "wrapper.pt", weights_only=True)
    model = create_model("callable:Wrapper", 10, 1, weights=tmp_path / "wrapper.pt", builder=Wrapper)
    assert torch.equal(model.model.features[0].weight, wrapped["model.features.0.weight"])


def test_both_heads_of_a_distilled_timm_model_start_anew(tmp_path: Path) -> None:
    """Regression: timm's distilled models return two heads from ``get_classifier()``; the last nn.Linear,
    ``head_dist``, was taken for the head, so their own checkpoints were refused (``head.weight [1000, 192]
    vs [10, 192]``) and a checkpoint of the data's class count would have kept its ``head``."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    imagenet = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False)
    path = tmp_path / "deit.pt"
    torch.save(imagenet.state_dict(), path)
    model = create_model("timm:deit_tiny_distilled_patch16_224", 10, 3, weights=path)
    assert head_names(model) == ("head", "head_dist")
    assert model.head.out_features == model.head_dist.out_features == 10
    frozen = create_model("timm:deit_tiny_distilled_patch16_224", 1000, 3, weights=path, freeze_backbone=True)
    assert not torch.equal(frozen.head.weight, imagenet.head.weight)  # new also at the same class count
    assert not torch.equal(frozen.head_dist.weight, imagenet.head_dist.weight)
    assert {n.split(".")[0] for n, p in frozen.named_parameters() if p.requires_grad} == {"head", "head_dist"}


def test_a_convolutional_classifier_after_a_linear_layer_is_refused(tmp_path: Path) -> None:
    """Regression: in a model that classifies with a 1x1 convolution and has an nn.Linear inside (a
    squeeze-and-excitation block), that Linear was taken for the head: reset, and the only layer trained with
    a frozen backbone, while the true classifier kept the checkpoint's weights."""

    class ConvHead(nn.Module):
        def __init__(self, num_classes: int, in_channels: int) -> None:
            super().__init__()
            self.stem = nn.Conv2d(in_channels, 8, 3, padding=1)
            self.excite = nn.Linear(8, 8)
            self.classifier = nn.Conv2d(8, num_classes, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.stem(x)
            h = h * torch.sigmoid(self.excite(h.mean((2, 3))))[:, :, None, None]
            return self.classifier(h).mean((2, 3))

    torch.save(ConvHead(10, 1).state_dict(), tmp_path / "conv.pt")
    with pytest.raises(WeightsError, match=r"^ConvHead seems to classify with the Conv2d classifier \(10 outputs, "
                                           r"after its last nn.Linear excite\)"):
        create_model("callable:ConvHead", 10, 1, weights=tmp_path / "conv.pt", builder=ConvHead)

    class LinearFirst(nn.Module):  # its head defined first, and a convolution as wide as the class count
        def __init__(self, num_classes: int, in_channels: int) -> None:
            super().__init__()
            self.fc = nn.Linear(8, num_classes)
            self.body = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.Conv2d(8, 8, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.body(x).mean((2, 3)))

    torch.save(LinearFirst(8, 1).state_dict(), tmp_path / "first.pt")  # 8 classes: Conv2d(8, 8) is no classifier
    model = create_model("callable:LinearFirst", 8, 1, weights=tmp_path / "first.pt", builder=LinearFirst,
                         freeze_backbone=True)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]


def test_a_frozen_backbone_trains_only_the_head(small_cnn_weights: str) -> None:
    model = create_model("small_cnn", 10, 1, weights=small_cnn_weights, freeze_backbone=True)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
    before, head = _backbone(model), model.fc.weight.detach().clone()
    data = load_dataset("digits", split="train")
    data = data.subset(np.arange(64))
    mean, std = normalization_for("digits", data)
    train_model(model, data, TrainConfig(epochs=1, batch_size=16, weight_decay=5e-4), mean=mean, std=std)
    after = _backbone(model)
    for key in before:  # weights and BatchNorm statistics: BN in the frozen part stays in eval mode
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(head, model.fc.weight)
    with pytest.raises(ValueError, match="--freeze-backbone needs --weights"):
        create_model("small_cnn", 10, 1, freeze_backbone=True)


class _NormWithoutParameters(nn.Module):
    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.conv, self.norm = nn.Conv2d(in_channels, 8, 3), nn.BatchNorm2d(8, affine=False)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(self.conv(x)).mean(dim=(2, 3)))


def test_a_frozen_backbone_keeps_the_statistics_of_a_batchnorm_without_parameters(tmp_path: Path) -> None:
    """A trial's find: BatchNorm2d(affine=False) has no parameters to be frozen, so it stayed in training mode
    and its running statistics drifted in a frozen backbone; unfrozen, it still trains."""
    from policysearch.training.train import train_mode

    torch.save(_NormWithoutParameters(3, 3).state_dict(), tmp_path / "w.pt")
    for freeze in (True, False):
        model = create_model("callable:_NormWithoutParameters", 3, 3, weights=tmp_path / "w.pt",
                             builder=_NormWithoutParameters, freeze_backbone=freeze)
        train_mode(model)
        before = model.norm.running_mean.clone()
        model(torch.randn(4, 3, 8, 8))
        assert model.norm.training is not freeze
        assert torch.equal(before, model.norm.running_mean) is freeze
    # a review's find: one frozen parameter outside the head (a user's frozen embedding) is no frozen backbone
    partly = _NormWithoutParameters(3, 3)
    partly.conv.bias.requires_grad_(False)
    train_mode(partly)
    assert partly.norm.training


def test_search_settings_for_weights_are_checked() -> None:
    with pytest.raises(ValueError, match="--freeze-backbone needs --weights"):
        SearchConfig(freeze_backbone=True)
    with pytest.raises(ValueError, match="--model names no torchvision classification model: 'resnet_18'; did you "
                                         r"mean torchvision:resnet18\?"):
        SearchConfig(model="torchvision:resnet_18")
    with pytest.raises(ValueError, match=r"'vit-b-16'; did you mean torchvision:vit_b_16\?"):  # regression: examples
        SearchConfig(model="torchvision:vit-b-16")
    with pytest.raises(ValueError, match=r"'zzzqqq'; for example torchvision:resnet18, "):
        SearchConfig(model="torchvision:zzzqqq")
    with pytest.raises(ValueError, match=r"--model must be one of small_cnn.* or torchvision:NAME|--model must be"):
        SearchConfig(model="smallcnn")
    assert SearchConfig(model="torchvision:resnet18").model == "torchvision:resnet18"
    # regression: a state dict given where the file's path goes was quoted whole, tensors and all
    with pytest.raises(ValueError) as caught:
        SearchConfig(weights=build_model("small_cnn", 10, 1).state_dict())
    assert len(str(caught.value)) < 300 and "\n" not in str(caught.value)
    assert "weights must be a string or None, got an OrderedDict of 20 entries; a state dict goes in as a file" in str(
        caught.value)
    # regression (review): --weights "" read as the current folder ("--weights . is a folder")
    with pytest.raises(ValueError, match=r"^--weights is empty; give a weights file \(a saved state dict\), or leave"):
        SearchConfig(weights=" ")


def test_weights_are_kept_as_an_absolute_path(tmp_path: Path, monkeypatch) -> None:
    # Ray's workers read the file from folders of their own: a path relative to the user's folder must not reach them.
    monkeypatch.chdir(tmp_path)
    config = SearchConfig(weights="runs/pretrained.pt")
    assert config.weights == str(tmp_path / "runs" / "pretrained.pt")
    assert SearchConfig.from_dict(dataclasses.asdict(config)) == config  # a stored run resumes with the same path


def test_a_bad_weights_file_stops_the_search_before_ray(tmp_path: Path, monkeypatch) -> None:
    from policysearch import search
    from policysearch.search import tuning

    def refuse(config):
        raise AssertionError("Ray was started although the weights are wrong")

    monkeypatch.setattr(tuning, "start_ray", refuse)
    torch.save(build_model("resnet18", 10, 1).state_dict(), tmp_path / "other.pt")
    for weights, message in ((tmp_path / "nowhere.pt", "no such file"), (tmp_path / "other.pt", "does not fit")):
        with pytest.raises(WeightsError, match=message) as caught:
            search.run_search(SearchConfig(**SMALL, weights=str(weights)), tmp_path / "run")
        _one_line(caught)
        assert not (tmp_path / "run").exists()


def test_an_unreadable_weights_file_is_refused_before_the_images_are_read(tmp_path: Path, monkeypatch) -> None:
    """Regression: every image was read first, seconds to minutes on a large folder, before a missing or
    damaged weights file was named."""
    import importlib

    prepare = importlib.import_module("policysearch.search.prepare")  # the module: the package names its function

    def refuse(*args, **kwargs):
        raise AssertionError("the images were read although the weights file cannot be")

    monkeypatch.setattr(prepare, "load_dataset", refuse)
    (tmp_path / "junk.pt").write_bytes(b"hello")
    (tmp_path / "empty.pt").write_bytes(b"")  # regression (review): "cannot be read ...: EOFError", no more
    os.mkfifo(tmp_path / "pipe.pt")  # a review's find: "is empty (0 bytes); save the weights again"
    torch.save({"w": torch.zeros(64)}, tmp_path / "whole.pt")  # a trial's find: torch's zip reader's text, cut at "If..."
    (tmp_path / "cut.pt").write_bytes((tmp_path / "whole.pt").read_bytes()[:300])
    for weights, message in ((tmp_path / "nowhere.pt", "no such file"), (tmp_path / "junk.pt", "cannot be read"),
                             (tmp_path / "empty.pt", r"empty.pt is empty \(0 bytes\); save the weights again"),
                             (tmp_path / "pipe.pt", r"pipe.pt is not a regular file \(a pipe or a device\)"),
                             (tmp_path / "cut.pt", r"cut.pt cannot be read with torch.load\(weights_only=True\): the file "
                                                   r"is cut short or damaged \(torch.save's archive has no end\); copy or "
                                                   r"save it again$")):
        with pytest.raises(WeightsError, match=message):
            prepare.prepare(SearchConfig(**SMALL, weights=str(weights)))


def test_a_resume_refuses_a_weights_file_changed_since_the_run_started(small_cnn_weights: str, tmp_path: Path,
                                                                      monkeypatch) -> None:
    """Regression (review): a resume read --weights from its path again, so a file replaced since mixed children
    trained from the old weights with selection models trained from the new ones, without a word."""
    from policysearch.search import rundir, tuning
    from policysearch.search.prepare import prepare
    from policysearch.search import run_search

    monkeypatch.setattr(tuning, "start_ray", lambda *a, **k: pytest.fail("Ray started"))
    config = SearchConfig(**SMALL, weights=small_cnn_weights)
    prepared = prepare(config)
    assert prepared.weights_digest.startswith("w1-") and prepare(SearchConfig(**SMALL)).weights_digest == ""
    run_dir = tmp_path / "run"
    rundir.write_config(rundir.open_run(config, run_dir, resume=False), config, weights_digest=prepared.weights_digest)
    assert prepare(config).weights_digest == prepared.weights_digest  # the same file: the same digest
    state = torch.load(small_cnn_weights, weights_only=True)
    state["conv1.weight" if "conv1.weight" in state else next(iter(state))].add_(1.0)
    torch.save(state, small_cnn_weights)
    with pytest.raises(rundir.RunError) as caught:
        run_search(config, run_dir, resume=True)
    assert str(caught.value).startswith(f"--resume {run_dir}: --weights {small_cnn_weights} holds other weights than "
                                        "the run started from (digest ")
    assert str(caught.value).endswith("the file changed since; restore it to continue the run, or start a new run "
                                      "with another --out")
    # a digest of another formula (a later version's) is not compared: the run goes on, to Ray
    document = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**document, "weights_digest": "w0-0123456789abcdef"}))
    with pytest.raises(pytest.fail.Exception, match="Ray started"):
        run_search(config, run_dir, resume=True)


def test_the_digest_reads_every_kind_of_tensor_a_state_dict_may_hold() -> None:
    """Regression (review): a sparse, meta or conjugate tensor in a checkpoint's head (never loaded) crashed the
    digest with torch's error after every check had passed."""
    from policysearch.training.pretrained import state_digest

    x = torch.randn(3, 3)
    with warnings.catch_warnings():  # torch's note that CSR support is in beta
        warnings.simplefilter("ignore", UserWarning)
        csr = x.to_sparse_csr()
    kinds = {"dense": x, "sparse": x.to_sparse(), "csr": csr, "meta": torch.empty(2, device="meta"),
             "conj": torch.randn(2, dtype=torch.cfloat).conj(), "bf16": x.bfloat16(), "scalar": torch.tensor(3),
             "strided": x.t()}
    digests = {name: state_digest({"w": t}) for name, t in kinds.items()}
    assert len(set(digests.values())) == len(kinds) and all(d.startswith("w1-") for d in digests.values())
    assert state_digest({"w": x.t()}) == state_digest({"w": x.t().contiguous()})  # values, not memory layout
    assert state_digest({"w": x.to_sparse()}) != state_digest({"w": (x + 1).to_sparse()})


def test_the_weights_travel_with_the_search_to_workers_that_lack_the_file(small_cnn_weights: str) -> None:
    """Regression (a review): every trial read --weights from its path, which on a cluster exists only on the
    driver's machine, so every trial on a worker failed until the search stopped."""
    import pickle

    from policysearch.search.prepare import prepare

    saved = torch.load(small_cnn_weights, weights_only=True)
    prepared = prepare(SearchConfig(**SMALL, weights=small_cnn_weights))
    shipped = pickle.loads(pickle.dumps(prepared))  # what the object store hands a worker
    Path(small_cnn_weights).unlink()  # a worker's machine: no such file
    for model in (shipped.new_model(), shipped.new_model()):  # the state read once is not changed by a build
        for key, value in model.state_dict().items():
            if not key.startswith("fc."):
                assert torch.equal(value, saved[key]), key
    assert shipped.model_spec == prepared.model_spec and "state" not in repr(shipped.model_spec)
    from policysearch.search.tuning import prepared_bytes  # the object store is sized for the checkpoint too

    images = prepared.data.images.nelement() + prepared.data.labels.nelement() * prepared.data.labels.element_size()
    assert prepared_bytes(prepared) == images + sum(t.nelement() * t.element_size() for t in saved.values())


def test_child_and_selection_models_start_from_the_weights(small_cnn_weights: str, tmp_path: Path,
                                                           monkeypatch) -> None:
    from policysearch.search.candidates import candidate_recipes
    from policysearch.search.domain import fit_domain
    from policysearch.search import recipes
    from policysearch.search.children import CHILD_FILE, train_child
    from policysearch.search.density import score_policy
    from policysearch.search.domain import probe_child
    from policysearch.search.prepare import prepare
    from policysearch.search.recipes import selection_trial

    saved = torch.load(small_cnn_weights, weights_only=True)
    prepared = prepare(SearchConfig(**SMALL, weights=small_cnn_weights, freeze_backbone=True))
    reports: list[dict] = []
    train_child(prepared, 0, tmp_path, reports.append, on_trained=lambda model: {"probe": probe_child(prepared, 0, model)})
    child = torch.load(tmp_path / CHILD_FILE, weights_only=True)["model"]
    for key, value in child.items():  # frozen: the child's backbone is the checkpoint's, exactly
        if not key.startswith("fc."):
            assert torch.equal(value, saved[key]), key
    assert not torch.equal(child["fc.weight"], saved["fc.weight"])

    sample = prepared.space.sample(np.random.default_rng(0))
    assert 0 <= score_policy(prepared, sample, 0, tmp_path)["reward"] <= 1
    fit = fit_domain([reports[-1]["probe"]], prepared.data.num_classes)
    recipe = candidate_recipes(prepared.baseline, fit, prepared.space.decode(sample))[0]
    started_from = []
    real_train = recipes.train_model

    def spy(model, *args, **kwargs):
        started_from.append(all(torch.equal(v, saved[k]) for k, v in _backbone(model).items()))
        return real_train(model, *args, **kwargs)

    monkeypatch.setattr(recipes, "train_model", spy)
    checked = selection_trial(prepared, recipe, 1)
    assert started_from == [True] and 0 <= checked["error"] <= 100


def test_pretraining_never_sees_the_benchmarks_training_images_or_the_test_split() -> None:
    preset = presets.PRESETS["digits-100-finetune"]
    train = load_dataset("digits", split="train")
    labels = train.labels.numpy()
    picked = runner.pretraining_indices(preset, labels)
    subset = stratified_indices(labels, preset.train_size, preset.data_seed)
    assert len(picked) > 300 and not set(picked) & set(subset)
    assert set(labels[picked]) == {0, 1, 2, 3, 4}
    assert picked.max() < len(train)  # indices of the training split: the test split is another set


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_benchmark_options_for_weights() -> None:
    preset = command.preset_from_args(_args("--preset", "digits-small", "--model", "torchvision:resnet18",
                                              "--weights", "w.pt", "--freeze-backbone", "--image-size", "32"))
    assert (preset.model, preset.weights, preset.freeze_backbone, preset.image_size) == (
        "torchvision:resnet18", "w.pt", True, 32)
    with pytest.raises(ValueError, match="--freeze-backbone needs --weights"):
        command.preset_from_args(_args("--preset", "digits-small", "--freeze-backbone"))
    with pytest.raises(ValueError, match="searched-scratch method compares with a search from weights"):
        command.preset_from_args(_args("--preset", "digits-small", "--methods", "searched-scratch"))
    with pytest.raises(ValueError, match="--pretrain-epochs: preset digits-small does not pretrain"):
        command.preset_from_args(_args("--preset", "digits-small", "--pretrain-epochs", "3"))
    with pytest.raises(ValueError, match="^--weights is empty; give a weights file"):  # regression (review): "."
        command.preset_from_args(_args("--preset", "digits-small", "--weights", ""))


@pytest.mark.slow
def test_finetune_preset_pretrains_and_compares_the_two_searched_recipes(tmp_path: Path, monkeypatch) -> None:
    from policysearch.augment.standard import load_policy

    searches = []

    def fake_search(preset, out, args, stream, contents, what, from_scratch=False, stop_text=None):  # the searches themselves: test_search
        searches.append((preset.weights, from_scratch))
        assert set(contents) == {"weights_sha256"}  # the pretrained file's digest keys both searches
        name = "randaugment:n=1,m=3" if from_scratch else "trivialaugment"
        policy = load_policy(name)
        return policy, {"policy_file": name, "recipe": policy.name, "search_wall_s": 1.0, "phase1_wall_s": 0.0,
                        "phase1_device_s": 0.0, "phase2_wall_s": 0.0, "phase2_device_s": 0.0}

    monkeypatch.setattr(runner, "_search", fake_search)
    out = tmp_path / "bench"
    args = _args("--preset", "digits-100-finetune", "--train-size", "30", "--epochs", "1", "--pretrain-epochs", "1",
                 "--seeds", "0", "1", "--methods", "baseline", "searched", "searched-scratch", "--batch-size", "16",
                 "--out", str(out))
    assert command.run(args) == 0
    weights = list(out.glob("pretrained-*.pt"))
    assert len(weights) == 1 and set(torch.load(weights[0], weights_only=True)) >= {"features.0.weight", "fc.weight"}
    assert searches == [(str(weights[0]), False), (str(weights[0]), True)]
    document = json.loads((out / "results.json").read_text())
    assert document["pretraining"]["weights"] == str(weights[0]) and document["settings"]["weights"] == str(weights[0])
    verdict = document["finetune_vs_scratch"]
    assert verdict["n"] == 2 and verdict["verdict"]
    text = (out / "results.md").read_text()
    assert "## Searched for fine-tuning vs searched from scratch" in text and "| searched-scratch |" in text
    # each searched row names its own recipe
    assert "| searched | the searched recipe `trivialaugment:bins=31`" in text
    assert "| searched-scratch | the recipe searched from scratch `randaugment:n=1,m=3`" in text
    assert "outside the benchmark's training subset" in text
