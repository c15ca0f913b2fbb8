"""`scenefit status` — where a run folder stands, and the command that continues it.

    scenefit status runs/demo
    scenefit status runs/mine --json
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scenefit.cli import app
from scenefit.cli.common import console, examples, fail, print_json


@app.command("status", epilog=examples(__doc__, "status"))
def status_cmd(
    run_dir: Annotated[Path, typer.Argument(file_okay=False, help="A run folder made by `scenefit run --out RUN`.")],
    json_out: Annotated[bool, typer.Option("--json", help="Also print the stages as JSON on stdout.")] = False,
) -> None:
    """Each stage of a run: done, partial or not started, its headline numbers, and what to run next.

    Read from the files the stages wrote (and the run's settings in RUN/run.yaml); it changes
    nothing, also while the run goes on.
    """
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from scenefit.core.config import ConfigError
    from scenefit.pipeline.run_folder import RunFolder
    from scenefit.pipeline.stages import DONE, PARTIAL
    from scenefit.pipeline.status import next_steps, run_status

    run = RunFolder(run_dir)
    if not run.exists():
        fail(f"{run_dir} is not a run folder (no run.yaml): start one with `scenefit run --config NAME --out "
             f"{run_dir}` (`scenefit run --help`)")
    try:
        rows = run_status(run)
    except ConfigError as e:
        fail(str(e))
        return
    table = Table(title=f"run {run.root}", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col in ("#", "stage", "status", ""):
        table.add_column(col, overflow="fold")
    style = {DONE: "green", PARTIAL: "yellow"}
    for k, r in enumerate(rows, 1):
        status = r.state.status
        table.add_row(str(k), r.stage.name, f"[{style.get(status, 'dim')}]{status}[/]", escape(r.line))
    console.print(table)
    steps = next_steps(run, rows)
    for line in steps:
        console.print(line, highlight=False, markup=False)
    if json_out:
        print_json({"run": str(run.root), "stages": [{"stage": r.stage.name, "status": r.state.status, "line": r.line}
                                                     for r in rows], "next": steps})
