"""`scenefit serve-teacher` — a local model folder over the OpenAI chat-completions protocol.

    scenefit serve-teacher --model runs/demo/model --host 127.0.0.1 --port 8000
    scenefit serve-teacher --model runs/demo/model --port 0     # a free port; the URL is printed
    scenefit serve-teacher --model runs/demo/model --set max_prompt_tokens=8192 --set max_concurrency=16

The model answers ``/v1/chat/completions`` (text and base64 image parts, streaming too) and
``/v1/models``, batching concurrent requests into one ``generate()``, so ``scenefit annotate``
with an ``openai`` teacher can use it (see :mod:`scenefit.serve.openai_server`). It is guarded
like ``scenefit serve``: body cap (413), prompt-token cap (400), concurrency cap (429), request
timeout (504), every refusal in the OpenAI error shape; its settings are the ``serve_teacher``
config section (:class:`scenefit.serve.config.ServeTeacherConfig`). The first line on stdout is
``serving <base URL>/v1``, printed only once the socket accepts connections. It has no
authentication, so another ``--host`` than loopback needs ``--insecure-no-auth``. The students
are served by ``scenefit serve``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Optional

import typer

from scenefit.cli import app
from scenefit.cli.common import (
    LOOPBACK,
    ConfigOpt,
    SetOpt,
    console,
    examples,
    fail,
    fhelp,
    load_config,
    require_serve_extra,
)


@app.command("serve-teacher", epilog=examples(__doc__, "serve-teacher"))
def serve_teacher_cmd(
    model: Annotated[Optional[Path], typer.Option("--model", help="Model folder to serve (e.g. runs/demo/model; default: serve_teacher.model).", file_okay=False)] = None,
    model_name: Annotated[Optional[str], typer.Option("--model-name", help=fhelp("serve_teacher", "model_name"))] = None,
    host: Annotated[Optional[str], typer.Option(help=fhelp("serve_teacher", "host"))] = None,
    port: Annotated[Optional[int], typer.Option(help=fhelp("serve_teacher", "port"))] = None,
    max_batch: Annotated[Optional[int], typer.Option(help=fhelp("serve_teacher", "max_batch"))] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option(help=fhelp("serve_teacher", "max_new_tokens"))] = None,
    max_tokens_limit: Annotated[Optional[int], typer.Option(help=fhelp("serve_teacher", "max_tokens_limit"))] = None,
    device: Annotated[Optional[str], typer.Option(help=fhelp("serve_teacher", "device"))] = None,
    dtype: Annotated[Optional[str], typer.Option(help=fhelp("serve_teacher", "dtype"))] = None,
    insecure_no_auth: Annotated[bool, typer.Option("--insecure-no-auth", help="Allow a non-loopback --host (this server has no authentication: anyone who reaches the port can use the model).")] = False,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Serve a local model over the OpenAI chat-completions protocol (for `annotate`'s openai
    teachers) until interrupted (Ctrl-C)."""
    require_serve_extra()
    serve_teacher(model, model_name=model_name, host=host, port=port, max_batch=max_batch,
                  max_new_tokens=max_new_tokens, max_tokens_limit=max_tokens_limit, device=device, dtype=dtype,
                  insecure_no_auth=insecure_no_auth, config=config, sets=sets)


#: The flags of ``serve-teacher`` by parameter name (``scenefit serve --openai`` accepts these only).
TEACHER_FLAGS = frozenset(inspect.signature(serve_teacher_cmd).parameters) - {"config", "sets"}


def serve_teacher(model: Optional[Path], *, insecure_no_auth: bool = False, config: Optional[Path] = None,
                  sets: Optional[list[str]] = None, **flags) -> None:
    """Resolve the ``serve_teacher`` section (defaults < --config < --set < flags), check it,
    load the model and serve it until interrupted."""
    import sys

    cfg = load_config("serve_teacher", config, sets, model=str(model) if model is not None else None, **flags)
    if cfg.host not in LOOPBACK:
        if not insecure_no_auth:
            fail(f"--host {cfg.host} would expose the teacher server, which has no authentication; "
                 "bind 127.0.0.1, or pass --insecure-no-auth to do it on purpose")
        console.print(f"[yellow]warning:[/] listening on {cfg.host}; the teacher server has no authentication")
    if cfg.model is None:
        fail("needs --model DIR (a model folder, e.g. runs/demo/model)")
    if not Path(cfg.model).is_dir():
        fail(f"--model {cfg.model}: not a model folder")
    from scenefit.serve import openai_server

    name = cfg.model_name or Path(cfg.model).name
    api = openai_server.teacher_app(cfg, name)

    def ready(base: str) -> None:
        sys.stdout.write(f"serving {base}/v1\n")
        sys.stdout.flush()
        console.print(f"OpenAI-compatible server for {name!r} at {base}/v1 (Ctrl-C stops it)")

    try:
        openai_server.run_app(api, host=cfg.host, port=cfg.port, on_ready=ready, log_level=cfg.log_level,
                              header_timeout_s=cfg.header_timeout_s)
    except OSError as e:
        fail(f"cannot listen on {cfg.host}:{cfg.port}: {e}")
