"""The student server's pixel cap counts what decoding costs: a phone-size JPEG, which the server
decodes scaled down (draft mode), passes the default settings and even a cap below its declared
size; a PNG decompression bomb is still refused before any pixel is decoded; a 413 names the
setting (issue 26 item 6).

    .venv/bin/python -m pytest tests/unit/test_serve_pixel_cap.py -q
"""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")

from scenefit.serve.app import create_app  # noqa: E402
from scenefit.serve.config import ServeConfig  # noqa: E402
from scenefit.serve.openai_server import serve_in_thread  # noqa: E402
from support.serve import FakePredictor, assert_error, b64, bomb_png  # noqa: E402

SIZE = (4000, 3000)  # 12 megapixels, a phone camera's picture
BOX = [1000, 1000, 2000, 2000]


def phone_jpeg(noise: float) -> bytes:
    """A 4000 x 3000 JPEG at quality 85 that compresses like a photograph: a colour gradient with
    Gaussian sensor-like noise (sigma 6: ~1.6 MB, the size of a phone's 12 MP JPEG)."""
    w, h = SIZE
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    pixels = np.stack([x * 255 / w, y * 255 / h, (x + y) * 255 / (w + h)], axis=-1)
    if noise:
        pixels += np.random.default_rng(0).normal(0, noise, pixels.shape).astype(np.float32)
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    return {"gradient": phone_jpeg(0), "noisy": phone_jpeg(6)}


def sized(max_pixels: int) -> FakePredictor:
    """A predictor whose processor takes at most ``max_pixels`` (the server decodes to fit it)."""
    predictor = FakePredictor()
    predictor.processor = type("P", (), {"image_processor": type("I", (), {
        "size": {"shortest_edge": 3136, "longest_edge": max_pixels}})})
    return predictor


def classify(predictor, cfg: ServeConfig, image: bytes, box=BOX) -> tuple[httpx.Response, dict]:
    with serve_in_thread(create_app(predictor, cfg)) as base, httpx.Client(base_url=base, timeout=300) as c:
        r = c.post("/v1/classify", json={"image": b64(image), "object": "dog", "box": box})
        return r, c.get("/v1/metrics").json()["decoding"]


@pytest.mark.parametrize("kind", ["gradient", "noisy"])
def test_a_12_megapixel_jpeg_passes_the_default_settings(photos, kind):
    from scenefit.cli.common import load_config
    from scenefit.core.config import find_config

    demo = load_config("serve", find_config("demo"), None)
    for cfg in (ServeConfig(), demo):  # the defaults, and the packaged demo config's serve section
        predictor = sized(12544)  # the demo's tiny model: 112 x 112
        r, decoding = classify(predictor, cfg, photos[kind])
        assert r.status_code == 200, r.text
        image, _, box, _ = predictor.items[-1]
        assert image.size[0] * image.size[1] <= 12544 and image.info["original_size"] == SIZE
        assert decoding["pixels_in_flight_peak"] == 500 * 375  # decoded at 1/8 scale, never its 12 M pixels


def test_the_cap_counts_the_pixels_decoded_not_the_declared_size(photos):
    cfg = ServeConfig(max_image_pixels=1_000_000)  # a twelfth of the JPEG's declared size
    r, decoding = classify(sized(12544), cfg, photos["noisy"])
    assert r.status_code == 200, r.text
    assert decoding["pixels_in_flight_peak"] == 500 * 375
    # a model that takes the whole picture: draft mode cannot scale it down, it decodes whole -> 413
    r, decoding = classify(sized(12_845_056), cfg, photos["noisy"])
    err = assert_error(r, 413, "too_large", "4000x3000 = 12,000,000 pixels", "serve.max_image_pixels = 1,000,000",
                       "--max-image-pixels")
    assert decoding["pixels_in_flight_peak"] == 0
    assert "decoded scaled down" not in err["message"]
    # a model that takes 2 M: decoded at 1/2 scale (2000 x 1500 = 3 M), over the 1 M cap; the 413 says both sizes
    r, _ = classify(sized(2_000_000), cfg, photos["noisy"])
    assert_error(r, 413, "too_large", "4000x3000 = 12,000,000 pixels, decoded scaled down to 2000x1500 = 3,000,000",
                 "serve.max_image_pixels = 1,000,000")


@pytest.mark.parametrize("declared, words", [
    ((8000, 8000), "8000x8000 = 64,000,000 pixels in a"),  # under Pillow's own limit: the cap refuses it
    ((30_000, 20_000), "600000000 pixels"),  # over Pillow's limit: refused while reading the header
])
def test_a_png_bomb_is_refused_before_decoding_with_the_default_settings(declared, words):
    r, decoding = classify(sized(12544), ServeConfig(), bomb_png(*declared), box=[0, 0, 10, 10])
    assert_error(r, 413, "bomb", "decompression bomb", words)
    assert decoding["pixels_in_flight_peak"] == 0  # not one pixel decoded
