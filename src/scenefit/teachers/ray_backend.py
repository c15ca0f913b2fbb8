"""Teachers as engines inside Ray Data: backends ``ray_http`` and ``ray_vllm``.

    scenefit annotate M --db DB --config paper     # a teacher with backend: ray_vllm
    # ray_http: an OpenAI-compatible endpoint (vllm serve, scenefit serve-teacher) asked from Ray actors

Both put a whole run's pending samples into one Ray Data pipeline built with Ray Data's LLM API
(``ray.data.llm.build_processor``): a preprocess step on the Ray workers loads each image as every
teacher sees it (:func:`scenefit.teachers.base.teacher_image`) and renders the request; the
processor answers (``ray_http``: ``HttpRequestProcessorConfig``, ``ray_actors`` actors posting the
openai backend's very request body; ``ray_vllm``: ``vLLMEngineProcessorConfig``, ``ray_actors``
vLLM engines of ``tensor_parallel_size`` GPUs each, the same chat messages, with the multimodal
and chat-template stages); a postprocess step reads the answer text and the label probabilities
as the openai backend does (:func:`~scenefit.teachers.openai_backend.completion_content`,
:func:`~scenefit.teachers.label_probs.p_out_from_tokens`). The answers stream back to this process,
where the annotate run's one writer parses and commits them (:mod:`scenefit.teachers.annotate`), so
the store, the resumption and the summary are those of every backend.

Differences from ``openai``: an image that cannot be read is an ``image`` failure as there; an
HTTP error answer is stored as ``http_<code>``, but a request that still fails at the transport
after ``max_attempts`` stops the run (Ray Data's HTTP stage raises): what was answered is committed
and a rerun asks the rest. ``latency_s`` runs from the preprocess step to the postprocess step
(queueing included); ``attempts`` is 1. A server that refuses logprobs needs ``logprobs: false``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
from typing import Any, AsyncIterator, Optional

from scenefit.teachers.base import Teacher, TeacherRequest, TeacherResult
from scenefit.teachers.config import TeacherConfig

#: The one key of an HTTP payload as it travels through Ray Data (see :class:`_BodySession`).
BODY_KEY = "scenefit_body"


class _RayTeacher(Teacher):
    """The common part: a whole run through one Ray Data processor."""

    streams = True

    def __init__(self, cfg: TeacherConfig, json_answer: bool = False):
        super().__init__(cfg)
        self.json_answer = json_answer
        self._ray: Any = None

    @classmethod
    def create(cls, cfg: TeacherConfig, context: Any) -> "_RayTeacher":
        return cls(cfg, json_answer=context.json_answer)

    @property
    def feature(self) -> str:
        return f"teacher {self.name!r} (backend {self.backend})"

    async def start(self) -> None:
        from scenefit.core.ray_session import import_ray_llm, join_ray

        import_ray_llm(self.feature)  # a missing extra fails here, before any work
        self._ray = join_ray(self.cfg.ray_address, feature=self.feature)

    def schema(self) -> Optional[dict]:
        if self.json_answer and self.cfg.structured_output:
            from scenefit.teachers.parse import teacher_json_schema

            return teacher_json_schema()
        return None

    def processor(self) -> Any:
        """The Ray Data LLM processor of this teacher (rows: ``i``, ``sample``, ``prompt`` -> ``i``, ``result``)."""
        raise NotImplementedError

    async def answer_one(self, request: TeacherRequest) -> TeacherResult:
        async for _, result in self.answer_stream([request]):
            return result
        return TeacherResult.failure("error", "no answer came back")

    async def answer_stream(self, requests: list[TeacherRequest]) -> AsyncIterator[tuple[TeacherRequest, TeacherResult]]:
        """Every request through the processor; answers as Ray returns them."""
        import pyarrow as pa

        rows = [{"i": i, "sample": json.dumps(_sample_fields(r.sample)), "prompt": r.prompt} for i, r in enumerate(requests)]
        per_block = max(self.cfg.batch_size, -(-len(rows) // (4 * self.cfg.ray_actors)))
        blocks = [pa.Table.from_pylist(rows[k:k + per_block]) for k in range(0, len(rows), per_block)]
        ds = self.processor()(self._ray.data.from_arrow(blocks))
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        done = object()

        def pump() -> None:  # Ray's iterator blocks: read it in a thread, hand rows to the event loop
            try:
                for row in ds.iter_rows():
                    loop.call_soon_threadsafe(queue.put_nowait, row)
            except BaseException as e:  # noqa: BLE001 - handed to the run, which stops and commits
                loop.call_soon_threadsafe(queue.put_nowait, e)
            loop.call_soon_threadsafe(queue.put_nowait, done)

        threading.Thread(target=pump, name=f"ray-{self.name}", daemon=True).start()
        while (row := await queue.get()) is not done:
            if isinstance(row, BaseException):
                raise RuntimeError(f"{self.feature}: the Ray pipeline stopped: {row}") from row
            yield requests[int(row["i"])], result_of_row(row)


class RayHttpTeacher(_RayTeacher):
    """An OpenAI-compatible endpoint asked from Ray Data's HTTP processor (``ray_actors`` actors)."""

    def processor(self) -> Any:
        from scenefit.core.ray_session import import_ray_llm

        llm = import_ray_llm(self.feature)
        return llm.build_processor(http_config(self.cfg, llm),
                                   preprocess=functools.partial(http_preprocess, self.cfg.model_dump_json(), self.schema()),
                                   postprocess=functools.partial(http_postprocess, self.cfg.logprobs))


