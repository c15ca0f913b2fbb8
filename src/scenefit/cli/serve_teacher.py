"""`scenefit serve-teacher` — a local model folder over the OpenAI chat-completions protocol.

    scenefit serve-teacher --model runs/demo/model --host 127.0.0.1 --port 8000
    scenefit serve-teacher --model runs/demo/model --port 0     # a free port; the URL is printed

The model answers ``/v1/chat/completions`` (text and base64 image parts, streaming too) and
``/v1/models``, batching concurrent requests into one ``generate()``, so ``scenefit annotate``
with an ``openai`` teacher can use it (see :mod:`scenefit.serve.openai_server`). The first line
on stdout is ``serving <base URL>/v1``, printed only once the socket accepts connections. It has
no authentication, so another ``--host`` than loopback needs ``--insecure-no-auth``. The
students are served by ``scenefit serve``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Optional

import typer

from scenefit.cli import app
from scenefit.cli.common import console, examples, fail
from scenefit.cli.serve import LOOPBACK, require_serve_extra

#: The answer length when a request gives no ``max_tokens``, and the largest it may ask for.
DEFAULT_MAX_NEW_TOKENS = 512
DEFAULT_MAX_TOKENS_LIMIT = 4096
DEFAULT_MAX_BATCH = 8


@app.command("serve-teacher", epilog=examples(__doc__, "serve-teacher"))
def serve_teacher_cmd(
    model: Annotated[Path, typer.Option("--model", help="Model folder to serve (e.g. runs/demo/model).", file_okay=False)],
    model_name: Annotated[Optional[str], typer.Option("--model-name", help="Model id clients send (default: the folder name).")] = None,
    host: Annotated[Optional[str], typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (0 = any free port; the URL is printed); default 8000.")] = None,
    max_batch: Annotated[Optional[int], typer.Option(help=f"Most concurrent requests in one batch (default {DEFAULT_MAX_BATCH}).")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option(help=f"Answer length when a request gives no max_tokens (default {DEFAULT_MAX_NEW_TOKENS}).")] = None,
    max_tokens_limit: Annotated[Optional[int], typer.Option(help=f"Largest max_tokens a request may ask for (default {DEFAULT_MAX_TOKENS_LIMIT}; 400 beyond it).")] = None,
    device: Annotated[Optional[str], typer.Option(help="torch device (default: cuda when available, else cpu).")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="auto, bf16, fp16 or fp32 (default: auto).")] = None,
    insecure_no_auth: Annotated[bool, typer.Option("--insecure-no-auth", help="Allow a non-loopback --host (this server has no authentication: anyone who reaches the port can use the model).")] = False,
) -> None:
    """Serve a local model over the OpenAI chat-completions protocol (for `annotate`'s openai
    teachers) until interrupted (Ctrl-C)."""
    require_serve_extra()
    serve_teacher(model, model_name=model_name, host=host, port=port, max_batch=max_batch,
                  max_new_tokens=max_new_tokens, max_tokens_limit=max_tokens_limit, device=device, dtype=dtype,
                  insecure_no_auth=insecure_no_auth)


#: The flags of ``serve-teacher`` by parameter name (``scenefit serve --openai`` accepts these only).
TEACHER_FLAGS = frozenset(inspect.signature(serve_teacher_cmd).parameters)


def serve_teacher(model: Optional[Path], *, model_name: Optional[str] = None, host: Optional[str] = None,
                  port: Optional[int] = None, max_batch: Optional[int] = None, max_new_tokens: Optional[int] = None,
                  max_tokens_limit: Optional[int] = None, device: Optional[str] = None, dtype: Optional[str] = None,
                  insecure_no_auth: bool = False) -> None:
    """Check the flags, load the model and serve it until interrupted."""
    import sys

    host, port = host or "127.0.0.1", 8000 if port is None else port
    if host not in LOOPBACK:
        if not insecure_no_auth:
            fail(f"--host {host} would expose the teacher server, which has no authentication; "
                 "bind 127.0.0.1, or pass --insecure-no-auth to do it on purpose")
        console.print(f"[yellow]warning:[/] listening on {host}; the teacher server has no authentication")
    if model is None:
        fail("needs --model DIR (a model folder, e.g. runs/demo/model)")
    if not model.is_dir():
        fail(f"--model {model}: not a model folder")
    default_tokens = DEFAULT_MAX_NEW_TOKENS if max_new_tokens is None else max_new_tokens
    limit = max(DEFAULT_MAX_TOKENS_LIMIT, default_tokens) if max_tokens_limit is None else max_tokens_limit
    if default_tokens > limit:
        fail(f"--max-new-tokens {default_tokens} exceeds --max-tokens-limit {limit}")
    from scenefit.serve.openai_server import build_openai_app, model_runner, run_app

    name = model_name or model.name
    runner = model_runner(str(model), max_batch=max_batch or DEFAULT_MAX_BATCH, device=device, dtype=dtype or "auto")
    api = build_openai_app(runner, name, default_max_tokens=default_tokens, max_tokens_limit=limit)

    def ready(base: str) -> None:
        sys.stdout.write(f"serving {base}/v1\n")
        sys.stdout.flush()
        console.print(f"OpenAI-compatible server for {name!r} at {base}/v1 (Ctrl-C stops it)")

    try:
        run_app(api, host=host, port=port, on_ready=ready)
    except OSError as e:
        fail(f"cannot listen on {host}:{port}: {e}")
