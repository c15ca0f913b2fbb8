"""`scenefit run` — the whole pipeline as one resumable command, into one run folder.

    scenefit run --config demo --out runs/demo
    scenefit run --config my-project/scenefit.yaml --out runs/mine
    scenefit run --config own-data --manifest photos.csv --out runs/mine --set annotate.teachers.0.model=my-vlm
    scenefit run --out runs/mine
    scenefit run --out runs/mine --from consensus
    scenefit run --out runs/demo --to datasets --verbose

Stages, in order: tiny-model and synth (when the config builds its own base and data, as the demo
does), ingest, annotate, consensus, split, datasets, train, evaluate, and serve (the demo's one
HTTP request). Each writes its subfolder of RUN and its whole output to RUN/logs/NN-STAGE.log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from scenefit.cli import app
from scenefit.cli.common import ConfigOpt, console, examples, fail, print_json

RUN_HELP = """Run the pipeline from your samples (or the demo's synthetic world) to evaluated students.

The settings are resolved once into RUN/run.yaml (--config, --set SECTION.KEY=VALUE, --manifest);
later `scenefit run --out RUN` and `scenefit status RUN` read them from there, from any folder.
A stage that is done is kept; one that is not runs, and resumes by its own rules (annotate asks
only what its store lacks, train resumes from its last complete checkpoint). A failing stage stops
the run with the end of its log and a non-zero exit; fix the cause and the same command continues.
--from STAGE runs that stage and every later one again (after you changed their settings, with
--reconfigure); --to STAGE stops after it.

--config takes a packaged config by name (demo, paper, own-data: `scenefit configs`) or a file;
`scenefit init DIR` writes a starter config and manifest for your own images and teacher.
"""


@app.command("run", help=RUN_HELP, epilog=examples(__doc__, "run"))
def run_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", file_okay=False, help="The run folder (created; a folder holding a run continues it).")],
    config: ConfigOpt = None,
    manifest: Annotated[Optional[Path], typer.Option("--manifest", "-m", dir_okay=False, help="Your samples (JSONL, CSV or Parquet; columns: `scenefit ingest --help`); default: the config's run.manifest, else the synthetic world.")] = None,
    sets: Annotated[Optional[list[str]], typer.Option("--set", help="Override a setting of any section: --set SECTION.KEY=VALUE, e.g. train.max_steps=20 or annotate.teachers.0.max_tokens=256. Repeatable; recorded in RUN/run.yaml.")] = None,
    start: Annotated[Optional[str], typer.Option("--from", help="Run this stage and every later one again, also when they are done.")] = None,
    stop: Annotated[Optional[str], typer.Option("--to", help="Stop after this stage.")] = None,
    reconfigure: Annotated[bool, typer.Option("--reconfigure", help="Record other settings for a run folder that has some (stages already done are kept; --from runs them again).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Every stage's own output on the terminal too (it is always in RUN/logs/).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Also print each stage's outcome as JSON on stdout.")] = False,
) -> None:
    from scenefit.core.config import ConfigError
    from scenefit.pipeline.run_folder import start_or_continue
    from scenefit.pipeline.runner import run_stages, select
    from scenefit.pipeline.serve_check import run_check
    from scenefit.pipeline.stages import DONE, stages_for

    try:
        run = start_or_continue(out, str(config) if config is not None else None, manifest, sets, reconfigure)
        stages = stages_for(run)
        i, _ = select(stages, start, stop)
    except (ConfigError, ValueError) as e:
        fail(str(e))
        return
    if run.settings.manifest is not None and not Path(run.settings.manifest).is_file():
        fail(f"manifest not found: {run.settings.manifest} (run.manifest in {run.config_file}; --manifest M "
             "with --reconfigure names another)")
    if i > 0 and stages[i - 1].state(run).status != DONE:
        fail(f"--from {start}: the stage before it ({stages[i - 1].name}) is not done; run without --from to finish it")
    continue_cmd = f"scenefit run --out {_quote(run.root)}" + (f" --to {stop}" if stop else "")
    console.print(_escape(f"scenefit run -> {run.root}   settings: {run.config_file.name}   each stage's log: logs/"),
                  highlight=False, soft_wrap=True)
    if run.settings.manifest is None:
        from scenefit import SYNTHETIC_NOTICE

        console.print(f"[yellow]{SYNTHETIC_NOTICE}[/]")
    outcome = run_stages(run, stages, start, stop, console, verbose=verbose,
                         in_process=lambda stage, r, log: run_check(r, log))
    if json_out:
        print_json({"run": str(run.root), "exit_code": outcome.exit_code, "seconds": round(outcome.seconds, 1),
                    "stages": [vars(s) for s in outcome.stages]})
    bad = outcome.failed
    if bad is not None:
        what = "interrupted" if bad.outcome == "interrupted" else "failed"
        console.print(f"[bold red]{bad.name} {what}[/]; fix the cause if there is one, then continue with: "
                      f"[bold]{_escape(continue_cmd)}[/]", soft_wrap=True, highlight=False)
        raise typer.Exit(bad.exit_code or 1)
    last = outcome.stages[-1].name if outcome.stages else None
    if stop is not None and last != stages[-1].name:
        later = [s.name for s in stages[stages.index(next(s for s in stages if s.name == last)) + 1:]]
        console.print(f"stopped after {last} (--to); the rest ({', '.join(later)}) runs with: "
                      f"[bold]{_escape('scenefit run --out ' + _quote(run.root))}[/]", soft_wrap=True, highlight=False)
        if start is not None and any(s.state(run).status == DONE for s in stages if s.name in later):
            console.print(f"[yellow]note:[/] stages after {last} that are done were made from the earlier outputs; "
                          f"--from {later[0]} runs them again")
        return
    _result(run, outcome.seconds)


def _quote(path: Path) -> str:
    import shlex

    return shlex.quote(str(path))


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _result(run, seconds: float) -> None:
    """The run's result: the evaluation's headline again, after the stage lines."""
    import json

    metrics = run.report / "metrics.json"
    if not metrics.is_file():
        return
    from scenefit.cli.evaluate import print_headline

    console.print(f"\n[bold]== result ==[/]  (this run: {seconds:.0f} s)")
    print_headline(json.loads(metrics.read_text()))
    console.print(_escape(f"report: {run.report / 'report.html'}  (metrics: {metrics})"), highlight=False, soft_wrap=True)
    console.print(f"students: {_escape(str(run.students))}   (scenefit predict / serve --students {_escape(_quote(run.students))})",
                  highlight=False, soft_wrap=True)
