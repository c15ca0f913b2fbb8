"""`scenefit evaluate` — students (and the untrained base) on a dataset split: metrics.json and report.html.

    scenefit evaluate --students runs/demo/students --data runs/demo/datasets --split test \
        --out runs/demo/report --config demo
    scenefit evaluate --students runs/s --data runs/d --out runs/r --originals originals.jsonl --no-baseline
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
from scenefit.core.progress import Progress, progress_enabled


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
    from scenefit.models.loading import DeviceError
    from scenefit.predict import StudentError

    crit_list = [c.strip() for c in criteria.split(",") if c.strip()] if criteria else None
    cfg = load_config("evaluate", config, sets, split=split, originals=originals, limit=limit, criteria=crit_list,
                      baseline=baseline, explain=explain,
                      **{"predict.base": base, "predict.batch_size": batch_size, "predict.device": device})
    for label, path in (("--students", students), ("--data", data)):
        if not path.is_dir():
            fail(f"{label} {path}: not a folder")
    try:
        with disk_errors(out, "run the same command again"), Progress(enabled=progress_enabled(), unit="sample") as bars:
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


def decision_line(metrics: dict) -> str:
    """Which decision the headline scores, per criterion, and the other one beside it with their agreement."""
    def pct(x):
        return "–" if x is None else f"{100 * x:.1f}%"

    words = {"logits": "the logits after the forced prefix (what predict/serve report)",
             "generated_text": "the label in the generated text"}
    parts, scored = [], set()
    for name in metrics.get("criteria", []):
        d = (metrics.get(name) or {}).get("decision") or {}
        if not d:
            continue
        scored.add(d["scored"])
        if d.get("other"):
            o = d["other"]
            parts.append(f"{name}: logits {pct(o['balanced_accuracy'])} balanced vs teacher, agreement {pct(o['agreement'])}")
    head = "decision scored: " + ("; ".join(words[k] for k in sorted(scored)) or "–")
    return head + (" — the other decision beside it: " + ", ".join(parts) if parts else "")


def print_headline(metrics: dict) -> None:
    """The headline on stderr, narrow enough for an 80-column terminal: per criterion and
    reference (teacher labels, truth when known), balanced accuracy with its 95 % interval and
    accuracy, the majority-class rate beside them, the untrained base's balanced accuracy (the
    floor), the linear probe's (when run) and the designated teacher's vs the truth; the shortcut
    test with each criterion's Out recall; unparseable answers are counted below. metrics.json
    and the report hold the rest (macro-F1, every interval, per-label scores)."""
    from rich import box
    from rich.table import Table

    from scenefit.evaluate.metrics import headline_value
    from scenefit.evaluate.report import headline_rows, pct_ci

    def pct(x):
        return "–" if x is None else f"{100 * x:.1f}%"

    rows = headline_rows(metrics)
    refs = [("", "teacher")] + ([("_vs_truth", "truth")] if any(r["accuracy_vs_truth"] is not None for r in rows) else [])
    probe = any(r.get("probe_balanced_accuracy") is not None for r in rows)
    t = Table(title=f"students on {metrics.get('split')}" + (" (SYNTHETIC)" if metrics.get("synthetic") else ""),
              box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 0), pad_edge=False, collapse_padding=True)
    cols = ["criterion", "vs", "n", "balanced\n[95% CI]", "accuracy", "majority", "floor"]
    cols += (["probe"] if probe else []) + (["teacher"] if len(refs) > 1 else [])
    for col in cols:
        t.add_column(col, justify="left" if col in ("criterion", "vs") else "right", no_wrap=True)
    for r in rows:
        for suffix, ref in refs:
            g = lambda key, prefix="": headline_value(r, key, prefix, suffix)  # noqa: E731
            cells = [r["criterion"], ref, str(r["n"]), pct_ci(g("balanced_accuracy"), g("balanced_accuracy_ci95"), "%", 0),
                     pct(g("accuracy")), pct(g("majority_rate")),
                     pct(g("balanced_accuracy", "baseline_"))]
            cells += [pct(g("balanced_accuracy", "probe_"))] if probe else []
            # the teacher against itself is 100 % by definition: its own score is read against the truth
            cells += ([pct(g("balanced_accuracy", "teacher_")) if suffix else ""] if len(refs) > 1 else [])
            t.add_row(*cells)
    console.print(t)
    console.print("balanced accuracy throughout. floor: the untrained base (it answers about one label: a floor, not "
                  "a baseline); majority: what always answering the commonest label scores"
                  + ("; probe: a linear read-out of the frozen base's features, fitted on the training labels (the "
                     "informative baseline)" if probe else "")
                  + ("; teacher: the designated teacher's own labels vs the truth" if len(refs) > 1 else ""))
    console.print(decision_line(metrics))
    unparseable = {r["criterion"]: r["unparseable"] for r in rows if r.get("unparseable")}
    if unparseable:
        console.print("unparseable answers (counted wrong): " + ", ".join(f"{k} {v}" for k, v in unparseable.items()))
    sc = metrics.get("shortcut") or {}
    if sc.get("available"):
        order = [k for k in (*metrics.get("criteria", []), "fused") if k in sc["in_context_share"]]
        recall = sc.get("recall_out_on_split") or {}
        shares = ", ".join(f"{k} {pct(sc['in_context_share'][k])}"
                           + (f" (Out recall {pct(recall[k])})" if recall.get(k) is not None else "") for k in order)
        console.print(f"shortcut test (in-context on {sc['n']} unmodified images; robust ≥ {pct(sc['threshold'])} with "
                      f"Out recall on the split ≥ {pct(sc.get('min_recall'))}): {shares}")
        weak = [k for k in order if (sc.get("verdict") or {}).get(k) == "uninformative"]
        if weak:
            console.print(f"[yellow]uninformative (seldom answers Out, so in-context here says little): {', '.join(weak)}[/]")
