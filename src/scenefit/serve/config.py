"""Settings of the student HTTP server (config section ``serve``) and of the teacher server
(section ``serve_teacher``); the limits both enforce are :class:`ServerLimits`.

    scenefit serve --demo                       # the students `make demo` trained, on 127.0.0.1
    scenefit serve --students runs/x/students --port 8100 --max-batch 32
    scenefit serve-teacher --model runs/demo/model --set max_prompt_tokens=8192

Defaults are safe for an unattended machine: loopback only, bounded bodies, bounded images,
bounded concurrency, a timeout on every request. The API token is never a config field (a
YAML file is easy to commit by mistake): it comes from ``--api-token`` or the environment
variable named by ``api_token_env``.
"""

from __future__ import annotations

import copy
from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from scenefit.core.config import StageConfig
from scenefit.core.images import DEFAULT_FORMATS


class ServerLimits(StageConfig):
    """What both servers (``serve`` and ``serve-teacher``) enforce on every model request, and
    where they listen. Each server's section extends it."""

    host: str = Field(
        "127.0.0.1", description="Address to bind. Loopback by default; give another address explicitly to expose it."
    )
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 picks a free one and prints it).")
    max_batch: int = Field(16, ge=1, le=1024, description="Most requests merged into one model call.")
    max_wait_ms: float = Field(
        10.0, ge=0, le=10_000, description="How long the first queued request waits for others to join its batch."
    )
    max_concurrency: int = Field(
        64, ge=1, description="Model requests admitted at once; beyond it the server answers 429 with Retry-After."
    )
    retry_after_s: int = Field(1, ge=0, description="Seconds sent in the Retry-After header of a 429.")
    request_timeout_s: float = Field(
        120.0, gt=0, description="A model request still unanswered after this many seconds gets 504."
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="A model request whose body has not fully arrived after this many seconds gets 408; "
        "requests count against max_concurrency only once their body is read.",
    )
    header_timeout_s: float = Field(
        30.0, gt=0, description="A connection whose request headers have not fully arrived after this many seconds "
        "gets 408 and is closed (a client trickling headers holds no connection for long).",
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 beyond it), base64 included."
    )
    max_image_pixels: int = Field(
        25_000_000, ge=1, description="Images that would decode to more pixels are refused before decoding (413). "
        "scenefit serve counts a JPEG at the size it decodes to while scaling it down to the model's input "
        "(draft mode: 1/2, 1/4 or 1/8 per side); other formats, and serve-teacher, count the declared size.",
    )
    allowed_formats: list[str] = Field(
        default_factory=lambda: list(DEFAULT_FORMATS), description="Image formats accepted (Pillow names)."
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="uvicorn log level."
    )

    @field_validator("allowed_formats")
    @classmethod
    def _upper(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one image format must be allowed")
        return [f.upper() for f in v]

    @model_validator(mode="after")
    def _batch_fits(self):
        if self.max_batch > self.max_concurrency:
            # A batch can never fill beyond the admitted requests; say so instead of silently capping.
            raise ValueError(
                f"max_batch ({self.max_batch}) exceeds max_concurrency ({self.max_concurrency}); "
                "a batch can only merge admitted requests"
            )
        return self


def _default(name: str, value):
    """``ServerLimits``' field ``name`` (its description and bounds) with another default."""
    info = copy.copy(ServerLimits.model_fields[name])
    info.default = value
    return info


class ServeConfig(ServerLimits):
    """Where the student server listens, what it calls its models, and the limits it enforces.

    The model side (students, base, device, dtype, batch size, explanation length) is the
    ``predict`` section (:class:`scenefit.predict.PredictConfig`), shared with
    ``scenefit predict`` so both verbs judge alike (``scenefit serve --set predict.KEY=VALUE``
    reaches it)."""

    model_prefix: str = Field(
        "scenefit",
        min_length=1,
        description="Served model names: <prefix>-<criterion> for each student, <prefix>-base for the base.",
    )
    api_token_env: str = Field(
        "SCENEFIT_API_TOKEN",
        description="Environment variable read for the bearer token when --api-token is not given; unset = no auth.",
    )
    decode_max_pixels: Optional[int] = Field(
        None, ge=1, description="Images over this many pixels are scaled down while decoding (JPEG in draft mode); "
        "null = the model's own max_pixels (its processor would scale them down anyway).",
    )
    decode_pixels_in_flight: int = Field(
        100_000_000, ge=1, description="Most image pixels being decoded at once across all requests (bounds memory).",
    )
    decode_workers: int = Field(
        2, ge=1, le=64, description="Threads that decode uploaded images (each keeps its own heap: few bound memory).",
    )
    max_object_chars: int = Field(100, ge=1, le=10_000, description="Longest object name accepted.")
    chat_max_tokens: int = Field(
        256, ge=1, le=8192, description="Answer length of /v1/chat/completions when a request gives no max_tokens."
    )
    chat_max_tokens_limit: int = Field(
        512, ge=1, le=8192,
        description="Largest max_tokens a chat request may ask for (400 beyond it): bounds how long one request holds the model.",
    )
    chat_max_prompt_tokens: int = Field(
        4096, ge=1, description="Most tokens a chat prompt may have once templated, image tokens included (400 "
        "context_length_exceeded beyond it): bounds the prefill one request costs.",
    )
    classify_turns_before_chat: int = Field(
        4, ge=0, description="Classify batches that may take the model ahead of a waiting chat batch, one after "
        "another, before the chat batch gets its turn: classify waits for at most the one generation that holds "
        "the model, chat is never starved. 0 = strict arrival order.",
    )

    @model_validator(mode="after")
    def _chat_fits(self):
        if self.chat_max_tokens > self.chat_max_tokens_limit:
            raise ValueError(f"chat_max_tokens ({self.chat_max_tokens}) exceeds chat_max_tokens_limit ({self.chat_max_tokens_limit})")
        return self

    def model_name(self, criterion: str) -> str:
        return f"{self.model_prefix}-{criterion}"

    @property
    def base_model_name(self) -> str:
        return f"{self.model_prefix}-base"


class ServeTeacherConfig(ServerLimits):
    """Section ``serve_teacher``: a local model folder over the OpenAI chat protocol
    (``scenefit serve-teacher``), guarded like the student server: body cap, prompt-token cap,
    concurrency cap (429), timeout (504), every refusal in the OpenAI error shape. It has no
    authentication: another host than loopback needs ``--insecure-no-auth``."""

    model: Optional[str] = Field(None, description="Model folder to serve (e.g. runs/demo/model).")
    model_name: Optional[str] = Field(None, description="Model id clients send (default: the folder name).")
    device: Optional[str] = Field(None, description="torch device (default: cuda when available, else cpu).")
    dtype: str = Field("auto", description="auto, bf16, fp16 or fp32.")
    max_batch: int = _default("max_batch", 8)
    request_timeout_s: float = _default("request_timeout_s", 600.0)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = _default("log_level", "warning")
    max_new_tokens: int = Field(512, ge=1, description="Answer length when a request gives no max_tokens.")
    max_tokens_limit: int = Field(4096, ge=1, description="Largest max_tokens a request may ask for (400 beyond it).")
    max_prompt_tokens: int = Field(
        16384, ge=1, description="Most tokens a prompt may have once templated, image tokens included (400 "
        "context_length_exceeded beyond it): bounds the prefill and the memory one request costs.",
    )
    max_pixels: Optional[int] = Field(
        None, ge=1, description="The processor's max_pixels (images are scaled down to it); null = the model folder's own."
    )

    @model_validator(mode="after")
    def _tokens_fit(self):
        if self.max_new_tokens > self.max_tokens_limit:
            raise ValueError(f"max_new_tokens ({self.max_new_tokens}) exceeds max_tokens_limit ({self.max_tokens_limit})")
        return self