class RayVllmTeacher(_RayTeacher):
    """vLLM engines inside Ray Data (``ray_actors`` replicas of ``tensor_parallel_size`` GPUs)."""

    def processor(self) -> Any:
        from scenefit.core.ray_session import import_ray_llm

        llm = import_ray_llm(self.feature)
        return llm.build_processor(vllm_config(self.cfg, llm),
                                   preprocess=functools.partial(vllm_preprocess, self.cfg.model_dump_json(), self.schema()),
                                   postprocess=functools.partial(vllm_postprocess, self.cfg.logprobs))


# ---- configs ------------------------------------------------------------------------------


def http_config(cfg: TeacherConfig, llm: Any) -> Any:
    """Ray Data's HTTP processor config for a ``ray_http`` teacher."""
    headers = {}
    if cfg.api_key_env:
        import os

        key = os.environ.get(cfg.api_key_env)
        if not key:
            raise RuntimeError(f"teacher {cfg.name!r}: environment variable {cfg.api_key_env} (api_key_env) is not set")
        headers["Authorization"] = f"Bearer {key}"
    stage = {"num_cpus": cfg.ray_cpus_per_actor} if cfg.ray_cpus_per_actor else True
    return llm.HttpRequestProcessorConfig(
        url=cfg.base_urls[0].rstrip("/") + "/chat/completions", headers=headers, batch_size=cfg.batch_size,
        concurrency=cfg.ray_actors, max_retries=cfg.max_attempts - 1, base_retry_wait_time_in_s=cfg.backoff_s,
        session_factory=functools.partial(_BodySession, cfg.timeout_s), http_request_stage=stage,
    )


def vllm_engine_kwargs(cfg: TeacherConfig) -> dict[str, Any]:
    """The vLLM engine arguments: one image per prompt, the teacher's tensor parallelism, then ``engine_kwargs``."""
    return {"tensor_parallel_size": cfg.tensor_parallel_size, "limit_mm_per_prompt": {"image": 1},
            "max_logprobs": max(20, cfg.top_logprobs), **cfg.engine_kwargs}


def vllm_config(cfg: TeacherConfig, llm: Any) -> Any:
    """Ray Data's vLLM engine processor config for a ``ray_vllm`` teacher: ``ray_actors`` engines
    (each a placement group of ``tensor_parallel_size`` GPU bundles), the multimodal and chat-template
    stages on CPU workers, a failed row kept as an error row instead of stopping the run."""
    return llm.vLLMEngineProcessorConfig(
        model_source=cfg.model, engine_kwargs=vllm_engine_kwargs(cfg), concurrency=cfg.ray_actors, batch_size=cfg.batch_size,
        accelerator_type=cfg.accelerator_type, prepare_multimodal_stage=True, chat_template_stage=True,
        tokenize_stage=True, detokenize_stage=True, should_continue_on_error=True,
    )


