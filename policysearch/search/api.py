"""``policysearch.search(data, model=..., **settings)``: the search from Python, which the command line calls too.

The data and the model may be Python objects: the data is read into memory once
(:func:`policysearch.training.user_data.read_data`) and the model callable travels to Ray's workers with the
search's inputs (:class:`~policysearch.search.prepare.Inputs`). The settings name both
(``python:WHAT#FINGERPRINT``, ``callable:MODULE.NAME``), so ``config.json`` records them and a resume with
other data is refused like any other contradicting setting. Ray is not imported here.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import difflib
import os
import sys
import uuid
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

import numpy as np
from torch import nn

from policysearch.training.data import ImageData, dataset_name
from policysearch.training.pretrained import ModelError, callable_name
from policysearch.training.randomness import kept_global_rng
from policysearch.search.config import SearchConfig, SettingsError
from policysearch.search.outcome import SearchResult
from policysearch.search.rundir import RunError, least_side, read_stored_config
from policysearch.search.prepare import Inputs
from policysearch.wording import WordedError, a_kind, keyword, keyword_mention

__all__ = ["default_run_dir", "search"]

def default_run_dir() -> Path:
    """``runs/search-TIMESTAMP-XXXX``: where a search goes when no run directory is given; the random part
    keeps two searches started in the same second apart."""
    return Path("runs") / f"search-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def search(data: Any = None, model: str | Callable[[int, int], nn.Module] | None = None, *,
           out: str | os.PathLike[str] | None = None, resume: bool = False, image_column: str | None = None,
           label_column: str | None = None, stream: TextIO | None = None, **settings: Any) -> SearchResult:
    """Search a training recipe for ``data`` and ``model``: the same search as ``policysearch search``.

    ``data``: a data set name (``digits``, ``cifar10``, ``cifar100``, ``svhn``, ``imagefolder:PATH``), a folder
    of class subfolders, a map-style dataset of ``(image, label)`` (e.g. a ``torch.utils.data.Dataset``), a
    pair ``(images, labels)`` or a Hugging Face ``datasets.Dataset`` (its columns found, or named with
    ``image_column`` / ``label_column``); see :mod:`policysearch.training.user_data`. Default: ``digits``.
    ``model``: a name (``small_cnn``, ..., ``torchvision:NAME``, ``timm:NAME``) or a callable
    ``(num_classes, in_channels) -> nn.Module`` that builds a fresh model. Default: ``small_cnn``.
    ``settings``: any field of :class:`~policysearch.search.config.SearchConfig` (``epochs=``, ``trials=``,
    ``seed=``, ``weights=``, ...). ``out``: the run directory (default ``runs/search-TIMESTAMP-XXXX``);
    ``resume=True`` continues the run in ``out`` with its stored settings (pass data and a model callable
    again when the run had them; unnamed settings keep their stored values). Progress, and at the end the
    recipe, why and where its files are, go to ``stream`` (default: ``sys.stdout`` at the time of the call).

    Every problem with the data, the model or a setting is one ``ValueError`` line before Ray starts;
    too many failed trials raise :class:`~policysearch.search.checks.SearchFailed`.
    """
    known = {f.name for f in fields(SearchConfig)}
    for name in settings:
        if name not in known or name in ("dataset", "model"):
            close = ", ".join(difflib.get_close_matches(name, sorted(known), 3))
            hint = ("give the data as the first argument, data=" if name == "dataset" else
                    f"did you mean {close}?" if close else
                    "besides data, model, out, resume, image_column, label_column and stream it takes the fields of "
                    "policysearch.SearchConfig (help(policysearch.SearchConfig) lists them)")
            raise TypeError(f"search() got an unexpected keyword argument {name!r}; {hint}")
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}  # strengths=[...]
    if isinstance(resume, np.bool_):
        resume = bool(resume)
    if not isinstance(resume, bool):
        hint = f"; for the run in {os.fspath(resume)!r}: out={os.fspath(resume)!r}, resume=True" \
            if isinstance(resume, (str, os.PathLike)) else ""
        raise TypeError(f"resume= takes True or False, got {a_kind(resume)}{hint}")
    if stream is not None and not all(callable(getattr(stream, m, None)) for m in ("write", "flush")):
        raise TypeError(f"stream= takes a text stream with write() and flush() (e.g. sys.stderr), got "
                        f"{a_kind(stream)}")
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out= takes a run directory (a str or a path), got {a_kind(out)}")
    if resume and out is None:
        raise RunError("resume=True continues the run in out=RUN_DIR; give out=")
    if out is not None and not os.fspath(out).strip():
        raise RunError("out= is empty; give a run directory (or leave out= out for runs/search-TIMESTAMP-XXXX)")
    run_dir = Path(out) if out is not None else default_run_dir()
    with kept_global_rng(), kept_environment():  # the caller's generators and environment, as they were
        return _search(data, model, run_dir, resume, image_column, label_column, stream, settings)


@contextlib.contextmanager
def kept_environment() -> Iterator[None]:
    """This process's environment variables and ``sys.excepthook`` put back after the body: Ray sets a dozen
    variables (PYTHONBREAKPOINT to its own debugger among them, which would catch the caller's next
    ``breakpoint()``) and a hook that reports the caller's later errors to the Ray it had stopped."""
    saved = dict(os.environ)
    hook = sys.excepthook
    try:
        yield
    finally:
        sys.excepthook = hook
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        for key, value in saved.items():
            if os.environ.get(key) != value:
                os.environ[key] = value


