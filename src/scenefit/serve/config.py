"""Settings of the student HTTP server (config section ``serve``).

    scenefit serve --demo                       # the students `make demo` trained, on 127.0.0.1
    scenefit serve --students runs/x/students --port 8100 --max-batch 32

Defaults are safe for an unattended machine: loopback only, bounded bodies, bounded images,
bounded concurrency, a timeout on every request. The API token is never a config field (a
YAML file is easy to commit by mistake): it comes from ``--api-token`` or the environment
variable named by ``api_token_env``.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from scenefit.core.config import StageConfig
from scenefit.core.images import DEFAULT_FORMATS


class ServeConfig(StageConfig):
    """Where the server listens, what it calls its models, and the limits it enforces.

    The model side (students, base, device, dtype, batch size, explanation length) is the
    ``predict`` section (:class:`scenefit.predict.PredictConfig`), shared with
    ``scenefit predict`` so both verbs judge alike."""

    model_prefix: str = Field(
        "scenefit",
        min_length=1,
        description="Served model names: <prefix>-<criterion> for each student, <prefix>-base for the base.",
    )
    host: str = Field(
        "127.0.0.1", description="Address to bind. Loopback by default; give another address explicitly to expose it."
    )
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 picks a free one and prints it).")
    api_token_env: str = Field(
        "SCENEFIT_API_TOKEN",
        description="Environment variable read for the bearer token when --api-token is not given; unset = no auth.",
    )
    max_batch: int = Field(16, ge=1, le=1024, description="Most requests merged into one predictor call.")
    max_wait_ms: float = Field(
        10.0, ge=0, le=10_000, description="How long the first queued request waits for others to join its batch."
    )
    max_concurrency: int = Field(
        64, ge=1, description="Classify requests admitted at once; beyond it the server answers 429 with Retry-After."
    )
    retry_after_s: int = Field(1, ge=0, description="Seconds sent in the Retry-After header of a 429.")
    request_timeout_s: float = Field(
        120.0, gt=0, description="A classify request still unanswered after this many seconds gets 504."
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="A model request whose body has not fully arrived after this many seconds gets 408; "
        "requests count against max_concurrency only once their body is read.",
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 beyond it), base64 included."
    )
    max_image_pixels: int = Field(
        25_000_000, ge=1, description="Images declaring more pixels are refused before decoding (413)."
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
    allowed_formats: list[str] = Field(
        default_factory=lambda: list(DEFAULT_FORMATS), description="Image formats accepted (Pillow names)."
    )
    max_object_chars: int = Field(100, ge=1, le=10_000, description="Longest object name accepted.")
    chat_max_tokens: int = Field(
        256, ge=1, le=8192, description="Answer length of /v1/chat/completions when a request gives no max_tokens."
    )
    chat_max_tokens_limit: int = Field(
        512, ge=1, le=8192,
        description="Largest max_tokens a chat request may ask for (400 beyond it): bounds how long one request holds the model.",
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
        if self.chat_max_tokens > self.chat_max_tokens_limit:
            raise ValueError(f"chat_max_tokens ({self.chat_max_tokens}) exceeds chat_max_tokens_limit ({self.chat_max_tokens_limit})")
        return self

    def model_name(self, criterion: str) -> str:
        return f"{self.model_prefix}-{criterion}"

    @property
    def base_model_name(self) -> str:
        return f"{self.model_prefix}-base"
