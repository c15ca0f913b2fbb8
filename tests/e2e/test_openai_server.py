"""`scenefit serve-teacher --model <tiny>` as a real subprocess on 127.0.0.1, and the openai
teacher backend annotating through it (real HTTP, the real tiny model, concurrency > 1).

    .venv/bin/python -m pytest tests/e2e/test_openai_server.py -q
"""

from __future__ import annotations

import base64
import io
import math

import httpx
import pytest
from PIL import Image

from scenefit.core.records import Sample
from scenefit.teachers.annotate import annotate
from scenefit.teachers.config import AnnotateConfig
from scenefit.teachers.store import FAILED, AnnotationStore
from support.servers import openai_server  # noqa: F401

pytestmark = pytest.mark.slow

pytest.importorskip("fastapi")  # the `serve` extra (part of `dev`)

@pytest.fixture(scope="module")
def server(tiny_model_dir):
    with openai_server(tiny_model_dir, "tiny", "--max-batch", "4", "--max-new-tokens", "16") as base:
        yield base

def data_url(color=(200, 30, 30), size=(80, 60)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()

def chat(base: str, **over) -> httpx.Response:
    body = {"model": "tiny", "max_tokens": 8, "temperature": 0,
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url()}},
                                                      {"type": "text", "text": "Is the zebra in context?"}]}]}
    body.update(over)
    return httpx.post(base + "/chat/completions", json=body, timeout=60)

def test_models_and_one_completion(server):
    models = httpx.get(server + "/models", timeout=10).json()
    assert models["object"] == "list" and models["data"][0]["id"] == "tiny"
    r = chat(server)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "chat.completion" and out["model"] == "tiny"
    msg = out["choices"][0]["message"]
    assert msg["role"] == "assistant" and isinstance(msg["content"], str)
    assert out["choices"][0]["finish_reason"] in ("stop", "length")
    assert 0 < out["usage"]["completion_tokens"] <= 8 and out["usage"]["prompt_tokens"] > 10
    again = chat(server).json()["choices"][0]["message"]["content"]
    assert again == msg["content"]  # greedy decoding is deterministic

@pytest.mark.parametrize("over, status, words", [
    ({"messages": []}, 400, "messages"),
    ({"stream": "yes"}, 400, "stream"),
    ({"n": "two"}, 400, "n must be an integer"),
    ({"max_tokens": 100_000}, 400, "limit of 4096"),
    ({"model": "other"}, 404, "not served"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://example.com/x.png"}}]}]}, 400, "data: URL"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}, 400, "image"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "role"),
    ({"top_logprobs": 3}, 400, "top_logprobs needs logprobs: true"),
    ({"logprobs": True, "top_logprobs": 21}, 400, "top_logprobs must be an integer from 0 to 20"),
    ({"logprobs": "yes"}, 400, "logprobs must be true or false"),
])
def test_bad_requests_get_4xx_with_a_message(server, over, status, words):
    r = chat(server, **over)
    assert r.status_code == status
    assert words in r.json()["error"]["message"]

def test_openai_teacher_annotates_through_the_server(server, tmp_path):
    samples = []
    for i in range(8):
        p = tmp_path / f"img{i}.png"
        Image.new("RGB", (150, 100), (20 * i, 120, 60)).save(p)
        samples.append(Sample(id=f"s{i}", image=str(p), object="zebra", box=(10, 10, 70, 70)))
    cfg = AnnotateConfig(teachers=[{"name": "tiny-teacher", "backend": "openai", "model": "tiny", "base_urls": [server],
                                    "concurrency": 4, "max_tokens": 12, "timeout_s": 120, "max_pixels": 112 * 112}],
                         progress=False, commit_every=3)
    summary = annotate(samples, cfg, tmp_path / "a.sqlite")
    t = summary.teachers["tiny-teacher"]
    assert t.stored == 8 and not t.failed_by_reason
    with AnnotationStore(tmp_path / "a.sqlite") as store:
        df = store.to_frame()
    assert len(df) == 8 and (df["status"] != FAILED).all()
    assert df["raw"].map(lambda x: isinstance(x, str)).all()
    # a random tiny model writes no labels: its answers are kept as unparseable, with a reason,
    # and the probabilities it was asked for (logprobs came back) are null: no label to read them at
    assert df["reason"].notna().all()
    assert df["p_out_note"].eq("location, size, co_occurrence, final: no label").all(), df["p_out_note"].tolist()
    assert (df["model_id"] == "tiny").all() and (df["backend"] == "openai").all()

def test_concurrent_requests_share_batches(server):
    """Requests sent at once are batched by the server (the X-Scenefit-Batch header)."""
    import asyncio

    async def burst():
        async with httpx.AsyncClient(timeout=120) as client:
            body = {"model": "tiny", "max_tokens": 6, "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": data_url()}}, {"type": "text", "text": "Where is the zebra?"}]}]}
            rs = await asyncio.gather(*(client.post(server + "/chat/completions", json=body) for _ in range(8)))
        return rs

    rs = asyncio.run(burst())
    assert all(r.status_code == 200 for r in rs)
    assert max(int(r.headers["x-scenefit-batch"]) for r in rs) > 1
    texts = {r.json()["choices"][0]["message"]["content"] for r in rs}
    assert len(texts) == 1  # the same request gives the same answer, batched or not

