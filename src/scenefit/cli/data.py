"""`scenefit consensus`, `scenefit split`, `scenefit datasets` — from teacher answers to student data.

    scenefit consensus --db runs/demo/annotate/annotations.sqlite \
        --manifest runs/demo/ingest/manifest.parquet --out runs/demo/consensus --config configs/demo.yaml
    scenefit split runs/demo/consensus/consensus.parquet --out runs/demo/split --config configs/demo.yaml
    scenefit datasets runs/demo/split --out runs/demo/datasets --config configs/demo.yaml
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from scenefit.cli import app
from scenefit.cli.common import (
    ConfigOpt, SetOpt, console, escape, examples, fail, fhelp, load_config, open_store, print_json, synthetic_banner,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Also print the report / manifest as JSON on stdout.")]


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

    All four rules are computed for the report; the configured one decides what is kept.
    """
    from scenefit.data.consensus import build_consensus, write_consensus
    from scenefit.data.consensus_report import report_tables
    from scenefit.core.parquet_io import file_sha256

    cfg = load_config(
        "consensus", config, sets, rule=rule, designated=designated, prompt_hash=prompt_hash,
        contradiction_usable=contradiction_usable,
        teachers=[t.strip() for t in teachers.split(",") if t.strip()] if teachers else None,
    )
    if not db.is_file():
        fail(f"annotation store not found: {db}")
    frame_manifest = _read_manifest(manifest)
    with open_store(db) as store:
        answers = store.to_frame(prompt_hash=cfg.prompt_hash)
    if answers.empty:
        fail(f"{db} holds no answers" + (f" for prompt hash {cfg.prompt_hash}" if cfg.prompt_hash else ""))
    try:
        result = build_consensus(answers, frame_manifest, cfg, image_root=manifest.parent)
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


