"""Chat generation that follows its clients: streamed text, and rows that stop when nobody waits.

    scenefit serve-teacher --model runs/demo/model --port 8000      # both servers use this
    curl -N localhost:8000/v1/chat/completions -d '{"stream": true, "messages": [...]}'

* :class:`RequestWatch` — a transformers stopping criterion given to the batched ``generate()``
  call: after every step it hands each streaming request its new text, and it stops the row of
  a request whose ``cancel`` event is set (client gone, request timed out), so that a batch
  neighbour keeps generating while the abandoned row costs nothing more.
* :func:`sse_chunks` — the OpenAI ``chat.completion.chunk`` server-sent events of one request:
  the role, the text as it is generated, the finish reason, usage when asked
  (``stream_options.include_usage``), then ``data: [DONE]``. Leaving early cancels the request.
* :func:`unless_client_leaves` — awaits a non-streaming answer, cancelling it when the client
  disconnects first.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, AsyncIterator, Awaitable, Callable, Optional, Sequence

from transformers import StoppingCriteria

from scenefit.core.errors import ScenefitError
from scenefit.serve.security import error_payload, log


class RequestWatch(StoppingCriteria):
    """Per-row stopping and streaming for a batch of chat requests (each with ``.cancel``, a
    threading.Event, and ``.on_text``, None or a callable taking the new text)."""

    def __init__(self, requests: Sequence[Any], tokenizer):
        self.requests = list(requests)
        self.tokenizer = tokenizer
        self.prompt_len: Optional[int] = None
        self.texts = [IncrementalText(tokenizer) for _ in self.requests]

    def __call__(self, input_ids, scores=None, **kwargs):
        import torch

        if self.prompt_len is None:  # first call: the prompt plus the first new token
            self.prompt_len = input_ids.shape[1] - 1
        stop = []
        for i, req in enumerate(self.requests):
            cancelled = req.cancel.is_set()
            if req.on_text is not None and not cancelled:
                new = self.texts[i].add(input_ids[i, self.prompt_len:].tolist())
                if new:
                    req.on_text(new)
            stop.append(cancelled)
        return torch.tensor(stop, dtype=torch.bool, device=input_ids.device)


class IncrementalText:
    """The text of a growing list of token ids, handed out piece by piece with work linear in
    the answer's length: each step decodes only the tokens since the last piece (and those of the
    piece before, as context for tokenizers whose spacing depends on the previous token), never
    the whole answer again. A multi-byte character split across tokens decodes as U+FFFD until
    it is complete, so a piece is held back until it does not end in one."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.context_start = 0  # first id of the window decoded as context
        self.emitted_end = 0  # ids before this index have been handed out as text

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def add(self, ids: Sequence[int]) -> str:
        """The new text that ``ids`` (all ids so far) add since the last call; "" when none yet."""
        context = self._decode(ids[self.context_start:self.emitted_end])
        text = self._decode(ids[self.context_start:])
        if len(text) <= len(context) or text.endswith("\ufffd") or not text.startswith(context):
            return ""
        self.context_start, self.emitted_end = self.emitted_end, len(ids)
        return text[len(context):]


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def sse_chunks(req: Any, answer: Callable[[Any], Awaitable[Any]], model_name: str) -> AsyncIterator[str]:
    """Server-sent events answering ``req`` with ``answer(req)`` (a ChatRunner) as it generates.

    The text pieces come from the generation thread (``req.on_text``) through a queue on this
    loop; whatever the final reply holds beyond them (text held back at the end) is sent before
    the finish reason. Cancelled (client gone) or abandoned: ``req.cancel`` is set and the
    answer task cancelled, which stops the request's row in its batch."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str] = asyncio.Queue()
    with_logprobs = bool(getattr(req, "logprobs", False))
    if not with_logprobs:  # with logprobs the text goes out token by token once they are known
        req.on_text = lambda text: loop.call_soon_threadsafe(pieces.put_nowait, text)
    head = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model_name}

    def chunk(delta: dict, finish: Optional[str] = None, logprobs: Optional[dict] = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        if with_logprobs:
            choice["logprobs"] = logprobs
        return _event({**head, "choices": [choice]})

    task = asyncio.ensure_future(answer(req))
    getter: Optional[asyncio.Future] = None
    sent = ""
    try:
        yield chunk({"role": "assistant", "content": ""})
        while True:
            getter = asyncio.ensure_future(pieces.get())
            done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                break
            sent += getter.result()
            yield chunk({"content": getter.result()})
        while not pieces.empty():
            text = pieces.get_nowait()
            sent += text
            yield chunk({"content": text})
        try:
            reply = task.result()
        except Exception as e:  # the model failed mid-answer: say so in the stream, then end it
            yield _event(error_payload("generation_failed", f"{type(e).__name__}: {e}", "server_error"))
            yield "data: [DONE]\n\n"
            return
        tokens = getattr(reply, "tokens", None) if with_logprobs else None
        if tokens is not None and "".join(t.token for t in tokens) == reply.text:
            for t in tokens:  # one chunk per token, its text and its log-probabilities
                yield chunk({"content": t.token}, logprobs=choice_logprobs(req, [t]))
        elif tokens is not None:  # token pieces that do not join into the text: the text whole, then them
            yield chunk({"content": reply.text[len(sent):]}, logprobs=choice_logprobs(req, tokens))
        elif reply.text.startswith(sent) and len(reply.text) > len(sent):
            yield chunk({"content": reply.text[len(sent):]})
        yield chunk({}, reply.finish_reason)
        if (req.body.get("stream_options") or {}).get("include_usage"):
            yield _event({**head, "choices": [], "usage": usage(reply)})
        yield "data: [DONE]\n\n"
    finally:
        # A client gone mid-stream cancels this generator inside its wait: the waiting getter is
        # cancelled too (left pending, it was "destroyed but pending" when collected).
        if getter is not None and not getter.done():
            getter.cancel()
        if not task.done():
            req.cancel.set()
            task.cancel()
            log.info("chat stream for %s ended before its answer (client gone); generation stopped", model_name)


def choice_logprobs(req: Any, tokens: Optional[list]) -> Optional[dict]:
    """The ``logprobs`` of a choice: ``{"content": [...]}`` with the request's number of
    alternatives, or None when it asked for none (or the runner gave none)."""
    from scenefit.teachers.label_probs import openai_logprobs_content

    if not req.logprobs or tokens is None:
        return None
    return {"content": openai_logprobs_content([t.__class__(t.token, t.logprob, t.top[:req.top_logprobs]) for t in tokens])}


def usage(reply: Any) -> dict[str, int]:
    return {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens}


class ClientGone(ScenefitError):
    """The client disconnected before its answer was ready."""


async def unless_client_leaves(receive: Callable[[], Awaitable[dict]], work: Awaitable[Any]) -> Any:
    """``await work``, unless an ``http.disconnect`` arrives first: then the work is cancelled
    and :class:`ClientGone` raised. Call after the request body has been read."""
    task = asyncio.ensure_future(work)

    async def gone() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(gone())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # timed out by the server: the work stops too
        task.cancel()
        raise
    finally:
        if not watcher.done():
            watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    raise ClientGone()
