"""A small OpenAI-compatible chat-completions server around a model-runner callable.

    scenefit serve-teacher --model runs/demo/model --host 127.0.0.1 --port 8000
    curl http://127.0.0.1:8000/v1/models

    from scenefit.serve.openai_server import build_openai_router, ChatRequest, ChatReply
    async def runner(req: ChatRequest) -> ChatReply: ...
    app.include_router(build_openai_router(runner, model_name="tiny"))

The router validates the request (messages with text and ``image_url`` parts — images only as
``data:`` URLs, nothing is fetched), turns it into a :class:`ChatRequest` (the conversation in
the transformers chat format plus decoded PIL images) and answers with what the runner
returns. The runner may raise ``fastapi.HTTPException`` to answer with an error status.
:class:`BatchingRunner` gathers concurrent requests into batched calls of a synchronous
generate function (``scenefit serve-teacher`` batches the model's ``generate()`` this way).
Streaming (``stream: true``) answers server-sent events in the OpenAI chunk format
(:mod:`.streaming`). ``logprobs: true`` (with ``top_logprobs: k``, at most 20) adds each
generated token's log-probability and its ``k`` best alternatives in the OpenAI shape
(``choices[0].logprobs.content``), plain or streamed; a stream that asks for them gets its
chunks, one token each, when generation ends. Not supported: ``n`` > 1, tools.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterator, Optional

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from scenefit.core.errors import ScenefitError
from scenefit.serve.security import error_bytes, error_payload, log, status_code_name


@dataclass
class ChatRequest:
    """A validated chat request. ``conversation`` uses the transformers chat format with one
    ``{"type": "image"}`` part per entry of ``images`` (same order)."""

    model: str
    conversation: list[dict]
    images: list[Any]
    max_tokens: int = 512
    temperature: float = 0.0
    top_p: Optional[float] = None
    seed: Optional[int] = None
    response_format: Optional[dict] = None
    body: dict = field(default_factory=dict)
    headers: dict = field(default_factory=dict)  # the HTTP request headers, lower-case names
    stream: bool = False
    logprobs: bool = False  # answer each token's log-probability ...
    top_logprobs: int = 0  # ... with this many alternatives (0-20)
    #: Set when nobody waits for the answer any more (client gone, timeout): its row stops.
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    #: Streaming: called from the generation thread with each new piece of text.
    on_text: Optional[Callable[[str], None]] = field(default=None, repr=False)

    def decoding_key(self) -> tuple:
        """Requests with equal keys can share one batched generate() call."""
        return (self.max_tokens, self.temperature, self.top_p, self.seed)


@dataclass
class ChatReply:
    text: str
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    batch_size: int = 1  # how many requests shared the generate() call (X-Scenefit-Batch header)
    #: The generated tokens with their log-probabilities (scenefit.teachers.label_probs.TokenChoice),
    #: when the request asked for logprobs and the runner can give them; None otherwise.
    tokens: Optional[list] = None


ChatRunner = Callable[[ChatRequest], Awaitable[ChatReply]]


#: The most alternatives per token a request may ask for (OpenAI's own limit).
MAX_TOP_LOGPROBS = 20


class BadRequest(ScenefitError, ValueError):
    """A request the server refuses with 400 (message says which field and why)."""


def decode_data_url(url: str, **image_options):
    """A PIL RGB image from a ``data:image/...;base64,`` URL, decoded with scenefit.core.images'
    checks (format allow-list, pixel cap before decoding, full decode; ``image_options`` are
    :func:`scenefit.core.images.load_image_bytes` keywords); BadRequest otherwise."""
    from scenefit.core.images import ImageError, load_image_bytes

    if not isinstance(url, str) or not url.startswith("data:"):
        raise BadRequest("image_url must be a data: URL (base64); this server fetches nothing")
    head, sep, payload = url.partition(",")
    if not sep or ";base64" not in head:
        raise BadRequest("image data URL must be base64 encoded (data:image/png;base64,...)")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise BadRequest(f"image data URL is not valid base64 ({e})") from None
    try:
        return load_image_bytes(raw, name="image data URL", **image_options)
    except ImageError as e:
        raise BadRequest(f"image data URL refused ({e.code}): {e.message}") from None


#: ASGI scope key under which an app wrapping the router (the student server's chat dispatcher)
#: hands down the data-URL images it has already decoded and checked, as
#: ``{(message index, part index): PIL image}``, so that they are not decoded a second time.
DECODED_IMAGES_SCOPE_KEY = "scenefit.decoded_images"


def parse_chat_body(body: Any, default_max_tokens: int = 512, max_tokens_limit: Optional[int] = None,
                    image_options: Optional[dict] = None,
                    decoded: Optional[dict[tuple[int, int], Any]] = None) -> ChatRequest:
    """Validate an OpenAI chat-completions body into a :class:`ChatRequest` (``max_tokens``
    above ``max_tokens_limit`` is refused, naming the limit). ``decoded``: images already decoded
    by position (see :data:`DECODED_IMAGES_SCOPE_KEY`); the others are decoded here."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int)):
        raise BadRequest(f"n must be an integer, got {n!r}")
    if n not in (None, 1):
        raise BadRequest("only n=1 is supported")
    if not isinstance(body.get("stream", False), (bool, type(None))):
        raise BadRequest(f"stream must be true or false, got {body['stream']!r}")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest("stream_options must be an object such as {\"include_usage\": true}")
    logprobs = body.get("logprobs")
    if not isinstance(logprobs, (bool, type(None))):
        raise BadRequest(f"logprobs must be true or false, got {logprobs!r}")
    top_logprobs = body.get("top_logprobs")
    if top_logprobs is not None:
        if isinstance(top_logprobs, bool) or not isinstance(top_logprobs, int) or not 0 <= top_logprobs <= MAX_TOP_LOGPROBS:
            raise BadRequest(f"top_logprobs must be an integer from 0 to {MAX_TOP_LOGPROBS}, got {top_logprobs!r}")
        if not logprobs:
            raise BadRequest("top_logprobs needs logprobs: true")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list")
    conversation: list[dict] = []
    images: list[Any] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise BadRequest(f"messages[{i}] needs a role of system, user or assistant")
        content = m.get("content")
        parts: list[dict] = []
        if isinstance(content, str):
            parts.append({"type": "text", "text": content})
        elif isinstance(content, list):
            for j, p in enumerate(content):
                kind = p.get("type") if isinstance(p, dict) else None
                if kind == "text":
                    parts.append({"type": "text", "text": str(p.get("text", ""))})
                elif kind == "image_url":
                    iu = p.get("image_url")
                    url = iu.get("url") if isinstance(iu, dict) else iu
                    try:
                        image = (decoded or {}).get((i, j))
                        images.append(image if image is not None else decode_data_url(url, **(image_options or {})))
                    except BadRequest as e:
                        raise BadRequest(f"messages[{i}].content[{j}]: {e}") from None
                    parts.append({"type": "image"})
                else:
                    raise BadRequest(f"messages[{i}].content[{j}]: unsupported part type {kind!r} (text, image_url)")
        else:
            raise BadRequest(f"messages[{i}].content must be a string or a list of parts")
        conversation.append({"role": m["role"], "content": parts})
    try:
        max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens)
        temperature = float(body.get("temperature") if body.get("temperature") is not None else 0.0)
        top_p = float(body["top_p"]) if body.get("top_p") is not None else None
        seed = int(body["seed"]) if body.get("seed") is not None else None
    except (TypeError, ValueError) as e:
        raise BadRequest(f"bad decoding parameter ({e})") from None
    if max_tokens < 1 or temperature < 0:
        raise BadRequest("max_tokens must be >= 1 and temperature >= 0")
    if max_tokens_limit is not None and max_tokens > max_tokens_limit:
        raise BadRequest(f"max_tokens {max_tokens} exceeds this server's limit of {max_tokens_limit}")
    return ChatRequest(
        model=str(body.get("model") or ""), conversation=conversation, images=images, max_tokens=max_tokens,
        temperature=temperature, top_p=top_p, seed=seed, response_format=body.get("response_format"), body=body,
        stream=bool(body.get("stream")), logprobs=bool(logprobs), top_logprobs=int(top_logprobs or 0),
    )


