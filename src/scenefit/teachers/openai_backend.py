"""Teachers behind any OpenAI-compatible chat-completions endpoint (vLLM, SGLang, LMDeploy,
hosted APIs, ``scenefit serve-teacher``).

    scenefit annotate MANIFEST --db annotations.sqlite --config paper

Async over pooled httpx clients: at most ``concurrency`` requests in flight per teacher,
spread over ``base_urls`` (the endpoint with the fewest requests in flight goes first). The
connections are split over several clients of ``connections_per_client`` each: one httpx
client's pool costs more per request the more connections it holds (encode/httpx#3215), so
at concurrency 32-128 a single client falls well below what the same client does at 8
(``benchmarks/annotate_client.py`` measures both).
Connection errors, timeouts and HTTP 408/429/5xx are retried with exponential backoff and
jitter (a server's ``Retry-After`` is honoured, capped); any other 4xx is final, since asking
again cannot help. The image travels as a base64 data URL, downscaled to a pixel budget.
With ``logprobs`` (the default) the request asks for ``logprobs`` and ``top_logprobs``, and each
answer records the teacher's probability of Out-of-context at every label it wrote, read from
the label tokens (:mod:`.label_probs`) — or null, with the reason, when the server sent none.
A server that refuses them (a 4xx whose message names logprobs) is asked again without, and
from then on this teacher asks without them; its answers say so in ``p_out_note``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import random
import ssl
import time
from typing import Any, Optional

from scenefit.core.images import ImageError, png_data_url
from scenefit.teachers.base import Teacher, TeacherRequest, TeacherResult, teacher_image
from scenefit.teachers.config import TeacherConfig

#: HTTP statuses worth asking again: the server may answer later.
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


def is_retryable_status(code: int) -> bool:
    return code in RETRYABLE_STATUS or code >= 500


def image_data_url(image, fmt: str = "png", quality: int = 90) -> str:
    """A ``data:image/...;base64,`` URL of a PIL image (PNG lossless, or JPEG)."""
    if fmt == "png":
        return png_data_url(image)
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def chat_body(model: str, prompt: str, image_url: str, decoding: dict[str, Any], json_schema: Optional[dict] = None,
              extra: Optional[dict] = None, top_logprobs: Optional[int] = None) -> dict[str, Any]:
    """The chat-completions request body: one user turn with the image, then the question
    (``top_logprobs``: ask for each token's log-probability and that many alternatives)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": image_url}},
                    {"type": "text", "text": prompt},
                ],
            }
        ],
        "max_tokens": decoding.get("max_tokens", 512),
    }
    # temperature None: nothing sent, the server samples with its defaults (the model's generation config)
    for key in ("temperature", "seed", "top_p"):
        if decoding.get(key) is not None:
            body[key] = decoding[key]
    if top_logprobs is not None:
        body.update(logprobs=True, top_logprobs=int(top_logprobs))
    if json_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "teacher_answer", "schema": json_schema, "strict": True},
        }
    body.update(extra or {})
    return body


