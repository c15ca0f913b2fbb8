"""Defensive image loading and red-box drawing.

    .venv/bin/python -m pytest tests/unit/test_images.py -q

Bad files are built byte by byte in tmp_path; :func:`write_bad_images` is shared with
tests/unit/test_ingest.py, which runs the same kinds through a whole batch.
"""

from __future__ import annotations

import base64
import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from scenefit.core.images import (
    REASON_CODES,
    ImageError,
    clip_box,
    draw_box,
    load_image,
    load_image_bytes,
    parse_box,
    png_base64,
)
from support.images import noise_image, write_bad_images  # noqa: F401

RED = (255, 0, 0)

@pytest.fixture(scope="module")
def bad_images(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    return write_bad_images(tmp_path_factory.mktemp("bad"))

@pytest.mark.parametrize("fmt,suffix", [("PNG", ".png"), ("JPEG", ".jpg"), ("WEBP", ".webp"), ("BMP", ".bmp")])
def test_allowed_formats_load_as_rgb(tmp_path, fmt, suffix):
    path = tmp_path / f"img{suffix}"
    noise_image(50, 30).save(path, format=fmt)
    im = load_image(path)
    assert im.mode == "RGB" and im.size == (50, 30)

def test_format_is_read_from_bytes_not_suffix(tmp_path):
    path = tmp_path / "really_a_png.jpg"
    src = noise_image(20, 10)
    src.save(path, format="PNG")
    assert np.array_equal(np.asarray(load_image(path)), np.asarray(src))  # lossless: it was read as PNG
    with pytest.raises(ImageError) as e:
        load_image(path, allowed_formats=["JPEG"])
    assert e.value.code == "format_not_allowed"

@pytest.mark.parametrize(
    "kind",
    ["missing", "empty", "text", "gif", "gif_named_png", "bomb", "huge_bomb", "strip",
     "truncated_png", "truncated_jpg", "corrupt"],
)
def test_each_bad_kind_has_its_reason_code(bad_images, kind):
    path, code = bad_images[kind]
    with pytest.raises(ImageError) as e:
        load_image(path)
    assert e.value.code == code, str(e.value)
    assert code in REASON_CODES
    assert str(path) in e.value.message  # the message names the file

@pytest.mark.parametrize(
    "kind",
    ["empty", "text", "gif", "gif_named_png", "bomb", "huge_bomb", "strip", "truncated_png", "truncated_jpg", "corrupt"],
)
def test_bytes_in_memory_get_the_same_verdict_as_files(bad_images, kind, tmp_path, monkeypatch):
    """Uploads are checked in memory, never written to disk, with the same reason codes."""
    path, code = bad_images[kind]
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "no-temp-dir"))  # no file may be made
    with pytest.raises(ImageError) as e:
        load_image_bytes(path.read_bytes(), name="upload #3")
    assert e.value.code == code, str(e.value)
    assert e.value.message.startswith("upload #3: ")
    good = io.BytesIO()
    noise_image(40, 30).save(good, format="PNG")
    assert np.array_equal(np.asarray(load_image_bytes(good.getvalue())), np.asarray(noise_image(40, 30)))

def test_size_is_refused_before_any_decoding(bad_images, tmp_path, monkeypatch):
    big = tmp_path / "big.png"
    noise_image(100, 100).save(big)

    def no_decoding(self):
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageError) as e:
        load_image(bad_images["bomb"][0])
    assert e.value.code == "bomb"
    with pytest.raises(ImageError) as e:  # an honest file, merely over the cap
        load_image(big, max_pixels=5_000)
    assert e.value.code == "too_large"

def test_truncated_images_are_not_loaded_leniently():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False

def test_exif_orientation_is_applied(tmp_path):
    # stored 40 wide x 20 high: left half red, right half blue; orientation 6 = rotate 90° clockwise
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20] = RED
    arr[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.fromarray(arr).save(path, format="JPEG", quality=95, exif=exif.tobytes())
    im = load_image(path)
    assert im.size == (20, 40)  # upright: taller than wide
    top, bottom = np.asarray(im)[5, 10], np.asarray(im)[35, 10]
    assert top[0] > 200 and top[2] < 60  # the stored left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60

def test_modes_convert_to_rgb_with_alpha_on_white(tmp_path):
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 255, 0, 255))
    rgba.save(tmp_path / "alpha.png")
    im = load_image(tmp_path / "alpha.png")
    assert im.mode == "RGB"
    assert im.getpixel((5, 5)) == (255, 255, 255)  # transparent -> white, not black
    assert im.getpixel((0, 0)) == (0, 255, 0)

    Image.new("L", (8, 8), 77).save(tmp_path / "grey.png")
    assert load_image(tmp_path / "grey.png").getpixel((1, 1)) == (77, 77, 77)

    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([10, 20, 30] + [0] * 765)
    pal.save(tmp_path / "pal.png")
    assert load_image(tmp_path / "pal.png").getpixel((1, 1)) == (10, 20, 30)

    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    r, g, b = load_image(tmp_path / "cmyk.jpg").getpixel((4, 4))
    assert r > 200 and g < 60 and b < 60

    deep = Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16))
    deep.save(tmp_path / "deep.png")
    assert load_image(tmp_path / "deep.png").getpixel((1, 1)) == (255, 255, 255)

