"""`scenefit synth` — draw the embedded synthetic world (scenes with one boxed object, known truth).

    scenefit synth --n 400 --out runs/demo/world --config demo
    scenefit synth --n 1000 --out /tmp/world --seed 3 --image-size 224 --samples-per-group 2
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
    examples,
    fail,
    fhelp,
    load_config,
    print_json,
    synthetic_banner,
)
from scenefit.core.progress import Progress, progress_enabled


@app.command("synth", epilog=examples(__doc__, "synth"))
def synth_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", file_okay=False, help="Output folder: images/, manifest.parquet, layout.jsonl, "
                                      "world.json, originals/.")],
    config: ConfigOpt = None,
    sets: SetOpt = None,
    n: Annotated[Optional[int], typer.Option("--n", help=fhelp("world", "n"))] = None,
    seed: Annotated[Optional[int], typer.Option(help=fhelp("world", "seed"))] = None,
    image_size: Annotated[Optional[int], typer.Option(help=fhelp("world", "image_size"))] = None,
    samples_per_group: Annotated[Optional[int], typer.Option(
        "--samples-per-group", "--scenes-per-group", help=fhelp("world", "samples_per_group"))] = None,
    originals: Annotated[Optional[bool], typer.Option("--originals/--no-originals", help=fhelp("world", "originals"))] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace a world made with another config in --out (only the files synth writes).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Also print the summary (world.json) on stdout.")] = False,
) -> None:
    """Draw N synthetic scenes, each with one target object in a red box and its truth per criterion.

    Same config and seed give byte-identical files. Every output is marked SYNTHETIC: a test
    bed for the pipeline, never a result on real data.
    """
    from rich.table import Table

    from scenefit.core.criteria import CRITERIA
    from scenefit.testbed.world import WorldExistsError, check_output, generate_world

    cfg = load_config("world", config, sets, n=n, seed=seed, image_size=image_size,
                      samples_per_group=samples_per_group, originals=originals)
    try:
        check_output(out, cfg, overwrite)  # before the progress bar: a refusal prints only the error
    except WorldExistsError as e:
        fail(str(e))
    synthetic_banner(True)
    try:
        with Progress(enabled=progress_enabled(), unit="scene") as bars:
            summary = generate_world(cfg, out, overwrite=overwrite, progress=bars.bar("synth", cfg.n))
    except WorldExistsError as e:
        fail(str(e))
        return
    counts = summary["counts"]
    console.print(f"synthetic world written to [bold]{out}[/]: {counts['samples']} samples on {counts['groups']} "
                  f"scene instances, {counts['originals']} originals (shortcut test) in {out / 'originals'}")
    scenes = Table(title="samples per scene type")
    scenes.add_column("scene type")
    scenes.add_column("samples", justify="right")
    for name, k in counts["per_scene"].items():
        scenes.add_row(name, str(k))
    console.print(scenes)
    rates = Table(title="out-of-context rate per criterion")
    rates.add_column("criterion")
    rates.add_column("configured", justify="right")
    rates.add_column("drawn", justify="right")
    for c in CRITERIA:
        rates.add_row(c.display, f"{summary['violation_rates']['configured'][c.value]:.3f}",
                      f"{summary['violation_rates']['realised'][c.value]:.3f}")
    rates.add_row("[bold]final decision[/]", "", f"{summary['final_out_rate']:.3f}")
    console.print(rates)
    synthetic_banner(True)
    if json_out:
        print_json(summary)
