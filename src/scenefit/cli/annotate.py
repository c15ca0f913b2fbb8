"""`scenefit annotate`, `scenefit parse`, `scenefit import-answers` — teacher answers in the store.

    scenefit annotate runs/demo/ingest/manifest.parquet --db runs/demo/annotate/annotations.sqlite --config demo
    scenefit annotate M --db DB --base-url http://localhost:8000/v1 --model Qwen/Qwen2.5-VL-72B-Instruct
    scenefit annotate M --db DB --config paper --prompt-file authors_prompt.txt
    scenefit annotate M --db DB --config paper --prompt-version v1
    scenefit parse --text-file answer.txt --json
    scenefit parse --db runs/demo/annotate/annotations.sqlite
    scenefit import-answers qwen72b.csv --teacher qwen72b --db annotations.sqlite
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
    escape,
    examples,
    fail,
    fhelp,
    load_config,
    open_store,
    print_json,
    summary_table,
    synthetic_banner,
)

DbOpt = Annotated[Path, typer.Option("--db", help="The annotation store (SQLite); created when missing.", dir_okay=False)]


@app.command("annotate", epilog=examples(__doc__, "annotate"))
def annotate_cmd(
    manifest: Annotated[Path, typer.Argument(help="Normalised manifest from `scenefit ingest` (or any .parquet/.jsonl/.csv manifest).")],
    db: DbOpt,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    teacher: Annotated[Optional[list[str]], typer.Option("--teacher", help=fhelp("annotate", "only") + " Repeatable.")] = None,
    prompt_file: Annotated[Optional[Path], typer.Option(help=fhelp("annotate", "prompt_file"), dir_okay=False)] = None,
    prompt_variant: Annotated[Optional[str], typer.Option(help=fhelp("annotate", "prompt_variant"))] = None,
    prompt_version: Annotated[Optional[str], typer.Option(help=fhelp("annotate", "prompt_version"))] = None,
    redo_failed: Annotated[Optional[bool], typer.Option("--redo-failed/--no-redo-failed", help=fhelp("annotate", "redo_failed"))] = None,
    limit: Annotated[Optional[int], typer.Option(help=fhelp("annotate", "limit"))] = None,
    progress: Annotated[Optional[bool], typer.Option("--progress/--no-progress", help=fhelp("annotate", "progress"))] = None,
    lock_wait: Annotated[Optional[float], typer.Option("--lock-wait", help=fhelp("annotate", "lock_wait_s"))] = None,
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="Ask one OpenAI-compatible teacher at this endpoint (ending in /v1) instead of the config's teachers; needs --model.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="With --base-url: the model id the endpoint serves; the answers are stored under its last path part as the teacher name.")] = None,
    api_key_env: Annotated[Optional[str], typer.Option("--api-key-env", help="With --base-url: the environment variable holding the endpoint's API key.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Also print the run summary as JSON on stdout.")] = False,
) -> None:
    """Ask every configured teacher about every sample; store raw answers, parses and provenance.

    Resumable: a rerun skips every (sample, teacher, prompt hash) already stored — also request
    failures, unless --redo-failed. Answers are committed in batches, so a killed run loses at
    most the answers not yet committed (Ctrl-C commits them). Failures are stored with their reason, never dropped.
    One run at a time works on a store: a second one refuses, or waits with --lock-wait.
    """
    cfg = load_config(
        "annotate", config, sets, teachers=_one_teacher(base_url, model, api_key_env),
        only=teacher or None, prompt_file=str(prompt_file) if prompt_file else None,
        prompt_variant=prompt_variant, prompt_version=prompt_version, redo_failed=redo_failed, limit=limit,
        progress=progress, lock_wait_s=lock_wait,
    )
    try:
        _annotate(manifest, db, cfg, json_out)
    except KeyboardInterrupt:
        from scenefit.teachers.store import stored_answers

        # Ctrl-C at any moment — before the teachers start, mid-run, during the last commit or
        # the summary — ends the same way: 130, what is stored, and how to continue.
        console.print(f"[yellow]interrupted[/]: {stored_answers(db)} answers are in {escape(str(db))}; "
                      "run the same command again to continue where it stopped")
        raise typer.Exit(130) from None


def _one_teacher(base_url: Optional[str], model: Optional[str], api_key_env: Optional[str]) -> Optional[list[dict]]:
    """--base-url URL --model NAME: one openai teacher in place of the config's (None: the config's)."""
    if base_url is None and model is None:
        if api_key_env is not None:
            fail("--api-key-env goes with --base-url URL --model NAME")
        return None
    if not (base_url and model):
        fail("--base-url and --model go together: the endpoint (ending in /v1) and the model id it serves")
    name = "".join(model.rstrip("/").split("/")[-1].split()) or "teacher"
    return [{"name": name, "backend": "openai", "model": model, "base_urls": [base_url], "api_key_env": api_key_env}]


def _annotate(manifest: Path, db: Path, cfg, json_out: bool) -> None:
    import asyncio

    from scenefit import SYNTHETIC_NOTICE
    from scenefit.core.records import is_synthetic
    from scenefit.data.manifest import ManifestError, read_manifest
    from scenefit.teachers.annotate import annotate_async
    from scenefit.teachers.store import StoreError

    if not cfg.selected():
        fail("no teachers configured: pass --base-url URL --model NAME (one OpenAI-compatible teacher), or --config "
             "with an `annotate: teachers:` list (`scenefit init DIR` writes one; `scenefit configs` lists the packaged ones)")
    try:
        samples, errors = read_manifest(manifest)
    except ManifestError as e:
        fail(str(e))
        return
    if errors:
        console.print(f"[yellow]{len(errors)} manifest row(s) skipped[/] (first: {escape(errors[0]['message'])})")
    if not samples:
        fail(f"{manifest}: no usable samples")
    synthetic = is_synthetic(*samples)
    synthetic_banner(synthetic)
    with open_store(db) as store:
        try:
            if synthetic:
                store.set_meta("notice", SYNTHETIC_NOTICE)
            summary = asyncio.run(annotate_async(samples, cfg, store, manifest_path=manifest))
        except StoreError as e:  # full disk, read-only store: one clear line, what is stored is kept
            fail(f"annotate: {e}")
            return
        except (RuntimeError, ValueError, FileNotFoundError, ImportError) as e:
            fail(f"annotate: {e}")
            return
    _print_summary(summary, db)
    synthetic_banner(synthetic)
    if json_out:
        print_json(summary.to_json() | ({"notice": SYNTHETIC_NOTICE} if synthetic else {}))


def _print_summary(summary, db: Path) -> None:
    """One line per teacher: stored, skipped, failed by reason, parse statuses."""
    from rich.table import Table

    table = Table(title=f"annotate -> {db}  (prompt {summary.prompt_name} {summary.prompt_hash}, "
                        f"{summary.samples} samples, {summary.elapsed_s:.1f} s)")
    for col in ("teacher", "backend", "stored", "skipped", "failed", "parse"):
        table.add_column(col)
    for name, t in summary.teachers.items():
        failed = ", ".join(f"{k} {v}" for k, v in sorted(t.failed_by_reason.items())) or "0"
        parse = ", ".join(f"{k} {v}" for k, v in sorted(t.by_status.items()) if k != "failed") or "-"
        table.add_row(name, t.backend, str(t.stored), str(t.skipped), failed, parse)
    table.caption = ("stored: rows this run wrote; skipped: stored by an earlier run or meanwhile by another "
                     "writer (--redo-failed retries failures)")
    console.print(table)


@app.command("parse", epilog=examples(__doc__, "parse"))
def parse_cmd(
    text_file: Annotated[Optional[Path], typer.Option("--text-file", help="Parse one answer from this file ('-' = stdin).", dir_okay=False)] = None,
    db: Annotated[Optional[Path], typer.Option("--db", help="Re-parse every stored raw answer in this store.", dir_okay=False)] = None,
    teacher: Annotated[Optional[str], typer.Option("--teacher", help="With --db: only this teacher's answers.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Parse one teacher answer (--text-file), or re-parse a store after the parser improved (--db)."""
    from scenefit.teachers.parse import parse_teacher_answer

    if (text_file is None) == (db is None):
        fail("give exactly one of --text-file FILE or --db STORE")
    if text_file is not None:
        import sys

        if str(text_file) == "-":
            text = sys.stdin.read()
        elif not text_file.is_file():
            fail(f"text file not found: {text_file}")
            return
        else:
            text = text_file.read_text(encoding="utf-8", errors="replace")
        result = parse_teacher_answer(text).to_json()
        if json_out:
            print_json(result)
        else:
            rows = {f"label {k}": v for k, v in result["labels"].items()}
            rows.update({"final": result["final"], "status": result["status"], "reason": result["reason"] or ""})
            rows.update({f"analysis {k}": v for k, v in result["analyses"].items()})
            summary_table("parse", rows)
        return

    if not db.is_file():
        fail(f"store not found: {db}")
    with open_store(db) as store:
        counts = store.reparse(parse_teacher_answer, teacher=teacher)
    summary_table(f"re-parse {db}", {
        "answers": counts["rows"], "changed": counts["changed"],
        "status before": counts["status_before"], "status after": counts["status_after"],
    })
    if json_out:
        print_json(counts)


