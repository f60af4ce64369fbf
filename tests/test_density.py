"""Tests for policysearch.search.density: the density-matching evaluator on a real (small) trained child model.

No Ray here: the evaluator is a plain function of a frozen model, uint8 images and a policy.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from policysearch.training.data import baseline_for, load_dataset, normalization_for, stratified_subset
from policysearch.search.density import REWARDS, PolicyScore, evaluate_policy
from policysearch.training.models import build_model
from policysearch.augment.policy import Policy
from policysearch.training.train import TrainConfig, evaluate, train_model

MEAN, STD = normalization_for("digits")
SIZE = 8  # 4x cheaper than the default 16x16 and trains to higher accuracy in few epochs

IDENTITY = Policy([[("Identity", 1.0, 0.0)]])
# Swapping foreground and background turns a digit into something the child model never saw.
INVERT = Policy([[("Invert", 1.0, 0.0)]])
# Solarize at level 1 means threshold 0 (our ops get stronger with the level): it inverts every pixel,
# so after an Invert it restores the image exactly. Not a destructive policy, a trap for test writers.
INVERT_THEN_FULL_SOLARIZE = Policy([[("Invert", 1.0, 0.0), ("Solarize", 1.0, 1.0)]])
# Solarize at the middle threshold keeps dark pixels and inverts bright ones after the Invert: destructive.
INVERT_THEN_HALF_SOLARIZE = Policy([[("Invert", 1.0, 0.0), ("Solarize", 1.0, 0.5)]])
# A mild policy that draws random numbers (per-image sub-policy, probability and magnitude).
RANDOM_MILD = Policy([[("Rotate", 0.5, 0.5), ("Cutout", 0.5, 0.5)], [("TranslateX", 0.7, 0.6)],
                      [("Contrast", 0.5, 0.8), ("GaussianNoise", 0.5, 0.5)]])


@pytest.fixture(scope="module")
def child() -> torch.nn.Module:
    """small_cnn trained on 300 digits at their native 8x8 (the D_M of a search, in miniature): about 4 s on
    2 idle cores, about 97% accuracy on held-out digits."""
    torch.manual_seed(0)
    train = stratified_subset(load_dataset("digits", "train", image_size=SIZE), 300, seed=0)
    model = build_model("small_cnn", 10, in_channels=1)
    train_model(model, train, TrainConfig(epochs=12, batch_size=64, lr=0.05, seed=0),
                baseline=baseline_for("digits", SIZE), mean=MEAN, std=STD)
    return model.eval()


@pytest.fixture(scope="module")
def d_a() -> tuple[torch.Tensor, torch.Tensor]:
    """100 held-out digits (never trained on), as uint8 images and int64 labels: the augment split D_A."""
    test = stratified_subset(load_dataset("digits", "test", image_size=SIZE), 100, seed=1)
    return test.images, test.labels


def _score(model, d_a, policy, *, views=5, seed=0) -> PolicyScore:
    images, labels = d_a
    return evaluate_policy(model, images, labels, policy, mean=MEAN, std=STD, num_views=views,
                           generator=torch.Generator().manual_seed(seed))


def test_child_model_learned_something(child, d_a):
    # Precondition of the ranking tests: an untrained model cannot tell policies apart.
    images, labels = d_a
    assert evaluate(child, images, labels, mean=MEAN, std=STD)["accuracy"] > 0.85


def test_identity_scores_as_plain_evaluation(child, d_a):
    images, labels = d_a
    plain = evaluate(child, images, labels, mean=MEAN, std=STD)
    score = _score(child, d_a, IDENTITY, views=3)
    assert score.accuracy == pytest.approx(plain["accuracy"], abs=1e-6)
    assert score.loss == pytest.approx(plain["loss"], rel=1e-4)
    # Every view is the same image, so the per-image best is the mean.
    assert score.any_view == pytest.approx(score.accuracy, abs=1e-6)
    assert score.min_loss == pytest.approx(score.loss, rel=1e-4)
    assert (score.images, score.views) == (100, 3)


@pytest.mark.parametrize("destructive", [INVERT, INVERT_THEN_HALF_SOLARIZE], ids=["invert", "invert+solarize0.5"])
def test_identity_ranks_above_destructive_policy(child, d_a, destructive):
    good, bad = _score(child, d_a, IDENTITY), _score(child, d_a, destructive)
    for reward in REWARDS:  # every reward, losses negated, agrees
        assert good.reward(reward) > bad.reward(reward), reward
    assert good.accuracy - bad.accuracy > 0.3


def test_invert_then_full_solarize_is_the_identity(child, d_a):
    # Documents the level convention: Solarize level 1 inverts everything, undoing the Invert.
    assert _score(child, d_a, INVERT_THEN_FULL_SOLARIZE) == _score(child, d_a, IDENTITY)


def test_any_view_and_min_loss_bound_the_means(child, d_a):
    score = _score(child, d_a, RANDOM_MILD, views=5)
    assert score.any_view >= score.accuracy
    assert score.min_loss <= score.loss
    assert score.any_view > score.accuracy  # random views really differ, so the bound is not trivially tight
    assert 0.0 <= score.accuracy <= 1.0 and 0.0 <= score.any_view <= 1.0


def test_seeded_generator_reproduces_the_score(child, d_a):
    first = _score(child, d_a, RANDOM_MILD, seed=7)
    assert _score(child, d_a, RANDOM_MILD, seed=7) == first
    assert _score(child, d_a, RANDOM_MILD, seed=8) != first  # the seed matters: the draws are random


def test_model_mode_is_restored(child, d_a):
    child.train()
    try:
        _score(child, d_a, IDENTITY, views=1)
        assert child.training
    finally:
        child.eval()


def test_bad_inputs_raise_clear_errors(child, d_a):
    images, labels = d_a
    with pytest.raises(ValueError, match="num_views must be at least 1, got 0"):
        evaluate_policy(child, images, labels, IDENTITY, mean=MEAN, std=STD, num_views=0)
    with pytest.raises(ValueError, match="non-empty D_A"):
        evaluate_policy(child, images[:0], labels[:0], IDENTITY, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="one label per image, got 100 and 99"):
        evaluate_policy(child, images, labels[:-1], IDENTITY, mean=MEAN, std=STD)


def test_reward_names():
    score = PolicyScore(any_view=0.9, min_loss=0.2, accuracy=0.7, loss=0.5, images=10, views=5)
    assert REWARDS == ("accuracy", "any_view", "loss", "min_loss")
    assert score.reward("any_view") == 0.9
    assert score.reward("accuracy") == 0.7
    assert score.reward("loss") == -0.5  # losses are negated so every reward is maximised
    assert score.reward("min_loss") == -0.2
    with pytest.raises(ValueError, match="unknown reward 'top1'; choose one of accuracy, any_view, loss, min_loss"):
        score.reward("top1")
    assert score.to_dict() == dataclasses.asdict(score)
    assert set(score.to_dict()) == {"any_view", "min_loss", "accuracy", "loss", "images", "views"}



def test_common_random_numbers_hold_for_every_view(child, d_a):
    """Two recipes that differ only in a step that changes no pixel but draws random numbers (Cutout of
    side 0) score identically in every view: the crops and flips of the baseline are shared."""
    from policysearch.augment.policy import Baseline

    images, labels = d_a
    crop = Policy([[("Identity", 1.0, 0.0)]], baseline=Baseline(2, True))
    drawing = Policy([[("Cutout", 1.0, 0.0)]], baseline=Baseline(2, True))
    scores = [evaluate_policy(child, images, labels, p, mean=MEAN, std=STD, num_views=4, seed=3)
              for p in (crop, drawing)]
    assert scores[0] == scores[1]
    other_seed = evaluate_policy(child, images, labels, crop, mean=MEAN, std=STD, num_views=4, seed=4)
    assert other_seed.loss != scores[0].loss  # the seed matters: views are random, only shared
    with pytest.raises(ValueError, match="either a generator or a seed"):
        evaluate_policy(child, images, labels, crop, mean=MEAN, std=STD, seed=1,
                        generator=torch.Generator().manual_seed(0))


def test_the_augmentation_chunk_may_span_several_model_batches(child, d_a, monkeypatch):
    """Off the CPU the transform takes many model batches per call; the score is counted per image all the
    same (asked for here on the CPU): Invert then full Solarize scores as the identity."""
    import policysearch.search.density as density

    images, labels = d_a
    assert density._augment_size(torch.device("cpu"), 16, images[0].numel()) == 16
    assert density._augment_size(torch.device("cuda"), 16, images[0].numel()) > 16
    plain = evaluate_policy(child, images, labels, IDENTITY, mean=MEAN, std=STD, num_views=2, batch_size=16)
    monkeypatch.setattr(density, "_augment_size", lambda device, batch_size, values: 56)
    chunked = evaluate_policy(child, images, labels, INVERT_THEN_FULL_SOLARIZE, mean=MEAN, std=STD, num_views=2,
                              batch_size=16)
    assert dataclasses.asdict(chunked) == pytest.approx(dataclasses.asdict(plain))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_evaluation_in_mixed_precision_agrees_with_the_cpu(child, d_a):
    import copy

    images, labels = d_a
    cpu = evaluate_policy(child, images, labels, IDENTITY, mean=MEAN, std=STD, num_views=2)
    model = copy.deepcopy(child).cuda()
    gpu = evaluate_policy(model, images.cuda(), labels.cuda(), IDENTITY, mean=MEAN, std=STD, num_views=2,
                          generator=torch.Generator("cuda").manual_seed(0))
    assert gpu.accuracy == pytest.approx(cpu.accuracy, abs=0.03)
    assert gpu.loss == pytest.approx(cpu.loss, rel=0.1, abs=0.02)
