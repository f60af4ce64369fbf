"""A real multi-node Ray cluster on this machine, for tests and benchmarks (not part of the package).

:func:`loopback_cluster` runs ``ray start --head`` and ``ray start --address`` (one CPU per node, no
dashboard) in a private temporary folder, and when it ends kills every process either started - found
by that folder in their command lines, by the pids recorded when each node started, and their
descendants - by process id, whether the code inside failed or not. ``ray stop`` would stop every Ray
of this user on the machine, and leaves processes of a killed session behind.

A module to import, not a command (running it does nothing). The tests give the nodes and the search the
environment ``RAY_AUTH_MODE=disabled``: Ray 2.60 turns token authentication on for a cluster that a driver
starts, and a driver and its nodes must agree on it (or share a token).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

RAY_BIN = Path(sys.executable).with_name("ray")

__all__ = ["Cluster", "free_port", "kill", "loopback_cluster", "processes", "with_descendants"]


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def processes() -> dict[int, tuple[int, str]]:
    """Every process of this machine: pid -> (parent pid, command line)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # it ended meanwhile
        out[int(entry.name)] = (ppid, command)
    return out


def with_descendants(roots: set[int]) -> set[int]:
    """``roots`` that still run, and every process below them."""
    procs = processes()
    found = {pid for pid in roots if pid in procs}
    while True:
        children = {pid for pid, (ppid, _) in procs.items() if ppid in found} - found
        if not children:
            return found
        found |= children


def kill(pids: set[int]) -> None:
    """SIGKILL each of ``pids`` that still runs."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class Cluster:
    """A head and worker nodes on loopback, with the processes each node's ``ray start`` left running."""

    address: str
    temp_dir: str
    head_pids: set[int] = field(default_factory=set)
    worker_pids: list[set[int]] = field(default_factory=list)
    head_node_id: str = ""
    worker_node_ids: list[str] = field(default_factory=list)  # Ray node ids, read when the nodes started

    def started_by_it(self) -> set[int]:
        """Every process of the cluster now: those its folder names, those recorded, and their descendants."""
        named = {pid for pid, (_, command) in processes().items() if self.temp_dir in command}
        return with_descendants(named | self.head_pids | set().union(*self.worker_pids))

    def kill_worker(self, index: int = 0) -> None:
        """Kill a worker node: its raylet, its agents, its trial workers and its log monitor."""
        kill(with_descendants(self.worker_pids[index]))


def _node_id(pids: set[int]) -> str:
    """The Ray node id of the node whose ``ray start`` left ``pids`` (its raylet's ``--node_id``)."""
    raylets = [command for pid, (_, command) in processes().items() if pid in pids and "raylet/raylet" in command]
    if len(raylets) != 1:
        raise RuntimeError(f"expected one raylet among {sorted(pids)}, found {len(raylets)}")
    return raylets[0].split("--node_id=")[1].split()[0]


def _ray_start(args: list[str], temp_dir: str, env: Mapping[str, str]) -> set[int]:
    before = set(processes())
    subprocess.run([str(RAY_BIN), "start", *args, "--num-cpus=1", f"--temp-dir={temp_dir}",
                    f"--dashboard-agent-listen-port={free_port()}", "--disable-usage-stats"],
                   env=dict(env), check=True, capture_output=True, timeout=300)
    return {pid for pid, (_, command) in processes().items() if pid not in before and temp_dir in command}


@contextlib.contextmanager
def loopback_cluster(workers: int, env: Mapping[str, str]) -> Iterator[Cluster]:
    """A head and ``workers`` worker nodes, one CPU each, started with ``env`` (their trials inherit it);
    every process they started is killed by id on the way out."""
    temp_dir = tempfile.mkdtemp(prefix="ps-ray-", dir="/tmp")  # short: Ray's socket paths live under it
    port = free_port()
    cluster = Cluster(f"127.0.0.1:{port}", temp_dir)
    try:
        cluster.head_pids = _ray_start(["--head", f"--port={port}", "--include-dashboard=false"], temp_dir, env)
        cluster.head_node_id = _node_id(cluster.head_pids)
        for _ in range(workers):
            cluster.worker_pids.append(_ray_start([f"--address={cluster.address}"], temp_dir, env))
            cluster.worker_node_ids.append(_node_id(cluster.worker_pids[-1]))
        yield cluster
    finally:
        kill(cluster.started_by_it())
        shutil.rmtree(temp_dir, ignore_errors=True)
