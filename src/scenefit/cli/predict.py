"""`scenefit predict` — use the trained students on images.

    scenefit predict --demo --image photo.jpg --object zebra --box 10,20,200,220
    scenefit predict --students runs/x/students --manifest samples.csv --out preds.parquet --explain
    scenefit predict --demo --image boxed.png --object cow --boxed --json
    scenefit predict --students runs/x/students --manifest big.parquet --out preds.parquet --engine ray --actors 2

``predict`` loads one base model with the three criterion adapters (see
:mod:`scenefit.predict`) and prints, per criterion, the label, its probability and (with
``--explain``) the explanation, plus the fused decision. On a terminal it prints a table; when
stdout is not a terminal, or with ``--json``, it prints JSON. Items that cannot be judged get an
error line naming the item; the others go on. Students trained reasoning-first
(``datasets.answer_format``, recorded in each student) have no one-pass fast path: their answers
are always generated and the decision read from the ``Final decision:`` line (a note says so;
``--no-explain``, an explicit request for the fast path, is refused with the students' names).
``--engine ray`` judges a manifest on a pool of Ray actors (:mod:`scenefit.predict.ray_engine`),
the same rows as in process, committed in shards so that a killed run resumes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from scenefit.cli import app
from scenefit.cli.common import (
    ConfigOpt,
    SetOpt,
    console,
    demo_students,
    error_line,
    examples,
    fail,
    fhelp,
    load_config,
    print_json,
    synthetic_banner,
)
from scenefit.core.errors import error_row
from scenefit.core.progress import Progress, progress_enabled

OUT_FORMATS = (".jsonl", ".ndjson", ".csv", ".parquet", ".pq")  # scenefit.predict.output.OUT_FORMATS (imported late)


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
    demo: Annotated[bool, typer.Option("--demo", help="Use the demo's students: $DEMO_DIR/students (default runs/demo/students, what `scenefit run --config demo --out runs/demo` trains).")] = False,
    baseline: Annotated[bool, typer.Option("--baseline", help="Judge with the untrained base model (--base, or the students' base) and no adapters.")] = False,
    base: Annotated[Optional[str], typer.Option("--base", help=fhelp("predict", "base"))] = None,
    criteria: Annotated[Optional[str], typer.Option("--criteria", help="Comma-separated criteria to judge (default: all three).")] = None,
    device: Annotated[Optional[str], typer.Option(help=fhelp("predict", "device"))] = None,
    dtype: Annotated[Optional[str], typer.Option(help=fhelp("predict", "dtype"))] = None,
    batch_size: Annotated[Optional[int], typer.Option(help=fhelp("predict", "batch_size"))] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option(help=fhelp("predict", "max_new_tokens"))] = None,
    box_width: Annotated[Optional[int], typer.Option(help=fhelp("predict", "box_width"))] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON even on a terminal.")] = False,
    engine: Annotated[Optional[str], typer.Option(help=fhelp("predict", "engine"))] = None,
    address: Annotated[Optional[str], typer.Option("--address", help=fhelp("predict", "ray_address"))] = None,
    actors: Annotated[Optional[int], typer.Option("--actors", help=fhelp("predict", "ray_actors"))] = None,
    cpus_per_actor: Annotated[Optional[float], typer.Option("--cpus-per-actor", help=fhelp("predict", "ray_cpus_per_actor"))] = None,
    gpus_per_actor: Annotated[Optional[float], typer.Option("--gpus-per-actor", help=fhelp("predict", "ray_gpus_per_actor"))] = None,
    shard_size: Annotated[Optional[int], typer.Option("--shard-size", help=fhelp("predict", "shard_size"))] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Judge images on location, size and co-occurrence with the trained students.

    Exit status: 0 when every item was judged, 1 when some (or all) could not be, 2 on a usage error.
    """
    students = _check_flags(image, object_name, box, boxed, manifest, out, demo, students)
    cfg = load_config("predict", config, sets, explain=explain, students=str(students) if students else None,
                      base=base, criteria=_criteria_arg(criteria), device=device, dtype=dtype,
                      batch_size=batch_size, max_new_tokens=max_new_tokens, box_width=box_width, engine=engine,
                      ray_address=address, ray_actors=actors, ray_cpus_per_actor=cpus_per_actor,
                      ray_gpus_per_actor=gpus_per_actor, shard_size=shard_size)
    if cfg.engine == "ray" and (manifest is None or out is None):
        fail("--engine ray judges a manifest into a file: give --manifest and --out")
    from scenefit.predict.output import prediction_rows, read_error_row

    items, read_errors = _read_items(image, object_name, box, boxed, manifest, fmt, images_dir)
    predictions = None
    if cfg.engine == "ray":
        pred_rows, synthetic = _predict_on_ray(cfg, items, baseline, explain, out)
    else:
        predictions, synthetic = _predict_in_process(cfg, items, baseline, explain)
        pred_rows = prediction_rows(items, predictions, synthetic)

    rows = pred_rows + [read_error_row(e) for e in read_errors]
    n_bad = sum(r["code"] is not None for r in pred_rows) + len(read_errors)
    _report(pred_rows, len(read_errors), rows, out, synthetic)
    if json_out or not sys.stdout.isatty():
        _print_json(predictions, read_errors, rows, n_bad, single=image is not None, out=out)
    elif out is None:
        _print_tables(predictions)
    if n_bad:
        raise typer.Exit(1)


