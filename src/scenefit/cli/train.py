"""Verb ``train``: LoRA SFT of one student per criterion.

    scenefit train --criterion all --data runs/demo/datasets --model runs/demo/model \
        --out runs/demo/students --config demo

Multi-GPU: ``accelerate launch --config_file "$(scenefit configs --path accelerate/multi_gpu_ddp)" "$(command -v scenefit)" train …``;
several CPU processes: ``torchrun --nproc_per_node 2 "$(command -v scenefit)" train …`` (see
docs/reference.md, "Training"). ``--jobs 2`` trains two students at once, each in its own process
(on 2 CPU cores: about the time of one student instead of two). Only the main process prints the summary. A rerun skips students
that finished and resumes interrupted ones from their latest complete checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from scenefit.cli import app
from scenefit.cli.common import (
    ConfigOpt,
    SetOpt,
    console,
    disk_errors,
    examples,
    fail,
    fhelp,
    load_config,
    print_json,
    synthetic_banner,
)


@app.command("train", epilog=examples(__doc__, "train"))
def train(
    data: Annotated[Path, typer.Option("--data", help="Folder of per-criterion datasets: DATA/<criterion>/{train,val,test}.parquet.")],
    out: Annotated[Path, typer.Option("--out", "-o", file_okay=False, help="Output folder; each student goes to OUT/<criterion>/.")],
    criterion: Annotated[str, typer.Option("--criterion", help="location, size, co_occurrence, or all (the config's criteria).")] = "all",
    model: Annotated[Optional[str], typer.Option("--model", "--base", help=fhelp("train", "base_model"))] = None,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help=fhelp("train", "max_steps"))] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help=fhelp("train", "seed"))] = None,
    resume: Annotated[Optional[bool], typer.Option("--resume/--no-resume", help=fhelp("train", "resume"))] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Retrain students whose output folder is complete (default: skip them).")] = False,
    jobs: Annotated[Optional[int], typer.Option("--jobs", min=1, help=fhelp("train", "jobs"))] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Train the students (LoRA on the language model, loss on the answer only, early stopping)."""
    from scenefit.core.criteria import Criterion
    from scenefit.train.data import DatasetError

    cfg = load_config("train", config, sets, base_model=model, max_steps=max_steps, seed=seed, resume=resume, jobs=jobs)
    if not cfg.base_model:
        fail("no base model: pass --model or set train.base_model in the config")
    if criterion == "all":
        criteria = list(cfg.criteria)
    else:
        try:
            criteria = [Criterion.parse(criterion).value]
        except ValueError as e:
            fail(str(e))
    if not data.is_dir():
        fail(f"--data {data} is not a folder")

    from scenefit.train.launch import is_main_process, single_process_warning, world_size
    from scenefit.train.trainer import train_student

    main = is_main_process()
    warning = single_process_warning()
    if warning:
        console.print(f"[bold yellow]warning:[/] {warning}")
    if cfg.jobs > 1 and len(criteria) > 1 and world_size() == 1:
        summary, failed = _train_side_by_side(criteria, data, out, cfg, config, sets, overwrite)
        _print_table(summary)
        print_json(summary)
        if failed:
            raise typer.Exit(1)
        return
    summary: dict = {}
    failed = 0
    for name in criteria:
        if main:
            console.rule(f"student: {name}")
        try:
            with disk_errors(out, "run the same command again: it resumes from the last complete checkpoint"):
                result = train_student(name, data, cfg.base_model, out, cfg, overwrite=overwrite)
        except (DatasetError, FileNotFoundError, ValueError) as e:
            console.print(f"[bold red]error:[/] {name}: {e}")
            summary[name] = {"error": str(e)}
            failed += 1
            continue
        m = result.metrics
        if result.skipped and main:
            console.print(f"{name}: already trained in {result.out_dir} (use --overwrite to retrain)")
        if main:
            synthetic_banner(bool(m.get("synthetic")))
        summary[name] = _student_summary(result.out_dir, m, result.skipped)
    if main:  # one summary, not one per process
        _print_table(summary)
        print_json(summary)
    if failed:
        raise typer.Exit(1)


def _student_summary(out_dir: Path, m: dict, skipped: bool) -> dict:
    return {"out": str(out_dir), "skipped": skipped, "global_step": m.get("global_step"),
            "wall_seconds": m.get("wall_seconds"), "best_metric": m.get("best_metric"), "test": m.get("test")}


def _train_side_by_side(criteria: list[str], data: Path, out: Path, cfg, config, sets, overwrite: bool) -> tuple[dict, int]:
    """``cfg.jobs`` students at once, each a `scenefit train --criterion C` process with the same
    settings (train.jobs=1 there); their output goes to stderr marked with the criterion. The
    summary is read from each student's metrics.json, as a rerun reads a finished student."""
    import json
    import sys

    from scenefit.pipeline.process import parent_death_hook
    from scenefit.train.checkpoints import is_trained
    from scenefit.train.jobs import train_in_processes

    done_before = {name: is_trained(out / name) and not overwrite for name in criteria}
    passed = ["--data", str(data), "--out", str(out), "--model", cfg.base_model, "--max-steps", str(cfg.max_steps),
              "--seed", str(cfg.seed), "--resume" if cfg.resume else "--no-resume",
              *(["--config", str(config)] if config else []), *(a for s in sets or [] for a in ("--set", s)),
              "--set", "jobs=1", *(["--overwrite"] if overwrite else [])]
    console.print(f"training {len(criteria)} students, {cfg.jobs} at a time, each in its own process")
    codes = train_in_processes(criteria, lambda name: [sys.executable, "-m", "scenefit.cli", "train", "--criterion",
                                                       name, *passed], cfg.jobs, preexec=parent_death_hook())
    summary: dict = {}
    for name in criteria:
        folder = out / name
        if codes.get(name) == 0 and is_trained(folder):
            metrics = json.loads((folder / "metrics.json").read_text())
            summary[name] = _student_summary(folder, metrics, done_before[name])
        else:
            summary[name] = {"error": f"its process ended with exit status {codes.get(name)} (its output above, "
                                      f"marked [{name}])"}
    return summary, sum("error" in s for s in summary.values())


def _print_table(summary: dict) -> None:
    from rich.table import Table

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f} %"

    t = Table(title="students: decision accuracy on the test split")
    for col in ("criterion", "steps", "time", "decision", "student vs labels", "student vs truth", "base vs labels",
                "base vs truth"):
        t.add_column(col)
    for name, s in summary.items():
        if "error" in s:
            t.add_row(name, "-", "-", "-", "[red]failed[/]", "", "", "")
            continue
        test = s.get("test") or {}
        st, ba = test.get("student", {}), test.get("base", {})
        t.add_row(name, str(s.get("global_step")), f"{s.get('wall_seconds') or 0:.0f} s", test.get("decision", "-"),
                  pct(st.get("accuracy")), pct(st.get("accuracy_vs_truth")), pct(ba.get("accuracy")), pct(ba.get("accuracy_vs_truth")))
    console.print(t)
    console.print("decision: logits = the first-token logits after the forced answer prefix (what predict and serve "
                  "report); generated text = the Final decision: line of a reasoning-first answer. The base is asked "
                  "by its logits.")