def backoff_delay(attempt: int, base: float, cap: float, retry_after: Optional[float] = None) -> float:
    """Delay before attempt ``attempt + 1``: base * 2^(attempt-1), capped, times a jitter in
    [0.5, 1.5) so that many clients do not retry in step; a server's Retry-After wins (capped)."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), cap)
    return min(cap, base * (2 ** max(attempt - 1, 0))) * random.uniform(0.5, 1.5)


def _retry_after(headers) -> Optional[float]:
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _error_detail(resp) -> str:
    try:
        data = resp.json()
        msg = data.get("error", {}).get("message") if isinstance(data.get("error"), dict) else data.get("detail") or data.get("error")
        return str(msg or data)[:300]
    except Exception:
        return (resp.text or "")[:300]


class OpenAITeacher(Teacher):
    """One teacher model served over the OpenAI chat-completions protocol."""

    def __init__(self, cfg: TeacherConfig, json_answer: bool = False):
        super().__init__(cfg)
        self.json_answer = json_answer
        self._clients: list = []
        self._client_busy: list[int] = []
        self._sem: Optional[asyncio.Semaphore] = None
        self._in_flight = [0] * len(cfg.base_urls)
        self._next = 0  # round-robin among equally busy endpoints
        self._headers: dict[str, str] = {}
        self._schema: Optional[dict] = None
        #: Set (to the server's message) when a server refused logprobs: later requests ask without.
        self._logprobs_refused: Optional[str] = None

    @classmethod
    def create(cls, cfg: TeacherConfig, context: Any) -> "OpenAITeacher":
        return cls(cfg, json_answer=context.json_answer)

    async def start(self) -> None:
        import httpx

        cfg = self.cfg
        if cfg.api_key_env:
            key = os.environ.get(cfg.api_key_env)
            if not key:
                raise RuntimeError(f"teacher {cfg.name!r}: environment variable {cfg.api_key_env} (api_key_env) is not set")
            self._headers["Authorization"] = f"Bearer {key}"
        if self.json_answer and cfg.structured_output:
            from scenefit.teachers.parse import teacher_json_schema

            self._schema = teacher_json_schema()
        self._sem = asyncio.Semaphore(cfg.concurrency)
        per = min(cfg.connections_per_client, cfg.concurrency)
        n_clients = -(-cfg.concurrency // per)
        # One TLS context for all clients (loading the CA bundle costs ~0.1 s each); none for plain http.
        verify = _tls_context() if any(u.startswith("https") for u in cfg.base_urls) else False
        self._clients = [
            httpx.AsyncClient(
                timeout=httpx.Timeout(cfg.timeout_s, connect=min(10.0, cfg.timeout_s)),
                limits=httpx.Limits(max_connections=per, max_keepalive_connections=per),
                headers=self._headers,
                verify=verify,
            )
            for _ in range(n_clients)
        ]
        self._client_busy = [0] * n_clients
        if cfg.check_endpoints:
            await self._check_endpoints()

    async def _check_endpoints(self) -> None:
        """Fail early, naming the URL, when an endpoint is down or serves another model (rather
        than recording every sample as failed). Servers without /models are let through."""
        import httpx

        for url in self.cfg.base_urls:
            try:
                resp = await self._clients[0].get(url.rstrip("/") + "/models", timeout=min(10.0, self.cfg.timeout_s))
            except httpx.HTTPError as e:
                raise RuntimeError(
                    f"teacher {self.name!r}: cannot reach {url} ({type(e).__name__}: {e}); start the server "
                    "(e.g. `vllm serve MODEL`, or `scenefit serve-teacher --model DIR` for a local folder) or set "
                    "check_endpoints: false to record the failures instead"
                ) from None
            if resp.status_code != 200:
                continue
            try:
                served = [m.get("id") for m in resp.json().get("data", [])]
            except Exception:
                continue
            if served and self.cfg.model not in served:
                raise RuntimeError(f"teacher {self.name!r}: {url} serves {served}, not {self.cfg.model!r} (the teacher's `model`)")

    async def aclose(self) -> None:
        clients, self._clients = self._clients, []
        for c in clients:
            await c.aclose()

    def _pick_endpoint(self) -> int:
        """The endpoint with the fewest requests in flight (round-robin among equals)."""
        n = len(self._in_flight)
        least = min(self._in_flight)
        for k in range(n):
            i = (self._next + k) % n
            if self._in_flight[i] == least:
                self._next = (i + 1) % n
                return i
        return 0  # unreachable

    async def answer_one(self, request: TeacherRequest) -> TeacherResult:
        assert self._sem is not None and self._clients, "start() the teacher first"
        cfg = self.cfg
        t0 = time.perf_counter()
        async with self._sem:
            try:
                url = await asyncio.to_thread(self._encode_image, request)
            except ImageError as e:
                return TeacherResult.failure("image", str(e), time.perf_counter() - t0, attempts=0)
            ask = cfg.logprobs and self._logprobs_refused is None
            body = chat_body(cfg.model or "", request.prompt, url, self.decoding(), self._schema, cfg.extra_body,
                             cfg.top_logprobs if ask else None)
            return await self._post_with_retries(body, t0)

    def _encode_image(self, request: TeacherRequest) -> str:
        return image_data_url(teacher_image(request.sample, self.cfg.max_pixels), self.cfg.image_format)

    async def _post_with_retries(self, body: dict[str, Any], t0: float) -> TeacherResult:
        import httpx

        cfg = self.cfg
        kind, detail = "error", "no attempt made"
        for attempt in range(1, cfg.max_attempts + 1):
            i = self._pick_endpoint()
            k = self._client_busy.index(min(self._client_busy))  # the least busy pooled client
            self._in_flight[i] += 1
            self._client_busy[k] += 1
            retry_after = None
            try:
                resp = await self._clients[k].post(cfg.base_urls[i].rstrip("/") + "/chat/completions", json=body)
            except httpx.TimeoutException as e:
                kind, detail = "timeout", f"{type(e).__name__} after {cfg.timeout_s:g}s at {cfg.base_urls[i]}"
            except httpx.TransportError as e:
                kind, detail = "connect", f"{type(e).__name__}: {e} at {cfg.base_urls[i]}"
            else:
                if resp.status_code == 200:
                    text, problem = _content(resp)
                    if problem is None:
                        p_out, note = _label_probabilities(resp, "logprobs" in body)
                        if cfg.logprobs and "logprobs" not in body:
                            p_out, note = None, f"server refused logprobs ({self._logprobs_refused})"
                        return TeacherResult(raw=text, latency_s=time.perf_counter() - t0, attempts=attempt,
                                             p_out=p_out, p_out_note=note)
                    # A 200 without an answer is the server's fault, not the request's: final.
                    return TeacherResult.failure("bad_response", problem, time.perf_counter() - t0, attempt)
                kind, detail = f"http_{resp.status_code}", _error_detail(resp)
                if not is_retryable_status(resp.status_code):
                    if "logprobs" in body and "logprob" in detail.lower() and attempt < cfg.max_attempts:
                        # A server without logprobs support: the answer matters more, ask without them.
                        self._logprobs_refused = f"http_{resp.status_code}: {detail[:120]}"
                        body = {k: v for k, v in body.items() if k not in ("logprobs", "top_logprobs")}
                        continue
                    return TeacherResult.failure(kind, detail, time.perf_counter() - t0, attempt)
                retry_after = _retry_after(resp.headers)
            finally:
                self._in_flight[i] -= 1
                self._client_busy[k] -= 1
            if attempt < cfg.max_attempts:
                await asyncio.sleep(backoff_delay(attempt, cfg.backoff_s, cfg.backoff_max_s, retry_after))
        return TeacherResult.failure(kind, f"{detail} (gave up after {cfg.max_attempts} attempts)",
                                     time.perf_counter() - t0, cfg.max_attempts)


def _tls_context() -> ssl.SSLContext:
    """Certifi's CA bundle, as httpx uses by default (system CAs when certifi is missing)."""
    try:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:
        return ssl.create_default_context()


