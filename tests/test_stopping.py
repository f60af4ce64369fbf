"""Stopping a search without Ray: the processes a local Ray leaves are found by their mark and ended, a
watchdog ends them when its driver is killed, Ctrl-C raises once and stops at once the second time, and
the cost ledger adds up every process. The searches themselves are stopped in ``tests/test_search.py``.

Every process a test starts is ended by its id (``_cleanup``), whether the test passed or not.
"""

from __future__ import annotations

import io
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from policysearch.search.interrupts import EXIT_INTERRUPTED, resume_command
from policysearch.search.ledger import Ledger
from policysearch.search.reaper import RUN_ENV, end_marked, marked_processes, scratch_prefix

REPO = Path(__file__).resolve().parents[1]
linux_only = pytest.mark.skipif(not Path("/proc/self/environ").exists() or not hasattr(os, "pidfd_open"),
                                reason="the marks are read from /proc and waited for on pidfds (Linux)")

# A process that sleeps until killed; with IGNORE_TERM it ignores SIGTERM (as Ray's agents were seen to).
SLEEPER = textwrap.dedent("""
    import os, signal, sys, threading
    if os.environ.get("IGNORE_TERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ready", flush=True)
    threading.Event().wait()
""")


def _sleeper(token: str | None, ignore_term: bool = False, new_session: bool = False) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != RUN_ENV}
    if token:
        env[RUN_ENV] = token
    if ignore_term:
        env["IGNORE_TERM"] = "1"
    proc = subprocess.Popen([sys.executable, "-c", SLEEPER], env=env, stdout=subprocess.PIPE, text=True,
                            start_new_session=new_session)
    assert proc.stdout.readline().strip() == "ready"  # its handlers are in place
    return proc


def _ended(pid: int, timeout: float) -> bool:
    """Whether process ``pid`` ends within ``timeout`` seconds (waited for on a pidfd, not by polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def _cleanup(*procs: subprocess.Popen) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


@linux_only
def test_only_the_processes_carrying_this_runs_mark_are_ended():
    token, other = uuid.uuid4().hex, uuid.uuid4().hex
    mine, stubborn, theirs, unmarked = (_sleeper(token), _sleeper(token, ignore_term=True), _sleeper(other),
                                        _sleeper(None))
    try:
        assert set(marked_processes(token)) == {mine.pid, stubborn.pid}
        ended = end_marked(token, grace_s=0.5)
        assert sorted(ended) == sorted([mine.pid, stubborn.pid])
        assert mine.wait(timeout=30) == -signal.SIGTERM
        assert stubborn.wait(timeout=30) == -signal.SIGKILL  # it ignored SIGTERM: killed after the grace
        assert theirs.poll() is None and unmarked.poll() is None  # another run's Ray, a joined cluster: untouched
        assert marked_processes(token) == []
    finally:
        _cleanup(mine, stubborn, theirs, unmarked)


# A driver that starts the watchdog and a marked process in a session of its own (Ray's agents outlive a
# killed driver re-parented to PID 1), prints their pids and waits to be killed.
DRIVER = textwrap.dedent("""
    import os, subprocess, sys, threading
    from policysearch.search.reaper import RUN_ENV, Watchdog
    token = sys.argv[1]
    watchdog = Watchdog(token)
    env = dict(os.environ, **{RUN_ENV: token})
    agent = subprocess.Popen([sys.executable, "-c", "import threading; print(flush=True); threading.Event().wait()"],
                             env=env, start_new_session=True, stdout=subprocess.PIPE)
    agent.stdout.readline()  # it runs with its own environment (before exec, /proc shows the driver's)
    print(watchdog.process.pid, agent.pid, flush=True)
    threading.Event().wait()
