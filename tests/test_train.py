"""Tests for policysearch.training.train: learning, exact resume, the augment hook, Cutout and evaluation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from policysearch.training.data import ImageData, baseline_for, load_dataset, normalization_for, stratified_subset
from policysearch.training.models import build_model
from policysearch.training.train import TrainConfig, cutout, evaluate, predict, train_model

MEAN, STD = normalization_for("digits")
BASELINE = baseline_for("digits")


@pytest.fixture(scope="module")
def small_train() -> ImageData:
    return stratified_subset(load_dataset("digits", "train"), 300, seed=0)


@pytest.fixture(scope="module")
def digits_test() -> ImageData:
    return load_dataset("digits", "test")


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("small_cnn", 10, in_channels=1)


def _shift_right(batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A stand-in policy that uses the generator, so resume must restore its state too."""
    shift = torch.randint(0, 2, (len(batch),), generator=gen, device=batch.device)
    return torch.where(shift[:, None, None, None].bool(), batch.roll(1, dims=-1), batch)


class _Stop(Exception):
    pass


@pytest.mark.slow
def test_small_cnn_learns_digits(small_train: ImageData, digits_test: ImageData) -> None:
    model = _model()
    config = TrainConfig(epochs=12, batch_size=64, lr=0.05, cutout=4)
    seen = []
    final = train_model(
        model, small_train, config, baseline=BASELINE, mean=MEAN, std=STD, on_epoch=lambda e, m: seen.append((e, m))
    )
    result = evaluate(model, digits_test.images, digits_test.labels, mean=MEAN, std=STD)
    assert result["accuracy"] > 0.8, result
    assert 0 < result["loss"] < 1.5
    assert [e for e, _ in seen] == list(range(1, 13))
    assert set(seen[0][1]) >= {"epoch", "train_loss", "train_accuracy", "lr", "seconds"}
    assert seen[-1][1]["train_loss"] < seen[0][1]["train_loss"]
    assert seen[-1][1]["lr"] < seen[0][1]["lr"] == pytest.approx(0.05)  # cosine decay
    assert final == seen[-1][1]


def test_resume_equals_uninterrupted_run(small_train: ImageData, tmp_path: Path) -> None:
    config = TrainConfig(epochs=4, batch_size=64, lr=0.05, cutout=4, seed=3)
    kwargs = dict(augment=_shift_right, baseline=BASELINE, mean=MEAN, std=STD)

    full = _model(0)
    full_metrics = train_model(full, small_train, config, checkpoint_path=tmp_path / "full.pt", **kwargs)

    def stop_after_two(epoch: int, metrics: dict) -> None:
        if epoch == 2:
            raise _Stop

    ckpt = tmp_path / "run" / "ckpt.pt"
    with pytest.raises(_Stop):
        train_model(_model(0), small_train, config, checkpoint_path=ckpt, on_epoch=stop_after_two, **kwargs)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2
    assert [p.name for p in ckpt.parent.iterdir()] == ["ckpt.pt"]  # no temp files left behind

    resumed = _model(99)  # different initial weights: all state must come from the checkpoint
    epochs_run = []
    resumed_metrics = train_model(
        resumed, small_train, config, checkpoint_path=ckpt, on_epoch=lambda e, m: epochs_run.append(e), **kwargs
    )
    assert epochs_run == [3, 4]
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs after resume"
    assert resumed_metrics["train_loss"] == full_metrics["train_loss"]

    # a finished checkpoint: nothing left to train, the weights are loaded
    again = _model(5)
    train_model(again, small_train, config, checkpoint_path=ckpt, on_epoch=lambda e, m: epochs_run.append(e), **kwargs)
    assert epochs_run == [3, 4]
    assert torch.equal(again.fc.weight, full.fc.weight)


def test_checkpoint_from_another_config_is_refused(small_train: ImageData, tmp_path: Path) -> None:
    ckpt = tmp_path / "c.pt"
    train_model(_model(), small_train, TrainConfig(epochs=1, batch_size=128), baseline=BASELINE, mean=MEAN, std=STD,
                checkpoint_path=ckpt)
    with pytest.raises(ValueError, match="different run"):
        train_model(_model(), small_train, TrainConfig(epochs=2, batch_size=128), baseline=BASELINE, mean=MEAN,
                    std=STD, checkpoint_path=ckpt)


