"""The public names other training code imports stay importable from the package root."""

import pytest
import torch

import policysearch


def test_public_names_import_from_the_package_root():
    from policysearch import BatchPolicyTransform, Cutout, PolicyTransform, load_policy

    policy = load_policy("torchvision:cifar10")
    batch = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    assert BatchPolicyTransform(policy)(batch).shape == batch.shape
    assert PolicyTransform(policy)(batch[0]).shape == batch[0].shape
    assert Cutout(4)(batch).shape == batch.shape


def test_what_a_search_raises_imports_from_the_package_root_and_dir_lists_every_name():
    """The README tells users to catch these; they lived only in the modules that raise them."""
    from policysearch import (DataError, ModelError, ResourceError, RunError, SearchFailed, SearchInterrupted,
                              SettingsError, SpaceError, WeightsError)
    from policysearch.search.interrupts import SearchInterrupted as raised

    assert SearchInterrupted is raised and issubclass(SearchInterrupted, KeyboardInterrupt)
    assert all(issubclass(e, ValueError) for e in (DataError, ModelError, ResourceError, RunError, SettingsError,
                                                   SpaceError, WeightsError))
    assert issubclass(SearchFailed, RuntimeError)
    assert {"Policy", "PolicyTransform", "SearchInterrupted", "search", "__version__"} <= set(dir(policysearch))
    assert all(getattr(policysearch, name) is not None for name in policysearch.__all__)


def test_the_search_and_the_batched_transform_do_not_import_torchvision():
    # Every Ray worker of a search imports this path; torchvision's import costs it seconds.
    import subprocess
    import sys

    code = ("import sys, policysearch.search.tuning, policysearch.augment.transforms; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_policy_transform_has_one_home():
    # The package root hands it on; the batched transform's module does not (that was an import cycle).
    from policysearch.augment import transforms
    from policysearch.augment.image_transform import PolicyTransform

    assert policysearch.PolicyTransform is PolicyTransform
    assert not hasattr(transforms, "PolicyTransform")


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Polcy'"):
        policysearch.Polcy  # noqa: B018
