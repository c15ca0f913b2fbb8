"""The openai teacher backend against loopback fault servers (real HTTP on 127.0.0.1):
500 / 429 / hangs / 400 / refused connections are retried or recorded — never lost —, load
balancing over several base URLs, the API key header, structured output, the pixel budget.

    .venv/bin/python -m pytest tests/unit/test_openai_backend.py -q
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from support.answers import ANSWER  # noqa: F401

pytest.importorskip("fastapi")  # the `serve` extra (part of `dev`)

from fastapi import HTTPException  # noqa: E402

from scenefit.core.records import Sample  # noqa: E402
from scenefit.serve.openai_server import ChatReply, ChatRequest, bind_socket, build_openai_app, serve_in_thread  # noqa: E402
from scenefit.teachers.annotate import annotate  # noqa: E402
from scenefit.teachers.config import AnnotateConfig  # noqa: E402
from scenefit.teachers.openai_backend import backoff_delay, chat_body, is_retryable_status  # noqa: E402
from scenefit.teachers.store import FAILED, AnnotationStore  # noqa: E402


class FaultServer:
    """A scripted OpenAI-compatible runner: the boxed object's name says how to misbehave.

    ``flaky500``: 500 on the first two attempts; ``busy429``: 429 (Retry-After 0) once;
    ``hang``: the first attempt never answers in time; ``bad400``: always 400;
    ``always500``: always 500; anything else answers at once.
    """

    def __init__(self):
        self.attempts: Counter = Counter()
        self.requests: list[ChatRequest] = []
        self.lock = threading.Lock()
        self.release = threading.Event()  # ends a hang (set before the server stops)

    async def __call__(self, req: ChatRequest) -> ChatReply:
        text = next(p["text"] for p in req.conversation[0]["content"] if p["type"] == "text")
        obj = text.split("one object, a ", 1)[1].split(",", 1)[0]
        with self.lock:
            self.attempts[obj] += 1
            self.requests.append(req)
            n = self.attempts[obj]
        if obj.startswith("flaky500") and n <= 2:
            raise HTTPException(500, "temporary failure")
        if obj.startswith("busy429") and n == 1:
            raise HTTPException(429, "slow down", headers={"Retry-After": "0"})
        if obj.startswith("hang") and n == 1:
            while not self.release.is_set():  # longer than the client's timeout
                await asyncio.sleep(0.05)
        if obj.startswith("bad400"):
            raise HTTPException(400, "bad request")
        if obj.startswith("always500"):
            raise HTTPException(503, "down")
        return ChatReply(ANSWER)

@pytest.fixture
def images(tmp_path) -> Path:
    p = tmp_path / "big.png"
    Image.new("RGB", (400, 300), (30, 160, 60)).save(p)
    return p

def make_samples(image: Path, objects: list[str]) -> list[Sample]:
    return [Sample(id=f"s{i}", image=str(image), object=o, box=(10, 10, 100, 100)) for i, o in enumerate(objects)]

def openai_config(base_urls: list[str], **teacher) -> AnnotateConfig:
    t = {"name": "remote", "backend": "openai", "model": "tiny", "base_urls": base_urls, "concurrency": 4,
         "timeout_s": 0.75, "max_attempts": 3, "backoff_s": 0.01, "backoff_max_s": 0.05, "max_pixels": 100 * 100,
         "max_tokens": 64}
    t.update(teacher)
    return AnnotateConfig(teachers=[t], progress=False, commit_every=2)

def test_faults_are_retried_or_recorded_never_lost(images, tmp_path):
    objects = ["ok1", "flaky500", "busy429", "hang", "bad400", "always500", "ok2", "ok3"]
    samples = make_samples(images, objects)
    server = FaultServer()
    db = tmp_path / "a.sqlite"
    with serve_in_thread(build_openai_app(server, "tiny")) as base:
        summary = annotate(samples, openai_config([base + "/v1"]), db)
        server.release.set()
    with AnnotationStore(db) as store:
        df = store.to_frame().set_index("sample_id")
    assert len(df) == len(samples)  # every sample stored, exactly once
    by_obj = {o: df.loc[s.id] for o, s in zip(objects, samples)}
    for o in ("ok1", "ok2", "ok3", "flaky500", "busy429", "hang"):
        assert by_obj[o]["status"] == "ok" and by_obj[o]["raw"] == ANSWER, o
    assert by_obj["flaky500"]["attempts"] == 3 and server.attempts["flaky500"] == 3
    assert by_obj["busy429"]["attempts"] == 2 and by_obj["hang"]["attempts"] == 2
    assert by_obj["ok1"]["attempts"] == 1
    # other 4xx: recorded after one attempt, never retried
    assert by_obj["bad400"]["status"] == FAILED and pd.isna(by_obj["bad400"]["raw"])
    assert by_obj["bad400"]["reason"].startswith("http_400: ") and server.attempts["bad400"] == 1
    # 5xx every time: recorded after max_attempts with the last reason
    assert by_obj["always500"]["status"] == FAILED and by_obj["always500"]["reason"].startswith("http_503: ")
    assert "3 attempts" in by_obj["always500"]["reason"] and server.attempts["always500"] == 3
    t = summary.teachers["remote"]
    assert t.stored == 8 and t.failed_by_reason == {"http_400": 1, "http_503": 1}
    # provenance
    assert df["model_id"].eq("tiny").all() and df["backend"].eq("openai").all()
    assert (df["latency_s"] > 0).all()

def test_rerun_and_redo_failed_against_a_recovered_server(images, tmp_path):
    samples = make_samples(images, ["ok1", "always500", "ok2"])
    db = tmp_path / "a.sqlite"
    with serve_in_thread(build_openai_app(FaultServer(), "tiny")) as base:
        annotate(samples, openai_config([base + "/v1"]), db)
    healthy = FaultServer()
    with serve_in_thread(build_openai_app(healthy, "tiny")) as base:
        skipped = annotate([s.model_copy(update={"object": "ok"}) for s in samples], openai_config([base + "/v1"]), db)
        assert skipped.teachers["remote"].stored == 0 and sum(healthy.attempts.values()) == 0
        cfg = openai_config([base + "/v1"])
        cfg.redo_failed = True
        redo = annotate([s.model_copy(update={"object": "ok"}) for s in samples], cfg, db)
    assert redo.teachers["remote"].pending == 1 and sum(healthy.attempts.values()) == 1
    with AnnotationStore(db) as store:
        df = store.to_frame()
    assert len(df) == 3 and (df["status"] == "ok").all()

def test_refused_connection_is_retried_then_recorded(images, tmp_path):
    sock = bind_socket()  # bound, never listening: connections are refused
    port = sock.getsockname()[1]
    try:
        db = tmp_path / "a.sqlite"
        summary = annotate(make_samples(images, ["ok"]), openai_config([f"http://127.0.0.1:{port}/v1"], check_endpoints=False), db)
    finally:
        sock.close()
    assert summary.teachers["remote"].failed_by_reason == {"connect": 1}
    with AnnotationStore(db) as store:
        row = store.rows()[0]
    assert row["attempts"] == 3 and row["status"] == FAILED

def test_load_balanced_over_two_endpoints(images, tmp_path):
    a, b = FaultServer(), FaultServer()
    samples = make_samples(images, [f"ok{i}" for i in range(12)])
    with serve_in_thread(build_openai_app(a, "tiny")) as ua, serve_in_thread(build_openai_app(b, "tiny")) as ub:
        summary = annotate(samples, openai_config([ua + "/v1", ub + "/v1"]), tmp_path / "a.sqlite")
    assert summary.teachers["remote"].stored == 12
    assert len(a.requests) >= 2 and len(b.requests) >= 2 and len(a.requests) + len(b.requests) == 12

def test_request_body_key_schema_and_pixel_budget(images, tmp_path, monkeypatch):
    server = FaultServer()
    monkeypatch.setenv("SCENEFIT_TEST_KEY", "sk-local-123")
    with serve_in_thread(build_openai_app(server, "tiny")) as base:
        cfg = openai_config([base + "/v1"], api_key_env="SCENEFIT_TEST_KEY", temperature=0.3, seed=7, top_p=0.9,
                            extra_body={"top_k": 5}, image_format="jpeg")
        cfg.prompt_variant = "json"
        annotate(make_samples(images, ["ok"]), cfg, tmp_path / "a.sqlite")
    req = server.requests[0]
    assert req.headers["authorization"] == "Bearer sk-local-123"
    assert req.temperature == 0.3 and req.seed == 7 and req.top_p == 0.9 and req.max_tokens == 64
    assert req.body["top_k"] == 5
    rf = req.response_format
    assert rf["type"] == "json_schema" and rf["json_schema"]["schema"]["required"] == ["analysis", "summary", "final_decision"]
    (img,) = req.images
    assert img.width * img.height <= 100 * 100 and abs(img.width / img.height - 4 / 3) < 0.05
    assert req.body["messages"][0]["content"][0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    with AnnotationStore(tmp_path / "a.sqlite") as store:
        row = store.rows()[0]
    assert '"seed": 7' in row["decoding"] and '"top_p": 0.9' in row["decoding"]

def test_missing_api_key_env_is_a_clear_error(images, tmp_path, monkeypatch):
    monkeypatch.delenv("SCENEFIT_MISSING_KEY", raising=False)
    cfg = openai_config(["http://127.0.0.1:9/v1"], api_key_env="SCENEFIT_MISSING_KEY")
    with pytest.raises(RuntimeError, match="SCENEFIT_MISSING_KEY"):
        annotate(make_samples(images, ["ok"]), cfg, tmp_path / "a.sqlite")

def test_unreadable_image_is_recorded_without_a_request(tmp_path):
    server = FaultServer()
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with serve_in_thread(build_openai_app(server, "tiny")) as base:
        annotate(make_samples(bad, ["ok"]), openai_config([base + "/v1"]), tmp_path / "a.sqlite")
    with AnnotationStore(tmp_path / "a.sqlite") as store:
        row = store.rows()[0]
    assert row["status"] == FAILED and row["reason"].startswith("image: ") and not server.requests

def test_retry_policy_units():
    assert all(is_retryable_status(c) for c in (408, 429, 500, 502, 503, 504, 599))
    assert not any(is_retryable_status(c) for c in (400, 401, 403, 404, 413, 422))
    delays = [backoff_delay(3, 1.0, 30.0) for _ in range(200)]
    assert min(delays) >= 2.0 and max(delays) < 6.0 and len(set(delays)) > 1  # 4 s +- 50 % jitter
    assert max(backoff_delay(20, 1.0, 30.0) for _ in range(50)) <= 45.0
    assert backoff_delay(1, 1.0, 30.0, retry_after=7) == 7 and backoff_delay(1, 1.0, 5.0, retry_after=60) == 5
    body = chat_body("m", "q", "data:image/png;base64,AA", {"temperature": 0, "max_tokens": 9, "seed": None})
    assert "seed" not in body and "response_format" not in body
    assert body["messages"][0]["content"][0]["type"] == "image_url" and body["messages"][0]["content"][1]["text"] == "q"

def test_endpoint_check_stops_early_with_a_clear_error(images, tmp_path):
    sock = bind_socket()
    port = sock.getsockname()[1]
    try:
        with pytest.raises(RuntimeError, match=f"cannot reach http://127.0.0.1:{port}/v1"):
            annotate(make_samples(images, ["ok"]), openai_config([f"http://127.0.0.1:{port}/v1"]), tmp_path / "a.sqlite")
    finally:
        sock.close()
    server = FaultServer()
    with serve_in_thread(build_openai_app(server, "tiny")) as base:
        with pytest.raises(RuntimeError, match="serves \\['tiny'\\], not 'other'"):
            annotate(make_samples(images, ["ok"]), openai_config([base + "/v1"], model="other"), tmp_path / "a.sqlite")
    assert not server.requests
    with AnnotationStore(tmp_path / "a.sqlite") as store:
        assert store.count() == 0

