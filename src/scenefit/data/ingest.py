"""Stage 1, ingest: validate a manifest and its images, draw the red boxes that are missing,
and write the normalised manifest.

    scenefit ingest MANIFEST --out DIR [--config demo]

or from Python::

    from scenefit.data.ingest import IngestConfig, ingest
    result = ingest("samples.csv", "runs/x/ingest", IngestConfig(box_width=4))

Outputs in DIR:

- ``manifest.parquet`` — the accepted samples (exactly MANIFEST_COLUMNS), every sample
  ``boxed=True``; image paths relative to DIR when the image lies in the same run folder
  (see :mod:`scenefit.core.parquet_io`), so the run can be moved;
- ``images/<id>.jpg`` or ``images/<id>.png`` — the boxed copy of each sample whose image did
  not carry its box yet: a JPEG photo stays JPEG (``jpeg_quality``, 95 by default, colour at full
  resolution), any other format becomes PNG (lossless); already-boxed images are validated and
  referenced where they are, never copied; a rerun removes the copies of this manifest's samples
  that it no longer uses;
- ``errors.jsonl`` — one line per rejected sample: ``id``, ``code``, ``message`` (and ``row``
  when the manifest row itself was bad);
- ``summary.json`` — counts (``input_rows``: every one ends as a sample or an error line;
  ``boxed_copies``: copies written, bytes read and written, per format;
  ``input_lines``: the manifest's non-blank data lines, with a ``line_note`` when the two
  differ), rejection counts by code, the config used, and the synthetic-world notice when
  the samples come from it.

A rerun into the same DIR rewrites the same files with the same content (nothing appended).
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, field_validator

from scenefit.core.config import StageConfig
from scenefit.core.errors import error_row
from scenefit.core.files import atomic_path, safe_stem, write_json, write_jsonl
from scenefit.core.images import (
    DEFAULT_FORMATS,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SIDE,
    BoxStyle,
    ImageError,
    check_box,
    common_box_style,
    draw_box,
    load_image,
)
from scenefit.core.progress import Progress
from scenefit.core.records import Sample, is_synthetic
from scenefit.data.manifest import manifest_box_style, read_manifest, write_manifest


class IngestConfig(StageConfig):
    """Settings of ``scenefit ingest`` (config section ``ingest``)."""

    layout: Literal["auto", "scenefit", "paper"] = Field(
        "auto",
        description="Manifest layout: scenefit (id/image/object/box columns), paper (coco_index, "
        "replacement_object, images <coco_index>.png already boxed), or auto (detect from the columns).",
    )
    images_dir: Optional[str] = Field(
        None,
        description="Folder that relative image paths (and the paper layout's <coco_index>.png) resolve "
        "against (a relative folder is taken from the working directory); default: the manifest's folder.",
    )
    box_width: Optional[int] = Field(
        None, ge=1, le=64,
        description="Width in pixels of the red box drawn on unboxed images; null = by the image's size "
        "(scenefit.core.images.box_width_for: the shorter side / 150, at least 2; 3 on a 640x480 photo).",
    )
    box_color: tuple[int, int, int] = Field(
        (255, 0, 0), description="RGB colour of the drawn box (the students are trained on red)."
    )
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS, ge=1, description="Images declaring more pixels are refused before decoding."
    )
    max_side: int = Field(DEFAULT_MAX_SIDE, ge=1, description="Images with a longer side are refused as implausible.")
    allowed_formats: list[str] = Field(
        default_factory=lambda: list(DEFAULT_FORMATS),
        description="Image formats accepted, as detected from the file's bytes (not its suffix).",
    )
    jpeg_quality: int = Field(
        95, ge=50, le=100,
        description="JPEG quality of the boxed copy of a JPEG photo (it stays JPEG, colour at full resolution; "
        "other formats are written as PNG, lossless).",
    )
    workers: int = Field(4, ge=1, le=64, description="Threads that validate and box images in parallel.")
    strict: bool = Field(False, description="Exit non-zero when any sample is rejected.")

    @field_validator("allowed_formats")
    @classmethod
    def _upper(cls, v: list[str]) -> list[str]:
        out = [f.strip().upper() for f in v if f.strip()]
        if not out:
            raise ValueError("allow at least one image format")
        return out


@dataclass
class IngestResult:
    samples: list[Sample]
    errors: list[dict]
    n_input: int
    n_lines: Optional[int] = None  # non-blank data lines of a CSV/JSONL manifest
    line_note: Optional[str] = None  # why lines and rows differ, when they do
    drawn: int = 0
    clipped: int = 0
    synthetic: bool = False
    out_dir: Optional[Path] = None
    rejected_by_code: dict[str, int] = field(default_factory=dict)
    boxed_copies: dict = field(default_factory=lambda: copy_bytes([]))  # images written, bytes in and out
    box_style: Optional[BoxStyle] = None  # how every accepted image's box was drawn; None: unknown or mixed

    def summary(self) -> dict:
        from scenefit import SYNTHETIC_NOTICE

        out = {
            "input_rows": self.n_input,
            "input_lines": self.n_lines,
            "ok": len(self.samples),
            "rejected": len(self.errors),
            "rejected_by_code": dict(sorted(self.rejected_by_code.items())),
            "boxes_drawn": self.drawn,
            "already_boxed": len(self.samples) - self.drawn,
            "boxes_clipped": self.clipped,
            "boxed_copies": self.boxed_copies,
            "box_style": self.box_style.model_dump(mode="json") if self.box_style else None,
            "synthetic": self.synthetic,
        }
        if self.line_note:
            out["line_note"] = self.line_note
        if self.synthetic:
            out["notice"] = SYNTHETIC_NOTICE
        return out


#: Formats a boxed copy keeps (the camera's lossy JPEG stays JPEG, an MPO — a phone's
#: multi-picture JPEG — is written as its first picture in JPEG); anything else is written as PNG.
KEPT_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG"}
SUFFIXES = {"JPEG": ".jpg", "PNG": ".png"}


def image_name(sample_id: str, fmt: str = "PNG") -> str:
    """File name for a sample's boxed image in format ``fmt`` (PNG or JPEG): the id when it is a
    safe name, else a sanitised id plus a short hash (ids like 'a/b' and 'a_b' must not collide)."""
    return f"{safe_stem(sample_id, empty='sample')}{SUFFIXES[fmt]}"


def save_boxed(image, path: Path, fmt: str, jpeg_quality: int, icc_profile: Optional[bytes] = None) -> Path:
    """Write a boxed copy atomically: JPEG at ``jpeg_quality`` with full-resolution colour (4:4:4,
    so the thin red line keeps its colour), else PNG (lossless). The pixels are already upright
    (EXIF orientation applied on load) and no EXIF block is written, so no viewer turns them again;
    the colour profile is kept."""
    extra = {"icc_profile": icc_profile} if icc_profile else {}
    with atomic_path(path) as tmp:
        if fmt == "JPEG":
            image.save(tmp, format="JPEG", quality=jpeg_quality, subsampling=0, optimize=True, **extra)
        else:
            image.save(tmp, format="PNG", compress_level=1, **extra)  # fast; lossless at any level
    return path


def _source_format(path: str) -> tuple[str, Optional[bytes]]:
    """(the format a boxed copy of ``path`` is written in, the source's colour profile) — from
    the header only (the image was already checked and decoded by load_image)."""
    from PIL import Image

    with Image.open(path) as src:
        return KEPT_FORMATS.get(src.format or "", "PNG"), src.info.get("icc_profile")


def ingest_sample(sample: Sample, images_out: Path, cfg: IngestConfig) -> tuple[Sample, bool]:
    """Validate one sample's image and box; draw the box when missing.

    Returns (the sample as it goes into the normalised manifest, whether its box was clipped).
    Raises ImageError with a reason code when the sample is rejected.
    """
    image = load_image(sample.image, max_pixels=cfg.max_pixels, allowed_formats=cfg.allowed_formats,
                       max_side=cfg.max_side)
    box = sample.box
    clipped = False
    if box is not None:
        inside = check_box(box, image.size)  # the box rule serve applies too
        clipped = inside != tuple(box)
        box = inside
    image_path = str(Path(sample.image).resolve())
    if not sample.boxed:
        fmt, icc = _source_format(sample.image)
        out = save_boxed(draw_box(image, box, width=cfg.box_width, color=cfg.box_color),
                         images_out / image_name(sample.id, fmt), fmt, cfg.jpeg_quality, icc)
        image_path = str(out.resolve())
    return sample.model_copy(update={"image": image_path, "box": box, "boxed": True}), clipped


def ingested_box_style(cfg: IngestConfig, drawn: int, came_boxed: int, manifest: str | os.PathLike,
                       fmt: Optional[str]) -> Optional[BoxStyle]:
    """How the boxes of the accepted samples were drawn (the manifest's ``box_style``, carried on to
    the students): this stage's width setting and colour for the boxes it drew, the source
    manifest's record for images that came boxed; None when any part is unknown or two differ."""
    parts = [BoxStyle(width=cfg.box_width, color=cfg.box_color)] if drawn else []
    if came_boxed:
        parts.append(manifest_box_style(manifest, fmt))
    return common_box_style(parts)


def copy_record(source: Sample, ingested: Sample) -> Optional[dict]:
    """``{"format", "bytes_in", "bytes_out"}`` of the boxed copy ingest wrote for ``source``
    (None when the image already carried its box and was not copied)."""
    if source.boxed:
        return None
    out = Path(ingested.image)
    return {"format": "JPEG" if out.suffix == SUFFIXES["JPEG"] else "PNG",
            "bytes_in": os.path.getsize(source.image), "bytes_out": out.stat().st_size}


def copies_line(copies: dict, jpeg_quality: int) -> str:
    """One line on the boxed copies written: images and bytes in and out, per format."""
    if not copies["images"]:
        return "boxed copies: none written (every image already carried its box)"
    parts = [f"{f} {c['images']:,} ({_mb(c['bytes_in'])} -> {_mb(c['bytes_out'])}"
             + (f", quality {jpeg_quality})" if f == "JPEG" else ")") for f, c in copies["by_format"].items()]
    return (f"boxed copies: {copies['images']:,} images, {_mb(copies['bytes_in'])} in -> {_mb(copies['bytes_out'])} "
            f"out; " + "; ".join(parts))


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def copy_bytes(copies: list[dict]) -> dict:
    """``summary.json``'s ``boxed_copies``: how many copies per format, bytes read and written."""
    by_format: dict[str, dict[str, int]] = {}
    for c in copies:
        f = by_format.setdefault(c["format"], {"images": 0, "bytes_in": 0, "bytes_out": 0})
        f["images"] += 1
        f["bytes_in"] += c["bytes_in"]
        f["bytes_out"] += c["bytes_out"]
    return {"images": len(copies), "bytes_in": sum(c["bytes_in"] for c in copies),
            "bytes_out": sum(c["bytes_out"] for c in copies), "by_format": dict(sorted(by_format.items()))}


def _remove_stale_copies(images_out: Path, samples: list[Sample], accepted: list[Sample]) -> None:
    """A rerun must not leave boxed copies that the new manifest no longer uses (a sample now
    rejected, or now already boxed): remove images/<id>.png of this manifest's samples unless an
    accepted sample points at it. Files of ids not in this manifest are never touched."""
    folder = images_out.resolve()
    used = {Path(s.image).name for s in accepted if Path(s.image).parent == folder}
    for sample in samples:
        for fmt in SUFFIXES:  # a photo now written as JPEG leaves no PNG of an earlier version behind
            name = image_name(sample.id, fmt)
            if name not in used:
                (images_out / name).unlink(missing_ok=True)


def ingest(
    manifest: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: Optional[IngestConfig] = None,
    fmt: Optional[str] = None,
    progress: Optional[Progress] = None,
) -> IngestResult:
    """Run the ingest stage (see module docstring); ``progress`` gets one bar over the samples
    once the manifest is read. Raises ManifestError when the manifest is unreadable."""
    cfg = cfg or IngestConfig()
    out = Path(out_dir)
    images_out = out / "images"
    images_out.mkdir(parents=True, exist_ok=True)
    read = read_manifest(manifest, fmt=fmt, layout=cfg.layout, images_dir=cfg.images_dir)
    samples, errors = read
    if progress:
        progress.bar("ingest", len(samples))

    def work(sample: Sample):
        try:
            return ingest_sample(sample, images_out, cfg)
        except ImageError as e:
            return e
        finally:
            if progress:
                progress.advance(1)

    accepted: list[Sample] = []
    copies: list[dict] = []
    drawn = clipped = 0
    # threads: Pillow releases the GIL while decoding and encoding; map keeps input order
    with ThreadPoolExecutor(max_workers=cfg.workers) as pool:
        for sample, outcome in zip(samples, pool.map(work, samples)):
            if isinstance(outcome, ImageError):
                errors.append(error_row(sample.id, outcome.code, f"sample {sample.id}: {outcome.message}"))
                continue
            new, was_clipped = outcome
            accepted.append(new)
            copies += [c for c in (copy_record(sample, new),) if c]
            drawn += not sample.boxed
            clipped += was_clipped
    _remove_stale_copies(images_out, samples, accepted)
    result = IngestResult(
        samples=accepted,
        errors=errors,
        n_input=read.rows,
        n_lines=read.lines,
        line_note=read.line_note,
        drawn=drawn,
        clipped=clipped,
        synthetic=is_synthetic(*samples),
        out_dir=out,
        rejected_by_code=dict(Counter(e["code"] for e in errors)),
        boxed_copies=copy_bytes(copies),
        box_style=ingested_box_style(cfg, drawn, len(accepted) - drawn, manifest, fmt),
    )
    summary = result.summary()
    write_manifest(accepted, out / "manifest.parquet",
                   meta={"stage": "ingest", "source": str(Path(manifest).resolve()), **summary})
    write_jsonl(errors, out / "errors.jsonl")
    write_json({**summary, "config": cfg.model_dump(mode="json")}, out / "summary.json")
    return result
