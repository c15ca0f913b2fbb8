"""The student server's OpenAI chat route as real clients use it: the official `openai` SDK
(plain and streamed answers, usage), clients that leave mid-answer, timeouts and the
max_tokens cap — with a scripted chat model, so each test decides when generation moves on.

    .venv/bin/python -m pytest tests/unit/test_serve_chat.py -q

The same with the real tiny model: tests/e2e/test_openai_server.py and tests/e2e/test_serve_students.py.
"""

from __future__ import annotations

import threading

import httpx
import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from scenefit.serve.app import create_app  # noqa: E402
from scenefit.serve.config import ServeConfig  # noqa: E402
from scenefit.serve.openai_server import ChatReply, serve_in_thread  # noqa: E402
from support.serve import TOKEN, FakePredictor, assert_error, auth, b64, png_bytes  # noqa: E402

PROMPT_TOKENS = 7


class ScriptedChat:
    """A chat_generate that writes ``w0 w1 …`` one word per step, streaming each word through
    the request's ``on_text`` and checking its ``cancel`` event as the real RequestWatch does.
    With ``hold_after`` it stops after that many words until the request is cancelled (or 120 s
    pass: then the test fails, the server never stopped it)."""

    def __init__(self, hold_after: int | None = None):
        self.hold_after = hold_after
        self.cancelled_after: list[int] = []
        self.never_cancelled = 0
        self.started = threading.Event()
        self.done = threading.Event()

    def __call__(self, adapter, reqs):
        self.started.set()
        replies = []
        for r in reqs:
            words = []
            for i in range(r.max_tokens):
                if self.hold_after is not None and i == self.hold_after and not r.cancel.wait(120):
                    self.never_cancelled += 1
                if r.cancel.is_set():
                    self.cancelled_after.append(i)
                    break
                words.append(f"w{i} ")
                if r.on_text is not None:
                    r.on_text(words[-1])
            n = len(words)
            replies.append(ChatReply("".join(words), "length" if n >= r.max_tokens else "stop",
                                     prompt_tokens=PROMPT_TOKENS, completion_tokens=n))
        self.done.set()
        return replies


def image_message(text: str = "Is the dog in context?") -> list[dict]:
    return [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(png_bytes())}},
        {"type": "text", "text": text}]}]


def serve(chat: ScriptedChat, **cfg):
    return serve_in_thread(create_app(FakePredictor(), ServeConfig(**cfg), token=TOKEN, chat_generate=chat))


def test_openai_sdk_plain_and_streamed_answers_agree():
    with serve(ScriptedChat()) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key=TOKEN, max_retries=0, timeout=60)
        assert [m.id for m in client.models.list()] == ["scenefit-location", "scenefit-size",
                                                         "scenefit-co_occurrence", "scenefit-base"]
        plain = client.chat.completions.create(model="scenefit-size", messages=image_message(), max_tokens=5)
        assert plain.choices[0].message.content == "w0 w1 w2 w3 w4 "
        assert plain.choices[0].finish_reason == "length"
        assert (plain.usage.prompt_tokens, plain.usage.completion_tokens) == (PROMPT_TOKENS, 5)

        chunks = list(client.chat.completions.create(model="scenefit-size", messages=image_message(), max_tokens=5,
                                                     stream=True, stream_options={"include_usage": True}))
        assert chunks[0].choices[0].delta.role == "assistant"
        pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        assert pieces == ["w0 ", "w1 ", "w2 ", "w3 ", "w4 "]  # one event per generated piece
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finish == ["length"]
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
        assert chunks[-1].usage.prompt_tokens == PROMPT_TOKENS
        assert len({c.id for c in chunks}) == 1 and all(c.object == "chat.completion.chunk" for c in chunks)

        # Without include_usage no usage chunk; the raw stream ends with [DONE].
        quiet = list(client.chat.completions.create(model="scenefit-base", messages=image_message(), max_tokens=2, stream=True))
        assert all(c.usage is None for c in quiet) and quiet[-1].choices[0].finish_reason == "length"
        with httpx.stream("POST", base + "/v1/chat/completions", headers=auth(), timeout=60,
                          json={"model": "scenefit-base", "messages": image_message(), "max_tokens": 2, "stream": True}) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            events = [line for line in r.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]"


