"""Phase 3's rule: choose a training recipe from cross-fitted trainings, with a stated noise model.

Every candidate trains on the same folds with the same seeds; candidates are compared with a reference
recipe by paired differences of held-out error, their variance corrected for overlapping training sets
(Nadeau and Bengio) and held at least at what testing on the held-out images alone gives
(:func:`fold_variance`), and a one-sided Student-t bound decides: the lowest mean error wins only when its
bound on (its error - the reference's) at ``confidence`` lies below zero, else the reference is kept.
The folds are raced (:func:`race`): after the first fold only the best share, every candidate within one
fold's noise (:func:`race_margin`) or tied at the cut (:data:`TIE_RULE`), and the reference go on. While
the decision is unclear, more repeats of the folds are added sequentially for the recipes that could
still clear the noise (:func:`sequential_contenders`). The derivation: docs/findings.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from policysearch.wording import counted, few

__all__ = ["Comparison", "Decision", "TIE_RULE", "bound_correction", "compare", "decide", "fold_variance", "lowest_mean", "race",
           "race_margin", "race_share", "race_ties", "selection_power", "sequential_contenders", "signed_pp",
           "versus_reference"]

CONFIDENCE = 0.8
TIE_RULE = "every recipe tied with the last one kept at the cut goes on too"
# Mean held-out errors (pp) closer than this are a tie: float32 accuracies (in a run's older files) err by less than
# it, while two real means differ by at least 100 / (held-out predictions), far above it.
TIE_TOLERANCE = 1e-5
RACE_Z = 2.0  # a candidate is raced out only when its first-fold deficit exceeds this many standard errors


def _recipes(names: Sequence[str]) -> str:
    """Recipes for a reason, told apart although their names hold commas: ``1 other recipe (a)``,
    ``5 other recipes (a; b; c and 2 more)``."""
    return f"{counted(len(names), 'other recipe')} ({few(names, sep='; ')})"


def signed_pp(x: float) -> str:
    """A difference or bound in points, signed, as every report of the rule shows it: within
    :data:`TIE_TOLERANCE` of 0 it is 0 (float noise), otherwise its own sign, so a bound below 0 never reads
    ``+0.00``."""
    return f"{0.0 if abs(x) <= TIE_TOLERANCE else x:+.2f}"


def race_share(keep: float, candidates: int) -> int:
    """How many candidates the race keeps by rank: ``ceil(keep x candidates)``, the product read to 9 decimals
    (0.28 x 25 is 7, not the 7.000000000000001 of floating point)."""
    return math.ceil(round(keep * candidates, 9))


def race_margin(first_fold: Mapping[str, float], held_out: int, z: float = RACE_Z) -> float:
    """The noise of one fold, in points: ``z`` standard errors of the difference of two error rates on the
    same ``held_out`` images (at their mean rate, at least one image's worth). A candidate within it of
    the best first-fold error is not raced out."""
    if held_out < 1 or not first_fold:
        return math.inf
    p = min(max(float(np.mean(list(first_fold.values()))) / 100.0, 1.0 / held_out), 0.5)
    return 100.0 * z * math.sqrt(2.0 * p * (1.0 - p) / held_out)


def _cut(first_fold: Mapping[str, float], order: Sequence[str], keep: float) -> tuple[list[str], float | None]:
    """The candidates that finished the first fold, lowest error first, and the error at the cut (None: none)."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep must lie in (0, 1], got {keep}")
    done = [name for name in order if name in first_fold]
    ranked = sorted(done, key=lambda name: (first_fold[name], order.index(name)))
    share = ranked[:race_share(keep, len(order))]
    return ranked, (first_fold[share[-1]] if share else None)


def race(first_fold: Mapping[str, float], order: Sequence[str], keep: float, reference: str,
         margin: float = 0.0) -> list[str]:
    """The candidates (in ``order``) that go on after the first fold: the ``ceil(keep x len(order))`` with the
    lowest first-fold error and, by :data:`TIE_RULE`, every one with the same error as the last of them; every
    one within ``margin`` points of the lowest (one fold's noise, :func:`race_margin`); and ``reference`` when
    it finished the fold. A candidate missing from ``first_fold`` (it failed) is out."""
    ranked, cut = _cut(first_fold, order, keep)
    kept = {name for name in ranked if cut is not None and first_fold[name] <= cut}
    if ranked:
        kept |= {name for name in ranked if first_fold[name] <= first_fold[ranked[0]] + margin}
    kept |= {reference} & set(ranked)
    return [name for name in order if name in kept]


