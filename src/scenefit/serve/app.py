"""The student HTTP server: classify API, model list, metrics, web page, OpenAI chat route.

    scenefit serve --demo                                   # the students `make demo` trained
    scenefit serve --students runs/x/students --port 0 --api-token "$TOKEN"
    curl -s http://127.0.0.1:8000/health

    from scenefit.serve.app import create_app
    app = create_app(predictor, ServeConfig(), token=None)      # any object with .predict()

Routes (``/health``, ``/`` and ``/static/*`` are open; the rest need the bearer token when one
is configured):

* ``POST /v1/classify`` — JSON ``{"image": base64, "object": "dog", "box": [x0, y0, x1, y1],
  "explain": false}`` or multipart (``image`` file, ``object``, ``box`` "x0,y0,x1,y1",
  ``explain``) → the predictor's JSON (three criteria, probabilities, analyses, fused ``final``).
  Requests from all clients are merged into predictor batches (:mod:`.batching`).
* ``GET /v1/models`` — the served names (``<prefix>-<criterion>`` per student, ``<prefix>-base``).
* ``GET /v1/metrics`` — batch sizes, requests in flight, refusals by code.
* ``POST /v1/chat/completions`` — OpenAI-compatible (:mod:`.openai_server`), routed to the
  student adapter (or the base) named by ``model``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from scenefit.core.criteria import CRITERIA, Criterion
from scenefit.core.images import BOX_RED, find_box_outline, parse_box
from scenefit.core.records import is_synthetic
from scenefit.serve.batching import BatcherClosed, MicroBatcher, ModelTurns
from scenefit.serve.config import ServeConfig
from scenefit.serve.openai_server import CHAT_PATH, DECODED_IMAGES_SCOPE_KEY, PromptGuard
from scenefit.serve.security import (
    ApiError,
    GuardCounters,
    GuardMiddleware,
    PixelBudget,
    add_error_handlers,
    decode_base64_image,
    error_bytes,
    error_type,
    image_refusals,
    load_image_bytes,
    parse_flag,
    parse_object,
    place_box,
    replay_body,
)

STATIC_DIR = Path(__file__).resolve().parent / "static"
CLASSIFY_PATH = "/v1/classify"


class PredictorLike(Protocol):
    """What the server needs from :class:`scenefit.predict.Predictor` (tests pass fakes).

    ``items`` are ``(PIL image, object, box | None, boxed)``; each result is a Prediction
    (``.to_json()``) or already its JSON dict."""

    def predict(self, items: Sequence[tuple], explain: bool = False, criteria: Any = None) -> Sequence[Any]: ...


#: ``chat_generate(adapter, requests)``: one batched generate() for OpenAI chat requests with the
#: student adapter ``adapter`` active (a Criterion value), or the bare base when it is None.
ChatGenerate = Callable[[Optional[str], list], list]


def served_criteria(predictor: Any) -> list[str]:
    """Criterion values the predictor serves (all three unless it says otherwise)."""
    found = getattr(predictor, "criteria", None)
    if not found:
        return [c.value for c in CRITERIA]
    return [Criterion.parse(c).value if not isinstance(c, Criterion) else c.value for c in found]


def _to_json(result: Any) -> dict[str, Any]:
    return result.to_json() if hasattr(result, "to_json") else dict(result)


async def _read_fields(request: Request, cfg: ServeConfig) -> dict[str, Any]:
    """The classify fields from a JSON or a multipart body (image as raw bytes)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json" or ctype.endswith("+json"):
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, "bad_json", f"request body is not valid JSON ({e})") from None
        if not isinstance(body, dict):
            raise ApiError(422, "bad_json", "request body must be a JSON object with image, object, box, explain")
        image = body.get("image")
        if image is None or image == "":
            raise ApiError(422, "missing_image", "field 'image' (base64-encoded image bytes) is required")
        if not isinstance(image, str):
            raise ApiError(422, "bad_image_encoding", "field 'image' must be a base64 string")
        fields = dict(body)
        fields["image"] = decode_base64_image(image)
        return fields
    if ctype == "multipart/form-data":
        await request.body()  # read through the body cap before parsing
        try:
            form = await request.form(max_files=4, max_fields=16, max_part_size=cfg.max_body_bytes)
        except StarletteHTTPException as e:
            raise ApiError(422, "bad_multipart", f"multipart body cannot be parsed ({e.detail})") from None
        repeated = sorted({k for k in form.keys() if len(form.getlist(k)) > 1})
        if repeated:  # which one would count? refuse instead of silently taking the last
            raise ApiError(422, "bad_multipart", f"form field(s) {', '.join(map(repr, repeated))} sent more than once; send each once")
        fields = {k: v for k, v in form.items()}
        image = fields.get("image")
        if image is None or image == "":
            raise ApiError(422, "missing_image", "form field 'image' (the image file) is required")
        if isinstance(image, str):  # sent as a text field: accept base64
            fields["image"] = decode_base64_image(image)
        else:
            data = await image.read()
            if not data:
                raise ApiError(422, "missing_image", "form field 'image' holds an empty file")
            fields["image"] = data
        return fields
    raise ApiError(
        415, "unsupported_media_type",
        f"Content-Type {ctype or '(none)'!r} is not accepted; send application/json or multipart/form-data",
    )


