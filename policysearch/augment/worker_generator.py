"""A user's ``torch.Generator`` as a transform holds it, so that seeded draws stay right in DataLoader workers.

A worker runs a copy of the transform: a generator kept as it is would draw the same augmentations in
every worker and, without persistent workers, in every epoch. In a worker it is reseeded once per worker
seed (from its own seed and the worker's, so runs repeat when torch's seed is set), and it is pickled as
its device and state bytes, because a generator pickled as itself holds a tensor that workers started
with spawn or forkserver (macOS and Windows) cannot receive. A generator given to two transforms is
reseeded alike for each in a worker: give each transform its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["SeededTransform", "WorkerGenerator"]


class WorkerGenerator:
    """The generator a transform draws from (``None``: torch's global one); ``current()`` gives it."""

    def __init__(self, generator: torch.Generator | None) -> None:
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator, got {type(generator).__name__} "
                            "(for a seed, torch.Generator().manual_seed(seed))")
        self.generator = generator
        self._worker_seed: int | None = None  # the worker seed the generator was last reseeded for

    def current(self) -> torch.Generator | None:
        """The generator to draw from now: in a DataLoader worker, reseeded once for the worker's seed."""
        info = torch.utils.data.get_worker_info()
        if self.generator is None or info is None or info.seed == self._worker_seed:
            return self.generator
        seed = int(np.random.SeedSequence([self.generator.initial_seed(), info.seed]).generate_state(1, np.uint64)[0])
        self.generator = torch.Generator(self.generator.device).manual_seed(seed)
        self._worker_seed = info.seed
        return self.generator

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.generator is not None:
            state["generator"] = (str(self.generator.device), bytes(self.generator.get_state().numpy()))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
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
