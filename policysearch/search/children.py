"""Phase 1: one child model per split, trained on D_M with the baseline augmentation only.

:func:`train_child` trains and saves it (resuming from its last saved epoch); phase 2 and the domain
probe use it frozen, fetched once per worker process into a :class:`ChildCache` (:func:`frozen_child`).
Plain functions of their inputs: a trial runner hands them a ``report`` callable and a folder.
"""

from __future__ import annotations

import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from policysearch.atomic import save_torch_atomic
from policysearch.search.faults import Faults
from policysearch.search.prepare import Prepared, device_for, use_threads
from policysearch.training.train import evaluate, fit_to_data, train_model

__all__ = ["CHILD_FILE", "CHILD_MODEL_FILE", "ChildCache", "ChildSource", "child_and_da", "child_model",
           "frozen_child", "train_child"]

CHILD_FILE = "child.pt"  # the full training state of a child (weights, optimizer, RNGs), saved every epoch
CHILD_MODEL_FILE = "child_model.pt"  # the trained weights alone, written beside it after the last epoch
Report = Callable[[dict[str, Any]], None]


def child_model(prepared: Prepared, split: int) -> torch.nn.Module:
    """A fresh child model with the same initial weights for a split in every phase (paired comparisons)."""
    torch.manual_seed(prepared.config.seed * 1000 + split)  # a worker's own RNG is not seeded
    return prepared.new_model()


def train_child(prepared: Prepared, split: int, folder: Path, report: Report, faults: Faults = Faults(),
                on_trained: Callable[[torch.nn.Module], dict[str, Any]] | None = None, spent: float = 0.0) -> None:
    """Phase 1: train the child model of ``split`` on D_M with the baseline augmentation only, with
    enough optimizer steps for the size of D_M (``train.fit_to_data``).

    The full training state is saved to ``folder/child.pt`` after every epoch (and resumed from there if
    it exists); ``report(metrics)`` follows each save, the last one with the child's D_A accuracy and
    after ``folder/child_model.pt`` (the weights alone, what phase 2 fetches) is written. The metrics of
    ``on_trained(model)``, called with the trained model in eval mode, join that last report (phase 1b's
    domain probe runs there, on the model in memory). Every report carries ``epoch`` and ``epochs``, so a
    caller can keep only some of the saves. ``train_seconds`` counts from ``spent``, the seconds earlier
    attempts of this training spent (a resumed one continues their checkpoint).
    """
    faults.reach("child", split=split)
    config = prepared.config
    use_threads(config)
    dm, da = prepared.splits[split]
    device = device_for(config)
    data = prepared.data
    model = child_model(prepared, split)
    train_config = fit_to_data(config.train_config(), len(dm), config.min_steps)
    started = time.perf_counter()

    def on_epoch(epoch: int, metrics: dict[str, Any]) -> None:
        metrics = {**metrics, "split": split, "epochs": train_config.epochs,
                   "train_seconds": spent + time.perf_counter() - started}
        if epoch == train_config.epochs:
            save_torch_atomic(folder / CHILD_MODEL_FILE, {"model": model.state_dict()})
            held_out = evaluate(model, data.images[da], data.labels[da], mean=prepared.mean, std=prepared.std,
                                device=device)
            metrics.update(da_accuracy=held_out["accuracy"], da_loss=held_out["loss"])
            if on_trained is not None:
                model.zero_grad(set_to_none=True)  # the last step's gradients are not needed to probe
                metrics.update(on_trained(model.eval()))
        report(metrics)

    train_model(model, data.subset(dm), train_config, baseline=prepared.baseline, mean=prepared.mean, std=prepared.std, device=device, checkpoint_path=folder / CHILD_FILE,
                on_epoch=on_epoch)


@dataclass(frozen=True)
class ChildSource:
    """Where the frozen child of one split is: ``key`` names it in a worker's cache (run id and split),
    ``fetch(folder)`` puts its model file into the empty ``folder`` (or finds it elsewhere) and returns
    the file's path. ``fetch`` runs only on a cache miss, so a remote model is downloaded once per worker."""

    key: str
    fetch: Callable[[Path], Path]

    @classmethod
    def in_folder(cls, folder: str | Path) -> "ChildSource":
        """A child in a local folder (``child_model.pt``, or the training state of an older run's ``child.pt``)."""
        folder = Path(folder).resolve()
        return cls(str(folder), lambda _: _model_file(folder))


def _model_file(folder: Path) -> Path:
    model_only = folder / CHILD_MODEL_FILE
    return model_only if model_only.exists() else folder / CHILD_FILE


class ChildCache:
    """The frozen child models one worker process has loaded, least recently used dropped first.

    It keeps at least as many models as the splits it is asked for, so that a worker cycling over every
    split loads each child once (a WRN-28-10 holds about 146 MB of weights per child).
    """

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._models: OrderedDict[tuple, torch.nn.Module] = OrderedDict()

    def get(self, key: tuple, load: Callable[[], torch.nn.Module], keep: int = 0) -> tuple[torch.nn.Module, bool]:
        """The model under ``key`` and True, or ``load()``'s (now kept) and False; ``keep`` raises the size."""
        self.size = max(self.size, keep)
        model = self._models.get(key)
        if model is not None:
            self._models.move_to_end(key)
            return model, True
        model = load()
        self._models[key] = model
        while len(self._models) > self.size:
            self._models.popitem(last=False)
        return model, False

    def __len__(self) -> int:
        return len(self._models)


_CHILDREN = ChildCache()  # per worker process; Tune reuses the process for many trials (reuse_actors)


def frozen_child(prepared: Prepared, split: int, child: ChildSource | str | Path,
                 cache: ChildCache = _CHILDREN) -> tuple[torch.nn.Module, bool, float]:
    """The frozen child of ``split`` on this trial's device, whether it came from ``cache``, and the
    seconds it took. The cache is looked up before anything is fetched."""
    started = time.perf_counter()
    source = child if isinstance(child, ChildSource) else ChildSource.in_folder(child)
    config = prepared.config
    device = device_for(config)
    spec = prepared.model_spec

    def load() -> torch.nn.Module:
        model = spec.build()
        with tempfile.TemporaryDirectory(prefix="policysearch-child-") as folder:
            state = torch.load(source.fetch(Path(folder)), weights_only=True, map_location=device)
        model.load_state_dict(state["model"])
        return model.to(device).eval()

    model, cached = cache.get((source.key, split, spec, str(device)), load, keep=config.splits)
    return model, cached, time.perf_counter() - started


def child_and_da(prepared: Prepared, split: int, child: ChildSource | str | Path
                 ) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, bool, float]:
    """The frozen child of ``split`` (:func:`frozen_child`), its D_A images and labels on the child's device,
    whether the child came from the cache, and the seconds getting it took."""
    model, cached, load_seconds = frozen_child(prepared, split, child)
    device = next(model.parameters()).device
    index = torch.as_tensor(prepared.splits[split][1])
    return model, prepared.data.images[index].to(device), prepared.data.labels[index].to(device), cached, load_seconds