@app.command("import-answers", epilog=examples(__doc__, "import-answers"))
def import_answers_cmd(
    file: Annotated[Path, typer.Argument(help="CSV or JSONL of (sample id, raw answer), e.g. the paper's coco_index,response files.")],
    teacher: Annotated[str, typer.Option("--teacher", help="Teacher name to store the answers under.")],
    db: DbOpt,
    prompt_hash: Annotated[Optional[str], typer.Option("--prompt-hash", help="Prompt hash to store them under (same for every imported teacher, so consensus can compare them). \\[default: imported]")] = None,
    model_id: Annotated[Optional[str], typer.Option("--model-id", help="Model id to record (default: the teacher name).")] = None,
    id_column: Annotated[Optional[str], typer.Option(help="Column of the sample id (default: sample_id, id or coco_index).")] = None,
    answer_column: Annotated[Optional[str], typer.Option(help="Column of the answer (default: response, raw, answer, text or output).")] = None,
    errors: Annotated[Optional[Path], typer.Option("--errors", dir_okay=False, help="Where the rejected rows go, one JSON line each (default: import-errors-TEACHER.jsonl beside the store).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Also print the counts as JSON on stdout.")] = False,
) -> None:
    """Load existing answers into the store, parsed like any other (reruns skip stored keys).

    The whole file is checked first and its good rows are stored in one transaction; each bad
    row (no id, a repeated id, an unclosed quote, bytes that are not UTF-8, a huge cell) is one
    error line naming the file and its line, and the rest goes on. Optional columns
    p_out_location, p_out_size, p_out_co_occurrence, p_out_final hold the teacher's probabilities
    of Out-of-context (0 to 1, or empty); another value is an error naming its line and column.
    """
    from scenefit.core.files import safe_stem
    from scenefit.teachers.import_answers import IMPORTED_PROMPT_HASH, import_answers

    # one file per teacher: names differing only in unsafe characters ('a/b', 'a_b') get their own
    errors = errors or db.parent / f"import-errors-{safe_stem(teacher)}.jsonl"
    try:
        with open_store(db) as store:
            res = import_answers(file, store, teacher, prompt_hash or IMPORTED_PROMPT_HASH, model_id, id_column,
                                 answer_column, errors_path=errors)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
        return
    rows = {k: res[k] for k in ("rows", "accepted", "stored", "already_stored")}
    if res["lines"] is not None:
        rows = {"lines": res["lines"], **rows}
    rows["rejected rows"] = len(res["errors"])
    rows["parse"] = ", ".join(f"{k} {v}" for k, v in sorted(res["by_status"].items()))
    summary_table(f"import {file} as {teacher} -> {db}", rows)
    if res["line_note"]:
        console.print(f"[dim]{escape(res['line_note'])}[/]")
    for e in res["errors"][:5]:
        console.print(f"  [yellow]rejected[/] {escape(e['message'])}")
    if res["errors"]:
        console.print(f"rejected rows and reasons: {errors}")
    if json_out:
        print_json(res)
