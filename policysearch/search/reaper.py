"""Ending the processes of a local Ray that a search started, however the search ends.

A local search marks its Ray: while ``ray.init`` starts the GCS, the raylet and the helpers, the driver's
environment holds ``POLICYSEARCH_RAY_RUN=<token>``, and every Ray process inherits it (the workers and
agents the raylet starts later too; ``SPT_NOENV=1`` keeps their process titles from overwriting it).
Whatever of that Ray outlives the search - Ray's dashboard and runtime-env agents were seen re-parented to
PID 1 after the driver was killed - is found by the mark in
``/proc/PID/environ`` and ended by :func:`end_marked`: SIGTERM, then SIGKILL for those still alive after a
grace period, each waited for on a pidfd. A joined cluster (``--address``) carries no mark, so its
processes are never touched.

The driver ends them itself when the search ends (success, failure or Ctrl-C). For a driver that is
killed, it starts this file as a watchdog (``python -I reaper.py TOKEN``) in a session of its own: the
watchdog blocks reading a pipe that only the driver holds open, and when the driver is gone, however,
the read returns and the watchdog ends what is marked. Standard library only (the watchdog imports
nothing else); Linux (``/proc`` and pidfds); elsewhere nothing is found.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["RUN_ENV", "Watchdog", "end_marked", "marked_processes", "remove_scratch", "scratch_prefix"]

RUN_ENV = "POLICYSEARCH_RAY_RUN"
SCRATCH_PREFIX = "policysearch-trial-"  # a trial's working folder in the temporary folder
GRACE_S = 3.0  # SIGTERM, then SIGKILL: Ray's agents were seen ignoring SIGTERM for 8 s
KILL_WAIT_S = 10.0


def _mark(token: str) -> bytes:
    return f"{RUN_ENV}={token}".encode()


def marked_processes(token: str) -> list[int]:
    """The processes of this user whose environment carries the mark of ``token`` (not this process)."""
    proc = Path("/proc")
    if not token or not proc.is_dir():
        return []
    mark, found = _mark(token), []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or another user's
            continue
        if mark in environ.split(b"\0"):
            found.append(int(entry.name))
    return sorted(found)


def _open(pids: list[int], token: str) -> dict[int, int]:
    """pid -> pidfd of each of ``pids`` that still runs and still carries the mark (a pidfd names that very
    process, so a pid reused meanwhile is never signalled)."""
    fds = {}
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except (OSError, AttributeError):
            continue
        try:
            marked = _mark(token) in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            marked = False
        if marked:
            fds[pid] = fd
        else:
            os.close(fd)
    return fds


def _signal(fds: dict[int, int], signum: int) -> None:
    for fd in fds.values():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            signal.pidfd_send_signal(fd, signum)


def _wait(fds: dict[int, int], timeout: float) -> dict[int, int]:
    """Wait until every process of ``fds`` has ended or ``timeout`` passed; the pidfds of those still running."""
    poller = select.poll()
    for fd in fds.values():
        poller.register(fd, select.POLLIN)
    alive = dict(fds)
    deadline = time.monotonic() + timeout
    while alive and (left := deadline - time.monotonic()) > 0:
        ended = {fd for fd, _ in poller.poll(left * 1000)}  # a pidfd turns readable when its process ends
        for pid in [pid for pid, fd in alive.items() if fd in ended]:
            poller.unregister(alive.pop(pid))
    return alive


def end_marked(token: str, grace_s: float = GRACE_S) -> list[int]:
    """End every process marked with ``token``: SIGTERM, SIGKILL after ``grace_s``; returns the pids ended."""
    fds = _open(marked_processes(token), token)
    try:
        _signal(fds, signal.SIGTERM)
        stubborn = _wait(fds, grace_s)
        _signal(stubborn, signal.SIGKILL)
        _wait(stubborn, KILL_WAIT_S)
    finally:
        for fd in fds.values():
            os.close(fd)
    return sorted(fds)


def scratch_prefix(token: str | None) -> str:
    """The name a trial's temporary working folder starts with: marked with the local Ray's ``token``, so that
    :func:`remove_scratch` finds what a killed trial (whose own clean-up never ran) left."""
    return f"{SCRATCH_PREFIX}{token}-" if token else SCRATCH_PREFIX


def remove_scratch(token: str) -> None:
    """Remove the working folders the trials of the local Ray ``token`` left in the temporary folder (a child's
    checkpoint each: a killed trial's, hundreds of MB for a large model, stayed there for ever)."""
    if token:
        for folder in Path(tempfile.gettempdir()).glob(f"{scratch_prefix(token)}*"):
            shutil.rmtree(folder, ignore_errors=True)


class Watchdog:
    """The watchdog process of one local Ray (see the module docstring); :meth:`close` when the search ends."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.process = subprocess.Popen([sys.executable, "-I", __file__, token], stdin=subprocess.PIPE,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)  # Ctrl-C in the terminal does not reach it

    def close(self) -> None:
        """Close the pipe (the watchdog then ends what is still marked, usually nothing, and removes what its
        trials left) and wait for it."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        self.process.wait()


class _Stop(Exception):
    pass


def _stop(signum: int, frame: object) -> None:
    raise _Stop


def _watch(token: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop)  # asked to stop: do the job now
    with contextlib.suppress(_Stop):
        sys.stdin.buffer.read()  # returns at end of file: the driver closed the pipe or is gone
    end_marked(token)
    remove_scratch(token)  # once no trial is left to use them


if __name__ == "__main__":
    _watch(sys.argv[1])
