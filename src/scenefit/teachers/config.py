"""Typed config of the annotate stage (YAML section ``annotate``).

    scenefit annotate runs/demo/ingest/manifest.parquet --db runs/demo/annotate/annotations.sqlite --config demo

Each teacher has a name, a backend (``openai``, ``transformers``, ``ray_http``, ``ray_vllm`` or
``simulated``; :mod:`scenefit.teachers.registry` knows them), a model, decoding settings and a
concurrency; backend-specific fields are ignored by the others.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, field_validator, model_validator

from scenefit.core.config import StageConfig
from scenefit.teachers.registry import backend_names


class TeacherConfig(StageConfig):
    """One teacher: who answers, how it is reached and how it decodes."""

    name: str = Field(description="Teacher name stored with every answer (unique within a run), e.g. 'qwen72b'.")
    backend: str = Field(
        description="How the teacher is reached: openai (any OpenAI-compatible endpoint), transformers (local model), "
        "ray_http (an OpenAI-compatible endpoint asked from Ray Data actors), ray_vllm (vLLM engines inside Ray Data, "
        "tensor_parallel_size GPUs each), simulated (synthetic-world persona); more through the registry "
        "(scenefit.teachers.registry).",
    )
    model: Optional[str] = Field(
        default=None,
        description="Model id sent to the endpoint (openai), model folder or hub id (transformers); unused by simulated teachers.",
    )
    persona: Optional[str] = Field(default=None, description="Simulated teacher persona (one of scenefit.testbed.personas.PERSONAS); defaults to the teacher name.")
    world_dir: Optional[str] = Field(
        default=None,
        description="Simulated teachers: folder of the synthetic world (its layout.jsonl); default: found near the manifest, else answer from the sample alone.",
    )
    delay_s: float = Field(default=0.0, ge=0, description="Simulated teachers: artificial seconds per answer (to exercise concurrency, progress and kill/resume).")
    # decoding
    temperature: Optional[float] = Field(
        default=0.0, ge=0,
        description="Sampling temperature (0 = greedy, reproducible). null = sample with the model's own generation "
        "config, as the authors' Qwen teacher did (do_sample with the checkpoint's generation_config.json): openai "
        "sends no temperature, so the server's defaults apply (vllm serve --generation-config auto takes the "
        "checkpoint's); transformers samples with the model's generation config.",
    )
    top_p: Optional[float] = Field(default=None, gt=0, le=1, description="Nucleus sampling mass; None leaves the backend default.")
    max_tokens: int = Field(default=512, ge=1, description="Most new tokens per answer.")
    seed: Optional[int] = Field(default=0, description="Sampling seed sent with every request (stored as provenance).")
    # label probabilities
    logprobs: bool = Field(
        default=True,
        description="openai, transformers: record the teacher's probability of Out-of-context at each label it writes "
        "(openai: asks the server for logprobs/top_logprobs; set false for a server that refuses them).",
    )
    top_logprobs: int = Field(
        default=5, ge=1, le=20,
        description="openai, transformers: alternatives per token the probabilities are read from (In vs Out at each label).",
    )
    # reaching it
    concurrency: int = Field(default=32, ge=1, description="Requests in flight at once for this teacher (openai, simulated); batches in flight (transformers).")
    base_urls: list[str] = Field(
        default_factory=list,
        description="openai: endpoint base URLs ending in /v1; requests are spread over them (least busy first).",
    )
    connections_per_client: int = Field(
        default=8, ge=1,
        description="openai: HTTP connections per pooled client; concurrency is spread over several clients because one httpx client slows down as it holds more connections.",
    )
    check_endpoints: bool = Field(
        default=True,
        description="openai: before the run, ask every base URL's /models and stop with a clear error when one is unreachable or does not serve `model`.",
    )
    api_key_env: Optional[str] = Field(default=None, description="openai: name of the environment variable holding the API key (none sent when unset).")
    timeout_s: float = Field(default=300.0, gt=0, description="openai: seconds one request may take before it is retried.")
    max_attempts: int = Field(default=5, ge=1, description="openai: attempts per request (connection errors, timeouts, 408/429/5xx are retried; other 4xx are not).")
    backoff_s: float = Field(default=1.0, ge=0, description="openai: first retry delay in seconds; doubles each attempt, with jitter.")
    backoff_max_s: float = Field(default=30.0, ge=0, description="openai: longest retry delay in seconds.")
    image_format: Literal["png", "jpeg"] = Field(default="png", description="openai: encoding of the image data URL.")
    max_pixels: int = Field(default=1280 * 28 * 28, ge=28 * 28, description="Pixel budget: larger images are downscaled (aspect kept) before they are sent or processed.")
    structured_output: bool = Field(
        default=True,
        description="openai: with the JSON prompt variant, also send response_format json_schema so the server constrains the answer.",
    )
    extra_body: dict[str, Any] = Field(default_factory=dict, description="openai: extra JSON fields merged into every request body (server-specific options).")
    # transformers
    batch_size: int = Field(default=4, ge=1, description="transformers: samples per generate() call (left padding); ray_http, ray_vllm: rows per Ray Data batch.")
    device: Optional[str] = Field(default=None, description="transformers: torch device (default cuda when available, else cpu).")
    dtype: str = Field(default="auto", description="transformers: auto, bf16, fp16 or fp32.")
    # Ray Data (ray_http, ray_vllm)
    ray_address: Optional[str] = Field(
        default=None,
        description="ray_http, ray_vllm: the Ray cluster to run on (the address `ray start --head` prints, or 'auto'); "
        "null = a local Ray on this machine's CPUs and GPUs (or the Ray this process already joined).",
    )
    ray_actors: int = Field(
        default=1, ge=1,
        description="ray_http: HTTP actors, each with one request in flight; ray_vllm: vLLM engine replicas, each on "
        "tensor_parallel_size GPUs (data parallel).",
    )
    ray_cpus_per_actor: Optional[float] = Field(
        default=None, gt=0,
        description="ray_http: CPUs Ray reserves for each HTTP actor (null = Ray's default of 1; an actor mostly waits, "
        "0.25 lets four share a core).",
    )
    tensor_parallel_size: int = Field(default=1, ge=1, description="ray_vllm: GPUs per vLLM engine (the paper's 72B teacher: 4).")
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="ray_vllm: further vLLM engine arguments (max_model_len, gpu_memory_utilization, ...), over "
        "scenefit's (tensor_parallel_size, one image per prompt).",
    )
    accelerator_type: Optional[str] = Field(default=None, description="ray_vllm: the GPU type the engines must run on (e.g. H100); null = any.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        v = v.strip()
        if not v or any(ch.isspace() for ch in v):
            raise ValueError(f"teacher name {v!r} must be one word")
        return v

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if v not in backend_names():
            raise ValueError(f"unknown backend {v!r}; known: {', '.join(backend_names())}")
        return v

    @model_validator(mode="after")
    def _backend_needs(self):
        if self.backend == "openai":
            if not self.model:
                raise ValueError(f"teacher {self.name!r}: backend openai needs `model` (the id the endpoint serves)")
            if not self.base_urls:
                raise ValueError(f"teacher {self.name!r}: backend openai needs `base_urls` (e.g. http://localhost:8000/v1)")
        if self.backend == "transformers" and not self.model:
            raise ValueError(f"teacher {self.name!r}: backend transformers needs `model` (a folder or hub id)")
        if self.backend == "ray_http" and (not self.model or len(self.base_urls) != 1):
            raise ValueError(f"teacher {self.name!r}: backend ray_http needs `model` and exactly one of `base_urls` "
                             "(put a load balancer in front of several servers, or use backend openai)")
        if self.backend == "ray_vllm" and not self.model:
            raise ValueError(f"teacher {self.name!r}: backend ray_vllm needs `model` (a folder or hub id every GPU node can read)")
        return self

    def decoding(self) -> dict[str, Any]:
        """Decoding settings as stored with every answer."""
        d: dict[str, Any] = {"temperature": self.temperature, "max_tokens": self.max_tokens, "seed": self.seed}
        if self.top_p is not None:
            d["top_p"] = self.top_p
        return d


class AnnotateConfig(StageConfig):
    """The annotate stage: which teachers answer, with which prompt, and how the run is committed."""

    teachers: list[TeacherConfig] = Field(default_factory=list, description="The teachers that answer every sample.")
    prompt_file: Optional[str] = Field(default=None, description="Your own teacher prompt template (needs an {object} placeholder); default: the packaged one.")
    prompt_variant: Literal["text", "json"] = Field(
        default="text", description="Packaged prompt: text (Analysis/Summary/Final decision) or json (the same answer as a JSON object)."
    )
    prompt_version: Literal["v1", "v2"] = Field(
        default="v2",
        description="Packaged prompt version: v2 (default) carries v1 plus the authors' instructions (object taken as "
        "really there, 'unusual' not 'impossible', summaries agree with their analysis, no other category, "
        "two worked examples); v1 is the earlier, shorter prompt. Ignored with prompt_file.",
    )
    only: list[str] = Field(default_factory=list, description="Run only these teacher names (default: all).")
    commit_every: int = Field(default=32, ge=1, description="Answers per database transaction (a killed run loses at most this many plus those in flight).")
    commit_interval_s: float = Field(default=2.0, gt=0, description="Longest time an answer waits before it is committed.")
    redo_failed: bool = Field(default=False, description="Retry samples whose earlier request failed (otherwise a rerun skips them).")
    limit: Optional[int] = Field(default=None, ge=1, description="Annotate only the first N samples of the manifest.")
    progress: bool = Field(default=True, description="Show a progress bar on stderr.")
    lock_wait_s: float = Field(
        default=0.0, ge=0,
        description="A run holds the store's lock (DB.lock) while it asks teachers; a second run on the same "
        "store waits this many seconds for it, then refuses (0: refuse at once). After waiting it asks only "
        "what the first run did not store.",
    )

    @model_validator(mode="after")
    def _unique(self):
        names = [t.name for t in self.teachers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"teacher names must be unique; repeated: {dup}")
        unknown = sorted(set(self.only) - set(names))
        if unknown:
            raise ValueError(f"--teacher (annotate.only) names unknown teacher(s) {unknown}; configured: {names}")
        return self

    def selected(self) -> list[TeacherConfig]:
        return [t for t in self.teachers if not self.only or t.name in self.only]
