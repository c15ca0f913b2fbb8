"""`scenefit init` — a commented starter config and an example manifest for your own images.

    scenefit init my-project
    scenefit init my-project --base-url http://gpu-box:8000/v1 --model Qwen/Qwen2.5-VL-72B-Instruct
    scenefit init my-project --teachers 3 --api-key-env OPENAI_API_KEY
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from scenefit.cli import app
from scenefit.cli.common import console, escape, examples, fail


@app.command("init", epilog=examples(__doc__, "init"))
def init_cmd(
    folder: Annotated[Path, typer.Argument(file_okay=False, help="Folder for scenefit.yaml, manifest.csv and images/ (created).")],
    teachers: Annotated[int, typer.Option("--teachers", help="1: one OpenAI-compatible teacher; 3: the designated teacher and two co-judges (consensus keeps what all three agree on).")] = 1,
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="The designated teacher's endpoint, ending in /v1 (default http://localhost:8000/v1, e.g. `vllm serve`).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="The model id that endpoint serves (default Qwen/Qwen2.5-VL-72B-Instruct).")] = None,
    api_key_env: Annotated[Optional[str], typer.Option("--api-key-env", help="Name of the environment variable holding the endpoint's API key (the key itself never goes in the file).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a scenefit.yaml or manifest.csv already in FOLDER.")] = False,
) -> None:
    """Write a commented starter config and an example manifest for your own images.

    The config asks one or three OpenAI-compatible teachers (base_url, model, the API key read
    from an environment variable) and trains the students on Qwen/Qwen2.5-VL-3B-Instruct with
    the paper's training recipe. Edit both files, then start the run it prints (`scenefit run`).
    """
    from scenefit.pipeline.starter import StarterError, write_starter

    try:
        paths = write_starter(folder, teachers, base_url, model, api_key_env, force)
    except StarterError as e:
        fail(str(e))
        return
    cfg, man, images = (escape(str(paths[k])) for k in ("config", "manifest", "images"))
    console.print(f"wrote {cfg} (every setting commented) and {man} (an example)\n"
                  f"next:\n"
                  f"  1. your photos into {images}/, one row per boxed object in {man} (the box in pixels: "
                  f"x0,y0,x1,y1; other layouts: `scenefit ingest --help`)\n"
                  f"  2. the teacher's endpoint and model in {cfg} (annotate: teachers:)"
                  + (", and the two co-judges' endpoints" if teachers == 3 else "") + "\n"
                  f"  3. scenefit run --config {cfg} --out runs/mine     (then `scenefit status runs/mine`)",
                  highlight=False)
