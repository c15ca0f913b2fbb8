"""Chat generation that follows its clients: streamed text, and rows that stop when nobody waits.

    scenefit serve --openai --model runs/demo/model --port 8000      # both servers use this
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

from scenefit.serve.security import log


class RequestWatch(StoppingCriteria):
    """Per-row stopping and streaming for a batch of chat requests (each with ``.cancel``, a
    threading.Event, and ``.on_text``, None or a callable taking the new text)."""

    def __init__(self, requests: Sequence[Any], tokenizer):
        self.requests = list(requests)
        self.tokenizer = tokenizer
        self.prompt_len: Optional[int] = None
        self.sent = [""] * len(self.requests)

    def __call__(self, input_ids, scores=None, **kwargs):
        import torch

        if self.prompt_len is None:  # first call: the prompt plus the first new token
            self.prompt_len = input_ids.shape[1] - 1
        stop = []
        for i, req in enumerate(self.requests):
            cancelled = req.cancel.is_set()
            if req.on_text is not None and not cancelled:
                self._stream(i, req, input_ids[i, self.prompt_len:])
            stop.append(cancelled)
        return torch.tensor(stop, dtype=torch.bool, device=input_ids.device)

    def _stream(self, i: int, req: Any, new_ids) -> None:
        text = self.tokenizer.decode(new_ids, skip_special_tokens=True)
        # A multi-byte character split across tokens decodes as U+FFFD until it is complete.
        if text.endswith("\ufffd") or not text.startswith(self.sent[i]) or len(text) == len(self.sent[i]):
            return
        req.on_text(text[len(self.sent[i]):])
        self.sent[i] = text


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
    req.on_text = lambda text: loop.call_soon_threadsafe(pieces.put_nowait, text)
    head = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model_name}

    def chunk(delta: dict, finish: Optional[str] = None) -> str:
        return _event({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    task = asyncio.ensure_future(answer(req))
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
            yield _event({"error": {"message": f"{type(e).__name__}: {e}", "type": "server_error", "code": 500}})
            yield "data: [DONE]\n\n"
            return
        if reply.text.startswith(sent) and len(reply.text) > len(sent):
            yield chunk({"content": reply.text[len(sent):]})
        yield chunk({}, reply.finish_reason)
        if (req.body.get("stream_options") or {}).get("include_usage"):
            yield _event({**head, "choices": [], "usage": usage(reply)})
        yield "data: [DONE]\n\n"
    finally:
        if not task.done():
            req.cancel.set()
            task.cancel()
            log.info("chat stream for %s ended before its answer (client gone); generation stopped", model_name)


def usage(reply: Any) -> dict[str, int]:
    return {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens}


class ClientGone(Exception):
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