class _BodySession:
    """The aiohttp session of the HTTP stage, sending each request body exactly as the openai
    backend builds it. Ray Data keeps rows as Arrow tables, which give the chat content parts one
    common struct (an image part gains ``"text": null``, a text part ``"image_url": null``), so the
    body travels as one JSON string (:data:`BODY_KEY`) and is unwrapped here."""

    def __init__(self, timeout_s: float):
        import aiohttp

        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))

    async def __aenter__(self) -> "_BodySession":
        await self._session.__aenter__()
        return self

    async def __aexit__(self, *exc) -> None:
        await self._session.__aexit__(*exc)

    def post(self, url: str, headers: Optional[dict] = None, data: Any = None, **kw: Any) -> Any:
        body = json.loads(data)[BODY_KEY]
        return self._session.post(url, headers={**(headers or {}), "Content-Type": "application/json"}, data=body, **kw)


# ---- the steps that run on Ray workers (module functions: pickled by reference) ------------


def _sample_fields(sample: Any) -> dict:
    return {"id": sample.id, "image": sample.image, "object": sample.object,
            "box": None if sample.box is None else list(sample.box), "boxed": sample.boxed}


def _image_url(cfg: TeacherConfig, row: dict) -> str:
    """The image data URL of a row's sample (raises ImageError)."""
    from scenefit.core.records import Sample
    from scenefit.teachers.base import teacher_image
    from scenefit.teachers.openai_backend import image_data_url

    sample = Sample(**json.loads(row["sample"]))
    return image_data_url(teacher_image(sample, cfg.max_pixels), cfg.image_format)


def _prepared(cfg_json: str, row: dict, build) -> dict:
    """``build(cfg, image_url)``'s columns, or the row marked as an image failure (it skips the engine)."""
    from scenefit.core.images import ImageError

    cfg = TeacherConfig.model_validate_json(cfg_json)
    t0 = time.time()
    try:
        url = _image_url(cfg, row)
    except ImageError as e:
        return {**build(cfg, None, row), "__inference_error__": f"image: {e}", "t0": t0}
    return {**build(cfg, url, row), "__inference_error__": "", "t0": t0}


def http_preprocess(cfg_json: str, schema: Optional[dict], row: dict) -> dict:
    """The row's request: the openai backend's chat body (:func:`~scenefit.teachers.openai_backend.chat_body`)."""
    from scenefit.teachers.openai_backend import chat_body

    def build(cfg: TeacherConfig, url: Optional[str], row: dict) -> dict:
        if url is None:
            return {"payload": {BODY_KEY: ""}}
        body = chat_body(cfg.model or "", row["prompt"], url, cfg.decoding(), schema, cfg.extra_body,
                         cfg.top_logprobs if cfg.logprobs else None)
        return {"payload": {BODY_KEY: json.dumps(body)}}

    return _prepared(cfg_json, row, build)


def vllm_preprocess(cfg_json: str, schema: Optional[dict], row: dict) -> dict:
    """The row's request for a vLLM engine: the same chat messages and decoding as the openai backend."""
    from scenefit.teachers.openai_backend import chat_body

    def build(cfg: TeacherConfig, url: Optional[str], row: dict) -> dict:
        body = chat_body(cfg.model or "", row["prompt"], url or "", cfg.decoding(), None, None, None)
        return {"messages": body["messages"], "sampling_params": sampling_params(cfg, schema)}

    return _prepared(cfg_json, row, build)


def sampling_params(cfg: TeacherConfig, schema: Optional[dict]) -> dict:
    """vLLM sampling parameters equal to the openai request's decoding."""
    d = cfg.decoding()
    params: dict[str, Any] = {"temperature": d["temperature"], "max_tokens": d["max_tokens"], "detokenize": True}
    for key in ("seed", "top_p"):
        if d.get(key) is not None:
            params[key] = d[key]
    if cfg.logprobs:
        params["logprobs"] = cfg.top_logprobs
    if schema is not None:
        params["structured_outputs"] = {"json": schema}
    return params


