"""The public names other training code imports stay importable from the package root."""

import pytest
import torch

import policysearch


def test_public_names_import_from_the_package_root():
    from policysearch import BatchPolicyTransform, Cutout, Policy, PolicyTransform

    policy = Policy.from_torchvision("cifar10")
    batch = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    assert BatchPolicyTransform(policy)(batch).shape == batch.shape
    assert PolicyTransform(policy)(batch[0]).shape == batch[0].shape
    assert Cutout(4)(batch).shape == batch.shape


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Polcy'"):
        policysearch.Polcy  # noqa: B018