@app.command("split", epilog=examples(__doc__, "split"))
def split_cmd(
    consensus: Annotated[Path, typer.Argument(help="consensus.parquet written by `scenefit consensus`.")],
    out: Annotated[Path, typer.Option("--out", "-o", file_okay=False, help="Output folder: train/val/test.parquet, manifest.json.")],
    config: ConfigOpt = None,
    sets: SetOpt = None,
    seed: Annotated[Optional[int], typer.Option(help=fhelp("split", "seed"))] = None,
    counts: Annotated[
        Optional[str], typer.Option(help="Exact counts TRAIN,VAL,TEST (even numbers), e.g. 20000,2000,2000.")
    ] = None,
    fractions: Annotated[
        Optional[str], typer.Option(help="Shares TRAIN,VAL,TEST of the largest balanced set (used without counts).")
    ] = None,
    allow_fewer: Annotated[
        Optional[bool], typer.Option("--allow-fewer/--no-allow-fewer", help=fhelp("split", "allow_fewer"))
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Balanced 1:1 (on the consensus final decision), group-aware, seeded train/val/test split."""
    from scenefit.core.parquet_io import file_sha256, read_table
    from scenefit.data.split import balanced_split, write_split

    cfg = load_config(
        "split", config, sets, seed=seed, allow_fewer=allow_fewer,
        counts=_triple(counts, "--counts", int), fractions=_triple(fractions, "--fractions", float),
    )
    if counts is None and fractions is not None:
        cfg.counts = None  # fractions named on the command line win over counts from the YAML
    try:
        frame, meta = read_table(consensus)
        result = balanced_split(frame, cfg, meta)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
        return
    paths = write_split(result, out, {consensus.name: file_sha256(consensus)})
    m = result.manifest
    synthetic_banner(m["synthetic"])
    _split_table(m)
    if m["shortfall"]:
        console.print(f"[yellow]{escape(m['message'])}[/]")
    console.print(f"wrote {', '.join(str(p) for p in paths.values())}")
    if json_out:
        print_json(m)


@app.command("datasets", epilog=examples(__doc__, "datasets"))
def datasets_cmd(
    split_dir: Annotated[Path, typer.Argument(help="Folder written by `scenefit split` (train/val/test.parquet).")],
    out: Annotated[Path, typer.Option("--out", "-o", file_okay=False, help="Output folder: <criterion>/{train,val,test}.parquet + README.md.")],
    config: ConfigOpt = None,
    sets: SetOpt = None,
    criteria: Annotated[Optional[str], typer.Option(help=fhelp("datasets", "criteria") + " Comma-separated.")] = None,
    rebalance: Annotated[
        Optional[str], typer.Option("--rebalance", help=fhelp("datasets", "rebalance") + " On the command line: "
                                    "comma-separated (train,val,test) or none.")
    ] = None,
    seed: Annotated[Optional[int], typer.Option(help=fhelp("datasets", "seed"))] = None,
    json_out: JsonOpt = False,
) -> None:
    """Per-criterion chat-format SFT datasets (Parquet + dataset card) from the splits."""
    from scenefit.core.parquet_io import file_sha256
    from scenefit.data.datasets import build_student_datasets, read_splits, write_student_datasets
    from scenefit.data.split import SPLITS

    cfg = load_config(
        "datasets", config, sets, rebalance=rebalance, seed=seed,
        criteria=[c.strip() for c in criteria.split(",") if c.strip()] if criteria else None,
    )
    try:
        splits, split_manifest = read_splits(split_dir)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
        return
    result = build_student_datasets(splits, cfg, split_manifest)
    inputs = {f"{s}.parquet": file_sha256(split_dir / f"{s}.parquet") for s in SPLITS if s in splits}
    write_student_datasets(result, out, inputs, cfg.license)
    synthetic_banner(result.manifest["synthetic"])
    _datasets_table(result.manifest)
    console.print(f"wrote {out}/<criterion>/{{{','.join(splits)}}}.parquet, README.md and {out / 'manifest.json'}")
    if json_out:
        print_json(result.manifest)


# --------------------------------------------------------------------------- helpers


def _read_manifest(path: Path):
    from scenefit.core.parquet_io import read_table

    if not path.is_file():
        fail(f"manifest not found: {path}")
    try:
        frame, _ = read_table(path)  # relative image paths resolved against the manifest's folder
    except Exception as e:  # noqa: BLE001 - any unreadable file is a user error here
        fail(f"{path}: not a readable Parquet manifest ({e}); run `scenefit ingest` first")
    missing = [c for c in ("id", "image", "object") if c not in frame.columns]
    if missing:
        fail(f"{path}: manifest lacks column(s) {missing}; run `scenefit ingest` to normalise it")
    return frame


def _triple(text: Optional[str], flag: str, kind):
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3:
        fail(f"{flag} expects three comma-separated values TRAIN,VAL,TEST, got {text!r}")
    try:
        values = [kind(p) for p in parts]
    except ValueError:
        fail(f"{flag}: {text!r} are not {kind.__name__} values")
    return dict(zip(("train", "val", "test"), values))


def _split_table(m: dict) -> None:
    from rich.table import Table

    t = Table(title=f"split (seed {m['seed']}, {m['mode']}, consensus rule {m['rule']})")
    for col in ("split", "requested", "samples", "In-context", "Out-of-context", "groups"):
        t.add_column(col, justify="left" if col == "split" else "right")
    for s, n in m["counts"].items():
        r = m["class_ratios"][s]
        t.add_row(s, str(m["requested"][s]), str(n), str(r["In-context"]), str(r["Out-of-context"]), str(m["groups"][s]))
    console.print(t)


def _datasets_table(m: dict) -> None:
    from rich.table import Table

    t = Table(title=f"student datasets (prompt {m['prompt_version']}, balanced 1:1: {', '.join(m['rebalance']) or 'none'})")
    for col in ("criterion", "split", "rows", "In-context", "Out-of-context", "dropped"):
        t.add_column(col, justify="left" if col in ("criterion", "split", "dropped") else "right")
    for c, info in m["criteria"].items():
        for s, b in info["splits"].items():
            drops = ", ".join(f"{k} {v}" for k, v in info["dropped"][s].items() if v)
            t.add_row(c, s, str(b["rows"]), str(b["In-context"]), str(b["Out-of-context"]), drops or "–")
    console.print(t)
