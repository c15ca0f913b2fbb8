"""Partial input loses nothing: an unclosed CSV quote, huge cells and bytes that are not UTF-8
cost their own row only, and every input row ends as a sample or one error line (issue 21.2).

    .venv/bin/python -m pytest tests/unit/test_table_rows.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from scenefit.cli import app
from scenefit.core.table_rows import MAX_CELL_CHARS, RowReader
from scenefit.data.manifest import read_manifest

runner = CliRunner()
HEADER = "id,image,object,box,boxed\n"


def csv_lines(n: int, image: str = "img.png") -> list[str]:
    return [f"s{i},{image},dog,\"1,1,20,20\",true\n" for i in range(1, n + 1)]


def write(path: Path, lines: list[str], header: str = HEADER) -> Path:
    path.write_bytes((header + "".join(lines)).encode("utf-8") if isinstance(lines[0], str) else
                     header.encode() + b"".join(lines))
    return path


def test_an_unclosed_quote_costs_one_row_not_the_rest_of_the_file(tmp_path):
    lines = csv_lines(1000)
    lines[9] = 's10,img.png,"cat,"1,1,20,20",true\n'  # row 10: the quote never closes properly
    read = read_manifest(write(tmp_path / "m.csv", lines))
    assert read.rows == 1000 and len(read.samples) == 999
    [err] = read.errors
    assert err["row"] == 10 and err["line"] == 11 and err["code"] == "bad_row"
    assert "line 11" in err["message"] and "unclosed quote" in err["message"]
    assert [s.id for s in read.samples] == [f"s{i}" for i in range(1, 1001) if i != 10]
    assert read.lines == 1000 and read.line_note is None


def test_an_unclosed_quote_at_the_end_of_a_cell_runs_to_the_end_of_the_file(tmp_path):
    """The quote opens the last cell and no other quote follows: csv would read the rest of the
    file as that one cell (and, past 128 KiB, refuse the whole file)."""
    lines = [f"s{i},img.png,true,dog\n" for i in range(1, 5001)]
    lines[9] = 's10,img.png,true,"cat\n'
    read = read_manifest(write(tmp_path / "m.csv", lines, header="id,image,boxed,object\n"))
    assert read.rows == 5000 and len(read.samples) == 4999
    [err] = read.errors
    assert err["row"] == 10 and err["line"] == 11 and err["code"] == "bad_row"


def test_big_cells_reject_their_row_only(tmp_path):
    lines = csv_lines(5000)
    lines[99] = f's100,img.png,{"x" * 200_000},"1,1,20,20",true\n'  # 200 KB: over csv's default limit
    lines[199] = f's200,img.png,{"y" * (MAX_CELL_CHARS + 1)},"1,1,20,20",true\n'
    read = read_manifest(write(tmp_path / "m.csv", lines))
    assert read.rows == 5000 and len(read.samples) == 4999
    assert next(s for s in read.samples if s.id == "s100").object == "x" * 200_000
    [err] = read.errors
    assert err["row"] == 200 and err["code"] == "cell_too_large" and "line 201" in err["message"]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_bytes_that_are_not_utf8_cost_their_row(tmp_path, suffix):
    if suffix == ".csv":
        lines = [line.encode() for line in csv_lines(20)]
        lines[14] = b's15,img\xff.png,dog,"1,1,20,20",true\n'
        path = write(tmp_path / "m.csv", lines)
    else:
        rows = [json.dumps({"id": f"s{i}", "image": "img.png", "object": "dog", "boxed": True}).encode() + b"\n"
                for i in range(1, 21)]
        rows[14] = rows[14].replace(b"dog", b"d\xe9g")  # latin-1, not UTF-8
        path = tmp_path / "m.jsonl"
        path.write_bytes(b"".join(rows))
    read = read_manifest(path)
    assert read.rows == 20 and len(read.samples) == 19
    [err] = read.errors
    line = 16 if suffix == ".csv" else 15
    assert err["code"] == "bad_encoding" and err["line"] == line
    assert f"line {line}: not UTF-8 (byte 0x" in err["message"]


def test_quoted_line_breaks_are_rows_and_the_difference_is_said(tmp_path):
    lines = csv_lines(6)
    lines[2] = 's3,img.png,"hot\ndog","1,1,20,20",true\n'  # a legal cell with a line break
    read = read_manifest(write(tmp_path / "m.csv", lines))
    assert read.rows == 6 and not read.errors and read.samples[2].object == "hot\ndog"
    assert read.lines == 7
    assert "7 data lines but 6 rows" in read.line_note and "row 3 (lines 4-5)" in read.line_note


def test_a_quote_that_swallows_lines_and_leaves_the_wrong_cells_is_reread(tmp_path):
    lines = csv_lines(8)
    lines[2] = 's3,img.png,"dog,"1,1,20,20",true\n'
    lines[5] = 's6,img.png,"cow","1,1,20,20",true\n'
    reader = RowReader(write(tmp_path / "m.csv", lines), "csv")
    out = list(reader)
    assert [r.row for r in out] == list(range(1, 9))
    assert [r.line for r in out if r.data is None] == [4]
    assert [r.data["id"] for r in out if r.data] == ["s1", "s2", "s4", "s5", "s6", "s7", "s8"]


def test_the_reference_lists_exactly_the_codes_ingest_gives():
    """docs/reference.md's list of ingest's error codes is the reference: exactly the codes there are."""
    import re

    from scenefit.core.images import REASON_CODES
    from scenefit.data.manifest import ROW_CODES

    reference = (Path(__file__).resolve().parents[2] / "docs" / "reference.md").read_text()
    listed = reference.split("with a stable `code`:", 1)[1].split("(manifest rows)", 1)[0]
    assert set(re.findall(r"`([a-z_]+)`", listed)) == set(REASON_CODES) | set(ROW_CODES)


def test_ingest_accounts_for_every_input_row(tmp_path):
    Image.new("RGB", (32, 32), (90, 90, 90)).save(tmp_path / "img.png")
    lines = csv_lines(40)
    lines[9] = 's10,img.png,"cat,"1,1,20,20",true\n'
    lines[19] = 's20,img.png,"two\nlines","1,1,20,20",true\n'
    manifest = write(tmp_path / "m.csv", lines)
    out = tmp_path / "ingest"
    res = runner.invoke(app, ["ingest", str(manifest), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert summary["input_rows"] == 40 and summary["input_lines"] == 41
    assert summary["ok"] + len(errors) == 40 and [e["row"] for e in errors] == [10]
    assert "row 20 (lines 21-22)" in summary["line_note"]
    assert "41 data lines but 40 rows" in " ".join(res.output.split())
