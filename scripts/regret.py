#!/usr/bin/env python
"""Regret over the benchmark presets: how far each method is from the best method of each preset.

For each preset, a method's regret is its mean test error minus the lowest mean test error of all methods
on that preset (percentage points; means over the seeds in that preset's ``results.json``). Each method's
worst regret is the largest over the presets where it ran. No fixed recipe is best everywhere; the
product's claim is that the searched recipe is never far from the best, i.e. has a small worst regret.
The table names the recipe each preset's search chose (``searched_policy`` in ``results.json``).

Reads every ``RESULTS/*/results.json`` (one folder per preset, as ``policysearch benchmark`` writes them;
``history/`` lies a level deeper and is not read) and writes ``regret.md`` and ``regret.json`` next to
them, each with the command that made it.

- A method that did not run on a preset has no regret there (``-`` in the table): its worst regret is over
  the presets where it ran, and the table says how many those are. Methods are listed by coverage (most
  presets first), then by worst regret, so a method is ranked against methods that ran as widely.
- Old ``results.json`` files named our policy-format rows ``autoaugment``, ``randaugment`` and
  ``trivialaugment`` (and ``-alone``); they are read under today's names (``LEGACY_METHOD_NAMES`` in
  ``policysearch/benchmark/methods.py``). Other unknown names are kept as they are.
- Means come from the runs (``runs``); a file without runs but with a ``summary`` uses its means. A file
  that cannot be read, has neither (a benchmark's file before its first training ends), holds a run that is
  not an object with a method name, a test error that is not a number from 0 to 100, or two runs of one
  method and seed (which the benchmark never writes) stops the script before it writes anything: a worst
  regret over fewer presets than asked for would read as a claim about all. So do two folders holding
  results of one preset (its ``preset``), which would count one preset twice. Runs without a seed (old files)
  count in the mean but are not paired.
- Each regret also gets its 95 % paired interval over the seeds the method shares with the preset's best
  (Student t, as ``results.md``'s paired differences), so a regret within the seeds' noise shows as one;
  with one shared seed the difference on it, with none the regret itself, each saying so.

Run from the repository root: ``python scripts/regret.py [--results benchmarks/results] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from policysearch.atomic import write_json_atomic, write_text_atomic  # noqa: E402
from policysearch.benchmark.methods import ALL_METHODS, LEGACY_METHOD_NAMES  # noqa: E402
from policysearch.benchmark.stats import paired_difference  # noqa: E402


def read_preset(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """{method: {"mean": test error %, "n": runs, "errors": {seed: test error %}}} of one results.json under
    today's method names, and what else the table needs (command, preset name). "errors" holds the runs
    that can be paired by seed: none for a summary-only file, and none for a method with a run without a
    seed (old files). Raises ValueError naming the run when the file has no results or a run the benchmark
    would not write."""
    document = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        raise ValueError("not a results object")
    runs: dict[str, list[tuple[str | None, float]]] = defaultdict(list)
    for i, run in enumerate(document.get("runs") or []):
        if not isinstance(run, dict) or not isinstance(run.get("method"), str):
            raise ValueError(f"runs[{i}] is not a run with a method name")
        seed = None if run.get("seed") is None else str(run["seed"])
        method = LEGACY_METHOD_NAMES.get(run["method"], run["method"])
        if seed is not None and any(seed == other for other, _ in runs[method]):
            raise ValueError(f"runs[{i}] is a second run of {method} with seed {seed}")
        runs[method].append((seed, _percent(run.get("test_error"), f"runs[{i}] ({method}) test_error")))
    methods: dict[str, dict[str, Any]] = {}
    for m, pairs in runs.items():
        methods[m] = {"mean": sum(e for _, e in pairs) / len(pairs), "n": len(pairs),
                      "errors": {} if any(seed is None for seed, _ in pairs) else dict(pairs)}
    if not methods:
        for i, row in enumerate(document.get("summary") or []):
            if not isinstance(row, dict) or not isinstance(row.get("method"), str):
                raise ValueError(f"summary[{i}] is not a row with a method name")
            methods[LEGACY_METHOD_NAMES.get(row["method"], row["method"])] = {
                "mean": _percent(row.get("mean"), f"summary[{i}] ({row['method']}) mean"), "n": int(row.get("n", 0))}
    if not methods:
        raise ValueError("no runs and no summary")
    renamed = sorted({r["method"] for r in document.get("runs") or document.get("summary") or []}
                     & set(LEGACY_METHOD_NAMES))
    searched = document.get("searched_policy")
    settings = document.get("settings")
    return methods, {"preset": document.get("preset") or path.parent.name, "command": document.get("command", ""),
                     "dataset": str(settings.get("dataset", "")) if isinstance(settings, dict) else "",
                     "renamed": renamed,
                     "searched_recipe": searched.get("recipe") if isinstance(searched, dict) else None}


def _percent(value: Any, where: str) -> float:
    """A test error in percent, or a ValueError naming ``where``: NaN or a string would pass through min() and
    max() unnoticed and give a best method and worst regret that are not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 100.0:
        raise ValueError(f"{where} is {value!r}, not a test error in percent (0 to 100)")
    return float(value)


