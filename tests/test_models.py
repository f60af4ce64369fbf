"""Tests for policysearch.training.models: every model builds, runs on small inputs and has the papers' size."""

from __future__ import annotations

import pytest
import torch

from policysearch.training.models import MODEL_NAMES, build_model


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_model_names() -> None:
    assert set(MODEL_NAMES) == {"wrn40_2", "wrn28_10", "resnet18", "resnet20", "resnet8", "small_cnn"}


def test_unknown_model_lists_names() -> None:
    with pytest.raises(ValueError, match="wrn40_2.*small_cnn"):
        build_model("vgg16", 10)


@pytest.mark.parametrize("name", ["small_cnn", "wrn40_2", "resnet18", "resnet20", "resnet8"])
@pytest.mark.parametrize("in_channels, size", [(1, 8), (3, 16), (3, 13)])
def test_forward_on_small_inputs(name: str, in_channels: int, size: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, in_channels=in_channels)
    model.eval()
    with torch.inference_mode():
        out = model(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_wrn40_2_size_matches_paper() -> None:
    assert abs(_params(build_model("wrn40_2", 10)) - 2.2e6) < 0.1e6


def test_cifar_resnets_match_the_paper() -> None:
    # He et al. (2016), table 6: ResNet-20 has 0.27 M parameters (1x1 projection shortcuts add 3 k here)
    assert abs(_params(build_model("resnet20", 10)) - 0.27e6) < 0.01e6
    resnet8 = build_model("resnet8", 10)
    assert sum(1 for m in resnet8.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)) == 7
    with pytest.raises(ValueError, match="6n \\+ 2"):
        from policysearch.training.models import CifarResNet

        CifarResNet(10, 10)


def test_wrn28_10_size_and_forward() -> None:
    model = build_model("wrn28_10", 10)
    assert abs(_params(model) - 36.5e6) < 0.2e6
    model.eval()
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_small_cnn_trains_one_step() -> None:
    torch.manual_seed(0)
    model = build_model("small_cnn", 3, in_channels=1)
    x, y = torch.randn(8, 1, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_weights_are_kaiming_initialised() -> None:
    torch.manual_seed(0)
    conv = build_model("wrn40_2", 10).blocks[0].conv1
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert abs(conv.weight.std().item() - (2.0 / fan_out) ** 0.5) < 0.01
