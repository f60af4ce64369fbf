"""Fold-making for the search: the K (D_M, D_A) splits of phases 1 and 2 and the cross-fit folds of phase 3.

Both are stratified index pairs over the search's training images, drawn from the run's seed, so a
resumed or repeated run gets the same folds. A class too small for either is named in a ``DataError``
before any work starts.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
from torch import Tensor

from policysearch.training.data import DataError, named_class
from policysearch.training.randomness import MAX_SEED

__all__ = ["HELD_OUT_TARGET", "MAX_ADDED_REPEATS", "MAX_AUTO_REPEATS", "auto_repeats", "crossfit_folds", "make_splits"]

HELD_OUT_TARGET = 500  # held-out predictions a comparison should rest on, when repeats are chosen from the data
MAX_AUTO_REPEATS = 3
MAX_ADDED_REPEATS = 3  # repeats the selection may add while its decision is unclear (--selection-extra)


def make_splits(
    labels: Tensor | np.ndarray, k: int = 5, da_ratio: float = 0.4, seed: int = 0,
    names: Sequence[str] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """K stratified shuffle splits of the training set into (D_M, D_A) index arrays (``names``: the classes',
    for the errors).

    D_M trains a child model, D_A (a `da_ratio` share) scores candidate policies, as in Fast AutoAugment.
    Every class must be able to put at least one example on each side; otherwise a DataError names it.
    """
    from sklearn.model_selection import StratifiedShuffleSplit

    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise DataError(f"k (number of splits) must be an integer >= 1, got {k!r}")
    if not 0.0 < da_ratio < 1.0:
        raise DataError(f"da_ratio must lie strictly between 0 and 1, got {da_ratio}")
    y = labels.cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if y.ndim != 1:
        raise DataError(f"labels must be one-dimensional, got shape {y.shape}")
    n = len(y)
    n_a = math.ceil(round(da_ratio * n, 9))
    n_m = n - n_a
    if n_a < 1 or n_m < 1:
        raise DataError(f"{n} examples are too few to split with da_ratio={da_ratio}; use more data")
    # sklearn allocates D_M per class as about count * n_m / n (floor or ceil) and gives D_A the rest, so
    # a class needs count * n_m >= n and count * n_a >= n to land at least once on both sides.
    needed = math.ceil(n / min(n_m, n_a))
    classes, counts = np.unique(y, return_counts=True)
    fewest = int(np.argmin(counts))  # the class furthest from enough, which the message names
    cls, count = classes[fewest], int(counts[fewest])
    if count < max(2, needed):
        raise DataError(lambda say: (
            f"{named_class(cls, names)} has {count} image{'s' if count != 1 else ''}; with {say('da_ratio', da_ratio)} "
            f"every class needs at least {max(2, needed)} to appear in both D_M and D_A - add images of it, "
            f"drop it, or change {say('da_ratio')}"))
    splitter = StratifiedShuffleSplit(n_splits=int(k), test_size=n_a, train_size=n_m, random_state=seed)
    splits = []
    for d_m, d_a in splitter.split(np.zeros(n), y):
        missing = set(classes) - set(y[d_a]) or set(classes) - set(y[d_m])
        if missing:  # guards the allocation argument above against sklearn changes
            raise DataError(f"classes {sorted(missing)} did not land on both sides of a split; add examples")
        splits.append((np.sort(d_m).astype(np.int64), np.sort(d_a).astype(np.int64)))
    return splits


def auto_repeats(num_images: int) -> int:
    """Cross-fit repeats for ``num_images`` training images: each repeat holds every image out once, so
    repeats are added until about ``HELD_OUT_TARGET`` held-out predictions back each comparison (at most
    ``MAX_AUTO_REPEATS``). Small data gets more repeats because its trainings are cheap and one fold of a
    few dozen images moves the error in steps of several points."""
    return min(MAX_AUTO_REPEATS, max(1, math.ceil(HELD_OUT_TARGET / max(num_images, 1))))



def crossfit_folds(labels: np.ndarray, k: int, repeats: int = 1, seed: int = 0, names: Sequence[str] | None = None
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``repeats`` x ``k`` stratified (train, held-out) index pairs; each repeat holds every image out once
    (``names``: the classes', for the errors)."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(labels)
    if k < 2:
        raise DataError(f"selection needs at least 2 folds, got {k}")
    classes, counts = np.unique(y, return_counts=True)
    small = [f"{named_class(c, names)}: {n}" for c, n in zip(classes, counts) if n < k]
    if small:
        raise DataError(lambda say: f"{k}-fold selection needs at least {k} images per class; too few in "
                        f"{', '.join(small)} - add images or lower {say('selection_folds')}")
    folds = []
    for repeat in range(repeats):
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=(seed + repeat) % (MAX_SEED + 1))
        folds += [(np.sort(a).astype(np.int64), np.sort(b).astype(np.int64)) for a, b in splitter.split(y, y)]
    return folds
