"""The pictures beside ``report.md``, drawn from a run directory's files, and ``policysearch report``.

Four PNG files, each written atomically:

- ``trials.png``: the reward of every phase-2 trial in the order its optimiser proposed it, one series per
  split and repeat, with the best so far, the candidates kept and the failed trials;
- ``recipes.png``: phase 3, every candidate recipe's held-out error per fold and mean, and the quantity the
  selection rule decides on - the recipe minus the reference, with its one-sided upper bound - with the
  recipes stopped before the last fold (by the race, or left out of a repeat added) drawn apart;
- ``ops.png``: which ops the chosen policy applies and how strongly (expected applications per image and
  the level when applied), its baseline in the title; a recipe of one uniformly drawn op per image
  (TrivialAugment) says so, with the range of levels each op really uses;
- ``grid.png``: training images of the run's data set under the chosen recipe (the grid ``policysearch
  show`` draws, :func:`policysearch.augment.grids.sample_grid`).

The inputs are ``config.json``, ``trials.csv``, ``selection.csv`` and the chosen policy (``policy.json``,
or the policy the export is about to save). ``report.md`` embeds the pictures in one section between two
HTML comments, so that ``policysearch report RUN_DIR`` can draw them again and replace that section alone.
Matplotlib (Agg) and torch are imported only when drawing.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from policysearch.atomic import write_atomic, write_bytes_atomic, write_text_atomic
from policysearch.training.data import PYTHON_PREFIX, DataError, ImageData
from policysearch.augment.policy import Policy
from policysearch.search.config import SearchConfig
from policysearch.search.rundir import config_document, least_side
from policysearch.wording import counted

__all__ = ["BEGIN", "END", "FILES", "Figure", "RunFilesError", "add_arguments", "draw_figures", "error_limits", "figures_section",
           "one_op_per_image", "op_usage", "plot_ops", "plot_recipes", "plot_trials", "read_config", "read_policy",
           "recipe_data", "replace_figures_section", "run", "training_images"]

BEGIN = "<!-- figures: drawn from this run's files; `policysearch report RUN_DIR` draws them again -->"
END = "<!-- /figures -->"
REWARD_MEANING = {
    "accuracy": "accuracy of the frozen child on augmented D_A",
    "any_view": "share of D_A images the child recognises in any view",
    "loss": "minus the child's loss on augmented D_A",
    "min_loss": "minus the child's lowest loss over the views",
}
FILES = ("trials.png", "recipes.png", "ops.png", "grid.png")  # the pictures, in the report's order
DPI = 110
CHOSEN, OTHER, FAILED = "tab:red", "tab:blue", "black"
UNTESTED = "#a8d5a2"  # a recipe beyond the noise that the rule does not test (not the lowest mean)


class RunFilesError(ValueError):
    """A run directory whose files cannot be drawn (missing, unfinished or not written by policysearch)."""


@dataclass(frozen=True)
class Figure:
    """One picture beside ``report.md``: its file name and the caption the report shows under it."""

    file: str
    title: str
    caption: str


# ------------------------------------------------------------------------------------------ reading


def _read_csv(path: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    """The rows of a run's CSV file; a RunFilesError in one line when it is missing or lacks ``columns``
    (a damaged file drew an empty picture over the good one)."""
    if not path.is_file():
        raise RunFilesError(f"{path.parent}: no {path.name}; is it a finished policysearch run directory?")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header, rows = reader.fieldnames or (), list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise RunFilesError(f"{path}: not a CSV file a search wrote ({exc})") from None
    missing = [c for c in columns if c not in header]
    if missing or not rows or any(None in row or any(row[c] is None for c in columns) for row in rows):
        what = f"no column {', '.join(missing)}" if missing else "no rows" if not rows else "a row of other length"
        raise RunFilesError(f"{path}: not as a search writes it ({what}); it was changed or cut short")
    return rows


def _check_trials(rows: Sequence[dict[str, str]], config: SearchConfig, failures: Sequence[str], path: Path) -> None:
    """A RunFilesError unless each repeat of each split whose child model trained (``failures``: the policy
    file's ``failed_trials``) holds its ``config.trials`` proposals, failed ones too: a file cut at the end
    of a row reads as a shorter search."""
    from policysearch.search.outcome import failed_child_splits

    streams: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        streams.setdefault((row["repeat"], row["split"]), []).append(row["index"])
    searched = set(range(config.splits)) - failed_child_splits(failures)
    expected = {(str(repeat), str(split)) for repeat in range(config.repeats) for split in searched}
    indices = sorted(str(i) for i in range(config.trials))
    wrong = sorted(f"split {split} of repeat {repeat} has {len(streams.get((repeat, split), []))}"
                   for repeat, split in expected | set(streams) if sorted(streams.get((repeat, split), [])) != indices)
    if wrong:
        raise RunFilesError(f"{path}: not as the search wrote it ({wrong[0]} of the {config.trials} policies each "
                            "split and repeat proposed); it was changed or cut short")


def _check_fits(rows: Sequence[dict[str, str]], selection: dict[str, Any], path: Path) -> None:
    """A RunFilesError unless the held-out errors give each recipe the decision held the mean error that
    ``policy.json`` records for it: a file cut at the end of a row drew its recipes as failed."""
    folds: dict[str, dict[int, float]] = {}
    for row in rows:
        if row["status"] == "ok":
            try:
                folds.setdefault(row["recipe"], {})[int(row["fold"])] = float(row["held_out_error"])
            except ValueError:
                raise RunFilesError(f"{path}: a row of {row['recipe']!r} holds no fold and error numbers; it was "
                                    "changed") from None
    reference = selection.get("reference")
    stored = (selection.get("fold_errors") or {}).get(reference)
    n = len(stored) if stored else len(folds.get(reference, {}))
    if not n:
        raise RunFilesError(f"{path}: no held-out error of the reference {reference!r}, which policy.json's decision "
                            "holds; it was changed or cut short")
    for name, mean in (selection.get("mean_error") or {}).items():
        errors = [folds.get(name, {}).get(fold) for fold in range(n)]
        if None in errors or not math.isclose(sum(errors) / n, float(mean), abs_tol=1e-6):
            raise RunFilesError(f"{path}: the held-out errors of {name!r} are not those of policy.json's decision "
                                f"(a mean of {float(mean):.2f}% over {n} folds); it was changed or cut short")


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def read_config(run_dir: Path) -> SearchConfig:
    """The search settings stored in ``run_dir/config.json``."""
    path = run_dir / "config.json"
    if not path.is_file():
        raise RunFilesError(f"{run_dir}: no config.json; is it a policysearch run directory?")
    try:
        return SearchConfig.from_dict(config_document(path)["search"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunFilesError(f"{path}: not a config policysearch wrote ({exc})") from None


def read_policy(run_dir: Path) -> Policy:
    """The chosen recipe of a finished run; a one-line error for a search that has not finished."""
    path = run_dir / "policy.json"
    if not path.is_file():
        raise RunFilesError(f"{run_dir}: the search is not finished (no policy.json yet); finish it with "
                            f"`policysearch search --resume {run_dir}`")
    return Policy.load(path)


def training_images(config: SearchConfig, run_dir: Path, data_root: str | None = None) -> ImageData:
    """The images the search in ``run_dir`` trained on: the data set of ``config``, sized as that run sized it,
    and its seeded ``train_size`` subset."""
    from policysearch.training.data import load_dataset, stratified_subset
    from policysearch.training.pretrained import fit_image_size

    data = load_dataset(config.dataset, split="train", data_root=data_root or config.data_root,
                        image_size=config.image_size, least_side=least_side(run_dir, config.model, resume=True))
    data = fit_image_size(data, config.model, config.image_size)  # a run from before the sizing: as it was
    return stratified_subset(data, config.train_size, seed=config.seed) if config.train_size else data


# ------------------------------------------------------------------------------------------ drawing


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.15)
    _pyplot().close(fig)
    return buffer.getvalue()


def _wrap(text: str, width: int = 95) -> str:
    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False))


REPEAT_MARKERS = "os^Dv"  # trials.png: a repeat's points, in its split's colour


def plot_trials(rows: Sequence[dict[str, str]], config: SearchConfig, clean_accuracy: float | None,
                clean_by_split: Mapping[int, float] | None = None) -> bytes:
    """Phase 2: every trial's reward by its place in its optimiser's sequence, one colour per split and repeat;
    with ``clean_by_split``, each split's child model on clean D_A as a dashed line in its colour (a split's
    rewards compare with its own child), else ``clean_accuracy``, the children's mean, as one grey line."""
    from matplotlib.lines import Line2D

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.4))
    groups: dict[tuple[int, int], list[dict[str, str]]] = {}
    for r in rows:
        groups.setdefault((int(r["repeat"]), int(r["split"])), []).append(r)
    colours = plt.get_cmap("tab10")
    ok_rewards = [_float(r["reward"]) for r in rows if r["status"] == "ok"]
    low = min(ok_rewards, default=0.0)
    high = max(ok_rewards, default=1.0)
    floor = low - 0.08 * max(high - low, 1e-3)  # where failed trials are marked, below every score
    failed_any = False
    clean_lines = dict(clean_by_split or {})
    for (repeat, split), group in sorted(groups.items()):
        colour = colours(split % 10)  # a colour per split (its child's line has it), a marker per repeat
        marker = REPEAT_MARKERS[repeat % len(REPEAT_MARKERS)]
        if split in clean_lines:
            ax.axhline(clean_lines.pop(split), color=colour, linestyle="--", linewidth=1, alpha=0.8)
        group.sort(key=lambda r: int(r["index"]))
        ok = [r for r in group if r["status"] == "ok"]
        xs = [int(r["index"]) for r in ok]
        ys = [_float(r["reward"]) for r in ok]
        label = f"split {split}" + (f", repeat {repeat}" if config.repeats > 1 else "")
        ax.plot(xs, ys, marker, color=colour, markersize=4, alpha=0.75, label=label)
        best, running = -math.inf, []
        for y in ys:
            best = max(best, y)
            running.append(best)
        ax.step(xs, running, where="post", color=colour, linewidth=1.4)
        kept = sorted(ok, key=lambda r: _float(r["reward"]), reverse=True)[:config.top_n]
        ax.plot([int(r["index"]) for r in kept], [_float(r["reward"]) for r in kept], "o", markersize=9,
                markerfacecolor="none", markeredgecolor=colour, markeredgewidth=1.2)
        bad = [int(r["index"]) for r in group if r["status"] != "ok"]
        if bad:
            failed_any = True
            ax.plot(bad, [floor] * len(bad), "x", color=colour, markersize=7, markeredgewidth=1.8)
    if clean_accuracy is not None and not clean_by_split:
        ax.axhline(clean_accuracy, color="0.45", linestyle="--", linewidth=1)
    handles, _ = ax.get_legend_handles_labels()
    extra = [Line2D([], [], color="0.3", linewidth=1.4, label="best so far"),
             Line2D([], [], marker="o", markersize=9, markerfacecolor="none", markeredgecolor="0.3", linestyle="",
                    label=f"kept (the best {min(config.top_n, config.trials)})")]
    if failed_any:
        extra.append(Line2D([], [], marker="x", color=FAILED, linestyle="", markeredgewidth=1.5,
                            label="failed (no score), at the bottom"))
    if clean_by_split:
        extra.append(Line2D([], [], color="0.45", linestyle="--",
                            label="the split's child model on clean D_A\n(its colour): no policy, no baseline"))
    elif clean_accuracy is not None:
        extra.append(Line2D([], [], color="0.45", linestyle="--",
                            label="child models on clean D_A (mean): no policy, no baseline"))
    ax.legend(handles=handles + extra, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_xlabel("trial number in its split's optimiser (order proposed)")
    ax.set_ylabel(f"reward: {config.reward}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    n_ok = len(ok_rewards)
    ax.set_title(_wrap(f"Phase 2: {n_ok} of {len(rows)} candidate policies scored ({config.algorithm}, "
                       f"{counted(config.splits, 'split')} x {counted(config.repeats, 'repeat')} x "
                       f"{counted(config.trials, 'trial')}); reward = "
                       f"{REWARD_MEANING.get(config.reward, config.reward)} over {config.num_views} views", 95),
                 fontsize=10)
    return _png(fig)


def recipe_data(rows: Sequence[dict[str, str]], selection: dict[str, Any], *, confidence: float,
                test_fraction: float) -> dict[str, list[dict[str, Any]]]:
    """What ``recipes.png`` draws, from ``selection.csv`` rows and the decision in ``policy.json``.

    ``ranked``: the recipes that trained on every fold, lowest mean error first: their fold errors, mean,
    and - the quantity the rule decides on, computed as the rule computes it - this recipe minus the
    reference over the folds with its one-sided upper bound (``clears``: the bound is below 0).
    ``stopped``: the recipes stopped before the last fold (raced out after the first, or left out of a
    repeat added while the decision was unclear): their mean error on the folds they trained on and its
    difference with the reference's on the same folds (no part in the decision). ``failed``: the others.
    """
    from policysearch.search.selection import compare

    names = list(dict.fromkeys(r["recipe"] for r in rows))
    folds: dict[str, dict[int, float]] = {n: {} for n in names}
    for r in rows:
        if r["status"] == "ok":
            folds[r["recipe"]][int(r["fold"])] = _float(r["held_out_error"])
    stopped_names = set(selection.get("stopped") or {})
    reference, chosen = selection.get("reference"), selection["chosen"]
    compared = selection.get("fold_errors", {}).get(reference)  # the decision's folds: the reference's
    n_folds = len(compared) if compared else max((len(v) for n, v in folds.items() if n not in stopped_names),
                                                 default=0)
    errors = {n: [v[f] for f in range(n_folds)] for n, v in folds.items()
              if n not in stopped_names and n_folds > 0 and all(f in v for f in range(n_folds))}
    ranked, stopped, failed = [], [], []
    for name in names:
        if name in errors:
            row: dict[str, Any] = {"recipe": name, "folds": errors[name], "mean": sum(errors[name]) / n_folds,
                                   "chosen": name == chosen, "reference": name == reference,
                                   "tested": name == selection.get("best", chosen),
                                   "diff": None, "upper": None, "clears": None}
            if reference in errors and name != reference:
                c = compare(errors[name], errors[reference], test_fraction=test_fraction, confidence=confidence,
                            held_out=int(selection.get("held_out") or 0))
                row.update(diff=c.mean, upper=None if c.upper != c.upper else c.upper,
                           clears=None if c.upper != c.upper else c.clears)
            ranked.append(row)
        elif name in stopped_names and 0 in folds[name]:
            kept = selection.get("fold_errors", {}).get(name)  # the folds the decision counted (whole repeats)
            own = list(kept) if kept else [folds[name][0]]
            base = [folds.get(reference, {}).get(f) for f in range(len(own))]
            mean = sum(own) / len(own)
            stopped.append({"recipe": name, "folds": len(own), "mean": mean,
                            "diff": None if None in base else mean - sum(base) / len(base)})
        else:
            failed.append({"recipe": name})
    ranked.sort(key=lambda r: r["mean"])
    stopped.sort(key=lambda r: (-r["folds"], r["mean"]))
    return {"ranked": ranked, "stopped": stopped, "failed": failed}


def _marks(chosen: bool, reference: bool) -> str:
    """`` (chosen)``, `` (reference)`` or both in one bracket, after a recipe's name."""
    marks = [word for word, on in (("chosen", chosen), ("the reference", reference)) if on]
    return f" ({'; '.join(marks)})" if marks else ""


def error_limits(errors: Sequence[float]) -> tuple[float, float]:
    """The held-out error axis of recipes.png: from 0 while the errors reach near it, else the errors' own
    span, so that folds at 82-94% are not squeezed into the last tenth of the axis."""
    low, high = min(errors, default=0.0), max(list(errors) + [1.0])
    if low <= 0.5 * high:
        return -0.04 * high, 1.08 * high  # a fold with no error stays visible off the spine
    pad = 0.08 * (high - low) + max(0.0, 1.0 - (high - low)) / 2  # at least 1 pp wide
    return low - pad, high + pad


def plot_recipes(rows: Sequence[dict[str, str]], selection: dict[str, Any], confidence: float,
                 test_fraction: float) -> bytes:
    """Phase 3: held-out error of every candidate recipe and, for each, the quantity the rule decides on (this
    recipe minus the reference, with its one-sided upper bound); the recipes stopped before the last fold in
    panels of their own below."""
    plt = _pyplot()
    data = recipe_data(rows, selection, confidence=confidence, test_fraction=test_fraction)
    ranked, stopped, failed = data["ranked"], data["stopped"], data["failed"]
    chosen, reference = selection["chosen"], selection.get("reference")
    top_rows = len(ranked) + len(failed)
    ratios = [max(top_rows, 1)] + ([len(stopped) + 0.6] if stopped else [])
    height = 2.0 + 0.34 * (top_rows + len(stopped)) + (0.9 if stopped else 0.0)
    fig, axes = plt.subplots(len(ratios), 2, figsize=(10, height), layout="constrained", squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1.25], "height_ratios": ratios})
    left, right = axes[0]
    errors = [v for r in ranked for v in r["folds"]] + [r["mean"] for r in stopped]
    diffs = [v for r in ranked for v in (r["diff"], r["upper"]) if v is not None]
    diffs += [r["diff"] for r in stopped if r["diff"] is not None]
    reach = max([abs(v) for v in diffs] + [1.0])
    level = f"{confidence:.0%}"

    ys = list(range(top_rows))[::-1]
    labels = []
    for y, row in zip(ys, ranked):
        name = row["recipe"]
        colour = CHOSEN if row["chosen"] else OTHER
        left.plot(row["folds"], [y] * len(row["folds"]), "|", color="0.55", markersize=8)
        left.plot([row["mean"]], [y], "D" if row["chosen"] else "o", color=colour, markersize=7)
        labels.append(name + _marks(row["chosen"], row["reference"]))
        if row["reference"]:
            right.text(0.0, y, "reference", ha="center", va="center", fontsize=8, color="0.2",
                       bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
        elif row["diff"] is not None:
            tone = "0.35" if not row["clears"] else ("tab:green" if row["tested"] else UNTESTED)
            if row["upper"] is not None:  # the one-sided interval: everything up to the bound
                right.plot([row["diff"], row["upper"]], [y, y], color=tone, linewidth=1.6)
                right.plot([row["upper"]], [y], "|", color=tone, markersize=11, markeredgewidth=2)
            right.plot([row["diff"]], [y], "o", color=CHOSEN if row["chosen"] else tone, markersize=5)
    for y, row in zip(ys[len(ranked):], failed):
        labels.append(row["recipe"])
        left.text(0.02, y, "failed", transform=left.get_yaxis_transform(), va="center", fontsize=8)
    left.set_yticks(ys, labels, fontsize=8)
    for ax in (left, right):
        ax.set_ylim(-0.7, max(top_rows, 1) - 0.3)
        ax.grid(axis="x", alpha=0.3)
    n_folds = max((len(r["folds"]) for r in ranked), default=0)
    left.set_xlim(*error_limits(errors))
    left.set_xlabel(f"held-out error (%): | each of the {n_folds} folds, o mean", fontsize=9)
    right.axvline(0, color="0.3", linewidth=1, zorder=0)
    right.set_xlim(-1.15 * reach, 1.15 * reach)  # 0 in the middle: which side a recipe falls is plain
    right.set_yticks(ys, [""] * len(ys))
    right.tick_params(axis="y", length=0)
    right.set_xlabel(f"this recipe minus the reference (pp):\no mean, | {level} one-sided upper bound", fontsize=9)
    right.set_title("The rule's test: the lowest-mean recipe replaces the reference\nonly when its bound is below 0 "
                    "(green: beyond the noise; pale: beyond it, not tested)", fontsize=9)
    if stopped:
        low_left, low_right = axes[1]
        ys2 = list(range(len(stopped)))[::-1]
        for y, row in zip(ys2, stopped):
            low_left.plot([row["mean"]], [y], "s", color="0.45", markerfacecolor="none", markersize=7)
            if row["diff"] is not None:
                low_right.plot([row["diff"]], [y], "s", color="0.45", markerfacecolor="none", markersize=6)
        mixed = any(row["folds"] > 1 for row in stopped)
        low_left.set_yticks(ys2, [row["recipe"] + (f" ({row['folds']} folds)" if row["folds"] > 1 else
                                                   " (first fold)" if mixed else "") for row in stopped], fontsize=8)
        low_right.set_yticks(ys2, [""] * len(ys2))
        low_right.tick_params(axis="y", length=0)
        for ax in (low_left, low_right):
            ax.set_ylim(-0.7, len(stopped) - 0.3)
            ax.grid(axis="x", alpha=0.3)
        low_left.set_xlim(left.get_xlim())
        low_right.set_xlim(right.get_xlim())
        low_right.axvline(0, color="0.3", linewidth=1, zorder=0)
        if all(row["folds"] == 1 for row in stopped):
            low_left.set_title(f"Stopped by the race after the first fold ({len(stopped)}): that one fold's error, "
                               "not a mean; no part in the decision", fontsize=9, loc="left")
            low_left.set_xlabel("held-out error on the first fold (%)", fontsize=9)
            low_right.set_xlabel("this recipe minus the reference on the first fold (pp), no bound", fontsize=9)
        else:
            why = ("left out of (or failed in) the repeats added" if all(row["folds"] > 1 for row in stopped) else
                   "raced out after the first fold, or left out of (or failed in) the repeats added")
            low_left.set_title(_wrap(f"Stopped before the last fold ({len(stopped)}), {why}: a mean over the "
                                     "folds each trained on; no part in the decision", 70), fontsize=9, loc="left")
            low_left.set_xlabel("mean held-out error on its folds (%)", fontsize=9)
            low_right.set_xlabel("minus the reference on the same folds (pp), no bound", fontsize=9)
    total = len(ranked) + len(stopped) + len(failed)
    every = "both" if n_folds == 2 else f"all {n_folds}"
    fig.suptitle(_wrap(f"Phase 3: {total} candidate recipes, {len(ranked)} on {every} cross-fit folds (the same "
                       "for each)" + (f", {len(stopped)} stopped earlier" if any(r["folds"] > 1 for r in stopped)
                                      else f", {len(stopped)} stopped after the first" if stopped else "")
                       + (f", {len(failed)} failed" if failed else "")
                       + f". Chosen: {chosen}. Why: {selection.get('reason', '')}", 110), fontsize=10)
    return _png(fig)


def op_usage(policy: Policy) -> list[dict[str, Any]]:
    """Per op of ``policy``: expected applications per image (each image draws one sub-policy uniformly and
    applies each step with its probability), share of sub-policies using it, and its levels weighted by
    probability (mean, min, max). Most applied first."""
    usage: dict[str, dict[str, Any]] = {}
    n = max(len(policy), 1)
    for sub in policy:
        for op in {step.op for step in sub}:
            usage.setdefault(op, {"op": op, "expected": 0.0, "share": 0.0, "weight": 0.0, "level_sum": 0.0,
                                  "levels": []})["share"] += 1 / n
        for step in sub:
            u = usage[step.op]
            u["expected"] += step.prob / n
            u["weight"] += step.prob
            u["level_sum"] += step.prob * step.level
            u["levels"].append(step.level)
    out = []
    for u in usage.values():
        mean = u["level_sum"] / u["weight"] if u["weight"] > 0 else math.nan
        out.append({"op": u["op"], "expected": u["expected"], "share": u["share"], "mean_level": mean,
                    "min_level": min(u["levels"]), "max_level": max(u["levels"])})
    return sorted(out, key=lambda u: (-u["expected"], u["op"]))


def _argument(op: str, level: float, ranges: str = "standard") -> str:
    """What ``op`` does at ``level`` in its own unit: ``±15 degrees``, ``factor 1 ± 0.45``, ``6 bits kept``."""
    from policysearch.augment.ops import OPS

    spec = OPS.get(op)
    if spec is None or not spec.has_magnitude or level != level:
        return ""
    arg = spec.argument(level, ranges)
    value = f"{arg:.0f}" if abs(arg) >= 10 else f"{arg:.2g}"
    if "arg" in spec.description:  # e.g. "factor 1 +- arg"
        return spec.description.replace("+-", "±").replace("arg", value)
    return f"{'±' if spec.signed else ''}{value} {spec.description}".strip()


def one_op_per_image(policy: Policy) -> dict[str, Any] | None:
    """For a recipe that gives each image exactly one op, drawn uniformly, at a level drawn uniformly from
    the same levels for every op (TrivialAugment, RandAugment with N = 1): its ops and levels, and per op
    the levels it really uses with the domain fit's highest level for it (from the policy's metadata, when
    the search recorded one); None for any other policy."""
    subs = list(policy)
    if not subs or any(len(sub) != 1 or sub[0].prob != 1.0 for sub in subs):
        return None
    levels: dict[str, list[float]] = {}
    for sub in subs:
        levels.setdefault(sub[0].op, []).append(sub[0].level)
    shared = sorted(next(iter(levels.values())))
    if any(sorted(v) != shared for v in levels.values()):
        return None
    caps = {str(f["op"]): float(f["max_level"]) for f in policy.metadata.get("domain_fit", {}).get("ops", [])
            if isinstance(f, dict) and "op" in f and "max_level" in f}
    ops = [{"op": op, "low": min(v), "high": max(v), "cap": caps.get(op)} for op, v in levels.items()]
    return {"ops": ops, "levels": shared}


def identity_only(choice: dict[str, Any]) -> bool:
    """Whether :func:`one_op_per_image`'s recipe holds the identity alone (a baseline-only recipe)."""
    return [u["op"] for u in choice["ops"]] == ["Identity"]


def describe_one_op_per_image(choice: dict[str, Any]) -> str:
    """One sentence for :func:`one_op_per_image`'s recipe: what each image gets."""
    n, levels = len(choice["ops"]), choice["levels"]
    if identity_only(choice):  # a baseline-only recipe: the baseline does all of it
        return "no op of the policy changes an image (it holds the identity alone)"
    level = (f"at level {levels[0]:g}" if len(set(levels)) == 1 else
             f"at a level drawn uniformly from {len(levels)} levels between {levels[0]:g} and {levels[-1]:g}")
    return f"each image gets exactly one op, drawn uniformly from {n} ops ({1 / n:.0%} each), {level}"


def _plot_one_op_per_image(policy: Policy, recipe: str, choice: dict[str, Any]) -> bytes:
    from policysearch.augment.ops import OPS

    plt = _pyplot()
    rows = sorted(choice["ops"], key=lambda u: u["op"])[::-1]
    fig, ax = plt.subplots(figsize=(10, 1.9 + 0.3 * max(len(rows), 2)), layout="constrained")
    capped = False
    for y, u in enumerate(rows):
        spec = OPS.get(u["op"])
        excluded = "; the domain fit excluded it, this recipe keeps it" if u["cap"] == 0.0 else ""
        if spec is not None and not spec.has_magnitude:
            ax.text(0.0, y, f"no level (always the same effect){excluded}", va="center", fontsize=7.5, color="0.4")
            continue
        ax.plot([u["low"], u["high"]], [y, y], color=OTHER, linewidth=4, solid_capstyle="butt")
        if u["cap"] is not None and u["cap"] < u["high"]:
            capped = True
            ax.plot([u["cap"]], [y], "|", color=CHOSEN, markersize=13, markeredgewidth=2)
        low, high = _argument(u["op"], u["low"]), _argument(u["op"], u["high"])
        text = (f"levels {u['low']:g}-{u['high']:g}: {low} to {high}" if u["low"] != u["high"] else
                f"level {u['low']:g}: {low}") + excluded
        ax.text(1.03, y, text, va="center", fontsize=7.5, transform=ax.get_yaxis_transform())
    ax.set_yticks(range(len(rows)), [u["op"] for u in rows], fontsize=8.5)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlim(-0.02, 1.02)
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel("levels in [0, 1] this recipe draws from (uniformly)"
                  + ("; | the domain fit's highest level for the op, which this recipe does not apply (it keeps "
                     "its own levels)" if capped else ""), fontsize=9)
    fig.suptitle(_wrap(f"Chosen recipe {recipe}: {describe_one_op_per_image(choice)}; then the baseline: "
                       f"{policy.baseline.describe()}", 105), fontsize=10)
    return _png(fig)


def plot_ops(policy: Policy, recipe: str) -> bytes:
    """Which ops the policy applies (expected applications per image) and at which levels, baseline in the
    title; a recipe of one uniformly drawn op per image (:func:`one_op_per_image`) is drawn as that, with
    the levels it really uses."""
    from policysearch.augment.ops import OPS

    choice = one_op_per_image(policy)
    if choice is not None:
        return _plot_one_op_per_image(policy, recipe, choice)
    plt = _pyplot()
    usage = op_usage(policy)
    identity = next((u["expected"] for u in usage if u["op"] == "Identity"), 0.0)
    shown = [u for u in usage if u["op"] != "Identity" and u["expected"] > 0]
    steps = max((len(sub) for sub in policy), default=0)
    if not shown:
        fig, ax = plt.subplots(figsize=(7, 1.6), layout="constrained")
        ax.set_axis_off()
        ax.text(0.5, 0.5, "The policy applies no op (Identity only):\nevery training image gets the baseline alone, "
                f"{policy.baseline.describe()}.", ha="center", va="center", fontsize=10)
        fig.suptitle(f"Chosen recipe {recipe}", fontsize=10)
        return _png(fig)
    subs = f"{len(policy)} sub-polic{'y' if len(policy) == 1 else 'ies'}"
    title = (f"Chosen recipe {recipe}: {subs} of up to {steps} op(s); each image draws one "
             f"sub-policy and applies each op with its probability, then the baseline: "
             f"{policy.baseline.describe()}")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 1.7 + 0.32 * max(len(shown), 2)), sharey=True,
                                      layout="constrained", gridspec_kw={"width_ratios": [1, 1.3]})
    ys = list(range(len(shown)))[::-1]
    top = max((u["expected"] for u in shown), default=1.0)
    for y, u in zip(ys, shown):
        left.barh(y, u["expected"], color=OTHER, height=0.6)
        left.text(u["expected"] + 0.01 * top, y, f"{u['expected']:.2f} ({u['share']:.0%})",
                  va="center", fontsize=7.5)
        spec = OPS.get(u["op"])
        if spec is not None and not spec.has_magnitude:
            right.text(0.02, y, "no level (always the same effect)", va="center", fontsize=7.5, color="0.4")
            continue
        right.plot([u["min_level"], u["max_level"]], [y, y], color="0.6", linewidth=3, solid_capstyle="butt")
        right.plot([u["mean_level"]], [y], "o", color=CHOSEN, markersize=6)
        right.text(1.03, y, f"mean {u['mean_level']:.2f}: {_argument(u['op'], u['mean_level'], policy.ranges)}", va="center",
                   fontsize=7.5, transform=right.get_yaxis_transform())
    left.set_yticks(ys, [u["op"] for u in shown], fontsize=8.5)
    left.set_ylim(-0.7, len(shown) - 0.3)
    left.set_xlim(0, top * 1.45)  # room for the value labels
    left.set_xlabel("expected applications per image\n(in brackets: share of sub-policies with the op)", fontsize=9)
    left.grid(axis="x", alpha=0.3)
    right.set_xlim(-0.02, 1.02)
    right.set_xlabel("level in [0, 1]: o mean weighted by probability, bar min to max", fontsize=9)
    right.grid(axis="x", alpha=0.3)
    right.tick_params(axis="y", length=0)
    if identity:
        title += f". Identity (leaves the image as it is): {identity:.2f} per image"
    fig.suptitle(_wrap(title, 105), fontsize=10)
    return _png(fig)


