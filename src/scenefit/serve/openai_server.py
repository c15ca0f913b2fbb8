"""A small OpenAI-compatible chat-completions server around a model-runner callable.

    scenefit serve-teacher --model runs/demo/model --host 127.0.0.1 --port 8000
    curl http://127.0.0.1:8000/v1/models

    from scenefit.serve.openai_server import build_openai_router, ChatRequest, ChatReply
    async def runner(req: ChatRequest) -> ChatReply: ...
    app.include_router(build_openai_router(runner, model_name="tiny"))

The router validates the request (:class:`ChatBody` for the parameters; messages with text and
``image_url`` parts — images only as ``data:`` URLs, nothing is fetched; no text that spells a
special token, :mod:`scenefit.core.text`), turns it into a :class:`ChatRequest` (the conversation
in the transformers chat format plus decoded PIL images), checks its prompt-token cap
(:class:`PromptGuard`) and answers with what the runner returns. The runner may raise ``fastapi.HTTPException`` to answer with an error status.
:class:`BatchingRunner` gathers concurrent requests into batched calls of a synchronous
generate function (``scenefit serve-teacher`` batches the model's ``generate()`` this way).
Streaming (``stream: true``) answers server-sent events in the OpenAI chunk format
(:mod:`.streaming`). ``logprobs: true`` (with ``top_logprobs: k``, at most 20) adds each
generated token's log-probability and its ``k`` best alternatives in the OpenAI shape
(``choices[0].logprobs.content``), plain or streamed; a stream that asks for them gets its
chunks, one token each, when generation ends. Not supported: ``n`` > 1, tools.
:func:`teacher_app` is ``scenefit serve-teacher``'s app: a model folder behind the guards both
servers share (:func:`guarded_openai_app`).
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
from typing import Any, Awaitable, Callable, Iterator, Optional, Sequence

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from scenefit.core.errors import ScenefitError
from scenefit.core.text import UnsafeText, check_chat_text
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
#: The seed range: a 64-bit signed integer, what torch.manual_seed and OpenAI's API take.
SEED_RANGE = (-(2**63), 2**63 - 1)


class BadRequest(ScenefitError, ValueError):
    """A request the server refuses with 400 (message says which field and why); ``code`` is
    the error's stable word (``bad_request``, ``unsafe_text``, ``context_length_exceeded``)."""

    def __init__(self, message: str, code: str = "bad_request"):
        super().__init__(message)
        self.code = code


