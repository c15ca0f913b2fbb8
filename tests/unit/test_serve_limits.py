"""Hardening of the student server (issue 21): slow bodies, clients that leave, decoded pixels,
and the small refusals — each as an attacker or an unlucky client would meet it.

    .venv/bin/python -m pytest tests/unit/test_serve_limits.py -q
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import struct
import time
import zlib

import httpx
import pytest
from PIL import Image

pytest.importorskip("fastapi")

from scenefit.serve.app import create_app  # noqa: E402
from scenefit.serve.config import ServeConfig  # noqa: E402
from scenefit.serve.openai_server import serve_in_thread  # noqa: E402
from support.serve import FakePredictor, assert_error, b64, png_bytes


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
            deadline = time.monotonic() + 120  # wait (generously) for the server to notice the disconnect
            while not any("left while sending" in rec.getMessage() for rec in caplog.records):
                if time.monotonic() > deadline:
                    break
                c.get("/health")
    server_log.removeHandler(caplog.handler)
    records = [rec for rec in caplog.records if rec.name.startswith("uvicorn")]
    assert [rec.getMessage() for rec in records if "left" in rec.getMessage()] == \
        ["POST /v1/classify: the client left while sending its body"]
    assert not any(rec.exc_info for rec in records)  # no traceback


# --------------------------------------------------------------------------- decoded pixels (21.4)


def encoded(size, fmt="PNG", color=(40, 160, 60), **save) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt, **save)
    return buf.getvalue()


def test_large_uploads_are_scaled_down_while_decoding_and_the_box_follows():
    fake = FakePredictor()
    cfg = ServeConfig(max_image_pixels=25_000_000, decode_max_pixels=10_000)
    with serve_in_thread(create_app(fake, cfg)) as base, httpx.Client(base_url=base, timeout=120) as c:
        big_png = encoded((5000, 5000))  # ~70 kB, exactly the --demo-sized attack of issue 21
        r = c.post("/v1/classify", json={"image": b64(big_png), "object": "dog", "box": [1000, 1000, 3000, 2000]})
        assert r.status_code == 200, r.text
        image, _, box, _ = fake.items[-1]
        assert image.size == (100, 100) and box == (20, 20, 60, 40)  # 1/50 of the original, box included
        assert c.get("/v1/metrics").json()["decoding"]["pixels_in_flight_peak"] == 25_000_000  # PNG: decoded whole
    with serve_in_thread(create_app(fake, cfg)) as base, httpx.Client(base_url=base, timeout=120) as c:
        jpeg = encoded((4000, 3000), "JPEG", quality=80)
        r = c.post("/v1/classify", json={"image": b64(jpeg), "object": "dog", "box": [0, 0, 4000, 1500]})
        assert r.status_code == 200, r.text
        image, _, box, _ = fake.items[-1]
        assert image.size[0] * image.size[1] <= 10_000 and box == (0, 0, image.size[0], image.size[1] // 2)
        metrics = c.get("/v1/metrics").json()["decoding"]
    # The JPEG was decoded in draft mode (1/8 scale): 500 x 375 pixels held, never its 12 M.
    assert metrics["fit_pixels"] == 10_000 and metrics["pixels_in_flight_peak"] == 500 * 375


def test_a_scaled_down_photo_keeps_its_upright_original_size():
    """Boxes are given on the upright image: a phone JPEG stored sideways (EXIF orientation 6)
    reports its upright size, not the stored one, after being scaled down."""
    from scenefit.core.images import load_image_bytes

    exif = Image.Exif()
    exif[0x0112] = 6  # stored 400 x 200, shown rotated by 90 degrees
    jpeg = encoded((400, 200), "JPEG", exif=exif.tobytes())
    out = load_image_bytes(jpeg, fit_pixels=2000)
    assert out.info["original_size"] == (200, 400) and out.size[0] < out.size[1] and out.size[0] * out.size[1] <= 2000


def test_decoded_pixels_in_flight_are_bounded():
    fake = FakePredictor()
    cfg = ServeConfig(max_image_pixels=10_000_000, decode_max_pixels=10_000, decode_pixels_in_flight=10_000_000)
    with serve_in_thread(create_app(fake, cfg)) as base:

        async def main():
            async with httpx.AsyncClient(base_url=base, timeout=300) as c:
                body = {"image": b64(encoded((3000, 3000))), "object": "dog", "box": [10, 10, 2000, 2000]}
                return await asyncio.gather(*[c.post("/v1/classify", json=body) for _ in range(6)])

        responses = asyncio.run(main())
        metrics = httpx.get(base + "/v1/metrics", timeout=60).json()["decoding"]
    assert [r.status_code for r in responses] == [200] * 6
    # six 9 M-pixel images sent at once, never more than one 9 M decode at a time
    assert metrics["pixels_in_flight_peak"] == 9_000_000


def test_the_models_max_pixels_is_the_default_fit():
    from scenefit.serve.app import model_max_pixels

    class WithProcessor(FakePredictor):
        class processor:  # noqa: N801 - mimics Predictor.processor.image_processor.size
            class image_processor:  # noqa: N801
                size = {"shortest_edge": 3136, "longest_edge": 12544}

    assert model_max_pixels(WithProcessor()) == 12544 and model_max_pixels(FakePredictor()) is None
    with serve_in_thread(create_app(WithProcessor(), ServeConfig())) as base:
        assert httpx.get(base + "/v1/metrics", timeout=60).json()["decoding"]["fit_pixels"] == 12544


def test_serve_demo_takes_the_demo_configs_limits(tmp_path, monkeypatch):
    from scenefit.cli.common import load_config
    from scenefit.cli.serve import demo_config
    from scenefit.core.config import find_config

    monkeypatch.setenv("DEMO_DIR", str(tmp_path / "no-demo-run-here"))
    path = demo_config()  # no run.yaml recorded by `scenefit run`: the packaged demo config
    assert path.resolve() == find_config("demo").resolve()
    assert load_config("serve", path, None).max_body_bytes == 8_388_608  # not the 16 MiB default


# --------------------------------------------------------------------------- smaller refusals (21.8)


def zero_size_png() -> bytes:
    raw = bytearray(encoded((1, 1)))
    ihdr = struct.pack(">II", 0, 0) + bytes(raw[24:29])
    raw[16:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(raw)


@pytest.fixture(scope="module")
def client():
    fake = FakePredictor()
    with serve_in_thread(create_app(fake, ServeConfig())) as base, httpx.Client(base_url=base, timeout=60) as c:
        c.fake = fake
        yield c


def test_zero_by_zero_png_is_bad_dimensions(client):
    r = client.post("/v1/classify", json={"image": b64(zero_size_png()), "object": "dog"})
    assert_error(r, 422, "bad_dimensions", "0x0")


def test_mpo_from_a_phone_is_read_as_its_first_frame(client):
    buf = io.BytesIO()
    Image.new("RGB", (60, 40), (250, 10, 10)).save(buf, format="MPO", save_all=True,
                                                   append_images=[Image.new("RGB", (60, 40), (10, 10, 250))])
    assert Image.open(io.BytesIO(buf.getvalue())).format == "MPO"
    r = client.post("/v1/classify", json={"image": b64(buf.getvalue()), "object": "dog", "box": [5, 5, 20, 20]})
    assert r.status_code == 200, r.text
    image = client.fake.items[-1][0]
    assert image.size == (60, 40) and image.getpixel((30, 20))[0] > 200  # the red first frame


def test_two_image_parts_are_refused(client):
    r = client.post("/v1/classify", files=[("image", ("a.png", png_bytes(), "image/png")),
                                           ("image", ("b.png", png_bytes((10, 10)), "image/png"))],
                    data={"object": "dog"})
    assert_error(r, 422, "bad_multipart", "'image'", "more than once")


def test_a_content_length_that_is_no_number_gets_the_json_error_shape(client):
    host, port = str(client.base_url).removeprefix("http://").rstrip("/").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: abc\r\n\r\n{}")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split()[1] == b"400" and b"application/json" in head.lower()
    assert json.loads(body)["error"]["code"] == "bad_http_request"


@pytest.mark.parametrize("argv, words", [
    (["serve", "--students", "x", "--host", "0.0.0.0"], "--insecure-no-auth"),
    (["serve", "--openai", "--model", "x", "--host", "0.0.0.0"], "--insecure-no-auth"),
    (["serve-teacher", "--model", "x", "--host", "0.0.0.0"], "--insecure-no-auth"),
])
def test_a_public_host_without_a_token_is_refused(argv, words, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from scenefit.cli import app

    monkeypatch.delenv("SCENEFIT_API_TOKEN", raising=False)
    (tmp_path / "x").mkdir()
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, argv)
    assert result.exit_code != 0
    assert words in " ".join(result.output.split()), result.output


def test_insecure_no_auth_lets_a_public_host_start_with_a_warning(tmp_path, monkeypatch):
    """docs/reference.md, "Serving the students": another address than loopback without a token is allowed
    when --insecure-no-auth says it is meant, and a warning says so (for both servers)."""
    from typer.testing import CliRunner

    import scenefit.serve.app as serve_app
    import scenefit.serve.openai_server as openai_server
    from scenefit.cli import app

    monkeypatch.delenv("SCENEFIT_API_TOKEN", raising=False)
    (tmp_path / "students").mkdir()
    (tmp_path / "model").mkdir()
    served = []
    monkeypatch.setattr(serve_app, "serve_students", lambda folder, pcfg, cfg, token, on_ready=None:
                        served.append(("students", cfg.host, token)))
    monkeypatch.setattr(openai_server, "teacher_app", lambda *a, **kw: object())
    monkeypatch.setattr(openai_server, "run_app", lambda api, host, port, on_ready=None, **kw: served.append(("teacher", host, None)))
    runner = CliRunner()
    r = runner.invoke(app, ["serve", "--students", str(tmp_path / "students"), "--host", "0.0.0.0", "--insecure-no-auth"])
    assert r.exit_code == 0, r.output
    assert "listening on 0.0.0.0 without an API token" in " ".join(r.output.split())
    r = runner.invoke(app, ["serve-teacher", "--model", str(tmp_path / "model"), "--host", "0.0.0.0", "--insecure-no-auth"])
    assert r.exit_code == 0, r.output
    assert "listening on 0.0.0.0; the teacher server has no authentication" in " ".join(r.output.split())
    assert served == [("students", "0.0.0.0", None), ("teacher", "0.0.0.0", None)]


def test_uploads_are_decoded_on_decode_workers_threads(monkeypatch):
    """docs/reference.md, "Serving the students": images are decoded on `decode_workers` threads of the
    server's own, never more at once, whatever the number of requests."""
    import threading

    import scenefit.core.images as images

    real = images.load_image_bytes
    lock, both_in = threading.Lock(), threading.Event()
    state = {"active": 0, "peak": 0, "threads": set()}

    def decode(raw, *a, **kw):
        with lock:
            state["active"] += 1
            state["peak"] = max(state["peak"], state["active"])
            state["threads"].add(threading.current_thread().name)
            if state["active"] == 2:
                both_in.set()
        both_in.wait(60)  # hold until two decode at once (a single worker would wait here alone)
        try:
            return real(raw, *a, **kw)
        finally:
            with lock:
                state["active"] -= 1

    monkeypatch.setattr(images, "load_image_bytes", decode)
    app = create_app(FakePredictor(), ServeConfig(decode_workers=2, max_concurrency=16, max_batch=16), token=None)
    results = []
    with serve_in_thread(app) as base:
        def post():
            r = httpx.post(base + "/v1/classify", timeout=120,
                           json={"image": b64(png_bytes()), "object": "dog", "box": [1, 1, 20, 20]})
            results.append(r.status_code)

        clients = [threading.Thread(target=post) for _ in range(6)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(180)
    assert results == [200] * 6
    assert state["peak"] == 2 and len(state["threads"]) == 2
    assert all(name.startswith("scenefit-decode") for name in state["threads"])


@pytest.mark.parametrize("box, result", [
    ([-10, -10, 50, 50], "bad_box"),          # serve used to clip this; the manifest refuses it
    ([10.2, 10.2, 10.4, 10.4], "bad_box"),    # inside the image, but under one pixel
    ([50, 3, 70, 50], (50, 3, 64, 48)),       # a small overshoot past the right/bottom edge: clipped
    ([50, 3, 90, 60], "box_outside"),         # 28 % on the image: mostly outside, refused
    ([70, 10, 90, 40], "box_outside"),
    ([float("nan"), 0, 10, 10], "bad_box"),   # not a number
])
def test_one_box_rule_for_ingest_and_serve(box, result):
    from scenefit.core.images import ImageError, check_box
    from scenefit.serve.security import ApiError, place_box

    try:
        got = check_box(box, (64, 48))
    except ImageError as e:
        got = e.code
    try:
        served = place_box(tuple(box), (64, 48))
    except ApiError as e:
        served = e.code
    assert got == served == result