# ------------------------------------------------------------------------------------------ the set


def _stopped_caption(selection: dict[str, Any]) -> str:
    """The caption's sentence on the recipes drawn apart, as the picture draws them ('' when none stopped)."""
    from policysearch.search.selection import Decision

    decision = Decision.from_dict(selection)
    folds = {decision.folds_of(name) for name in decision.stopped}
    if not folds:
        return ""
    if folds == {1}:
        return " The recipes the race stopped after the first fold are drawn apart below, with that one fold's error."
    why = ("left out of (or failed in) the repeats added" if 1 not in folds else
           "raced out after the first fold, or left out of (or failed in) the repeats added")
    return (f" The recipes stopped before the last fold ({why}) are drawn apart below, with their mean over the "
            "folds each trained on.")


def draw_figures(run_dir: str | Path, *, policy: Policy | None = None, data: ImageData | None = None,
                 data_root: str | None = None) -> tuple[list[Figure], list[str]]:
    """Draw the report's pictures into ``run_dir``; returns the figures written and one note per picture
    that could not be drawn (the training images when the data set cannot be loaded from here).

    ``policy`` is the chosen recipe (default: ``run_dir/policy.json``); ``data`` the training images when
    the caller holds them (the export), else they are loaded as the search loaded them (``data_root``
    overrides the stored one).
    """
    from policysearch.augment.grids import GRID_SAMPLES, GRID_VIEWS, sample_grid
    from policysearch.search.selection import bound_correction

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    policy = policy if policy is not None else read_policy(run_dir)
    meta = policy.metadata
    selection = meta.get("score", {}).get("selection")
    if not selection:
        raise RunFilesError(f"{run_dir}: policy.json has no score.selection in its metadata; it was not written "
                            "by this version's search")
    recipe = meta.get("recipe", {}).get("name") or policy.name
    trials = _read_csv(run_dir / "trials.csv", ("split", "repeat", "index", "status", "reward"))
    _check_trials(trials, config, meta.get("failed_trials") or [], run_dir / "trials.csv")
    fits = _read_csv(run_dir / "selection.csv", ("recipe", "fold", "status", "held_out_error"))
    _check_fits(fits, selection, run_dir / "selection.csv")
    accuracy = config.reward == "accuracy"  # the children's clean accuracy compares with that reward only
    clean = meta.get("score", {}).get("child_da_accuracy_without_policy") if accuracy else None
    by_split = meta.get("score", {}).get("child_da_accuracy_by_split") if accuracy else None  # older runs: none
    by_split = {int(k): float(v) for k, v in by_split.items() if str(k).isdigit() and isinstance(v, (int, float))
                } if isinstance(by_split, dict) else None
    figures, notes = [], []

    write_bytes_atomic(run_dir / "trials.png", plot_trials(trials, config, clean, by_split))
    failed = sum(r["status"] != "ok" for r in trials)
    figures.append(Figure("trials.png", "Phase 2: every candidate policy's score",
                          f"The reward ({config.reward}) of each of the {len(trials)} candidate policies in the order "
                          "its split's optimiser proposed it; the line is the best so far, rings mark the best "
                          f"(up to) {min(config.top_n, config.trials)} of each split and repeat, merged into the Fast "
                          "AutoAugment candidates"
                          + ("; a dashed line in a split's colour is its child model's accuracy on clean D_A images (no "
                             "policy and no baseline, which every reward includes)" if by_split else
                             "; the dashed line is the child models' mean accuracy on clean D_A images (no policy and "
                             "no baseline, which every reward includes)" if clean is not None else "")
                          + (f"; x marks the {failed} failed trial(s)." if failed else ".")))
    write_bytes_atomic(run_dir / "recipes.png", plot_recipes(fits, selection, config.confidence,
                                                             1.0 / config.selection_folds))
    figures.append(Figure("recipes.png", "Phase 3: the candidate recipes compared",
                          "Held-out error of every candidate recipe per cross-fit fold and on average (left), and "
                          "the quantity the rule decides on (right): the recipe minus the reference, with its "
                          f"{config.confidence:.0%} one-sided upper bound "
                          f"({bound_correction(int(selection.get('held_out') or 0))}); green: the bound is below 0, the recipe "
                          "beats the reference beyond the noise; pale green: a bound below 0 too, on a recipe the "
                          "rule does not test (it tests only the one with the lowest mean error)."
                          + _stopped_caption(selection)))
    write_bytes_atomic(run_dir / "ops.png", plot_ops(policy, recipe))
    choice = one_op_per_image(policy)
    figures.append(Figure("ops.png", "What the chosen policy does",
                          (f"{recipe}: {describe_one_op_per_image(choice)}"
                           + ("" if identity_only(choice) else "; per op, the levels it really uses")
                           if choice is not None else
                           f"Per op of {recipe}: how often an image gets it and at which level")
                          + f"; the baseline ({policy.baseline.describe()}) follows on every image."))
    try:
        images = data if data is not None else training_images(config, Path(run_dir), data_root)
    except DataError as exc:
        notes.append("grid.png not drawn: the search's images were Python objects, which a later `policysearch "
                     "report` cannot read again" if config.dataset.startswith(PYTHON_PREFIX) else
                     f"grid.png not drawn: {exc} (give the data's folder with --data-root)")
    else:
        about = f"training images under {recipe} (policy, then {policy.baseline.describe()})"
        canvas, _, _ = sample_grid(policy, images, about=about, samples=GRID_SAMPLES, views=GRID_VIEWS,
                                   seed=config.seed)
        write_atomic(run_dir / "grid.png", lambda handle: canvas.save(handle, format="PNG"))
        figures.append(Figure("grid.png", "Training images under the chosen recipe",
                              f"{GRID_SAMPLES} training images of {images.name} (rows, with their class) and "
                              f"{GRID_VIEWS} random views of each as training sees them: the policy, then "
                              f"{policy.baseline.describe()}."))
    return figures, notes


