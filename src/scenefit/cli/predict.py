"""`scenefit predict` — use the trained students on images.

    scenefit predict --demo --image photo.jpg --object zebra --box 10,20,200,220
    scenefit predict --students runs/x/students --manifest samples.csv --out preds.parquet --explain
    scenefit predict --demo --image boxed.png --object cow --boxed --json

``predict`` loads one base model with the three criterion adapters (see
:mod:`scenefit.predict`) and prints, per criterion, the label, its probability and (with
``--explain``) the explanation, plus the fused decision. On a terminal it prints a table; when
stdout is not a terminal, or with ``--json``, it prints JSON. Items that cannot be judged get an
error line naming the item; the others go on. Students trained reasoning-first
(``datasets.answer_format``, recorded in each student) have no one-pass fast path: their answers
are always generated and the decision read from the ``Final decision:`` line (a note says so;
``--no-explain``, an explicit request for the fast path, is refused with the students' names).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from scenefit.core.errors import error_row
from scenefit.core.progress import Progress
from scenefit.cli import app
from scenefit.cli.common import (
    ConfigOpt, SetOpt, console, demo_students, error_line, examples, fail, fhelp, load_config, print_json, synthetic_banner,
)

OUT_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def _criteria_arg(value: Optional[str]) -> Optional[list[str]]:
    return [c.strip() for c in value.split(",") if c.strip()] if value else None


@app.command("predict", epilog=examples(__doc__, "predict"))
def predict_cmd(
    image: Annotated[Optional[Path], typer.Option("--image", help="One image to judge (with --object and --box or --boxed).")] = None,
    object_name: Annotated[Optional[str], typer.Option("--object", help="Name of the boxed object, e.g. zebra.")] = None,
    box: Annotated[Optional[str], typer.Option("--box", help="Box in pixels: x0,y0,x1,y1 (drawn in red unless --boxed).")] = None,
    boxed: Annotated[bool, typer.Option("--boxed", help="The image already carries the red box.")] = False,
    manifest: Annotated[Optional[Path], typer.Option("--manifest", help="Many items: .jsonl, .csv or .parquet (see `scenefit ingest --help` for columns).")] = None,
    fmt: Annotated[Optional[str], typer.Option("--format", help="Manifest format when the suffix does not say: jsonl, csv, parquet.")] = None,
    images_dir: Annotated[Optional[Path], typer.Option("--images-dir", help="Folder that the manifest's relative image paths resolve against.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write one row per item to FILE.jsonl, FILE.csv or FILE.parquet.")] = None,
    explain: Annotated[Optional[bool], typer.Option("--explain/--no-explain", help=fhelp("predict", "explain"))] = None,
    students: Annotated[Optional[Path], typer.Option("--students", help=fhelp("predict", "students"))] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Use the students `make demo` trained ($DEMO_DIR/students, default runs/demo/students).")] = False,
    baseline: Annotated[bool, typer.Option("--baseline", help="Judge with the untrained base model (--base, or the students' base) and no adapters.")] = False,
    base: Annotated[Optional[str], typer.Option("--base", help=fhelp("predict", "base"))] = None,
    criteria: Annotated[Optional[str], typer.Option("--criteria", help="Comma-separated criteria to judge (default: all three).")] = None,
    device: Annotated[Optional[str], typer.Option(help=fhelp("predict", "device"))] = None,
    dtype: Annotated[Optional[str], typer.Option(help=fhelp("predict", "dtype"))] = None,
    batch_size: Annotated[Optional[int], typer.Option(help=fhelp("predict", "batch_size"))] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option(help=fhelp("predict", "max_new_tokens"))] = None,
    box_width: Annotated[Optional[int], typer.Option(help=fhelp("predict", "box_width"))] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON even on a terminal.")] = False,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Judge images on location, size and co-occurrence with the trained students.

    Exit status: 0 when every item was judged, 1 when some (or all) could not be, 2 on a usage error.
    """
    students = _check_flags(image, object_name, box, boxed, manifest, out, demo, students)
    cfg = load_config("predict", config, sets, explain=explain, students=str(students) if students else None,
                      base=base, criteria=_criteria_arg(criteria), device=device, dtype=dtype,
                      batch_size=batch_size, max_new_tokens=max_new_tokens, box_width=box_width)
    from scenefit.core.records import is_synthetic

    items, read_errors = _read_items(image, object_name, box, boxed, manifest, fmt, images_dir)
    predictor = _load_predictor(cfg, baseline)
    _check_fast_path(predictor, explain)
    synthetic = is_synthetic(*items, *predictor.students.values())
    with Progress(enabled=sys.stderr.isatty() and len(items) > 1, unit="item") as bars:
        bars.bar("predict", len(items))
        predictions = predictor.predict(items, progress=bars)

    rows = _rows(items, predictions, synthetic) + [_error_row(e) for e in read_errors]
    n_bad = sum(not p.ok for p in predictions) + len(read_errors)
    _report(predictions, len(read_errors), rows, out, synthetic)
    if json_out or not sys.stdout.isatty():
        _print_json(predictions, read_errors, rows, n_bad, single=image is not None, out=out)
    elif out is None:
        _print_tables(predictions)
    if n_bad:
        raise typer.Exit(1)


