"""Every image check runs before batching, and an item that still fails inside a batch fails
alone without its batch being re-run item by item (issue 27.2).

    .venv/bin/python -m pytest tests/unit/test_image_limits.py -q

The limit checked is the image processor's own (transformers 5.24's ``smart_resize`` refuses a
long side over 200 times the short one; a one-pixel side it scales up): a test holds the check
and the real processor to the same sizes.
"""

from __future__ import annotations

import asyncio
import io
import math

import httpx
import pytest
from PIL import Image

from scenefit.core.images import MAX_ASPECT_RATIO, ImageError, load_image, load_image_bytes

#: (width, height) the processor takes, and those it refuses (ValueError: absolute aspect ratio).
TAKEN = [(1, 1), (1, 200), (200, 1), (3, 600), (640, 480), (28, 4200)]
REFUSED = [(1, 250), (300, 1), (1, 30000), (2, 401)]


def png(size) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (90, 120, 60)).save(buf, format="PNG")
    return buf.getvalue()


def test_the_check_and_the_real_processor_agree(tiny_model_dir):
    from scenefit.models.loading import load_processor

    processor = load_processor(str(tiny_model_dir))
    text = "<|vision_start|><|image_pad|><|vision_end|>x"
    for size in TAKEN:
        load_image_bytes(png(size))
        processor(text=[text], images=[Image.new("RGB", size)], return_tensors="pt")
    for size in REFUSED:
        with pytest.raises(ImageError) as caught:
            load_image_bytes(png(size))
        assert caught.value.code == "bad_dimensions" and f"{MAX_ASPECT_RATIO}:1" in caught.value.message
        with pytest.raises(ValueError, match="aspect ratio"):
            processor(text=[text], images=[Image.new("RGB", size)], return_tensors="pt")


def test_every_way_in_refuses_an_extreme_aspect_ratio_before_decoding(tmp_path):
    from scenefit.predict.items import ItemError, PredictItem, prepare_image

    path = tmp_path / "strip.png"
    path.write_bytes(png((1, 250)))
    with pytest.raises(ImageError, match="bad_dimensions"):
        load_image(path)  # ingest and predict --manifest read files this way
    with pytest.raises(ItemError) as caught:  # the Python API with a PIL image
        prepare_image(PredictItem(Image.new("RGB", (300, 1)), "dog", None, boxed=True))
    assert caught.value.code == "bad_dimensions"


def test_extreme_images_are_refused_before_they_reach_a_batch():
    """Issue 27.2: 48 good + 12 extreme requests made 64 predictor calls (each failing batch
    re-run item by item); now the 12 are 422 bad_dimensions and never reach the predictor."""
    from scenefit.serve.app import create_app
    from scenefit.serve.config import ServeConfig
    from scenefit.serve.openai_server import serve_in_thread
    from support.serve import FakePredictor, b64

    fake = FakePredictor()
    with serve_in_thread(create_app(fake, ServeConfig(max_wait_ms=50, max_batch=16))) as base:

        async def main():
            async with httpx.AsyncClient(base_url=base, timeout=120) as c:
                sizes = [(64, 48)] * 48 + [(1, 250), (300, 1), (1, 30000), (2, 600)] * 3
                # the good ones name their box (an image with no box must show a red one: no_red_box)
                return await asyncio.gather(*(c.post("/v1/classify", json={
                    "image": b64(png(s)), "object": "dog", **({"box": [4, 4, 40, 40]} if s == (64, 48) else {})})
                    for s in sizes))

        answers = asyncio.run(main())
    assert [r.status_code for r in answers] == [200] * 48 + [422] * 12
    assert {r.json()["error"]["code"] for r in answers[48:]} == {"bad_dimensions"}
    assert sum(fake.calls) == 48 and all(im.size == (64, 48) for im, *_ in fake.items)


def test_a_failing_item_is_found_by_halving_its_batch():
    from scenefit.serve.batching import MicroBatcher

    calls = []

    def run_batch(items, _options):
        calls.append(len(items))
        if "bad" in items:
            raise RuntimeError("the model failed on 'bad'")
        return [f"ok:{i}" for i in items]

    batcher = MicroBatcher(run_batch, max_batch=16)
    items = [f"i{k}" for k in range(15)] + ["bad"]
    outcomes = batcher._call(items, None)
    assert [ok for ok, _ in outcomes] == [True] * 15 + [False]
    assert str(outcomes[-1][1]) == "the model failed on 'bad'"
    assert len(calls) <= 1 + 2 * math.ceil(math.log2(16)) and sum(calls) < 2 * 16 + 16, calls  # was 17 calls
    assert batcher.stats.failed_items == 1


def test_the_predictor_judges_a_failing_batch_apart_and_keeps_the_others():
    """Predictor.predict: an item the model fails on inside its batch becomes an error row
    (prediction_failed); its neighbours are judged, in about 2 log2(n) calls."""
    from scenefit.predict.config import PredictConfig
    from scenefit.predict.predictor import Predictor

    calls = []

    def judge(images, objects, crits, explain, use_adapters):
        calls.append(list(objects))
        if "boom" in objects:
            raise RuntimeError("shape mismatch inside the model")
        return [{"judged": o} for o in objects]

    pred = Predictor.__new__(Predictor)
    pred.config = PredictConfig(batch_size=16)
    pred.box_width, pred.box_color = None, (255, 0, 0)  # what __init__ resolves from the settings and the students
    pred.criteria = ()
    pred.generated_tokens = []
    pred._criteria = lambda criteria: []
    pred._judge = judge
    items = [(Image.new("RGB", (40, 30)), "boom" if k == 5 else f"cat{k}", (1, 1, 20, 20)) for k in range(16)]
    results = pred.predict(items)
    assert [r.error["code"] if r.error else "ok" for r in results] == ["ok"] * 5 + ["prediction_failed"] + ["ok"] * 10
    assert "shape mismatch" in results[5].error["message"] and "item 5" in results[5].error["message"]
    assert len(calls) <= 1 + 2 * 4, calls