def test_a_client_leaving_mid_stream_stops_its_generation_and_frees_the_slot():
    chat = ScriptedChat(hold_after=3)
    with serve(chat, max_concurrency=1, max_batch=1) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key=TOKEN, max_retries=0, timeout=60)
        stream = client.chat.completions.create(model="scenefit-location", messages=image_message(),
                                                max_tokens=500, stream=True)
        got = []
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
            if len(got) == 3:
                break
        stream.close()  # the client leaves while the model is still "generating"
        assert chat.done.wait(120), "generation never ended after the client left"
        assert chat.cancelled_after == [3] and chat.never_cancelled == 0
        # The one slot is free again: the next request is admitted and answered, not 429.
        chat.hold_after = None
        again = client.chat.completions.create(model="scenefit-location", messages=image_message(), max_tokens=2)
        assert again.choices[0].message.content == "w0 w1 "
        metrics = httpx.get(base + "/v1/metrics", headers=auth()).json()
    assert metrics["in_flight"] == 0 and "too_many_requests" not in metrics["rejected"]


def stopped_or_never_started(chat: ScriptedChat, at: int) -> None:
    """The request's generation stopped where the model was held — or, on a machine too busy
    to reach the model before the client left, never started (dropped from the queue)."""
    if chat.started.is_set():
        assert chat.done.wait(120), "generation never ended after nobody waited for it"
        assert chat.cancelled_after == [at] and chat.never_cancelled == 0
    else:
        assert chat.cancelled_after == []


def test_a_client_leaving_a_plain_request_stops_its_generation():
    chat = ScriptedChat(hold_after=2)
    with serve(chat) as base:
        with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
            httpx.post(base + "/v1/chat/completions", headers=auth(), timeout=httpx.Timeout(60, read=2.0),
                       json={"model": "scenefit-size", "messages": image_message(), "max_tokens": 400})
        stopped_or_never_started(chat, 2)


def test_a_timed_out_chat_stops_generating_and_classify_goes_on():
    """Issue 21.1: a chat past request_timeout_s gets 504 *and* its generation stops, so the
    classify requests behind it (same model lock) are answered."""
    chat = ScriptedChat(hold_after=1)
    with serve(chat, request_timeout_s=2.0) as base, httpx.Client(base_url=base, headers=auth(), timeout=60) as c:
        r = c.post("/v1/chat/completions", json={"model": "scenefit-base", "messages": image_message(), "max_tokens": 400})
        assert_error(r, 504, "timeout")
        stopped_or_never_started(chat, 1)
        ok = c.post("/v1/classify", json={"image": b64(png_bytes()), "object": "dog"})
        assert ok.status_code == 200, ok.text


def test_max_tokens_is_capped_by_a_setting():
    chat = ScriptedChat()
    with serve(chat, chat_max_tokens_limit=64, chat_max_tokens=16) as base, \
            httpx.Client(base_url=base, headers=auth(), timeout=60) as c:
        r = c.post("/v1/chat/completions", json={"model": "scenefit-base", "messages": image_message(), "max_tokens": 8000})
        assert r.status_code == 400 and "limit of 64" in r.json()["error"]["message"]
        r = c.post("/v1/chat/completions", json={"model": "scenefit-base", "messages": image_message()})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 16  # the default length
        for n in ("two", 1.5, True):  # n that is not an integer: 400 with the JSON error shape
            r = c.post("/v1/chat/completions", json={"model": "scenefit-base", "messages": image_message(), "n": n})
            assert r.status_code == 400 and "n must be an integer" in r.json()["error"]["message"], r.text
    with pytest.raises(ValueError, match="chat_max_tokens"):
        ServeConfig(chat_max_tokens=600, chat_max_tokens_limit=512)


