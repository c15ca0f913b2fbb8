"""HTTP behaviour of the student server with a fake predictor: every refusal, both body kinds,
concurrency cap, timeout, micro-batching, chat routing. Real uvicorn on 127.0.0.1.

    .venv/bin/python -m pytest tests/unit/test_serve.py -q

The tests with real tiny students are in tests/e2e/test_serve_students.py.
"""

from __future__ import annotations

import asyncio
import io
import socket
import threading

import httpx
import numpy as np
import pytest
from PIL import Image

from support.serve import TOKEN, FakePredictor, assert_error, auth, b64, bomb_png, png_bytes  # noqa: F401

pytest.importorskip("fastapi")

from scenefit.serve.app import create_app  # noqa: E402
from scenefit.serve.config import ServeConfig  # noqa: E402
from scenefit.serve.openai_server import ChatReply, serve_in_thread  # noqa: E402

CRITERIA = ("location", "size", "co_occurrence")

@pytest.fixture(scope="module")
def fake():
    return FakePredictor()

@pytest.fixture(scope="module")
def server(fake):
    cfg = ServeConfig(max_body_bytes=200_000, max_image_pixels=1_000_000, max_wait_ms=20)
    with serve_in_thread(create_app(fake, cfg, token=TOKEN)) as base:
        with httpx.Client(base_url=base, timeout=30) as client:
            yield client

class _Announced(Exception):
    """Raised by the test's on_ready to end run_app once the announcement was checked."""

def test_ready_is_announced_only_once_the_socket_accepts_connections():
    """`scenefit serve` prints its URL from run_app's on_ready: a client connecting the instant
    it appears (here: inside on_ready itself, the earliest moment) must not be refused."""
    from scenefit.serve.openai_server import run_app

    seen: dict[str, str] = {}

    def on_ready(base: str) -> None:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=30).close()
            seen["connect"] = "accepted"
        except OSError as e:
            seen["connect"] = f"{type(e).__name__}: {e}"
        raise _Announced

    with pytest.raises(_Announced):
        run_app(create_app(FakePredictor(), ServeConfig()), port=0, on_ready=on_ready)
    assert seen["connect"] == "accepted"

def test_health_and_page_are_open_everything_else_needs_the_token(server):
    assert server.get("/health").json()["status"] == "ok"
    page = server.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    assert server.get("/static/app.js").status_code == 200
    assert_error(server.get("/v1/models"), 401, "missing_token", "bearer")
    assert_error(server.get("/v1/models", headers=auth("wrong")), 401, "invalid_token", "not valid")
    assert_error(server.get("/v1/models", headers={"Authorization": "Basic abc"}), 401, "bad_auth_header")
    r = server.post("/v1/classify", json={"image": b64(png_bytes()), "object": "dog"})
    assert_error(r, 401, "missing_token")
    assert r.headers["www-authenticate"].startswith("Bearer")
    names = [m["id"] for m in server.get("/v1/models", headers=auth()).json()["data"]]
    assert names == ["scenefit-location", "scenefit-size", "scenefit-co_occurrence", "scenefit-base"]

def test_token_from_environment(monkeypatch):
    from scenefit.serve.security import resolve_token

    monkeypatch.setenv("SCENEFIT_API_TOKEN", "from-env")
    assert resolve_token(None, "SCENEFIT_API_TOKEN") == "from-env"
    assert resolve_token("flag", "SCENEFIT_API_TOKEN") == "flag"
    monkeypatch.setenv("SCENEFIT_API_TOKEN", "  ")
    assert resolve_token(None, "SCENEFIT_API_TOKEN") is None

