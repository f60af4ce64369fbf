"""A user's ``torch.Generator`` as a transform holds it, so that seeded draws stay right in DataLoader workers.

A worker runs a copy of the transform: a generator kept as it is would draw the same augmentations in
every worker and, without persistent workers, in every epoch. In a worker, a transform draws instead from
a generator seeded once per worker seed, from that seed and a draw of the generator it was given (so runs
repeat when torch's seed is set). Transforms given one generator share it in the worker too, where each
such draw moves it on: two views of an image draw apart there, in the order the dataset calls them, as
they do in the main process. The generator is pickled once however many transforms hold it, as its device
and state bytes, because a generator pickled as itself holds a tensor that workers started with spawn or
forkserver (macOS and Windows) cannot receive.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np
import torch

__all__ = ["SeededTransform", "WorkerGenerator"]


class _Given:
    """A generator a user gave, held once by every transform given it, so that pickling keeps it shared."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def __getstate__(self) -> tuple[str, bytes]:
        return str(self.generator.device), bytes(self.generator.get_state().numpy())

    def __setstate__(self, state: tuple[str, bytes]) -> None:
        device, data = state
        generator = torch.Generator(device)
        generator.set_state(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        self.generator = generator
        with _LOCK:  # a transform built later from a copy's generator shares it too
            _GIVEN[id(generator)] = self


# The holder of each generator some transform holds now, by the generator's id (alive while it is held).
_GIVEN: weakref.WeakValueDictionary[int, _Given] = weakref.WeakValueDictionary()
_LOCK = threading.Lock()  # two threads building transforms from one generator get one holder


def _given(generator: torch.Generator) -> _Given:
    with _LOCK:
        held = _GIVEN.get(id(generator))
        if held is None or held.generator is not generator:
            held = _GIVEN[id(generator)] = _Given(generator)
        return held


class WorkerGenerator:
    """The generator a transform draws from (``None``: torch's global one); ``current()`` gives it."""

    def __init__(self, generator: torch.Generator | None) -> None:
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator, got {type(generator).__name__} "
                            "(for a seed, torch.Generator().manual_seed(seed))")
        self._given = None if generator is None else _given(generator)
        self._reseeded: torch.Generator | None = None  # in a DataLoader worker, the one drawn from there
        self._worker_seed: int | None = None  # the worker seed it was seeded for

    @property
    def generator(self) -> torch.Generator | None:
        """The generator drawn from: the one given, or in a DataLoader worker the one seeded for it."""
        if self._reseeded is not None:
            return self._reseeded
        return None if self._given is None else self._given.generator

    def current(self) -> torch.Generator | None:
        """The generator to draw from now: in a DataLoader worker, seeded once for the worker's seed."""
        info = torch.utils.data.get_worker_info()
        if self._given is None or info is None:
            return self.generator
        if info.seed != self._worker_seed:
            given = self._given.generator  # shared with the other transforms given it: the draw moves it on
            draw = int(torch.randint(2**62, (1,), generator=given, device=given.device))
            seed = int(np.random.SeedSequence([info.seed, draw]).generate_state(1, np.uint64)[0])
            self._reseeded = torch.Generator(given.device).manual_seed(seed)
            self._worker_seed = info.seed
        return self._reseeded

    def __getstate__(self) -> dict[str, Any]:
        return {"_given": self._given}  # a copy starts anew: seeded again in whichever worker it runs

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._reseeded, self._worker_seed = None, None
        if "_given" in state:
            self._given = state["_given"]
            return
        generator = state.get("generator")  # pickled by an earlier version: the generator or its state bytes
        if isinstance(generator, tuple):
            held = _Given.__new__(_Given)
            held.__setstate__(generator)
            generator = held.generator
        self._given = None if generator is None else _given(generator)


class SeededTransform:
    """A transform's ``generator`` attribute, kept as a :class:`WorkerGenerator` (``_draws``) to draw from."""

    _draws: WorkerGenerator

    @property
    def generator(self) -> torch.Generator | None:
        """The generator drawn from (in a DataLoader worker, the one seeded for it); None: torch's global one."""
        return self._draws.generator

    @generator.setter
    def generator(self, generator: torch.Generator | None) -> None:
        self._draws = WorkerGenerator(generator)

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "_draws" not in state:  # pickled by an earlier version: the generator (or its state bytes) itself
            state = dict(state)
            draws = WorkerGenerator.__new__(WorkerGenerator)
            draws.__setstate__({"generator": state.pop("generator", None)})
            state.pop("_worker_seed", None)
            state["_draws"] = draws
        super().__setstate__(state)  # type: ignore[misc]  # the transform's own base (torch.nn.Module)