def regret_table(presets: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Regrets from {preset: {method: {"mean", "n", "errors"}}}: per preset its best method and every
    method's regret (with its paired difference from the best where they share a seed, and its interval from 2
    shared seeds on), per
    method its regret on each preset where it ran, its worst regret and its coverage."""
    table: dict[str, Any] = {"presets": {}, "methods": {}}
    for preset, methods in presets.items():
        best = min(methods, key=lambda m: (methods[m]["mean"], m))
        low = methods[best]["mean"]
        rows = {m: {**v, "regret": v["mean"] - low} for m, v in methods.items()}
        for m, row in rows.items():
            interval = _interval(row.get("errors"), methods[best].get("errors")) if m != best else None
            if interval is not None:
                row["interval"] = interval
        tied = sorted(m for m in methods if methods[m]["mean"] == low)  # every method at the lowest mean is best
        table["presets"][preset] = {"best_method": best, "best_methods": tied, "best_mean": low, "methods": rows}
    for m in sorted({m for methods in presets.values() for m in methods}):  # sorted: the same file every run
        regrets = {p: t["methods"][m]["regret"] for p, t in table["presets"].items() if m in t["methods"]}
        table["methods"][m] = {"regret": regrets, "worst_regret": max(regrets.values()),
                               "worst_preset": max(regrets, key=lambda p: (regrets[p], p)),
                               "presets_ran": len(regrets), "presets_missing": sorted(set(presets) - set(regrets))}
    return table


def _interval(errors: dict[str, float] | None, best: dict[str, float] | None) -> dict[str, float] | None:
    """This method's error minus the best's, paired by seed, with its 95 % interval from 2 shared seeds on
    (one shared seed: the difference on it, without ``low`` and ``high``); None with no shared seed."""
    seeds = sorted(set(errors or {}) & set(best or {}))
    if not seeds:
        return None
    if len(seeds) == 1:
        return {"mean": errors[seeds[0]] - best[seeds[0]], "n": 1}
    diff = paired_difference([errors[s] for s in seeds], [best[s] for s in seeds])
    return {"mean": diff["mean"], "low": diff["low"], "high": diff["high"], "n": diff["n"]}


def _order(table: dict[str, Any]) -> list[str]:
    """Methods by coverage (most presets first), then worst regret, then the benchmark's own order."""
    known = {m: i for i, m in enumerate(ALL_METHODS)}
    rows = table["methods"]
    return sorted(rows, key=lambda m: (-rows[m]["presets_ran"], rows[m]["worst_regret"], known.get(m, len(known)), m))


