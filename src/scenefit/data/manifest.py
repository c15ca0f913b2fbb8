"""Read sample manifests (JSONL, CSV, Parquet; scenefit or the paper's layout) and write the
normalised Parquet manifest.

    from scenefit.data.manifest import read_manifest, write_manifest
    samples, errors = read_manifest("data/samples.csv")          # format from the suffix
    samples, errors = read_manifest("paper.parquet", layout="paper", images_dir="images/")
    write_manifest(samples, "out/manifest.parquet")              # exactly MANIFEST_COLUMNS

A bad row never stops the read: it becomes an error row ``{"id", "code", "message", "row", "line"}``
(:func:`scenefit.core.errors.error_row`)
(``row`` is 1-based among the data rows, ``line`` the physical line where it starts in a CSV
or JSONL file) and the other rows go on — also after an unclosed quote, bytes that are not
UTF-8 or a huge cell (see :mod:`scenefit.core.table_rows`). The result also says how many rows
and non-blank data lines the file had, and a note when they differ.

Columns of the ``scenefit`` layout (aliases in brackets; the first non-empty one wins):

- ``id`` [sample_id], ``image`` [image_path, path], ``object`` [object_name, name]
- the box, in pixels, either as one column ``box`` [bbox] holding ``"x0,y0,x1,y1"`` or a list
  of four numbers, or as four columns: ``x0,y0,x1,y1`` or ``xmin,ymin,xmax,ymax`` (corners),
  or ``x,y,w,h`` (top-left corner plus width and height, COCO style)
- ``group`` [group_id, source_id], ``scene``, ``boxed``, ``synthetic``,
  ``truth_location``, ``truth_size``, ``truth_co_occurrence`` (label text)

The ``paper`` layout has ``coco_index`` and ``replacement_object`` (plus optional box columns
as above); its images are already boxed and named ``<coco_index>.png`` under ``images_dir``.
``layout="auto"`` picks ``paper`` when those two columns are present and ``id`` is not.
Relative image paths resolve against ``images_dir`` when given, else the manifest's folder;
the samples carry absolute paths.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Optional

from pydantic import ValidationError

from scenefit.core.errors import ScenefitError, error_row
from scenefit.core.images import BoxStyle, ImageError, parse_box
from scenefit.core.records import MANIFEST_COLUMNS, Sample
from scenefit.core.table_rows import (
    BAD_ENCODING,
    BAD_ROW,
    CELL_TOO_LARGE,
    MAX_CELL_CHARS,
    ManifestError,
    RowReader,
    cell_text,
    detect_format,
    is_blank,
)

Layout = Literal["auto", "scenefit", "paper"]

ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id", "sample_id"),
    "image": ("image", "image_path", "path"),
    "object": ("object", "object_name", "name"),
    "group": ("group", "group_id", "source_id"),
    "scene": ("scene",),
    "boxed": ("boxed",),
    "synthetic": ("synthetic",),
    "truth_location": ("truth_location",),
    "truth_size": ("truth_size",),
    "truth_co_occurrence": ("truth_co_occurrence",),
}
BOX_COLUMNS = ("box", "bbox")
#: four-column box spellings: (column names, True when the last two are width and height).
BOX_QUADS: tuple[tuple[tuple[str, str, str, str], bool], ...] = (
    (("x0", "y0", "x1", "y1"), False),
    (("xmin", "ymin", "xmax", "ymax"), False),
    (("x", "y", "w", "h"), True),
)
PAPER_ID, PAPER_OBJECT = "coco_index", "replacement_object"
#: code -> what it means, for manifest rows (image problems: scenefit.core.images.REASON_CODES).
ROW_CODES: dict[str, str] = {
    BAD_ROW: "the row cannot be read as a row (CSV quoting, e.g. an unclosed quote; not JSON; extra cells)",
    BAD_ENCODING: "the row holds bytes that are not UTF-8",
    CELL_TOO_LARGE: f"a cell holds more than {MAX_CELL_CHARS:,} characters",
    "missing_field": "no id, image or object",
    "bad_box": "the box is not four numbers, or is empty, inverted or negative",
    "bad_value": "a flag or a truth label that cannot be read",
    "duplicate_id": "the id is already used by an earlier row",
    "bad_object": "the object name holds a special-token spelling or a control character (scenefit.core.text)",
}


class RowError(ScenefitError, ValueError):
    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code = code


def _flag(v: Any, column: str) -> bool:
    if is_blank(v):
        return False
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "y", "t", "1.0"):
        return True
    if s in ("0", "false", "no", "n", "f", "0.0"):
        return False
    raise RowError("bad_value", f"{column}={v!r} is not true/false")


def _first(row: dict, names: tuple[str, ...]) -> Any:
    for n in names:
        if n in row and not is_blank(row[n]):
            return row[n]
    return None


def _number(v: Any, column: str) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        raise RowError("bad_box", f"{column}={v!r} is not a number") from None


def _box(row: dict) -> Optional[tuple[float, float, float, float]]:
    """The box as (x0, y0, x1, y1) from whichever spelling the row uses, or None; its values are
    checked where the Sample is made (scenefit.core.images.box_pixels)."""
    for col in BOX_COLUMNS:
        v = row.get(col)
        if is_blank(v):
            continue
        try:
            return parse_box(v)
        except ImageError as e:
            raise RowError("bad_box", f"{col}: {e.message}") from None
    for names, is_wh in BOX_QUADS:
        present = [n for n in names if not is_blank(row.get(n))]
        if not present:
            continue
        if len(present) < 4:
            missing = [n for n in names if n not in present]
            raise RowError("bad_box", f"box columns {','.join(names)} incomplete: {','.join(missing)} missing")
        a, b, c, d = (_number(row[n], n) for n in names)
        if is_wh:
            if not (c > 0 and d > 0):
                raise RowError("bad_box", f"box width/height must be positive, got w={c:g}, h={d:g}")
            return a, b, a + c, b + d
        return a, b, c, d
    return None


def _resolve_image(value: str, base: Path) -> str:
    p = Path(os.path.expanduser(value))
    if not p.is_absolute():
        p = base / p
    return str(p.resolve())


def detect_layout(columns: set[str]) -> str:
    if PAPER_ID in columns and PAPER_OBJECT in columns and not (columns & set(ALIASES["id"])):
        return "paper"
    return "scenefit"


def row_to_sample(row: dict, layout: str, image_base: Path) -> Sample:
    """One raw row to a Sample; RowError (code, reason) when it cannot be one."""
    data: dict[str, Any] = {}
    if layout == "paper":
        sid = cell_text(row.get(PAPER_ID))
        if sid is None:
            raise RowError("missing_field", f"{PAPER_ID} is empty")
        obj = cell_text(row.get(PAPER_OBJECT))
        if obj is None:
            raise RowError("missing_field", f"{PAPER_OBJECT} is empty")
        data.update(id=sid, object=obj, group=sid, boxed=True,
                    image=_resolve_image(f"{sid}.png", image_base))
        for f in ("scene", "truth_location", "truth_size", "truth_co_occurrence"):
            data[f] = _first(row, ALIASES[f])
        data["synthetic"] = _flag(_first(row, ALIASES["synthetic"]), "synthetic")
    else:
        for f in ("id", "image", "object"):
            v = cell_text(_first(row, ALIASES[f]))
            if v is None:
                raise RowError("missing_field", f"no {f} (columns tried: {', '.join(ALIASES[f])})")
            data[f] = v
        data["image"] = _resolve_image(data["image"], image_base)
        for f in ("group", "scene", "truth_location", "truth_size", "truth_co_occurrence"):
            data[f] = _first(row, ALIASES[f])
        data["group"] = cell_text(data["group"])
        for f in ("boxed", "synthetic"):
            data[f] = _flag(_first(row, ALIASES[f]), f)
    data["box"] = _box(row)
    try:
        return Sample.from_row(data)
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            msgs.append(f"{loc}: {msg}" if loc else msg)
        locs = {str(err["loc"][0]) for err in e.errors() if err["loc"]}
        code = "bad_object" if "object" in locs else "bad_box" if any("box" in m for m in msgs) else "bad_value"
        raise RowError(code, "; ".join(msgs)) from None
    except ValueError as e:  # from_row's label check
        raise RowError("bad_value", str(e)) from None


@dataclass
class ManifestRead:
    """What :func:`read_manifest` read. Unpacks as ``samples, errors``."""

    samples: list[Sample]
    errors: list[dict]
    rows: int  # data rows read: each is one sample or one error
    lines: Optional[int]  # non-blank physical data lines (CSV/JSONL; None for Parquet)
    line_note: Optional[str]  # says so when lines and rows differ (see scenefit.core.table_rows)

    def __iter__(self) -> Iterator[list]:
        yield self.samples
        yield self.errors


def _where(raw) -> str:
    return f"row {raw.row}" + (f" (line {raw.line})" if raw.line is not None else "")


def read_manifest(
    path: str | os.PathLike,
    fmt: Optional[str] = None,
    layout: Layout = "auto",
    images_dir: Optional[str | os.PathLike] = None,
) -> ManifestRead:
    """Samples of a manifest and one error dict per rejected row (see module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"manifest not found: {p}")
    if layout not in ("auto", "scenefit", "paper"):
        raise ManifestError(f"unknown layout {layout!r}; use auto, scenefit or paper")
    fmt = detect_format(p, fmt)
    base = Path(images_dir).expanduser().resolve() if images_dir else p.resolve().parent
    samples: list[Sample] = []
    errors: list[dict] = []
    seen: dict[str, int] = {}
    chosen = None if layout == "auto" else layout
    reader = RowReader(p, fmt)
    for raw in reader:
        i, row = raw.row, raw.data
        where = {"row": i} if raw.line is None else {"row": i, "line": raw.line}
        if row is None:
            errors.append(error_row(f"row {i}", raw.code, f"row {i}: {raw.problem}", **where))
            continue
        if chosen is None:
            chosen = detect_layout(set(row))
        try:
            s = row_to_sample(row, chosen, base)
        except RowError as e:
            rid = cell_text(row.get(PAPER_ID) if chosen == "paper" else _first(row, ALIASES["id"]))
            errors.append(error_row(rid or f"row {i}", e.code, f"{_where(raw)}: {e}", **where))
            continue
        if s.id in seen:
            errors.append(error_row(s.id, "duplicate_id", f"{_where(raw)}: id {s.id!r} already used by row {seen[s.id]}",
                                    **where))
            continue
        seen[s.id] = i
        samples.append(s)
    return ManifestRead(samples, errors, reader.rows, reader.lines, reader.line_note())


