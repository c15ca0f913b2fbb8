"""Raw rows of a CSV, JSONL or Parquet file, read so that one bad row never costs another.

    from scenefit.core.table_rows import RowReader
    reader = RowReader(Path("answers.csv"), "csv")
    for raw in reader:                   # RawRow(row, line, data, code, problem)
        ...
    reader.line_note()                   # says so when the file's lines and its rows differ

The manifest reader (:mod:`scenefit.data.manifest`) and ``import-answers`` both read through it.
What it guarantees, for CSV and JSONL:

- every data row comes out exactly once, either with its cells (``data``) or with an error
  ``code`` and a ``problem`` naming its physical line;
- an unclosed quote costs one row, not the rest of the file: a record that ends in a quoting
  error, or that runs over several lines and leaves the wrong number of cells, is reported
  as a bad row at the line where it starts, and reading goes on at the next line;
- bytes that are not UTF-8 make their row ``bad_encoding`` (the others are read);
- a cell longer than ``max_cell_chars`` makes its row ``cell_too_large`` instead of
  refusing the whole file (Python's csv refuses fields over 128 KiB by default);
- after iteration, ``lines`` (non-blank physical data lines) and ``rows`` can be compared:
  quoted cells with line breaks make them differ, and :meth:`RowReader.line_note` says so
  and names the rows, so a quote that swallowed lines is never silent.

Only a header that cannot be read, or a damaged Parquet file, refuses the whole file
(:class:`ManifestError`).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from scenefit.core.errors import ScenefitError

#: Longest cell (characters) a row may hold; longer ones reject their row, not the file.
MAX_CELL_CHARS = 1_000_000
#: Error codes of rows that could not be read as rows (the manifest adds its own).
BAD_ROW, BAD_ENCODING, CELL_TOO_LARGE = "bad_row", "bad_encoding", "cell_too_large"

# Bytes that are not UTF-8 are decoded with surrogateescape: each becomes one lone surrogate
# U+DC80..U+DCFF, so a bad byte stays on its own line and row and can be reported there.
_UNDECODABLE = re.compile("[\udc80-\udcff]")
# The csv module refuses longer fields with an error that would cost the whole file; rows
# with long cells are judged by max_cell_chars instead. Raising the process-wide limit only
# lets other readers accept more.
_CSV_FIELD_LIMIT = 2**31 - 1


class ManifestError(ScenefitError, ValueError):
    """The file as a whole cannot be read (missing, unknown format, unreadable header or Parquet)."""


@dataclass(frozen=True)
class RawRow:
    row: int  # 1-based among the data rows
    line: Optional[int]  # 1-based physical line where the row starts (None for Parquet)
    data: Optional[dict[str, Any]]  # the cells, or None when the row could not be read
    code: Optional[str] = None  # why not (BAD_ROW, BAD_ENCODING, CELL_TOO_LARGE)
    problem: Optional[str] = None  # the reason, naming the line


class _Lines:
    """The file's physical lines as an iterator whose position can be set back (after a bad
    record the csv reader starts again one line after the record's first line)."""

    def __init__(self, lines: list[str]):
        self.lines, self.pos = lines, 0

    def __iter__(self) -> "_Lines":
        return self

    def __next__(self) -> str:
        if self.pos >= len(self.lines):
            raise StopIteration
        self.pos += 1
        return self.lines[self.pos - 1]


def _undecodable(text: str) -> Optional[str]:
    """'byte 0xff at column 7' for the first byte of ``text`` that was not UTF-8, else None."""
    m = _UNDECODABLE.search(text)
    if m is None:
        return None
    return f"byte 0x{ord(m.group()) - 0xDC00:02x} at column {m.start() + 1}"


def _too_long(cells: dict[str, Any], limit: int) -> Optional[str]:
    for name, value in cells.items():
        if isinstance(value, str) and len(value) > limit:
            return f"cell {str(name)[:40]!r} holds {len(value):,} characters (limit {limit:,})"
    return None