class ChatBody(BaseModel):
    """The parameters of an OpenAI chat-completions body, each checked for type, range and
    finiteness (``1e999``, ``NaN`` and a 2^80 seed are refused, never handed to torch). Each
    field's ``description`` completes the refusal "<field> must be <description>". The messages
    are walked by :func:`parse_chat_body` (their images are decoded by position). Fields of
    OpenAI's protocol that this server does not use are accepted and ignored."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: Optional[str] = Field(None, description="a string (the served model's name)")
    messages: list[Any] = Field(min_length=1, description="a non-empty list")
    max_tokens: Optional[int] = Field(None, ge=1, description="an integer of at least 1")
    max_completion_tokens: Optional[int] = Field(None, ge=1, description="an integer of at least 1")
    temperature: Optional[float] = Field(None, ge=0, le=2, allow_inf_nan=False, description="a finite number from 0 to 2")
    top_p: Optional[float] = Field(None, gt=0, le=1, allow_inf_nan=False, description="a number above 0 and at most 1")
    seed: Optional[int] = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1], description="a 64-bit integer (-2^63 to 2^63-1)")
    n: Optional[int] = Field(None, description="an integer")
    stream: Optional[bool] = Field(None, description="true or false")
    stream_options: Optional[dict] = Field(None, description='an object such as {"include_usage": true}')
    logprobs: Optional[bool] = Field(None, description="true or false")
    top_logprobs: Optional[int] = Field(None, ge=0, le=MAX_TOP_LOGPROBS,
                                        description=f"an integer from 0 to {MAX_TOP_LOGPROBS}")
    response_format: Optional[dict] = Field(None, description='an object such as {"type": "json_object"}')
    presence_penalty: Optional[float] = Field(None, ge=-2, le=2, allow_inf_nan=False,
                                              description="a finite number from -2 to 2")
    frequency_penalty: Optional[float] = Field(None, ge=-2, le=2, allow_inf_nan=False,
                                               description="a finite number from -2 to 2")
    user: Optional[str] = Field(None, description="a string")

    @classmethod
    def read(cls, body: Any) -> "ChatBody":
        """The validated body, or BadRequest naming the first bad field, what it must be and
        what it was."""
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        try:
            return cls.model_validate(body)
        except ValidationError as e:
            err = e.errors()[0]
            name = str(err["loc"][0]) if err["loc"] else "body"
            info = cls.model_fields.get(name)
            expected = info.description if info is not None else err["msg"]
            value = err.get("input")
            got = f", got {value!r:.60}" if not isinstance(value, (list, dict)) else ""
            raise BadRequest(f"{name} must be {expected}{got}") from None


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
                    decoded: Optional[dict[tuple[int, int], Any]] = None,
                    reserved_tokens: Sequence[str] = ()) -> ChatRequest:
    """Validate an OpenAI chat-completions body into a :class:`ChatRequest`: the parameters by
    :class:`ChatBody`, ``max_tokens`` above ``max_tokens_limit`` refused naming the limit, every
    text checked by :func:`scenefit.core.text.check_chat_text` (no special-token spelling —
    ``reserved_tokens`` are the served tokenizer's own —, no control character). ``decoded``:
    images already decoded by position (see :data:`DECODED_IMAGES_SCOPE_KEY`); the others are
    decoded here."""
    params = ChatBody.read(body)
    if params.n not in (None, 1):
        raise BadRequest("only n=1 is supported")
    if params.top_logprobs is not None and not params.logprobs:
        raise BadRequest("top_logprobs needs logprobs: true")
    conversation: list[dict] = []
    images: list[Any] = []
    for i, m in enumerate(params.messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise BadRequest(f"messages[{i}] needs a role of system, user or assistant")
        content = m.get("content")
        parts: list[dict] = []
        if isinstance(content, str):
            parts.append({"type": "text", "text": _text(content, f"messages[{i}].content", reserved_tokens)})
        elif isinstance(content, list):
            for j, p in enumerate(content):
                kind = p.get("type") if isinstance(p, dict) else None
                if kind == "text":
                    text = p.get("text", "")
                    if not isinstance(text, str):
                        raise BadRequest(f"messages[{i}].content[{j}].text must be a string")
                    parts.append({"type": "text", "text": _text(text, f"messages[{i}].content[{j}].text", reserved_tokens)})
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
    max_tokens = params.max_completion_tokens or params.max_tokens or default_max_tokens
    if max_tokens_limit is not None and max_tokens > max_tokens_limit:
        raise BadRequest(f"max_tokens {max_tokens} exceeds this server's limit of {max_tokens_limit}")
    return ChatRequest(
        model=params.model or "", conversation=conversation, images=images, max_tokens=max_tokens,
        temperature=params.temperature if params.temperature is not None else 0.0, top_p=params.top_p,
        seed=params.seed, response_format=params.response_format, body=body, stream=bool(params.stream),
        logprobs=bool(params.logprobs), top_logprobs=params.top_logprobs or 0,
    )


def _text(text: str, where: str, reserved_tokens: Sequence[str]) -> str:
    try:
        return check_chat_text(text, where, reserved_tokens)
    except UnsafeText as e:
        raise BadRequest(e.message, e.code) from None


class PromptGuard:
    """What a chat prompt may hold before it reaches the model, read from the served processor:
    no text spelling one of its tokenizer's added tokens, and at most ``max_prompt_tokens``
    tokens once templated, image tokens included (400 ``context_length_exceeded`` beyond).
    Counting runs where the request is parsed (a worker thread), before it waits for the model."""

    def __init__(self, processor: Any, max_prompt_tokens: Optional[int]):
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.max_prompt_tokens = max_prompt_tokens
        decoder = getattr(self.tokenizer, "added_tokens_decoder", None) or {}
        self.reserved = tuple(sorted({getattr(t, "content", str(t)) for t in decoder.values()}))

    def count(self, req: ChatRequest) -> int:
        """Tokens of ``req``'s templated prompt: its text, each image counted as the placeholder
        tokens the processor will expand it to."""
        text = self.processor.apply_chat_template(req.conversation, tokenize=False, add_generation_prompt=True)
        n = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        image_processor = getattr(self.processor, "image_processor", None)
        patches = getattr(image_processor, "get_number_of_image_patches", None)
        if patches is not None:
            merge = getattr(image_processor, "merge_size", 1) ** 2
            n += sum(patches(im.size[1], im.size[0], {}) // merge - 1 for im in req.images)
        return n

    #: Characters tokenized at once while a long prompt is counted against the cap.
    CHUNK_CHARS = 16_384

    def check(self, req: ChatRequest) -> None:
        """BadRequest ``context_length_exceeded`` when ``req``'s prompt is over the cap. A long
        text is first counted in chunks that stop once the cap is passed, so a 16 MiB message
        costs what its first few thousand tokens cost, not a tokenization of the whole."""
        cap = self.max_prompt_tokens
        if cap is None:
            return
        if self._surely_over(req, cap):
            raise BadRequest(f"the prompt has more than {cap:,} tokens, the most this server takes (shorten the "
                             "messages)", "context_length_exceeded")
        n = self.count(req)
        if n > cap:
            raise BadRequest(f"the prompt has {n:,} tokens; this server takes at most {cap:,} "
                             "(shorten the messages)", "context_length_exceeded")

    def _surely_over(self, req: ChatRequest, cap: int) -> bool:
        """Whether the messages' text alone has more than ``cap`` tokens, counted chunk by chunk
        and stopped as soon as that is certain (each cut between chunks may add one token, so
        the count less the cuts must pass the cap)."""
        texts = [p["text"] for m in req.conversation for p in m["content"] if p.get("type") == "text"]
        if sum(len(t) for t in texts) <= cap:  # short: the exact count is cheap
            return False
        counted = cuts = 0
        for text in texts:
            for start in range(0, len(text), self.CHUNK_CHARS):
                counted += len(self.tokenizer(text[start:start + self.CHUNK_CHARS], add_special_tokens=False)["input_ids"])
                cuts += 1
                if counted - cuts > cap:
                    return True
        return False


def _error(status: int, message: str, kind: str = "invalid_request_error", code: Optional[str] = None) -> JSONResponse:
    """An error in the servers' one shape (:func:`.security.error_payload`) with OpenAI's ``type``."""
    return JSONResponse(status_code=status, content=error_payload(code or status_code_name(status), message, kind))


def build_openai_router(runner: ChatRunner, model_name: str, default_max_tokens: int = 512,
                        max_tokens_limit: Optional[int] = None, image_options: Optional[dict] = None,
                        decode: Optional[Callable[..., Awaitable[Any]]] = None,
                        guard: Optional[PromptGuard] = None) -> APIRouter:
    """``POST /v1/chat/completions`` (plain or streamed) and ``GET /v1/models`` answering with
    ``runner``. A request whose client disconnects is cancelled (its generation stops).
    ``image_options``: :func:`scenefit.core.images.load_image_bytes` keywords for the data URLs;
    ``decode(fn, *args)``: where to run the parsing that decodes them (default: the thread pool);
    ``guard``: the served tokenizer's reserved tokens and the prompt-token cap (:class:`PromptGuard`)."""
    decode = decode or run_in_threadpool
    from scenefit.serve.streaming import ClientGone, choice_logprobs, sse_chunks, unless_client_leaves, usage

    def parse(body: Any, decoded: Optional[dict]) -> ChatRequest:
        req = parse_chat_body(body, default_max_tokens, max_tokens_limit, image_options, decoded,
                              guard.reserved if guard is not None else ())
        if guard is not None:
            guard.check(req)
        return req

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
            req = await decode(parse, body, request.scope.get(DECODED_IMAGES_SCOPE_KEY))
        except BadRequest as e:
            return _error(400, str(e), code=e.code)
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
                     decode: Optional[Callable[..., Awaitable[Any]]] = None,
                     guard: Optional[PromptGuard] = None) -> FastAPI:
    app = FastAPI(title="scenefit OpenAI-compatible server", docs_url=None, redoc_url=None)
    app.include_router(build_openai_router(runner, model_name, default_max_tokens, max_tokens_limit, image_options,
                                           decode, guard))
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
                 max_pixels: Optional[int] = None, max_wait_ms: float = 5.0) -> BatchingRunner:
    """A batching runner over a local model folder (loaded once, here)."""
    from scenefit.models.loading import load_model, load_processor
    from scenefit.serve.streaming import RequestWatch
    from scenefit.teachers.transformers_backend import generate_chat

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

    runner = BatchingRunner(generate, max_batch=max_batch, max_wait_s=max_wait_ms / 1000)
    runner.processor = processor  # what PromptGuard counts prompts with
    return runner