def race_ties(first_fold: Mapping[str, float], order: Sequence[str], keep: float, margin: float = 0.0,
              reference: str | None = None) -> tuple[float | None, int]:
    """The error at the race's cut and how many candidates went on only because they tied there: beyond
    ``ceil(keep x len(order))`` by rank, farther than ``margin`` from the best and not ``reference``, which
    :func:`race` keeps anyway (0: the tie rule changed nothing)."""
    ranked, cut = _cut(first_fold, order, keep)
    if cut is None:
        return None, 0
    best = first_fold[ranked[0]]
    beyond = ranked[race_share(keep, len(order)):]
    return cut, sum(1 for name in beyond if first_fold[name] <= cut and first_fold[name] > best + margin
                    and name != reference)


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

    @property
    def clears(self) -> bool:
        """The rule's test: the one-sided bound lies below 0, beyond float noise (:data:`TIE_TOLERANCE`); a
        bound that does not exist (one fold) does not clear."""
        return self.upper < -TIE_TOLERANCE

    def to_dict(self) -> dict[str, object]:
        """As plain JSON: a bound that does not exist (one fold) is None, not NaN."""
        def finite(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {"candidate": self.candidate, "reference": self.reference, "mean": finite(self.mean),
                "low": finite(self.low), "high": finite(self.high), "upper": finite(self.upper), "n": self.n}


def bound_correction(held_out: int) -> str:
    """How a decision's bounds were computed, for a report's words: a decision written before the variance
    floor (``held_out`` 0) had none."""
    return ("corrected for overlapping training sets" if held_out < 1 else
            "corrected for overlapping training sets and with a variance at least what testing on each fold's "
            "held-out images alone gives")


def fold_variance(d: Sequence[float], held_out: int = 0) -> float:
    """The variance (pp squared) of one fold's paired difference of held-out error, from ``d`` (pp, one per
    fold): their sample variance, but at least the variance that testing on ``held_out`` images alone
    gives (McNemar: a difference ``r`` of two error rates on the same images varies by at least
    ``|r| (1 - |r|) / held_out``), so folds that agree by chance cannot make the bound equal the mean
    (``held_out`` 0: unknown, no floor)."""
    d = np.asarray(d, dtype=float)
    variance = float(d.var(ddof=1))
    if held_out > 0:
        rates = np.abs(d) / 100.0
        variance = max(variance, 1e4 * float(np.mean(rates * (1.0 - rates))) / held_out)
    return variance


def compare(candidate: Sequence[float], reference: Sequence[float], *, test_fraction: float,
            confidence: float = CONFIDENCE, names: tuple[str, str] = ("candidate", "reference"),
            held_out: int = 0) -> Comparison:
    """The corrected paired comparison of two candidates' per-fold errors (same folds, same order), each fold
    tested on at least ``held_out`` images (:func:`fold_variance`)."""
    d = np.asarray(candidate, dtype=float) - np.asarray(reference, dtype=float)
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    if n < 2:
        return Comparison(*names, mean, math.nan, math.nan, math.nan, n)
    variance = fold_variance(d, held_out)
    two = _half_width(variance, n, test_fraction, 0.5 + confidence / 2)
    one = _half_width(variance, n, test_fraction, confidence)
    return Comparison(*names, mean, mean - two, mean + two, mean + one, n)


def _half_width(variance: float, n: int, test_fraction: float, level: float) -> float:
    """The one-sided half-width at ``level`` of a mean of ``n`` paired differences with this ``variance``,
    corrected for overlapping training sets (Nadeau and Bengio)."""
    from scipy import stats

    ratio = test_fraction / (1.0 - test_fraction)
    return float(stats.t.ppf(level, n - 1)) * math.sqrt((1.0 / n + ratio) * variance)


@dataclass(frozen=True)
class Decision:
    """The chosen candidate, the reference it was held against, and every comparison behind it."""

    chosen: str
    reference: str
    best: str  # lowest mean error
    reason: str
    comparisons: tuple[Comparison, ...]  # every candidate against the chosen one
    mean_error: Mapping[str, float]
    # stopped before the last fold (raced out after the first, or left out of a repeat added while the decision
    # was unclear): name -> mean error on the folds it trained on (not in mean_error); compared on those folds
    stopped: Mapping[str, float] = field(default_factory=dict)
    # every other candidate minus the reference, over all folds: the quantity the rule decides on
    versus_reference: tuple[Comparison, ...] = ()
    confidence: float = CONFIDENCE
    first_fold: Mapping[str, float] = field(default_factory=dict)  # every candidate's error on the first fold
    race_margin: float = 0.0  # one fold's noise (pp): every candidate within it of the best went on
    # every candidate's error on each fold it trained on, in fold order (empty: a decision written before)
    fold_errors: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    first_pass: int = 0  # folds of the first pass; beyond them, repeats added while the decision was unclear
    held_out: int = 0  # the fewest images a fold was tested on (0: a decision written before; no variance floor)

    def folds_of(self, name: str) -> int:
        """How many folds ``name`` trained on (a decision written before fold_errors: a stopped one, 1)."""
        if name in self.fold_errors:
            return len(self.fold_errors[name])
        return 1 if name in self.stopped else len(next(iter(self.fold_errors.values()), ()))

    def to_dict(self) -> dict[str, object]:
        return {"chosen": self.chosen, "reference": self.reference, "best": self.best, "reason": self.reason,
                "mean_error": dict(self.mean_error), "comparisons": [c.to_dict() for c in self.comparisons],
                "stopped": dict(self.stopped), "versus_reference": [c.to_dict() for c in self.versus_reference],
                "confidence": self.confidence, "first_fold": dict(self.first_fold),
                "race_margin": self.race_margin if math.isfinite(self.race_margin) else None,
                "fold_errors": {name: list(errors) for name, errors in self.fold_errors.items()},
                "first_pass": self.first_pass, "held_out": self.held_out}

    @classmethod
    def from_dict(cls, document: Mapping[str, object]) -> "Decision":
        """The decision as :meth:`to_dict` wrote it (a bound that did not exist comes back as NaN)."""
        def comparison(c: Mapping[str, object]) -> Comparison:
            def number(key: str) -> float:
                value = c.get(key)
                return math.nan if value is None else float(value)  # type: ignore[arg-type]

            return Comparison(str(c["candidate"]), str(c["reference"]), number("mean"), number("low"),
                              number("high"), number("upper"), int(c.get("n", 0)))  # type: ignore[arg-type]

        return cls(str(document["chosen"]), str(document["reference"]), str(document["best"]),
                   str(document.get("reason", "")),
                   tuple(comparison(c) for c in document.get("comparisons", [])),  # type: ignore[union-attr]
                   dict(document.get("mean_error", {})), dict(document.get("stopped", {})),  # type: ignore[arg-type]
                   tuple(comparison(c) for c in document.get("versus_reference", [])),  # type: ignore[union-attr]
                   float(document.get("confidence", CONFIDENCE)),  # type: ignore[arg-type]
                   dict(document.get("first_fold", {})),  # type: ignore[arg-type]
                   float(document.get("race_margin") or 0.0),  # type: ignore[arg-type]
                   {str(name): tuple(float(e) for e in errors)  # type: ignore[union-attr]
                    for name, errors in dict(document.get("fold_errors") or {}).items()},  # type: ignore[call-overload]
                   int(document.get("first_pass") or 0),  # type: ignore[call-overload]
                   int(document.get("held_out") or 0))  # type: ignore[call-overload]


def versus_reference(errors: Mapping[str, Sequence[float]], reference: str, *, test_fraction: float,
                     confidence: float = CONFIDENCE, held_out: int = 0) -> tuple[Comparison, ...]:
    """Every candidate but the reference: (its error - the reference's) per fold, with the one-sided upper
    bound the rule compares with 0 (:attr:`Comparison.clears`: the candidate beats the reference beyond the noise)."""
    return tuple(compare(errors[name], errors[reference], test_fraction=test_fraction, confidence=confidence,
                         names=(name, reference), held_out=held_out) for name in errors if name != reference)


def lowest_mean(errors: Mapping[str, Sequence[float]]) -> list[str]:
    """The candidates tied on the lowest mean error, in ``errors`` order: the first is the one the rule tests.
    Ties go to the earlier candidate (the caller lists simpler and standard recipes first); means that differ
    only by floating-point rounding (the same fold errors in another order, or float32 accuracies) are a tie."""
    mean_error = {name: float(np.mean(v)) for name, v in errors.items()}
    lowest = min(mean_error.values())
    return [name for name in errors if mean_error[name] - lowest <= TIE_TOLERANCE]


def decide(errors: Mapping[str, Sequence[float]], reference: str, *, test_fraction: float,
           confidence: float = CONFIDENCE, held_out: int = 0) -> Decision:
    """Apply the rule of this module to per-fold errors (%) of each candidate (same folds, same order, each
    tested on at least ``held_out`` images)."""
    if reference not in errors:
        raise ValueError(f"the reference {reference!r} is not among the candidates")
    lengths = {len(v) for v in errors.values()}
    if len(lengths) != 1:
        raise ValueError(f"every candidate needs the same folds, got {sorted(lengths)} results")
    mean_error = {name: float(np.mean(v)) for name, v in errors.items()}
    tied = lowest_mean(errors)
    best, others = tied[0], tied[1:]
    tie = (f" (tied on the mean with {_recipes(others)}, and a tie goes to the recipe listed first, the simpler "
           "or more standard one)" if others else "")
    against_reference = versus_reference(errors, reference, test_fraction=test_fraction, confidence=confidence,
                                         held_out=held_out)
    bound = f"{confidence:.0%} one-sided upper bound on ({best} - {reference})"
    if reference in tied:  # a tie never leaves the reference, wherever it is listed and whatever float noise says
        chosen, reason = reference, f"the reference {reference} has the lowest mean held-out error"
        if len(tied) > 1:
            reason += f", tied with {_recipes([name for name in tied if name != reference])}, and a tie keeps the " \
                      "reference"
    else:
        against = next(c for c in against_reference if c.candidate == best)
        if against.clears:
            chosen = best
            reason = (f"{best} beats the reference {reference} by {-against.mean:.2f} pp of held-out error{tie}, and "
                      f"the {bound}, {signed_pp(against.upper)} pp, is below 0: it clears the noise")
        else:
            chosen = reference
            reason = (f"{best} has the lowest mean error ({signed_pp(against.mean)} pp against the reference "
                      f"{reference}){tie}, but the {bound}, {signed_pp(against.upper)} pp, is not below 0: it does not "
                      "clear the noise, so the reference is kept")
    power = selection_power(against_reference)
    folds = len(next(iter(errors.values())))
    if power is not None:
        reason += (f"; the selection's power: a bound lies a median {power:.2f} pp above its mean difference "
                   f"over {folds} folds, so smaller differences stay within the noise")
    elif folds > 1 and against_reference and all(map(_same_as_reference, against_reference)):
        reason += f"; every recipe had the reference's error on each of the {folds} folds, so they cannot be told apart"
    comparisons = tuple(compare(errors[chosen], errors[name], test_fraction=test_fraction, confidence=confidence,
                                names=(chosen, name), held_out=held_out) for name in errors if name != chosen)
    return Decision(chosen, reference, best, reason, comparisons, mean_error, versus_reference=against_reference,
                    confidence=confidence, held_out=held_out)


def selection_power(against_reference: Sequence[Comparison]) -> float | None:
    """The median distance (pp) from a candidate's mean difference with the reference to its one-sided bound:
    the smallest advantage the rule can see at this data size (None: no bounds, e.g. one fold). A candidate
    with the reference's error on every fold has no spread to measure it by and is left out."""
    widths = [c.upper - c.mean for c in against_reference if math.isfinite(c.upper) and not _same_as_reference(c)]
    return float(np.median(widths)) if widths else None


def _same_as_reference(c: Comparison) -> bool:
    """Whether a candidate had the reference's error on every fold (no difference, no spread), to float noise."""
    return abs(c.mean) <= TIE_TOLERANCE and c.upper - c.mean <= TIE_TOLERANCE


def sequential_contenders(errors: Mapping[str, Sequence[float]], reference: str, *, test_fraction: float,
                          more: int, confidence: float = CONFIDENCE, held_out: int = 0) -> list[str]:
    """The recipes worth ``more`` folds, with the reference, in ``errors`` order; empty when the decision is
    clear or more folds would not change it.

    The decision is unclear when the recipe the rule tests (:func:`lowest_mean`) is not tied with the reference
    and its bound does not clear the noise. A contender beats the reference on the mean and its bound would fall below 0
    after ``more`` folds if its mean difference and spread held (the bound only narrows with the folds).
    """
    comparisons = versus_reference(errors, reference, test_fraction=test_fraction, confidence=confidence,
                                   held_out=held_out)
    if not comparisons or more < 1:
        return []
    tied = lowest_mean(errors)
    if reference in tied or next(c for c in comparisons if c.candidate == tied[0]).clears:
        return []
    contenders = set()
    for c in comparisons:
        d = np.asarray(errors[c.candidate], dtype=float) - np.asarray(errors[reference], dtype=float)
        n = len(d) + more
        if c.mean < -TIE_TOLERANCE and len(d) >= 2 and c.mean + _half_width(
                fold_variance(d, held_out), n, test_fraction, confidence) < -TIE_TOLERANCE:
            contenders.add(c.candidate)
    return [name for name in errors if name in contenders or (contenders and name == reference)]
