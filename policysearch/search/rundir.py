"""A run's identity: its run directory, its run id and where its trials' experiments live.

Every search gets a fresh run id, kept in ``RUN_DIR/config.json``; its experiments live under
``<storage>/<run id>/``, so two searches never share one. Only ``--resume`` continues a run, and only with
the stored settings and the same run format: :func:`open_run` refuses a plain run into a folder that
holds a run or files of anything else, a resume whose settings contradict the stored ones, and a resume of a
run that failed (:func:`record_failure`: it keeps its failed trials, so it would fail again). While a search
runs it holds the folder (:func:`held_run`), so a second one there is refused rather than driving the same
experiments.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import os
import socket
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Callable, Iterator, TextIO

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; a second search in one folder is not detected there
    fcntl = None  # type: ignore[assignment]

from policysearch.atomic import unwritable, write_json_atomic
from policysearch.augment.policy import software_versions
from policysearch.invocation import command_line
from policysearch.search.config import RESUMABLE, SearchConfig, is_uri
from policysearch.search.spaces import is_space_path
from policysearch.training.pretrained import (CALLABLE_PREFIX, is_callable_model, library_versions, min_image_size,
                                              model_ref, same_formula)
from policysearch.wording import Mention, WordedError

__all__ = ["CONFIG_FILE", "FAILED_FILE", "LOCK_FILE", "Run", "RunError", "RunInUse", "check_resume", "check_same_inputs",
           "config_document", "held_run", "open_run", "read_stored_config", "record_failure", "recorded_failure", "write_config"]

CONFIG_FILE = "config.json"
FAILED_FILE = "failed.json"  # why the run stopped when too many trials failed (a resume would fail again)
LOCK_FILE = ".lock"  # held while a search runs in the folder; it names that search's process
LOCK_ATTEMPTS = 10  # tries to hold a lock file that stopping searches keep removing
# The layout of a run's phases and results; a run of another format cannot be continued (history:
# docs/findings.md). 7: a flip the domain fit could not judge brings flipped baseline and reference candidates.
RUN_FORMAT = 7
# config.json's "sizing": 2, each image resized once, to at least the side the model is built for; a run
# written before it has none (1): its images were resized to their own rule first, then up to that side.
SIZING = 2


class RunError(WordedError):
    """A run directory, storage or cluster that cannot be used as asked; the message says why and what to do,
    naming the settings as the command line or the Python API does (:class:`~policysearch.wording.WordedError`)."""


class RunInUse(RunError):
    """Another search is running in the run directory: it holds the folder's lock; ``holder`` says who."""

    def __init__(self, message: str | Callable[[Mention], str], mention: Mention | None = None,
                 holder: str = "") -> None:
        super().__init__(message, mention)
        self.holder = holder

    def worded(self, mention: Mention) -> "RunInUse":
        return RunInUse(self.build, mention, self.holder)


@dataclass(frozen=True)
class Run:
    """Where one search keeps everything: ``run_dir`` (config, results) and ``experiments`` (Tune's)."""

    run_dir: Path
    run_id: str
    storage: str  # the --storage given, or RUN_DIR/tune

    @property
    def experiments(self) -> str:
        """``<storage>/<run id>``: the Tune experiments of this run and of no other."""
        return f"{self.storage.rstrip('/')}/{self.run_id}"


def storage_of(config: SearchConfig, run_dir: Path) -> str:
    return config.storage or str((run_dir / "tune").resolve())


def config_document(path: Path) -> dict[str, Any]:
    """The content of a ``config.json``: a JSON object with a ``search`` object and a ``run_id`` (a
    ValueError that says what is wrong otherwise, rather than a KeyError's bare key)."""
    document = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict) or not isinstance(document.get("search"), dict) or "run_id" not in document:
        raise ValueError("not a JSON object with the 'search' settings and a 'run_id'")
    return document