""")


@linux_only
def test_the_watchdog_ends_the_marked_processes_when_its_driver_is_killed(tmp_path):
    token = uuid.uuid4().hex
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               TMPDIR=str(tmp_path))
    # what killed trials left in the temporary folder (a trial never got to remove its own): this run's goes
    left, others = tmp_path / f"{scratch_prefix(token)}k1", tmp_path / f"{scratch_prefix(uuid.uuid4().hex)}k2"
    for folder in (left, others):
        folder.mkdir()
        (folder / "child.pt").write_bytes(b"weights")
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, token], env=env, stdout=subprocess.PIPE, text=True)
    watchdog, agent = map(int, driver.stdout.readline().split())
    try:
        assert marked_processes(token) == [agent]
        driver.kill()  # SIGKILL: the driver can do nothing more
        driver.wait(timeout=30)
        assert _ended(agent, timeout=30), "the marked process outlived its killed driver"
        assert _ended(watchdog, timeout=30), "the watchdog did not end after its work"
        assert not left.exists() and (others / "child.pt").exists()  # a trial's scratch of another run stays
    finally:
        _cleanup(driver)
        for pid in (agent, watchdog):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# Ctrl-C outside a Tune experiment raises SearchInterrupted with the stage's line; inside one, Tune's handler takes
# the first and saves before its experiment returns. The second stops at once. SIGTERM is a Ctrl-C, and stops at
# once when it comes second or when the search still runs TERM_GRACE_S later.
CTRL_C = textwrap.dedent("""
    import os, signal, sys, time
    from policysearch.search.interrupts import CtrlC, SearchInterrupted
    lines = lambda at_once: f"stopped at once by {at_once}" if at_once else "first"
    where = os.environ["WHERE"]
    with CtrlC(lines) as ctrl_c:
        if where != "outside":
            def tunes(signum, frame):  # Tune's: stops its loop to save, and puts the handler before it back
                print("tune stops", flush=True)
                signal.signal(signal.SIGINT, ctrl_c._handle)
            signal.signal(signal.SIGINT, tunes)
            if where == "before its loop":  # Tune's handler takes a Ctrl-C before its first callback
                os.kill(os.getpid(), signal.SIGINT)
            ctrl_c.tune_started()
        if os.environ.get("RAY"):
            with ctrl_c.ray_starting(local=os.environ["RAY"] == "local"):
                pass
            if os.environ["RAY"] == "local, stopped":
                ctrl_c.ray_stopped()
        for name in os.environ["SIGNALS"].split():
            try:
                os.kill(os.getpid(), getattr(signal, name))  # its handler has run when this returns
            except SearchInterrupted:
                print("raised", flush=True)
        time.sleep(60)  # a stop that hangs (Ray's processes ended by the same SIGTERM)
        print("not reached", flush=True)
