"""`scenefit serve` — HTTP serving of a local model.

    scenefit serve --openai --model runs/demo/model --host 127.0.0.1 --port 8000
    scenefit serve --openai --model runs/demo/model --port 0     # a free port; the URL is printed
    scenefit serve --demo                                        # the students `make demo` trained
    scenefit serve --students runs/x/students --api-token "$TOKEN" --port 8100

Without ``--openai`` it serves the three students (one base + three adapters): the classify API
(``POST /v1/classify``), a web page at ``/``, ``/v1/models``, ``/v1/metrics`` and the OpenAI
chat route addressed by model name (``scenefit-location``, …, ``scenefit-base``); see
:mod:`scenefit.serve.app`. Server limits come from the ``serve`` config section, the model
settings from the ``predict`` section. The first line on stdout is ``serving <base URL>``, printed
only once the socket accepts connections.

With ``--openai`` the model answers the OpenAI chat-completions protocol (``/v1/chat/completions``
with text and base64 image parts, ``/v1/models``), so ``scenefit annotate`` with an ``openai``
teacher can use it. The first line on stdout is ``serving <base URL>/v1`` (also once it listens).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from scenefit.cli import app
from scenefit.cli.common import ConfigOpt, SetOpt, console, examples, fail, fhelp, load_config


#: Addresses that only this machine can reach: binding anything else without a token is refused
#: unless --insecure-no-auth says it is meant.
LOOPBACK = ("127.0.0.1", "localhost", "::1")

#: Distributions of the ``serve`` extra (pyproject.toml), checked before the server modules load.
SERVE_EXTRA = ("fastapi", "uvicorn", "python-multipart")


def demo_config() -> Optional[Path]:
    """configs/demo.yaml — the file `make demo` trained with — from the working directory, else
    from this checkout; None when neither exists (an installed package without the repo)."""
    for candidate in (Path("configs/demo.yaml"), Path(__file__).resolve().parents[3] / "configs" / "demo.yaml"):
        if candidate.is_file():
            return candidate
    return None


def require_serve_extra() -> None:
    """Fail with the install command, not an import traceback, when the serve extra is missing."""
    from importlib.metadata import PackageNotFoundError, version

    missing = []
    for dist in SERVE_EXTRA:
        try:
            version(dist)
        except PackageNotFoundError:
            missing.append(dist)
    if missing:
        fail(f"scenefit serve needs the 'serve' extra (missing: {', '.join(missing)}): pip install 'scenefit[serve]'")


@app.command("serve", epilog=examples(__doc__, "serve"))
def serve_cmd(
    openai: Annotated[bool, typer.Option("--openai", help="Serve the OpenAI chat-completions protocol.")] = False,
    model: Annotated[Optional[Path], typer.Option("--model", help="Model folder to serve (e.g. runs/demo/model).", file_okay=False)] = None,
    model_name: Annotated[Optional[str], typer.Option("--model-name", help="Model id clients send (default: the folder name).")] = None,
    host: Annotated[Optional[str], typer.Option(help="Address to bind (loopback by default).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (0 = any free port; the URL is printed); default 8000.")] = None,
    max_batch: Annotated[Optional[int], typer.Option(help="Most concurrent requests in one batch (default: 8 with --openai, else serve.max_batch).")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option(help="With --openai: answer length when a request gives no max_tokens (default 512).")] = None,
    max_tokens_limit: Annotated[Optional[int], typer.Option(help="With --openai: largest max_tokens a request may ask for (default 4096; 400 beyond it).")] = None,
    device: Annotated[Optional[str], typer.Option(help="torch device (default: cuda when available, else cpu).")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="auto, bf16, fp16 or fp32 (default: auto).")] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Serve the students `make demo` trained ($DEMO_DIR/students, default runs/demo/students).")] = False,
    students: Annotated[Optional[Path], typer.Option("--students", help="Folder with one student per criterion (default: predict.students).", file_okay=False)] = None,
    base: Annotated[Optional[str], typer.Option("--base", help="Base model under the adapters (default: the one the students name).")] = None,
    api_token: Annotated[Optional[str], typer.Option("--api-token", help="Bearer token clients must send (default: $SCENEFIT_API_TOKEN; unset = no auth).")] = None,
    insecure_no_auth: Annotated[bool, typer.Option("--insecure-no-auth", help="Allow a non-loopback --host without a bearer token (anyone who reaches the port can use the model).")] = False,
    max_wait_ms: Annotated[Optional[float], typer.Option(help=fhelp("serve", "max_wait_ms"))] = None,
    max_concurrency: Annotated[Optional[int], typer.Option(help=fhelp("serve", "max_concurrency"))] = None,
    request_timeout: Annotated[Optional[float], typer.Option(help=fhelp("serve", "request_timeout_s"))] = None,
    max_body_bytes: Annotated[Optional[int], typer.Option(help=fhelp("serve", "max_body_bytes"))] = None,
    max_image_pixels: Annotated[Optional[int], typer.Option(help=fhelp("serve", "max_image_pixels"))] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Serve the students (classify API, web page, chat by model name), or with --openai a local
    model, over HTTP until interrupted (Ctrl-C)."""
    import sys

    require_serve_extra()
    students_only = {"--demo": demo, "--students": students, "--base": base, "--api-token": api_token,
                     "--max-wait-ms": max_wait_ms, "--max-concurrency": max_concurrency,
                     "--request-timeout": request_timeout, "--max-body-bytes": max_body_bytes,
                     "--max-image-pixels": max_image_pixels, "--config": config, "--set": sets}
    openai_only = {"--model": model, "--model-name": model_name, "--max-new-tokens": max_new_tokens,
                   "--max-tokens-limit": max_tokens_limit}
    misplaced = [k for k, v in (students_only if openai else openai_only).items() if v not in (None, False, [])]
    if misplaced:
        # a flag that would be ignored (an --api-token above all) must not pass silently
        fail(f"{', '.join(misplaced)} {'do' if len(misplaced) > 1 else 'does'} not apply "
             + ("with --openai (a plain model over the chat protocol, no authentication, no student limits)"
                if openai else "without --openai (they configure the plain-model chat server)"))
    if not openai:
        _serve_students(demo, students, base, device, dtype, api_token, config, sets, insecure_no_auth, host=host, port=port,
                        max_batch=max_batch, max_wait_ms=max_wait_ms, max_concurrency=max_concurrency,
                        request_timeout_s=request_timeout, max_body_bytes=max_body_bytes,
                        max_image_pixels=max_image_pixels)
        return
    host, port = host or "127.0.0.1", 8000 if port is None else port
    if host not in LOOPBACK:
        if not insecure_no_auth:
            fail(f"--host {host} would expose the --openai server, which has no authentication; "
                 "bind 127.0.0.1, or pass --insecure-no-auth to do it on purpose")
        console.print(f"[yellow]warning:[/] listening on {host}; the --openai server has no authentication")
    if model is None:
        fail("--openai needs --model DIR (a model folder, e.g. runs/demo/model)")
    if not model.is_dir():
        fail(f"--model {model}: not a model folder")
    from scenefit.serve.openai_server import build_openai_app, model_runner, run_app

    name = model_name or model.name
    default_tokens = 512 if max_new_tokens is None else max_new_tokens
    limit = max(4096, default_tokens) if max_tokens_limit is None else max_tokens_limit
    if default_tokens > limit:
        fail(f"--max-new-tokens {default_tokens} exceeds --max-tokens-limit {limit}")
    runner = model_runner(str(model), max_batch=max_batch or 8, device=device, dtype=dtype or "auto")
    api = build_openai_app(runner, name, default_max_tokens=default_tokens, max_tokens_limit=limit)

    def ready(base: str) -> None:
        sys.stdout.write(f"serving {base}/v1\n")
        sys.stdout.flush()
        console.print(f"OpenAI-compatible server for {name!r} at {base}/v1 (Ctrl-C stops it)")

    try:
        run_app(api, host=host, port=port, on_ready=ready)
    except OSError as e:
        fail(f"cannot listen on {host}:{port}: {e}")


