"""The global random generators of a process, kept as they were around work that draws from them; the seed range."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["MAX_SEED", "kept_global_rng"]

# The largest seed a user may give: numpy's seeds (RandomState, scikit-learn's random_state, the optimisers')
# take 32 bits; seeds derived from it are reduced to them.
MAX_SEED = 2**32 - 1


@contextlib.contextmanager
def kept_global_rng() -> Iterator[None]:
    """Restore torch's generators (CPU, and CUDA where it is in use), Python's ``random`` and numpy's global
    generator after the body, also on an error: a caller who seeds, then calls us, then trains gets the
    training they seeded."""
    py_state = random.getstate()
    np_state = np.random.get_state()
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
