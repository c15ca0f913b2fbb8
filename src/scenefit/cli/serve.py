"""`scenefit serve` — the three students over HTTP.

    scenefit serve --demo                                        # the students `make demo` trained
    scenefit serve --students runs/x/students --api-token "$TOKEN" --port 8100
    scenefit serve --demo --set max_concurrency=16 --set predict.max_new_tokens=48

It serves the three students (one base + three adapters): the classify API
(``POST /v1/classify``), a web page at ``/``, ``/v1/models``, ``/v1/metrics`` and the OpenAI
chat route addressed by model name (``scenefit-location``, …, ``scenefit-base``); see
:mod:`scenefit.serve.app`. Server limits come from the ``serve`` config section, the model
settings from the ``predict`` section. The first line on stdout is ``serving <base URL>``, printed
only once the socket accepts connections.

A plain model folder over the OpenAI chat-completions protocol (for ``annotate``'s ``openai``
teachers) is ``scenefit serve-teacher`` (:mod:`.serve_teacher`); ``serve --openai`` is its
deprecated alias: it prints the new command and runs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

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


def demo_config() -> Path:
    """The settings the demo's students were trained with: $DEMO_DIR/run.yaml (what `scenefit run`
    recorded), else the packaged demo config."""
    from scenefit.cli.common import demo_dir
    from scenefit.core.config import find_config
    from scenefit.pipeline.run_folder import RUN_FILE

    recorded = demo_dir() / RUN_FILE
    return recorded if recorded.is_file() else find_config("demo")


#: Help of the flags `serve` keeps only for its deprecated --openai alias.
ALIAS_HELP = "With the deprecated --openai only: see `scenefit serve-teacher --help`."


@app.command("serve", epilog=examples(__doc__, "serve"))
def serve_cmd(
    ctx: typer.Context,
    demo: Annotated[bool, typer.Option("--demo", help="Serve the demo's students: $DEMO_DIR/students (default runs/demo/students, what `scenefit run --config demo --out runs/demo` trains).")] = False,
    students: Annotated[Optional[Path], typer.Option("--students", help="Folder with one student per criterion (default: predict.students).", file_okay=False)] = None,
    base: Annotated[Optional[str], typer.Option("--base", help="Base model under the adapters (default: the one the students name).")] = None,
    host: Annotated[Optional[str], typer.Option(help="Address to bind (loopback by default).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (0 = any free port; the URL is printed); default 8000.")] = None,
    max_batch: Annotated[Optional[int], typer.Option(help=fhelp("serve", "max_batch"))] = None,
    device: Annotated[Optional[str], typer.Option(help="torch device (default: cuda when available, else cpu).")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="auto, bf16, fp16 or fp32 (default: auto).")] = None,
    api_token: Annotated[Optional[str], typer.Option("--api-token", help="Bearer token clients must send (default: $SCENEFIT_API_TOKEN; unset = no auth).")] = None,
    insecure_no_auth: Annotated[bool, typer.Option("--insecure-no-auth", help="Allow a non-loopback --host without a bearer token (anyone who reaches the port can use the model).")] = False,
    max_wait_ms: Annotated[Optional[float], typer.Option(help=fhelp("serve", "max_wait_ms"))] = None,
    max_concurrency: Annotated[Optional[int], typer.Option(help=fhelp("serve", "max_concurrency"))] = None,
    request_timeout: Annotated[Optional[float], typer.Option(help=fhelp("serve", "request_timeout_s"))] = None,
    max_body_bytes: Annotated[Optional[int], typer.Option(help=fhelp("serve", "max_body_bytes"))] = None,
    max_image_pixels: Annotated[Optional[int], typer.Option(help=fhelp("serve", "max_image_pixels"))] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    # the deprecated alias of `scenefit serve-teacher` and its flags (hidden from --help)
    openai: Annotated[bool, typer.Option("--openai", hidden=True, help="Deprecated: use `scenefit serve-teacher`.")] = False,
    model: Annotated[Optional[Path], typer.Option("--model", hidden=True, file_okay=False, help=ALIAS_HELP)] = None,
    model_name: Annotated[Optional[str], typer.Option("--model-name", hidden=True, help=ALIAS_HELP)] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option(hidden=True, help=ALIAS_HELP)] = None,
    max_tokens_limit: Annotated[Optional[int], typer.Option(hidden=True, help=ALIAS_HELP)] = None,
) -> None:
    """Serve the students (classify API, web page, chat by model name) over HTTP until
    interrupted (Ctrl-C). A plain model for the teachers' protocol: `scenefit serve-teacher`."""
    require_serve_extra()
    given = [p for p in ctx.command.params if p.name != "openai" and _given(ctx.params.get(p.name))]
    if openai:
        from scenefit.cli.serve_teacher import TEACHER_FLAGS, serve_teacher

        teacher = sorted((p for p in given if p.name in TEACHER_FLAGS), key=lambda p: p.name != "model")
        console.print(f"[yellow]deprecated:[/] `scenefit serve --openai` is now its own verb: "
                      f"{escape(teacher_command(teacher, ctx))}")
        # a flag that would be ignored (an --api-token above all) must not pass silently
        _refuse_flags([p for p in given if p.name not in TEACHER_FLAGS],
                      "with --openai (a plain model over the chat protocol, no authentication, no student limits)")
        args = {p.name: ctx.params[p.name] for p in teacher}
        serve_teacher(args.pop("model", None), **args)
        return
    _refuse_flags([p for p in given if p.hidden], "without --openai (they configure `scenefit serve-teacher`)")
    _serve_students(demo, students, base, device, dtype, api_token, config, sets, insecure_no_auth, host=host, port=port,
                    max_batch=max_batch, max_wait_ms=max_wait_ms, max_concurrency=max_concurrency,
                    request_timeout_s=request_timeout, max_body_bytes=max_body_bytes,
                    max_image_pixels=max_image_pixels)