def _serve_students(demo: bool, students: Optional[Path], base: Optional[str], device: Optional[str],
                    dtype: Optional[str], api_token: Optional[str], config: Optional[Path],
                    sets: Optional[list[str]], insecure_no_auth: bool, **server_flags) -> None:
    """The student server: students from --demo / --students / predict.students, limits from
    the serve section (--set applies to it; with --demo and no --config, configs/demo.yaml's),
    bearer token from --api-token or the environment."""
    import sys

    from scenefit.serve.app import serve_students
    from scenefit.cli.predict import demo_students
    from scenefit.serve.security import resolve_token

    if demo and students is not None:
        fail("give either --demo or --students, not both")
    if demo and config is None:
        config = demo_config()
        if config is not None:
            console.print(f"limits and model settings from {config} (--config overrides)")
    cfg = load_config("serve", config, sets, **server_flags)
    pcfg = load_config("predict", config, None, base=base, device=device, dtype=dtype)
    folder = demo_students() if demo else students or (Path(pcfg.students) if pcfg.students else None)
    if folder is None:
        fail("say which students to serve: --demo, --students DIR, or predict.students in --config "
             "(or --openai --model DIR for a plain model)")
    if not folder.is_dir():
        hint = " (run `make demo` first)" if demo else ""
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