@dataclass
class RowReader:
    """Iterate :class:`RawRow` s of ``path`` read as ``fmt`` (csv, jsonl or parquet)."""

    path: Path
    fmt: str
    max_cell_chars: int = MAX_CELL_CHARS
    lines: Optional[int] = None  # non-blank physical data lines (CSV/JSONL), after iteration
    rows: int = 0  # rows given out, after iteration
    multiline: list[tuple[int, int, int]] = field(default_factory=list)  # (row, first line, last line)

    def __iter__(self) -> Iterator[RawRow]:
        self.rows, self.multiline = 0, []
        if self.fmt == "parquet":
            rows = self._parquet()
        elif self.fmt == "csv":
            rows = self._csv()
        else:
            rows = self._jsonl()
        for raw in rows:
            self.rows += 1
            yield raw

    def line_note(self) -> Optional[str]:
        """One sentence when the file's non-blank data lines and its rows differ, else None."""
        if self.lines is None or self.lines == self.rows:
            return None
        shown = ", ".join(f"row {r} (lines {a}-{b})" for r, a, b in self.multiline[:5])
        more = f" and {len(self.multiline) - 5} more" if len(self.multiline) > 5 else ""
        return (f"{self.path.name}: {self.lines} data lines but {self.rows} rows read; "
                f"{len(self.multiline)} row(s) hold line breaks inside a quoted cell: {shown}{more}. "
                "If your cells have no line breaks, look there for an unclosed quote.")

    # -- formats ----------------------------------------------------------------------------
    def _physical_lines(self) -> list[str]:
        data = self.path.read_bytes()
        if data.startswith(codecs.BOM_UTF8):
            data = data[len(codecs.BOM_UTF8):]
        # newline="": split at \n, \r\n and \r as the csv module does, keeping the endings
        return list(io.StringIO(data.decode("utf-8", errors="surrogateescape"), newline=""))

    def _parquet(self) -> Iterator[RawRow]:
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(self.path).to_pylist()
        except Exception as e:  # pyarrow raises several types for a damaged file
            raise ManifestError(f"{self.path}: not a readable Parquet file ({e})") from None
        for i, row in enumerate(rows, 1):
            too_long = _too_long(row, self.max_cell_chars)
            if too_long:
                yield RawRow(i, None, None, CELL_TOO_LARGE, f"row {i}: {too_long}")
            else:
                yield RawRow(i, None, row)

    def _jsonl(self) -> Iterator[RawRow]:
        physical = self._physical_lines()
        self.lines = sum(1 for line in physical if line.strip())
        i = 0
        for line_no, line in enumerate(physical, 1):
            if not line.strip():
                continue
            i += 1
            bad = _undecodable(line)
            if bad:
                yield RawRow(i, line_no, None, BAD_ENCODING, f"line {line_no}: not UTF-8 ({bad})")
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield RawRow(i, line_no, None, BAD_ROW, f"line {line_no}: not valid JSON ({e.msg})")
                continue
            if not isinstance(row, dict):
                yield RawRow(i, line_no, None, BAD_ROW,
                             f"line {line_no}: expected a JSON object, got {type(row).__name__}")
                continue
            too_long = _too_long(row, self.max_cell_chars)
            if too_long:
                yield RawRow(i, line_no, None, CELL_TOO_LARGE, f"line {line_no}: {too_long}")
                continue
            yield RawRow(i, line_no, row)

    def _csv(self) -> Iterator[RawRow]:
        if csv.field_size_limit() < _CSV_FIELD_LIMIT:
            csv.field_size_limit(_CSV_FIELD_LIMIT)
        delimiter = "\t" if self.path.suffix.lower() == ".tsv" else ","
        src = _Lines(self._physical_lines())

        def reader():
            return csv.reader(src, delimiter=delimiter, strict=True)

        records = reader()
        try:
            header = next(records)
        except StopIteration:
            self.lines = 0
            return
        except csv.Error as e:
            raise ManifestError(f"{self.path}: the header line is not readable as CSV ({e})") from None
        if _undecodable("".join(header)):
            raise ManifestError(f"{self.path}: the header line is not UTF-8 ({_undecodable(''.join(header))})")
        header_end = src.pos
        self.lines = sum(1 for line in src.lines[header_end:] if line.strip())
        i = 0
        while True:
            start = src.pos
            try:
                cells = next(records)
            except StopIteration:
                return
            except csv.Error as e:
                # A quoting error (most often an unclosed quote running to the next quote or
                # the end of the file): this line is the bad row; the next line is read anew.
                i += 1
                yield RawRow(i, start + 1, None, BAD_ROW, f"line {start + 1}: not readable as CSV ({e}); "
                             "an unclosed quote? the lines after it are read on their own")
                src.pos = start + 1
                records = reader()
                continue
            if not cells:  # a blank line is no row
                continue
            i += 1
            first, last = start + 1, src.pos
            if last > first and len(cells) != len(header):
                yield RawRow(i, first, None, BAD_ROW,
                             f"line {first}: a quoted cell runs over lines {first}-{last} and leaves "
                             f"{len(cells)} cells for {len(header)} columns (an unclosed quote?); "
                             "the lines after it are read on their own")
                src.pos = start + 1
                records = reader()
                continue
            if last > first:
                self.multiline.append((i, first, last))
            bad = _undecodable("".join(cells))
            if bad:
                where = next(n for n in range(first, last + 1) if _undecodable(src.lines[n - 1]))
                yield RawRow(i, first, None, BAD_ENCODING,
                             f"line {where}: not UTF-8 ({_undecodable(src.lines[where - 1])})")
                continue
            if len(cells) > len(header):
                yield RawRow(i, first, None, BAD_ROW, f"line {first}: more cells than header columns")
                continue
            row = dict(zip(header, cells))
            for name in header[len(cells):]:  # a short row: the missing cells are empty
                row.setdefault(name, None)
            too_long = _too_long(row, self.max_cell_chars)
            if too_long:
                yield RawRow(i, first, None, CELL_TOO_LARGE, f"line {first}: {too_long}")
                continue
            yield RawRow(i, first, row)


FORMATS = ("jsonl", "csv", "parquet")
_SUFFIX_FORMAT = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".csv": "csv", ".tsv": "csv",
    ".parquet": "parquet", ".pq": "parquet",
}


def detect_format(path: Path, fmt: Optional[str] = None) -> str:
    if fmt:
        fmt = fmt.lower()
        if fmt not in FORMATS:
            raise ManifestError(f"unknown manifest format {fmt!r}; known: {', '.join(FORMATS)}")
        return fmt
    try:
        return _SUFFIX_FORMAT[path.suffix.lower()]
    except KeyError:
        raise ManifestError(
            f"{path}: cannot tell the format from the suffix {path.suffix!r}; "
            f"use one of {', '.join(sorted(_SUFFIX_FORMAT))} or say the format (--format {'|'.join(FORMATS)})"
        ) from None


def is_blank(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return isinstance(v, str) and not v.strip()


def cell_text(v: Any) -> Optional[str]:
    """A cell as stripped text, None when blank; integral floats (pandas/CSV ids like 12.0) lose the '.0'."""
    if is_blank(v):
        return None
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()