def teacher_command(flags: list, ctx: typer.Context) -> str:
    """The `scenefit serve-teacher` command line with ``flags`` (click parameters) as given."""
    import shlex

    words = ["scenefit", "serve-teacher"]
    for p in flags:
        value = ctx.params[p.name]
        words += [p.opts[0]] if value is True else [p.opts[0], str(value)]
    return " ".join(shlex.quote(w) for w in words)


def _given(value) -> bool:
    """Whether a flag was set: every flag of `serve` defaults to None, False or nothing."""
    return not (value is None or value is False or (isinstance(value, (list, tuple)) and not value))


def split_sets(sets: Optional[list[str]], other: str) -> tuple[list[str], list[str]]:
    """``--set`` items for this verb's section, and those for the section ``other`` (written
    ``other.KEY=VALUE``, the prefix removed)."""
    mine, theirs = [], []
    for item in sets or []:
        if item.startswith(f"{other}."):
            theirs.append(item.removeprefix(f"{other}."))
        else:
            mine.append(item)
    return mine, theirs


def _refuse_flags(flags: list, why: str) -> None:
    if flags:
        names = [p.opts[0] for p in flags]
        fail(f"{', '.join(names)} {'do' if len(names) > 1 else 'does'} not apply {why}")


def _serve_students(demo: bool, students: Optional[Path], base: Optional[str], device: Optional[str],
                    dtype: Optional[str], api_token: Optional[str], config: Optional[Path],
                    sets: Optional[list[str]], insecure_no_auth: bool, **server_flags) -> None:
    """The student server: students from --demo / --students / predict.students, limits from
    the serve section (``--set KEY=VALUE``), model settings from the predict section (``--set
    predict.KEY=VALUE``; with --demo and no --config, both from the demo run's run.yaml, else the
    packaged demo config), bearer token from --api-token or the environment."""
    import sys

    from scenefit.cli.common import demo_students
    from scenefit.serve.app import serve_students
    from scenefit.serve.security import resolve_token

    if demo and students is not None:
        fail("give either --demo or --students, not both")
    if demo and config is None:
        config = demo_config()
        console.print(f"limits and model settings from {config} (--config overrides)")
    serve_sets, predict_sets = split_sets(sets, "predict")
    cfg = load_config("serve", config, serve_sets, **server_flags)
    pcfg = load_config("predict", config, predict_sets, base=base, device=device, dtype=dtype)
    folder = demo_students() if demo else students or (Path(pcfg.students) if pcfg.students else None)
    if folder is None:
        fail("say which students to serve: --demo, --students DIR, or predict.students in --config "
             "(a plain model for the teachers' protocol: `scenefit serve-teacher --model DIR`)")
    if not folder.is_dir():
        hint = " (run `scenefit run --config demo --out runs/demo` first, or set DEMO_DIR)" if demo else ""
        fail(f"no students folder at {folder}{hint}")
    token = resolve_token(api_token, cfg.api_token_env)
    if cfg.host not in LOOPBACK and token is None:
        if not insecure_no_auth:
            fail(f"--host {cfg.host} without an API token would let anyone who reaches it use the students; "
                 "set SCENEFIT_API_TOKEN or --api-token, or pass --insecure-no-auth to do it on purpose")
        console.print(f"[yellow]warning:[/] listening on {cfg.host} without an API token")

    def ready(url: str) -> None:
        sys.stdout.write(f"serving {url}\n")
        sys.stdout.flush()
        console.print(f"scenefit students from {folder} at {url}/ (web page), {url}/v1/classify; "
                      f"auth {'on' if token else 'off'} (Ctrl-C stops it)")

    try:
        serve_students(folder, pcfg, cfg, token, on_ready=ready)
    except OSError as e:
        fail(f"cannot listen on {cfg.host}:{cfg.port}: {e}")
    except Exception as e:  # students that cannot be loaded: say which and why, no traceback
        from scenefit.predict import StudentError

        if isinstance(e, StudentError):
            fail(str(e))
        raise