def render(table: dict[str, Any], command: str, sources: dict[str, dict[str, Any]]) -> str:
    """regret.md: methods x presets with regrets, each method's worst regret, the best of each preset."""
    presets = list(table["presets"])
    total = len(presets)
    lines = ["# Regret over the benchmark presets", "", f"Command: `{command}`", "",
             "A method's regret on a preset is its mean test error minus the lowest mean test error of all methods "
             "on that preset, in percentage points (means over that preset's seeds); its worst regret is the largest "
             "over the presets where it ran. A method that did not run on a preset has no regret there (-): its "
             "worst regret covers only the presets it ran on, which the presets column counts, and methods are "
             "listed by that coverage first, then by worst regret.", "",
             "| method | worst regret (pp) | presets | " + " | ".join(f"`{p}`" for p in presets) + " |",
             "|---|---|---|" + "---|" * total]
    for m in _order(table):
        row = table["methods"][m]
        cells = [f"{row['regret'][p]:.2f}" if p in row["regret"] else "-" for p in presets]
        cells = [f"**{c}**" if p in row["regret"] and m in table["presets"][p]["best_methods"] else c
                 for c, p in zip(cells, presets)]
        lines.append(f"| {m} | {row['worst_regret']:.2f} | {row['presets_ran']}/{total} | " + " | ".join(cells) + " |")
    best = [f"{', '.join(t['best_methods'])} {t['best_mean']:.2f}" for t in table["presets"].values()]
    seeds = []
    for t in table["presets"].values():
        ns = sorted({v["n"] for v in t["methods"].values()})
        seeds.append(str(ns[0]) if len(ns) == 1 else f"{ns[0]} to {ns[-1]}")
    recipes = [sources[p].get("searched_recipe") or "-" for p in presets]
    lines += ["| lowest mean test error % | | | " + " | ".join(best) + " |",
              "| seeds per method | | | " + " | ".join(seeds) + " |",
              "| the searched recipe | | | " + " | ".join(recipes) + " |", ""]
    lines += _same_as_fixed(sources, presets, table)
    lines += _interval_table(table, presets)
    lines += ["Sources:", ""]
    for p in presets:
        src = sources[p]
        renamed = (f"; old names read as today's: {', '.join(f'{o} -> {LEGACY_METHOD_NAMES[o]}' for o in src['renamed'])}"
                   if src["renamed"] else "")
        lines.append(f"- `{p}`: `{src['path']}` (command: `{src['command']}`){renamed}")
    lines.append("")
    return "\n".join(lines)


def _same_as_fixed(sources: dict[str, Any], presets: list[str], table: dict[str, Any]) -> list[str]:
    """A paragraph for the presets whose searched recipe is what a fixed method that ran there runs: a
    torchvision recipe alone (``randaugment (torchvision), crop 0`` is ``tv-randaugment-alone``); none when no
    preset's is."""
    same: dict[tuple[str, str], list[str]] = defaultdict(list)
    for p in presets:
        recipe = sources[p].get("searched_recipe") or ""
        found = re.fullmatch(r"(\w+) \(torchvision\), crop 0", recipe)
        if found and f"tv-{found[1]}-alone" in table["presets"][p]["methods"]:
            same[(recipe, f"tv-{found[1]}-alone")].append(f"`{p}`")
    return [f"On {', '.join(where)} the searched recipe `{recipe}` is what `{method}` runs, in the policy format "
            "and tested equal to torchvision's output: the two rows differ only by the trainings' random draws, the "
            "seeds' noise the intervals below show.\n" for (recipe, method), where in same.items()]