def figures_section(figures: Sequence[Figure], notes: Sequence[str] = ()) -> str:
    """The report's pictures section (between :data:`BEGIN` and :data:`END`), ending with a newline."""
    lines = [BEGIN, "## Pictures", ""]
    for f in figures:
        lines += [f"![{f.title}]({f.file})", "", f"*{f.title}.* {f.caption}", ""]
    lines += [f"- {note}" for note in notes] + ([""] if notes else [])
    return "\n".join(lines) + END + "\n"


def replace_figures_section(report: str, section: str) -> str:
    """``report`` with its pictures section replaced by ``section``; a report without one gets it before its
    first ``## `` heading (after the summary), or at the end."""
    start, end = report.find(BEGIN), report.find(END)
    if start >= 0 and end > start:
        tail = report[end + len(END):]
        return report[:start] + section + tail[1:] if tail.startswith("\n") else report[:start] + section + tail
    at = report.find("\n## ")
    if at < 0:
        return report.rstrip("\n") + "\n\n" + section
    return report[:at + 1] + section + "\n" + report[at + 1:]


# ------------------------------------------------------------------------------------------ command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``policysearch report`` options."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished search's run directory (with policy.json)")
    parser.add_argument("--data-root", default=None, metavar="DIR",
                        help="where the run's data set lives, when not where config.json says (a relative "
                             "data_root is read from the current folder); only the image grid needs it")


