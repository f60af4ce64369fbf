"""A user's ``torch.Generator`` as a transform holds it, so that seeded draws stay right in DataLoader workers.

A worker runs a copy of the transform: a generator kept as it is would draw the same augmentations in
every worker and, without persistent workers, in every epoch. In a worker it is reseeded once per worker
seed (from its own seed, the worker's, and how many transforms took the same generator before this one,
so runs repeat when torch's seed is set and two transforms sharing a generator still draw apart), and it
is pickled as its device and state bytes, because a generator pickled as itself holds a tensor that
workers started with spawn or forkserver (macOS and Windows) cannot receive.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import torch

__all__ = ["SeededTransform", "WorkerGenerator"]

# How many transforms took each generator so far: the next one's rank, so that two transforms given one
# generator are reseeded apart in a worker (a shared generator's copies would otherwise draw alike there).
_TAKEN: weakref.WeakKeyDictionary[torch.Generator, int] = weakref.WeakKeyDictionary()


class WorkerGenerator:
    """The generator a transform draws from (``None``: torch's global one); ``current()`` gives it."""

    def __init__(self, generator: torch.Generator | None) -> None:
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator, got {type(generator).__name__} "
                            "(for a seed, torch.Generator().manual_seed(seed))")
        self.generator = generator
        self._worker_seed: int | None = None  # the worker seed the generator was last reseeded for
        self._rank = 0  # how many transforms took this generator before this one
        if generator is not None:
            self._rank = _TAKEN.get(generator, 0)
            _TAKEN[generator] = self._rank + 1

    def current(self) -> torch.Generator | None:
        """The generator to draw from now: in a DataLoader worker, reseeded once for the worker's seed."""
        info = torch.utils.data.get_worker_info()
        if self.generator is None or info is None or info.seed == self._worker_seed:
            return self.generator
        entropy = [self.generator.initial_seed(), info.seed, self._rank]  # rank 0 adds nothing: trailing zeros
        seed = int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])
        self.generator = torch.Generator(self.generator.device).manual_seed(seed)
        self._worker_seed = info.seed
        return self.generator

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.generator is not None:
            state["generator"] = (str(self.generator.device), bytes(self.generator.get_state().numpy()))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = {"_rank": 0, **state}  # pickled by an earlier version: no rank
        if isinstance(state.get("generator"), tuple):
            device, data = state["generator"]
            generator = torch.Generator(device)
            generator.set_state(torch.frombuffer(bytearray(data), dtype=torch.uint8))
            state = {**state, "generator": generator}
        self.__dict__.update(state)


class SeededTransform:
    """A transform's ``generator`` attribute, kept as a :class:`WorkerGenerator` (``_draws``) to draw from."""

    _draws: WorkerGenerator

    @property
    def generator(self) -> torch.Generator | None:
        """The generator drawn from (in a DataLoader worker, the one reseeded for it); None: torch's global one."""
        return self._draws.generator

    @generator.setter
    def generator(self, generator: torch.Generator | None) -> None:
        self._draws = WorkerGenerator(generator)

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "_draws" not in state:  # pickled by an earlier version: the generator (or its state bytes) itself
            state = dict(state)
            draws = WorkerGenerator.__new__(WorkerGenerator)
            draws.__setstate__({"generator": state.pop("generator", None),
                                "_worker_seed": state.pop("_worker_seed", None)})
            state["_draws"] = draws
        super().__setstate__(state)  # type: ignore[misc]  # the transform's own base (torch.nn.Module)
