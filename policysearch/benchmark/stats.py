"""The benchmark's statistics: per-method summaries and paired differences over seeds."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from policysearch.benchmark.methods import ALL_METHODS


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean of a - b over pairs, with a two-sided Student-t confidence interval (nan bounds for n < 2)."""
    from scipy import stats

    if len(a) != len(b):
        raise ValueError(f"paired samples need the same length, got {len(a)} and {len(b)}")
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = len(d)
    if n == 0:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    mean = float(d.mean())
    if n < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan, "n": 1}
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def summarize(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Per method: mean and std of test error, n, mean accuracy on the un-augmented training images, and the
    paired difference searched - method."""
    runs = document["runs"]
    methods = [m for m in ALL_METHODS if any(r["method"] == m for r in runs)]
    by = {m: {r["seed"]: r["test_error"] for r in runs if r["method"] == m} for m in methods}
    rows = []
    for m in methods:
        errors = list(by[m].values())
        fits = [r["clean_train_accuracy"] for r in runs if r["method"] == m and "clean_train_accuracy" in r]
        row = {"method": m, "mean": float(np.mean(errors)),
               "std": float(np.std(errors, ddof=1)) if len(errors) > 1 else math.nan, "n": len(errors),
               "clean_train_accuracy": float(np.mean(fits)) if fits else math.nan,
               "train_seconds": float(np.mean([r["train_seconds"] for r in runs if r["method"] == m]))}
        if "searched" in by and m != "searched":
            seeds = sorted(set(by["searched"]) & set(by[m]))
            row["searched_minus"] = paired_difference([by["searched"][s] for s in seeds], [by[m][s] for s in seeds])
        rows.append(row)
    return rows


def finetune_verdict(summary: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Whether the recipe searched for fine-tuning beat the one searched from scratch (paired, 95 %)."""
    row = next((r for r in summary if r["method"] == "searched-scratch" and "searched_minus" in r), None)
    if row is None:
        return None
    diff = row["searched_minus"]
    if diff["n"] >= 2 and diff["high"] < 0:
        verdict = "the recipe searched for fine-tuning has the lower test error"
    elif diff["n"] >= 2 and diff["low"] > 0:
        verdict = "the recipe searched from scratch has the lower test error"
    else:
        verdict = "no clear difference (the interval contains 0 or there are fewer than 2 seeds)"
    return {**diff, "verdict": verdict}
