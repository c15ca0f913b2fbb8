"""`scenefit evaluate` — students (and the untrained base) on a dataset split: metrics.json and report.html.

    scenefit evaluate --students runs/demo/students --data runs/demo/datasets --split test \
        --out runs/demo/report --config configs/demo.yaml
    scenefit evaluate --students runs/s --data runs/d --out runs/r --originals originals.jsonl --no-baseline
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from scenefit.core.progress import Progress
from scenefit.cli import app
from scenefit.cli.common import ConfigOpt, SetOpt, console, examples, fail, fhelp, load_config, print_json, synthetic_banner


@app.command("evaluate", epilog=examples(__doc__, "evaluate"))
def evaluate_cmd(
    students: Annotated[Path, typer.Option("--students", help="Folder of trained students: <criterion>/ adapters "
                                           "with scenefit_student.json (output of `scenefit train`).")],
    data: Annotated[Path, typer.Option("--data", help="Folder of student datasets: <criterion>/{train,val,test}.parquet "
                                       "(output of `scenefit datasets`).")],
    out: Annotated[Path, typer.Option("--out", "-o", file_okay=False, help="Report folder: metrics.json, report.html, answers.parquet, "
                                      "errors.jsonl.")],
    config: ConfigOpt = None,
    sets: SetOpt = None,
    split: Annotated[Optional[str], typer.Option(help=fhelp("evaluate", "split"))] = None,
    originals: Annotated[Optional[str], typer.Option(help=fhelp("evaluate", "originals"))] = None,
    base: Annotated[Optional[str], typer.Option(help=fhelp("predict", "base"))] = None,
    limit: Annotated[Optional[int], typer.Option(help=fhelp("evaluate", "limit"))] = None,
    criteria: Annotated[Optional[str], typer.Option(
        help="Comma-separated criteria (default: all three; the fused decision needs all three).")] = None,
    baseline: Annotated[Optional[bool], typer.Option("--baseline/--no-baseline", help=fhelp("evaluate", "baseline"))] = None,
    explain: Annotated[Optional[bool], typer.Option("--explain/--no-explain", help=fhelp("evaluate", "explain"))] = None,
    batch_size: Annotated[Optional[int], typer.Option(help=fhelp("predict", "batch_size"))] = None,
    device: Annotated[Optional[str], typer.Option(help=fhelp("predict", "device"))] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Also print the headline rows as JSON on stdout.")] = False,
) -> None:
    """Evaluate the students against the teacher labels (and the truth when the data has it).

    Per criterion and fused: accuracy with its 95 % interval and the majority-class rate,
    balanced accuracy, F1 (out-of-context positive), macro-F1,
    kappa; unparseable answers counted apart and counted wrong; the untrained
    base as baseline; reasoning consistency and ROUGE-L; errors per object and
    scene; the shortcut test on unmodified images. Writes OUT/metrics.json and
    a self-contained OUT/report.html.
    """
    from scenefit.evaluate.runner import EvaluateError, evaluate_dirs
    from scenefit.predict import StudentError
    from scenefit.models.loading import DeviceError

    crit_list = [c.strip() for c in criteria.split(",") if c.strip()] if criteria else None
    cfg = load_config("evaluate", config, sets, split=split, originals=originals, limit=limit, criteria=crit_list,
                      baseline=baseline, explain=explain,
                      **{"predict.base": base, "predict.batch_size": batch_size, "predict.device": device})
    for label, path in (("--students", students), ("--data", data)):
        if not path.is_dir():
            fail(f"{label} {path}: not a folder")
    try:
        with Progress(enabled=sys.stderr.isatty(), unit="sample") as bars:
            metrics, json_path, html_path = evaluate_dirs(students, data, out, cfg, progress=bars)
    except (EvaluateError, FileNotFoundError, StudentError, DeviceError) as e:
        fail(str(e))
        return
    synthetic_banner(metrics.get("synthetic", False))
    reasoning = [c for c, f in (metrics.get("answer_formats") or {}).items() if f == "reasoning_first"]
    if reasoning:
        console.print(f"note: {', '.join(reasoning)} student(s) answer reasoning_first: their decisions were read "
                      "from the generated 'Final decision:' line (no fast path, no decision probability)")
    print_headline(metrics)
    if metrics.get("failed"):
        console.print(f"[yellow]{metrics['failed']} sample(s) could not be evaluated; see {Path(out) / 'errors.jsonl'}[/]")
    console.print(f"report: [bold]{html_path}[/]\nmetrics: {json_path}")
    if json_out:
        from scenefit.evaluate.report import headline_rows

        print_json(headline_rows(metrics))


def print_headline(metrics: dict) -> None:
    """The headline on stderr, narrow enough for an 80-column terminal: per criterion and
    reference (teacher labels, truth when known), balanced accuracy and accuracy, each with its
    95 % interval, the majority-class rate beside them, and the untrained base's balanced
    accuracy; unparseable answers are counted below. metrics.json and the report hold the rest
    (macro-F1, the baseline's accuracy with its interval, per-label scores)."""
    from rich import box
    from rich.table import Table

    from scenefit.evaluate.metrics import headline_value
    from scenefit.evaluate.report import headline_rows, pct_ci

    def pct(x):
        return "–" if x is None else f"{100 * x:.1f}%"

    rows = headline_rows(metrics)
    refs = [("", "teacher")] + ([("_vs_truth", "truth")] if any(r["accuracy_vs_truth"] is not None for r in rows) else [])
    t = Table(title=f"students on {metrics.get('split')}" + (" (SYNTHETIC)" if metrics.get("synthetic") else ""),
              box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1), pad_edge=False, collapse_padding=True)
    for col in ("criterion", "vs", "n", "balanced\n[95% CI]", "accuracy\n[95% CI]", "majority", "base"):
        t.add_column(col, justify="left" if col in ("criterion", "vs") else "right", no_wrap=True)
    for r in rows:
        for suffix, ref in refs:
            g = lambda key, prefix="": headline_value(r, key, prefix, suffix)  # noqa: E731
            t.add_row(r["criterion"], ref, str(r["n"]), pct_ci(g("balanced_accuracy"), g("balanced_accuracy_ci95"), "%", 0),
                      pct_ci(g("accuracy"), g("accuracy_ci95"), "%", 0), pct(g("majority_rate")),
                      pct(g("balanced_accuracy", "baseline_")))
    console.print(t)
    console.print("base: the untrained base model's balanced accuracy; majority: the share of the commonest label "
                  "(what always answering it scores)")
    unparseable = {r["criterion"]: r["unparseable"] for r in rows if r.get("unparseable")}
    if unparseable:
        console.print("unparseable answers (counted wrong): " + ", ".join(f"{k} {v}" for k, v in unparseable.items()))
    sc = metrics.get("shortcut") or {}
    if sc.get("available"):
        order = [*metrics.get("criteria", []), "fused"]
        shares = ", ".join(f"{k} {pct(sc['in_context_share'][k])}" for k in order if k in sc["in_context_share"])
        console.print(f"shortcut test (in-context on {sc['n']} unmodified images; robust ≥ {pct(sc['threshold'])}): {shares}")