def _check_flags(image: Optional[Path], object_name: Optional[str], box: Optional[str], boxed: bool,
                 manifest: Optional[Path], out: Optional[Path], demo: bool, students: Optional[Path]) -> Optional[Path]:
    """Usage errors (exit 2) before anything loads; the students folder (--demo resolved)."""
    if (image is None) == (manifest is None):
        fail("give either --image (with --object and --box or --boxed) or --manifest")
    if image is not None and not object_name:
        fail("--image needs --object NAME")
    if image is not None and box is None and not boxed:
        fail("--image needs --box x0,y0,x1,y1, or --boxed when the image already carries the red box")
    if out is not None and out.suffix.lower() not in OUT_FORMATS:
        fail(f"--out {out}: use a .jsonl, .csv or .parquet file")
    if demo and students is not None:
        fail("give either --demo or --students, not both")
    if demo:
        students = demo_students()
        if not students.is_dir():
            fail(f"no demo students at {students}: run `make demo` first (or set DEMO_DIR)")
    return students


def _read_items(image: Optional[Path], object_name: Optional[str], box: Optional[str], boxed: bool,
                manifest: Optional[Path], fmt: Optional[str], images_dir: Optional[Path]) -> tuple[list, list[dict]]:
    """The items to judge (the one --image, or the manifest's good rows) and the manifest rows
    that could not be read (each printed as an error line)."""
    from scenefit.core.images import ImageError, parse_box
    from scenefit.predict import PredictItem
    from scenefit.data.manifest import ManifestError, read_manifest

    if image is not None:
        try:
            parsed_box = parse_box(box)
        except ImageError as e:
            fail(f"--box: {e.message}")
        return [PredictItem(str(image), object_name or "", parsed_box, boxed, id=str(image))], []
    try:
        samples, read_errors = read_manifest(manifest, fmt=fmt, images_dir=images_dir)
    except ManifestError as e:
        fail(str(e))
    for err in read_errors:
        error_line(f"{err['id']}: {err['message']} ({err['code']})")
    return samples, read_errors


def _load_predictor(cfg, baseline: bool):
    """The students of ``cfg`` (one base + adapters), or with ``baseline`` the bare base."""
    from scenefit.predict import Predictor, StudentError

    try:
        if not baseline:
            if not cfg.students:
                fail("no students: pass --students DIR, --demo, or --baseline --base MODEL")
            return Predictor.from_students(cfg.students, config=cfg)
        base_ref = cfg.base
        if not base_ref and cfg.students:
            from scenefit.predict.students import choose_base, find_students

            base_ref = choose_base(find_students(cfg.students, [c for c in _crits(cfg)]), None)
        if not base_ref:
            fail("--baseline needs --base MODEL or --students DIR (whose base is used)")
        return Predictor.baseline(base_ref, config=cfg)
    except (StudentError, OSError, ValueError) as e:
        fail(str(e))


