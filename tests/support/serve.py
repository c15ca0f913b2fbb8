"""Test helpers first written for tests/unit/test_serve.py, shared by other tests."""

from __future__ import annotations

import base64
import io
import struct
import threading
import time
import zlib

import httpx
from PIL import Image

TOKEN = "s3cret-token"


class FakePredictor:
    """Deterministic verdicts from the request itself (so JSON and multipart can be compared):
    location is Out-of-context when the box centre is in the image's top half. Records the
    size of every predict() call; sleeps ``delay`` per call; fails on the object 'boom'."""

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.calls: list[int] = []
        self.items: list[tuple] = []
        self.lock = threading.Lock()

    def predict(self, items, explain=False, criteria=None):
        with self.lock:
            self.calls.append(len(items))
            self.items.extend(items)
        if self.delay:
            time.sleep(self.delay)
        if any(obj == "boom" for _, obj, _, _ in items):
            raise RuntimeError("fake model failure on 'boom'")
        out = []
        for image, obj, box, boxed in items:
            w, h = image.size
            high = box is not None and (box[1] + box[3]) / 2 < h / 2
            verdicts = {
                "location": "Out-of-context" if high else "In-context",
                "size": "In-context",
                "co_occurrence": "In-context",
            }
            out.append({
                "criteria": {
                    c: {"label": v, "probability": 0.9, "analysis": f"{c} of {obj} in {w}x{h}" if explain else None}
                    for c, v in verdicts.items()
                },
                "final": "Out-of-context" if "Out-of-context" in verdicts.values() else "In-context",
            })
        return out


def png_bytes(size=(64, 48), color=(40, 160, 60), boxed: bool = True) -> bytes:
    """A plain image; ``boxed`` draws a red box outline on it, as an image sent without ``box``
    must show (the server answers 422 no_red_box otherwise)."""
    from scenefit.core.images import draw_box

    image = Image.new("RGB", size, color)
    if boxed:
        w, h = size
        image = draw_box(image, (w // 8, h // 8, w - w // 8, h - h // 8), width=2)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def auth(token=TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(r: httpx.Response, status: int, code: str, *words: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert err["code"] == code, err
    for w in words:
        assert w.lower() in err["message"].lower(), (w, err["message"])
    return err



def bomb_png(width=100_000, height=100_000) -> bytes:
    """A real 1x1 PNG whose header is rewritten to declare width x height (valid CRC): a few
    dozen bytes that would decode to billions of pixels."""
    raw = bytearray(png_bytes((1, 1)))
    ihdr = struct.pack(">II", width, height) + bytes(raw[24:29])
    raw[16:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(raw)
