"""Defensive image loading, red-box drawing and small encoding helpers.

    from scenefit.core.images import load_image, draw_box, ImageError
    img = load_image("photo.jpg")              # PIL RGB image, EXIF orientation applied
    boxed = draw_box(img, (10, 20, 110, 90))   # new image with a red box

Every refusal is an :class:`ImageError` whose ``code`` is a short stable word (see
:data:`REASON_CODES`), so that a batch can count its failures by kind. The checks run in
the order that keeps a hostile file cheap: existence and size on disk, the real format (from
the file's bytes, never its suffix), the dimensions declared in the header — refused before
any pixel is decoded — and only then a full decode, which is what exposes truncated and
corrupt data (``ImageFile.LOAD_TRUNCATED_IMAGES`` is deliberately left off).
"""

from __future__ import annotations

import base64
import contextlib
import io
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from scenefit.core.errors import DatasetError, ScenefitError

DEFAULT_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "BMP")
#: Above this many pixels an image is refused before decoding (~ 7000 x 5700; COCO is 640 x 480).
DEFAULT_MAX_PIXELS = 40_000_000
#: Longest side accepted, whatever the pixel count: a 1 x 10^6 strip is not a photograph.
DEFAULT_MAX_SIDE = 30_000
#: Longest side over shortest side that Qwen2.5-VL's image processor accepts: its ``smart_resize``
#: raises ValueError beyond 200 (transformers 5.24, models/qwen2_vl/image_processing_qwen2_vl.py;
#: qwen-vl-utils' MAX_RATIO is the same). It has no minimum side: a 1 x 1 image is scaled up to
#: its minimum area (56 x 56 pixels), so a side of one pixel is the only floor.
MAX_ASPECT_RATIO = 200
#: Declared pixels per byte of file above which an oversized image counts as a decompression
#: bomb rather than a merely large photo (photos stay well under ~10 pixels per byte).
BOMB_PIXELS_PER_BYTE = 100

#: code -> what it means. Codes are part of the contract (errors.jsonl groups by them).
REASON_CODES: dict[str, str] = {
    "not_found": "the file does not exist or is not a regular file",
    "unreadable": "the file exists but cannot be read (permissions, I/O error)",
    "empty": "the file has zero bytes",
    "not_image": "the bytes are not an image format Pillow recognises",
    "format_not_allowed": "a recognised image format outside the allow-list (e.g. GIF, TIFF)",
    "bad_dimensions": "the header declares a zero or absurd width/height, or an aspect ratio over 200:1",
    "too_large": "more pixels than the cap (refused before decoding)",
    "bomb": "declares far more pixels than its size on disk can honestly hold (decompression bomb)",
    "truncated": "the file ends before the image data does",
    "corrupt": "the image data cannot be decoded",
    "box_outside": "the box lies outside the image",
    "bad_box": "the box is not four finite numbers, has a negative coordinate or covers less than one whole pixel",
}

# Leading bytes of the formats we know: a file that starts like an image but that Pillow cannot
# open is a damaged image ("corrupt"), not some other kind of file ("not_image").
_SIGNATURES: tuple[bytes, ...] = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF8", b"BM", b"RIFF")


