"""policysearch: search augmentation policies and apply them per image or per sample on a batch.

The public API (stable names)::

    from policysearch import Policy, PolicyTransform, BatchPolicyTransform, Cutout, load_policy
    import policysearch
    result = policysearch.search(train_set, model=build_model, epochs=30)  # a SearchResult

They are imported on first use, so ``policysearch --help`` starts without loading torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Policy": "policysearch.augment.policy",
    "Operation": "policysearch.augment.policy",
    "PolicyError": "policysearch.augment.policy",
    "PolicyTransform": "policysearch.augment.image_transform",
    "BatchPolicyTransform": "policysearch.augment.transforms",
    "Cutout": "policysearch.augment.transforms",
    "load_policy": "policysearch.augment.standard",
    "SearchConfig": "policysearch.search.config",
    "SearchResult": "policysearch.search.outcome",
    # what a search raises: a stop (a KeyboardInterrupt), and the ValueErrors of bad input before any work
    "SearchInterrupted": "policysearch.search.interrupts",
    "DataError": "policysearch.training.data",
    "SettingsError": "policysearch.search.config",
    "SpaceError": "policysearch.search.spaces",
    "WeightsError": "policysearch.training.pretrained",
    "ModelError": "policysearch.training.pretrained",
    "RunError": "policysearch.search.rundir",
    "ResourceError": "policysearch.search.checks",
    "SearchFailed": "policysearch.search.checks",  # a RuntimeError: too many trials failed
}

__all__ = ["__version__", "search", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name == "search":  # the subpackage, whose module object is callable: policysearch.search(data, ...)
        return import_module("policysearch.search")
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'policysearch' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The lazy names too, so that completion and ``dir()`` find them before their first use."""
    return sorted({*globals(), *__all__})
