"""What the server refuses, and how it says so: auth, body/image caps, concurrency, timeouts.

Used by :func:`scenefit.serve.app.create_app`; nothing here is run on its own. Every refusal
is an :class:`ApiError` and reaches the client as ``{"error": {"code": ..., "message": ...}}``
with the matching status, so a client can tell the problems apart by ``code``.

The guards that apply to every route (auth, body size, concurrency, timeout) live in one pure
ASGI middleware, :class:`GuardMiddleware`, so a router mounted later (the OpenAI-compatible
chat route) is covered by the same rules without repeating them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import logging
import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Optional, Sequence

from fastapi import HTTPException

from scenefit.core import images
from scenefit.core.errors import ScenefitError
from scenefit.core.images import ImageError, check_box
from scenefit.core.text import UnsafeText, check_object_name

log = logging.getLogger("uvicorn.error")  # the server's own log, configured by uvicorn at its log level

#: Image reason code (scenefit.core.images.REASON_CODES) -> HTTP status of the refusal.
IMAGE_ERROR_STATUS: dict[str, int] = {
    "bomb": 413,
    "too_large": 413,
    "not_image": 415,
    "format_not_allowed": 415,
    "empty": 422,
    "bad_dimensions": 422,
    "truncated": 422,
    "corrupt": 422,
    "box_outside": 422,
    "bad_box": 422,
    "not_found": 422,
    "unreadable": 422,
}


class ApiError(ScenefitError, HTTPException):
    """A refusal with a stable ``code``. An HTTPException subclass so that FastAPI re-raises it
    untouched even when it surfaces while FastAPI reads the body (it wraps other errors as 400)."""

    def __init__(self, status: int, code: str, message: str, headers: Optional[dict[str, str]] = None):
        super().__init__(status_code=status, detail=message, headers=headers)
        self.code = code
        self.message = message


def error_payload(code: str, message: str, kind: Optional[str] = None) -> dict[str, Any]:
    """The one error shape of both servers (classify, chat, the HTTP parser's refusals):
    ``{"error": {"code": <a stable word>, "message": <text>}}``, plus OpenAI's error ``type``
    where the chat protocol answers (``kind``)."""
    return {"error": {"code": code, "message": message, **({"type": kind} if kind else {})}}


def error_bytes(code: str, message: str, kind: Optional[str] = None) -> bytes:
    return json.dumps(error_payload(code, message, kind)).encode()


def error_type(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status (the chat protocol's clients read it)."""
    return {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
            429: "rate_limit_error"}.get(status, "server_error" if status >= 500 else "invalid_request_error")


def status_code_name(status: int) -> str:
    """The error code word of an HTTP status, for refusals that have no more specific one."""
    return {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
            405: "method_not_allowed", 413: "body_too_large", 415: "unsupported_media_type",
            422: "invalid_request", 429: "too_many_requests", 499: "client_closed_request", 500: "internal_error",
            503: "unavailable", 504: "timeout"}.get(status, f"http_{status}")


# --------------------------------------------------------------------------- auth


def resolve_token(flag_value: Optional[str], env_var: str) -> Optional[str]:
    """The bearer token: the flag, else the environment variable; empty means no auth."""
    token = flag_value if flag_value is not None else os.environ.get(env_var)
    token = (token or "").strip()
    return token or None


def check_bearer(authorization: Optional[str], token: str) -> Optional[ApiError]:
    """None when ``authorization`` carries ``token``; otherwise the 401 to answer."""
    challenge = {"WWW-Authenticate": 'Bearer realm="scenefit"'}
    if not authorization:
        return ApiError(401, "missing_token", "this server needs a bearer token: send 'Authorization: Bearer <token>'", challenge)
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return ApiError(401, "bad_auth_header", "the Authorization header must be 'Bearer <token>'", challenge)
    # Constant-time comparison of equal-type bytes, so timing does not reveal a matching prefix.
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        return ApiError(401, "invalid_token", "the bearer token is not valid for this server", challenge)
    return None


# --------------------------------------------------------------------------- middleware


class BodyTooLarge(ApiError):
    def __init__(self, limit: int):
        super().__init__(413, "body_too_large", f"request body exceeds the limit of {limit:,} bytes")


@dataclass
class GuardCounters:
    """What the guard has seen; shared with the app so /v1/metrics can report it. Only the
    event-loop thread touches it, so plain integers suffice."""

    in_flight: int = 0
    peak_in_flight: int = 0
    rejected: Counter = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {"in_flight": self.in_flight, "peak_in_flight": self.peak_in_flight, "rejected": dict(self.rejected)}


class GuardMiddleware:
    """Auth, body-size cap, concurrency cap and request timeout for every non-open path.

    * ``open_paths`` / ``open_prefixes`` need no token (health check, the web page's files).
    * A declared ``Content-Length`` over the cap is refused before reading; a body streamed
      without one is counted as it arrives and refused the moment it passes the cap.
    * ``limited_paths`` (the model routes) are read whole first (408 after ``body_timeout_s``),
      then admitted up to ``max_concurrency`` at once; the next one gets 429 with
      ``Retry-After`` instead of queueing without bound. A slow body never holds a slot.
    * An admitted request unanswered after ``timeout_s`` gets 504 (its work is cancelled).
    * A client that leaves costs one log line, not a traceback.
    """

    def __init__(
        self,
        app,
        *,
        token: Optional[str],
        max_body_bytes: int,
        max_concurrency: int,
        retry_after_s: int,
        timeout_s: float,
        body_timeout_s: float = 30.0,
        limited_paths: Iterable[str],
        open_paths: Iterable[str] = (),
        open_prefixes: Sequence[str] = (),
        counters: Optional["GuardCounters"] = None,
    ):
        self.app = app
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.max_concurrency = max_concurrency
        self.retry_after_s = retry_after_s
        self.timeout_s = timeout_s
        self.body_timeout_s = body_timeout_s
        self.limited_paths = frozenset(limited_paths)
        self.open_paths = frozenset(open_paths)
        self.open_prefixes = tuple(open_prefixes)
        self.counters = counters if counters is not None else GuardCounters()

    def _is_open(self, path: str) -> bool:
        return path in self.open_paths or path.startswith(self.open_prefixes)

    async def _refuse(self, send, err: ApiError) -> None:
        self.counters.rejected[err.code] += 1
        body = error_bytes(err.code, err.message, error_type(err.status_code))
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in (err.headers or {}).items()]
        await send({"type": "http.response.start", "status": err.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.token and not self._is_open(path):
            err = check_bearer(headers.get("authorization"), self.token)
            if err is not None:
                await self._refuse(send, err)
                return
        declared = headers.get("content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_body_bytes
            except ValueError:
                await self._refuse(send, ApiError(400, "bad_content_length", f"Content-Length {declared!r} is not a number"))
                return
            if too_big:
                await self._refuse(send, BodyTooLarge(self.max_body_bytes))
                return
        if path not in self.limited_paths:
            await self.app(scope, self._counting(receive), send)
            return
        # A request counts against max_concurrency only once its whole body is here, so slow
        # senders wait in the body-read timeout, not in the model's slots.
        try:
            body = await asyncio.wait_for(self._read_body(receive), self.body_timeout_s)
        except asyncio.TimeoutError:
            await self._refuse(send, ApiError(
                408, "body_timeout", f"the request body did not arrive within {self.body_timeout_s:g} s"))
            return
        except BodyTooLarge as e:
            await self._refuse(send, e)
            return
        if body is None:
            log.info("%s %s: the client left while sending its body", scope.get("method"), path)
            return
        counters = self.counters
        if counters.in_flight >= self.max_concurrency:
            await self._refuse(
                send,
                ApiError(
                    429,
                    "too_many_requests",
                    f"the server is at its limit of {self.max_concurrency} concurrent requests; retry after {self.retry_after_s} s",
                    {"Retry-After": str(self.retry_after_s)},
                ),
            )
            return
        counters.in_flight += 1
        counters.peak_in_flight = max(counters.peak_in_flight, counters.in_flight)
        started = False

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, replay_body(body, receive), tracking_send), self.timeout_s)
        except asyncio.TimeoutError:
            if not started:
                await self._refuse(
                    send, ApiError(504, "timeout", f"the request was not answered within {self.timeout_s:g} s")
                )
            else:  # a stream cut by the timeout: end it cleanly, say so in one line
                log.info("%s %s: answer cut after %g s (request_timeout_s)", scope.get("method"), path, self.timeout_s)
                with contextlib.suppress(Exception):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            counters.in_flight -= 1

    async def _read_body(self, receive) -> Optional[bytes]:
        """The whole body (BodyTooLarge past the cap); None when the client disconnected."""
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_body_bytes:
                raise BodyTooLarge(self.max_body_bytes)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _counting(self, receive) -> Callable[[], Awaitable[dict]]:
        seen = 0
        limit = self.max_body_bytes

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        return counted


def add_error_handlers(app, counters: GuardCounters) -> None:
    """Every refusal of ``app`` (a FastAPI app) in the servers' one error shape (:func:`error_payload`)."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        counters.rejected[exc.code] += 1
        return JSONResponse(error_payload(exc.code, exc.message, error_type(exc.status_code)), status_code=exc.status_code,
                            headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        return JSONResponse(error_payload(status_code_name(exc.status_code), message, error_type(exc.status_code)),
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        parts = ["{}: {}".format(".".join(str(x) for x in e.get("loc", ())), e.get("msg")) for e in exc.errors()]
        return JSONResponse(error_payload("invalid_request", "; ".join(parts), error_type(422)), status_code=422)


def replay_body(body: bytes, receive) -> Callable[[], Awaitable[dict]]:
    """A receive() that gives the already read ``body`` once, then the connection's own
    messages (so the app still hears of a disconnect)."""
    given = False

    async def replay() -> dict:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


# --------------------------------------------------------------------------- request fields


def decode_base64_image(data: str) -> bytes:
    """Base64 (optionally a ``data:image/...;base64,`` URL) to bytes; 422 when it is not base64."""
    text = data.strip()
    if text.startswith("data:"):
        header, sep, rest = text.partition(",")
        if not sep or ";base64" not in header:
            raise ApiError(422, "bad_image_encoding", "a data URL image must be base64 encoded (data:image/png;base64,...)")
        text = rest
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "bad_image_encoding", "field 'image' is not valid base64") from None
    if not raw:
        raise ApiError(422, "missing_image", "field 'image' is empty")
    return raw


def load_image_bytes(raw: bytes, max_pixels: int, allowed_formats: Sequence[str],
                     fit_pixels: Optional[int] = None, decode_budget: Optional["PixelBudget"] = None):
    """Decode untrusted bytes through scenefit.core.images (format allow-list, pixel cap checked
    before decoding, full decode, scaled down to ``fit_pixels`` while decoding, decoded pixels
    held in ``decode_budget``); an ImageError becomes the API error of its code."""
    with image_refusals():
        return images.load_image_bytes(raw, max_pixels=max_pixels, allowed_formats=allowed_formats,
                                       fit_pixels=fit_pixels, decode_budget=decode_budget)


@contextlib.contextmanager
def image_refusals():
    """An ImageError raised inside becomes the API error of its code (status by
    :data:`IMAGE_ERROR_STATUS`)."""
    try:
        yield
    except ImageError as e:
        raise ApiError(IMAGE_ERROR_STATUS.get(e.code, 422), e.code, e.message) from None


class PixelBudget:
    """Bounds the pixels being decoded at once across all requests (decoding runs in worker
    threads): :meth:`hold` waits until ``limit`` has room. An image larger than the whole budget
    waits until it decodes alone. ``peak`` is what /v1/metrics reports."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_use = 0
        self.peak = 0
        self._room = threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int):
        need = min(pixels, self.limit)
        with self._room:
            self._room.wait_for(lambda: self.in_use + need <= self.limit)
            self.in_use += need
            self.peak = max(self.peak, self.in_use)
        try:
            yield
        finally:
            with self._room:
                self.in_use -= need
                self._room.notify_all()


