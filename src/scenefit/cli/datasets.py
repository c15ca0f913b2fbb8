"""`scenefit datasets` — per-criterion chat-format SFT datasets for the three students.

    scenefit datasets runs/demo/split --out runs/demo/datasets --config demo
    scenefit datasets runs/paper/split --out runs/paper/datasets --config paper --student-prompt-file authors_students.json
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
    escape,
    examples,
    fail,
    fhelp,
    load_config,
    print_json,
    synthetic_banner,
)


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
    answer_format: Annotated[Optional[str], typer.Option("--answer-format", help=fhelp("datasets", "answer_format"))] = None,
    student_prompt_file: Annotated[
        Optional[Path], typer.Option("--student-prompt-file", dir_okay=False, help=fhelp("datasets", "prompt_file"))
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Per-criterion chat-format SFT datasets (Parquet + dataset card) from the splits."""
    from scenefit.core.files import file_sha256
    from scenefit.data.datasets import build_student_datasets, missing_images, read_splits, write_student_datasets
    from scenefit.data.split import SPLITS

    cfg = load_config(
        "datasets", config, sets, rebalance=rebalance, seed=seed, answer_format=answer_format,
        criteria=[c.strip() for c in criteria.split(",") if c.strip()] if criteria else None,
        prompt_file=str(student_prompt_file) if student_prompt_file else None,
    )
    try:
        splits, split_manifest = read_splits(split_dir)
        result = build_student_datasets(splits, cfg, split_manifest)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
        return
    inputs = {f"{s}.parquet": file_sha256(split_dir / f"{s}.parquet") for s in SPLITS if s in splits}
    splits, errors = missing_images(splits)  # each row carries its image: one without is an error row
    for e in errors:
        console.print(f"[yellow]{e['id']}[/]: {e['code']}: {e['message']}")
    result = build_student_datasets(splits, cfg, split_manifest)
    write_student_datasets(result, out, inputs, cfg.license, errors)
    synthetic_banner(result.manifest["synthetic"])
    _datasets_table(result.manifest)
    console.print(f"wrote {out}/<criterion>/{{{','.join(splits)}}}.parquet (images inside), README.md, "
                  f"{out / 'README.md'} (one config per criterion) and {out / 'manifest.json'}"
                  + (f"; {len(errors)} rows without a readable image in {out / 'errors.jsonl'}" if errors else ""))
    if json_out:
        print_json(result.manifest)


def _datasets_table(m: dict) -> None:
    from rich.table import Table

    balance = f"drawn 1:1 per split: {m['counts']}" if m.get("counts") else f"balanced 1:1: {', '.join(m['rebalance']) or 'none'}"
    t = Table(title=f"student datasets (prompts {m['student']['prompt_version']}, {m['student']['answer_format']}, {balance})")
    for col in ("criterion", "split", "rows", "In-context", "Out-of-context", "dropped"):
        t.add_column(col, justify="left" if col in ("criterion", "split", "dropped") else "right")
    for c, info in m["criteria"].items():
        for s, b in info["splits"].items():
            drops = ", ".join(f"{k} {v}" for k, v in info["dropped"][s].items() if v)
            t.add_row(c, s, str(b["rows"]), str(b["In-context"]), str(b["Out-of-context"]), drops or "–")
    console.print(t)
    for c, info in m["criteria"].items():
        if info.get("shortfall"):
            console.print(f"[yellow]{escape(info['shortfall'])}[/]")
