"""Deterministic Parquet files for the data stages (consensus, split, student datasets).

The same input and seed must give byte-identical files, so every table is written through
:func:`write_table`: an explicit Arrow schema (an all-null column keeps its declared type, so
train/val/test files of one dataset always share a schema), no pandas index, fixed
compression and row-group size, and the stage's provenance as one JSON value under the
schema metadata key ``scenefit`` (sorted keys, no timestamps).

Image paths (:data:`PATH_COLUMNS`) are stored relative to the table's folder when the image
lies in the same run folder, and :func:`read_table` resolves them against the file's folder
again: a finished run folder can be moved or shared and every later stage still finds its
images. (Read with plain pandas/pyarrow/``datasets``, they are relative to the file's folder.)
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from scenefit.core.errors import DatasetError
from scenefit.core.files import atomic_path

META_KEY = b"scenefit"

#: Arrow type of every column the data stages write; unknown columns fall back to string.
COLUMN_TYPES: dict[str, pa.DataType] = {
    "id": pa.string(),
    "image": pa.string(),
    "object": pa.string(),
    "box": pa.list_(pa.int64()),
    "group": pa.string(),
    "scene": pa.string(),
    "boxed": pa.bool_(),
    "synthetic": pa.bool_(),
    "n_teachers": pa.int64(),
    "n_usable": pa.int64(),
    # soft labels (probabilities of Out-of-context): float even when every value is null
    "teacher_p_out": pa.float64(),
    "teachers_mean_p_out": pa.float64(),
    **{f"{who}_p_out_{f}": pa.float64() for who in ("designated", "teachers_mean")
       for f in ("location", "size", "co_occurrence", "final")},
}


#: Columns holding image paths: stored relative to the table's folder, resolved on read.
PATH_COLUMNS = ("image",)
#: How many folders up a stored relative path may climb. run/<stage>/table.parquet and
#: run/datasets/<criterion>/table.parquet reach every folder of their run in two; an image
#: further off (a shared dataset folder) keeps its absolute path, which survives moving the run.
MAX_RELATIVE_UP = 2


def portable_path(path: Any, folder: Path) -> Any:
    """``path`` as stored in a table in ``folder``: relative when it lies within
    :data:`MAX_RELATIVE_UP` folders of it, else unchanged (absolute, or not a path)."""
    if not isinstance(path, str) or not os.path.isabs(path):
        return path
    head, name = os.path.split(path)
    rel_dir = _relative_dir(head, str(folder))
    if rel_dir is None:
        return path
    return name if rel_dir == "." else f"{rel_dir}/{name}"


@lru_cache(maxsize=4096)
def _relative_dir(directory: str, folder: str) -> Optional[str]:
    """``directory`` relative to ``folder`` (POSIX separators), or None when it climbs more than
    MAX_RELATIVE_UP folders or cannot be reached relatively. Cached: a table's images share a
    few folders, and relpath per row would cost seconds per 100k rows."""
    try:
        rel = os.path.relpath(directory, folder)
    except ValueError:  # another drive (Windows): only an absolute path reaches it
        return None
    parts = Path(rel).parts
    ups = next((i for i, part in enumerate(parts) if part != ".."), len(parts))
    return None if ups > MAX_RELATIVE_UP else Path(rel).as_posix()


def resolved_path(path: Any, folder: Path) -> Any:
    """The inverse of :func:`portable_path` for a table read from ``folder``."""
    if not isinstance(path, str) or not path or os.path.isabs(path):
        return path
    head, name = os.path.split(path)
    return os.path.join(_absolute_dir(head, str(folder)), name)


@lru_cache(maxsize=4096)
def _absolute_dir(relative: str, folder: str) -> str:
    return os.path.normpath(os.path.join(folder, relative))


def _arrow_type(column: str, series: pd.Series) -> pa.DataType:
    if column in COLUMN_TYPES:
        return COLUMN_TYPES[column]
    if pd.api.types.is_bool_dtype(series):
        return pa.bool_()
    if pd.api.types.is_integer_dtype(series):
        return pa.int64()
    if pd.api.types.is_float_dtype(series):
        return pa.float64()
    return pa.string()


def write_table(df: pd.DataFrame, path: Path | str, meta: Optional[Mapping[str, Any]] = None,
                types: Optional[Mapping[str, pa.DataType]] = None,
                batches: Optional[Callable[[pd.DataFrame], pd.DataFrame]] = None, batch_rows: int = 64 * 1024,
                schema_metadata: Optional[Mapping[bytes, bytes]] = None) -> Path:
    """Write ``df`` as Parquet with fixed settings; ``meta`` is stored as JSON provenance.

    ``types`` overrides the Arrow type of named columns (a path column named there is not made
    relative: ``batches`` gets it as given); ``batches``, when given, turns each
    slice of ``batch_rows`` rows into what is written (one row group each, so only one slice's
    converted rows are in memory: e.g. image bytes read per slice); ``schema_metadata`` adds keys
    beside the provenance (e.g. ``huggingface`` features)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.parent.resolve()
    types = dict(types or {})
    # a column of a given type is written as ``batches`` makes it (e.g. an image path turned into the image)
    df = df.assign(**{c: df[c].map(lambda p: portable_path(p, folder))
                      for c in PATH_COLUMNS if c in df.columns and c not in types})
    schema = pa.schema([pa.field(c, types.get(c) or _arrow_type(c, df[c])) for c in df.columns])
    # Only our own metadata: pandas' block adds nothing a reader needs and ties files to versions.
    metadata = {META_KEY: json.dumps(dict(meta or {}), sort_keys=True, default=str).encode(), **(schema_metadata or {})}
    schema = schema.with_metadata(metadata)
    with atomic_path(path) as tmp:  # a killed run never leaves half a file under the final name
        with pq.ParquetWriter(tmp, schema, compression="zstd", compression_level=3, use_dictionary=True,
                              write_statistics=True, store_schema=True) as writer:
            for start in range(0, max(len(df), 1), batch_rows):
                part = df.iloc[start:start + batch_rows]
                part = batches(part) if batches is not None else part
                writer.write_table(pa.Table.from_pandas(part, schema=schema, preserve_index=False),
                                   row_group_size=batch_rows)
    return path


