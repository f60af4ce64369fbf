"""The benchmark's results files: results.md, results.json, runs.csv and errors.png, rewritten atomically
after every run so that an interrupted benchmark keeps the runs it finished."""

from __future__ import annotations

import csv
import io
import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from policysearch.atomic import write_bytes_atomic, write_json_atomic, write_text_atomic
from policysearch.augment.policy import Baseline
from policysearch.benchmark.methods import describe_method
from policysearch.benchmark.presets import budget_text, describe_classes
from policysearch.benchmark.stats import finetune_verdict, summarize


def _fmt(x: float, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _title(document: dict[str, Any]) -> str:
    """The preset, or what a preset's settings ran on when the data was another (``--dataset``)."""
    dataset = document["settings"]["dataset"]
    if document["preset"] and document.get("other_data"):
        return f"{document['preset']} settings on {dataset}"
    return document["preset"] or dataset


def _seeds_text(document: dict[str, Any]) -> str:
    """The command's seeds, and those of the runs kept from earlier commands when the table holds more."""
    asked = [int(seed) for seed in document["settings"]["seeds"]]
    kept = sorted({int(run["seed"]) for run in document.get("runs", [])} - set(asked))
    text = " ".join(map(str, asked))
    return text + (f" (and {' '.join(map(str, kept))} in runs kept from earlier commands)" if kept else "")


def missing_runs(document: dict[str, Any]) -> dict[str, list[int]]:
    """The seeds of each method that the command asked for and has no run yet (a skipped method aside): what
    a benchmark stopped early, or still running, has left to train."""
    settings = document["settings"]
    done = {(run["method"], int(run["seed"])) for run in document.get("runs", [])}
    missing = {method: [int(seed) for seed in settings["seeds"] if (method, int(seed)) not in done]
               for method in settings.get("methods") or () if method not in (document.get("skipped") or {})}
    return {method: seeds for method, seeds in missing.items() if seeds}


def _unfinished(document: dict[str, Any]) -> list[str]:
    """A paragraph naming the trainings the command has not finished (none when it finished them all)."""
    missing = missing_runs(document)
    if not missing:
        return []
    asked = len(document["settings"]["seeds"]) * sum(m not in (document.get("skipped") or {})
                                                     for m in document["settings"]["methods"])
    count = sum(map(len, missing.values()))
    which = "; ".join(f"{m} seed{'s' if len(seeds) > 1 else ''} {' '.join(map(str, seeds))}"
                      for m, seeds in missing.items())
    return [f"**Not finished**: {count} of the command's {asked} trainings have no result yet ({which}); the "
            "command was stopped or is still running, and running it again trains only these.", ""]


def render_markdown(document: dict[str, Any], summary: list[dict[str, Any]]) -> str:
    """results.md: what ran (data, model, budget, recipe), the table of methods with their paired differences
    from the searched recipe, what each method ran, and the search's cost."""
    s = document["settings"]
    lines = [f"# Benchmark: {_title(document)}", "",
             f"Command: `{document['command']}`", "",
             *_unfinished(document),
             *([f"Runs kept from earlier commands (trained the same way): "
                + ", ".join(f"`{c}`" for c in document["earlier_commands"]), ""]
               if document.get("earlier_commands") else []),
             f"- data: {s['dataset']}, {s['train_images']} training images ({s['image_size']} x {s['image_size']}"
             + (f", subset seed {s['data_seed']}" if s.get("train_size") is not None else ", the whole training split")
             + f"), {s['test_images']} test images (used only for these errors)",
             *(f"  - {note}" for note in document.get("data_notes", [])),  # what loading changed, as printed
             f"- model {s['model']}, {budget_text(s['epochs'], s['batch_size'], s['train_images'])}, lr {s['lr']}, "
             f"weight decay {s['weight_decay']}, seeds {_seeds_text(document)}",
             f"- the data set's baseline augmentation: {Baseline(**s['baseline']).describe()} (methods marked "
             f"-alone and none train without it); Cutout "
             f"{s['cutout_pixels']} px"
             + (" (also on top of the policies)" if s["cutout_with_policies"] else ""), ""]
    if document.get("pretraining"):
        pt = document["pretraining"]
        lines.append(f"- pretrained: {s['model']} trained from scratch on {pt['images']} training images outside "
                     f"the benchmark's training subset (classes {describe_classes(pt['settings']['classes'])}, "
                     f"{pt['settings']['epochs']} epochs), never the test split; `{pt['weights']}`")
    if s.get("weights"):
        lines.append(f"- every model starts from `{s['weights']}` with a new classifier head"
                     + (", backbone frozen" if s.get("freeze_backbone") else ""))
    if document.get("pretraining") or s.get("weights"):
        lines.append("")
    if document.get("searched_policy"):
        sp = document["searched_policy"]
        baseline = Baseline(**sp["baseline"]).describe() if sp.get("baseline") else "no baseline recorded"
        subs = f"{sp['sub_policies']} sub-polic{'y' if sp['sub_policies'] == 1 else 'ies'}"
        lines.append(f"- searched recipe: {sp.get('recipe', '')} ({subs}, {baseline}) "
                     f"from `{sp['source']}`")
        lines.append("")
    searched = any(row["method"] == "searched" for row in summary)  # without it, no column compares with it
    lines += ["| method | mean test error % | std | n | " + ("searched - method (pp), 95% CI | " if searched else "")
              + "training accuracy % | train s/run |", "|---|---|---|---|" + ("---|" if searched else "") + "---|---|"]
    for row in summary:
        diff = row.get("searched_minus")
        text = "-" if diff is None else (f"{diff['mean']:+.2f} [{_fmt(diff['low'])}, {_fmt(diff['high'])}]"
                                         f" (n={diff['n']})")
        fit = row.get("clean_train_accuracy", math.nan)
        lines.append(f"| {row['method']} | {row['mean']:.2f} | {_fmt(row['std'])} | {row['n']} | "
                     + (f"{text} | " if searched else "") + f"{_fmt(100 * fit, 1)} | {row['train_seconds']:.1f} |")
    lines += ["", ("A negative difference means the searched policy has the lower error; the interval is a paired "
                   "Student-t interval over seeds (same seed: same initialisation and data order). " if searched
                   else "") + "Training accuracy: the final model on the un-augmented training images (mean over "
              "seeds).", ""]
    skipped = document.get("skipped") or {}
    if skipped:
        lines += ["Skipped: " + "; ".join(f"`{m}`: {why}" for m, why in skipped.items()) + ".", ""]
    searched_name = document.get("searched_policy", {}).get("recipe", "") if document.get("searched_policy") else ""
    baseline = Baseline(**s["baseline"])
    lines += ["## What each method ran", "", "| method | what ran |", "|---|---|"]
    # the scratch search's own recipe (a results file from before it was recorded names none)
    scratch_name = (document.get("search_scratch") or {}).get("recipe", "")
    for m in [row["method"] for row in summary] + list(skipped):
        what = describe_method(m, baseline, s["cutout_pixels"], s["cutout_with_policies"],
                               scratch_name if m == "searched-scratch" else searched_name)
        lines.append(f"| {m} | {what}{' (skipped)' if m in skipped else ''} |")
    lines += ["", "Anchors (`tv-*`, `timm-*`) are the libraries' own classes called as above, applied "
              "to one PIL image at a time; their global random generators are seeded per batch from the run's "
              "seed and restored afterwards (`policysearch/benchmark/anchors.py`). `ours-*` are our policy-format "
              "versions (`policysearch/augment/standard.py`).", ""]
    verdict = finetune_verdict(summary)
    if verdict:
        lines += ["## Searched for fine-tuning vs searched from scratch", "",
                  "Both recipes fine-tune the same model here; `searched` was selected by a search whose models start "
                  "from the weights, `searched-scratch` by the same search without them. searched - searched-scratch: "
                  f"{verdict['mean']:+.2f} pp [{_fmt(verdict['low'])}, {_fmt(verdict['high'])}] (n={verdict['n']}): "
                  f"{verdict['verdict']}.", ""]
    search = document.get("search")
    if search:
        final = [r["train_seconds"] for r in document["runs"] if r["method"] == "searched"]
        # the median: a training slowed by other work on the machine would make the search look cheap
        one = float(np.median(final)) if final else math.nan
        spread = f", {min(final):.1f}-{max(final):.1f}" if len(final) > 1 else ""
        whole = ("its phases, summed over every process that ran them"
                 if search.get("search_ran_before") else "whole, incl. Ray start/stop")
        lines += ["## Cost", "", "| what | wall s | device s |", "|---|---|---|",
                  f"| search ({whole}) | {search['search_wall_s']:.1f} | "
                  f"{search.get('total_device_s', math.nan):.1f} |",
                  f"| - phase 1 child models{'' if 'phase1b_wall_s' in search else ' (wall with 1b)'} | "
                  f"{search['phase1_wall_s']:.1f} | {search['phase1_device_s']:.1f} |",
                  *([f"| - phase 1b domain fit{'' if 'phase1b_wall_s' in search else ' (in the phase-1 trials)'} | "
                     f"{_fmt(search.get('phase1b_wall_s', math.nan), 1)} | "
                     f"{search['phase1b_device_s']:.1f} |"] if "phase1b_device_s" in search else []),
                  f"| - phase 2 policy trials | {search['phase2_wall_s']:.1f} | {search['phase2_device_s']:.1f} |",
                  *([f"| - phase 3 recipe selection | {search['phase3_wall_s']:.1f} | "
                     f"{search.get('phase3_device_s', math.nan):.1f} |"] if "phase3_wall_s" in search else []),
                  f"| one final training of the searched recipe, measured here (median of {len(final)}{spread}) | "
                  f"{_fmt(one, 1)} | {_fmt(one, 1)} |", "",
                  f"The search took {_fmt(search['search_wall_s'] / one, 1)} times the wall time and "
                  f"{_fmt(search.get('total_device_s', math.nan) / one, 1)} times the device time of one final "
                  "training measured here (device seconds: the sum of the search trials' own run times, which overlap "
                  "when trials run in parallel; the search's report estimates a final training from its selection's "
                  "trainings instead).", ""]
    libraries = sorted({r["library"] for r in document.get("runs", []) if r.get("library")})  # e.g. timm, for its anchor
    lines += [f"Software: {', '.join([*(f'{k} {v}' for k, v in document['software'].items()), *libraries])}", ""]
    return "\n".join(lines)


def plot_errors(document: dict[str, Any], summary: list[dict[str, Any]]) -> bytes:
    """errors.png: each method's test error per seed and its mean, in results.md's order, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [row["method"] for row in summary]
    # wide enough for the methods' names, which are long (timm-rand-m9-mstd0.5-inc1-alone)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.6 * len(names) + 2.0), 4.8), dpi=110)
    xs = np.arange(len(names))
    for i, row in enumerate(summary):
        errs = [r["test_error"] for r in document["runs"] if r["method"] == row["method"]]
        # the seeds left of the mean's marker, which would hide a seed drawn at its x
        jitter = -0.2 + (np.linspace(-0.08, 0.08, len(errs)) if len(errs) > 1 else np.zeros(1))
        ax.scatter(i + np.asarray(jitter), errs, s=14, color="0.55", zorder=2, label="one seed" if i == 0 else None)
        std = 0.0 if math.isnan(row["std"]) else row["std"]
        color = {"searched": "tab:red", "searched-scratch": "tab:orange"}.get(row["method"], "tab:blue")
        ax.errorbar(i, row["mean"], yerr=std, fmt="o", color=color, capsize=6, markersize=7, zorder=3,
                    label="mean +- std" if i == 0 else None)
    ax.set_xticks(xs, names, rotation=40, ha="right", rotation_mode="anchor")
    ax.set_xlim(-0.5, len(names) - 0.5)
    # from 0: differences of a fraction of a point should not look like a factor; the top quarter is kept free of
    # points for the legend, which covered a seed's point there
    highest = max([r["test_error"] for r in document["runs"]] + [row["mean"] + (0.0 if math.isnan(row["std"]) else
                                                                               row["std"]) for row in summary])
    ax.set_ylim(0, max(highest, 1e-6) * 1.35)
    ax.set_ylabel("test error (%)")
    s = document["settings"]
    budget = budget_text(s["epochs"], s["batch_size"], s["train_images"], asked=False)
    ax.set_title(textwrap.fill(f"{_title(document)}: {s['train_images']} images, {s['model']}, {budget}", 90),
                 fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    # the whole command, on as many lines as it takes at this width (it was cut at 140 characters)
    width = int(fig.get_figwidth() * 20)  # characters of a 6-point line per inch of figure, with a margin
    command = footer_text(document, width)
    lines = command.count("\n") + 1
    fig.text(0.01, 0.01, command, fontsize=6, color="0.4", va="bottom")
    fig.tight_layout(rect=(0, 0.02 + 0.025 * lines, 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def footer_text(document: dict[str, Any], width: int) -> str:
    """The figure's footer: the command, and the earlier commands whose runs it keeps, on lines of ``width``."""
    kept = "; ".join(document.get("earlier_commands") or [])
    return "\n".join(textwrap.fill(text, width, break_on_hyphens=False) for text in
                     (document["command"], *([f"runs kept from earlier commands: {kept}"] if kept else [])))


def write_outputs(out: Path, document: dict[str, Any]) -> None:
    """Write results.json, runs.csv, results.md and errors.png of ``document`` into ``out``, each atomically."""
    summary = summarize(document) if document["runs"] else []
    write_json_atomic(out / "results.json", {**document, "summary": summary,
                                             "finetune_vs_scratch": finetune_verdict(summary)})
    buffer = io.StringIO()
    buffer.write(f"# command: {document['command']}\n")
    fields = ["method", "seed", "test_error", "test_loss", "train_loss", "train_accuracy", "clean_train_accuracy",
              "train_seconds", "command"]  # the command that trained the run: a rerun keeps earlier commands' runs
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in document["runs"]:
        writer.writerow({k: (f"{row[k]:.4f}" if isinstance(row.get(k), float) else row.get(k, "")) for k in fields})
    write_text_atomic(out / "runs.csv", buffer.getvalue())
    if summary:
        write_text_atomic(out / "results.md", render_markdown(document, summary))
        write_bytes_atomic(out / "errors.png", plot_errors(document, summary))
    else:  # an earlier benchmark's report would stand beside results that no longer hold its runs
        (out / "results.md").unlink(missing_ok=True)
        (out / "errors.png").unlink(missing_ok=True)