class ImageError(ScenefitError):
    """An image (or a box on it) that is refused; ``code`` is one of :data:`REASON_CODES`."""

    def __init__(self, code: str, message: str):
        if code not in REASON_CODES:
            raise ValueError(f"unknown image reason code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def _open_checked(
    path: Path, max_pixels: int, allowed: Sequence[str], max_side: int
) -> Image.Image:
    """Open a file lazily (header only) and refuse by format and declared size before any decode."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageError("not_found", f"{path}: no such file") from None
    except OSError as e:
        raise ImageError("unreadable", f"{path}: {e.strerror or e}") from None
    if not path.is_file():
        raise ImageError("not_found", f"{path}: not a regular file")

    def head() -> bytes:
        with open(path, "rb") as f:
            return f.read(32)

    return _open_source(path, path, st.st_size, head, max_pixels, allowed, max_side)[0]


def _open_source(
    source: Path | io.BytesIO, label: str | Path, n_bytes: int, head: Callable[[], bytes],
    max_pixels: int, allowed: Sequence[str], max_side: int, fit_pixels: Optional[int] = None,
) -> tuple[Image.Image, tuple[int, int]]:
    """The checks of :func:`_open_checked` on a file or on bytes in memory (``label`` names it in
    messages; ``n_bytes`` is its size; ``head()`` its first bytes). Returns the opened image and
    the size its header declares. With ``fit_pixels`` a JPEG over that many pixels is set to
    decode scaled down (:func:`_draft`), and the pixel cap applies to what will be decoded —
    the memory and time decoding costs —, not to the declared size; any other format decodes
    whole, so its cap is its declared size (a PNG bomb is refused before decoding)."""
    if n_bytes == 0:
        raise ImageError("empty", f"{label}: file is empty (0 bytes)")
    try:
        im = Image.open(source)
    except UnidentifiedImageError:
        start = head()
        if start.startswith(_SIGNATURES[0]) and start[12:16] == b"IHDR" and b"\0\0\0\0" in (start[16:20], start[20:24]):
            w, h = int.from_bytes(start[16:20], "big"), int.from_bytes(start[20:24], "big")
            raise ImageError("bad_dimensions", f"{label}: declared size {w}x{h} is not plausible") from None
        if start.startswith(_SIGNATURES):
            raise ImageError("corrupt", f"{label}: starts like an image but its header cannot be read") from None
        raise ImageError("not_image", f"{label}: not an image file (unrecognised content)") from None
    except Image.DecompressionBombError as e:
        raise ImageError("bomb", f"{label}: {e}") from None
    except PermissionError as e:
        raise ImageError("unreadable", f"{label}: {e.strerror or e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise _decode_error(label, e, "header") from None
    try:
        fmt = (im.format or "").upper()
        if fmt == "MPO":  # a phone camera's JPEG with extra frames: read as JPEG (its first frame)
            fmt = "JPEG"
        if fmt not in allowed:
            raise ImageError(
                "format_not_allowed",
                f"{label}: format {fmt or 'unknown'} is not allowed (allowed: {', '.join(allowed)})",
            )
        w, h = im.size
        check_dimensions(w, h, label, max_side)
        if fit_pixels:
            _draft(im, fit_pixels)
        dw, dh = im.size  # what decoding will produce (smaller than declared for a JPEG in draft mode)
        if dw * dh > max_pixels:
            decoded = f", decoded scaled down to {dw}x{dh} = {dw * dh:,}" if (dw, dh) != (w, h) else ""
            if w * h > BOMB_PIXELS_PER_BYTE * n_bytes:
                raise ImageError(
                    "bomb",
                    f"{label}: declares {w}x{h} = {w * h:,} pixels{decoded} in a {n_bytes:,}-byte file "
                    f"(cap {max_pixels:,}); refused as a decompression bomb",
                )
            raise ImageError("too_large", f"{label}: {w}x{h} = {w * h:,} pixels{decoded} exceeds the cap of {max_pixels:,}")
    except ImageError:
        im.close()
        raise
    return im, (w, h)


def _draft(im: Image.Image, fit_pixels: int) -> None:
    """A JPEG over ``fit_pixels`` is set to decode scaled down by 1/2, 1/4 or 1/8 (Pillow's draft
    mode: the smallest scale that still keeps at least ``fit_pixels``), before any pixel is
    decoded; ``im.size`` becomes the size decoding will produce. Other formats are left whole."""
    w, h = im.size
    if w * h > fit_pixels and im.format in ("JPEG", "MPO"):
        scale = (fit_pixels / (w * h)) ** 0.5
        im.draft("RGB", (max(1, int(w * scale)), max(1, int(h * scale))))  # scale >= the request


def check_dimensions(w: int, h: int, label: str | Path, max_side: int = DEFAULT_MAX_SIDE) -> None:
    """``bad_dimensions`` unless ``w`` x ``h`` is a size the students' image processor takes:
    both sides from 1 to ``max_side`` and the long side at most :data:`MAX_ASPECT_RATIO` times
    the short one. Runs on the header's size, before any pixel is decoded."""
    if w <= 0 or h <= 0 or max(w, h) > max_side:
        raise ImageError("bad_dimensions", f"{label}: declared size {w}x{h} is not plausible")
    if max(w, h) > MAX_ASPECT_RATIO * min(w, h):
        raise ImageError("bad_dimensions", f"{label}: {w}x{h} has an aspect ratio of {max(w, h) / min(w, h):.0f}:1; "
                                           f"the model's image processor takes at most {MAX_ASPECT_RATIO}:1")


