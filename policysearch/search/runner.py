"""The trial-runner interface: what the phases hand a runner, and what they get back.

A phase is a batch of trials of one plain function (:data:`TrialFunction`): a grid of configs, or
suggestions from one optimiser per stream (:class:`Streams`, phase 2). A runner runs them (on Ray Tune,
:mod:`~policysearch.search.tuning`; or one after the other in this process, :mod:`~policysearch.search.inprocess`),
keeps what finishes for a resume, retries a failing trial ``--retries`` times, and returns one
:class:`TrialResult` per trial. Ray is not imported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from policysearch.search.config import SearchConfig
from policysearch.training.randomness import MAX_SEED
from policysearch.search.faults import Faults

if TYPE_CHECKING:
    import optuna

    from policysearch.progress import Progress
    from policysearch.search.prepare import Prepared

__all__ = ["Streams", "TrialContext", "TrialFunction", "TrialResult", "TrialRunner", "Trials", "optuna_sampler",
           "stream_seed"]


@dataclass(frozen=True)
class TrialContext:
    """What a runner gives one trial besides its config.

    ``folder`` is the trial's own folder, holding what an earlier attempt saved last (a resumed trial
    continues from it); ``report(metrics)`` is a save point: the folder as it is now, with these metrics
    (a report carrying ``epoch`` and ``epochs`` may be kept only some of the time). ``spent`` is the
    seconds earlier attempts spent, as far as saved.
    """

    folder: Path
    report: Callable[[dict[str, Any]], None]
    faults: Faults = Faults()
    spent: float = 0.0


# A trial: (the search's inputs, the trial's config, its context) -> its metrics, or None when its last
# report holds them. A module-level function (with functools.partial arguments), so Ray can pickle it.
TrialFunction = Callable[["Prepared", dict[str, Any], TrialContext], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Streams:
    """Phase 2's trials: one optimiser per stream (``stream = repeat * splits + split``), ``trials`` each,
    over the parameters of ``space``. Suggestions go to the stream with the fewest, lowest stream first;
    each carries ``stream`` and ``index`` (its place in the stream) beside the parameters."""

    streams: tuple[int, ...]
    trials: int
    space: Any  # the SearchSpace whose parameters are searched

    @property
    def total(self) -> int:
        return len(self.streams) * self.trials


@dataclass(frozen=True)
class Trials:
    """One phase's trials as the phases hand them to a runner.

    ``name`` names the experiment (its folder under the run's experiments, kept for a resume);
    ``configs`` is a grid of trial configs or :class:`Streams`; ``ledger`` the phase the cost ledger
    counts; ``title`` and ``metric`` the progress line; ``stage`` and ``noun`` what a Ctrl-C line says.
    """

    name: str
    function: TrialFunction
    configs: Sequence[dict[str, Any]] | Streams
    ledger: str
    title: str
    stage: str
    noun: str
    metric: str | None = None

    @property
    def total(self) -> int:
        return self.configs.total if isinstance(self.configs, Streams) else len(self.configs)


@dataclass(frozen=True)
class TrialResult:
    """One finished trial: its config, its last metrics (empty when it failed), its error line ("" when it
    succeeded), its id and, for a trial that saved a model (phase 1), ``fetch(folder)``: the model file,
    copied into the empty ``folder`` when it is remote."""

    config: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    trial_id: str = ""
    fetch: Callable[[Path], Path] | None = None

    @property
    def ok(self) -> bool:
        return not self.error


class TrialRunner(Protocol):
    """Runs one phase's trials (or continues them, for a resumed run) and returns every one's result.

    ``progress`` counts the finished trials (those finished before included), ``on_trial`` is called
    after each; a Ctrl-C raises :class:`~policysearch.search.interrupts.SearchInterrupted` with every
    finished trial kept."""

    def run(self, trials: Trials, progress: "Progress", on_trial: Callable[[], None]) -> list[TrialResult]: ...


def stream_seed(config: SearchConfig, stream: int) -> int:
    """The seed of one stream's optimiser."""
    return (config.seed * 7919 + stream) % (MAX_SEED + 1)  # the optimisers' numpy seeds take 32 bits


def optuna_sampler(config: SearchConfig, seed: int) -> "optuna.samplers.BaseSampler":
    """The Optuna sampler of ``config.algorithm`` (``optuna``: TPE; ``random``) for one stream."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if config.algorithm == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(1, config.trials // 4)))