CHAT_PATH = "/v1/chat/completions"


def guarded_openai_app(runner: ChatRunner, model_name: str, cfg: Any, guard: Optional[PromptGuard] = None) -> FastAPI:
    """The OpenAI app of ``runner`` behind the guards of both servers (``cfg``: a
    :class:`scenefit.serve.config.ServeTeacherConfig`): body cap (413), body-read timeout (408),
    concurrency cap (429 with Retry-After), request timeout (504), ``max_tokens`` limit and, with
    ``guard``, reserved tokens and the prompt-token cap (400); every refusal, and every unknown
    route, in the OpenAI error shape."""
    from scenefit.serve.security import GuardCounters, GuardMiddleware, add_error_handlers

    app = build_openai_app(runner, model_name, cfg.max_new_tokens, cfg.max_tokens_limit,
                           {"max_pixels": cfg.max_image_pixels, "allowed_formats": cfg.allowed_formats}, guard=guard)
    counters = GuardCounters()
    app.add_middleware(GuardMiddleware, token=None, max_body_bytes=cfg.max_body_bytes,
                       max_concurrency=cfg.max_concurrency, retry_after_s=cfg.retry_after_s,
                       timeout_s=cfg.request_timeout_s, body_timeout_s=cfg.body_timeout_s,
                       limited_paths=(CHAT_PATH,), counters=counters)
    add_error_handlers(app, counters)
    return app


