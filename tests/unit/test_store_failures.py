"""The answer store under a full disk, a read-only file and a second spelling of its path
(issue 27.6): one clear error naming the store and what to do, never two tracebacks, never a
second run asking the teachers again.

    .venv/bin/python -m pytest tests/unit/test_store_failures.py -q

SQLite's own ``max_page_count`` makes the disk "full" (SQLITE_FULL, the error a full disk gives)
and ``query_only`` makes the store read-only, so the tests run anywhere, as any user.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from scenefit.core.config import packaged_configs_dir
from scenefit.teachers.store import AnnotationStore, RunLock, StoreBusy, StoreError


def row(i: int) -> dict:
    return {"sample_id": f"s{i}", "teacher": "t", "prompt_hash": "h", "raw": "x" * 2000, "status": "ok"}


def test_a_full_disk_is_one_clear_error_and_the_store_stays_usable(tmp_path):
    with AnnotationStore(tmp_path / "a.sqlite") as store:
        store.put_many([row(0)])
        pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
        store._conn.execute(f"PRAGMA max_page_count = {pages + 2}")
        with pytest.raises(StoreError) as caught:
            store.put_many([row(i) for i in range(1, 50)])
        message = str(caught.value)
        assert "a.sqlite" in message and "disk holding the answer store is full" in message, message
        assert "run the same command again" in message
        assert not store._conn.in_transaction  # rolled back, not left half-open
        assert store.count() == 1  # what was committed before is kept
        store._conn.execute("PRAGMA max_page_count = 1000000")
        assert store.put_many([row(i) for i in range(1, 50)]) == 49  # space again: the rerun goes on


def test_a_read_only_store_is_named_read_only(tmp_path):
    with AnnotationStore(tmp_path / "a.sqlite") as store:
        store._conn.execute("PRAGMA query_only = 1")
        with pytest.raises(StoreError, match="a.sqlite: the answer store is read-only"):
            store.set_meta("notice", "x")
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    with pytest.raises(StoreError, match="not a scenefit answer store"):
        AnnotationStore(text)


def test_the_run_lock_follows_the_real_path(tmp_path):
    """A symlink to the store used to take a lock of its own, so a second run re-asked the teachers."""
    real = tmp_path / "runs" / "a.sqlite"
    real.parent.mkdir()
    real.touch()
    link = tmp_path / "link.sqlite"
    link.symlink_to(real)

    async def main():
        first = RunLock(real, "first run")
        await first.acquire()
        try:
            with pytest.raises(StoreBusy, match="first run"):
                await RunLock(link, "second run").acquire()
            with pytest.raises(StoreBusy):
                await RunLock(tmp_path / "runs" / ".." / "runs" / "a.sqlite", "third run").acquire()
        finally:
            first.release()

    asyncio.run(main())
    assert RunLock(link, "x").path == RunLock(real, "x").path


def test_annotate_on_a_full_disk_prints_one_error_and_keeps_what_it_stored(tmp_path, monkeypatch, repo_root):
    """The CLI used to end in two raw tracebacks (the failed commit, then the same in `finally`)."""
    from typer.testing import CliRunner

    from scenefit.cli import app
    from scenefit.teachers import store as store_module

    runner = CliRunner()
    res = runner.invoke(app, ["synth", "--n", "30", "--out", str(tmp_path / "synth"), "--config",
                              str(packaged_configs_dir() / "demo.yaml")])
    assert res.exit_code == 0, res.output
    opened = store_module.AnnotationStore.__init__

    def small_disk(self, path):  # room for the schema and a few answers, not for all 90
        opened(self, path)
        pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
        self._conn.execute(f"PRAGMA max_page_count = {pages + 8}")

    monkeypatch.setattr(store_module.AnnotationStore, "__init__", small_disk)
    db = tmp_path / "a.sqlite"
    args = ["annotate", str(tmp_path / "synth" / "manifest.parquet"), "--db", str(db), "--config",
            str(packaged_configs_dir() / "demo.yaml"), "--no-progress"]
    res = runner.invoke(app, args)
    out = " ".join(res.output.split())
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and out.count("error:") == 1, res.output
    assert "the disk holding the answer store is full" in out
    monkeypatch.setattr(store_module.AnnotationStore, "__init__", opened)
    res = runner.invoke(app, args + ["--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[res.stdout.index("{"):])
    with AnnotationStore(db) as store:
        assert store.count() == 90  # nothing lost, nothing twice
    assert sum(t["stored"] for t in summary["teachers"].values()) == 90 - sum(
        t["skipped"] for t in summary["teachers"].values())