def choice_logprobs(req: ChatRequest, tokens: Optional[list]) -> Optional[dict]:
    """The ``logprobs`` of a choice: ``{"content": [...]}`` with the request's number of
    alternatives, or None when it asked for none (or the runner gave none)."""
    from scenefit.teachers.label_probs import openai_logprobs_content

    if not req.logprobs or tokens is None:
        return None
    return {"content": openai_logprobs_content([t.__class__(t.token, t.logprob, t.top[:req.top_logprobs]) for t in tokens])}


def _error(status: int, message: str, kind: str = "invalid_request_error", code: Optional[str] = None) -> JSONResponse:
    """An error in the servers' one shape (:func:`.security.error_payload`) with OpenAI's ``type``."""
    return JSONResponse(status_code=status, content=error_payload(code or status_code_name(status), message, kind))


def build_openai_router(runner: ChatRunner, model_name: str, default_max_tokens: int = 512,
                        max_tokens_limit: Optional[int] = None, image_options: Optional[dict] = None,
                        decode: Optional[Callable[..., Awaitable[Any]]] = None) -> APIRouter:
    """``POST /v1/chat/completions`` (plain or streamed) and ``GET /v1/models`` answering with
    ``runner``. A request whose client disconnects is cancelled (its generation stops).
    ``image_options``: :func:`scenefit.core.images.load_image_bytes` keywords for the data URLs;
    ``decode(fn, *args)``: where to run the parsing that decodes them (default: the thread pool)."""
    decode = decode or run_in_threadpool
    from scenefit.serve.streaming import ClientGone, sse_chunks, unless_client_leaves, usage

    router = APIRouter()
    created = int(time.time())

    @router.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created, "owned_by": "scenefit"}]}

    @router.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            body = await request.json()
        except Exception:
            return _error(400, "request body is not valid JSON")
        try:
            req = await decode(parse_chat_body, body, default_max_tokens, max_tokens_limit, image_options,
                               request.scope.get(DECODED_IMAGES_SCOPE_KEY))
        except BadRequest as e:
            return _error(400, str(e))
        req.headers = {k.lower(): v for k, v in request.headers.items()}
        if req.model and req.model != model_name:
            return _error(404, f"model {req.model!r} is not served here; this server serves {model_name!r}", "not_found_error",
                          "model_not_found")
        if req.stream:
            return StreamingResponse(sse_chunks(req, runner, model_name), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        try:
            reply = await unless_client_leaves(request.receive, runner(req))
        except ClientGone:
            log.info("client of a chat request for %s left before its answer; generation stopped", model_name)
            return Response(status_code=499)  # nobody reads it; the connection is gone
        except HTTPException:
            raise
        except Exception as e:  # the model failed: a server error the client may retry
            return _error(500, f"{type(e).__name__}: {e}", "server_error", "generation_failed")
        payload = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                         "logprobs": choice_logprobs(req, reply.tokens), "finish_reason": reply.finish_reason}],
            "usage": usage(reply),
        }
        return JSONResponse(payload, headers={"X-Scenefit-Batch": str(reply.batch_size)})

    return router