def _red_mask(im: Image.Image) -> np.ndarray:
    a = np.asarray(im).astype(int)
    return (a[..., 0] == 255) & (a[..., 1] == 0) & (a[..., 2] == 0)

def test_draw_box_marks_edges_only():
    base = Image.new("RGB", (100, 80), (128, 128, 128))
    out = draw_box(base, (10, 20, 60, 70), width=3)
    assert base.getpixel((10, 20)) == (128, 128, 128)  # a new image; the input is untouched
    red = _red_mask(out)
    ring = np.zeros_like(red)
    ring[20:70, 10:60] = True
    ring[23:67, 13:57] = False  # the 3-pixel band just inside the box edges
    assert red[ring].all()
    assert not red[~ring].any()  # nothing in the interior, nothing outside
    assert red.sum() == ring.sum()

def test_draw_box_clips_and_refuses_outside():
    base = Image.new("RGB", (50, 40), (0, 0, 0))
    out = draw_box(base, (30, 20, 90, 95), width=2)
    red = _red_mask(out)
    assert red[20, 30:50].all() and red[20:40, 30].all()  # drawn up to the image edges
    assert red[38:40, 30:50].all() and red[20:40, 48:50].all()  # clipped sides land on the border
    assert clip_box((30, 20, 90, 95), (50, 40)) == (30, 20, 50, 40)
    with pytest.raises(ImageError) as e:
        draw_box(base, (60, 10, 80, 30))
    assert e.value.code == "box_outside"

@pytest.mark.parametrize("written", ["10,20,30,40", " 10; 20; 30; 40 ", "[10, 20, 30, 40]", "(10 20 30 40)",
                                     [10, 20, 30, 40], (10.0, 20, 30, 40), np.array([10, 20, 30, 40])])
def test_one_box_reader_for_every_spelling(written):
    # manifest cells, --box, request fields and predict items all read boxes with this one function
    assert parse_box(written) == (10.0, 20.0, 30.0, 40.0)

@pytest.mark.parametrize("written", ["1,2,3", "a,b,c,d", [1, 2, 3, 4, 5], {"x0": 1}, 7, ["1", None, "3", "4"]])
def test_box_that_is_not_four_numbers_is_bad_box(written):
    with pytest.raises(ImageError) as e:
        parse_box(written)
    assert e.value.code == "bad_box" and "box" in e.value.message

def test_blank_box_is_no_box_and_nan_is_left_to_the_box_rule():
    assert parse_box(None) is None and parse_box("  ") is None
    # a nan is four numbers to the reader; the box rule refuses it where the item is judged
    box = parse_box("nan,0,10,10")
    assert box is not None and box[1:] == (0.0, 10.0, 10.0)
    from scenefit.core.images import check_box

    with pytest.raises(ImageError, match="not a finite number"):
        check_box(box, (64, 48))

def test_png_base64_round_trips():
    im = noise_image(12, 7)
    back = Image.open(io.BytesIO(base64.b64decode(png_base64(im))))
    assert back.format == "PNG" and np.array_equal(np.asarray(back.convert("RGB")), np.asarray(im))

def test_one_box_width_rule_grows_with_the_image():
    from scenefit.core.images import box_width_for

    assert box_width_for((640, 480)) == 3 and box_width_for((112, 112)) == 2 and box_width_for((1920, 1080)) == 7
    assert box_width_for((1920, 1080), 4) == 4  # a configured width wins
    big = draw_box(Image.new("RGB", (1920, 1080), (0, 0, 0)), (100, 100, 400, 400))
    px = np.asarray(big)
    assert (px[100:107, 200] == (255, 0, 0)).all() and (px[107, 200] == 0).all()

def test_ingest_teachers_and_predict_draw_the_same_box(tmp_path):
    # the red box the teachers judge, the one ingest writes for the students and the one predict
    # draws for a new image are one drawing (they used to be 2, 3 and 3 pixels wide here)
    from scenefit.core.records import Sample
    from scenefit.data.ingest import IngestConfig, ingest_sample
    from scenefit.predict.config import PredictConfig
    from scenefit.predict.items import PredictItem, prepare_image
    from scenefit.teachers.base import teacher_image

    path = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(path)
    sample = Sample(id="s", image=str(path), object="cow", box=(40, 30, 200, 150))
    out = tmp_path / "out"
    out.mkdir()
    ingested, _ = ingest_sample(sample, out, IngestConfig())
    written = np.asarray(load_image(ingested.image))
    seen_by_teacher = np.asarray(teacher_image(sample))
    predicted = np.asarray(prepare_image(PredictItem(str(path), "cow", sample.box), PredictConfig().box_width))
    assert (written == seen_by_teacher).all() and (written == predicted).all()

