"""The in-process trial runner: each phase's trials one after the other in this process, without Ray.

The same phases (:mod:`~policysearch.search.phases`) and run directory as a search on Ray Tune. Each batch
of trials keeps its finished trials in ``<storage>/<run id>/<name>/trials.json`` and each trial its own
folder beside it, so a resumed run skips every finished trial and a child continues from its last saved
epoch. Phase 2's optimisers are Optuna's samplers, as on Ray (``--algorithm optuna`` or ``random``;
HyperOpt runs on Ray only); a resume replays the finished trials into them. The fast tests run the whole
algorithm through :func:`run_search`.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, TextIO

import torch

from policysearch.atomic import write_text_atomic
from policysearch.progress import Progress
from policysearch.search.children import ChildSource
from policysearch.search.config import SearchConfig
from policysearch.search.export import export, finished_on_resume
from policysearch.search.faults import Faults, faults_from_env
from policysearch.search.interrupts import CtrlC, SearchInterrupted
from policysearch.search.outcome import SearchResult
from policysearch.search.phases import Stage, run_phases
from policysearch.search.prepare import Inputs, Prepared, given_in_python, prepare
from policysearch.search.rundir import Run, check_same_inputs, held_run, least_side, write_config
from policysearch.search.runner import (Streams, TrialContext, TrialResult, Trials, optuna_sampler, stream_seed)
from policysearch.training.user_data import fingerprint
from policysearch.wording import first_line

__all__ = ["InProcessRunner", "NODE", "run_search"]

NODE = "in-process"  # the node_id of every trial
RESULTS_FILE = "trials.json"
SPENT_FILE = "spent.json"  # in a trial's folder: its training seconds so far, over every attempt


class InProcessRunner:
    """The :class:`~policysearch.search.runner.TrialRunner` that runs every trial here, in order, with
    ``--retries`` retries; what finishes is kept under the run's experiments for a resume."""

    def __init__(self, prepared: Prepared, run: Run, faults: Faults = Faults()) -> None:
        self.prepared, self.experiments, self.faults = prepared, run.experiments, faults
        config = prepared.config
        if config.algorithm not in ("optuna", "random"):
            raise ValueError(f"--algorithm {config.algorithm} runs on Ray only; in this process use optuna or random")

    def run(self, trials: Trials, progress: Progress, on_trial: Callable[[], None]) -> list[TrialResult]:
        folder = Path(self.experiments.removeprefix("file://")) / trials.name
        folder.mkdir(parents=True, exist_ok=True)
        records = _read(folder / RESULTS_FILE)
        values = [r["metrics"][progress.metric] for r in records if not r["error"] and progress.metric]
        progress.resumed(len(records), max(values, default=None))
        try:
            if isinstance(trials.configs, Streams):
                self._suggested(trials, trials.configs, folder, records, progress, on_trial)
            else:
                for number, config in enumerate(trials.configs[len(records):], start=len(records)):
                    self._finish(trials, config, number, folder, records, progress, on_trial)
        finally:
            progress.close()
        return [self._result(r, folder) for r in records]

    def _suggested(self, trials: Trials, streams: Streams, folder: Path, records: list[dict[str, Any]],
                   progress: Progress, on_trial: Callable[[], None]) -> None:
        """Phase 2: each suggestion goes to the stream with the fewest, lowest first; finished trials are told
        to their stream's optimiser again (a resume), in the order they were suggested."""
        import optuna

        config = self.prepared.config
        distributions = _distributions(streams.space)
        studies = {s: optuna.create_study(direction="maximize", sampler=optuna_sampler(config, stream_seed(config, s)))
                   for s in streams.streams}
        suggested = {s: 0 for s in streams.streams}
        for number in range(streams.total):
            stream = min(streams.streams, key=lambda s: (suggested[s], s))
            trial = studies[stream].ask(fixed_distributions=distributions)
            params = {**trial.params, "stream": stream, "index": suggested[stream]}
            suggested[stream] += 1
            if number >= len(records):
                self._finish(trials, params, number, folder, records, progress, on_trial)
            record = records[number]
            if record["error"]:
                studies[stream].tell(trial, None, state=optuna.trial.TrialState.FAIL)
            else:
                studies[stream].tell(trial, record["metrics"]["reward"])

    def _finish(self, trials: Trials, config: dict[str, Any], number: int, folder: Path,
                records: list[dict[str, Any]], progress: Progress, on_trial: Callable[[], None]) -> None:
        """Run one trial (with its retries) and keep its record."""
        trial_id = f"{trials.name}_{number:05d}"
        metrics, error = self._attempts(trials, config, folder / trial_id)
        records.append({"config": config, "metrics": metrics, "error": error, "trial_id": trial_id})
        write_text_atomic(folder / RESULTS_FILE, json.dumps(records, indent=1) + "\n")
        progress.trial_finished(metrics, error=error or None)
        on_trial()

    def _attempts(self, trials: Trials, config: dict[str, Any], folder: Path) -> tuple[dict[str, Any], str]:
        """The trial's metrics and "", or {} and the last attempt's error line."""
        folder.mkdir(parents=True, exist_ok=True)
        error = ""
        for _ in range(self.prepared.config.retries + 1):
            last: dict[str, Any] = {}

            def report(metrics: dict[str, Any]) -> None:
                last.clear()
                last.update(metrics, node_id=NODE)
                (folder / SPENT_FILE).write_text(json.dumps({"train_seconds": metrics["train_seconds"]}),
                                                 encoding="utf-8")

            threads = torch.get_num_threads()
            try:
                context = TrialContext(folder, report, self.faults.at(node=NODE), _spent(folder))
                metrics = trials.function(self.prepared, dict(config), context)
            except Exception as exc:  # a failed attempt: retried, then recorded as the trial's error
                error = f"{type(exc).__name__}: {first_line(exc, 500)}"
                write_text_atomic(folder / "error.txt", traceback.format_exc())  # as Tune keeps a trial's
                continue
            finally:
                torch.set_num_threads(threads)  # a trial sets its own
            return ({**metrics, "node_id": NODE, "data_seconds": 0.0} if metrics is not None else dict(last)), ""
        return {}, error

    def _result(self, record: dict[str, Any], folder: Path) -> TrialResult:
        trial_folder = folder / record["trial_id"]
        return TrialResult(record["config"], record["metrics"], record["error"], record["trial_id"],
                           None if record["error"] else ChildSource.in_folder(trial_folder).fetch)


