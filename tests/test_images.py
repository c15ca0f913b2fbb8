"""Defensive image loading and red-box drawing.

    .venv/bin/python -m pytest tests/test_images.py -q

Bad files are built byte by byte in tmp_path; :func:`write_bad_images` is shared with
tests/test_ingest.py, which runs the same kinds through a whole batch.
"""

from __future__ import annotations

import base64
import io
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from scenefit.core.images import REASON_CODES, ImageError, clip_box, draw_box, load_image, load_image_bytes, png_base64

RED = (255, 0, 0)


def noise_image(w: int = 80, h: int = 60, seed: int = 0) -> Image.Image:
    """Random pixels: compress badly, so a cut file really lacks image data."""
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG whose header declares width x height (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def write_bad_images(folder: Path) -> dict[str, tuple[Path, str]]:
    """One file per bad kind: name -> (path, expected reason code)."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, tuple[Path, str]] = {}
    out["missing"] = (folder / "missing.png", "not_found")
    (folder / "empty.png").write_bytes(b"")
    out["empty"] = (folder / "empty.png", "empty")
    (folder / "text.png").write_text("this is not an image\n")
    out["text"] = (folder / "text.png", "not_image")
    noise_image(16, 16).save(folder / "anim.gif", format="GIF")
    out["gif"] = (folder / "anim.gif", "format_not_allowed")
    noise_image(16, 16).save(folder / "gif_named.png", format="GIF")  # suffix lies; bytes are GIF
    out["gif_named_png"] = (folder / "gif_named.png", "format_not_allowed")
    (folder / "bomb.png").write_bytes(png_claiming(9_000, 9_000))  # 81 M pixels in ~90 bytes
    out["bomb"] = (folder / "bomb.png", "bomb")
    (folder / "huge_bomb.png").write_bytes(png_claiming(30_000, 30_000))  # beyond Pillow's own limit too
    out["huge_bomb"] = (folder / "huge_bomb.png", "bomb")
    (folder / "strip.png").write_bytes(png_claiming(1_000_000, 1))
    out["strip"] = (folder / "strip.png", "bad_dimensions")
    good = io.BytesIO()
    noise_image(120, 90).save(good, format="PNG")
    data = good.getvalue()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    out["truncated_png"] = (folder / "truncated.png", "truncated")
    jpg = io.BytesIO()
    noise_image(120, 90).save(jpg, format="JPEG", quality=95)
    jdata = jpg.getvalue()
    (folder / "truncated.jpg").write_bytes(jdata[: len(jdata) // 2])
    out["truncated_jpg"] = (folder / "truncated.jpg", "truncated")
    corrupt = bytearray(data)
    idat = corrupt.index(b"IDAT") + 8
    for i in range(idat, idat + 64):  # garble the start of the compressed pixel stream
        corrupt[i] ^= 0xA5
    (folder / "corrupt.png").write_bytes(bytes(corrupt))
    out["corrupt"] = (folder / "corrupt.png", "corrupt")
    return out


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


def test_png_base64_round_trips():
    im = noise_image(12, 7)
    back = Image.open(io.BytesIO(base64.b64decode(png_base64(im))))
    assert back.format == "PNG" and np.array_equal(np.asarray(back.convert("RGB")), np.asarray(im))
