"""Teachers run in-process with transformers: a local model folder or a hub id.

    scenefit annotate MANIFEST --db annotations.sqlite --set 'teachers=[{name: local, backend: transformers, model: runs/demo/model}]'

Qwen2.5-VL (and Qwen2-VL) load through their own classes, other image-text-to-text models
through the Auto classes (:func:`scenefit.models.loading.load_model`). Generation is batched with
left padding: ``batch_size`` samples per ``generate()`` call, run in a worker thread so the
event loop (and the database writer) keep going. :func:`generate_chat` is also what
``scenefit serve --openai`` runs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Optional, Sequence

from scenefit.core.images import ImageError
from scenefit.teachers.base import Teacher, TeacherRequest, TeacherResult, teacher_image
from scenefit.teachers.config import TeacherConfig


def generate_chat(
    model,
    processor,
    conversations: Sequence[list[dict]],
    images: Sequence[list[Any]],
    max_new_tokens: int = 512,
    temperature: float = 0.0,
    top_p: Optional[float] = None,
    seed: Optional[int] = None,
    stopping_criteria: Optional[list] = None,
) -> list[dict[str, Any]]:
    """One batched ``generate()`` over chat conversations (HF message format, ``{"type":
    "image"}`` placeholders matched in order by ``images[i]``). Returns per conversation
    ``text``, ``prompt_tokens``, ``completion_tokens`` and ``finish_reason`` (stop|length).
    ``stopping_criteria``: extra transformers stopping criteria (the server's, per row)."""
    import torch

    tok = processor.tokenizer
    if tok.padding_side != "left":  # decoder-only batches must pad on the left
        tok.padding_side = "left"
    texts = [processor.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    flat_images = [im for ims in images for im in ims]
    inputs = processor(text=texts, images=flat_images or None, padding=True, return_tensors="pt")
    inputs = inputs.to(model.device)
    gen: dict[str, Any] = {"max_new_tokens": int(max_new_tokens)}
    if temperature and temperature > 0:
        gen.update(do_sample=True, temperature=float(temperature))
        if top_p is not None:
            gen["top_p"] = float(top_p)
    else:
        # greedy is plain argmax (the stock Qwen2.5-VL config's repetition_penalty 1.05 left out)
        gen.update(do_sample=False, temperature=None, top_p=None, top_k=None, repetition_penalty=1.0)
    if stopping_criteria:
        gen["stopping_criteria"] = list(stopping_criteria)
    if seed is not None:
        torch.manual_seed(int(seed))
    with torch.inference_mode():
        out = model.generate(**inputs, **gen)
    prompt_len = inputs["input_ids"].shape[1]
    new_tokens = out[:, prompt_len:]
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) | {tok.pad_token_id}
    results = []
    mask = inputs["attention_mask"]
    for i in range(new_tokens.shape[0]):
        ids = new_tokens[i].tolist()
        n = next((k for k, t in enumerate(ids) if t in eos_ids), None)
        completion = ids if n is None else ids[:n]
        results.append({
            "text": tok.decode(completion, skip_special_tokens=True),
            "prompt_tokens": int(mask[i].sum()),
            "completion_tokens": len(completion) + (0 if n is None else 1),
            "finish_reason": "length" if n is None else "stop",
        })
    return results


class TransformersTeacher(Teacher):
    """A local model answering ``batch_size`` samples per generate() call."""

    def __init__(self, cfg: TeacherConfig):
        super().__init__(cfg)
        self.model = None
        self.processor = None
        self._lock = threading.Lock()  # one generate() at a time on one model

    @property
    def batch_size(self) -> int:
        return self.cfg.batch_size

    @property
    def concurrency(self) -> int:
        # One batch generates while the next one's images load; more would only queue on the lock.
        return min(self.cfg.concurrency, 2)

    async def start(self) -> None:
        from scenefit.models.loading import load_model, load_processor

        def load():
            self.processor = load_processor(self.cfg.model, max_pixels=self.cfg.max_pixels, padding_side="left")
            self.model = load_model(self.cfg.model, dtype=self.cfg.dtype, device=self.cfg.device)

        await asyncio.to_thread(load)

    async def aclose(self) -> None:
        self.model = None
        self.processor = None

    async def answer_one(self, request: TeacherRequest) -> TeacherResult:
        return (await self.answer_batch([request]))[0]

    async def answer_batch(self, requests: list[TeacherRequest]) -> list[TeacherResult]:
        return await asyncio.to_thread(self._answer_batch_sync, requests)

    def _answer_batch_sync(self, requests: list[TeacherRequest]) -> list[TeacherResult]:
        from scenefit.models.loading import chat_messages

        results: list[Optional[TeacherResult]] = [None] * len(requests)
        ready: list[tuple[int, Any]] = []
        for i, r in enumerate(requests):
            try:
                ready.append((i, teacher_image(r.sample, self.cfg.max_pixels)))
            except ImageError as e:
                results[i] = TeacherResult.failure("image", str(e), attempts=0)
        if ready:
            t0 = time.perf_counter()
            dec = self.decoding()
            try:
                with self._lock:
                    outs = generate_chat(
                        self.model, self.processor,
                        [chat_messages(requests[i].prompt) for i, _ in ready],
                        [[img] for _, img in ready],
                        max_new_tokens=dec["max_tokens"], temperature=dec["temperature"],
                        top_p=dec.get("top_p"), seed=dec.get("seed"),
                    )
                per_sample = (time.perf_counter() - t0) / len(ready)  # the batch's time, shared
                for (i, _), o in zip(ready, outs):
                    results[i] = TeacherResult(raw=o["text"], latency_s=per_sample)
            except Exception as e:  # e.g. out of memory: record it for every sample of the batch
                for i, _ in ready:
                    results[i] = TeacherResult.failure("generate", f"{type(e).__name__}: {e}", time.perf_counter() - t0)
        return [r for r in results if r is not None]