def read_stored_config(run_dir: Path, continuing: bool = True) -> tuple[SearchConfig, str]:
    """The config and run id stored in ``run_dir/config.json``; a RunError when there is none, or when
    ``continuing`` (the run is unfinished) and another run format made it."""
    path = run_dir / CONFIG_FILE
    if not run_dir.exists():
        raise RunError(lambda say: f"{say('resume', run_dir)}: no such folder; give the run folder that the search "
                       "wrote (its --out, out= in Python)")
    if not run_dir.is_dir():
        holder = f" ({run_dir.parent})" if (run_dir.parent / CONFIG_FILE).is_file() else ""
        raise RunError(lambda say: f"{say('resume', run_dir)}: is a file, not a folder; give the run folder that "
                       f"the search wrote{holder}")
    if not path.is_file():
        if not _other_files(run_dir):  # a search stopped before it wrote its config: nothing to continue
            raise RunError(lambda say: f"{say('resume', run_dir)}: no {CONFIG_FILE} there: no search began in it (one "
                           f"stopped while it started leaves it so); start one there with {say('out', run_dir)}")
        if _holds_a_run(run_dir):
            raise RunError(lambda say: f"{say('resume', run_dir)}: experiments under tune/ but no {CONFIG_FILE}, which "
                           "holds the run's settings, so it cannot be continued; start a new run with another "
                           f"{say('out')}")
        raise RunError(lambda say: f"{say('resume', run_dir)}: no {CONFIG_FILE} there; is it a policysearch run "
                       "directory?")
    try:
        document = config_document(path)
        run_id = document["run_id"]
        config = SearchConfig.from_dict(document["search"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = str(exc)  # the name exc is gone after this block; a rewording needs the text
        raise RunError(lambda say: f"{say('resume', run_dir)}: {CONFIG_FILE} is not a config this policysearch "
                       f"wrote ({reason}); start a new run with another {say('out')}") from None
    kept = document.get("search_digest")  # runs written before it was recorded pass
    if continuing and kept is not None and kept != settings_digest(document["search"]):
        raise RunError(lambda say: f"{say('resume', run_dir)}: settings in {CONFIG_FILE} that decide the run's trials "
                       "were changed since it started (they no longer match its search_digest), and its finished "
                       f"trials were made with the old ones: put {CONFIG_FILE} back to continue, or start a new run "
                       f"with another {say('out')}")
    made = document.get("run_format", 1)
    if continuing and made != RUN_FORMAT:
        raise RunError(lambda say: f"{say('resume', run_dir)}: the run was made by another policysearch (run format "
                       f"{made}; this one continues format {RUN_FORMAT}), whose phases differ; start a new run with "
                       f"another {say('out')} (a policy.json the run finished stays valid)")
    return config, str(run_id)


def contradictions(stored: SearchConfig, config: SearchConfig, run_dir: Path | None = None) -> list[tuple[str, Any, Any]]:
    """(setting, given, stored) for every setting, other than RESUMABLE ones, that differs in what it means: a
    default given by its value (``--space fast_autoaugment``, ``--final-epochs`` equal to ``--epochs``, the run's
    own ``--storage RUN/tune``) agrees with the setting left unset, and a setting given as stored never
    contradicts by itself (an unset ``--final-epochs`` follows ``--epochs``, which is named)."""
    return [(f.name, getattr(config, f.name), getattr(stored, f.name)) for f in fields(SearchConfig)
            if f.name not in RESUMABLE and getattr(config, f.name) != getattr(stored, f.name)
            and _meaning(config, f.name, run_dir) != _meaning(stored, f.name, run_dir)]


def _meaning(config: SearchConfig, name: str, run_dir: Path | None) -> Any:
    """The value setting ``name`` of ``config`` stands for, where an unset one has a default known here."""
    if name == "space":
        return config.space_name
    if name == "final_epochs":
        return config.final_epochs or config.epochs
    if name == "storage" and run_dir is not None:
        storage = storage_of(config, run_dir)
        return storage if is_uri(storage) else str(Path(storage.removeprefix("file://")).resolve())
    return getattr(config, name)


# What a setting left unset means, where a message shows a stored run's settings.
_UNSET_MEANS = {"train_size": "all the training images", "image_size": "the data set's default size",
                "weights": "new weights", "final_epochs": "the search's epochs", "storage": "the run folder's tune"}


def _shown(value: Any, name: str = "") -> str:
    """A stored setting as a message shows it: a setting left unset is its default, not Python's None."""
    if value is None:
        return f"not set: {_UNSET_MEANS.get(name, 'the default')}"
    return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _holds_a_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run of this search: a config.json it wrote, or experiments under tune/."""
    tune = run_dir / "tune"
    if tune.is_dir() and any(tune.iterdir()):
        return True
    try:
        document = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none, or not JSON: someone else's file
        return False
    return isinstance(document, dict) and "run_id" in document and "search" in document


def _other_files(run_dir: Path) -> list[str]:
    """The names in ``run_dir`` that a search would overwrite or mix with its own: hidden ones (.DS_Store)
    and empty folders (a storage folder a stopped start left) aside."""
    return sorted(entry.name for entry in run_dir.iterdir()
                  if not entry.name.startswith(".") and not (entry.is_dir() and not any(entry.iterdir())))


def record_failure(run_dir: Path, message: str) -> None:
    """Keep why the run stopped with too many failed trials: a resume would keep them and fail again."""
    write_json_atomic(run_dir / FAILED_FILE, {"message": message})


def recorded_failure(run_dir: Path) -> str | None:
    """Why the run in ``run_dir`` stopped with too many failed trials, or None (it did not, or it says nothing)."""
    try:
        document = json.loads((run_dir / FAILED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return str(document.get("message", "")) if isinstance(document, dict) else None


def check_writable(folder: Path, what: str) -> None:
    """A RunError naming ``folder`` (the setting ``what``) unless it can be created and written (nothing
    is left behind)."""
    problem = unwritable(folder, folder=True)
    if problem is not None:
        raise RunError(lambda say: f"{say(what, folder)}: {problem}")


def open_run(config: SearchConfig, run_dir: str | os.PathLike[str], *, resume: bool) -> Run:
    """Check that ``run_dir`` can take this search and return the run's identity (nothing is written).

    A plain run needs a folder that holds no run; ``resume`` needs one that does, with the same
    settings as ``config`` (``--address`` and ``--dashboard`` may differ).
    """
    run_dir = Path(run_dir)
    failure = recorded_failure(run_dir) if run_dir.is_dir() else None
    if resume:
        run_id = check_resume(config, run_dir)
        if failure is not None:
            raise RunError(lambda say: f"{say('resume', run_dir)}: this run stopped because too many trials failed "
                           f"({failure}); a resume keeps failed trials as they were, so it would stop again: fix the "
                           f"cause and start a new run with another {say('out')}")
    else:
        if run_dir.exists() and not run_dir.is_dir():
            raise RunError(lambda say: f"{say('out', run_dir)}: is a file, not a folder")
        if run_dir.is_dir() and _holds_a_run(run_dir):
            if not (run_dir / CONFIG_FILE).is_file():
                raise RunError(lambda say: f"{say('out', run_dir)} holds experiments under tune/ but no {CONFIG_FILE}, "
                               f"so the run there cannot be continued; choose another {say('out')}")
            finished = (run_dir / "policy.json").exists()
            state = "a finished" if finished else "a failed" if failure is not None else "an unfinished"
            going_on = "" if finished or failure is not None else "continue it with {}, or "
            raise RunError(lambda say: f"{say('out', run_dir)} already holds {state} search; "
                           f"{going_on.format(say('resume', run_dir))}choose another {say('out')}")
        if run_dir.is_dir() and _other_files(run_dir):
            names = _other_files(run_dir)
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            raise RunError(lambda say: f"{say('out', run_dir)} holds files that are not a policysearch run ({shown}), "
                           "which the search would overwrite or mix with its own; give a new or empty folder")
        run_id = _new_run_id()
    check_writable(run_dir, "out")
    run = Run(run_dir, run_id, storage_of(config, run_dir))
    if not is_uri(run.storage):
        check_writable(Path(run.storage.removeprefix("file://")), "storage")
        if not resume and Path(run.experiments.removeprefix("file://")).exists():
            raise RunError(lambda say: f"{say('storage', run.storage)} already holds experiments of run {run_id}; "
                           f"choose another {say('storage')}")
    else:
        check_uri(run.storage)
    return run


def check_uri(storage: str) -> None:
    """A RunError naming the ``storage`` URI unless pyarrow, which Tune writes with, knows its scheme (for
    ``s3://`` it also finds the bucket's region), before a run folder is written that a resume could not move
    to another storage. Whether the path can be reached is left to Tune: pyarrow's GCS client retries for
    minutes without a network."""
    from pyarrow import ArrowException
    from pyarrow.fs import FileSystem

    try:
        FileSystem.from_uri(storage)
    except (ArrowException, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RunError(lambda say: f"{say('storage', storage)} cannot be used: {reason}") from None


@contextlib.contextmanager
def held_run(config: SearchConfig, run_dir: str | os.PathLike[str], *, resume: bool) -> Iterator[Run]:
    """:func:`open_run`, with the folder held until the search ends: a second search there (a resume of a
    run still going, two runs into one new folder) is refused in one line. The hold is an advisory lock on
    ``RUN_DIR/.lock``, which the system lets go when the process ends, however it ends; a ``--storage`` path
    outside the folder is held so too (``<storage>/<run id>/.lock``), so that a copy of the run folder is not
    continued beside it. The folders this call created are removed again when the search stopped before it
    wrote its config."""
    run_dir = Path(run_dir)
    if fcntl is None:  # no advisory locks (Windows)
        yield open_run(config, run_dir, resume=resume)
        return
    if not (run_dir / LOCK_FILE).is_file():  # else a search running there is named first: its run looks unfinished
        open_run(config, run_dir, resume=resume)  # the folder's problems, before anything is written
    created = _first_missing(run_dir)
    option = "resume" if resume else "out"

    def running_here(holder: str) -> RunInUse:
        return RunInUse(lambda say: f"{say(option, run_dir)}: another search is running in this folder ({holder}); "
                        + (f"wait for it to end or stop it, then continue it with {say('resume', run_dir)}" if resume
                           else f"choose another {say('out')}"), holder=holder)

    with _locked(run_dir, running_here, lambda say: say(option, run_dir)), contextlib.ExitStack() as storage_hold:
        storage_created, storage_held = None, False
        try:
            run = open_run(config, run_dir, resume=resume)  # checked again: another search may have begun meanwhile
            experiments = Path(run.experiments.removeprefix("file://"))
            if not is_uri(run.storage) and not experiments.resolve().is_relative_to(run_dir.resolve()):
                # a copy of the run folder, continued at once with the original, would share these experiments
                def running_there(holder: str) -> RunInUse:
                    return RunInUse(lambda say: f"{say(option, run_dir)}: another search is running run {run.run_id} "
                                    f"with its experiments in {experiments} ({holder}), perhaps from a copy of this "
                                    "run folder; wait for it to end or stop it", holder=holder)

                storage_created = _first_missing(experiments)
                storage_held = storage_hold.enter_context(
                    _locked(experiments, running_there, lambda say: f"{say('storage', run.storage)} ({experiments})"))
            yield run
        finally:
            if not (run_dir / CONFIG_FILE).exists():  # stopped before its config: what this call made goes again
                if storage_created is not None:
                    _remove_made(experiments, storage_created)
                if created is not None:
                    _remove_made(run_dir, created)
            elif storage_held:  # a storage keeps the experiments alone once the search ends (under the lock)
                with contextlib.suppress(OSError):  # never in place of the search's own outcome
                    (experiments / LOCK_FILE).unlink(missing_ok=True)


def _remove_made(folder: Path, created: Path) -> None:
    """``folder``'s lock file, then ``folder`` and its parents up to ``created`` where they are empty (under
    the lock: a waiting opener sees the file gone)."""
    (folder / LOCK_FILE).unlink(missing_ok=True)
    for made in (folder, *folder.parents):
        with contextlib.suppress(OSError):  # not empty: something else was written there
            made.rmdir()
        if made == created:
            break


def _first_missing(folder: Path) -> Path | None:
    """The outermost of ``folder`` and its parents that does not exist yet (None when ``folder`` exists)."""
    missing = None
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing


@contextlib.contextmanager
def _locked(folder: Path, in_use: Callable[[str], RunInUse], named: Callable[[Callable], str]) -> Iterator[bool]:
    """``FOLDER/.lock`` created if need be and held, naming this process in it, until the block ends; yields
    whether this process holds the lock (False where the file system has none). ``in_use(holder)`` is raised
    when another search holds it, and ``named(say)`` names the folder in the other errors. A lock file that a
    stopping search removed after this one opened it is opened again, so two searches never hold two files of
    one name."""
    path = folder / LOCK_FILE
    for _ in range(LOCK_ATTEMPTS):
        folder.mkdir(parents=True, exist_ok=True)
        try:
            lock = path.open("a+", encoding="utf-8")
        except FileNotFoundError:  # the folder went between the two calls
            continue
        except PermissionError:  # another user's lock file: it can be held, but keeps their line
            try:
                lock = path.open("r", encoding="utf-8")
            except PermissionError:
                raise RunError(lambda say: f"{named(say)}: cannot open {path} (permission denied), another user's "
                               "lock of this folder") from None
        with lock:
            held = _lock(lock, in_use)
            try:
                same = os.path.samestat(os.fstat(lock.fileno()), path.stat())
            except FileNotFoundError:
                same = False
            if not same:
                continue
            if held and lock.writable():
                lock.seek(0)
                lock.truncate()
                lock.write(f"process {os.getpid()} on {socket.gethostname()}, since "
                           f"{_dt.datetime.now().strftime('%Y-%m-%d %H:%M:%S')}\n")
                lock.flush()
            yield held
            return
    raise RunError(lambda say: f"{named(say)}: could not hold {path}: other searches kept removing it")


def _lock(lock: TextIO, in_use: Callable[[str], RunInUse]) -> bool:
    """Take the lock on the open file ``lock`` without waiting (closing the file lets it go); False when the
    file system cannot lock it (some network mounts), ``in_use(holder)`` raised when another search has it."""
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        raise in_use(lock.read().strip() or "another process") from None
    except OSError as exc:
        # EBADF: NFS locks a file only when it is open for writing, which another user's lock file is not
        if exc.errno in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EBADF):
            return False
        raise
    return True


def check_resume(config: SearchConfig, run_dir: Path, finished: bool = False) -> str:
    """The run id of the run in ``run_dir``; a RunError when there is none or ``config`` contradicts it. A
    ``finished`` run is only read back, so an older run format is no obstacle."""
    stored, run_id = read_stored_config(run_dir, continuing=not finished)
    differ = contradictions(stored, config, run_dir)
    if differ:
        verb = "contradicts" if len(differ) == 1 else "contradict"
        # the data, and a model given as a Python callable, cannot be dropped: the run needs them given again
        own = [("data" if name == "dataset" else "model") for name, _, kept in differ
               if name == "dataset" or (name == "model" and is_callable_model(str(kept)))]
        rest = len(differ) - len(own)
        drop = ("drop the other" + ("s" if rest > 1 else "") if own else f"drop {'it' if rest == 1 else 'them'}")
        remedy = " and ".join(([f"give the run's own {' and '.join(own)}"] if own else []) + ([drop] if rest else []))
        # a model defined in the script that ran the search is stored under that script's name, __main__
        script = any(name == "model" and str(kept).startswith(f"{CALLABLE_PREFIX}__main__.") for name, _, kept in differ)
        where = ("; the run's model was defined in the script that started it (stored as __main__): continue from "
                 "that script, or define models in a module the script imports" if script else "")
        raise RunError(lambda say: f"{say('resume', run_dir)}: "
                       f"{', '.join(f'{say(name, given)} (stored: {_shown(kept, name)})' for name, given, kept in differ)} "
                       f"{verb} the stored run; {remedy} to continue it, or start a new run with another "
                       f"{say('out')}{where}")
    return run_id


def _new_run_id() -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{uuid.uuid4().hex[:8]}"


# Settings a run may be moved with, edited in config.json: where it runs and with what resources, and where
# its inputs are (their contents are checked by fingerprints, ``check_same_inputs``)
_MOVABLE = RESUMABLE | {"storage", "cpus_per_trial", "gpus_per_trial", "max_concurrent", "retries", "data_root",
                        "download", "dataset", "space", "weights"}


def settings_digest(settings: Mapping[str, Any]) -> str:
    """16 hex digits of SHA-256 over the settings that decide a run's trials, as JSON (``_MOVABLE`` aside):
    ``config.json`` keeps it beside them, so that a resume finds such settings edited by hand, which the run's
    finished trials were not made with."""
    decisive = {k: v for k, v in settings.items() if k not in _MOVABLE}
    text = json.dumps(decisive, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def write_config(run: Run, config: SearchConfig, data_fingerprint: str | None = None,
                 space: Mapping[str, Any] | None = None, architecture: str = "", weights_digest: str = "") -> None:
    """Write ``config.json`` for a new run (a resumed run keeps the one it has), with the fingerprint of
    the training images it searches on, the search space as loaded (``SearchSpace.to_dict()``), the
    model's layers and shapes (``pretrained.architecture``) and the ``--weights`` it starts from
    (``pretrained.state_digest``), which a resume checks (``check_same_inputs``)."""
    settings = json.loads(json.dumps(asdict(config)))  # as the file holds them: tuples as lists
    document: dict[str, Any] = {"run_id": run.run_id, "run_format": RUN_FORMAT, "search": settings,
                                "search_digest": settings_digest(settings),
                                "resolved_space": config.space_name, "space": space,
                                "data_fingerprint": data_fingerprint, "architecture": architecture or None,
                                "weights_digest": weights_digest or None, "sizing": SIZING,
                                "command": command_line(),
                                "software": {**software_versions(), **library_versions(config.model)}}
    write_json_atomic(run.run_dir / CONFIG_FILE, document)


def least_side(run_dir: Path, model: str, resume: bool) -> int:
    """The least side the run's images load at (``least_side`` of the loaders): the model's, except for a run
    resumed from before ``SIZING``, whose images load by their own rule and are then resized up, as they were."""
    if resume:
        try:
            before = "sizing" not in json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError, TypeError):  # no stored run: read_stored_config says so
            before = False
        if before:
            return 1
    return min_image_size(model)


def check_same_inputs(run_dir: Path, data_fingerprint: str, space: Mapping[str, Any], architecture: str = "",
                      weights_digest: str = "") -> None:
    """A RunError when the run in ``run_dir`` started on other training images, another search space, another
    model or other weights: a folder's files, a space file, a model callable of the same name or a weights file
    changed since, which their names alone do not show. Runs written before one was recorded pass its check."""
    stored = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    started_from = stored.get("weights_digest")
    if started_from and weights_digest and same_formula(started_from, weights_digest) and started_from != weights_digest:
        path = str((stored.get("search") or {}).get("weights", ""))
        raise RunError(lambda say: f"{say('resume', run_dir)}: {say('weights', path)} holds other weights than the "
                       f"run started from (digest {weights_digest}, stored {started_from}): the file changed since; "
                       f"restore it to continue the run, or start a new run with another {say('out')}")
    kept = stored.get("data_fingerprint")
    if kept is not None and kept != data_fingerprint:
        raise RunError(lambda say: f"{say('resume', run_dir)}: the training images differ from those the run started "
                       f"on (fingerprint {data_fingerprint}, stored {kept}): their files changed since, or the run's "
                       f"{CONFIG_FILE} was edited (its data set, {say('image_size')}, {say('train_size')} and, with "
                       f"a {say('train_size')}, {say('seed')} choose them); start a new run with another {say('out')}")
    # after the images, which build the model's first and last layers: a changed folder is named as such
    built = stored.get("architecture")
    if built and architecture and same_formula(built, architecture) and built != architecture:
        model = str((stored.get("search") or {}).get("model", ""))
        remedy = ("give the run's own model to continue it" if is_callable_model(model) else
                  "the installed library builds it otherwise than the one that ran it did (config.json's software "
                  "names those versions): install them to continue it")
        raise RunError(lambda say: f"{say('resume', run_dir)}: {model_ref(model, say)} builds another "
                       f"network than the one the run started with (its layers or their shapes differ: "
                       f"{architecture}, stored {built}); {remedy}, or start a new run with another {say('out')}")
    if stored.get("space") is None:
        return
    kept_space, now = _searched_space(stored["space"]), _searched_space(space)
    if kept_space != now:
        differ = [key for key in {**kept_space, **now} if kept_space.get(key) != now.get(key)]
        name = stored.get("resolved_space") or kept_space.get("name")
        remedy = ("restore the file" if is_space_path(str(name)) else
                  "the installed policysearch ships it changed; install the version that ran it again")
        raise RunError(lambda say: f"{say('resume', run_dir)}: the search space {name} differs from the one the run "
                       f"started with ({', '.join(differ)} changed); {remedy}, or start a new run with another "
                       f"{say('out')}")


def _searched_space(space: Mapping[str, Any]) -> dict[str, Any]:
    """What of ``SearchSpace.to_dict()`` decides the trials: every key but the description, as JSON holds it, with
    the ops as an ordered list (an op's place is its index in the optimiser's choice, so an order matters)."""
    plain = json.loads(json.dumps({k: v for k, v in space.items() if k != "description"}))
    plain["ops"] = list(map(list, plain.get("ops", {}).items()))
    return plain