def http_postprocess(asked_logprobs: bool, row: dict) -> dict:
    """An HTTP answer as a TeacherResult (JSON): text and label probabilities as the openai backend reads them."""
    from scenefit.teachers.openai_backend import completion_content, completion_p_out

    resp = row.get("http_response") or {}
    latency = time.time() - float(row["t0"])
    error = resp.get("error") if isinstance(resp, dict) else None
    if error:
        code = error.get("code") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else error
        kind = f"http_{code}" if isinstance(code, int) else f"http_{code or 'error'}"
        return {"i": row["i"], "result": _result_json(None, f"{kind}: {str(message)[:300]}", latency)}
    text, problem = completion_content(resp)
    if problem is not None:
        return {"i": row["i"], "result": _result_json(None, f"bad_response: {problem}", latency)}
    p_out, note = completion_p_out(resp, asked_logprobs)
    return {"i": row["i"], "result": _result_json(text, None, latency, p_out, note)}


def vllm_postprocess(asked_logprobs: bool, row: dict) -> dict:
    """A vLLM answer as a TeacherResult (JSON): the generated text, and P(out) from its token logprobs."""
    from scenefit.teachers.label_probs import no_p_out, p_out_from_tokens

    latency = time.time() - float(row["t0"])
    text = row.get("generated_text")
    if text is None:
        return {"i": row["i"], "result": _result_json(None, "bad_response: the engine returned no text", latency)}
    if not asked_logprobs:
        p_out, note = None, "not recorded (logprobs: false)"
    else:
        tokens = tokens_from_vllm(row.get("generated_tokens"), row.get("logprobs"))
        p_out, note = no_p_out("engine returned no logprobs") if tokens is None else p_out_from_tokens(tokens)
    return {"i": row["i"], "result": _result_json(str(text), None, latency, p_out, note)}


def tokens_from_vllm(token_ids: Any, logprobs: Any) -> Optional[list]:
    """The tokens of a vLLM output (``generated_tokens`` and, per position, ``{token_id: {logprob,
    rank, decoded_token}}``), as :class:`~scenefit.teachers.label_probs.TokenChoice`; None when absent."""
    from scenefit.teachers.label_probs import TokenChoice

    if token_ids is None or logprobs is None or len(logprobs) != len(token_ids) or not len(token_ids):
        return None
    out = []
    for tok, alts in zip(token_ids, logprobs):
        alts = dict(alts.items() if isinstance(alts, dict) else alts or ())
        alts = {int(k): v for k, v in alts.items() if v is not None}
        chosen = alts.get(int(tok))
        if chosen is None or chosen.get("decoded_token") is None:
            return None
        top = tuple((a["decoded_token"], float(a["logprob"]))
                    for _, a in sorted(alts.items(), key=lambda kv: kv[1].get("rank") or 0) if a.get("decoded_token") is not None)
        out.append(TokenChoice(chosen["decoded_token"], float(chosen["logprob"]), top))
    return out


def _result_json(raw: Optional[str], error: Optional[str], latency_s: float, p_out: Optional[dict] = None,
                 p_out_note: Optional[str] = None) -> str:
    return json.dumps({"raw": raw, "error": error, "latency_s": latency_s, "p_out": p_out, "p_out_note": p_out_note})


def result_of_row(row: dict) -> TeacherResult:
    """The TeacherResult of one output row: a postprocessed answer, or a row that skipped the engine
    (``__inference_error__``: the image could not be read, or the engine failed on it)."""
    if row.get("result"):
        return TeacherResult(**json.loads(row["result"]))
    error = row.get("__inference_error__") or "error: the row came back without an answer"
    kind, _, detail = str(error).partition(": ")
    if kind not in ("image",):
        kind, detail = "engine", str(error)
    latency = time.time() - float(row["t0"]) if row.get("t0") is not None else 0.0
    return TeacherResult.failure(kind, detail[:500], latency, attempts=0 if kind == "image" else 1)