def _read_report(path: Path) -> str:
    """The run's report.md, read before anything is drawn: a file that cannot be read is named first."""
    if path.is_dir():
        raise RunFilesError(f"{path}: a folder, not the report")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RunFilesError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); it was not written by "
                            "policysearch as it is, so remove it to have the pictures put into a new one") from None


def run(args: argparse.Namespace) -> int:
    """Draw the pictures of a finished run again and rewrite the pictures section of its report.md."""
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise RunFilesError(f"{run_dir}: a file, not a run directory (the folder a search wrote)" if run_dir.exists()
                            else f"{run_dir}: no such run directory")
    config = read_config(run_dir)
    policy = read_policy(run_dir)
    path = run_dir / "report.md"
    report = _read_report(path) if path.exists() else (
        f"# Search report: {config.dataset}\n\nThe search's report.md was missing; only its pictures are here.\n")
    figures, notes = draw_figures(run_dir, policy=policy, data_root=args.data_root)
    if any(note.startswith("grid.png") for note in notes) and (run_dir / "grid.png").is_file():
        notes = [note.replace("not drawn", "not redrawn (the link shows the earlier one)") for note in notes]
        figures.append(Figure("grid.png", "Training images under the chosen recipe", "Drawn earlier."))
    write_text_atomic(path, replace_figures_section(report, figures_section(figures, notes)))
    print(f"wrote {path} with {len(figures)} pictures: {', '.join(f.file for f in figures)}")
    for note in notes:
        print(f"note: {note}")
    return 0
