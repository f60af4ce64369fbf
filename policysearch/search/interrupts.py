"""Ctrl-C in a search's driver: stop, keep what finished, say how to go on. Ray is not imported here.

A first Ctrl-C inside a Tune experiment goes to Tune's own handler (documented for ``Tuner.fit``): Tune
stops its loop, saves the experiment state one last time and returns; the Tune layer sees the unfinished
trials and raises :class:`SearchInterrupted`. Anywhere else (loading the data, between phases, writing the
results) :class:`CtrlC` raises it at once; while Ray starts, once it has started. Either way the search ends its Ray and the
command prints one line (:meth:`CtrlC.message`) and exits with 130. A second Ctrl-C stops at once: it prints
the same line and ends the process without waiting for anything (the watchdog of
:mod:`policysearch.search.reaper` then ends the local Ray). SIGTERM (``kill``, ``timeout``, ``docker stop``,
a job scheduler) stops at once while a local Ray runs: that Ray is in the driver's process group, so the same
signal may be ending it (``timeout`` and schedulers send it to the group), and Ray's core then ends the driver
with exit status 1, without a word, as soon as it finds its raylet gone. Elsewhere (before Ray starts, or
joined to a cluster) SIGTERM is taken as a Ctrl-C: it raises SIGINT in the driver, whose handler, Tune's or
ours, goes on as above; if the search has not ended ``TERM_GRACE_S`` later, it stops at once. Ray's own SIGTERM
handler, which would dump a stack and abort, is replaced once Ray has started; while Ray starts, its exit is
taken as a Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Iterator

from policysearch.wording import first_line

__all__ = ["EXIT_INTERRUPTED", "CtrlC", "SearchInterrupted", "reapply_handlers", "resume_command", "stop_line"]

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C
TERM_GRACE_S = 5.0  # after SIGTERM, the time a search has to end as after a Ctrl-C before it stops at once


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the search; the message (one line) says what is kept and how to continue. ``run_dir`` is
    the run's folder and ``resumable`` whether a resume continues it there (False when it stopped before it
    started: run it again), for code that continues it.

    A KeyboardInterrupt, so that no ``except Exception`` on the way (Tune's, ours) swallows it."""

    def __init__(self, message: str = "", run_dir: Path | None = None, resumable: bool = False) -> None:
        super().__init__(*((message,) if message else ()))
        self.run_dir, self.resumable = run_dir, resumable

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return type(self), (str(self), self.run_dir, self.resumable)


def resume_command(run_dir: str | os.PathLike[str], from_python: bool = False) -> str:
    """The exact command that continues the run in ``run_dir``; ``from_python``: the run's data or model
    were given as Python objects, which only ``policysearch.search`` can take again."""
    if from_python:
        return (f"policysearch.search(..., out={str(run_dir)!r}, resume=True) in Python, with the same data "
                "and model")
    return f"policysearch search --resume {shlex.quote(str(run_dir))}"