def teacher_app(cfg: Any, model_name: str) -> FastAPI:
    """``scenefit serve-teacher``'s app: the model folder ``cfg.model`` loaded once, batched
    (:func:`model_runner`) and guarded (:func:`guarded_openai_app`)."""
    runner = model_runner(cfg.model, max_batch=cfg.max_batch, device=cfg.device, dtype=cfg.dtype,
                          max_pixels=cfg.max_pixels, max_wait_ms=cfg.max_wait_ms)
    return guarded_openai_app(runner, model_name, cfg, PromptGuard(runner.processor, cfg.max_prompt_tokens))


# --- running an app on loopback -----------------------------------------------------------

def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening-ready TCP socket (port 0 = a free port, read back from the socket)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


#: Seconds a connection may take to send a request's headers (the servers' configs set it).
DEFAULT_HEADER_TIMEOUT_S = 30.0


def _uvicorn_server(app, log_level: str, on_started: Optional[Callable[[], None]] = None,
                    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S):
    """A uvicorn server that calls ``on_started()`` once its sockets accept connections (its
    startup complete), so whoever waits for the announcement never meets a refused connection.
    A connection whose request headers are not complete ``header_timeout_s`` after it opened (or
    after its previous answer) gets 408 and is closed: uvicorn itself waits for headers forever."""
    import h11
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

            body = error_bytes("bad_http_request", msg, "invalid_request_error")
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                       (b"connection", b"close")]
            for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body),
                          h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
            self.transport.close()

        # --- header timeout: armed when a request may begin, disarmed once its headers are read
        _header_timer: Optional[asyncio.TimerHandle] = None

        def _arm_header_timer(self) -> None:
            self._disarm_header_timer()
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_too_slow)

        def _disarm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm_header_timer()

        def connection_lost(self, exc) -> None:
            self._disarm_header_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # the request line and headers are in
                self._disarm_header_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():  # a kept-alive connection: the next headers are timed too
                self._arm_header_timer()

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            body = error_bytes("header_timeout", f"the request headers did not arrive within {header_timeout_s:g} s",
                               "invalid_request_error")
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                 b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)
            self.transport.close()

    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off", timeout_graceful_shutdown=2,
                            http=JsonErrorH11Protocol)
    return AnnouncingServer(config)


def run_app(app, host: str = "127.0.0.1", port: int = 0, on_ready: Optional[Callable[[str], None]] = None,
            log_level: str = "warning", header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S) -> None:
    """Serve ``app`` until interrupted; ``on_ready(base_url)`` runs once the server listens
    (port 0: the port the system picked), never before."""
    sock = bind_socket(host, port)
    base = f"http://{host}:{sock.getsockname()[1]}"
    server = _uvicorn_server(app, log_level, (lambda: on_ready(base)) if on_ready else None, header_timeout_s)
    server.run(sockets=[sock])


@contextlib.contextmanager
def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S) -> Iterator[str]:
    """Run ``app`` in a background thread for the ``with`` block; yields its base URL
    (``http://127.0.0.1:PORT``). Used by tests and benchmarks."""
    sock = bind_socket(host, port)
    listening = threading.Event()
    server = _uvicorn_server(app, log_level, listening.set, header_timeout_s)
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
