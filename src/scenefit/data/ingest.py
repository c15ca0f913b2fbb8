"""Stage 1, ingest: validate a manifest and its images, draw the red boxes that are missing,
and write the normalised manifest.

    scenefit ingest MANIFEST --out DIR [--config configs/demo.yaml]

or from Python::

    from scenefit.data.ingest import IngestConfig, ingest
    result = ingest("samples.csv", "runs/x/ingest", IngestConfig(box_width=4))

Outputs in DIR:

- ``manifest.parquet`` — the accepted samples (exactly MANIFEST_COLUMNS), every sample
  ``boxed=True``; image paths relative to DIR when the image lies in the same run folder
  (see :mod:`scenefit.core.parquet_io`), so the run can be moved;
- ``images/<id>.png`` — the boxed copy of each sample whose image did not carry its box yet
  (already-boxed images are validated and referenced where they are, never copied; a rerun
  removes the copies of this manifest's samples that it no longer uses);
- ``errors.jsonl`` — one line per rejected sample: ``id``, ``code``, ``message`` (and ``row``
  when the manifest row itself was bad);
- ``summary.json`` — counts (``input_rows``: every one ends as a sample or an error line;
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

from scenefit.core.progress import Progress
from scenefit.core.errors import error_row
from scenefit.core.config import StageConfig
from scenefit.core.images import DEFAULT_FORMATS, DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, ImageError, check_box, draw_box, load_image
from scenefit.data.manifest import read_manifest, write_manifest
from scenefit.core.files import atomic_path, safe_stem, write_json, write_jsonl
from scenefit.core.records import Sample, is_synthetic


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
            "synthetic": self.synthetic,
        }
        if self.line_note:
            out["line_note"] = self.line_note
        if self.synthetic:
            out["notice"] = SYNTHETIC_NOTICE
        return out


def image_name(sample_id: str) -> str:
    """File name for a sample's boxed image: the id when it is a safe name, else a sanitised
    id plus a short hash (ids like 'a/b' and 'a_b' must not collide)."""
    return f"{safe_stem(sample_id, empty='sample')}.png"


def _save_png(image, path: Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", compress_level=1)  # fast; lossless at any level


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
        out = images_out / image_name(sample.id)
        _save_png(draw_box(image, box, width=cfg.box_width, color=cfg.box_color), out)
        image_path = str(out.resolve())
    return sample.model_copy(update={"image": image_path, "box": box, "boxed": True}), clipped


def _remove_stale_copies(images_out: Path, samples: list[Sample], accepted: list[Sample]) -> None:
    """A rerun must not leave boxed copies that the new manifest no longer uses (a sample now
    rejected, or now already boxed): remove images/<id>.png of this manifest's samples unless an
    accepted sample points at it. Files of ids not in this manifest are never touched."""
    folder = images_out.resolve()
    used = {Path(s.image).name for s in accepted if Path(s.image).parent == folder}
    for sample in samples:
        name = image_name(sample.id)
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
    drawn = clipped = 0
    # threads: Pillow releases the GIL while decoding and encoding; map keeps input order
    with ThreadPoolExecutor(max_workers=cfg.workers) as pool:
        for sample, outcome in zip(samples, pool.map(work, samples)):
            if isinstance(outcome, ImageError):
                errors.append(error_row(sample.id, outcome.code, f"sample {sample.id}: {outcome.message}"))
                continue
            new, was_clipped = outcome
            accepted.append(new)
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
    )
    summary = result.summary()
    write_manifest(accepted, out / "manifest.parquet",
                   meta={"stage": "ingest", "source": str(Path(manifest).resolve()), **summary})
    write_jsonl(errors, out / "errors.jsonl")
    write_json({**summary, "config": cfg.model_dump(mode="json")}, out / "summary.json")
    return result
