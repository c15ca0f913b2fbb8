"""`scenefit ingest` — validate a manifest and its images, draw missing red boxes, normalise.

    scenefit ingest runs/demo/world/manifest.parquet --out runs/demo/ingest --config demo
    scenefit ingest paper.csv --out ingest/ --layout paper --images-dir images/ --strict
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
    print_json,
    summary_table,
    synthetic_banner,
)
from scenefit.core.progress import Progress, progress_enabled


@app.command("ingest", epilog=examples(__doc__, "ingest"))
def ingest_cmd(
    manifest: Annotated[Path, typer.Argument(help="Manifest of samples: .jsonl, .csv or .parquet.")],
    out: Annotated[Path, typer.Option("--out", "-o", file_okay=False, help="Output folder: manifest.parquet, errors.jsonl, images/.")],
    config: ConfigOpt = None,
    sets: SetOpt = None,
    layout: Annotated[Optional[str], typer.Option(help=fhelp("ingest", "layout"))] = None,
    images_dir: Annotated[Optional[Path], typer.Option(help=fhelp("ingest", "images_dir"))] = None,
    box_width: Annotated[Optional[int], typer.Option(help=fhelp("ingest", "box_width"))] = None,
    max_pixels: Annotated[Optional[int], typer.Option(help=fhelp("ingest", "max_pixels"))] = None,
    workers: Annotated[Optional[int], typer.Option(help=fhelp("ingest", "workers"))] = None,
    strict: Annotated[Optional[bool], typer.Option("--strict/--no-strict", help=fhelp("ingest", "strict"))] = None,
    fmt: Annotated[
        Optional[str], typer.Option("--format", help="Manifest format when the suffix does not say: jsonl, csv, parquet.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Also print the summary as JSON on stdout.")] = False,
) -> None:
    """Validate every sample and its image, box what is unboxed, write the normalised manifest.

    Bad samples (missing or hostile images, bad boxes, bad rows) go to OUT/errors.jsonl with a
    reason code; the rest of the batch goes on. Exit status is 0 unless --strict and a sample
    was rejected (then 1).
    """
    from scenefit.data.ingest import copies_line, ingest
    from scenefit.data.manifest import ManifestError

    cfg = load_config(
        "ingest", config, sets, layout=layout, images_dir=str(images_dir) if images_dir else None,
        box_width=box_width, max_pixels=max_pixels, workers=workers, strict=strict,
    )
    try:
        # the bar appears once the manifest is read (not before its error), and is gone before
        # any error line below it
        with Progress(enabled=progress_enabled(), unit="sample") as bars:
            result = ingest(manifest, out, cfg, fmt=fmt, progress=bars)
    except ManifestError as e:
        fail(str(e))
        return
    summary = result.summary()
    synthetic_banner(result.synthetic)
    rows = {"input rows": summary["input_rows"], "ok": summary["ok"], "rejected": summary["rejected"]}
    if summary["input_lines"] is not None:
        rows = {"input lines": summary["input_lines"], **rows}
    rows.update({f"  rejected: {code}": n for code, n in summary["rejected_by_code"].items()})
    rows.update({"boxes drawn": summary["boxes_drawn"], "already boxed": summary["already_boxed"],
                 "boxes clipped to the image": summary["boxes_clipped"]})
    summary_table(f"ingest -> {out}", rows)
    console.print(copies_line(summary["boxed_copies"], cfg.jpeg_quality))
    if result.line_note:
        console.print(f"[yellow]{escape(result.line_note)}[/]")
    if result.errors:
        console.print(f"rejected samples and reasons: {out / 'errors.jsonl'}")
    if json_out:
        print_json(summary)
    if cfg.strict and result.errors:
        console.print(f"[bold red]--strict:[/] {len(result.errors)} sample(s) rejected")
        raise typer.Exit(1)