def manifest_box_style(path: str | os.PathLike, fmt: Optional[str] = None) -> Optional[BoxStyle]:
    """How the boxes already drawn in a manifest's images were drawn, when the manifest says so: a
    normalised Parquet manifest written by ``synth`` or ``ingest`` carries ``box_style`` in its
    provenance. None for any other manifest (a CSV or JSONL file, images boxed elsewhere)."""
    from scenefit.core.parquet_io import read_meta

    p = Path(path)
    if detect_format(p, fmt) != "parquet":
        return None
    try:
        style = read_meta(p).get("box_style")
        return BoxStyle.model_validate(style) if style else None
    except (OSError, ValueError):  # unreadable provenance: the reader reports the file itself
        return None


def write_manifest(samples: list[Sample], path: str | os.PathLike, meta: Optional[dict] = None) -> Path:
    """Write the normalised Parquet manifest (exactly MANIFEST_COLUMNS), atomically and
    deterministically (through :func:`scenefit.core.parquet_io.write_table`).

    ``meta`` goes into the file's provenance; when any sample is synthetic it also carries
    ``notice`` = SYNTHETIC_NOTICE, so the file itself says where it comes from.
    """
    import pandas as pd

    from scenefit import SYNTHETIC_NOTICE
    from scenefit.core.parquet_io import write_table

    provenance = dict(meta or {})
    if any(s.synthetic for s in samples):
        provenance["notice"] = SYNTHETIC_NOTICE
    frame = pd.DataFrame([s.to_row() for s in samples], columns=MANIFEST_COLUMNS)
    return write_table(frame, path, provenance)