def queue_up(turns, kinds: list[str], order: list[str]) -> list[threading.Thread]:
    """One thread per kind, started one after the other while the caller holds the model; each
    waits until the previous one has queued (an event, not a speed)."""
    import time

    def take_turn(kind: str) -> None:
        with turns.hold(kind):
            order.append(kind)

    threads = []
    for kind in kinds:
        t = threading.Thread(target=take_turn, args=(kind,))
        t.start()
        threads.append(t)
        deadline = time.monotonic() + 120
        while turns.waiting < len(threads):
            assert time.monotonic() < deadline, "a thread never queued for the model"
            time.sleep(0.005)
    return threads


def release_all(threads) -> None:
    for t in threads:
        t.join(120)


def test_the_model_is_handed_out_in_arrival_order():
    """With classify_turns_before_chat=0 the model goes to whoever waited first."""
    from scenefit.serve.batching import ModelTurns

    turns, order = ModelTurns(0), []
    with turns.hold("chat"):  # a batch holds the model while three others arrive, one after the other
        threads = queue_up(turns, ["chat", "classify", "chat"], order)
    release_all(threads)
    assert order == ["chat", "classify", "chat"] and turns.waiting == 0


def test_classify_goes_before_waiting_chats_but_never_starves_them():
    """Classify waits for at most the generation holding the model, not a queue of them; and
    after classify_turns_before_chat classify turns in a row a waiting chat gets its turn."""
    from scenefit.serve.batching import ModelTurns

    turns, order = ModelTurns(2), []
    with turns.hold("chat"):
        threads = queue_up(turns, ["chat", "chat", "chat", "chat", "classify"], order)
    release_all(threads)
    assert order[0] == "classify", order  # arrived last, served first

    turns, order = ModelTurns(2), []
    with turns.hold("classify"):
        threads = queue_up(turns, ["chat", "classify", "classify", "classify", "classify"], order)
    release_all(threads)
    assert order == ["classify", "classify", "chat", "classify", "classify"], order


def test_a_chat_image_is_decoded_once(monkeypatch):
    # the dispatcher checks chat images as classify does and hands the decoded image on; the chat
    # app used to decode the same data URL a second time
    import scenefit.core.images as images

    decoded = []
    real = images.load_image_bytes
    monkeypatch.setattr(images, "load_image_bytes", lambda raw, *a, **kw: decoded.append(len(raw)) or real(raw, *a, **kw))
    seen = []

    def chat(adapter, reqs):
        seen.extend(im.size for r in reqs for im in r.images)
        return [ChatReply("ok", prompt_tokens=1, completion_tokens=1) for _ in reqs]

    with serve(chat) as base:
        r = httpx.post(base + "/v1/chat/completions", headers=auth(), timeout=60,
                       json={"model": "scenefit-size", "messages": image_message(), "max_tokens": 2})
    assert r.status_code == 200, r.text
    assert len(decoded) == 1 and seen == [(64, 48)]


def test_every_refusal_of_the_chat_route_has_one_shape():
    # the dispatcher's refusals (unknown model, bad image) and the chat protocol's own (a bad
    # body) used to differ: {"code": word, "message"} against {"message", "type", "code": 400}
    with serve(ScriptedChat()) as base:
        bodies = [{"model": "gpt-9", "messages": image_message()},   # refused by the dispatcher
                  {"model": "scenefit-size", "messages": []},       # refused by the chat protocol
                  {"model": "scenefit-size", "messages": image_message(), "n": 2}]
        answers = [httpx.post(base + "/v1/chat/completions", headers=auth(), timeout=60, json=b) for b in bodies]
    assert [r.status_code for r in answers] == [404, 400, 400]
    for r in answers:
        error = r.json()["error"]
        assert isinstance(error["code"], str) and error["code"] and isinstance(error["message"], str), error
    assert answers[0].json()["error"]["code"] == "model_not_found"
    assert answers[1].json()["error"] == {"code": "bad_request", "message": "messages must be a non-empty list",
                                          "type": "invalid_request_error"}