def build_openai_app(runner: ChatRunner, model_name: str, default_max_tokens: int = 512,
                     max_tokens_limit: Optional[int] = None, image_options: Optional[dict] = None,
                     decode: Optional[Callable[..., Awaitable[Any]]] = None) -> FastAPI:
    app = FastAPI(title="scenefit OpenAI-compatible server", docs_url=None, redoc_url=None)
    app.include_router(build_openai_router(runner, model_name, default_max_tokens, max_tokens_limit, image_options, decode))
    return app


class BatchingRunner:
    """Turn a synchronous ``generate(list[ChatRequest]) -> list[ChatReply]`` into a runner that
    batches concurrent requests: up to ``max_batch`` with equal decoding settings per call,
    waiting at most ``max_wait_s`` for companions. The batching itself is the student server's
    :class:`~scenefit.serve.batching.MicroBatcher` (one worker thread, requests of clients that
    hung up skipped, a failing merged call retried item by item)."""

    def __init__(self, generate: Callable[[list[ChatRequest]], list[ChatReply]], max_batch: int = 8, max_wait_s: float = 0.005):
        from scenefit.serve.batching import MicroBatcher

        self.generate = generate
        self._batcher = MicroBatcher(self._generate_batch, max_batch=max(1, max_batch), max_wait_ms=max_wait_s * 1000)

    def _generate_batch(self, requests, _decoding_key) -> list[ChatReply]:
        replies = self.generate(list(requests))
        for rep in replies:
            rep.batch_size = len(requests)
        return replies

    async def __call__(self, req: ChatRequest) -> ChatReply:
        try:
            return await self._batcher.submit(req, req.decoding_key())
        except asyncio.CancelledError:  # nobody waits any more: stop its row if it is generating
            req.cancel.set()
            raise


