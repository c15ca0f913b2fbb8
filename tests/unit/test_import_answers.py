"""`scenefit import-answers` never half-writes: bad rows (bytes that are not UTF-8, huge cells,
an unclosed quote) are error lines naming file and line, the rest is stored, and the good rows
go in one transaction (issue 21.6).

    .venv/bin/python -m pytest tests/unit/test_import_answers.py -q
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scenefit.cli import app
from scenefit.teachers.import_answers import import_answers
from scenefit.teachers.store import AnnotationStore

runner = CliRunner()
ANSWER = ("Analysis:\nLocation: it stands on the ground, as expected.\nCo-occurrence: fits, like the rest.\n"
          "Size: normal.\nSummary:\nLocation: In-context\nCo-occurrence: In-context\nSize: In-context\n"
          "Final decision: In-context.")
N = 3000


def answers_csv(path: Path, bad: dict[int, bytes] | None = None) -> dict[int, int]:
    """Write N rows of coco_index,response with multi-line answers; ``bad`` replaces whole rows
    (1-based row number -> the row's raw bytes, line end included). Returns row -> the
    physical line where it starts."""
    out = io.BytesIO()
    out.write(b"coco_index,response\n")
    starts, line = {}, 2
    for i in range(1, N + 1):
        if bad and i in bad:
            data = bad[i]
        else:
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerow([i, ANSWER])
            data = buf.getvalue().encode()
        out.write(data)
        starts[i], line = line, line + data.count(b"\n")
    path.write_bytes(out.getvalue())
    return starts


def test_bad_rows_are_error_lines_and_the_rest_is_stored(tmp_path):
    f = tmp_path / "qwen.csv"
    starts = answers_csv(f, bad={
        1200: b'1200,"' + b"x" * 5_000_000 + b'"\n',   # a 5 MB cell
        1500: b"1500,caf\xe9 is not UTF-8\n",            # latin-1 byte
        2100: b'2100,"never closed\n',                   # an unclosed quote
    })
    db = tmp_path / "a.sqlite"
    res = runner.invoke(app, ["import-answers", str(f), "--teacher", "qwen72b", "--db", str(db), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["rows"] == N and out["stored"] == N - 3 and out["accepted"] == N - 3
    errors = {e["row"]: e for e in out["errors"]}
    assert sorted(errors) == [1200, 1500, 2100]
    for row, e in errors.items():
        assert e["file"] == str(f) and e["line"] == starts[row]
        assert e["message"].startswith(f"qwen.csv line {e['line']}: ")
    assert "characters (limit" in errors[1200]["message"] and "not UTF-8 (byte 0xe9" in errors[1500]["message"]
    assert [errors[r]["code"] for r in (1200, 1500, 2100)] == ["cell_too_large", "bad_encoding", "bad_row"]
    written = [json.loads(line) for line in (tmp_path / "import-errors-qwen72b.jsonl").read_text().splitlines()]
    assert [e["row"] for e in written] == [1200, 1500, 2100]
    with AnnotationStore(db) as store:
        ids = set(store.to_frame()["sample_id"])
    assert len(ids) == N - 3 and not ids & {"1200", "1500", "2100"} and {"1199", "2101", str(N)} <= ids


def test_a_failed_write_leaves_nothing_half_imported(tmp_path):
    f = tmp_path / "qwen.csv"
    answers_csv(f)
    db = tmp_path / "a.sqlite"
    with AnnotationStore(db):
        pass
    with sqlite3.connect(db) as conn:  # the store fails on one row late in the file (disk full, say)
        conn.execute("CREATE TRIGGER boom BEFORE INSERT ON annotations WHEN NEW.sample_id = '2500' "
                     "BEGIN SELECT RAISE(ABORT, 'simulated write failure'); END")
    with AnnotationStore(db) as store:
        with pytest.raises(sqlite3.DatabaseError, match="simulated write failure"):
            import_answers(f, store, "qwen72b")
        assert store.count() == 0


def test_errors_files_of_similar_teacher_names_do_not_collide_and_errors_is_honoured(tmp_path):
    f = tmp_path / "answers.jsonl"
    f.write_text(json.dumps({"sample_id": "1", "response": ANSWER}) + "\n" + json.dumps({"sample_id": "", "response": "x"}) + "\n")
    db = tmp_path / "a.sqlite"
    written = {}
    for teacher in ("a/b", "a_b", "a b"):
        res = runner.invoke(app, ["import-answers", str(f), "--teacher", teacher, "--db", str(db), "--json"])
        assert res.exit_code == 0, res.output
        files = sorted(tmp_path.glob("import-errors-*.jsonl"))
        new = [p for p in files if p not in written.values()]
        assert len(new) == 1, (teacher, files)  # each teacher its own file; "a/b" used to overwrite "a_b"'s
        written[teacher] = new[0]
    assert written["a_b"].name == "import-errors-a_b.jsonl"  # a safe name is kept as it is
    for teacher, path in written.items():
        assert [e["code"] for e in map(json.loads, path.read_text().splitlines())] == ["missing_field"], teacher
    chosen = tmp_path / "out" / "rejected.jsonl"
    res = runner.invoke(app, ["import-answers", str(f), "--teacher", "c", "--db", str(db), "--errors", str(chosen)])
    assert res.exit_code == 0, res.output
    assert [json.loads(line)["line"] for line in chosen.read_text().splitlines()] == [2]
    assert str(chosen) in " ".join(res.output.split()) and not (tmp_path / "import-errors-c.jsonl").exists()
