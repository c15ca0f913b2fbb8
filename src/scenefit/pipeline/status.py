"""Where a run stands: each stage done / partial / not started, its line, and what to run next.

    scenefit status runs/demo
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from scenefit.pipeline.run_folder import RunFolder
from scenefit.pipeline.stages import DONE, NOT_STARTED, Stage, State, headline, stages_for


@dataclass
class StageStatus:
    stage: Stage
    state: State
    line: str  # the headline when done, else what is missing


def run_status(run: RunFolder) -> list[StageStatus]:
    out = []
    for stage in stages_for(run):
        state = stage.state(run)
        line = headline(stage, run) if state.status == DONE else state.detail
        out.append(StageStatus(stage, state, line))
    return out


def next_steps(run: RunFolder, rows: list[StageStatus]) -> list[str]:
    """The command that continues the run, or, once it is complete, what to do with the students."""
    root = shlex.quote(str(run.root))
    todo = next((r for r in rows if r.state.status != DONE), None)
    if todo is not None:
        verb = "continue" if any(r.state.status != NOT_STARTED for r in rows) else "start"
        return [f"next: scenefit run --out {root}    ({verb}s with {todo.stage.name})"]
    students = shlex.quote(str(run.students))
    return [f"the run is complete; report: {run.report / 'report.html'}",
            f"next: scenefit predict --students {students} --image IMAGE --object NAME --box x0,y0,x1,y1",
            f"      scenefit serve --students {students}"]