def model_runner(model_dir: str, max_batch: int = 8, device: Optional[str] = None, dtype: str = "auto",
                 max_pixels: Optional[int] = None) -> BatchingRunner:
    """A batching runner over a local model folder (loaded once, here)."""
    from scenefit.models.loading import load_model, load_processor
    from scenefit.teachers.transformers_backend import generate_chat

    from scenefit.serve.streaming import RequestWatch

    processor = load_processor(model_dir, max_pixels=max_pixels, padding_side="left")
    model = load_model(model_dir, dtype=dtype, device=device)

    def generate(reqs: list[ChatRequest]) -> list[ChatReply]:
        first = reqs[0]
        asked = [r.top_logprobs for r in reqs if r.logprobs]  # one batch computes them for all who ask
        outs = generate_chat(model, processor, [r.conversation for r in reqs], [r.images for r in reqs],
                             max_new_tokens=first.max_tokens, temperature=first.temperature, top_p=first.top_p, seed=first.seed,
                             stopping_criteria=[RequestWatch(reqs, processor.tokenizer)],
                             top_logprobs=max(asked) if asked else None)
        return [ChatReply(o["text"], o["finish_reason"], o["prompt_tokens"], o["completion_tokens"],
                          tokens=o.get("tokens") if r.logprobs else None) for r, o in zip(reqs, outs)]

    return BatchingRunner(generate, max_batch=max_batch)


# --- running an app on loopback -----------------------------------------------------------

def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening-ready TCP socket (port 0 = a free port, read back from the socket)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def _uvicorn_server(app, log_level: str, on_started: Optional[Callable[[], None]] = None):
    """A uvicorn server that calls ``on_started()`` once its sockets accept connections (its
    startup complete), so whoever waits for the announcement never meets a refused connection."""
    import uvicorn
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class AnnouncingServer(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if on_started is not None and self.started and not self.should_exit:
                on_started()

    class JsonErrorH11Protocol(H11Protocol):
        """Requests the HTTP parser itself refuses (``Content-Length: abc``, broken headers)
        get the JSON error shape of every other refusal, not uvicorn's plain text."""

        def send_400_response(self, msg: str) -> None:
            import h11

            body = error_bytes("bad_http_request", msg)
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                       (b"connection", b"close")]
            for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body),
                          h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
            self.transport.close()

    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off", timeout_graceful_shutdown=2,
                            http=JsonErrorH11Protocol)
    return AnnouncingServer(config)


def run_app(app, host: str = "127.0.0.1", port: int = 0, on_ready: Optional[Callable[[str], None]] = None,
            log_level: str = "warning") -> None:
    """Serve ``app`` until interrupted; ``on_ready(base_url)`` runs once the server listens
    (port 0: the port the system picked), never before."""
    sock = bind_socket(host, port)
    base = f"http://{host}:{sock.getsockname()[1]}"
    server = _uvicorn_server(app, log_level, (lambda: on_ready(base)) if on_ready else None)
    server.run(sockets=[sock])


@contextlib.contextmanager
def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> Iterator[str]:
    """Run ``app`` in a background thread for the ``with`` block; yields its base URL
    (``http://127.0.0.1:PORT``). Used by tests and benchmarks."""
    sock = bind_socket(host, port)
    listening = threading.Event()
    server = _uvicorn_server(app, log_level, listening.set)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120  # generous: a busy machine starts slowly, but it starts
    while not listening.wait(0.05):
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("loopback server did not start listening")
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
