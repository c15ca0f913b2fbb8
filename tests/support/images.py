"""Test helpers first written for tests/unit/test_images.py, shared by other tests."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


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