def _search(data: Any, model: Any, run_dir: Path, resume: bool, image_column: str | None, label_column: str | None,
            stream: TextIO | None, settings: dict[str, Any]) -> SearchResult:
    """:func:`search` once its arguments are checked."""
    try:  # the checks' messages name the keyword arguments
        # a finished run (its policy.json is written last) is only read back: an older format is no obstacle
        finished = (run_dir / "policy.json").is_file()
        stored = read_stored_config(run_dir, continuing=not finished)[0] if resume else None
        base = replace(stored, **settings) if stored is not None else SearchConfig(**settings)
        model_name, builder = _model(model, stored)
        sized = least_side(run_dir, model_name, resume)
        dataset, read = _data(data, stored, base.image_size, sized, image_column, label_column)
        config = replace(base, dataset=dataset, model=model_name)
        from policysearch.search import run_search
        from policysearch.search.report import summary_text

        out = stream or sys.stdout
        result = run_search(config, run_dir, resume=resume, stream=out, inputs=Inputs(read, builder))
        print(f"\n{summary_text(result)}", file=out, flush=True)  # the recipe, why, and where its files are
        return result
    except SettingsError as exc:
        raise SettingsError(exc.problems, keyword) from None
    except WordedError as exc:  # a run folder, the cluster, the resources, the model: named as keyword arguments
        raise exc.worded(keyword_mention) from exc.__cause__  # a model's own error keeps its traceback


def _model(model: Any, stored: SearchConfig | None) -> tuple[str, Callable[[int, int], nn.Module] | None]:
    """The settings' model name and the callable, if one was given."""
    if model is None:
        return (stored.model if stored is not None else SearchConfig.model), None
    if isinstance(model, str):
        return model, None
    if isinstance(model, nn.Module):
        raise ModelError(f"model= takes a callable that builds a fresh model, not {a_kind(model)} instance "
                         "(every child starts from new weights); e.g. model=lambda num_classes, in_channels: "
                         f"{type(model).__name__}(...), building it for num_classes outputs from images of "
                         "in_channels channels")
    if not callable(model):
        raise ModelError(f"model= takes a model name or a callable (num_classes, in_channels) -> nn.Module, got "
                         f"{a_kind(model)}")
    return callable_name(model), model


def _data(data: Any, stored: SearchConfig | None, image_size: int | None, least_side: int, image_column: str | None,
          label_column: str | None) -> tuple[str, ImageData | None]:
    """The settings' data set name and, for data given as Python objects, the data read into memory (at least
    ``least_side``, the smallest side the model is built for, when no ``image_size`` is asked)."""
    if data is None:
        return (stored.dataset if stored is not None else SearchConfig.dataset), None
    if isinstance(data, (str, os.PathLike)) and image_column is None and label_column is None:
        return dataset_name(data), None  # an unknown name or a missing folder is refused by the loader
    from policysearch.training.user_data import read_data

    read = read_data(data, image_column=image_column, label_column=label_column, image_size=image_size,
                     least_side=least_side)
    return read.name, read
