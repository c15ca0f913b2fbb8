"""Annotation store: schema, WAL, per-batch writes, no duplicates, redo of failures only,
prompt hashes side by side, re-parse, frame and summary.

    .venv/bin/python -m pytest tests/unit/test_store.py -q
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from scenefit.teachers.parse import TeacherParse, parse_teacher_answer
from scenefit.teachers.store import COLUMNS, FAILED, AnnotationStore, parsed_fields

ANSWER = """Analysis:
Location: It stands on the sand.
Co-occurrence: Zebras are not found on beaches.
Size: It is as tall as the person.
Summary:
Location: In-context
Co-occurrence: Out-of-context
Size: In-context
Final decision: Out-of-context."""


def answer_row(sid, teacher="t1", ph="h1", raw=ANSWER, **extra):
    row = {"sample_id": sid, "teacher": teacher, "prompt_hash": ph, "model_id": "m", "backend": "simulated", "raw": raw,
           "decoding": {"temperature": 0.0, "max_tokens": 64, "seed": 3}, "latency_s": 0.5, "attempts": 1}
    row.update(parsed_fields(parse_teacher_answer(raw)))
    row.update(extra)
    return row


def failed_row(sid, teacher="t1", ph="h1", reason="http_500: boom"):
    return {"sample_id": sid, "teacher": teacher, "prompt_hash": ph, "raw": None, "status": FAILED, "reason": reason, "attempts": 5}


@pytest.fixture
def store(tmp_path):
    with AnnotationStore(tmp_path / "a" / "ann.sqlite") as s:
        yield s


def test_schema_wal_and_primary_key(store):
    mode = store._conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode.lower() == "wal"
    info = store._conn.execute("PRAGMA table_info(annotations)").fetchall()
    assert [r[1] for r in info] == COLUMNS
    pk = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]]
    assert pk == ["sample_id", "teacher", "prompt_hash"]


def test_put_many_stores_parsed_fields_and_provenance(store):
    assert store.put_many([answer_row("1"), answer_row("2")]) == 2
    df = store.to_frame()
    assert list(df.columns) == COLUMNS and len(df) == 2
    r = df.set_index("sample_id").loc["1"]
    assert r["label_co_occurrence"] == "Out-of-context" and r["final"] == "Out-of-context" and r["status"] == "ok"
    assert r["analysis_location"] == "It stands on the sand."
    assert json.loads(r["decoding"]) == {"temperature": 0.0, "max_tokens": 64, "seed": 3}
    assert r["created_at"] and r["latency_s"] == 0.5


def test_rewriting_a_done_key_never_duplicates_nor_overwrites(store):
    store.put_many([answer_row("1")])
    assert store.put_many([answer_row("1", raw="Final decision: In-context")]) == 0
    assert store.put_many([answer_row("1", raw="Final decision: In-context")], redo_failed=True) == 0
    assert store.count() == 1
    assert store.to_frame().iloc[0]["raw"] == ANSWER


def test_failures_are_done_unless_redone_and_only_failures_are_replaced(store):
    store.put_many([failed_row("1"), answer_row("2")])
    assert store.done_keys("t1", "h1") == {"1", "2"}
    assert store.done_keys("t1", "h1", include_failed=False) == {"2"}
    assert store.put_many([answer_row("1")]) == 0  # not redoing: the failure stays
    assert store.to_frame().set_index("sample_id").loc["1", "status"] == FAILED
    assert store.put_many([answer_row("1")], redo_failed=True) == 1
    df = store.to_frame().set_index("sample_id")
    assert df.loc["1", "status"] == "ok" and df.loc["1", "raw"] == ANSWER and len(df) == 2


def test_new_prompt_hash_makes_new_rows(store):
    store.put_many([answer_row("1", ph="h1")])
    store.put_many([answer_row("1", ph="h2", raw="Final decision: In-context")])
    assert store.count() == 2
    assert store.prompt_hashes() == ["h1", "h2"]
    assert len(store.to_frame(prompt_hash="h1")) == 1
    assert store.to_frame(prompt_hash="h1").iloc[0]["raw"] == ANSWER
    assert store.done_keys("t1", "h2") == {"1"}


def test_batch_is_one_transaction(store):
    """A bad row makes the whole batch roll back: nothing half-written."""
    bad = answer_row("2")
    del bad["status"]
    with pytest.raises(ValueError):
        store.put_many([answer_row("1"), bad])
    assert store.count() == 0
    # A failure inside SQLite, after the first row went in, also rolls the batch back.
    with pytest.raises(sqlite3.Error):
        store.put_many([answer_row("1"), answer_row("2", model_id={"not": "bindable"})])
    assert store.count() == 0
    assert store.put_many([answer_row("1")]) == 1  # the store is usable afterwards


def test_rows_are_validated(store):
    with pytest.raises(ValueError, match="lacks"):
        store.put_many([{"sample_id": "1", "teacher": "t"}])
    with pytest.raises(ValueError, match="unknown column"):
        store.put_many([answer_row("1", colour="red")])
    with pytest.raises(ValueError, match="failed but carries raw"):
        store.put_many([answer_row("1", status=FAILED)])


def test_reparse_updates_changed_rows_and_leaves_failures(store):
    store.put_many([answer_row("1"), failed_row("2")])

    def stricter(text: str) -> TeacherParse:
        return TeacherParse(status="unparseable", reason="new parser says no")

    counts = store.reparse(stricter)
    assert counts["rows"] == 1 and counts["changed"] == 1
    assert counts["status_before"] == {"ok": 1} and counts["status_after"] == {"unparseable": 1}
    df = store.to_frame().set_index("sample_id")
    assert df.loc["1", "status"] == "unparseable" and df.loc["1", "final"] is None and df.loc["1", "raw"] == ANSWER
    assert df.loc["2", "status"] == FAILED
    again = store.reparse(parse_teacher_answer)
    assert again["changed"] == 1 and store.to_frame().set_index("sample_id").loc["1", "status"] == "ok"
    assert store.reparse(parse_teacher_answer)["changed"] == 0


def test_summary_counts_by_teacher_status_and_failure_kind(store):
    store.put_many([answer_row("1"), failed_row("2"), failed_row("3", reason="timeout: slow"),
                    answer_row("1", teacher="t2", raw=""), failed_row("4", reason="http_500: again")])
    s = store.summary()
    assert s["t1"]["total"] == 4
    assert s["t1"]["by_status"] == {"ok": 1, FAILED: 3}
    assert s["t1"]["failed_by_reason"] == {"http_500": 2, "timeout": 1}
    assert s["t2"]["by_status"] == {"empty": 1}


def test_meta_and_reopen(tmp_path):
    path = tmp_path / "x.sqlite"
    with AnnotationStore(path) as s:
        s.put_many([answer_row("1")])
        s.set_meta("notice", "synthetic")
    with AnnotationStore(path) as s:
        assert s.count() == 1 and s.meta() == {"notice": "synthetic"}
