"""The typed sample record that flows through every stage.

A sample is one image with one target object marked by a red box. The normalised manifest
(Parquet, written by ``scenefit ingest`` and ``scenefit synth``) has exactly these columns:
``id, image, object, box, group, scene, boxed, synthetic, truth_location, truth_size,
truth_co_occurrence`` — ``box`` is ``[x0, y0, x1, y1]`` in pixels (or null when unknown and
the image already carries its box), truths are label strings or null.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from scenefit.core.criteria import CRITERIA, Criterion, Label
from scenefit.core.images import ImageError, box_pixels, parse_box
from scenefit.core.text import check_object_name

Box = tuple[int, int, int, int]


class Sample(BaseModel):
    """One image, one boxed target object, and (optionally) the known truth per criterion."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="Unique sample id (the paper's coco_index for its data).")
    image: str = Field(description="Path of the image file (absolute, or relative to the manifest).")
    object: str = Field(description="Name of the boxed target object, e.g. 'zebra'.")
    box: Optional[Box] = Field(
        default=None, description="Box in pixels (x0, y0, x1, y1); None when the image already carries it."
    )
    group: Optional[str] = Field(
        default=None, description="Source image / group id: no group is split across train/val/test."
    )
    scene: Optional[str] = Field(default=None, description="Scene type, when known (e.g. 'beach').")
    boxed: bool = Field(default=False, description="True when the red box is already drawn in the image.")
    synthetic: bool = Field(default=False, description="True for samples of the embedded synthetic world.")
    truth: Optional[dict[Criterion, Label]] = Field(
        default=None, description="Known truth per criterion (synthetic world, curated sets)."
    )

    @field_validator("id", "object", "image")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        v = str(v).strip()
        if not v:
            raise ValueError("must not be empty")
        return v

    @field_validator("object")
    @classmethod
    def _safe_object(cls, v: str) -> str:
        # the name goes into every prompt: no special-token spelling, no control characters
        # (kept as written; prompts join its whitespace runs into one space when they render it)
        check_object_name(v, "the object name")
        return v

    @field_validator("box", mode="before")
    @classmethod
    def _box(cls, v):
        try:
            box = parse_box(v)
            return None if box is None else box_pixels(box)
        except ImageError as e:  # pydantic reports ValueErrors
            raise ValueError(e.message) from None

    @model_validator(mode="after")
    def _box_or_boxed(self):
        if self.box is None and not self.boxed:
            raise ValueError("a sample needs a box unless its image is already boxed (boxed=true)")
        return self

    @property
    def final_truth(self) -> Optional[Label]:
        from scenefit.core.criteria import fuse

        if not self.truth:
            return None
        return fuse(self.truth.get(c) for c in CRITERIA)

    def to_row(self) -> dict:
        """Flat row of the normalised manifest (see module docstring)."""
        row = {
            "id": self.id,
            "image": self.image,
            "object": self.object,
            "box": list(self.box) if self.box else None,
            "group": self.group,
            "scene": self.scene,
            "boxed": self.boxed,
            "synthetic": self.synthetic,
        }
        for c in CRITERIA:
            lab = (self.truth or {}).get(c)
            row[f"truth_{c.value}"] = lab.value if lab else None
        return row

    @classmethod
    def from_row(cls, row: dict) -> "Sample":
        """Inverse of :meth:`to_row`; also accepts ``truth_*`` columns holding loose label text."""
        data = {k: row.get(k) for k in ("id", "image", "object", "box", "group", "scene")}
        data["boxed"] = bool(row.get("boxed") or False)
        data["synthetic"] = bool(row.get("synthetic") or False)
        truth = {}
        for c in CRITERIA:
            v = row.get(f"truth_{c.value}")
            if v is not None and v == v and str(v).strip():  # v == v filters NaN from pandas
                lab = Label.parse(str(v))
                if lab is None:
                    raise ValueError(f"truth_{c.value}={v!r} is not a label (In-context / Out-of-context)")
                truth[c] = lab
        data["truth"] = truth or None
        for k in ("group", "scene"):
            if data[k] is not None and (data[k] != data[k] or str(data[k]).strip() == ""):
                data[k] = None
            elif data[k] is not None:
                data[k] = str(data[k])
        data["id"] = str(data["id"]) if data["id"] is not None else ""
        return cls(**data)


MANIFEST_COLUMNS = list(Sample(id="x", image="x", object="x", box=(0, 0, 1, 1)).to_row())


def is_synthetic(*sources: Any) -> bool:
    """The one rule for "does this come from the synthetic world" (outputs made from it carry
    SYNTHETIC_NOTICE): true when any source says so — a table by any true cell of its
    ``synthetic`` column, a mapping (a provenance dict) by its ``synthetic`` key, anything else
    (a Sample, a loaded student's info) by its ``synthetic`` attribute."""
    for source in sources:
        if hasattr(source, "columns"):  # a pandas DataFrame
            flags = source["synthetic"] if "synthetic" in source.columns else ()
            if len(flags) and bool(flags.fillna(False).astype(bool).any()):
                return True
        elif isinstance(source, Mapping):
            if bool(source.get("synthetic")):
                return True
        elif bool(getattr(source, "synthetic", False)):
            return True
    return False
