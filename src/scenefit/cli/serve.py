"""`scenefit serve` — HTTP serving of a local model.

    scenefit serve --openai --model runs/demo/model --host 127.0.0.1 --port 8000
    scenefit serve --openai --model runs/demo/model --port 0     # a free port; the URL is printed

With ``--openai`` the model answers the OpenAI chat-completions protocol (``/v1/chat/completions``
with text and base64 image parts, ``/v1/models``), so ``scenefit annotate`` with an ``openai``
teacher can use it. The first line on stdout is ``serving <base URL>/v1``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import app
from .common import console, fail


@app.command("serve")
def serve_cmd(
    openai: Annotated[bool, typer.Option("--openai", help="Serve the OpenAI chat-completions protocol.")] = False,
    model: Annotated[Optional[Path], typer.Option("--model", help="Model folder to serve (e.g. runs/demo/model).", file_okay=False)] = None,
    model_name: Annotated[Optional[str], typer.Option("--model-name", help="Model id clients send (default: the folder name).")] = None,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 = any free port; the URL is printed).")] = 8000,
    max_batch: Annotated[int, typer.Option(help="Most concurrent requests generated in one batch.")] = 8,
    max_new_tokens: Annotated[int, typer.Option(help="Answer length when a request gives no max_tokens.")] = 512,
    device: Annotated[Optional[str], typer.Option(help="torch device (default: cuda when available, else cpu).")] = None,
    dtype: Annotated[str, typer.Option(help="auto, bf16, fp16 or fp32.")] = "auto",
) -> None:
    """Serve a local model over HTTP until interrupted (Ctrl-C)."""
    import sys

    if not openai:
        fail("choose what to serve: --openai (OpenAI-compatible chat completions)")
    if model is None or not model.is_dir():
        fail(f"--model must be a model folder, got {model}")
    from ..serve.openai_server import build_openai_app, model_runner, run_app

    name = model_name or model.name
    runner = model_runner(str(model), max_batch=max_batch, device=device, dtype=dtype)
    api = build_openai_app(runner, name, default_max_tokens=max_new_tokens)

    def ready(base: str) -> None:
        sys.stdout.write(f"serving {base}/v1\n")
        sys.stdout.flush()
        console.print(f"OpenAI-compatible server for {name!r} at {base}/v1 (Ctrl-C stops it)")

    try:
        run_app(api, host=host, port=port, on_ready=ready)
    except OSError as e:
        fail(f"cannot listen on {host}:{port}: {e}")
