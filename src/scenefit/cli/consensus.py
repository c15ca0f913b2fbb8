"""`scenefit consensus` — keep the samples the teachers agree on, and report their agreement.

    scenefit consensus --db runs/demo/annotate/annotations.sqlite \
        --manifest runs/demo/ingest/manifest.parquet --out runs/demo/consensus --config demo
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from scenefit.cli import app
from scenefit.cli.common import (
    ConfigOpt,
    JsonOpt,
    SetOpt,
    console,
    examples,
    fail,
    fhelp,
    load_config,
    open_store,
    print_json,
    synthetic_banner,
)


@app.command("consensus", epilog=examples(__doc__, "consensus"))
def consensus_cmd(
    db: Annotated[Path, typer.Option("--db", help="Annotation store (SQLite) written by `scenefit annotate`.")],
    manifest: Annotated[Path, typer.Option("--manifest", "-m", help="Normalised manifest (Parquet) of the samples.")],
    out: Annotated[Path, typer.Option("--out", "-o", file_okay=False, help="Output folder: consensus.parquet, report.json.")],
    config: ConfigOpt = None,
    sets: SetOpt = None,
    rule: Annotated[Optional[str], typer.Option(help=fhelp("consensus", "rule"))] = None,
    teachers: Annotated[
        Optional[str], typer.Option(help=fhelp("consensus", "teachers") + " Comma-separated.")
    ] = None,
    designated: Annotated[Optional[str], typer.Option(help=fhelp("consensus", "designated"))] = None,
    prompt_hash: Annotated[Optional[str], typer.Option(help=fhelp("consensus", "prompt_hash"))] = None,
    contradiction_usable: Annotated[
        Optional[bool],
        typer.Option("--contradiction-usable/--no-contradiction-usable", help=fhelp("consensus", "contradiction_usable")),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Keep the samples the teachers agree on; print and save the agreement report.

    Every rule is computed for the report; the configured one decides what is kept.
    """
    from scenefit.core.files import file_sha256
    from scenefit.data.consensus import build_consensus, write_consensus
    from scenefit.data.consensus_report import report_tables

    cfg = load_config(
        "consensus", config, sets, rule=rule, designated=designated, prompt_hash=prompt_hash,
        contradiction_usable=contradiction_usable,
        teachers=[t.strip() for t in teachers.split(",") if t.strip()] if teachers else None,
    )
    if not db.is_file():
        fail(f"annotation store not found: {db}")
    frame_manifest, manifest_meta = _read_manifest(manifest)
    with open_store(db) as store:
        answers = store.to_frame(prompt_hash=cfg.prompt_hash)
    if answers.empty:
        fail(f"{db} holds no answers" + (f" for prompt hash {cfg.prompt_hash}" if cfg.prompt_hash else ""))
    try:
        result = build_consensus(answers, frame_manifest, cfg, image_root=manifest.parent,
                                 box_style=manifest_meta.get("box_style"))
    except ValueError as e:
        fail(str(e))
        return
    inputs = {"annotations": file_sha256(db), "manifest": file_sha256(manifest)}
    paths = write_consensus(result, out, inputs)
    synthetic_banner(result.report["synthetic"])
    for table in report_tables(result.report):
        console.print(table)
    s = result.report["samples"]
    console.print(
        f"kept {s['kept']} of {s['manifest']} samples by rule [bold]{cfg.rule}[/] "
        f"(designated teacher {result.report['designated']}) -> {paths['consensus']}"
    )
    if s["answers_not_in_manifest"]:
        console.print(f"[yellow]{s['answers_not_in_manifest']} answer(s) name samples not in the manifest (ignored)[/]")
    if json_out:
        print_json(result.report)



def _read_manifest(path: Path):
    from scenefit.core.parquet_io import read_table

    if not path.is_file():
        fail(f"manifest not found: {path}")
    try:
        frame, meta = read_table(path)  # relative image paths resolved against the manifest's folder
    except Exception as e:  # noqa: BLE001 - any unreadable file is a user error here
        fail(f"{path}: not a readable Parquet manifest ({e}); run `scenefit ingest` first")
    missing = [c for c in ("id", "image", "object") if c not in frame.columns]
    if missing:
        fail(f"{path}: manifest lacks column(s) {missing}; run `scenefit ingest` to normalise it")
    return frame, meta