def _check_fast_path(predictor, explain: Optional[bool]) -> None:
    """A reasoning-first student always generates: say so, and refuse an explicit --no-explain."""
    slow = predictor.fast_path_note()
    if slow and explain is False:
        # --no-explain asks for the one-pass decision, which a reasoning-first student cannot give
        fail(f"--no-explain asks for the fast path, but {slow}; drop --no-explain (its answers are generated "
             "anyway) or use students built with datasets.answer_format=decision_first")
    if slow:
        console.print(f"[yellow]note:[/] {slow}")


def _report(predictions, n_read_errors: int, rows: list[dict], out: Optional[Path], synthetic: bool) -> None:
    """On stderr: each item that could not be judged, the --out file written, the synthetic
    banner, explanations that disagree with the decision, and the count of judged items."""
    for p in predictions:
        if not p.ok:
            error_line(f"{p.error['message']} ({p.error['code']})")
    if out is not None:
        _write_rows(rows, out, synthetic)
        console.print(f"wrote {len(rows)} rows to {out}")
    synthetic_banner(synthetic)
    disagree = sum(len(p.disagreements) for p in predictions)
    if disagree:
        console.print(f"[yellow]note:[/] {disagree} explanation(s) name another label than the decision logits "
                      "(the explanation's label is reported; see *_agrees_with_fast in --out)")
    if len(predictions) + n_read_errors > 1:
        n_bad = sum(not p.ok for p in predictions) + n_read_errors
        console.print(f"judged {sum(p.ok for p in predictions)} item(s), {n_bad} could not be judged")


def _print_json(predictions, read_errors: list[dict], rows: list[dict], n_bad: int, single: bool,
                out: Optional[Path]) -> None:
    """stdout: the one item's verdict, every item's (with the unreadable rows as errors), or with
    --out a summary of the file."""
    if single:
        print_json(predictions[0].to_json())
    elif out is None:
        print_json([{"id": p.id, **p.to_json()} for p in predictions]
                   + [error_row(e["id"], e["code"], e["message"]) for e in read_errors])
    else:
        print_json({"out": str(out), "rows": len(rows), "judged": sum(p.ok for p in predictions), "errors": n_bad})


def _crits(cfg):
    from scenefit.core.criteria import Criterion

    return [Criterion.parse(c) for c in cfg.criteria]


def _rows(items, predictions, synthetic: bool) -> list[dict]:
    from scenefit import SYNTHETIC_NOTICE
    from scenefit.predict import to_item

    rows = []
    for i, (item, p) in enumerate(zip(items, predictions)):
        it = to_item(item, i)
        row = {"image": str(it.image), "object": it.object, **p.to_record()}
        if synthetic:
            row["notice"] = SYNTHETIC_NOTICE
        rows.append(row)
    return rows


def _error_row(err: dict) -> dict:
    return error_row(err["id"], err["code"], err["message"])


def _write_rows(rows: list[dict], out: Path, synthetic: bool) -> None:
    import pandas as pd

    from scenefit import SYNTHETIC_NOTICE
    from scenefit.core.files import atomic_path

    kind = OUT_FORMATS[out.suffix.lower()]
    with atomic_path(out) as tmp:
        if kind == "jsonl":
            tmp.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows))
        elif kind == "csv":
            pd.DataFrame(rows).to_csv(tmp, index=False)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
            meta = {"notice": SYNTHETIC_NOTICE} if synthetic else {}
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"scenefit": json.dumps(meta).encode()})
            pq.write_table(table, tmp)


def _print_tables(predictions) -> None:
    from rich.console import Console
    from rich.table import Table

    from scenefit.core.criteria import CRITERIA

    stdout = Console()
    for p in predictions:
        if not p.ok:
            continue
        table = Table(title=f"{p.id}: final {p.final.value if p.final else 'unknown'}", title_justify="left")
        table.add_column("criterion")
        table.add_column("label")
        table.add_column("probability", justify="right")
        table.add_column("explanation")
        for c in CRITERIA:
            r = p.criteria.get(c)
            if r is None:
                continue
            colour = "red" if r.label and r.label.is_out else "green"
            note = "" if r.agrees_with_fast is not False else f" [yellow](logits say {r.fast_label.value})[/]"
            table.add_row(c.display, f"[{colour}]{r.label.value if r.label else '?'}[/]", "–" if r.probability is None else f"{r.probability:.3f}",
                          (r.analysis or "") + note)
        stdout.print(table)