def test_data_url_images_pass_the_image_checks():
    """The standalone chat server decodes images with scenefit.core.images' checks: a header that
    claims a huge image is refused before decoding, naming the data URL and the reason."""
    from scenefit.serve.openai_server import BadRequest, decode_data_url
    from support.images import png_claiming

    bomb = "data:image/png;base64," + base64.b64encode(png_claiming(60_000, 60_000)).decode()
    with pytest.raises(BadRequest, match=r"image data URL refused \(bomb\)"):
        decode_data_url(bomb)
    gif = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    with pytest.raises(BadRequest, match="format_not_allowed"):
        decode_data_url("data:image/gif;base64," + base64.b64encode(gif.getvalue()).decode())

def test_openai_sdk_plain_and_streamed(server):
    """The official SDK: a streamed answer is the plain answer, piece by piece, with usage."""
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server, api_key="unused", max_retries=0, timeout=120)
    assert [m.id for m in client.models.list()] == ["tiny"]
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url()}},
                                             {"type": "text", "text": "Is the zebra in context?"}]}]
    plain = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0)
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == \
        [plain.choices[0].finish_reason]
    assert chunks[-1].usage.model_dump(include={"prompt_tokens", "completion_tokens"}) == \
        plain.usage.model_dump(include={"prompt_tokens", "completion_tokens"})
    # A client that leaves mid-stream: the server goes on answering others.
    with client.chat.completions.create(model="tiny", messages=messages, max_tokens=4000, stream=True) as stream:
        next(iter(stream))
    again = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0)
    assert again.choices[0].message.content == plain.choices[0].message.content

def test_openai_sdk_reads_logprobs_plain_and_streamed(server):
    """logprobs / top_logprobs in the OpenAI format, parsed by the official SDK: greedy tokens are
    the best of their alternatives, the tokens spell the answer, and the stream carries the same
    tokens and values as the plain answer."""
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server, api_key="unused", max_retries=0, timeout=120)
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url((30, 200, 40))}},
                                             {"type": "text", "text": "Is the cup in context?"}]}]
    ask = dict(model="tiny", messages=messages, max_tokens=10, temperature=0)
    plain = client.chat.completions.create(**ask, logprobs=True, top_logprobs=3)
    choice = plain.choices[0]
    content = choice.logprobs.content
    assert content and "".join(t.token for t in content) == choice.message.content
    for t in content:
        assert len(t.top_logprobs) == 3 and t.logprob <= 0
        values = [a.logprob for a in t.top_logprobs]
        assert values == sorted(values, reverse=True) and sum(math.exp(v) for v in values) <= 1 + 1e-6
        assert t.top_logprobs[0].token == t.token and t.top_logprobs[0].logprob == pytest.approx(t.logprob)  # greedy
        assert bytes(t.bytes).decode("utf-8", "replace") == t.token
    assert client.chat.completions.create(**ask).choices[0].logprobs is None  # not asked, not sent
    zero = client.chat.completions.create(**ask, logprobs=True).choices[0].logprobs.content
    assert [t.token for t in zero] == [t.token for t in content] and all(t.top_logprobs == [] for t in zero)

    chunks = [c for c in client.chat.completions.create(**ask, logprobs=True, top_logprobs=3, stream=True) if c.choices]
    streamed = [t for c in chunks if c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == choice.message.content
    assert [(t.token, round(t.logprob, 5), [a.token for a in t.top_logprobs]) for t in streamed] == \
        [(t.token, round(t.logprob, 5), [a.token for a in t.top_logprobs]) for t in content]
    assert chunks[-1].choices[0].finish_reason == choice.finish_reason

def test_a_cancelled_row_stops_while_its_batch_neighbour_goes_on(tiny_model_dir):
    """RequestWatch with the real tiny model: the row whose client left (cancel set after its
    first streamed piece) stops at once; the other row generates exactly what it does alone."""
    from scenefit.models.loading import load_model, load_processor
    from scenefit.serve.openai_server import ChatRequest
    from scenefit.serve.streaming import RequestWatch
    from scenefit.teachers.transformers_backend import generate_chat

    processor = load_processor(str(tiny_model_dir), padding_side="left")
    model = load_model(str(tiny_model_dir), dtype="fp32", device="cpu")
    image = Image.new("RGB", (80, 60), (200, 30, 30))
    convs = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": t}]}]
             for t in ("Is the zebra in context?", "Where is the zebra?")]
    alone = generate_chat(model, processor, convs[1:], [[image]], max_new_tokens=24)[0]
    reqs = [ChatRequest(model="tiny", conversation=c, images=[image]) for c in convs]
    pieces: list[str] = []

    def leave(text: str) -> None:
        pieces.append(text)
        reqs[0].cancel.set()

    reqs[0].on_text = leave
    both = generate_chat(model, processor, convs, [[image], [image]], max_new_tokens=24,
                         stopping_criteria=[RequestWatch(reqs, processor.tokenizer)])
    assert len(pieces) == 1
    assert alone["completion_tokens"] > 3  # the tiny model rambles, so stopping early is visible
    assert both[0]["completion_tokens"] <= 3 and both[0]["text"].startswith(pieces[0])
    assert both[1]["text"] == alone["text"] and both[1]["completion_tokens"] == alone["completion_tokens"]

