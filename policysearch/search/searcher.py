"""Phase 2's searcher: one Bayesian optimiser (or random sampler) per split and repeat, in one Tune experiment.

The paper optimises each split separately. Running all of them as one Tune experiment lets the workers
(and the child models and data they hold) be reused across splits instead of restarting per split.
Part of the Ray layer: it builds on Tune's ``Searcher`` and its Optuna/HyperOpt wrappers.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any, Sequence

from ray.tune.search import Searcher

from policysearch.atomic import write_json_atomic
from policysearch.search.config import SearchConfig
from policysearch.search.runner import optuna_sampler, stream_seed

__all__ = ["SplitSearcher", "make_optimiser"]


def make_optimiser(config: SearchConfig, seed: int) -> Searcher:
    """One optimiser of ``config.algorithm`` for one stream, seeded."""
    if config.algorithm == "hyperopt":
        from ray.tune.search.hyperopt import HyperOptSearch

        return HyperOptSearch(random_state_seed=seed, n_initial_points=min(20, max(1, config.trials // 4)))
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(sampler=optuna_sampler(config, seed))


class SplitSearcher(Searcher):
    """Independent optimisers for the streams (``stream = repeat * splits + split``) of phase 2.

    State: ``optimisers`` (one per stream), ``suggested`` (candidates handed out per stream) and
    ``owner`` (trial id -> stream). Each suggestion goes to the stream with the fewest, lowest stream
    first, so the order is deterministic; a stream stops after ``trials`` suggestions. A suggestion
    carries ``stream`` and ``index`` (its place in the stream) next to the space's parameters.
    """

    def __init__(self, config: SearchConfig, streams: Sequence[int], param_space: dict[str, Any]) -> None:
        super().__init__(metric="reward", mode="max")
        self.streams = list(streams)
        self.trials = config.trials
        self.optimisers = {s: make_optimiser(config, stream_seed(config, s)) for s in self.streams}
        for optimiser in self.optimisers.values():
            optimiser.set_search_properties("reward", "max", param_space)
        self.suggested = {s: 0 for s in self.streams}
        self.owner: dict[str, int] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if not self.streams:
            return Searcher.FINISHED
        stream = min(self.streams, key=lambda s: (self.suggested[s], s))
        if self.suggested[stream] >= self.trials:
            return Searcher.FINISHED
        params = self.optimisers[stream].suggest(trial_id)
        if params is None:
            return None
        index = self.suggested[stream]
        self.suggested[stream] += 1
        self.owner[trial_id] = stream
        return {**params, "stream": stream, "index": index}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        stream = self.owner.get(trial_id)
        if stream is not None:
            self.optimisers[stream].on_trial_complete(trial_id, result, error)

    def save(self, checkpoint_path: str) -> None:
        states = {}
        for stream, optimiser in self.optimisers.items():
            part = f"{checkpoint_path}.part{stream}"
            optimiser.save(part)
            states[str(stream)] = base64.b64encode(Path(part).read_bytes()).decode("ascii")
            os.remove(part)
        write_json_atomic(Path(checkpoint_path), {"streams": self.streams, "suggested": self.suggested,
                                                  "owner": self.owner, "optimisers": states})

    def restore(self, checkpoint_path: str) -> None:
        document = json.loads(Path(checkpoint_path).read_text(encoding="utf-8"))
        if document["streams"] != self.streams:
            raise ValueError(f"searcher state {checkpoint_path} is for streams {document['streams']}, "
                             f"not {self.streams}")
        self.suggested = {int(s): n for s, n in document["suggested"].items()}
        self.owner = {trial: int(stream) for trial, stream in document["owner"].items()}
        for stream, optimiser in self.optimisers.items():
            part = f"{checkpoint_path}.part{stream}"
            Path(part).write_bytes(base64.b64decode(document["optimisers"][str(stream)]))
            optimiser.restore(part)
            os.remove(part)