def _decode(im: Image.Image, path: str | Path) -> None:
    """Full decode; Pillow reports truncation as OSError('... truncated ...')."""
    try:
        im.load()
    except Image.DecompressionBombError as e:
        raise ImageError("bomb", f"{path}: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise _decode_error(path, e, "image data") from None


def _decode_error(path: str | Path, exc: BaseException, part: str) -> ImageError:
    """Pillow says 'truncated' (OSError) or raises EOFError when a file ends early."""
    text = str(exc) or type(exc).__name__
    if "truncat" in text.lower() or isinstance(exc, EOFError):
        return ImageError("truncated", f"{path}: {part} is truncated ({text})")
    return ImageError("corrupt", f"{path}: {part} cannot be decoded ({text})")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB; transparent parts are composited on white."""
    if im.mode == "RGB":
        return im
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode == "P" and "transparency" in im.info
    )
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if im.mode.startswith("I") or im.mode == "F":
        # 16/32-bit greyscale: scale the 16-bit range to 8 bits (a plain convert would clip).
        arr = np.asarray(im, dtype=np.float64)
        if im.mode != "F":
            arr = arr / 257.0
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L").convert("RGB")
    return im.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def load_image(
    path: str | os.PathLike,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    allowed_formats: Optional[Iterable[str]] = None,
    max_side: int = DEFAULT_MAX_SIDE,
) -> Image.Image:
    """Load an image defensively: allow-listed format, size checked before decoding, full decode,
    EXIF orientation applied, RGB out. Raises :class:`ImageError` with a reason code."""
    p = Path(path)
    allowed = tuple(f.upper() for f in (allowed_formats or DEFAULT_FORMATS))
    return _finish(_open_checked(p, max_pixels, allowed, max_side), p)


def _finish(im: Image.Image, label: str | Path, fit_pixels: Optional[int] = None,
            decode_budget=None, declared: Optional[tuple[int, int]] = None) -> Image.Image:
    """Full decode, EXIF orientation, RGB; closes ``im``. With ``fit_pixels`` an image over that
    many pixels comes out scaled down (aspect kept) — a JPEG already while decoding (draft
    mode, set by :func:`_open_source`), so its full size is never in memory — and
    ``out.info["original_size"]`` holds the upright ``declared`` size before scaling (boxes are
    given in it). ``decode_budget.hold(n)``, when given, is held around the decode of ``n``
    pixels (bounds the decoded pixels in flight)."""
    with im:
        w, h = declared or im.size
        hold = decode_budget.hold(im.size[0] * im.size[1]) if decode_budget is not None else contextlib.nullcontext()
        with hold:
            _decode(im, label)
            try:
                upright = ImageOps.exif_transpose(im)
            except Exception as e:  # a malformed EXIF block must not pass as a good image
                raise ImageError("corrupt", f"{label}: EXIF orientation cannot be applied ({e})") from None
            out = to_rgb(upright)
            if out is im:  # detach from the file handle closed by `with`
                out = im.copy()
            if fit_pixels:
                turned = upright.size == im.size[::-1] and im.size[0] != im.size[1]  # EXIF rotated by 90°
                original = (h, w) if turned else (w, h)
                out = _fit(out, fit_pixels)
                out.info["original_size"] = original
    return out


def _fit(image: Image.Image, max_pixels: int) -> Image.Image:
    """``image`` scaled down (aspect kept) to at most ``max_pixels`` pixels; as is when it fits."""
    w, h = image.size
    if w * h <= max_pixels:
        return image
    scale = (max_pixels / (w * h)) ** 0.5
    return image.resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.Resampling.BICUBIC)


def load_image_bytes(
    raw: bytes,
    name: str = "uploaded image",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    allowed_formats: Optional[Iterable[str]] = None,
    fit_pixels: Optional[int] = None,
    decode_budget=None,
) -> Image.Image:
    """:func:`load_image` for untrusted bytes (uploads, data URLs), with the same checks, in
    memory; messages name ``name``. ``fit_pixels``, ``decode_budget``: see :func:`_finish`."""
    allowed = tuple(f.upper() for f in (allowed_formats or DEFAULT_FORMATS))
    im, declared = _open_source(io.BytesIO(raw), name, len(raw), lambda: raw[:32], max_pixels, allowed,
                                DEFAULT_MAX_SIDE, fit_pixels)
    return _finish(im, name, fit_pixels, decode_budget, declared)


def embedded_image(path: str | os.PathLike) -> dict[str, Any]:
    """An image file as a table cell that carries it: ``{"bytes": the file's bytes, "path": its
    file name}`` — the layout of the Hugging Face ``datasets`` ``Image`` feature, so a Parquet
    file holding such cells loads and decodes anywhere, with no file beside it."""
    p = Path(path)
    return {"bytes": p.read_bytes(), "path": p.name}


def stored_image_name(value: Any) -> str:
    """How a table's image cell is named in messages and reports: a path as it is, an embedded
    image (:func:`embedded_image`) by its file name."""
    if isinstance(value, dict):
        return str(value.get("path") or "embedded image")
    return str(value)


def load_stored_image(value: Any, **checks: Any) -> Image.Image:
    """A table's image cell as an RGB image, with :func:`load_image`'s checks: a path, or an
    embedded image (:func:`embedded_image`; one without bytes falls back to its path)."""
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return load_image_bytes(bytes(value["bytes"]), name=stored_image_name(value), **checks)
        value = value.get("path")
    return load_image(value, **checks)


#: A user's box must have at least this share of its area on the image; a smaller overshoot past
#: the right or bottom edge is clipped, a box mostly outside is refused (clipping it would judge a
#: sliver of something else).
MIN_BOX_INSIDE = 0.5


def parse_box(value: Any) -> Optional[tuple[float, float, float, float]]:
    """The one reader of a box as a user writes it (manifest cells, ``--box``, request fields):
    ``"x0,y0,x1,y1"`` (commas, semicolons or spaces; ``[...]`` or ``(...)`` around it allowed) or
    four numbers -> four floats; None or a blank string -> None. Anything that is not four numbers
    is ``bad_box``. Whether the numbers make a box (finite, not negative, one pixel at least, on
    the image) is :func:`box_pixels`' and :func:`check_box`'s to say, so that a ``nan`` is one
    item's error where the item is judged."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        parts: list[Any] = [p for p in value.strip().strip("[]()").replace(";", ",").replace(" ", ",").split(",") if p]
    elif isinstance(value, (list, tuple, np.ndarray)):
        parts = list(value)
    else:
        raise ImageError("bad_box", f"box {value!r} is not four numbers x0,y0,x1,y1")
    if len(parts) != 4:
        raise ImageError("bad_box", f"box {value!r} needs 4 numbers x0,y0,x1,y1, got {len(parts)}")
    try:
        x0, y0, x1, y1 = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise ImageError("bad_box", f"box {value!r} is not four numbers x0,y0,x1,y1") from None
    return x0, y0, x1, y1


def box_pixels(box: Sequence[float]) -> tuple[int, int, int, int]:
    """Four numbers as a box in whole pixels, whatever the image: a coordinate that is not a
    finite number or is negative is refused (``bad_box``), so is a box under one whole pixel once
    rounded."""
    values = [float(v) for v in box]
    if not all(math.isfinite(v) for v in values):
        raise ImageError("bad_box", f"box {tuple(box)} holds a value that is not a finite number")
    if min(values) < 0:
        raise ImageError("bad_box", f"box {tuple(box)} has a negative coordinate (boxes are in pixels from the top left)")
    x0, y0, x1, y1 = (int(round(v)) for v in values)
    if x1 <= x0 or y1 <= y0:
        raise ImageError("bad_box", f"box {tuple(box)} covers less than one whole pixel "
                                    "(need x1 > x0 and y1 > y0)")
    return x0, y0, x1, y1


def check_box(box: Sequence[float], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The one rule for a box given by a user (ingest's manifest rows, serve's requests,
    predict's items): (x0, y0, x1, y1) in pixels of an image of ``size`` (w, h), valid by
    :func:`box_pixels`; a box with less than :data:`MIN_BOX_INSIDE` of its area on the image is
    ``box_outside``; a smaller overshoot past the right or bottom edge is clipped."""
    x0, y0, x1, y1 = box_pixels(box)
    cx0, cy0, cx1, cy1 = clip_box(box, size)
    inside = (cx1 - cx0) * (cy1 - cy0) / ((x1 - x0) * (y1 - y0))
    if inside < MIN_BOX_INSIDE:
        raise ImageError("box_outside", f"box {(x0, y0, x1, y1)} lies mostly outside the {size[0]}x{size[1]} image "
                                        f"(only {inside:.0%} of it is on the image)")
    return cx0, cy0, cx1, cy1


def clip_box(box: Sequence[float], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Clip (x0, y0, x1, y1) to an image of ``size`` (w, h); ImageError when nothing is left."""
    w, h = size
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if cx1 <= cx0 or cy1 <= cy0:
        raise ImageError("box_outside", f"box {(x0, y0, x1, y1)} lies outside the {w}x{h} image")
    return cx0, cy0, cx1, cy1


#: The thinnest red box drawn: a 1-pixel line vanishes when a model's processor scales the image down.
MIN_BOX_WIDTH = 2
#: Pixels of image (shorter side) per pixel of box line when no width is set: 3 on a 640x480 photo.
BOX_WIDTH_PER_SIDE = 150


def box_width_for(size: tuple[int, int], width: Optional[int] = None) -> int:
    """The one rule for the red box's line width: ``width`` when one is set (a config's
    ``box_width``), else grown with the image (shorter side / :data:`BOX_WIDTH_PER_SIDE`, at least
    :data:`MIN_BOX_WIDTH`), so that it survives the downscaling a teacher or a student applies."""
    if width is not None:
        if width < 1:
            raise ValueError(f"box width must be >= 1, got {width}")
        return int(width)
    return max(MIN_BOX_WIDTH, round(min(size) / BOX_WIDTH_PER_SIDE))


#: The box colour every stage draws unless a config says otherwise.
BOX_RED: tuple[int, int, int] = (255, 0, 0)


class BoxStyle(BaseModel):
    """How the red boxes of a set of images were drawn: the ``box_width`` setting of the stage
    that drew them and its colour. Recorded by ``synth`` and ``ingest`` (key ``box_style`` of their
    manifests' provenance), carried by consensus, split and datasets, and kept in each student's
    ``scenefit_student.json``, so that predict and serve draw the box the students were trained on."""

    model_config = ConfigDict(frozen=True)

    width: Optional[int] = Field(None, ge=1, le=64, description="Line width in pixels when the stage set one; "
                                 "null = grown with each image (box_width_for: the shorter side / 150, at least 2).")
    color: tuple[int, int, int] = Field(BOX_RED, description="RGB colour of the box.")

    @staticmethod
    def words(style: Optional["BoxStyle | Mapping[str, Any]"]) -> str:
        """The style in words, for cards (``style`` may be its JSON, or None: not recorded)."""
        if style is None:
            return "not recorded (images that came boxed, or boxes drawn in more than one way)"
        style = style if isinstance(style, BoxStyle) else BoxStyle.model_validate(style)
        width = (f"{style.width} px wide" if style.width is not None else
                 f"grown with the image (shorter side / {BOX_WIDTH_PER_SIDE}, at least {MIN_BOX_WIDTH} px)")
        return f"{width}, RGB {tuple(style.color)}"


def common_box_style(styles: Iterable[Optional[BoxStyle | Mapping[str, Any]]]) -> Optional[BoxStyle]:
    """The one box style every source shares (BoxStyles or their JSON); None when there is no
    source, when any source does not know how its boxes were drawn (None), or when two differ:
    a mix is recorded as unknown rather than as one of its parts."""
    found: set[BoxStyle] = set()
    for style in styles:
        if style is None:
            return None
        found.add(style if isinstance(style, BoxStyle) else BoxStyle.model_validate(style))
    return found.pop() if len(found) == 1 else None


def draw_box(
    image: Image.Image,
    box: Sequence[float],
    width: Optional[int] = None,
    color: Sequence[int] = BOX_RED,
) -> Image.Image:
    """The one box drawer: a new RGB image with the red outline drawn inside ``box`` (x1, y1
    exclusive), ``width`` pixels wide by :func:`box_width_for` (None: by the image's size).

    The box is clipped to the image first; a box wholly outside it is an ImageError.
    """
    line = box_width_for(image.size, width)
    x0, y0, x1, y1 = clip_box(box, image.size)
    out = to_rgb(image).copy()
    ImageDraw.Draw(out).rectangle((x0, y0, x1 - 1, y1 - 1), outline=tuple(color), width=line)
    return out


#: A pixel belongs to a drawn box when each channel is within this of the box colour (JPEG
#: artefacts and the model's downscaling blur a thin line's colour).
BOX_COLOR_TOLERANCE = 90
#: Outline test of :func:`find_box_outline`: each side of a candidate rectangle must be covered by
#: box-coloured pixels over at least this share of its length, and its inside must be mostly other.
BOX_SIDE_COVERAGE = 0.8
BOX_INSIDE_MAX = 0.5
#: The smallest box found: each side at least this share of the image's shorter side (and 5 pixels).
BOX_MIN_SIDE = 0.03
#: The detector works on a copy at most this many pixels on its longer side (max-pooled, so a thin
#: line survives): its cost stays flat for phone photos.
BOX_SEARCH_SIDE = 512


def find_box_outline(image: Image.Image, color: Sequence[int] = BOX_RED,
                     tolerance: int = BOX_COLOR_TOLERANCE) -> Optional[tuple[int, int, int, int]]:
    """The rule for "this image carries its box": a rectangle outline in ``color``. Returns its
    (x0, y0, x1, y1) in ``image``'s pixels, None when there is none.

    Pixels within ``tolerance`` of ``color`` on every channel form a mask (max-pooled down to
    :data:`BOX_SEARCH_SIDE`). Every row holding a run of mask pixels at least 5 pixels and
    :data:`BOX_MIN_SIDE` of the shorter side long is a candidate top or bottom edge (the rows of one
    stroke count once); a pair of them spanning nearly the same columns is a box when the stroke
    leaves room inside the box, its left and right columns are each covered
    over :data:`BOX_SIDE_COVERAGE` of the height between them, and both its inside and a ring one
    stroke wide around it are under :data:`BOX_INSIDE_MAX` box-coloured — a drawn outline, not a red
    object or part of a larger red area."""
    rgb = np.asarray(to_rgb(image), dtype=np.int16)
    mask = (np.abs(rgb - np.asarray(color, dtype=np.int16)[None, None, :]) <= tolerance).all(axis=2)
    h, w = mask.shape
    step = max(1, math.ceil(max(h, w) / BOX_SEARCH_SIDE))
    if step > 1:  # max-pool: any box pixel in a block keeps the block
        ph, pw = -(-h // step) * step, -(-w // step) * step
        padded = np.zeros((ph, pw), dtype=bool)
        padded[:h, :w] = mask
        mask = padded.reshape(ph // step, step, pw // step, step).any(axis=(1, 3))
    found = _outline_in_mask(mask)
    if found is None:
        return None
    x0, y0, x1, y1 = found
    return x0 * step, y0 * step, min(w, (x1 + 1) * step), min(h, (y1 + 1) * step)


def _longest_run(row: np.ndarray) -> tuple[int, int]:
    """(start, end inclusive) of the longest run of True in a 1-D bool array ((0, -1) when none)."""
    padded = np.concatenate(([False], row, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    if not len(edges):
        return 0, -1
    starts, ends = edges[::2], edges[1::2] - 1
    k = int(np.argmax(ends - starts))
    return int(starts[k]), int(ends[k])


def _outline_in_mask(mask: np.ndarray) -> Optional[tuple[int, int, int, int]]:
    h, w = mask.shape
    min_len = max(5, round(BOX_MIN_SIDE * min(h, w)))
    bars: list[list[int]] = []  # [first row, x0, x1, last row]: the rows of one horizontal line
    for y in np.flatnonzero(mask.sum(axis=1) >= min_len):
        x0, x1 = _longest_run(mask[y])
        if x1 - x0 + 1 < min_len:
            continue
        if bars and y == bars[-1][3] + 1 and abs(x0 - bars[-1][1]) <= 2 and abs(x1 - bars[-1][2]) <= 2:
            bars[-1][3] = int(y)
        else:
            bars.append([int(y), x0, x1, int(y)])
    for i, (top, tx0, tx1, top_end) in enumerate(bars):
        for bottom_start, bx0, bx1, bottom in reversed(bars[i + 1:]):
            if bottom - top + 1 < min_len:
                break
            tol = max(2, round(0.05 * (tx1 - tx0 + 1)))
            if abs(tx0 - bx0) > tol or abs(tx1 - bx1) > tol:
                continue
            x0, x1 = min(tx0, bx0), max(tx1, bx1)
            line = max(top_end - top, bottom - bottom_start) + 1  # the stroke's width
            if 2 * line >= min(bottom - top + 1, x1 - x0 + 1):
                continue  # a filled block, not a drawn outline
            left = mask[top:bottom + 1, max(0, x0 - tol):x0 + line + tol].any(axis=1).mean()
            right = mask[top:bottom + 1, max(0, x1 - line - tol + 1):x1 + tol + 1].any(axis=1).mean()
            if left < BOX_SIDE_COVERAGE or right < BOX_SIDE_COVERAGE:
                continue
            inside = mask[top_end + 1:bottom_start, x0 + line:x1 - line + 1]
            if not inside.size or inside.mean() >= BOX_INSIDE_MAX:
                continue  # no room inside, or filled: a red object, not an outline
            ring = np.concatenate([mask[max(0, top - line):top, x0:x1 + 1].ravel(),
                                   mask[bottom + 1:bottom + 1 + line, x0:x1 + 1].ravel(),
                                   mask[top:bottom + 1, max(0, x0 - line):x0].ravel(),
                                   mask[top:bottom + 1, x1 + 1:x1 + 1 + line].ravel()])
            if ring.size and ring.mean() >= BOX_INSIDE_MAX:
                continue  # the colour goes on outside: part of a larger red area
            return x0, top, x1, bottom
    return None


def png_bytes(image: Image.Image, compress_level: int = 1) -> bytes:
    """PNG encoding of an image (level 1: fast, still lossless)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def png_base64(image: Image.Image) -> str:
    """Base64 PNG, e.g. for OpenAI-compatible ``data:image/png;base64,...`` URLs."""
    return base64.b64encode(png_bytes(image)).decode("ascii")


def png_data_url(image: Image.Image) -> str:
    return "data:image/png;base64," + png_base64(image)


def open_image(row: dict) -> Image.Image:
    """The image of a dataset row (``row["image"]``: a path, or the image embedded in the row by
    ``scenefit datasets``, decoded by :func:`load_stored_image`), or a DatasetError naming the
    sample and the image."""
    try:
        return load_stored_image(row["image"])
    except Exception as e:  # ImageError or a missing file: say which sample
        raise DatasetError(f"sample {row['id']!r}: image {stored_image_name(row['image'])!r} cannot be read: {e}") from None