class CtrlC:
    """SIGINT and SIGTERM handling for one search, installed in the main thread while the search runs
    (elsewhere, or in a thread, Python's own handling stays).

    ``message(at_once)`` describes the run at the moment (what is kept, the resume command); ``at_once``
    names what stopped it without a last save ("a second Ctrl-C", "SIGTERM"), empty for a first Ctrl-C.
    ``stop_text``, where a caller runs the search as a part of its own work (the benchmark), turns that line
    into the caller's for a stop at once, which ends the process before the caller could say it.
    """

    def __init__(self, message: Callable[[str], str], stop_text: Callable[[str], str] | None = None) -> None:
        self.message = message
        self.stop_text = stop_text
        self.stopping = False  # a first Ctrl-C was seen (by us or by Tune)
        self._tune_has_first = False  # Tune's handler is in place and takes the first Ctrl-C
        self._tune_took_first = False  # Tune's handler took a Ctrl-C before its experiment's loop began
        self._previous: Any = None
        self._previous_term: Any = None
        self._installed = False
        self._term_timer: threading.Timer | None = None  # armed by SIGTERM: stop at once if still running
        self._deferring = False  # Ray is starting: a first Ctrl-C waits for the start to end (ray_starting)
        self._local_ray = False  # a local Ray runs, in this process group: SIGTERM stops at once (ray_starting)

    def __enter__(self) -> "CtrlC":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._previous_term = signal.signal(signal.SIGTERM, self._terminate)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._term_timer is not None:
            self._term_timer.cancel()
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            if self._previous_term is not None:  # None: a handler not set from Python, which cannot be put back
                signal.signal(signal.SIGTERM, self._previous_term)
            self._installed = False

    @contextlib.contextmanager
    def ray_starting(self, local: bool = True) -> Iterator[None]:
        """Around the start of Ray. While a ``local`` Ray starts (a few seconds), a first Ctrl-C takes effect once
        it has started, or failed to: Ray's native core, stopped half-started, can crash the process as it exits.
        (Joining a cluster, which can wait for minutes, stops at once.) Ray puts its own SIGTERM handler in
        place, which exits with the signal's number: that becomes a Ctrl-C here; afterwards ours goes back.
        From here until :meth:`ray_stopped`, SIGTERM stops at once where the Ray is ``local``."""
        self._deferring = self._local_ray = local
        try:
            yield
        except BaseException as exc:
            ray_sigterm = isinstance(exc, SystemExit) and exc.code == signal.SIGTERM
            if isinstance(exc, SearchInterrupted) or not (ray_sigterm or self.stopping):
                raise
            self.stopping = True
            raise SearchInterrupted() from None
        finally:
            self._deferring = False
            if self._installed:
                signal.signal(signal.SIGTERM, self._terminate)
        if self.stopping:
            raise SearchInterrupted()

    def ray_stopped(self) -> None:
        """The search's Ray has ended: SIGTERM is a Ctrl-C again."""
        self._local_ray = False

    def _terminate(self, signum: int, frame: FrameType | None) -> None:
        tune_took_first = (self._tune_has_first and signal.getsignal(signal.SIGINT) == self._handle
                           or self._tune_took_first)
        if self.stopping or self._term_timer is not None or tune_took_first or self._local_ray:
            self.stop_now("SIGTERM")
        self._term_timer = threading.Timer(TERM_GRACE_S, self.stop_now,
                                           (f"SIGTERM, the search still running {TERM_GRACE_S:g} s later",))
        self._term_timer.daemon = True
        self._term_timer.start()
        signal.raise_signal(signal.SIGINT)  # handled as a Ctrl-C, by whichever SIGINT handler is in place

    def tune_started(self) -> None:
        """An experiment's loop starts: if another handler (Tune's) replaced ours, it takes the first Ctrl-C
        and puts ours back, so a Ctrl-C reaching us meanwhile is the second. Tune's handler is set before its
        loop starts (the search sets it on); finding ours here means it has already taken one."""
        ours = signal.getsignal(signal.SIGINT) == self._handle
        self._tune_has_first = self._installed and not ours
        self._tune_took_first = self._installed and ours

    def tune_ended(self, finished: bool) -> None:
        """An experiment returned; ``finished`` False when Tune stopped it for a Ctrl-C. Ours is put back
        (Tune leaves its handler in place after a run that was not interrupted). A Ctrl-C Tune took after its
        last trial had finished (its handler has put ours back) stops the search all the same: ``stopping``."""
        took = self._tune_took_first or (self._tune_has_first and signal.getsignal(signal.SIGINT) == self._handle)
        self._tune_has_first = self._tune_took_first = False
        if not finished or took:
            self.stopping = True
        if self._installed:
            signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping or self._tune_has_first or self._tune_took_first:
            self.stop_now("a second Ctrl-C")
        self.stopping = True
        if not self._deferring:
            raise SearchInterrupted()
        _say(f"{stop_line('stopping once the local Ray has started (a few seconds; Ctrl-C again stops at once)')}\n"
             .encode())

    def stop_now(self, by: str) -> None:
        """A second Ctrl-C, or SIGTERM (``by``): the line, and the process ends here (exit status 130)."""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, RuntimeError):  # RuntimeError: a write this signal interrupted
                pass
        line = self.message(by)
        try:
            line = self.stop_text(line) if self.stop_text else line
        except Exception as exc:  # the caller's wording (it may read a file) must never keep the process from ending
            failed = f" (the caller's wording of this line failed: {type(exc).__name__}: {first_line(exc, 100)})"
            head, sep, tail = line.partition("; continue with:")  # not inside the command to copy
            line = f"{head}{failed}{sep}{tail}"
        _say(f"{stop_line(line)}\n".encode())
        os._exit(EXIT_INTERRUPTED)


def reapply_handlers() -> None:
    """Set the Python handlers of SIGINT and SIGTERM again. ``ray.shutdown()`` resets the process's own action
    for SIGTERM to the default while Python still lists its handler, so a SIGTERM after it killed the search
    without a word; this puts the listed handler back where the signal arrives (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if handler is not None:  # None: set outside Python, which cannot be set again from here
            signal.signal(signum, handler)


def stop_line(text: str) -> str:
    """``policysearch: text`` as a stop prints it to stderr: on a terminal below the progress line and the
    echoed ^C, in a log or a pipe as the one line it is."""
    with contextlib.suppress(OSError, ValueError):
        if os.isatty(2):
            return f"\npolicysearch: {text}"
    return f"policysearch: {text}"


def _say(line: bytes) -> None:
    """Write ``line`` to stderr from a signal handler; a stderr whose reader has gone (``2>&1 | tee`` stopped by
    the same Ctrl-C) must not break the stop."""
    with contextlib.suppress(OSError):
        os.write(2, line)
