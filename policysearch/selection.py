"""Choosing a training recipe from cross-fitted trainings, with a stated noise model.

Every candidate recipe is trained on the same folds of the training images (stratified K-fold, every
image held out once per repeat) with the same seeds, and scored by its error on the held-out fold.
Candidates are compared by paired differences with a reference recipe over those folds. The folds'
training sets overlap, so the differences are not independent; the variance of their mean is corrected
as Nadeau and Bengio propose for resampled comparisons:

    var(mean) = (1 / J + n_test / n_train) * s^2,    J = folds x repeats,

and a one-sided Student-t bound with J - 1 degrees of freedom decides. To spend the budget on the
candidates that can win, the folds are raced: every candidate trains on the first fold, and only the
share ``keep`` with the lowest error on it, every candidate within one fold's noise of the best, and the
reference always train on the others (:func:`race`, successive halving with one rung): on a fold of a
few dozen images nobody is raced out on noise. A candidate stopped early is reported with its
first-fold difference and takes no part in the decision. The rule: the candidate with the
lowest mean error is chosen only when its bound on (its error - the reference's error) at
``confidence`` lies below zero; otherwise the reference - the standard recipe - is kept. So any
difference within the noise keeps the standard choice. Ray is not imported here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from policysearch.data import DataError

__all__ = ["Comparison", "Decision", "auto_repeats", "compare", "crossfit_folds", "decide", "race", "race_margin"]

CONFIDENCE = 0.8
HELD_OUT_TARGET = 500  # held-out predictions a comparison should rest on, when repeats are chosen from the data
MAX_AUTO_REPEATS = 3
RACE_Z = 2.0  # a candidate is raced out only when its first-fold deficit exceeds this many standard errors


def auto_repeats(num_images: int) -> int:
    """Cross-fit repeats for ``num_images`` training images: each repeat holds every image out once, so
    repeats are added until about ``HELD_OUT_TARGET`` held-out predictions back each comparison (at most
    ``MAX_AUTO_REPEATS``). Small data gets more repeats because its trainings are cheap and one fold of a
    few dozen images moves the error in steps of several points."""
    return min(MAX_AUTO_REPEATS, max(1, math.ceil(HELD_OUT_TARGET / max(num_images, 1))))


def race_margin(first_fold: Mapping[str, float], held_out: int, z: float = RACE_Z) -> float:
    """The noise of one fold, in points: ``z`` standard errors of the difference of two error rates on the
    same ``held_out`` images (at their mean rate, at least one image's worth). A candidate within it of
    the best first-fold error is not raced out."""
    if held_out < 1 or not first_fold:
        return math.inf
    p = min(max(float(np.mean(list(first_fold.values()))) / 100.0, 1.0 / held_out), 0.5)
    return 100.0 * z * math.sqrt(2.0 * p * (1.0 - p) / held_out)


def crossfit_folds(labels: np.ndarray, k: int, repeats: int = 1, seed: int = 0
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``repeats`` x ``k`` stratified (train, held-out) index pairs; each repeat holds every image out once."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(labels)
    if k < 2:
        raise DataError(f"selection needs at least 2 folds, got {k}")
    classes, counts = np.unique(y, return_counts=True)
    small = [f"{c} ({n})" for c, n in zip(classes, counts) if n < k]
    if small:
        raise DataError(f"{k}-fold selection needs at least {k} images per class; too few in class "
                        f"{', '.join(small)} - add images or lower --selection-folds")
    folds = []
    for repeat in range(repeats):
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed + repeat)
        folds += [(np.sort(a).astype(np.int64), np.sort(b).astype(np.int64)) for a, b in splitter.split(y, y)]
    return folds


def race(first_fold: Mapping[str, float], order: Sequence[str], keep: float, reference: str,
         margin: float = 0.0) -> list[str]:
    """The candidates (in ``order``) that go on after the first fold: the ``ceil(keep x len(order))`` with the
    lowest first-fold error (ties: the earlier in ``order``), every one within ``margin`` points of the
    lowest (one fold's noise, :func:`race_margin`), and ``reference`` when it finished the fold.
    A candidate missing from ``first_fold`` (it failed) is out."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep must lie in (0, 1], got {keep}")
    done = [name for name in order if name in first_fold]
    ranked = sorted(done, key=lambda name: (first_fold[name], order.index(name)))
    close = {name for name in done if first_fold[name] <= first_fold[ranked[0]] + margin} if done else set()
    kept = set(ranked[:math.ceil(keep * len(order))]) | close | ({reference} & set(done))
    return [name for name in order if name in kept]


@dataclass(frozen=True)
class Comparison:
    """Paired difference (candidate - reference) of held-out error, in percentage points, with its bounds."""

    candidate: str
    reference: str
    mean: float
    low: float  # two-sided interval at the confidence level
    high: float
    upper: float  # one-sided upper bound at the confidence level
    n: int

    def to_dict(self) -> dict[str, object]:
        """As plain JSON: a bound that does not exist (one fold) is None, not NaN."""
        def finite(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {"candidate": self.candidate, "reference": self.reference, "mean": finite(self.mean),
                "low": finite(self.low), "high": finite(self.high), "upper": finite(self.upper), "n": self.n}


def compare(candidate: Sequence[float], reference: Sequence[float], *, test_fraction: float,
            confidence: float = CONFIDENCE, names: tuple[str, str] = ("candidate", "reference")) -> Comparison:
    """The corrected paired comparison of two candidates' per-fold errors (same folds, same order)."""
    from scipy import stats

    d = np.asarray(candidate, dtype=float) - np.asarray(reference, dtype=float)
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    if n < 2:
        return Comparison(*names, mean, math.nan, math.nan, math.nan, n)
    ratio = test_fraction / (1.0 - test_fraction)
    se = math.sqrt((1.0 / n + ratio) * float(d.var(ddof=1)))
    two = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * se
    one = float(stats.t.ppf(confidence, n - 1)) * se
    return Comparison(*names, mean, mean - two, mean + two, mean + one, n)


@dataclass(frozen=True)
class Decision:
    """The chosen candidate, the reference it was held against, and every comparison behind it."""

    chosen: str
    reference: str
    best: str  # lowest mean error
    reason: str
    comparisons: tuple[Comparison, ...]  # every candidate against the chosen one
    mean_error: Mapping[str, float]
    # raced out after the first fold: name -> error on it (not in mean_error); their comparison is that fold's
    stopped: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"chosen": self.chosen, "reference": self.reference, "best": self.best, "reason": self.reason,
                "mean_error": dict(self.mean_error), "comparisons": [c.to_dict() for c in self.comparisons],
                "stopped": dict(self.stopped)}


def decide(errors: Mapping[str, Sequence[float]], reference: str, *, test_fraction: float,
           confidence: float = CONFIDENCE) -> Decision:
    """Apply the rule of this module to per-fold errors (%) of each candidate (same folds, same order)."""
    if reference not in errors:
        raise ValueError(f"the reference {reference!r} is not among the candidates")
    lengths = {len(v) for v in errors.values()}
    if len(lengths) != 1:
        raise ValueError(f"every candidate needs the same folds, got {sorted(lengths)} results")
    mean_error = {name: float(np.mean(v)) for name, v in errors.items()}
    # ties go to the earlier candidate (the caller lists simpler and standard recipes first)
    best = min(errors, key=lambda name: (mean_error[name], list(errors).index(name)))
    against = compare(errors[best], errors[reference], test_fraction=test_fraction, confidence=confidence,
                      names=(best, reference))
    if best == reference:
        chosen, reason = reference, f"the reference {reference} has the lowest mean held-out error"
    elif against.upper < 0:
        chosen = best
        reason = (f"{best} beats the reference {reference} by {-against.mean:.2f} pp of held-out error, and the "
                  f"{confidence:.0%} one-sided bound ({against.upper:+.2f} pp) clears the noise")
    else:
        chosen = reference
        reason = (f"{best} has the lowest mean error ({against.mean:+.2f} pp against the reference {reference}), "
                  f"but its {confidence:.0%} one-sided bound ({against.upper:+.2f} pp) does not clear the noise, "
                  "so the reference is kept")
    comparisons = tuple(compare(errors[chosen], errors[name], test_fraction=test_fraction, confidence=confidence,
                                names=(chosen, name)) for name in errors if name != chosen)
    return Decision(chosen, reference, best, reason, comparisons, mean_error)