def test_same_seed_same_weights_different_seed_different(small_train: ImageData) -> None:
    def run(seed: int) -> torch.Tensor:
        model = _model(0)
        train_model(model, small_train.subset(range(100)), TrainConfig(epochs=1, batch_size=32, seed=seed),
                    baseline=BASELINE, mean=MEAN, std=STD)
        return model.fc.weight.detach().clone()

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_augment_hook_gets_uint8_batches_and_partial_batch_is_kept(small_train: ImageData) -> None:
    calls = []

    def spy(batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        calls.append((batch.dtype, tuple(batch.shape), isinstance(gen, torch.Generator)))
        return batch

    train_model(_model(), small_train, TrainConfig(epochs=1, batch_size=128), augment=spy, baseline=BASELINE,
                mean=MEAN, std=STD)
    assert calls == [
        (torch.uint8, (128, 1, 16, 16), True),
        (torch.uint8, (128, 1, 16, 16), True),
        (torch.uint8, (44, 1, 16, 16), True),
    ]
    calls.clear()  # a lone last image is dropped: BatchNorm cannot train on one image
    train_model(_model(), small_train.subset(range(129)), TrainConfig(epochs=1, batch_size=128), augment=spy,
                baseline=BASELINE, mean=MEAN, std=STD)
    assert [shape[0] for _, shape, _ in calls] == [128]


def test_augment_must_return_uint8(small_train: ImageData) -> None:
    with pytest.raises(TypeError, match="uint8"):
        train_model(_model(), small_train, TrainConfig(epochs=1), augment=lambda b, g: b.float(), baseline=BASELINE,
                    mean=MEAN, std=STD)


def test_cutout_fills_a_clipped_square_per_sample_in_pixel_space() -> None:
    x = torch.full((500, 3, 12, 12), 200, dtype=torch.uint8)  # the trainer cuts uint8 images, before normalising
    out = cutout(x, 4, torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8
    holes = out == 0
    assert torch.equal(holes[:, 0], holes[:, 1]) and torch.equal(holes[:, 0], holes[:, 2])  # every channel
    areas = holes[:, 0].flatten(1).sum(1)
    assert areas.max() == 16 and areas.min() >= 4  # clipped at the borders, never empty (centre inside)
    rows, cols = holes[:, 0].any(2), holes[:, 0].any(1)
    assert torch.equal(areas, rows.sum(1) * cols.sum(1))  # a rectangle
    assert len({tuple(h.flatten().nonzero().flatten().tolist()) for h in holes[:, 0]}) > 50  # per sample
    assert torch.equal(out, cutout(x, 4, torch.Generator().manual_seed(0)))
    assert torch.equal(cutout(x, 0), x)
    assert torch.all(x == 200)  # input untouched


@pytest.mark.parametrize("fill", [0, (10, 20, 30)])
def test_the_trainers_cutout_and_the_policy_op_are_one_augmentation(fill) -> None:
    """Same side and centre: the policy's Cutout op and the trainer's (benchmark's) Cutout give equal images."""
    from policysearch.augment.ops import OPS
    from policysearch.augment.policy import Operation, Policy
    from policysearch.augment.transforms import BatchPolicyTransform, Cutout

    size, side = 32, 6
    level = (side / size - OPS["Cutout"].low) / (OPS["Cutout"].high - OPS["Cutout"].low)
    batch = torch.randint(0, 256, (64, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    transform = BatchPolicyTransform(Policy([[Operation("Cutout", 1.0, level)]]), fill=fill)
    plan = transform.sample(batch.shape, generator=torch.Generator().manual_seed(2))
    (step,) = plan.steps
    assert step.index.tolist() == list(range(64))
    by_policy = transform.apply(batch, plan)
    by_trainer = Cutout(side, fill=fill).apply(batch, step.draw["centre"])  # what TrainConfig(cutout=6) runs
    assert torch.equal(by_policy, by_trainer)
    assert (by_policy != batch).any(dim=1).flatten(1).sum(1).max() == side * side


def test_evaluate_and_predict(small_train: ImageData) -> None:
    model = _model()
    model.train()
    logits = predict(model, small_train.images[:37], mean=MEAN, std=STD, batch_size=16)
    assert logits.shape == (37, 10) and logits.dtype == torch.float32
    assert model.training  # mode restored
    result = evaluate(model, small_train.images, small_train.labels, mean=MEAN, std=STD)
    assert 0.0 <= result["accuracy"] <= 0.35  # untrained: near chance
    assert result["loss"] > 1.5
    full = evaluate(model, small_train.images, small_train.labels, mean=MEAN, std=STD, batch_size=7)
    assert full["accuracy"] == result["accuracy"]


@pytest.mark.parametrize(
    "kwargs, match",
    [({"epochs": 0}, "epochs"), ({"lr": 0}, "lr"), ({"batch_size": 1}, "batch_size"), ({"cutout": -1}, "cutout"),
     ({"warmup_epochs": 30}, "warmup_epochs"), ({"momentum": 0.0}, "nesterov")],
)
def test_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_warmup_ramps_lr(small_train: ImageData) -> None:
    lrs = []
    train_model(_model(), small_train.subset(range(64)), TrainConfig(epochs=3, batch_size=32, lr=0.1, warmup_epochs=1),
                baseline=BASELINE, mean=MEAN, std=STD, on_epoch=lambda e, m: lrs.append(m["lr"]))
    assert lrs[0] == pytest.approx(0.1 / 2)  # first of two warm-up steps
    assert lrs[1] == pytest.approx(0.1)  # warm-up done, cosine starts at the full rate
    assert lrs[2] < lrs[1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_with_amp(small_train: ImageData, tmp_path: Path) -> None:
    model = _model()
    config = TrainConfig(epochs=2, batch_size=64, lr=0.05, cutout=4, amp=True)
    ckpt = tmp_path / "gpu.pt"
    calls = []

    def spy(batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        calls.append((batch.device.type, gen.device.type, batch.dtype))
        return _shift_right(batch, gen)

    metrics = train_model(model, small_train, config, augment=spy, baseline=BASELINE, mean=MEAN, std=STD,
                          device="cuda", checkpoint_path=ckpt)
    assert set(calls) == {("cuda", "cuda", torch.uint8)}
    assert metrics["train_loss"] < 2.3
    result = evaluate(model, small_train.images, small_train.labels, mean=MEAN, std=STD, device="cuda")
    assert result["accuracy"] > 0.3
    state = torch.load(ckpt, weights_only=True, map_location="cpu")
    assert state["epoch"] == 2 and state["scaler"]  # the GradScaler state is stored when AMP is on
