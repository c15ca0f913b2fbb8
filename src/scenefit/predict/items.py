"""What the predictor accepts, and turning it into the red-boxed RGB image the students saw.

An item is a :class:`~scenefit.core.records.Sample`, a :class:`PredictItem`, a mapping with the
keys ``image, object, box, boxed`` (and optionally ``id``), or a tuple
``(image, object, box)`` / ``(image, object, box, boxed)``. ``image`` is a path, a PIL image or
an image embedded in a dataset row (``{"bytes", "path"}``, as ``scenefit datasets`` writes it).

The box is read by :func:`scenefit.core.images.parse_box` and placed by
:func:`scenefit.core.images.check_box` (the rules of ``scenefit ingest`` and ``scenefit serve``: a small
overshoot past the image edge is clipped, a box mostly outside is refused, code ``box_outside``)
and drawn with :func:`scenefit.core.images.draw_box` unless the image is already boxed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from PIL import Image

from scenefit.core.errors import ScenefitError
from scenefit.core.images import (
    BOX_RED,
    REASON_CODES,
    ImageError,
    check_box,
    check_dimensions,
    draw_box,
    load_stored_image,
    parse_box,
)
from scenefit.core.records import Sample
from scenefit.core.text import UnsafeText, check_object_name

#: Reason codes of a refused item: the image codes of scenefit.core.images plus the item's own.
ITEM_CODES: dict[str, str] = {
    **REASON_CODES,
    "missing_object": "the item names no object",
    "bad_object": "the object name holds a special-token spelling or a control character (scenefit.core.text)",
    "missing_box": "the image is not boxed and the item gives no box",
    "bad_item": "the item is not a Sample, mapping or (image, object, box[, boxed]) tuple",
    "prediction_failed": "the model failed on this item alone (its batch neighbours were judged)",
}

ImageLike = Union[str, os.PathLike, Image.Image]


class ItemError(ScenefitError, ValueError):
    """An item that cannot be judged; ``code`` is one of :data:`ITEM_CODES`."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code if code in ITEM_CODES else "bad_item"
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class PredictItem:
    """One image, one object and its box (None when ``boxed`` and the box is not known)."""

    image: Any
    object: str
    box: Optional[tuple[float, float, float, float]] = None
    boxed: bool = False
    id: Optional[str] = None


def to_item(obj: Any, index: int = 0) -> PredictItem:
    """Normalise any accepted item form (see module docstring) to a PredictItem."""
    if isinstance(obj, PredictItem):
        item = obj
    elif isinstance(obj, Sample):
        item = PredictItem(obj.image, obj.object, obj.box, obj.boxed, obj.id)
    elif isinstance(obj, dict):
        item = PredictItem(obj.get("image"), obj.get("object") or "", obj.get("box"), bool(obj.get("boxed", False)),
                           obj.get("id"))
    elif isinstance(obj, (tuple, list)) and len(obj) in (3, 4):
        item = PredictItem(obj[0], obj[1] or "", obj[2], bool(obj[3]) if len(obj) == 4 else False)
    else:
        raise ItemError("bad_item", f"item {index}: expected a Sample, a mapping or (image, object, box[, boxed]), "
                                    f"got {type(obj).__name__}")
    if item.id is None:
        item = PredictItem(item.image, item.object, item.box, item.boxed, _default_id(item.image, index))
    return item


def _default_id(image: Any, index: int) -> str:
    if isinstance(image, (str, os.PathLike)):
        return f"{index}:{Path(image).name}"
    return str(index)


def prepare_image(item: PredictItem, box_width: Optional[int] = None, box_color: Sequence[int] = BOX_RED,
                  max_pixels: Optional[int] = None) -> Image.Image:
    """The red-boxed RGB image of an item; raises ItemError naming the item and the problem."""
    where = f"item {item.id}"
    if not str(item.object or "").strip():
        raise ItemError("missing_object", f"{where}: no object name")
    try:
        check_object_name(item.object)
    except UnsafeText as e:
        raise ItemError(e.code, f"{where}: {e.message}") from None
    try:
        box = parse_box(item.box)
    except ImageError as e:
        raise ItemError(e.code, f"{where}: {e.message}") from None
    if box is None and not item.boxed:
        raise ItemError("missing_box", f"{where}: the image is not boxed and no box was given")
    try:
        if isinstance(item.image, Image.Image):
            w, h = item.image.size
            check_dimensions(w, h, "image")
            if max_pixels is not None and w * h > max_pixels:
                raise ImageError("too_large", f"{w}x{h} = {w * h:,} pixels exceeds the cap of {max_pixels:,}")
            image = item.image
        elif isinstance(item.image, dict) or (isinstance(item.image, (str, os.PathLike)) and str(item.image).strip()):
            kwargs = {"max_pixels": max_pixels} if max_pixels is not None else {}
            image = load_stored_image(item.image, **kwargs)  # a path, or an image embedded in a dataset row
        else:
            raise ItemError("bad_item", f"{where}: image must be a path, a PIL image or an embedded image "
                                        f"{{'bytes', 'path'}}, got {type(item.image).__name__}")
        if box is not None:
            box = check_box(box, image.size)  # ingest's and serve's rule: a known box must lie on the image
        if item.boxed:
            return image.convert("RGB") if image.mode != "RGB" else image
        return draw_box(image, box, width=box_width, color=tuple(box_color))
    except ImageError as e:
        raise ItemError(e.code, f"{where}: {e.message}") from None