def _predict_in_process(cfg, items: list, baseline: bool, explain: Optional[bool]) -> tuple[list, bool]:
    """Judge the items here: (predictions, synthetic)."""
    from scenefit.core.records import is_synthetic

    predictor = _load_predictor(cfg, baseline)
    _check_fast_path(predictor.fast_path_note(), explain)
    synthetic = is_synthetic(*items, *predictor.students.values())
    with Progress(enabled=progress_enabled() and len(items) > 1, unit="item") as bars:
        bars.bar("predict", len(items))
        return predictor.predict(items, progress=bars), synthetic


def _predict_on_ray(cfg, items: list, baseline: bool, explain: Optional[bool], out: Path) -> tuple[list[dict], bool]:
    """Judge the items on Ray actors (the students read here only for their metadata): (rows, synthetic)."""
    from scenefit.core.ray_session import MissingRayExtra
    from scenefit.core.records import is_synthetic
    from scenefit.predict.ray_engine import RaySettings, predict_on_ray
    from scenefit.predict.students import StudentError, choose_base, fast_path_note, find_students

    infos = {}
    try:
        if cfg.students:
            infos = find_students(cfg.students, _crits(cfg))
        if baseline:
            cfg.base = cfg.base or (choose_base(infos, None) if infos else None)
            if not cfg.base:
                fail("--baseline needs --base MODEL or --students DIR (whose base is used)")
        elif not cfg.students:
            fail("no students: pass --students DIR, --demo, or --baseline --base MODEL")
    except (StudentError, OSError, ValueError) as e:
        fail(str(e))
    if not baseline:
        _check_fast_path(fast_path_note(infos, _crits(cfg)), explain)
    cfg.students = str(Path(cfg.students).resolve()) if cfg.students else None
    synthetic = is_synthetic(*items, *infos.values())
    settings = RaySettings.from_config(cfg)
    with Progress(enabled=progress_enabled(), unit="item") as progress:
        try:
            rows = predict_on_ray(items, cfg, out, settings, baseline=baseline, synthetic=synthetic, progress=progress)
        except (MissingRayExtra, ValueError) as e:
            fail(str(e))
    return rows, synthetic


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
            fail(f"no demo students at {students}: run `scenefit run --config demo --out runs/demo` first (or set DEMO_DIR)")
    return students


def _read_items(image: Optional[Path], object_name: Optional[str], box: Optional[str], boxed: bool,
                manifest: Optional[Path], fmt: Optional[str], images_dir: Optional[Path]) -> tuple[list, list[dict]]:
    """The items to judge (the one --image, or the manifest's good rows) and the manifest rows
    that could not be read (each printed as an error line)."""
    from scenefit.core.images import ImageError, parse_box
    from scenefit.data.manifest import ManifestError, read_manifest
    from scenefit.predict import PredictItem

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


def _check_fast_path(slow: Optional[str], explain: Optional[bool]) -> None:
    """A reasoning-first student always generates (``slow``: the note naming them): say so, and
    refuse an explicit --no-explain."""
    if slow and explain is False:
        # --no-explain asks for the one-pass decision, which a reasoning-first student cannot give
        fail(f"--no-explain asks for the fast path, but {slow}; drop --no-explain (its answers are generated "
             "anyway) or use students built with datasets.answer_format=decision_first")
    if slow:
        console.print(f"[yellow]note:[/] {slow}")


def _report(pred_rows: list[dict], n_read_errors: int, rows: list[dict], out: Optional[Path], synthetic: bool) -> None:
    """On stderr: each item that could not be judged, the --out file written, the synthetic
    banner, explanations that disagree with the decision, and the count of judged items."""
    from scenefit.core.criteria import CRITERIA
    from scenefit.predict.output import write_rows

    for r in pred_rows:
        if r["code"] is not None:
            error_line(f"{r['message']} ({r['code']})")
    if out is not None:
        write_rows(rows, out, synthetic)
        from scenefit.predict.shards import remove_parts

        remove_parts(out)  # a Ray run's committed shards, now in the file
        console.print(f"wrote {len(rows)} rows to {out}")
    synthetic_banner(synthetic)
    disagree = sum(r.get(f"{c.value}_agrees_with_fast") is False for r in pred_rows for c in CRITERIA)
    if disagree:
        console.print(f"[yellow]note:[/] {disagree} explanation(s) name another label than the decision logits "
                      "(the explanation's label is reported; see *_agrees_with_fast in --out)")
    if len(pred_rows) + n_read_errors > 1:
        judged = sum(r["code"] is None for r in pred_rows)
        console.print(f"judged {judged} item(s), {len(pred_rows) - judged + n_read_errors} could not be judged")


def _print_json(predictions, read_errors: list[dict], rows: list[dict], n_bad: int, single: bool,
                out: Optional[Path]) -> None:
    """stdout: the one item's verdict, every item's (with the unreadable rows as errors), or with
    --out a summary of the file (the only form of a Ray run, whose ``predictions`` are None)."""
    if out is not None:
        print_json({"out": str(out), "rows": len(rows), "judged": len(rows) - n_bad, "errors": n_bad})
    elif single:
        print_json(predictions[0].to_json())
    else:
        print_json([{"id": p.id, **p.to_json()} for p in predictions]
                   + [error_row(e["id"], e["code"], e["message"]) for e in read_errors])


def _crits(cfg):
    from scenefit.core.criteria import Criterion

    return [Criterion.parse(c) for c in cfg.criteria]


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
