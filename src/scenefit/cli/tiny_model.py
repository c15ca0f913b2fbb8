"""`scenefit tiny-model` — build the tiny random-weight Qwen2.5-VL used by tests and the demo.

    scenefit tiny-model runs/demo/model --config demo
    scenefit tiny-model runs/demo/model --config demo --no-cache
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from scenefit.cli import app
from scenefit.cli.common import ConfigOpt, SetOpt, console, examples, fhelp, load_config
from scenefit.core.progress import Progress


@app.command("tiny-model", epilog=examples(__doc__, "tiny-model"))
def tiny_model_cmd(
    out_dir: Annotated[Path, typer.Argument(file_okay=False, help="Folder to write the model, tokenizer and processor to.")],
    config: ConfigOpt = None,
    sets: SetOpt = None,
    seed: Annotated[Optional[int], typer.Option(help=fhelp("tiny_model", "seed"))] = None,
    rope_theta: Annotated[Optional[float], typer.Option(help=fhelp("tiny_model", "rope_theta"))] = None,
    hidden_size: Annotated[Optional[int], typer.Option(help=fhelp("tiny_model", "hidden_size"))] = None,
    num_layers: Annotated[Optional[int], typer.Option(help=fhelp("tiny_model", "num_layers"))] = None,
    vision_pretrain_steps: Annotated[
        Optional[int], typer.Option(help=fhelp("tiny_model", "vision_pretrain_steps"))
    ] = None,
    knowledge_pretrain_steps: Annotated[
        Optional[int], typer.Option(help=fhelp("tiny_model", "knowledge_pretrain_steps"))
    ] = None,
    cache: Annotated[bool, typer.Option(
        "--cache/--no-cache",
        help="Reuse a verified build of the same configuration and code from the cache folder "
        "($SCENEFIT_CACHE_DIR, else ~/.cache/scenefit), or build once into it; --no-cache always builds into OUT_DIR.",
    )] = True,
) -> None:
    """Build a tiny Qwen2.5-VL (random weights, local tokenizer, real processor) in seconds.

    The folder loads with AutoProcessor / Qwen2_5_VLForConditionalGeneration.from_pretrained
    offline, exactly like Qwen/Qwen2.5-VL-3B-Instruct does. With --vision-pretrain-steps N the
    vision tower is first taught to see the red box, its height next to the person and its bottom
    against the ground line on synthetic images (about two minutes for the demo's 1,200 steps on
    4,800 images on 2 cores). With --knowledge-pretrain-steps N the language model then learns the
    synthetic world's catalog (where each thing belongs, whether it flies, how tall it is) and
    captions of pictures of its own seed (half a minute for 300 steps); otherwise it stays random.
    A build is cached (keyed on the configuration, the code and the machine's arithmetic, each
    file checked on reuse), so the next run with the same settings copies it in a second.
    """
    from scenefit.testbed.tiny_cache import cached_tiny_model
    from scenefit.testbed.tiny_model import build_tiny_model

    cfg = load_config("tiny_model", config, sets, seed=seed, rope_theta=rope_theta, hidden_size=hidden_size,
                      num_layers=num_layers, vision_pretrain_steps=vision_pretrain_steps,
                      knowledge_pretrain_steps=knowledge_pretrain_steps)
    pretrained = bool(cfg.vision_pretrain_steps or cfg.knowledge_pretrain_steps)
    how = "built"
    if cache:
        out, how = cached_tiny_model(out_dir, cfg, progress=Progress(enabled=True) if pretrained else None,
                                     log=lambda line: console.print(f"[yellow]{line}[/]"))
    elif pretrained:
        out = build_tiny_model(out_dir, cfg, progress=Progress(enabled=True))
    else:
        with console.status("building tiny Qwen2.5-VL"):
            out = build_tiny_model(out_dir, cfg)
    n = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    saved = json.loads((out / "scenefit_tiny.json").read_text())
    record, knowledge = saved.get("vision_pretraining"), saved.get("knowledge_pretraining")
    kind = ", ".join(part for part in ("language model pretrained on the catalog" if knowledge else "random language model",
                                       "vision tower pretrained" if record else "")
                     if part) if record or knowledge else "random weights"
    origin = {"reused": "copied from the cache (same configuration and code; every file checked)",
              "built": "built" + (" and cached" if cache else ""), "uncached": "built (cache folder not writable)"}[how]
    console.print(f"tiny Qwen2.5-VL ({kind}) {origin}, written to [bold]{out}[/] ({n / 1e6:.1f} MB of weights)")
    if record:
        console.print(
            f"vision pretraining: box-patch accuracy {record['box_patch_accuracy_before']:.3f} -> "
            f"{record['box_patch_accuracy_after']:.3f} (majority class {record['box_patch_majority']:.3f}), box height bin "
            f"{record['box_height_bin_accuracy_before']:.3f} -> {record['box_height_bin_accuracy_after']:.3f}, on held-out images"
        )
    if knowledge:
        console.print(
            f"knowledge pretraining, on {knowledge['held_out_pictures']} held-out pictures: scene named "
            f"{knowledge['scene_accuracy_before']:.3f} -> {knowledge['scene_accuracy_after']:.3f} (majority "
            f"{knowledge['scene_majority']:.3f}); first thing named 'at home here' belongs there "
            f"{knowledge['at_home_accuracy_before']:.3f} -> {knowledge['at_home_accuracy_after']:.3f}"
        )