def read_table(path: Path | str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a file written by :func:`write_table`: (frame, provenance dict)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Parquet file not found: {path}")
    table = pq.read_table(path)
    df = table.to_pandas()
    folder = path.parent.resolve()
    for c in PATH_COLUMNS:
        if c in df.columns:
            _refuse_paths_leaving_the_run(df, c, path)
            df[c] = df[c].map(lambda p: resolved_path(p, folder))
    return df, read_meta(table.schema)


def _refuse_paths_leaving_the_run(df: pd.DataFrame, column: str, path: Path) -> None:
    """A relative path that climbs more than :data:`MAX_RELATIVE_UP` folders above its table
    leaves the run: :func:`portable_path` never writes one (an image further off keeps its
    absolute path, in plain sight), so a table holding one was made or edited by hand, and a
    ``../../../../home/...`` disguised as a file of the run is refused, naming the row."""
    for i, p in enumerate(df[column]):
        if isinstance(p, str) and p and not os.path.isabs(p) and _climb(p) > MAX_RELATIVE_UP:
            who = f"row {df['id'].iloc[i]!r}" if "id" in df.columns else f"row {i}"
            raise DatasetError(f"{path}: {who}: {column} path {p!r} leaves the run (it climbs {_climb(p)} folders above "
                             f"the table; scenefit stores relative paths within {MAX_RELATIVE_UP}, farther images by "
                             "their absolute path); write it absolute if that image is meant")


def _climb(relative: str) -> int:
    """How many folders above its start a relative path reaches at its highest."""
    depth = lowest = 0
    for part in Path(relative).parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        lowest = min(lowest, depth)
    return -lowest


def read_meta(schema_or_path: pa.Schema | Path | str) -> dict[str, Any]:
    schema = schema_or_path if isinstance(schema_or_path, pa.Schema) else pq.read_schema(schema_or_path)
    raw = (schema.metadata or {}).get(META_KEY)
    return json.loads(raw) if raw else {}