def _interval_table(table: dict[str, Any], presets: list[str]) -> list[str]:
    """The regrets again as paired differences against each preset's best, with their 95 % intervals."""
    lines = ["Each method's difference from the preset's best, paired over the seeds both ran (Student t, 95 % "
             "interval; the same as the regret above when both ran the same seeds, else the number of seeds "
             "paired is given). A regret whose interval holds 0 is within the seeds' noise. The best is the "
             "lowest mean, which favours a method whose seeds fell well, so regrets lean high.", "",
             "| method | " + " | ".join(f"`{p}`" for p in presets) + " |", "|---|" + "---|" * len(presets)]
    for m in _order(table):
        cells = []
        for p in presets:
            row = table["presets"][p]["methods"].get(m)
            if row is None:
                cells.append("-")
            elif m in table["presets"][p]["best_methods"]:
                cells.append("**best**")
            elif "interval" in row and "low" in row["interval"]:
                paired = row["interval"]
                seeds = "" if paired["n"] == row["n"] == table["presets"][p]["methods"][
                    table["presets"][p]["best_method"]]["n"] else f" ({paired['n']} seeds paired)"
                cells.append(f"{paired['mean']:.2f} [{paired['low']:.2f}, {paired['high']:.2f}]{seeds}")
            elif "interval" in row:
                cells.append(f"{row['interval']['mean']:.2f} (1 seed paired: no interval)")
            else:
                cells.append(f"{row['regret']:.2f} (no seed paired: the regret, no interval)")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines + [""]


def main(argv: Sequence[str] | None = None) -> int:
    """Read the presets' results.json files, write regret.md and regret.json; 1, with nothing written, when
    there is nothing to read or a file cannot be read."""
    parser = argparse.ArgumentParser(prog="regret.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="benchmarks/results",
                        help="folder of preset folders holding results.json (default: %(default)s)")
    parser.add_argument("--out", default=None, help="where regret.md and regret.json go (default: --results)")
    parser.add_argument("--presets", nargs="+", default=None, metavar="FOLDER",
                        help="only these preset folders, in this order (default: every folder, sorted)")
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "scripts/regret.py" + (" " + shlex.join(argv) if argv else "")
    results = Path(args.results)
    if not results.is_dir():
        print(f"regret: --results {results}: no such folder", file=sys.stderr)
        return 1
    folders = ([results / p for p in args.presets] if args.presets
               else sorted(p.parent for p in results.glob("*/results.json")))
    presets: dict[str, dict[str, dict[str, Any]]] = {}
    sources: dict[str, dict[str, Any]] = {}
    unreadable = []
    for folder in folders:
        path = folder / "results.json"
        try:
            methods, info = read_preset(path)
        except OSError as exc:
            unreadable.append(f"{path}: {exc.strerror or exc}")
        except (ValueError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
            unreadable.append(f"{path}: {exc}")
        else:
            presets[folder.name] = methods
            sources[folder.name] = {"path": str(path), **info}
    named: dict[tuple[str, str], list[str]] = defaultdict(list)  # a preset run on other data (--dataset) is another
    for folder, info in sources.items():
        named[(info["preset"], info["dataset"])].append(folder)
    unreadable += [f"{', '.join(folders)}: results of one preset, {preset}, on the same data, which would count as "
                   f"{len(folders)} presets" for (preset, _), folders in named.items() if len(folders) > 1]
    for line in unreadable:
        print(f"regret: {line}", file=sys.stderr)
    if unreadable:
        print("regret: nothing written; mend or move those files, or name the presets to read with --presets",
              file=sys.stderr)
        return 1
    if not presets:
        print(f"regret: no results.json under {results}/*/", file=sys.stderr)
        return 1
    table = regret_table(presets)
    out = Path(args.out) if args.out else results
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"regret: --out {out}: cannot make that folder ({exc.strerror or exc})", file=sys.stderr)
        return 1
    write_json_atomic(out / "regret.json", {"command": command, **table, "order": _order(table),
                                            "sources": sources,
                                            "missing_methods": "no regret where a method did not run; its worst "
                                                               "regret is over the presets where it ran"})
    text = render(table, command, sources)
    write_text_atomic(out / "regret.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