def test_json_and_multipart_give_the_same_verdicts(server, fake):
    image = png_bytes((80, 60))
    top_box = [10, 2, 30, 20]  # centre in the top half -> the fake says location Out-of-context
    j = server.post("/v1/classify", headers=auth(), json={"image": b64(image), "object": "dog", "box": top_box, "explain": True})
    assert j.status_code == 200, j.text
    m = server.post(
        "/v1/classify", headers=auth(),
        files={"image": ("x.png", image, "image/png")},
        data={"object": "dog", "box": "10,2,30,20", "explain": "true"},
    )
    assert m.status_code == 200, m.text
    assert j.json() == m.json()
    body = j.json()
    assert set(body["criteria"]) == set(CRITERIA)
    assert body["criteria"]["location"]["label"] == "Out-of-context" and body["final"] == "Out-of-context"
    assert body["criteria"]["size"]["analysis"] == "size of dog in 80x60"
    # The predictor received the decoded image, the object, the pixel box, and boxed=False.
    img, obj, box, boxed = fake.items[-1]
    assert img.size == (80, 60) and obj == "dog" and box == (10, 2, 30, 20) and boxed is False
    low = server.post("/v1/classify", headers=auth(), json={"image": b64(image), "object": "dog", "box": [10, 40, 30, 58]})
    assert low.json()["final"] == "In-context" and low.json()["criteria"]["size"]["analysis"] is None

def test_no_box_means_the_image_already_carries_it(server, fake):
    r = server.post("/v1/classify", headers=auth(), json={"image": "data:image/png;base64," + b64(png_bytes()), "object": "cat"})
    assert r.status_code == 200, r.text
    _, _, box, boxed = fake.items[-1]
    assert box is None and boxed is True
    # an image that shows no box in the box colour is named, not judged
    bare = server.post("/v1/classify", headers=auth(), json={"image": b64(png_bytes(boxed=False)), "object": "cat"})
    assert_error(bare, 422, "no_red_box", "send 'box'")

def test_oversized_body_is_413_declared_or_streamed(server):
    big = b64(b"\0" * 300_000)
    assert_error(server.post("/v1/classify", headers=auth(), json={"image": big, "object": "dog"}), 413, "body_too_large", "200,000")

    def chunks():  # no Content-Length: the cap is enforced while streaming
        for _ in range(40):
            yield b"x" * 10_000

    r = server.post("/v1/classify", headers={**auth(), "Content-Type": "application/json"}, content=chunks())
    assert_error(r, 413, "body_too_large")

