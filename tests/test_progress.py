"""Tests for the search's progress display: a bar on a terminal, a few lines in a log."""

from __future__ import annotations

import io
import pickle

from policysearch.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_few_lines_per_phase_not_one_per_trial():
    log = io.StringIO()
    progress = Progress("phase 2: policy trials", 200, "reward", log)
    for k in range(200):
        progress.trial_finished({"reward": k / 200}, error="RuntimeError: boom" if k == 7 else None)
    progress.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 6  # first, three quarters, last, and the failed one
    assert lines[0].startswith("[phase 2: policy trials] 1/200 trials  best reward 0.0000")
    assert lines[-1].startswith("[phase 2: policy trials] 200/200 trials  best reward 0.9950")
    assert any("a trial failed: RuntimeError: boom" in line for line in lines)


def test_a_terminal_gets_one_bar_and_the_progress_pickles():
    terminal = _Terminal()
    progress = Progress("phase 1: child models", 5, "da_accuracy", terminal)
    progress.trial_finished({"da_accuracy": 0.5})
    copy = pickle.loads(pickle.dumps(progress))  # Tune keeps its callbacks in the experiment state
    assert copy.done == 1 and copy._bar is None
    for _ in range(4):
        progress.trial_finished({"da_accuracy": 0.9})
    progress.close()
    text = terminal.getvalue()
    assert "phase 1: child models" in text and "5/5" in text and "best da_accuracy 0.9000" in text
    assert "\r" in text and text.count("\n") <= 2  # one updating line, not a line per trial


def test_the_first_trial_gives_no_remaining_time(monkeypatch):
    """Regression: the first line extrapolated its start-up: "1/95 trials elapsed 0:09 remaining ~14:32" for a
    stage that ended at 0:18. The first line gives no estimate; later ones the mean time per trial (trials run
    several at once finish in waves, so a rate from the first one alone would be far too fast)."""
    from policysearch import progress as module

    clock = iter([100.0, 109.0, 110.0, 112.0])  # the start, then each printed line
    monkeypatch.setattr(module.time, "monotonic", lambda: next(clock))
    log = io.StringIO()
    stage = Progress("phase 3: recipe selection, other folds", 8, None, log)  # started at 100
    for _ in range(4):
        stage.trial_finished({})
    assert log.getvalue().splitlines() == [  # lines at 1, 2 (a quarter) and 4 (a half) of 8
        "[phase 3: recipe selection, other folds] 1/8 trials  elapsed 0:09",
        "[phase 3: recipe selection, other folds] 2/8 trials  elapsed 0:10  remaining ~0:30",
        "[phase 3: recipe selection, other folds] 4/8 trials  elapsed 0:12  remaining ~0:12"]


class _NotebookStream(io.StringIO):  # like a notebook's output stream: cannot be pickled
    def __reduce__(self):
        raise TypeError("cannot pickle 'OutStream' object")


def test_a_stream_that_cannot_be_pickled_stays_out_of_the_pickle(capsys):
    stream = _NotebookStream()
    progress = Progress("phase 2: policy trials", 2, "reward", stream)
    copy = pickle.loads(pickle.dumps(progress))  # Tune pickles the callbacks of policysearch.search in a notebook
    copy.trial_finished({"reward": 0.5})
    assert "[phase 2: policy trials] 1/2 trials" in capsys.readouterr().out  # a restored copy prints to stdout
    progress.trial_finished({"reward": 0.5})
    assert "[phase 2: policy trials] 1/2 trials" in stream.getvalue()  # the live one to its own stream


def test_a_resumed_phase_counts_the_trials_finished_before():
    log = io.StringIO()
    progress = Progress("phase 2: policy trials", 20, "reward", log)
    progress.resumed(10, best=0.5)  # ten finished in the processes before this one
    for k in range(10):
        progress.trial_finished({"reward": 0.1})
    lines = log.getvalue().splitlines()
    assert lines[0] == "[phase 2: policy trials] resumed: 10/20 trials finished before  best reward 0.5000"
    assert lines[1].startswith("[phase 2: policy trials] 11/20 trials  best reward 0.5000")  # this process's first
    assert lines[-1].startswith("[phase 2: policy trials] 20/20 trials") and "remaining ~0:00" in lines[-1]
    assert [int(line.split("] ")[1].split("/")[0]) for line in lines[1:]] == sorted({11, 15, 20})

    terminal = _Terminal()
    bar = Progress("phase 3: recipe selection, first fold", 14, None, terminal)
    bar.resumed(4)
    for _ in range(10):
        bar.trial_finished({})
    bar.close()
    text = terminal.getvalue()
    assert "4/14" in text and "14/14" in text and "0/14" not in text
