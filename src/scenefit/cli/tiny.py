"""`scenefit tiny-model` — build the tiny random-weight Qwen2.5-VL used by tests and the demo.

    scenefit tiny-model runs/demo/model --config configs/demo.yaml
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import app
from .common import ConfigOpt, SetOpt, console, fhelp, load_config


@app.command("tiny-model")
def tiny_model_cmd(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the model, tokenizer and processor to.")],
    config: ConfigOpt = None,
    sets: SetOpt = None,
    seed: Annotated[Optional[int], typer.Option(help=fhelp("tiny_model", "seed"))] = None,
    rope_theta: Annotated[Optional[float], typer.Option(help=fhelp("tiny_model", "rope_theta"))] = None,
    hidden_size: Annotated[Optional[int], typer.Option(help=fhelp("tiny_model", "hidden_size"))] = None,
    num_layers: Annotated[Optional[int], typer.Option(help=fhelp("tiny_model", "num_layers"))] = None,
) -> None:
    """Build a tiny Qwen2.5-VL (random weights, local tokenizer, real processor) in seconds.

    The folder loads with AutoProcessor / Qwen2_5_VLForConditionalGeneration.from_pretrained
    offline, exactly like Qwen/Qwen2.5-VL-3B-Instruct does.
    """
    from ..tiny import build_tiny_model

    cfg = load_config("tiny_model", config, sets, seed=seed, rope_theta=rope_theta, hidden_size=hidden_size,
                      num_layers=num_layers)
    with console.status("building tiny Qwen2.5-VL"):
        out = build_tiny_model(out_dir, cfg)
    n = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    console.print(f"tiny Qwen2.5-VL (random weights) written to [bold]{out}[/] ({n / 1e6:.1f} MB of weights)")
