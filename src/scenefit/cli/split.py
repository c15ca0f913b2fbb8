"""`scenefit split` — balanced, group-aware, seeded train/val/test splits of the consensus.

    scenefit split runs/demo/consensus/consensus.parquet --out runs/demo/split --config demo
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
    from scenefit.core.files import file_sha256
    from scenefit.core.parquet_io import read_table
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