def place_box(box: tuple[float, float, float, float], size: tuple[int, int],
              image_size: Optional[tuple[int, int]] = None) -> tuple[int, int, int, int]:
    """The box in whole pixels on an image of ``size``, by scenefit's one box rule
    (:func:`scenefit.core.images.check_box`, as in ingest and predict; its message names the box, the
    image size and how much of the box lies on it). ``image_size``: the size the image was scaled
    down to while decoding; the box is scaled with it."""
    with image_refusals():
        x0, y0, x1, y1 = check_box(box, size)
    if image_size is None or tuple(image_size) == tuple(size):
        return x0, y0, x1, y1
    sx, sy = image_size[0] / size[0], image_size[1] / size[1]
    nx0, ny0 = int(x0 * sx), int(y0 * sy)  # a box never shrinks below one pixel when scaled
    return nx0, ny0, max(nx0 + 1, min(image_size[0], round(x1 * sx))), max(ny0 + 1, min(image_size[1], round(y1 * sy)))


def parse_flag(value: Any, name: str) -> bool:
    """JSON booleans, or the strings a form sends (true/false, 1/0, on/off, yes/no)."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "on", "yes"):
        return True
    if text in ("false", "0", "off", "no", ""):
        return False
    raise ApiError(422, f"bad_{name}", f"field {name!r} must be true or false, got {value!r}")


def parse_object(value: Any, max_chars: int) -> str:
    """The object name (whitespace runs made one space); 422 ``bad_object`` when it could become
    a special token or hides control characters (:func:`scenefit.core.text.check_object_name`)."""
    if value is None or not isinstance(value, str) or not value.strip():
        raise ApiError(422, "missing_object", "field 'object' (the name of the boxed object, e.g. 'dog') is required")
    text = " ".join(value.split())
    if len(text) > max_chars:
        raise ApiError(422, "object_too_long", f"field 'object' has {len(text)} characters; the limit is {max_chars}")
    try:
        return check_object_name(text, "field 'object'")
    except UnsafeText as e:
        raise ApiError(422, e.code, e.message) from None