def _build_item(fields: dict[str, Any], cfg: ServeConfig, decoding: "ImageDecoding") -> tuple[tuple, bool]:
    """Validate everything but the image first (cheap), then decode the image (scaled down to
    the model's size while decoding) and place the box (given in the original's pixels)."""
    obj = parse_object(fields.get("object"), cfg.max_object_chars)
    with image_refusals():
        box = parse_box(fields.get("box"))
    explain = parse_flag(fields.get("explain"), "explain")
    boxed = parse_flag(fields.get("boxed"), "boxed") if fields.get("boxed") is not None else box is None
    image = decoding.load(fields["image"])
    pixel_box = place_box(box, image.info.get("original_size", image.size), image.size) if box is not None else None
    if box is None:
        require_box_outline(image, decoding.box_color)
    return (image, obj, pixel_box, boxed), explain


def require_box_outline(image, color: Sequence[int]) -> None:
    """An image sent without ``box`` must show its box: a rectangle outline in the box colour
    (:func:`scenefit.core.images.find_box_outline`, run on the image as decoded for the model),
    else 422 ``no_red_box`` — three verdicts about nothing in particular would be worse."""
    if find_box_outline(image, color) is None:
        raise ApiError(422, "no_red_box", f"no box given and no rectangle outline in the box colour {tuple(color)} found "
                                          "in the image (as scaled for the model): send 'box' (x0,y0,x1,y1 in pixels) "
                                          "or draw the box")


