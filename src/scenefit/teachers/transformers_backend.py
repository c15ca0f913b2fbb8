"""Teachers run in-process with transformers: a local model folder or a hub id.

    scenefit annotate MANIFEST --db annotations.sqlite --set 'teachers=[{name: local, backend: transformers, model: runs/demo/model}]'

Qwen2.5-VL (and Qwen2-VL) load through their own classes, other image-text-to-text models
through the Auto classes (:func:`scenefit.models.loading.load_model`). Generation is batched with
left padding: ``batch_size`` samples per ``generate()`` call, run in a worker thread so the
event loop (and the database writer) keep going. :func:`generate_chat` is also what
``scenefit serve-teacher`` runs. With ``logprobs`` (the default) every answer also records
the model's probability of Out-of-context at each label it wrote, from its logits
(:mod:`.label_probs`).
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
    temperature: Optional[float] = 0.0,
    top_p: Optional[float] = None,
    seed: Optional[int] = None,
    stopping_criteria: Optional[list] = None,
    top_logprobs: Optional[int] = None,
) -> list[dict[str, Any]]:
    """One batched ``generate()`` over chat conversations (HF message format, ``{"type":
    "image"}`` placeholders matched in order by ``images[i]``). Returns per conversation
    ``text``, ``prompt_tokens``, ``completion_tokens`` and ``finish_reason`` (stop|length).
    ``stopping_criteria``: extra transformers stopping criteria (the server's, per row).
    ``top_logprobs`` (0-20, None = off): also ``tokens``, the generated tokens as
    :class:`~scenefit.teachers.label_probs.TokenChoice` with their log-probabilities and that
    many best alternatives, from the model's raw logits (before temperature or top-p, as vLLM
    reports them); the logits of every step are kept until the batch ends."""
    import torch

    from scenefit.models.loading import generate_text

    tok = processor.tokenizer
    if tok.padding_side != "left":  # decoder-only batches must pad on the left
        tok.padding_side = "left"
    texts = [processor.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    flat_images = [im for ims in images for im in ims]
    inputs = processor(text=texts, images=flat_images or None, padding=True, return_tensors="pt").to(model.device)
    with torch.inference_mode():
        out = generate_text(model, tok, dict(inputs), max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                            stopping_criteria=stopping_criteria, step_logits=top_logprobs is not None)
    prompt_tokens = inputs["attention_mask"].sum(-1).tolist()
    results = [{"text": text, "prompt_tokens": int(n), "completion_tokens": count, "finish_reason": "stop" if stop else "length"}
               for text, n, count, stop in zip(out.texts, prompt_tokens, out.counts, out.stopped)]
    if top_logprobs is not None:
        for i, (row, completion) in enumerate(zip(results, out.completions)):
            row["tokens"] = token_choices(tok, completion, [step[i] for step in out.step_logits[: len(completion)]],
                                          top_logprobs)
    return results


def token_choices(tokenizer, ids: Sequence[int], step_logits: Sequence[Any], k: int) -> list:
    """The generated ``ids`` as TokenChoice: each token's log-probability under its step's
    logits and the ``k`` most likely tokens there. Special tokens are left out (as from the text)."""
    import torch

    from scenefit.teachers.label_probs import TokenChoice

    special = set(tokenizer.all_special_ids)
    out = []
    for token_id, row in zip(ids, step_logits):
        if token_id in special:
            continue
        lp = torch.log_softmax(row.float(), dim=-1)
        top = torch.topk(lp, k) if k > 0 else None
        alts = () if top is None else tuple(
            (tokenizer.decode([int(j)]), float(v)) for v, j in zip(top.values.tolist(), top.indices.tolist())
        )
        out.append(TokenChoice(tokenizer.decode([int(token_id)]), float(lp[int(token_id)]), alts))
    return out


def label_probabilities(tokens: Optional[list], asked: bool) -> tuple[Optional[dict], Optional[str]]:
    """(p_out, note) of one answer from its tokens (:mod:`.label_probs`)."""
    from scenefit.teachers.label_probs import no_p_out, p_out_from_tokens

    if not asked:
        return None, "not recorded (logprobs: false)"
    if not tokens:
        return no_p_out("no tokens with log-probabilities")
    return p_out_from_tokens(tokens)


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
        from scenefit.student.chat import chat_messages

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
                        top_logprobs=self.cfg.top_logprobs if self.cfg.logprobs else None,
                    )
                per_sample = (time.perf_counter() - t0) / len(ready)  # the batch's time, shared
                for (i, _), o in zip(ready, outs):
                    p_out, note = label_probabilities(o.get("tokens"), self.cfg.logprobs)
                    results[i] = TeacherResult(raw=o["text"], latency_s=per_sample, p_out=p_out, p_out_note=note)
            except Exception as e:  # e.g. out of memory: record it for every sample of the batch
                for i, _ in ready:
                    results[i] = TeacherResult.failure("generate", f"{type(e).__name__}: {e}", time.perf_counter() - t0)
        return [r for r in results if r is not None]