def _read(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []


def _spent(folder: Path) -> float:
    try:
        return float(json.loads((folder / SPENT_FILE).read_text(encoding="utf-8"))["train_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def _distributions(space: Any) -> dict[str, Any]:
    """The space's parameters as Optuna distributions (what Ray's OptunaSearch makes of the Tune space)."""
    import optuna

    out: dict[str, Any] = {}
    for p in space.parameters():
        out[p.name] = (optuna.distributions.FloatDistribution(p.low, p.high) if p.kind == "uniform"
                       else optuna.distributions.CategoricalDistribution(list(p.values)))
    return out


def run_search(config: SearchConfig, run_dir: str | Path, *, resume: bool = False, stream: TextIO = sys.stdout,
               inputs: Inputs | None = None, stop_text: Callable[[str], str] | None = None) -> SearchResult:
    """Run (or, with ``resume``, continue) a search into ``run_dir`` in this process, without Ray: the same
    phases, run directory and results as :func:`policysearch.search.run_search`."""
    run_dir = Path(run_dir)
    done = finished_on_resume(config, run_dir, resume)
    if done is not None:
        return done
    stage = Stage(run_dir, resume, given_in_python(config))
    with CtrlC(stage.message, stop_text):
        try:
            faults = faults_from_env()
            prepared = prepare(config, inputs, new_run=not resume,
                               least_side=least_side(run_dir, config.model, resume))
            with held_run(config, run_dir, resume=resume) as run:
                if resume:
                    check_same_inputs(run_dir, fingerprint(prepared.data), prepared.space.to_dict(),
                                      prepared.architecture, prepared.weights_digest)
                runner = InProcessRunner(prepared, run, faults)
                if not resume:
                    write_config(run, config, fingerprint(prepared.data), prepared.space.to_dict(),
                                 prepared.architecture, prepared.weights_digest)
                    stage.started = True
                outcome, spans = run_phases(prepared, run, runner, stream, stage)
                stage.enter("the export (the results are written again on --resume)")
                result = export(prepared, run, outcome, faults)
        except SearchInterrupted:
            raise stage.interrupted() from None
    result.spans = spans
    return result
