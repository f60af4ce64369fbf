"""What a stop at once would print at the moment a search's Ctrl-C reaches its stage, for the tests of when that
line may say work was lost."""

from __future__ import annotations

import pytest

from policysearch.search import phases


def stop_at_once_lines(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A list that gets, each time the stage turns a Ctrl-C into its exception (all but Ray's shutdown is done),
    the line a SIGTERM's stop at once would print then."""
    lines: list[str] = []
    interrupted = phases.Stage.interrupted

    def stage_interrupted(stage: phases.Stage):
        lines.append(stage.message("SIGTERM, the search still running 5 s later"))
        return interrupted(stage)

    monkeypatch.setattr(phases.Stage, "interrupted", stage_interrupted)
    return lines
