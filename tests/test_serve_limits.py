"""Hardening of the student server (issue 21): slow bodies, clients that leave, decoded pixels,
and the small refusals — each as an attacker or an unlucky client would meet it.

    .venv/bin/python -m pytest tests/test_serve_limits.py -q
"""

from __future__ import annotations

import logging
import socket

import httpx
import pytest

pytest.importorskip("fastapi")

from scenefit.serve.app import create_app  # noqa: E402
from scenefit.serve.config import ServeConfig  # noqa: E402
from scenefit.serve.openai_server import serve_in_thread  # noqa: E402
from test_serve import FakePredictor, assert_error, b64, png_bytes  # noqa: E402


def open_slow_body(base: str, declared: int = 10_000) -> socket.socket:
    """A connection that sends its headers and a first few body bytes, then nothing more."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=60)
    sock.sendall(f"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {declared}\r\n\r\n{{\"im".encode())
    return sock


def read_status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        more = sock.recv(4096)
        if not more:
            break
        data += more
    return int(data.split()[1]) if data else 0


def test_slow_bodies_hold_no_slot_and_time_out_with_408():
    cfg = ServeConfig(max_concurrency=2, max_batch=2, body_timeout_s=3)
    with serve_in_thread(create_app(FakePredictor(), cfg)) as base:
        slow = [open_slow_body(base) for _ in range(4)]  # twice max_concurrency, all trickling
        try:
            with httpx.Client(base_url=base, timeout=60) as c:
                for _ in range(3):  # normal requests are admitted while the slow bodies wait
                    r = c.post("/v1/classify", json={"image": b64(png_bytes()), "object": "dog"})
                    assert r.status_code == 200, r.text
                # the slow senders get 408 once body_timeout_s is up (waited for, not timed)
                assert [read_status(s) for s in slow] == [408] * 4
                metrics = c.get("/v1/metrics").json()
        finally:
            for s in slow:
                s.close()
    assert metrics["rejected"]["body_timeout"] == 4 and "too_many_requests" not in metrics["rejected"]
    assert metrics["in_flight"] == 0


def test_a_client_leaving_mid_body_is_one_log_line(caplog):
    server_log = logging.getLogger("uvicorn.error")  # uvicorn's loggers do not propagate to the root
    with serve_in_thread(create_app(FakePredictor(), ServeConfig())) as base:
        caplog.set_level(logging.INFO, logger="uvicorn.error")
        server_log.addHandler(caplog.handler)
        sock = open_slow_body(base)
        sock.close()  # gone before its body arrived
        with httpx.Client(base_url=base, timeout=60) as c:  # the server is fine afterwards
            r = c.post("/v1/classify", json={"image": b64(png_bytes()), "object": "dog"})
            assert r.status_code == 200
            for _ in range(2000):  # wait (generously) for the server to notice the disconnect
                if any("left while sending" in rec.getMessage() for rec in caplog.records):
                    break
                c.get("/health")
    server_log.removeHandler(caplog.handler)
    records = [rec for rec in caplog.records if rec.name.startswith("uvicorn")]
    assert [rec.getMessage() for rec in records if "left" in rec.getMessage()] == \
        ["POST /v1/classify: the client left while sending its body"]
    assert not any(rec.exc_info for rec in records)  # no traceback
