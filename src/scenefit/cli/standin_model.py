"""`scenefit standin-model` — an offline stand-in for Qwen/Qwen2.5-VL-3B-Instruct (random weights).

    scenefit standin-model runs/standin-3b
    scenefit standin-model runs/standin --layers 2 --hidden 64 --intermediate 128 --heads 4 --vision-depth 2 --vision-hidden 32 --vision-intermediate 64 --vision-heads 2
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from scenefit.cli import app
from scenefit.cli.common import console, examples, fail


def _flag(field: str):
    from scenefit.testbed.standin import StandinSize

    info = StandinSize.model_fields[field]
    source = "" if field == "seed" else ", as in the 3B"
    return typer.Option(help=f"{info.description} (default {info.default}{source})")


@app.command("standin-model", epilog=examples(__doc__, "standin-model"))
def standin_model_cmd(
    out_dir: Annotated[Path, typer.Argument(file_okay=False, help="Folder to write the stand-in to.")],
    layers: Annotated[Optional[int], _flag("layers")] = None,
    hidden: Annotated[Optional[int], _flag("hidden")] = None,
    intermediate: Annotated[Optional[int], _flag("intermediate")] = None,
    heads: Annotated[Optional[int], _flag("heads")] = None,
    kv_heads: Annotated[Optional[int], _flag("kv_heads")] = None,
    vision_depth: Annotated[Optional[int], _flag("vision_depth")] = None,
    vision_hidden: Annotated[Optional[int], _flag("vision_hidden")] = None,
    vision_intermediate: Annotated[Optional[int], _flag("vision_intermediate")] = None,
    vision_heads: Annotated[Optional[int], _flag("vision_heads")] = None,
    seed: Annotated[Optional[int], _flag("seed")] = None,
) -> None:
    """Build a model folder that matches Qwen/Qwen2.5-VL-3B-Instruct in everything but its weights.

    The real Qwen vocabulary and special-token ids, the stock chat template, processor,
    generation config and 3B config; random bf16 weights. Without flags the size is the 3B's
    (about 7.5 GB written); the flags shrink depth and width for CPU tests while the
    vocabulary, ids, template and processor stay exact.
    """
    from pydantic import ValidationError

    from scenefit.testbed.standin import StandinSize, build_standin_model

    given = dict(layers=layers, hidden=hidden, intermediate=intermediate, heads=heads, kv_heads=kv_heads,
                 vision_depth=vision_depth, vision_hidden=vision_hidden, vision_intermediate=vision_intermediate,
                 vision_heads=vision_heads, seed=seed)
    try:
        size = StandinSize(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as e:
        fail("; ".join(f"--{'-'.join(map(str, err['loc'])).replace('_', '-') or 'size'}: {err['msg']}"
                       for err in e.errors()))
    try:
        with console.status("building the Qwen2.5-VL-3B-Instruct stand-in (real vocabulary, random weights)"):
            out = build_standin_model(out_dir, size)
    except RuntimeError as e:  # the vocabulary package is missing or its file differs
        fail(str(e))
    n = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    console.print(f"stand-in (RANDOM weights) written to [bold]{out}[/] ({n / 1e6:.1f} MB of weights); "
                  "licence of the vocabulary: NOTICE")