""")


@pytest.mark.parametrize("where,signals,printed,line", [
    ("outside", "SIGINT SIGINT", "raised", "stopped at once by a second Ctrl-C"),
    ("outside", "SIGINT SIGTERM", "raised", "stopped at once by SIGTERM"),
    ("outside", "SIGTERM SIGTERM", "raised", "stopped at once by SIGTERM"),
    ("outside", "SIGTERM", "raised", "stopped at once by SIGTERM, the search still running 5 s later"),
    ("in tune", "SIGINT SIGINT", "tune stops", "stopped at once by a second Ctrl-C"),
    ("in tune", "SIGINT SIGTERM", "tune stops", "stopped at once by SIGTERM"),
    ("in tune", "SIGTERM SIGTERM", "tune stops", "stopped at once by SIGTERM"),
    ("in tune", "SIGTERM", "tune stops", "stopped at once by SIGTERM, the search still running 5 s later"),
    # regression: a Ctrl-C Tune took before its loop began left the next one to raise inside Tune's loop
    ("before its loop", "SIGINT", "tune stops", "stopped at once by a second Ctrl-C"),
    ("before its loop", "SIGTERM", "tune stops", "stopped at once by SIGTERM"),
])
def test_ctrl_c_or_sigterm_stops_once_and_at_once_when_it_comes_again_or_hangs(where, signals, printed, line):
    """Regression: a SIGTERM after Tune had taken the first Ctrl-C was named "a second Ctrl-C"."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               SIGNALS=signals, WHERE=where)
    done = subprocess.run([sys.executable, "-c", CTRL_C], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_INTERRUPTED == 130
    assert done.stdout.splitlines() == [printed]
    assert done.stderr.strip() == f"policysearch: {line}" and "Traceback" not in done.stderr


@pytest.mark.parametrize("ray,printed,line", [
    ("local", [], "stopped at once by SIGTERM"),
    ("joined", ["tune stops"], "stopped at once by SIGTERM, the search still running 5 s later"),
    ("local, stopped", ["tune stops"], "stopped at once by SIGTERM, the search still running 5 s later"),
])
def test_sigterm_stops_at_once_while_a_local_ray_runs(ray, printed, line):
    """Regression (CI): SIGTERM to the process group also ends the local Ray, and Ray's core then ended the
    driver with exit status 1 and no line before the grace was over. A joined cluster is not in the group."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               SIGNALS="SIGTERM", WHERE="in tune", RAY=ray)
    done = subprocess.run([sys.executable, "-c", CTRL_C], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_INTERRUPTED
    assert done.stdout.splitlines() == printed
    assert done.stderr.strip() == f"policysearch: {line}"


@pytest.mark.parametrize("when", ["before its loop", "after its last trial"])
def test_a_ctrl_c_tune_took_stops_the_search_even_where_every_trial_finished(when):
    """Regression: a Ctrl-C Tune took while no trial was left to stop returned as a finished experiment, and
    the search went on to its next phase."""
    from policysearch.search.interrupts import CtrlC

    saved = signal.getsignal(signal.SIGINT)
    for ctrl_c_comes in (True, False):
        with CtrlC(lambda at_once: "line") as ctrl_c:
            def tunes(signum, frame):  # Tune's: takes one and puts the handler before it back
                signal.signal(signal.SIGINT, ctrl_c._handle)

            signal.signal(signal.SIGINT, tunes)
            if ctrl_c_comes and when == "before its loop":
                os.kill(os.getpid(), signal.SIGINT)  # its handler has run when this returns
            ctrl_c.tune_started()
            if ctrl_c_comes and when == "after its last trial":
                os.kill(os.getpid(), signal.SIGINT)
            ctrl_c.tune_ended(finished=True)
            assert ctrl_c.stopping is ctrl_c_comes  # without a Ctrl-C a finished experiment goes on
    assert signal.getsignal(signal.SIGINT) is saved


def test_sigterm_while_ray_starts_is_a_ctrl_c_and_ours_takes_sigterm_after():
    """Regression: while ray.init ran, Ray's SIGTERM handler (``sys.exit(signum)``) was in place, and a SIGTERM
    then ended the search with SystemExit(15): no line, no resume command."""
    from policysearch.search.interrupts import CtrlC, SearchInterrupted

    def rays_handler(signum, frame):  # what ray.init puts in place
        sys.exit(signum)

    with CtrlC(lambda at_once: "stopped") as ctrl_c:
        with pytest.raises(SearchInterrupted):
            with ctrl_c.ray_starting():
                signal.signal(signal.SIGTERM, rays_handler)
                signal.raise_signal(signal.SIGTERM)
        assert ctrl_c.stopping
    with CtrlC(lambda at_once: "stopped") as ctrl_c:
        with ctrl_c.ray_starting():
            signal.signal(signal.SIGTERM, rays_handler)
        assert signal.getsignal(signal.SIGTERM) == ctrl_c._terminate  # Ray has started: ours takes SIGTERM again
    with pytest.raises(SystemExit):  # any other exit passes through
        with CtrlC(lambda at_once: "stopped") as ctrl_c, ctrl_c.ray_starting():
            sys.exit(3)


def test_a_ctrl_c_while_ray_starts_takes_effect_once_it_has_started():
    """Regression: a Ctrl-C stopped ray.init half-way, and Ray's native core then crashed the process as it
    exited, after our line, in about one try of eight (exit status 139). The start now ends first (a few
    seconds), then the search stops; a second Ctrl-C still stops at once, and after the start a Ctrl-C
    raises at once again."""
    from policysearch.search.interrupts import CtrlC, SearchInterrupted

    with CtrlC(lambda at_once: "stopped") as ctrl_c:
        started = False
        with pytest.raises(SearchInterrupted):
            with ctrl_c.ray_starting():
                signal.raise_signal(signal.SIGINT)
                started = True  # not cut short
        assert started and ctrl_c.stopping
    seen: list[str] = []
    with CtrlC(lambda at_once: "stopped") as ctrl_c:
        ctrl_c.stop_now = seen.append  # what would end the process
        with pytest.raises(SearchInterrupted):
            with ctrl_c.ray_starting():
                signal.raise_signal(signal.SIGINT)
                signal.raise_signal(signal.SIGINT)
        assert seen == ["a second Ctrl-C"]
    with CtrlC(lambda at_once: "stopped") as ctrl_c:
        with ctrl_c.ray_starting():
            pass
        with pytest.raises(SearchInterrupted):
            signal.raise_signal(signal.SIGINT)
    with CtrlC(lambda at_once: "stopped") as ctrl_c:  # the start then fails: still the Ctrl-C, not its error
        with pytest.raises(SearchInterrupted):
            with ctrl_c.ray_starting():
                signal.raise_signal(signal.SIGINT)
                raise ConnectionError("the start failed")
    with CtrlC(lambda at_once: "stopped") as ctrl_c:  # joining a cluster, which can take minutes: at once
        joined = False
        with pytest.raises(SearchInterrupted):
            with ctrl_c.ray_starting(local=False):
                signal.raise_signal(signal.SIGINT)
                joined = True
        assert not joined
    with pytest.raises(ConnectionError):  # without a Ctrl-C, a failed start is its own error
        with CtrlC(lambda at_once: "stopped") as ctrl_c, ctrl_c.ray_starting():
            raise ConnectionError("the start failed")


def test_a_ctrl_c_notice_to_a_stderr_whose_reader_has_gone_does_not_break_the_start():
    """``search ... 2>&1 | tee log``: the same Ctrl-C ends tee, and the notice written to its pipe raised
    BrokenPipeError inside ray.init, the half-started stop the deferral is there to avoid."""
    from policysearch.search.interrupts import CtrlC, SearchInterrupted

    read, write = os.pipe()
    os.close(read)
    saved = os.dup(2)
    os.dup2(write, 2)
    started = False
    try:
        with CtrlC(lambda at_once: "stopped") as ctrl_c:
            with pytest.raises(SearchInterrupted):
                with ctrl_c.ray_starting():
                    signal.raise_signal(signal.SIGINT)
                    started = True
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(write)
    assert started


def test_the_resume_command_is_the_one_to_type():
    assert resume_command(Path("runs/demo")) == "policysearch search --resume runs/demo"
    assert resume_command(Path("my runs/a b")) == "policysearch search --resume 'my runs/a b'"


def test_a_run_given_python_objects_is_continued_from_python():
    """Regression: a run of a model callable (or in-memory data) was told to continue with the command,
    which refuses such a run; it is continued by policysearch.search(..., resume=True)."""
    from policysearch.search.config import SearchConfig
    from policysearch.search.phases import Stage
    from policysearch.search.prepare import given_in_python

    cli, callable_model = SearchConfig(), SearchConfig(model="callable:train.MyNet")
    in_memory = SearchConfig(dataset="python:Dataset#0123abcd")
    assert [given_in_python(c) for c in (cli, callable_model, in_memory)] == [False, True, True]
    for from_python in (False, True):
        line = Stage(Path("runs/a b"), resume=True, from_python=from_python).message()
        assert line.endswith(resume_command(Path("runs/a b"), from_python))
    assert resume_command(Path("runs/a b"), True) == ("policysearch.search(..., out='runs/a b', resume=True) in "
                                                      "Python, with the same data and model")


def test_a_stop_at_once_says_so_only_while_it_can_lose_finished_work():
    from policysearch.search.phases import Stage

    stage = Stage(Path("runs/a"), resume=True)
    stage.kept.append("phase 1's 2 child models")
    assert "(stopped at once by SIGTERM: kept as last saved, at most a second before);" in stage.message("SIGTERM")
    stage.stop_saved = True  # the stop has written what finished; Ray's shutdown alone is cut short
    assert stage.message("SIGTERM") == stage.message() == ("search interrupted; kept in runs/a: phase 1's 2 child "
                                                            "models; continue with: policysearch search --resume runs/a")
    on_a_uri = Stage(Path("runs/a"), resume=True, save_period="about 60 s")  # saved (and uploaded) once a minute
    assert "kept as last saved, about 60 s before" in on_a_uri.message("a second Ctrl-C")


def test_a_stop_at_once_counts_the_running_phases_trials_as_at_most_kept():
    """Regression (a trial): a SIGTERM's stop at once said "kept ... 3 of 18 recipe trainings", and the resume
    found 2: the trials that finished after the last save run again, so the count is an upper bound."""
    from policysearch.progress import Progress
    from policysearch.search.phases import Stage

    stage = Stage(Path("runs/a"), resume=True)
    stage.done("phase 2's 40 policy trials")
    progress = Progress("phase 3: recipe selection", 18, None, stream=io.StringIO())
    progress.resumed(3)
    stage.enter("phase 3 (recipe selection)", progress, "recipe trainings")
    assert ("kept in runs/a: phase 2's 40 policy trials, up to 3 of 18 recipe trainings; continue with"
            in stage.message("SIGTERM"))
    assert "kept in runs/a: phase 2's 40 policy trials, 3 of 18 recipe trainings; continue" in stage.message()
    stage.stop_saved = True  # the stop saved what finished: the count is exact
    assert ", 3 of 18 recipe trainings;" in stage.message("SIGTERM")


def test_a_ctrl_c_between_two_phases_names_the_one_that_finished():
    """Regression: a Ctrl-C after phase 2 finished and before phase 3 began said "search interrupted;" with
    no phase, where the README promises the line names it."""
    from policysearch.search.phases import Stage

    stage = Stage(Path("runs/a"), resume=True)
    stage.enter("phase 2 (policy trials)")
    stage.done("phase 2's 60 policy trials")
    assert stage.message().startswith("search interrupted after phase 2 (policy trials); kept in runs/a: phase 2's")
    stage.enter("phase 3 (recipe selection)")
    assert stage.message().startswith("search interrupted in phase 3 (recipe selection); kept")


def test_the_ctrl_c_line_is_the_one_line_on_a_stderr_that_is_no_terminal(monkeypatch, capsys):
    """Regression: the line began with a newline (to end a terminal's progress bar) in logs too: two lines."""
    import argparse

    from policysearch.search import command
    from policysearch.search.interrupts import SearchInterrupted

    def interrupted(*args, **kwargs):
        raise SearchInterrupted("search interrupted in phase 1 (child models); kept in runs/a: the settings",
                                Path("runs/a"), True)

    monkeypatch.setattr(command, "search", interrupted)
    args = argparse.Namespace(resume=None, out="runs/a")
    monkeypatch.setattr(command, "given_values", lambda args: {})
    assert command.run(args) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == ("policysearch: search interrupted in phase 1 (child models); kept in runs/a: "
                                       "the settings\n")


def test_the_save_period_a_stop_at_once_names_is_the_one_in_force(monkeypatch):
    from policysearch.search.config import SearchConfig
    from policysearch.search.tuning import state_period_s

    monkeypatch.delenv("TUNE_GLOBAL_CHECKPOINT_S", raising=False)
    assert state_period_s(SearchConfig()) == "1" and state_period_s(SearchConfig(storage="s3://b/runs")) == "60"
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "30")  # the user's, which the search leaves in force
    assert state_period_s(SearchConfig()) == "30"


def test_the_ledger_adds_up_every_process_that_worked_on_a_phase(tmp_path):
    first = Ledger(tmp_path, process="first")
    first.start("phase2")
    first.phases["phase2"]["first"] = 12.5  # its seconds up to the last trial it finished; then it was killed
    first.record("phase1")  # a phase it never entered: nothing recorded
    (tmp_path / "ledger.json").write_text(json.dumps({"wall_s": first.phases}), encoding="utf-8")
    second = Ledger(tmp_path, process="second")  # the resume reads what the killed one recorded
    second.start("phase2")
    second.record("phase2")
    own = second.phases["phase2"]["second"]
    assert set(second.phases) == {"phase2"} and set(second.phases["phase2"]) == {"first", "second"}
    assert second.wall("phase2") == pytest.approx(12.5 + own)  # the sum, not the last process's time
    assert second.processes() == 2 and Ledger(tmp_path).wall("phase2") == second.wall("phase2")


def test_a_callers_wording_that_fails_still_ends_the_process(monkeypatch):
    """A review found that a stop_text raising (the benchmark's reads results.json) kept a stop at once from
    ending the process: from SIGTERM's timer thread the thread died and the search ran on."""
    from policysearch.search import interrupts

    said: list[bytes] = []
    ended: list[int] = []
    monkeypatch.setattr(interrupts, "_say", said.append)
    monkeypatch.setattr(interrupts.os, "_exit", ended.append)

    def broken(line: str) -> str:
        raise TypeError("argument of type 'NoneType' is not iterable")

    interrupts.CtrlC(lambda by: f"search interrupted (by {by})", broken).stop_now("SIGTERM")
    assert said == [b"policysearch: search interrupted (by SIGTERM) (the caller's wording of this line failed: TypeError: "
                    b"argument of type 'NoneType' is not iterable)\n"]
    assert ended == [interrupts.EXIT_INTERRUPTED]
    interrupts.CtrlC(lambda by: "search interrupted; continue with: policysearch search --resume r", broken).stop_now("x")
    assert said[-1].endswith(b"iterable); continue with: policysearch search --resume r\n")  # the command intact


def test_a_stop_at_once_is_one_line_in_a_log_and_starts_below_the_progress_on_a_terminal(monkeypatch):
    """Regression (a review): a second Ctrl-C or a SIGTERM wrote an empty line before its one line into a log,
    where a single Ctrl-C wrote none (the empty line is for a terminal's echoed ^C)."""
    from policysearch.search import interrupts

    said: list[bytes] = []
    monkeypatch.setattr(interrupts, "_say", said.append)
    monkeypatch.setattr(interrupts.os, "_exit", lambda status: None)
    for terminal in (False, True):
        monkeypatch.setattr(interrupts.os, "isatty", lambda fd: terminal and fd == 2)
        interrupts.CtrlC(lambda by: f"search interrupted (by {by})").stop_now("SIGTERM")
        assert interrupts.stop_line("x") == ("\npolicysearch: x" if terminal else "policysearch: x")
    assert said == [b"policysearch: search interrupted (by SIGTERM)\n", b"\npolicysearch: search interrupted (by SIGTERM)\n"]