class ImageDecoding:
    """How this server decodes uploads: the serve section's caps and formats, scaled down to
    ``fit_pixels`` while decoding, at most ``cfg.decode_pixels_in_flight`` pixels at once, in
    ``cfg.decode_workers`` threads of its own. Few threads matter as much as the budget: the C
    allocator keeps a heap per thread that decoded a large image, so decoding on the server's
    general thread pool (up to 40 threads) left gigabytes resident after a burst."""

    def __init__(self, cfg: ServeConfig, fit_pixels: Optional[int], box_color: Sequence[int] = BOX_RED):
        self.cfg = cfg
        self.fit_pixels = fit_pixels
        self.box_color = tuple(box_color)  # the colour an image sent without a box must show its box in
        self.budget = PixelBudget(cfg.decode_pixels_in_flight)
        self.executor = ThreadPoolExecutor(max_workers=cfg.decode_workers, thread_name_prefix="scenefit-decode")

    async def run(self, fn: Callable, *args):
        """``fn(*args)`` in the decoding threads (anything that decodes images goes through here)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, functools.partial(fn, *args))

    def load(self, raw: bytes):
        try:
            return load_image_bytes(raw, **self.options())
        except ApiError as e:
            if e.code != "too_large":  # a bomb is not a photo to let through by raising the cap
                raise
            # say which setting refused it, and how to raise it
            raise ApiError(e.status_code, e.code, f"{e.message}: the server's cap is serve.max_image_pixels = "
                                     f"{self.cfg.max_image_pixels:,} pixels decoded (raise it with --max-image-pixels "
                                     "or --set max_image_pixels=N; a JPEG counts at the size it decodes to, scaled "
                                     "down to the model's input while decoding, other formats at their full size)") from None

    def options(self) -> dict[str, Any]:
        """Keyword arguments of scenefit.core.images.load_image_bytes (the chat route decodes with them)."""
        return {"max_pixels": self.cfg.max_image_pixels, "allowed_formats": self.cfg.allowed_formats,
                "fit_pixels": self.fit_pixels, "decode_budget": self.budget}


def model_max_pixels(predictor: Any) -> Optional[int]:
    """The most pixels the predictor's processor passes to the model (it scales larger images
    down to it), or None when the predictor does not say."""
    size = getattr(getattr(getattr(predictor, "processor", None), "image_processor", None), "size", None)
    value = getattr(size, "longest_edge", None) if size is not None else None
    if value is None and isinstance(size, dict):
        value = size.get("longest_edge")
    return int(value) if value else None


class ChatDispatcher:
    """ASGI endpoint for ``POST /v1/chat/completions`` that hands the request to the OpenAI
    app serving the model it names (one per student adapter, one for the base), so the
    protocol code of :mod:`.openai_server` is used as is. No ``model`` -> ``default``."""

    def __init__(self, apps: dict[str, Any], default: str, decoding: ImageDecoding):
        self.apps = apps
        self.default = default
        self.decoding = decoding

    async def __call__(self, scope, receive, send) -> None:
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            parsed = json.loads(body)
            name = parsed.get("model") or self.default
        except Exception:  # let the OpenAI app answer the malformed body in its own words
            parsed, name = None, self.default
        if not isinstance(name, str):  # {"model": ["x"]}: the chat app refuses it with 400, naming the field
            name = self.default
        target = self.apps.get(name)
        refusal, decoded = None, {}
        if target is None:
            refusal = ApiError(404, "model_not_found", f"model {name!r} is not served here; served: {', '.join(self.apps)}")
        else:
            try:  # the same image checks as /v1/classify (pixel cap before decoding, formats)
                decoded = await self.decoding.run(_decode_chat_images, parsed, self.decoding)
            except ApiError as e:
                refusal = e
        if refusal is not None:
            payload = error_bytes(refusal.code, refusal.message, error_type(refusal.status_code))
            await send({"type": "http.response.start", "status": refusal.status_code,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": payload})
            return
        # the chat app uses the images decoded here instead of decoding them again
        await target({**scope, DECODED_IMAGES_SCOPE_KEY: decoded}, replay_body(body, receive), send)


def _decode_chat_images(body: Any, decoding: ImageDecoding) -> dict[tuple[int, int], Any]:
    """Every ``image_url`` data URL of a chat body decoded through the classify image checks,
    by (message index, part index)."""
    decoded: dict[tuple[int, int], Any] = {}
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return decoded
    for i, message in enumerate(body["messages"]):
        parts = message.get("content") if isinstance(message, dict) else None
        for j, part in enumerate(parts if isinstance(parts, list) else []):
            if not isinstance(part, dict) or part.get("type") != "image_url":
                continue
            ref = part.get("image_url")
            url = ref.get("url") if isinstance(ref, dict) else ref
            if isinstance(url, str) and url.startswith("data:"):
                try:
                    decoded[(i, j)] = decoding.load(decode_base64_image(url))
                except ApiError as e:
                    raise ApiError(e.status_code, e.code, f"messages[{i}].content[{j}]: {e.message}") from None
    return decoded


def _chat_apps(cfg: ServeConfig, criteria: list[str], chat_generate: ChatGenerate,
               decoding: ImageDecoding, guard: Optional[PromptGuard] = None) -> dict[str, Any]:
    from scenefit.serve.openai_server import BatchingRunner, build_openai_app

    def generator(adapter: Optional[str]):
        return lambda reqs: chat_generate(adapter, reqs)

    names: dict[str, Optional[str]] = {cfg.model_name(c): c for c in criteria}
    names[cfg.base_model_name] = None
    return {
        name: build_openai_app(BatchingRunner(generator(adapter), max_batch=cfg.max_batch), name, cfg.chat_max_tokens,
                               max_tokens_limit=cfg.chat_max_tokens_limit, image_options=decoding.options(),
                               decode=decoding.run, guard=guard)
        for name, adapter in names.items()
    }


def predictor_chat(predictor: Any) -> Optional[ChatGenerate]:
    """The chat generator of a :class:`scenefit.predict.Predictor` (its ``chat()`` runs the
    named adapter, or the bare base, on the shared model); None for predictors without one."""
    chat = getattr(predictor, "chat", None)
    if chat is None:
        return None
    from scenefit.serve.openai_server import ChatReply
    from scenefit.serve.streaming import RequestWatch

    def generate(adapter: Optional[str], reqs: list) -> list:
        first = reqs[0]  # the batching runner only merges requests with equal decoding settings
        images = [im for r in reqs for im in r.images]
        texts, counts, prompt_counts = chat([r.conversation for r in reqs], images or None, adapter=adapter,
                                            max_new_tokens=first.max_tokens, temperature=first.temperature,
                                            top_p=first.top_p if first.top_p is not None else 1.0,
                                            stopping_criteria=[RequestWatch(reqs, predictor.tokenizer)])
        return [ChatReply(text=t, finish_reason="length" if n >= first.max_tokens else "stop", prompt_tokens=p,
                          completion_tokens=n)
                for t, n, p in zip(texts, counts, prompt_counts)]

    return generate


def create_app(
    predictor: PredictorLike,
    cfg: Optional[ServeConfig] = None,
    token: Optional[str] = None,
    *,
    synthetic: bool = False,
    chat_generate: Optional[ChatGenerate] = None,
    model_lock: Optional[Any] = None,
) -> FastAPI:
    """The FastAPI app around ``predictor``. ``model_lock`` (a :class:`ModelTurns`) serialises
    every use of the model (classify batches and chat generation share one base in memory);
    classify goes first, chat is never starved (``cfg.classify_turns_before_chat``)."""
    cfg = cfg or ServeConfig()
    lock = model_lock or ModelTurns(cfg.classify_turns_before_chat)
    if chat_generate is None:
        chat_generate = predictor_chat(predictor)
    criteria = served_criteria(predictor)
    counters = GuardCounters()
    decoding = ImageDecoding(cfg, cfg.decode_max_pixels or model_max_pixels(predictor),
                             getattr(predictor, "box_color", BOX_RED))

    def run_batch(items: Sequence[tuple], explain: bool) -> list[dict[str, Any]]:
        with lock.hold("classify"):
            return [_to_json(r) for r in predictor.predict(list(items), explain=explain)]

    batcher = MicroBatcher(run_batch, max_batch=cfg.max_batch, max_wait_ms=cfg.max_wait_ms)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await batcher.aclose()  # requests still queued get 503 instead of hanging

    app = FastAPI(title="scenefit", summary="In-context / out-of-context verdicts for a boxed object",
                  docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.batcher = batcher
    app.state.counters = counters
    app.state.config = cfg
    _add_guard(app, cfg, token, counters)
    add_error_handlers(app, counters)
    _add_info_routes(app, cfg, criteria, token, synthetic, batcher, counters, decoding)
    _add_classify_route(app, cfg, batcher, decoding, synthetic)
    if chat_generate is not None:
        def locked_generate(adapter: Optional[str], reqs: list) -> list:
            with lock.hold("chat"):
                return chat_generate(adapter, reqs)

        processor = getattr(predictor, "processor", None)
        guard = PromptGuard(processor, cfg.chat_max_prompt_tokens) if processor is not None else None
        dispatcher = ChatDispatcher(_chat_apps(cfg, criteria, locked_generate, decoding, guard), cfg.base_model_name,
                                    decoding)
        app.router.add_route(CHAT_PATH, dispatcher, methods=["POST"])
    _add_web_page(app)
    return app


def _add_guard(app: FastAPI, cfg: ServeConfig, token: Optional[str], counters: GuardCounters) -> None:
    """Auth, body cap, concurrency cap and timeouts for every route (:class:`GuardMiddleware`)."""
    app.add_middleware(
        GuardMiddleware,
        token=token,
        max_body_bytes=cfg.max_body_bytes,
        max_concurrency=cfg.max_concurrency,
        retry_after_s=cfg.retry_after_s,
        timeout_s=cfg.request_timeout_s,
        body_timeout_s=cfg.body_timeout_s,
        limited_paths=(CLASSIFY_PATH, CHAT_PATH),
        open_paths=("/", "/health", "/favicon.ico"),
        open_prefixes=("/static/",),
        counters=counters,
    )


def _add_info_routes(app: FastAPI, cfg: ServeConfig, criteria: list[str], token: Optional[str], synthetic: bool,
                     batcher: MicroBatcher, counters: GuardCounters, decoding: ImageDecoding) -> None:
    """``/health``, ``/v1/models`` and ``/v1/metrics``."""
    started = time.time()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": [cfg.model_name(c) for c in criteria], "synthetic": synthetic,
                "auth": token is not None, "uptime_s": round(time.time() - started, 1)}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        data = [{"id": cfg.model_name(c), "object": "model", "owned_by": "scenefit", "criterion": c} for c in criteria]
        data.append({"id": cfg.base_model_name, "object": "model", "owned_by": "scenefit", "criterion": None})
        return {"object": "list", "data": data}

    @app.get("/v1/metrics")
    async def metrics() -> dict[str, Any]:
        return {"batching": batcher.stats.to_json(), "queued": batcher.queued, **counters.to_json(),
                "limits": {"max_batch": cfg.max_batch, "max_wait_ms": cfg.max_wait_ms,
                           "max_concurrency": cfg.max_concurrency, "request_timeout_s": cfg.request_timeout_s},
                "decoding": {"fit_pixels": decoding.fit_pixels, "pixels_in_flight_limit": decoding.budget.limit,
                             "pixels_in_flight_peak": decoding.budget.peak}}


def _add_classify_route(app: FastAPI, cfg: ServeConfig, batcher: MicroBatcher, decoding: ImageDecoding,
                        synthetic: bool) -> None:
    """``POST /v1/classify``: fields read and checked, the image decoded in the decoding
    threads, the item merged into the predictor's batches."""

    @app.post(CLASSIFY_PATH)
    async def classify(request: Request):
        fields = await _read_fields(request, cfg)
        item, explain = await decoding.run(_build_item, fields, cfg, decoding)
        try:
            payload = await batcher.submit(item, explain)
        except BatcherClosed as e:
            raise ApiError(503, "shutting_down", str(e)) from None
        except Exception as e:  # the model failed on this item: say so, keep serving the others
            raise ApiError(500, "prediction_failed", f"the predictor failed on this request: {type(e).__name__}: {e}") from None
        if "criteria" not in payload:  # the predictor refused the item itself: its error row names why
            code = str(payload.get("code") or "bad_item")
            raise ApiError(500 if code == "prediction_failed" else 422, code,
                           str(payload.get("message") or "the item cannot be judged"))
        if synthetic:
            from scenefit import SYNTHETIC_NOTICE

            payload = {**payload, "notice": SYNTHETIC_NOTICE}
        return JSONResponse(payload)


def _add_web_page(app: FastAPI) -> None:
    """The web page at ``/`` and its files under ``/static``."""

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


def serve_students(
    students: Any,
    predict_cfg: Any,
    cfg: ServeConfig,
    token: Optional[str],
    on_ready: Optional[Callable[[str], None]] = None,
) -> None:
    """Load the students once (one base + adapters) and serve them until interrupted."""
    from scenefit.predict import Predictor, StudentError
    from scenefit.serve.openai_server import run_app

    try:
        predictor = Predictor.from_students(students, config=predict_cfg)
    except OSError as e:  # a file of the students or their base: not the socket the CLI would blame
        raise StudentError(f"cannot load the students from {students}: {e}") from e
    note = predictor.fast_path_note()
    if note:  # /v1/classify generates their answers whatever `explain` says
        print(f"note: {note}; /v1/classify generates their answers even with explain=false", file=sys.stderr)
    app = create_app(predictor, cfg, token, synthetic=is_synthetic(*predictor.students.values()))
    run_app(app, host=cfg.host, port=cfg.port, on_ready=on_ready, log_level=cfg.log_level,
            header_timeout_s=cfg.header_timeout_s)
