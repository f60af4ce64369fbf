"""The Ray/Tune adapter: start or join Ray, check the cluster, and run the phases' trials as Tune experiments.

With :mod:`~policysearch.search.searcher`, the only code of the package that imports Ray. :class:`RayRunner`
implements the trial-runner interface of :mod:`~policysearch.search.runner` for the phases of
:mod:`~policysearch.search.phases`: each batch of trials is one Tune experiment under
``<storage>/<run id>/<name>``, which a resume continues; a trial that keeps failing after ``--retries``
retries is recorded as failed. A local Ray is this search's alone: its processes carry a mark
(:mod:`~policysearch.search.reaper`) and end with the search, and a watchdog ends them when the driver is
killed; a joined cluster (``--address``) is left as it was. Ctrl-C goes through Tune's graceful stop
(:mod:`~policysearch.search.interrupts`); every finished trial is kept for ``--resume``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import functools
import importlib
import json
import logging
import math
import os
import pickle
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, Sequence, TextIO

import pyarrow.fs
import ray
from ray import tune
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from policysearch.progress import Progress
from policysearch.training.pretrained import ModelError, model_ref
from policysearch.training.user_data import fingerprint
from policysearch.search.checks import NO_RESULT, ResourceError, check_resources, local_cpus, local_gpus
from policysearch.search.children import CHILD_FILE, CHILD_MODEL_FILE
from policysearch.search.config import SearchConfig, is_uri
from policysearch.search.export import export, finished_on_resume
from policysearch.search.faults import Faults, faults_from_env
from policysearch.search.interrupts import CtrlC, SearchInterrupted, reapply_handlers
from policysearch.search.outcome import SearchResult
from policysearch.search.phases import Stage, count, run_phases
from policysearch.search.prepare import Inputs, Prepared, given_in_python, prepare
from policysearch.search.reaper import RUN_ENV, Watchdog, end_marked, scratch_prefix
from policysearch.search.rundir import Run, RunError, check_same_inputs, held_run, least_side, write_config
from policysearch.search.runner import Streams, TrialContext, TrialFunction, TrialResult, Trials
from policysearch.search.searcher import SplitSearcher
from policysearch.search.spaces import SearchSpace
from policysearch.wording import first_line

__all__ = ["LocalRay", "Progress", "RayRunner", "checkpoint_kept", "object_store_bytes", "ray_init_kwargs",
           "run_experiment", "run_search", "start_ray", "verify_shared_storage"]

SENTINEL_TIMEOUT_S = 120
ADDRESS_TIMEOUT_S = 10
OBJECT_STORE_FLOOR = 128 * 1024 * 1024
OBJECT_STORE_MARGIN = 64 * 1024 * 1024
# Storage traffic: on a local or mounted path every epoch's training state and the experiment state every
# second cost little; on a URI (s3://, gs://) each is an upload, so a child keeps about this many
# checkpoints over its training and the experiment state is saved and uploaded once a minute.
URI_CHECKPOINTS_PER_CHILD = 10
URI_STATE_PERIOD_S = 60


# ---------------------------------------------------------------------------------------------- Ray


def state_period_s(config: SearchConfig) -> str:
    """How often Tune saves the experiment state (its finished trials): a user's TUNE_GLOBAL_CHECKPOINT_S, else
    every second, or URI_STATE_PERIOD_S on a URI storage."""
    default = str(URI_STATE_PERIOD_S) if is_uri(config.storage or "") else "1"
    return os.environ.get("TUNE_GLOBAL_CHECKPOINT_S", default)


def _quiet_ray_environment(config: SearchConfig) -> None:
    # Read by Ray and Tune when they start; set before ray.init so the local Ray's workers inherit them (on a
    # joined cluster they reach the driver only: what matters of them, TUNE_*, is read there).
    state_period = state_period_s(config)
    for key, value in {"RAY_USAGE_STATS_ENABLED": "0", "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
                       "RAY_AIR_NEW_OUTPUT": "0", "RAY_DEDUP_LOGS": "0",
                       # keeping one checkpoint per child forces a state snapshot per epoch; that is intended
                       "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
                       # Tune's default saves the experiment state (finished trials, the searcher) every 10 s
                       # or more, so a killed search would lose that much finished work; 1 s bounds it on a
                       # local storage, URI_STATE_PERIOD_S on a URI (where each save is an upload).
                       "TUNE_GLOBAL_CHECKPOINT_S": state_period,
                       # a failed attempt is one progress line and one line of report.md, not Tune's traceback of
                       # 40 lines per attempt on stderr; the trial's error.txt keeps the whole of it
                       "TUNE_PRINT_ALL_TRIAL_ERRORS": "0"}.items():
        os.environ.setdefault(key, value)


def object_store_bytes(data_bytes: int, memory_bytes: int | None = None) -> int:
    """The object store of a local Ray for a search whose data takes ``data_bytes``: the data (put once
    and shared by every phase) and a quarter more, plus a margin for the phases' small objects; at least
    OBJECT_STORE_FLOOR and at most half of the machine's memory."""
    if memory_bytes is None:
        memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    wanted = max(OBJECT_STORE_FLOOR, data_bytes + data_bytes // 4 + OBJECT_STORE_MARGIN)
    return int(min(wanted, max(OBJECT_STORE_FLOOR, memory_bytes // 2)))


def prepared_bytes(prepared: Prepared) -> int:
    """The bytes of a search's images, labels and ``--weights`` checkpoint (what the object store holds for it)."""
    tensors = [prepared.data.images, prepared.data.labels, *(prepared.weights_state or {}).values()]
    return sum(t.element_size() * t.nelement() for t in tensors)


def ray_init_kwargs(config: SearchConfig, data_bytes: int = 0) -> dict[str, Any]:
    """The ``ray.init`` arguments for ``config``: join ``--address``, or a fresh local Ray.

    A local Ray counts its CPUs itself (it knows container limits), gets an object store sized for
    ``data_bytes`` (:func:`object_store_bytes`); the dashboard is off unless ``--dashboard``, and then
    listens on 127.0.0.1 only.
    """
    if config.address:
        return {"address": config.address, "log_to_driver": False, "configure_logging": False}
    return {"address": "local", "num_gpus": local_gpus(), "include_dashboard": config.dashboard,
            "dashboard_host": "127.0.0.1", "log_to_driver": False,
            "object_store_memory": object_store_bytes(data_bytes), "configure_logging": False}


def check_dashboard(config: SearchConfig) -> None:
    """A ResourceError in one line when ``--dashboard`` asks a new local Ray for its dashboard and the packages
    it needs (``ray[default]``; the ``search`` extra installs ``ray[tune]``) are missing: Ray would fail as it
    starts, with its own advice and a traceback."""
    if not config.dashboard or config.address or ray.is_initialized():
        return
    try:
        importlib.import_module("ray.dashboard.optional_deps")  # what Ray imports to tell whether it can start one
    except ImportError as exc:
        missing = str(exc)
        raise ResourceError(lambda say: f"{say('dashboard')} needs Ray's dashboard packages, which this Python "
                            f"lacks ({missing}): install them with pip install 'ray[default]=={ray.__version__}', "
                            f"or search without {say('dashboard')}") from None


def check_address(address: str) -> None:
    """A RunError in one line unless a Ray head answers at ``--address HOST:PORT`` (Ray itself would retry
    for minutes). ``auto`` and ``ray://`` addresses are left to Ray."""
    if address == "auto" or address.startswith("ray://"):
        return
    if address.startswith(("http://", "https://")):
        raise RunError(lambda say: f"{say('address', address)}: a URL is the address of Ray's job server (what `ray job "
                       "submit --address` takes); give the head node's HOST:PORT as `ray start --head` printed it "
                       "(port 6379 unless it was given another), or auto inside the cluster")
    host, colon, port = address.rpartition(":")
    if not colon or not host or not port.isdigit():
        raise RunError(lambda say: f"{say('address', address)}: not HOST:PORT (e.g. 10.0.0.1:6379) or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=ADDRESS_TIMEOUT_S).close()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise RunError(lambda say: f"{say('address', address)}: no Ray cluster answers there ({reason}); give the "
                       "head node's address and port as `ray start --head` printed them") from None
    check_auth(address)


def check_auth(address: str) -> None:
    """A RunError in one line when the Ray head at ``address`` refuses this process: token authentication
    (``RAY_AUTH_MODE=token`` on the cluster) with no token here or another one. ``ray.init`` would retry for
    20 s, log every attempt and then report only a failed connection. Something that answers there but is
    not a Ray head is named too."""
    from ray._raylet import AuthenticationTokenLoader, GcsClient  # what Ray's own CLI uses to reach a head
    from ray.exceptions import AuthenticationError, RayError

    mode = os.environ.get("RAY_AUTH_MODE", "")
    if mode.lower() == "token":  # without a token Ray's native client aborts the process, so look first
        try:
            found = AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True)
        except AuthenticationError as exc:  # e.g. RAY_AUTH_TOKEN_PATH names a file that cannot be read
            reason = str(exc).split('. ')[0]
            raise RunError(lambda say: f"{say('address', address)}: {reason}") from None
        if not found:
            raise RunError(lambda say: f"{say('address', address)}: RAY_AUTH_MODE is token but this process has no "
                           "token; set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, or write it to ~/.ray/auth_token") from None
    try:
        with _native_stderr_silenced():  # Ray's C++ client logs each refused attempt there
            GcsClient(address=address)
    except AuthenticationError:
        if mode.lower() != "token":
            shown = f"is {mode!r}" if mode else "is not set"
            raise RunError(lambda say: f"{say('address', address)}: the cluster uses token authentication and this "
                           f"process sends no token (RAY_AUTH_MODE {shown}); set RAY_AUTH_MODE=token, with the "
                           "cluster's token in ~/.ray/auth_token or in RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH") from None
        raise RunError(lambda say: f"{say('address', address)}: the cluster refused this process's auth token, which "
                       "is not the one its nodes were started with; set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH to that "
                       "token") from None
    except RayError as exc:
        reason = str(exc).strip()
        raise RunError(lambda say: f"{say('address', address)}: something answers there but no Ray head ({reason}); "
                       "give the head node's address and port as `ray start --head` printed them") from None


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 points at /dev/null inside the block (native code writes there, not to sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class LocalRay:
    """A local Ray this process started: every process of it carries the mark ``RUN_ENV=token``, and a
    watchdog ends them if this process is killed. :meth:`stop` ends it and every process it started."""

    def __init__(self) -> None:
        self.token = uuid.uuid4().hex
        self.watchdog = Watchdog(self.token)  # first: it must exist as soon as any Ray process does

    def stop(self) -> None:
        """Shut Ray down, end whatever of it is left (Ray's agents can outlive ``ray.shutdown``), close the
        watchdog."""
        try:
            if ray.is_initialized():
                ray.shutdown()
                reapply_handlers()  # Ray's shutdown reset SIGTERM's action behind Python's back
        finally:
            end_marked(self.token)
            self.watchdog.close()


@contextlib.contextmanager
def _environment(key: str, value: str) -> Iterator[None]:
    """``key=value`` in this process's environment inside the block only (what processes started there inherit)."""
    saved = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


def start_ray(config: SearchConfig, data_bytes: int = 0) -> LocalRay | None:
    """Join ``--address`` or start a local Ray; the :class:`LocalRay` when this process started it (and must
    stop it), None when it joined a cluster or found a Ray this process already runs (used as it is)."""
    _quiet_ray_environment(config)
    if ray.is_initialized():
        return None
    if not config.address:
        local = LocalRay()
        try:
            # The mark is inherited by every process Ray starts, workers too. Ray's processes set their titles
            # with setproctitle, which by default reuses the memory of the environment, and then the mark can no
            # longer be read in /proc; setproctitle's SPT_NOENV keeps the environment as it is.
            with _environment(RUN_ENV, local.token), _environment("SPT_NOENV", "1"):
                ray.init(**ray_init_kwargs(config, data_bytes))
        except BaseException as exc:  # a failed start or a Ctrl-C during it: nothing of it stays
            local.stop()
            folder = _token_folder() if isinstance(exc, OSError) and exc.filename else None
            failed = Path(os.fsdecode(exc.filename)) if folder is not None else None
            # the token's folder, or a missing home above it that mkdir(parents=True) tried to make
            if failed is not None and (failed.is_relative_to(folder) or folder.is_relative_to(failed)):
                reason = exc.strerror or str(exc)
                raise RunError(f"Ray could not write the auth token it keeps in {folder} ({reason}): set HOME to a "
                               "folder this user can write (in Docker: -e HOME=/tmp), or RAY_AUTH_TOKEN_PATH to an "
                               "existing token file") from None
            raise
        return local
    check_address(config.address)
    try:
        ray.init(**ray_init_kwargs(config, data_bytes))
    except ConnectionError as exc:  # e.g. --address auto with no cluster on this machine
        reason = str(exc).strip().splitlines()[0] if config.address != "auto" else (
            "no Ray cluster runs on this machine; start one with `ray start --head`, or give the head node's "
            "HOST:PORT as `ray start --head` printed it")
        raise RunError(lambda say: f"{say('address', config.address)}: {reason}") from None
    except RuntimeError as exc:
        if "No node info found" not in str(exc):
            raise
        # Ray's driver attaches to a node of the cluster running on its own machine, and waits a minute for one
        said = first_line(exc)
        raise RunError(lambda say: f"{say('address', config.address)}: the head answers, but Ray found no node of its "
                       f"cluster on this machine ({socket.gethostname()}) to attach to ({said}), and a search joins a "
                       "cluster from one of its nodes: run it on the head or a worker, submit it with `ray job "
                       f"submit`, or make this machine a node first (`ray start --address {config.address}`; where "
                       "it is one already, RAY_NODE_IP_ADDRESS names the address it has in the cluster)") from None
    return None


def _token_folder() -> Path | None:
    """The folder where a local Ray writes the auth token it makes, ``~/.ray`` (``RAY_AUTH_TOKEN_PATH`` is only
    read); None where the user has no home."""
    try:
        return Path.home() / ".ray"
    except RuntimeError:  # no HOME and a uid without a passwd entry
        return None


def cluster_nodes() -> list[dict[str, float]]:
    """CPU and GPU count of every alive node."""
    return [{"CPU": node["Resources"].get("CPU", 0.0), "GPU": node["Resources"].get("GPU", 0.0)}
            for node in ray.nodes() if node.get("Alive")]


@ray.remote(num_cpus=0)
def _reads_sentinel(path: str, token: str) -> bool:
    try:
        return Path(path).read_text(encoding="utf-8") == token
    except OSError:
        return False


def nodes_without(path: str, token: str) -> list[str]:
    """The addresses of the alive nodes on which ``path`` does not hold ``token``."""
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    checks = [_reads_sentinel.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
              .remote(path, token) for node in nodes]
    try:
        seen = ray.get(checks, timeout=SENTINEL_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        raise RunError(f"could not check within {SENTINEL_TIMEOUT_S} s that every node sees {path}") from None
    return [node.get("NodeManagerAddress", node["NodeID"]) for node, ok in zip(nodes, seen) if not ok]


def verify_shared_storage(storage: str) -> None:
    """Check that a local ``--storage`` path is the same folder on every node: the driver writes a
    sentinel file there and a task on each node reads it back."""
    folder = Path(storage.removeprefix("file://"))
    folder.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    sentinel = folder / f".policysearch-shared-{token}"
    sentinel.write_text(token, encoding="utf-8")
    try:
        missing = nodes_without(str(sentinel), token)
    finally:
        sentinel.unlink(missing_ok=True)
    if missing:
        raise RunError(lambda say: f"{say('storage', storage)} is not shared: node(s) {', '.join(missing)} cannot see "
                       "the file the driver wrote there; give a path mounted on every node or a URI (e.g. s3://...)")


def pickled_builder(prepared: Prepared) -> bytes | None:
    """The model callable as Ray sends it (cloudpickle), checked before Ray starts; None without one."""
    if prepared.builder is None:
        return None
    try:
        return ray.cloudpickle.dumps(prepared.builder)
    except Exception as exc:  # whatever the user's object raises when pickled
        reason = first_line(exc, 200)
        raise ModelError(f"{model_ref(prepared.config.model)} cannot be sent to Ray's workers: cloudpickle cannot "
                         f"pickle it ({type(exc).__name__}: {reason}); build everything inside the function, or "
                         "leave out what it refers to that cannot be pickled (locks, open files, ...)") from None


@ray.remote(num_cpus=0)
def _load_error(payload: bytes) -> str:
    try:
        ray.cloudpickle.loads(payload)
    except Exception as exc:  # what a trial on this node would meet, as one line
        return f"{type(exc).__name__}: {first_line(exc, 200)}"
    return ""


def check_workers_load(payload: bytes, model: str) -> None:
    """A ValueError in one line unless a worker on every alive node can load the pickled model callable (its
    module must be importable there), checked before any trial."""
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    on_node = [NodeAffinitySchedulingStrategy(node["NodeID"], soft=False) for node in nodes]
    try:
        errors = ray.get([_load_error.options(scheduling_strategy=strategy).remote(payload) for strategy in on_node],
                         timeout=SENTINEL_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        what = model_ref(model)
        raise RunError(f"could not check within {SENTINEL_TIMEOUT_S} s that every node can load {what}") from None
    failed = [(node.get("NodeManagerAddress", node["NodeID"]), error) for node, error in zip(nodes, errors) if error]
    if failed:
        where, error = failed[0]
        raise ModelError(f"{model_ref(model)} cannot be loaded by Ray's workers (node {where}: {error}); define it "
                         "in the script you run, in a module on the workers' path (the working directory, "
                         "PYTHONPATH) or in an installed package")


# ------------------------------------------------------------------------------------------ progress


@dataclasses.dataclass
class _Live:
    """What the experiment running in this driver reports to: its progress, the Ctrl-C handling and a hook
    called after each finished trial (the cost ledger)."""

    progress: Progress
    ctrl_c: CtrlC | None = None
    on_trial: Callable[[], None] | None = None


class _ProgressCallback(tune.Callback):
    """Hands each finished trial of one experiment to this driver's :class:`_Live`.

    Tune pickles its callbacks with the experiment; the live state (a stream, locks, a hook) stays out of
    that copy, and a restored experiment is given this process's own callback (:func:`_restored_tuner`)."""

    def __init__(self, live: _Live) -> None:
        self.live: _Live | None = live

    def __getstate__(self) -> dict[str, Any]:
        return {"live": None}

    def setup(self, **info) -> None:  # Tune's SIGINT handler is in place by now
        if self.live is not None and self.live.ctrl_c is not None:
            self.live.ctrl_c.tune_started()

    def _finished(self, result: dict[str, Any], error: str | None = None) -> None:
        if self.live is None:
            return
        self.live.progress.trial_finished(result, error=error)
        if self.live.on_trial is not None:
            self.live.on_trial()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._finished(trial.last_result or {})

    def on_trial_error(self, iteration, trials, trial, **info) -> None:  # called once its retries are spent
        self._finished({}, error=_error_line(Path(trial.error_file)) if trial.error_file else "error")


class _QuietInterrupt(logging.Filter):
    """Drops Tune's own lines about a Ctrl-C (its advice to call ``Tuner.restore``, the list of unfinished
    trials, the trials stopped before their first result): the search says in one line what is kept and
    how to continue. Also its warnings that an operation of its own was slow ("consider reporting results
    less frequently"): a trial reports once, and on a busy machine the advice is noise a user cannot act on."""

    LINES = ("Stop signal received", "Experiment has been interrupted", "Training has been interrupted",
             "Trials did not complete", "Failed to fetch metrics for")
    SLOW = "which may be a performance bottleneck"
    LOGGERS = ("ray.tune.tune", "ray.tune.analysis.experiment_analysis", "ray.tune.utils.util")

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not message.startswith(self.LINES) and self.SLOW not in message


@contextlib.contextmanager
def _tune_interrupt_quiet() -> Iterator[None]:
    quiet = _QuietInterrupt()
    loggers = [logging.getLogger(name) for name in quiet.LOGGERS]
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)


def _already(results, metric: str | None) -> tuple[int, float | None]:
    """How many trials of a restored experiment had finished (or failed for good), and their best ``metric``."""
    finished = results.num_terminated + results.num_errors
    values = [float(r.metrics[metric]) for r in results
              if metric and r.error is None and r.metrics and metric in r.metrics]
    return finished, max(values, default=None)


def _error_line(error: Any) -> str:
    """One line for a trial's error: the exception type and message that the trial raised."""
    if isinstance(error, Path):
        try:
            error = error.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "unknown error"
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}".splitlines()[0]
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    errors = [line for line in lines if ("Error" in line.split(":")[0] or "Exception" in line.split(":")[0])]
    return (errors or lines or ["unknown error"])[-1][:500]


# ---------------------------------------------------------------------------------------- experiments


def _trial_dirname(trial) -> str:
    return trial.trial_id


def trial_id(result: tune.Result) -> str:
    """The Tune trial id of a result (its folder name, also for a trial that never reported)."""
    return Path(result.path).name


def _concurrency(config: SearchConfig) -> int:
    if config.max_concurrent:
        return config.max_concurrent
    available = ray.cluster_resources()
    slots = available.get("CPU", 1) / config.cpus_per_trial
    if config.gpus_per_trial > 0:
        slots = min(slots, available.get("GPU", 0) / config.gpus_per_trial)
    return max(1, int(slots))


def _resources(config: SearchConfig) -> dict[str, float]:
    return {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial}


def _restored_tuner(path: str, trainable: Callable, param_space: dict, callback: _ProgressCallback,
                    progress: Progress) -> tune.Tuner:
    """The experiment at ``path``, continued with ``callback`` in place of the ones pickled with it (Tune offers
    no argument for them; the restored run config is the Tuner's own, reached through its local tuner), and
    ``progress`` started from the trials it finished before. Tune's lines about the trials a Ctrl-C stopped
    before their first result, which it logs while restoring and reading results, are dropped."""
    with _tune_interrupt_quiet():
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=False,
                                   param_space=param_space)
        progress.resumed(*_already(tuner.get_results(), progress.metric))
    tuner._local_tuner.get_run_config().callbacks = [callback]
    return tuner


# A run's experiments in the order they run: each uses what the ones before it found.
_EXPERIMENTS = ("phase1_children", "phase2_policies", "phase3_selection", "phase3_selection_rest")
_REPEAT = "phase3_selection_repeat"  # + the repeat's number, after all of _EXPERIMENTS


def _experiment_order(name: str) -> tuple[int, int] | None:
    """Where the experiment ``name`` comes in a run (None: no experiment of a run)."""
    if name in _EXPERIMENTS:
        return _EXPERIMENTS.index(name), 0
    number = name.removeprefix(_REPEAT)
    return (len(_EXPERIMENTS), int(number)) if name.startswith(_REPEAT) and number.isdigit() else None


def _unreadable_experiment(experiments: str, name: str, error: Exception) -> RunError:
    """The RunError of a continued experiment whose saved state Tune cannot read back: which, why, and what
    runs it again (that experiment and those after it, which used what it found)."""
    if not isinstance(error, OSError) and not is_uri(experiments):
        # Tune reports an experiment_state it could not read, for whatever reason, as "not run": read the one
        # Tune reads (the newest by name) here, listing included
        folder = Path(experiments, name)
        try:
            states = sorted(fnmatch.filter(os.listdir(folder), "experiment_state-*.json"))
            for state in states[-1:]:
                (folder / state).read_bytes()
        except FileNotFoundError:
            pass  # no folder: nothing of the experiment to read
        except OSError as exc:
            error = exc
    if isinstance(error, OSError):  # the storage itself (access, a network): nothing to delete
        why = error.strerror or first_line(error)
        return RunError(lambda say: f"{experiments}/{name}: Tune cannot read the saved state of this experiment "
                        f"({why}); make the storage readable and resume again")
    here = _experiment_order(name) or (len(_EXPERIMENTS), 0)
    later = [*_EXPERIMENTS[here[0] + 1:], f"{_REPEAT}N"]  # every experiment that can come after it
    if not is_uri(experiments):
        with contextlib.suppress(OSError):  # those that exist, where the folder can be listed
            found = [(order, entry.name) for entry in Path(experiments).iterdir()
                     if (order := _experiment_order(entry.name)) is not None and order > here and entry.is_dir()]
            later = [n for _, n in sorted(found)]
    also = f" and those after it ({', '.join(later)})" if later else ""
    storage = (" If the storage could not be read just then, resume again once it can; else, to run it again,"
               if is_uri(experiments) else " To run it again,")
    return RunError(lambda say: f"{experiments}/{name}: Tune cannot read back the saved state of this experiment "
                    f"(its experiment_state or tuner.pkl file was cut short or changed).{storage} delete that folder"
                    f"{also} and resume (the phases before it are kept), or start a new run with another {say('out')}")


def run_experiment(name: str, trainable: Callable, param_space: dict, tune_config: tune.TuneConfig,
                   config: SearchConfig, experiments: str, progress: Progress, *, ctrl_c: CtrlC | None = None,
                   on_trial: Callable[[], None] | None = None) -> tuple[list, list]:
    """Run (or continue) the Tune experiment ``<experiments>/<name>`` of ``progress.total`` trials; returns
    (succeeded, failed) results.

    A trial is retried ``config.retries`` times before it counts as failed; a continued experiment
    keeps its failed trials as they were, and its progress starts from the trials finished before.
    ``on_trial`` is called after each finished trial. When a Ctrl-C stopped the experiment (Tune saved its
    state and returned with trials unfinished), :class:`SearchInterrupted` is raised.

    The progress counts the finished trials: the restored ones and those Tune's callbacks report here.
    """
    path = f"{experiments}/{name}"
    trainable = tune.with_resources(trainable, _resources(config))
    callback = _ProgressCallback(_Live(progress, ctrl_c, on_trial))
    # A URI storage uploads the experiment state at most once a URI_STATE_PERIOD_S (Tune's default: 300 s).
    sync = tune.SyncConfig(sync_period=URI_STATE_PERIOD_S) if is_uri(experiments) else tune.SyncConfig()
    if tune.Tuner.can_restore(path):
        try:
            tuner = _restored_tuner(path, trainable, param_space, callback, progress)
        except (RuntimeError, EOFError, pickle.UnpicklingError, OSError) as exc:
            # Tune says "has not been run" of an experiment_state it could not read (it swallows why); a cut-short
            # tuner.pkl raises EOFError or UnpicklingError; other errors are not this one
            if isinstance(exc, RuntimeError) and "has not been run" not in str(exc):
                raise
            raise _unreadable_experiment(experiments, name, exc) from None
    else:
        run_config = tune.RunConfig(name=name, storage_path=experiments, verbose=0, sync_config=sync,
                                    callbacks=[callback], checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                    failure_config=tune.FailureConfig(max_failures=config.retries))
        tune_config.trial_dirname_creator = _trial_dirname
        tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)
    interrupted = False
    try:
        # Tune's SIGINT handler makes its last save before fit() returns; a user's TUNE_DISABLE_SIGINT_HANDLER
        # would leave the first Ctrl-C to ours, which cuts Tune's loop short without that save.
        handler_on = (_environment("TUNE_DISABLE_SIGINT_HANDLER", "0")
                      if threading.current_thread() is threading.main_thread() else contextlib.nullcontext())
        with _tune_interrupt_quiet(), handler_on:
            grid = tuner.fit()
        # Tune returns early only when its SIGINT handler stopped it. Its clean-up then marks the stopped trials
        # as terminated in memory (its saved state, written before, keeps them unfinished), so the trials that
        # really finished are those its callbacks reported, and those restored as finished.
        interrupted = progress.done < progress.total
    finally:
        progress.close()
        if ctrl_c is not None:
            ctrl_c.tune_ended(finished=not interrupted)
    if interrupted or (ctrl_c is not None and ctrl_c.stopping):  # also a Ctrl-C once every trial had finished
        raise SearchInterrupted()
    return split_results(list(grid))


def split_results(results: Sequence[Any]) -> tuple[list, list]:
    """Tune's results as (succeeded, failed). A trial with no error that never reported a result (Tune can
    restore one a Ctrl-C stopped as finished) is a failed one: it has no metrics to read."""
    ok = [r for r in results if r.error is None and "training_iteration" in (r.metrics or {})]
    return ok, [r for r in results if not any(r is good for good in ok)]


# ------------------------------------------------------------------------------------ trial wrappers


_SHARED: dict[str, Prepared] = {}  # this worker's copy of the search's inputs, by object id


@dataclasses.dataclass(frozen=True)
class Shared:
    """The search's inputs, put in the object store once and shared by every phase's trials."""

    ref: Any  # ray.ObjectRef of the Prepared (Tune's with_parameters cannot take an ObjectRef itself)

    def get(self) -> Prepared:
        """The Prepared, fetched once per worker process (one entry: a worker serves one search)."""
        key = self.ref.hex()
        if key not in _SHARED:
            _SHARED.clear()
            _SHARED[key] = ray.get(self.ref)
        return _SHARED[key]


def _node_id() -> str:
    return ray.get_runtime_context().get_node_id()


def checkpoint_kept(epoch: int, epochs: int, remote: bool) -> bool:
    """Whether a child's training state after ``epoch`` of ``epochs`` becomes a Tune checkpoint: every
    epoch on a local or mounted storage; on a URI about URI_CHECKPOINTS_PER_CHILD times, and the last."""
    if not remote or epoch >= epochs:
        return True
    return epoch % max(1, math.ceil(epochs / URI_CHECKPOINTS_PER_CHILD)) == 0


def _trainable(trial: dict[str, Any], *, function: TrialFunction, shared: Shared, remote: bool,
               faults: Faults) -> None:
    """One trial of any phase as a Tune function: the phase's plain ``function`` in a folder restored from the
    trial's last checkpoint; each of its save points becomes a checkpoint (:func:`checkpoint_kept`), and
    what it returns is the trial's last report."""
    started = time.perf_counter()
    prepared = shared.get()
    data_seconds = time.perf_counter() - started
    node = _node_id()
    with tempfile.TemporaryDirectory(prefix=scratch_prefix(os.environ.get(RUN_ENV))) as local:
        restored = tune.get_checkpoint()
        spent = 0.0  # training seconds of earlier attempts (a process killed meanwhile), as far as saved
        if restored is not None:
            with restored.as_directory() as folder:
                shutil.copytree(folder, local, dirs_exist_ok=True)
            spent = _spent_seconds(Path(local))

        def report(metrics: dict[str, Any]) -> None:
            metrics = {**metrics, "node_id": node}
            if checkpoint_kept(int(metrics["epoch"]), int(metrics["epochs"]), remote):
                (Path(local) / SPENT_FILE).write_text(json.dumps({"train_seconds": metrics["train_seconds"]}),
                                                      encoding="utf-8")
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(local))
            else:
                tune.report(metrics)

        metrics = function(prepared, trial, TrialContext(Path(local), report, faults.at(node=node), spent))
    if metrics is not None:
        tune.report({**metrics, "node_id": node, "data_seconds": data_seconds})


SPENT_FILE = "spent.json"  # beside a child's checkpoint: its training seconds so far, over every attempt


def _spent_seconds(folder: Path) -> float:
    try:
        return float(json.loads((folder / SPENT_FILE).read_text(encoding="utf-8"))["train_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def fetch_child_model(checkpoint: tune.Checkpoint, folder: Path) -> Path:
    """The model-only file of a phase-1 checkpoint, copied alone into ``folder`` when the checkpoint is
    remote (used in place when it is on a local or mounted path). A checkpoint of an older run, which
    has only the full training state, gives that."""
    fs = checkpoint.filesystem
    for name in (CHILD_MODEL_FILE, CHILD_FILE):
        source = f"{checkpoint.path}/{name}"
        if fs.get_file_info(source).type != pyarrow.fs.FileType.File:
            continue
        if isinstance(fs, pyarrow.fs.LocalFileSystem):
            return Path(source)
        pyarrow.fs.copy_files(source, str(folder / name), source_filesystem=fs,
                              destination_filesystem=pyarrow.fs.LocalFileSystem())
        return folder / name
    raise FileNotFoundError(f"the phase 1 checkpoint {checkpoint.path} holds neither {CHILD_MODEL_FILE} nor "
                            f"{CHILD_FILE}")


class RayRunner:
    """The :class:`~policysearch.search.runner.TrialRunner` on Ray Tune: each phase's trials are one Tune
    experiment under ``<storage>/<run id>/<name>``, continued by a resume; the search's inputs go to the
    object store once, for every phase."""

    def __init__(self, prepared: Prepared, run: Run, faults: Faults, ctrl_c: CtrlC | None = None) -> None:
        self.config, self.experiments, self.faults, self.ctrl_c = prepared.config, run.experiments, faults, ctrl_c
        self.shared = Shared(ray.put(prepared))
        self.remote = is_uri(run.storage)
        self.concurrency = _concurrency(prepared.config)

    def run(self, trials: Trials, progress: Progress, on_trial: Callable[[], None]) -> list[TrialResult]:
        trainable = tune.with_parameters(_trainable, function=trials.function, shared=self.shared,
                                         remote=self.remote, faults=self.faults)
        if isinstance(trials.configs, Streams):
            param_space = tune_space(trials.configs.space)
            # The searcher holds the space, so the Tuner gets none of its own.
            searcher = SplitSearcher(self.config, trials.configs.streams, param_space)
            tune_config = tune.TuneConfig(metric="reward", mode="max", num_samples=trials.total, search_alg=searcher,
                                          max_concurrent_trials=self.concurrency, reuse_actors=True)
            space: dict[str, Any] = {}
        else:
            space = _grid(trials.configs)
            tune_config = tune.TuneConfig(max_concurrent_trials=self.concurrency, reuse_actors=True)
        ok, failed = run_experiment(trials.name, trainable, space, tune_config, self.config,
                                    self.experiments, progress, ctrl_c=self.ctrl_c, on_trial=on_trial)
        return ([TrialResult(dict(r.config), dict(r.metrics), "", trial_id(r), _fetch(r.checkpoint)) for r in ok]
                + [TrialResult(config, {}, NO_RESULT if r.error is None else _error_line(r.error), trial_id(r))
                   for r, config in zip(failed, configs_of(failed))])


def configs_of(results: Sequence[tune.Result]) -> list[dict[str, Any]]:
    """The trials' configs. Tune gives a config with the trial's last result, which a trial that failed before
    its first report can lack (restored by a resume, or its worker lost as it started): its ``params.json``
    has it then, or else the experiment's saved state, where every trial's config is."""
    found = [dict(r.config) if r.config is not None else _saved_params(r) for r in results]
    lost = [r for r, config in zip(results, found) if config is None]
    saved: dict[str, dict[str, Any]] = {}
    if lost:
        experiment = str(PurePosixPath(lost[0].path).parent)
        analysis = tune.ExperimentAnalysis(experiment, storage_filesystem=lost[0].filesystem)
        saved = {PurePosixPath(trial.path).name: dict(trial.config) for trial in analysis.trials}
        missing = [trial_id(r) for r in lost if trial_id(r) not in saved]
        if missing:
            raise RuntimeError(f"trial {missing[0]} of {experiment} failed before its first report, and its config "
                               "is neither in its folder nor in the experiment's saved state")
    return [config if config is not None else saved[trial_id(r)] for r, config in zip(results, found)]


def _saved_params(result: tune.Result) -> dict[str, Any] | None:
    """The config in the trial's ``params.json``, which Tune writes as the trial starts; None without one."""
    try:
        with result.filesystem.open_input_stream(f"{result.path}/params.json") as stream:
            return dict(json.loads(stream.read().decode("utf-8")))
    except (OSError, ValueError):
        return None


def _grid(configs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Tune's grid of ``configs``, which must be every combination of their keys' values (as the phases make them)."""
    values = {key: sorted({c[key] for c in configs}) for key in (configs[0] if configs else {})}
    if math.prod(len(v) for v in values.values()) != len(configs):
        raise ValueError(f"trial configs that are not a grid: {len(configs)} configs over {values}")
    return {key: tune.grid_search(v) for key, v in values.items()}


def _fetch(checkpoint: tune.Checkpoint | None) -> Callable[[Path], Path] | None:
    return None if checkpoint is None else functools.partial(fetch_child_model, checkpoint)


def tune_space(space: SearchSpace) -> dict[str, Any]:
    """The search space's parameters as Ray Tune sampling objects."""
    out: dict[str, Any] = {}
    for p in space.parameters():
        out[p.name] = tune.uniform(p.low, p.high) if p.kind == "uniform" else tune.choice(list(p.values))
    return out


# -------------------------------------------------------------------------------------------- search


def run_search(config: SearchConfig, run_dir: str | Path, *, resume: bool = False,
               stream: TextIO = sys.stdout, inputs: Inputs | None = None,
               stop_text: Callable[[str], str] | None = None) -> SearchResult:
    """Run (or, with ``resume``, continue) a search into ``run_dir``; see :mod:`policysearch.search`.

    A resume of a finished run (its ``policy.json`` written) runs nothing and changes no file: it returns
    what the run found, marked ``already_complete``. A Ctrl-C raises :class:`SearchInterrupted` with the
    line to show (what is kept, the resume command), after this search's local Ray has ended.
    """
    run_dir = Path(run_dir)
    done = finished_on_resume(config, run_dir, resume)
    if done is not None:
        return done
    period = state_period_s(config)
    stage = Stage(run_dir, resume, given_in_python(config), "at most a second" if period == "1" else f"about {period} s")
    with CtrlC(stage.message, stop_text) as ctrl_c:
        try:
            return _search(config, run_dir, resume, stream, stage, ctrl_c, inputs)
        except SearchInterrupted:
            raise stage.interrupted() from None


def _search(config: SearchConfig, run_dir: Path, resume: bool, stream: TextIO, stage: Stage,
            ctrl_c: CtrlC, inputs: Inputs | None = None) -> SearchResult:
    faults = faults_from_env()
    # every input error surfaces here, before Ray starts
    prepared = prepare(config, inputs, new_run=not resume, least_side=least_side(run_dir, config.model, resume))
    check_dashboard(prepared.config)
    builder = pickled_builder(prepared)
    with held_run(config, run_dir, resume=resume) as run:
        return _search_held(prepared, builder, run, resume, stream, stage, ctrl_c, faults)


def _search_held(prepared: Prepared, builder: bytes | None, run: Run, resume: bool, stream: TextIO, stage: Stage,
                 ctrl_c: CtrlC, faults: Faults) -> SearchResult:
    """:func:`_search` with the run folder held."""
    config = prepared.config
    if resume:
        check_same_inputs(run.run_dir, fingerprint(prepared.data), prepared.space.to_dict(), prepared.architecture,
                          prepared.weights_digest)
    joined = ray.is_initialized() or bool(config.address)
    if not joined:
        check_resources(config, [{"CPU": local_cpus(), "GPU": local_gpus()}], "this machine")
    local = None
    if config.address and not ray.is_initialized():  # a head that answers slowly, or is not Ray, takes up to a minute
        print(f"ray: joining the cluster at {config.address}", file=stream, flush=True)
    try:
        with ctrl_c.ray_starting(local=not joined):
            try:
                local = start_ray(config, prepared_bytes(prepared))
            except RunError as exc:
                if not (resume and config.address):
                    raise
                # a cluster's run whose cluster is gone: its finished trials can be finished on this machine
                said = exc.build
                raise RunError(lambda say: f"{said(say)}; or, to finish the run on this machine with what it "
                               f"keeps, resume it with {say('address', '')} (a local Ray)") from None
        nodes = cluster_nodes()
        if joined:
            what = "joined the cluster" if config.address else "using the Ray this process runs"
            print(f"ray: {what} at {ray.get_runtime_context().gcs_address}: {count(len(nodes), 'nodes')}, "
                  f"{sum(n['CPU'] for n in nodes):g} CPUs, {sum(n['GPU'] for n in nodes):g} GPUs", file=stream,
                  flush=True)
        check_resources(config, nodes, "the Ray cluster" if joined else "this machine", cluster=bool(config.address))
        if config.address and not is_uri(run.storage):
            verify_shared_storage(run.storage)
        if builder is not None:
            check_workers_load(builder, config.model)
        if not resume:
            write_config(run, config, fingerprint(prepared.data), prepared.space.to_dict(), prepared.architecture,
                         prepared.weights_digest)
            stage.started = True
        runner = RayRunner(prepared, run, faults, ctrl_c)
        outcome, spans = run_phases(prepared, run, runner, stream, stage, runner.concurrency)
    except SearchInterrupted:
        stage.stop_saved = True  # what finished is written (run_phases saw to it); only Ray's shutdown is left
        raise
    finally:
        if local is not None:
            local.stop()
        ctrl_c.ray_stopped()
    stage.enter("the export (the results are written again on --resume)")
    result = export(prepared, run, outcome, faults)
    result.spans = spans
    return result
