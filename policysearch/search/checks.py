"""Checks before work, and the rule for when failed trials stop a search. Ray is not imported here.

:func:`check_resources` says in one line why the resources cannot run one trial (no GPU for
``--gpus-per-trial``, fewer CPUs on any node than ``--cpus-per-trial``). It runs on this machine's
counts before a local Ray starts, and on the nodes Ray reports once connected, before any trial.

:func:`check_failures` is the stopping rule: a phase whose trials failed (after their retries) more
than half the time stops the search, as does a phase left with nothing usable; otherwise the failures
are recorded and the search goes on with the rest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from policysearch.search.config import SearchConfig
from policysearch.wording import WordedError, counted

__all__ = ["NO_RESULT", "ResourceError", "SearchFailed", "check_failures", "check_resources", "local_cpus", "local_gpus"]


class ResourceError(WordedError):
    """The resources cannot run one trial as configured (the settings named as the CLI or the API does)."""


class SearchFailed(RuntimeError):
    """Too many trials of a phase failed for the search to mean anything."""


def local_cpus() -> float:
    """CPUs this process may use: its CPU affinity, capped by a cgroup CPU quota (as in a container)."""
    count = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
    for path, parse in ((Path("/sys/fs/cgroup/cpu.max"), _cgroup2_quota),
                        (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), _cgroup1_quota)):
        try:
            quota = parse(path)
        except (OSError, ValueError):
            continue
        if quota is not None:
            count = min(count, quota)
    return count


def _cgroup2_quota(path: Path) -> float | None:
    quota, period = path.read_text().split()[:2]
    return None if quota == "max" else int(quota) / int(period)


def _cgroup1_quota(path: Path) -> float | None:
    quota = int(path.read_text())
    period = int((path.parent / "cpu.cfs_period_us").read_text())
    return None if quota <= 0 else quota / period


def local_gpus() -> int:
    """GPUs torch can use on this machine (what a local Ray is told it has)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_resources(config: SearchConfig, nodes: Sequence[Mapping[str, float]], where: str,
                    cluster: bool = False) -> None:
    """Raise a ResourceError unless some node in ``nodes`` ({"CPU": n, "GPU": m}) can hold one trial. On a
    ``cluster`` the nodes are those up now: the message says to wait for an autoscaler's workers."""
    cpu, gpu = config.cpus_per_trial, config.gpus_per_trial
    wait = ("; on an autoscaling cluster, submit the search once `ray status` shows a worker node that can hold "
            "one (docker/cluster.yaml keeps one up)" if cluster else "")
    if gpu > 0 and not any(node.get("GPU", 0) > 0 for node in nodes):
        asked = int(gpu) if float(gpu).is_integer() else gpu  # 1, not 1.0, as typed
        raise ResourceError(lambda say: f"{say('gpus_per_trial', asked)}, but {where} has no GPU (Ray sees none); use "
                            f"{say('gpus_per_trial', 0)} or a machine or cluster with a GPU{wait}")
    if any(node.get("CPU", 0) + 1e-9 >= cpu and node.get("GPU", 0) + 1e-9 >= gpu for node in nodes):
        return
    most_cpu = max((node.get("CPU", 0) for node in nodes), default=0)
    most_gpu = max((node.get("GPU", 0) for node in nodes), default=0)
    raise ResourceError(lambda say: f"one trial needs {counted(cpu, 'CPU')} and {counted(gpu, 'GPU')} "
                        f"({say('cpus_per_trial')}, {say('gpus_per_trial')}), but the largest node of {where} has "
                        f"{counted(most_cpu, 'CPU')} and {counted(most_gpu, 'GPU')}{wait}")


# The error of a trial the runner kept as finished though it never reported a result (Tune can restore one a
# Ctrl-C stopped so): not a failure of the trial's own, so it does not count towards a phase's failures.
NO_RESULT = "stopped without reporting a result, and kept as finished by the runner"


def check_failures(phase: str, total: int, failed: Sequence[str], usable: int) -> None:
    """Stop the search when more than half of ``total`` trials failed or nothing ``usable`` is left.

    ``failed`` holds one line per failed trial (what failed and why); the error names the first. Trials that
    only lack a result after a stop (:data:`NO_RESULT`) are not counted: a stop
    is no reason to end a run that a resume could not continue.
    """
    own = [line for line in failed if not line.endswith(NO_RESULT)]
    if total and usable < 1 and failed and not own:
        raise SearchFailed(f"{phase}: no usable result: {len(failed)} of its {total} trials were stopped without "
                           "one, and Tune keeps them as finished, so a resume cannot run them again")
    if total and (2 * len(own) > total or usable < 1):
        raise SearchFailed(f"{phase}: {len(failed)} of {total} trials failed after their retries, so the search "
                           f"stops (it goes on while at most half of a phase's trials fail and one result is "
                           f"usable); first: {failed[0] if failed else '-'}")