def _label_probabilities(resp, asked: bool) -> tuple[Optional[dict], Optional[str]]:
    """(p_out, note) from a chat completion's ``choices[0].logprobs``."""
    try:
        data = resp.json()
    except Exception:
        data = None
    return completion_p_out(data, asked)


def completion_p_out(data: Any, asked: bool) -> tuple[Optional[dict], Optional[str]]:
    """(p_out, note) from a parsed chat completion's ``choices[0].logprobs`` (``asked``: the request asked for them)."""
    from scenefit.teachers.label_probs import no_p_out, p_out_from_tokens, tokens_from_openai

    if not asked:
        return None, "not recorded (logprobs: false)"
    try:
        tokens = tokens_from_openai(data["choices"][0].get("logprobs"))
    except Exception:
        tokens = None
    if tokens is None:
        return no_p_out("server returned no logprobs")
    return p_out_from_tokens(tokens)


def _content(resp) -> tuple[Optional[str], Optional[str]]:
    """(answer text, None) or (None, what is wrong with the response)."""
    try:
        data = resp.json()
    except Exception as e:
        return None, f"response is not a chat completion ({type(e).__name__}: {str(e)[:120]})"
    return completion_content(data)


def completion_content(data: Any) -> tuple[Optional[str], Optional[str]]:
    """(answer text, None) or (None, what is wrong) from a parsed chat completion."""
    try:
        msg = data["choices"][0]["message"]
    except Exception as e:
        return None, f"response is not a chat completion ({type(e).__name__}: {str(e)[:120]})"
    content = msg.get("content")
    if isinstance(content, list):  # some servers return content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if content is None:
        return None, "chat completion has no message content"
    return str(content), None