def test_decompression_bomb_is_refused_before_decoding(server):
    r = server.post("/v1/classify", headers=auth(), json={"image": b64(bomb_png(5000, 5000)), "object": "dog", "box": [0, 0, 1, 1]})
    err = assert_error(r, 413, "bomb", "decompression bomb", "5000x5000")
    assert "/tmp" not in err["message"] and "uploaded image" in err["message"]  # no temporary path leaked
    # Far beyond Pillow's own limit: Pillow refuses it while reading the header; same answer.
    r = server.post("/v1/classify", headers=auth(), json={"image": b64(bomb_png()), "object": "dog"})
    assert_error(r, 413, "bomb", "decompression bomb")
    # Honestly large (not a bomb) but over this server's pixel cap -> too_large, also 413.
    noise = np.random.default_rng(0).integers(0, 255, (1000, 1100, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="JPEG", quality=5)  # ~70 kB for 1.1 M pixels
    big = buf.getvalue()
    assert_error(server.post("/v1/classify", headers=auth(), json={"image": b64(big), "object": "dog"}), 413, "too_large",
                 "serve.max_image_pixels")  # the 413 names the setting to raise

def test_a_wrong_method_is_405_in_the_error_shape(server):
    """docs/reference.md, the refusal table of "Serving the students": `method_not_allowed` 405."""
    assert_error(server.get("/v1/classify", headers=auth()), 405, "method_not_allowed")

def test_box_outside_the_image_is_422(server, fake):
    r = server.post("/v1/classify", headers=auth(), json={"image": b64(png_bytes((64, 48))), "object": "dog", "box": [70, 10, 90, 40]})
    assert_error(r, 422, "box_outside", "64x48", "(70, 10, 90, 40)")
    # mostly outside (a 300,200,900,700 box on a 320x240 photo): refused, never clipped to a sliver
    r = server.post("/v1/classify", headers=auth(), json={"image": b64(png_bytes((320, 240))), "object": "dog",
                                                          "box": [300, 200, 900, 700]})
    assert_error(r, 422, "box_outside", "mostly outside", "320x240")
    # One box rule with ingest (scenefit.core.images.clip_box): a negative coordinate is refused as the
    # manifest refuses it, so is a box under one pixel; past the right/bottom edge is clipped.
    for negative in ("-20,-9,-5,-1", "-10,-10,50,50"):
        r = server.post("/v1/classify", headers=auth(), files={"image": ("a.png", png_bytes(), "image/png")},
                        data={"object": "dog", "box": negative})
        assert_error(r, 422, "bad_box", "negative coordinate")
    r = server.post("/v1/classify", headers=auth(), json={"image": b64(png_bytes()), "object": "dog", "box": [10.2, 10.2, 10.4, 10.4]})
    assert_error(r, 422, "bad_box", "less than one whole pixel")
    r = server.post("/v1/classify", headers=auth(), json={"image": b64(png_bytes((64, 48))), "object": "dog", "box": [50, 3, 70, 50]})
    assert r.status_code == 200, r.text
    assert fake.items[-1][2] == (50, 3, 64, 48)
    for bad in ([1, 2, 3], [10, 10, 5, 20], "a,b,c,d", [0, 0, float("nan"), 4]):
        payload = {"image": b64(png_bytes()), "object": "dog", "box": bad}
        r = server.post("/v1/classify", headers={**auth(), "Content-Type": "application/json"},
                        content=__import__("json").dumps(payload))
        assert_error(r, 422, "bad_box", "box")

def test_missing_object_is_422(server):
    assert_error(server.post("/v1/classify", headers=auth(), json={"image": b64(png_bytes())}), 422, "missing_object", "object")
    assert_error(server.post("/v1/classify", headers=auth(), json={"image": b64(png_bytes()), "object": "  "}), 422, "missing_object")
    r = server.post("/v1/classify", headers=auth(), files={"image": ("a.png", png_bytes(), "image/png")}, data={"box": "1,1,5,5"})
    assert_error(r, 422, "missing_object")
    r = server.post("/v1/classify", headers=auth(), json={"image": b64(png_bytes()), "object": "x" * 101})
    assert_error(r, 422, "object_too_long", "100")

def test_non_image_and_bad_encodings(server):
    text = b"this is a text file, not a picture\n" * 3
    assert_error(server.post("/v1/classify", headers=auth(), json={"image": b64(text), "object": "dog"}), 415, "not_image", "not an image")
    r = server.post("/v1/classify", headers=auth(), files={"image": ("notes.txt", text, "text/plain")}, data={"object": "dog"})
    assert_error(r, 415, "not_image")
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    assert_error(server.post("/v1/classify", headers=auth(), json={"image": b64(gif.getvalue()), "object": "dog"}),
                 415, "format_not_allowed", "GIF")
    truncated = png_bytes((64, 48), (1, 2, 3))[:-30]
    assert_error(server.post("/v1/classify", headers=auth(), json={"image": b64(truncated), "object": "dog"}), 422, "truncated")
    assert_error(server.post("/v1/classify", headers=auth(), json={"image": "%%%not base64%%%", "object": "dog"}),
                 422, "bad_image_encoding", "base64")
    assert_error(server.post("/v1/classify", headers=auth(), json={"object": "dog"}), 422, "missing_image", "image")
    r = server.post("/v1/classify", headers={**auth(), "Content-Type": "text/plain"}, content=b"hello")
    assert_error(r, 415, "unsupported_media_type", "text/plain")
    r = server.post("/v1/classify", headers={**auth(), "Content-Type": "application/json"}, content=b"{not json")
    assert_error(r, 400, "bad_json")
    r = server.post("/v1/classify", headers=auth(), json={"image": b64(png_bytes()), "object": "dog", "explain": "maybe"})
    assert_error(r, 422, "bad_explain")
    assert_error(server.get("/v1/nothing", headers=auth()), 404, "not_found", "/v1/nothing")

def test_a_failing_item_fails_alone(fake):
    """A merged batch that raises is retried item by item: only the bad request gets 500."""
    cfg = ServeConfig(max_wait_ms=200, max_batch=8)
    with serve_in_thread(create_app(FakePredictor(), cfg)) as base:

        async def main():
            async with httpx.AsyncClient(base_url=base, timeout=30) as c:
                reqs = [c.post("/v1/classify", json={"image": b64(png_bytes()), "object": o}) for o in ("dog", "boom", "cat")]
                return await asyncio.gather(*reqs)

        ok1, bad, ok2 = asyncio.run(main())
    assert ok1.status_code == 200 and ok2.status_code == 200
    assert_error(bad, 500, "prediction_failed", "boom")

class GatedPredictor(FakePredictor):
    """A FakePredictor whose calls wait until the test opens ``gate``, so a test decides when
    work finishes instead of assuming how fast the machine is."""

    def __init__(self):
        super().__init__()
        self.gate = threading.Event()

    def predict(self, items, explain=False, criteria=None):
        if not self.gate.wait(120):
            raise RuntimeError("the test never opened the gate")
        return super().predict(items, explain, criteria)

async def wait_until(condition, what: str, deadline_s: float = 120.0) -> None:
    """Poll ``condition()`` (an awaitable factory) until true, with a generous deadline."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not await condition():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)

def test_concurrency_cap_answers_429_with_retry_after():
    held = GatedPredictor()
    cfg = ServeConfig(max_concurrency=3, max_batch=3, max_wait_ms=50, retry_after_s=2)
    with serve_in_thread(create_app(held, cfg)) as base:

        async def main():
            limits = httpx.Limits(max_connections=20)
            async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as c:
                tasks = [asyncio.ensure_future(c.post("/v1/classify", json={"image": b64(png_bytes()), "object": "dog"}))
                         for _ in range(12)]

                async def nine_refused():  # three admitted requests hold the slots; the rest is refused
                    return sum(t.done() for t in tasks) >= 9

                await wait_until(nine_refused, "9 refusals while 3 requests hold the slots")
                held.gate.set()
                return await asyncio.gather(*tasks)

        responses = asyncio.run(main())
        metrics = httpx.get(base + "/v1/metrics").json()
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 3 + [429] * 9
    refused = [r for r in responses if r.status_code == 429]
    assert all(r.headers["retry-after"] == "2" for r in refused)
    assert_error(refused[0], 429, "too_many_requests", "3 concurrent")
    assert metrics["rejected"]["too_many_requests"] == len(refused)
    assert metrics["peak_in_flight"] == 3

def test_request_timeout_is_504():
    cfg = ServeConfig(request_timeout_s=0.3)
    with serve_in_thread(create_app(FakePredictor(delay=1.0), cfg)) as base:
        r = httpx.post(base + "/v1/classify", json={"image": b64(png_bytes()), "object": "dog"}, timeout=30)
        assert_error(r, 504, "timeout", "0.3 s")
        assert httpx.get(base + "/v1/metrics").json()["in_flight"] == 0

def test_concurrent_requests_are_merged_into_batches():
    fake = GatedPredictor()
    cfg = ServeConfig(max_batch=8, max_wait_ms=20, max_concurrency=64)
    with serve_in_thread(create_app(fake, cfg)) as base:

        async def main():
            async with httpx.AsyncClient(base_url=base, timeout=60, limits=httpx.Limits(max_connections=40)) as c:
                tasks = [asyncio.ensure_future(c.post("/v1/classify", json={"image": b64(png_bytes()), "object": f"o{i}"}))
                         for i in range(40)]

                async def held_and_queued():  # the first call is held, everything else queued behind it
                    async with httpx.AsyncClient(base_url=base, timeout=60) as probe:  # c's connections are all busy
                        m = (await probe.get("/v1/metrics")).json()
                    return m["batching"]["batches"] == 1 and m["queued"] + m["batching"]["items"] == 40

                await wait_until(held_and_queued, "one held batch and the rest queued")
                fake.gate.set()
                return await asyncio.gather(*tasks)

        responses = asyncio.run(main())
        metrics = httpx.get(base + "/v1/metrics").json()["batching"]
    assert all(r.status_code == 200 for r in responses)
    assert sum(fake.calls) == 40 and max(fake.calls) == 8
    assert len(fake.calls) < 40  # fewer predictor calls than requests
    assert metrics["items"] == 40 and metrics["max_batch_size"] == max(fake.calls)
    # Every client got the answer for its own item, not a neighbour's.
    assert sorted(r.json()["criteria"]["location"]["label"] for r in responses) == ["In-context"] * 40
    assert sorted(obj for _, obj, _, _ in fake.items) == sorted(f"o{i}" for i in range(40))

def test_explain_and_plain_requests_are_never_merged():
    fake = FakePredictor(delay=0.05)
    seen: list[tuple[int, bool]] = []
    original = fake.predict

    def spy(items, explain=False, criteria=None):
        seen.append((len(items), explain))
        return original(items, explain=explain)

    fake.predict = spy
    with serve_in_thread(create_app(fake, ServeConfig(max_wait_ms=100))) as base:

        async def main():
            async with httpx.AsyncClient(base_url=base, timeout=30) as c:
                return await asyncio.gather(*[
                    c.post("/v1/classify", json={"image": b64(png_bytes()), "object": "dog", "explain": i % 2 == 0}) for i in range(6)
                ])

        responses = asyncio.run(main())
    assert all(r.status_code == 200 for r in responses)
    for r, i in zip(responses, range(6)):
        assert (r.json()["criteria"]["size"]["analysis"] is not None) == (i % 2 == 0)
    assert sum(n for n, e in seen if e) == 3 and sum(n for n, e in seen if not e) == 3

def test_chat_completions_route_by_model_name():
    calls: list[tuple] = []

    def chat_generate(adapter, reqs):
        calls.append((adapter, len(reqs)))
        return [ChatReply(text=f"adapter={adapter}", prompt_tokens=3, completion_tokens=2) for _ in reqs]

    app = create_app(FakePredictor(), ServeConfig(), token=TOKEN, chat_generate=chat_generate)
    with serve_in_thread(app) as base, httpx.Client(base_url=base, timeout=30) as c:
        msg = [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(png_bytes())}},
            {"type": "text", "text": "Is the dog in context?"}]}]
        assert_error(c.post("/v1/chat/completions", json={"model": "scenefit-size", "messages": msg}), 401, "missing_token")
        for name, adapter in (("scenefit-location", "location"), ("scenefit-co_occurrence", "co_occurrence"),
                              ("scenefit-base", None), (None, None)):
            body = {"messages": msg, "max_tokens": 8} | ({"model": name} if name else {})
            r = c.post("/v1/chat/completions", headers=auth(), json=body)
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"] == f"adapter={adapter}"
            assert r.json()["model"] == (name or "scenefit-base")
        r = c.post("/v1/chat/completions", headers=auth(), json={"model": "gpt-9", "messages": msg})
        assert_error(r, 404, "model_not_found", "gpt-9", "scenefit-location")
        r = c.post("/v1/chat/completions", headers=auth(), json={"model": "scenefit-size", "messages": []})
        assert r.status_code == 400 and "messages" in r.json()["error"]["message"]
        # Chat images pass the same checks as classify: a bomb never reaches the decoder.
        bomb = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(bomb_png(9000, 9000))}}]}]
        r = c.post("/v1/chat/completions", headers=auth(), json={"model": "scenefit-size", "messages": bomb})
        assert_error(r, 413, "bomb", "messages[0].content[0]", "decompression bomb")
    assert [a for a, _ in calls] == ["location", "co_occurrence", None, None]

