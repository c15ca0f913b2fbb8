"""The annotation store: one SQLite file (WAL) holding every teacher answer with its provenance.

    scenefit annotate MANIFEST --db runs/demo/annotate/annotations.sqlite --config demo
    scenefit parse --db runs/demo/annotate/annotations.sqlite      # re-parse stored raw text

One row per (sample_id, teacher, prompt_hash). Writes go in one transaction per batch, so a
killed run loses at most the answers it had not yet handed to :meth:`AnnotationStore.put_many`,
and a rerun never duplicates a row: the primary key forbids it, and a row is only ever
replaced when it records a request failure and the caller redoes failures. A new prompt hash
makes new rows beside the old ones.

Columns (also :data:`COLUMNS`, the frame the consensus stage reads):
sample_id, teacher, prompt_hash, model_id, backend, raw (NULL when the request failed),
status (parse status, or ``failed`` for a request failure), reason, final, label_location,
label_size, label_co_occurrence, analysis_location, analysis_size, analysis_co_occurrence,
decoding (JSON: temperature, max_tokens, seed, ...), latency_s, attempts, created_at,
p_out, p_out_note.

``p_out`` is the teacher's own probability of Out-of-context at each label it wrote, as JSON
``{"location": 0.93, "size": 0.02, "co_occurrence": null, "final": 0.95}`` (keys
:data:`P_OUT_KEYS`; null where it is not known), and ``p_out_note`` says in a few words why a
value is null ("server returned no logprobs", "size: no label token"). Both are NULL for a
request failure. A store written before these columns existed gains them (empty) when opened:
its answers read as "probabilities not recorded".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import sys
import time
from collections import Counter
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional

try:
    import fcntl
except ImportError:  # Windows: runs are not locked against each other
    fcntl = None

from scenefit.core.criteria import CRITERIA
from scenefit.core.errors import ScenefitError
from scenefit.teachers.parse import Parser, TeacherParse

#: Status of a row whose request failed (no raw text); ``--redo-failed`` retries these.
FAILED = "failed"

KEY = ("sample_id", "teacher", "prompt_hash")
PARSED_COLUMNS = (
    ["status", "reason", "final"]
    + [f"label_{c.value}" for c in CRITERIA]
    + [f"analysis_{c.value}" for c in CRITERIA]
)
COLUMNS = [
    *KEY,
    "model_id",
    "backend",
    "raw",
    *PARSED_COLUMNS,
    "decoding",
    "latency_s",
    "attempts",
    "created_at",
    "p_out",
    "p_out_note",
]

#: Keys of the ``p_out`` JSON column: the three criteria, then the final decision.
P_OUT_KEYS: tuple[str, ...] = tuple(c.value for c in CRITERIA) + ("final",)

#: Columns added after the first release, with their SQL type: an older store gains them on open.
ADDED_COLUMNS = {"p_out": "TEXT", "p_out_note": "TEXT"}

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS annotations (
    sample_id TEXT NOT NULL,
    teacher TEXT NOT NULL,
    prompt_hash TEXT NOT NULL,
    model_id TEXT,
    backend TEXT,
    raw TEXT,
    status TEXT NOT NULL,
    reason TEXT,
    final TEXT,
    {", ".join(f"label_{c.value} TEXT" for c in CRITERIA)},
    {", ".join(f"analysis_{c.value} TEXT" for c in CRITERIA)},
    decoding TEXT,
    latency_s REAL,
    attempts INTEGER,
    created_at TEXT NOT NULL,
    p_out TEXT,
    p_out_note TEXT,
    PRIMARY KEY (sample_id, teacher, prompt_hash)
);
CREATE INDEX IF NOT EXISTS annotations_teacher ON annotations (teacher, prompt_hash, status);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


def parsed_fields(parse: TeacherParse) -> dict[str, Any]:
    """The store's parsed columns from one parse (labels and final as label strings)."""
    row: dict[str, Any] = {"status": parse.status, "reason": parse.reason, "final": parse.final.value if parse.final else None}
    for c in CRITERIA:
        lab = parse.labels.get(c)
        row[f"label_{c.value}"] = lab.value if lab else None
        row[f"analysis_{c.value}"] = parse.analyses.get(c)
    return row


def check_p_out(probs: Mapping[str, Any] | str, sample_id: str = "?") -> dict[str, Optional[float]]:
    """A ``p_out`` mapping with every key of :data:`P_OUT_KEYS` (missing ones null), each value
    a probability in [0, 1] or None; ValueError naming the sample and key otherwise."""
    if isinstance(probs, str):
        probs = json.loads(probs)
    if not isinstance(probs, Mapping):
        raise ValueError(f"p_out of {sample_id!r} must be a mapping of {', '.join(P_OUT_KEYS)}, got {probs!r:.80}")
    unknown = sorted(set(probs) - set(P_OUT_KEYS))
    if unknown:
        raise ValueError(f"p_out of {sample_id!r} has unknown key(s) {unknown}; expected {', '.join(P_OUT_KEYS)}")
    out: dict[str, Optional[float]] = {}
    for key in P_OUT_KEYS:
        v = probs.get(key)
        if v is not None:
            try:
                v = float(v)
            except (TypeError, ValueError):
                raise ValueError(f"p_out.{key} of {sample_id!r} is not a number: {v!r:.40}") from None
            if not 0.0 <= v <= 1.0:  # NaN fails too
                raise ValueError(f"p_out.{key} of {sample_id!r} is {v}, not a probability in [0, 1]")
        out[key] = v
    return out


def p_out_values(cell: Any) -> dict[str, Optional[float]]:
    """The ``p_out`` column of one stored row as a dict over :data:`P_OUT_KEYS` (all None when
    the row has none: a request failure, or a store written before probabilities were kept)."""
    if cell is None or (isinstance(cell, float) and cell != cell):
        return {k: None for k in P_OUT_KEYS}
    return check_p_out(cell)


def failure_kind(reason: Optional[str]) -> str:
    """The stable word before the first ':' of a failure reason (``http_500``, ``timeout`` …),
    which summaries count by."""
    return (reason or "unknown").split(":", 1)[0].strip() or "unknown"


def stored_answers(path: Path | str) -> int:
    """How many answers the store at ``path`` holds, read without writing (0 when it or its
    table does not exist yet) — safe while another process writes it."""
    if not Path(path).is_file():
        return 0
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM annotations").fetchone()[0]
        finally:
            con.close()
    except sqlite3.DatabaseError:  # no table yet (or not a store: nothing of ours in it)
        return 0


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class StoreError(ScenefitError, OSError):
    """The answer store cannot be opened or written (a folder, a file that is not SQLite, a
    read-only file or folder, a full disk); the message names the file and what to do."""


def store_error(path: Path, e: sqlite3.Error) -> StoreError:
    """The StoreError that says in words what SQLite's error ``e`` on the store ``path`` means."""
    text = str(e)
    if "full" in text or (isinstance(e, sqlite3.OperationalError) and "disk I/O" in text and _nearly_full(path)):
        return StoreError(f"{path}: the disk holding the answer store is full ({text}); answers committed so far "
                          "are kept: free some space and run the same command again to continue")
    if "readonly" in text or "read-only" in text or not _writable(path):
        return StoreError(f"{path}: the answer store is read-only ({text}); the file and its folder must be writable "
                          "(SQLite writes its -wal and -shm files beside it), or point --db at a writable copy")
    if "unable to open" in text or "disk I/O" in text:
        return StoreError(f"{path}: the answer store cannot be opened or written ({text}); check that the file and "
                          "its folder are writable and the disk is healthy")
    return StoreError(f"{path}: not a scenefit answer store ({text})")


def _writable(path: Path) -> bool:
    """Whether the store file (when it exists) and its folder can be written (a read-only mount
    says no even to root)."""
    return os.access(path.parent, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))


def _nearly_full(path: Path) -> bool:
    import shutil

    try:
        return shutil.disk_usage(path.parent).free < 1024 * 1024
    except OSError:
        return False


class StoreBusy(ScenefitError, RuntimeError):
    """Another run holds the store's run lock."""


class RunLock:
    """An exclusive OS lock on ``<store>.lock`` held by the one run that asks teachers.

    Two annotate runs on one store would each see the same samples as missing and ask every
    teacher twice; the second run therefore waits for this lock or refuses. The kernel frees
    the lock when its process ends, so a killed run never blocks the next one (the file itself
    stays, holding the last holder's description). POSIX only: without ``fcntl`` it is a no-op.
    """

    def __init__(self, store_path: Path | str, what: str):
        # the real path: a symlink (or another spelling) of the store must meet the same lock
        real = Path(store_path).resolve()
        self.path = real.with_name(real.name + ".lock")
        self.what = what
        self._fd: Optional[int] = None

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "another process"
        except OSError:
            return "another process"

    async def acquire(self, wait_s: float = 0.0, poll_s: float = 0.2) -> None:
        """Take the lock, waiting up to ``wait_s`` seconds; StoreBusy when it stays taken. The wait
        sleeps in the event loop, so Ctrl-C cancels it at once (a thread's sleep would hold the
        exit until it ended)."""
        if fcntl is None or self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_s
        said = False
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if wait_s and not said:  # say why this run sits idle
                        print(f"waiting up to {wait_s:g} s for {self.holder()} to finish with "
                              f"{self.path.with_suffix('')}", file=sys.stderr, flush=True)
                        said = True
                    if time.monotonic() >= deadline:
                        waited = f" after waiting {wait_s:g} s" if wait_s else ""
                        raise StoreBusy(
                            f"{self.path.with_suffix('')}: another run is writing this store "
                            f"({self.holder()}){waited}. Wait for it to finish and run again (the rerun asks only "
                            "what it did not store), or let this run wait for it with --lock-wait SECONDS."
                        ) from None
                    await asyncio.sleep(poll_s)
        except BaseException:  # refused, or cancelled while waiting: the descriptor is not kept
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{self.what}, pid {os.getpid()}, since {now_utc()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class AnnotationStore:
    """SQLite annotation store. Use as a context manager or call :meth:`close`."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(f"{self.path}: is a folder; the answer store is one SQLite file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we open transactions ourselves (BEGIN IMMEDIATE per batch).
        try:
            self._conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=60, check_same_thread=False)
        except sqlite3.Error as e:
            raise store_error(self.path, e) from None
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")  # durable at each commit in WAL mode but for power loss
            self._conn.executescript(_SCHEMA)
            self._migrate()
        except sqlite3.Error as e:  # e.g. "file is not a database": never overwrite it
            self._conn.close()
            raise store_error(self.path, e) from None

    def _migrate(self) -> None:
        """Add the columns an older store lacks (NULL for its rows); nothing else changes."""
        have = {r[1] for r in self._conn.execute("PRAGMA table_info(annotations)")}
        for name, sql_type in ADDED_COLUMNS.items():
            if name not in have:
                self._conn.execute(f"ALTER TABLE annotations ADD COLUMN {name} {sql_type}")

    # -- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "AnnotationStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; a write SQLite refuses (full disk, read-only file) is rolled
        back and raised as a StoreError saying what it means."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise
            raise store_error(self.path, e) from None

    # -- reading --------------------------------------------------------------------------
    def done_keys(self, teacher: str, prompt_hash: str, include_failed: bool = True) -> set[str]:
        """Sample ids already stored for this teacher and prompt; with ``include_failed=False``
        request failures do not count as done (``--redo-failed``)."""
        sql = "SELECT sample_id FROM annotations WHERE teacher = ? AND prompt_hash = ?"
        if not include_failed:
            sql += f" AND status != '{FAILED}'"
        return {r[0] for r in self._conn.execute(sql, (teacher, prompt_hash))}

    def count(self, teacher: Optional[str] = None, prompt_hash: Optional[str] = None) -> int:
        sql, args = _where("SELECT COUNT(*) FROM annotations", teacher=teacher, prompt_hash=prompt_hash)
        return int(self._conn.execute(sql, args).fetchone()[0])

    def rows(self, teacher: Optional[str] = None, prompt_hash: Optional[str] = None) -> list[dict[str, Any]]:
        sql, args = _where(f"SELECT {', '.join(COLUMNS)} FROM annotations", teacher=teacher, prompt_hash=prompt_hash)
        sql += " ORDER BY teacher, sample_id"
        return [dict(zip(COLUMNS, r)) for r in self._conn.execute(sql, args)]

    def prompt_hashes(self) -> list[str]:
        return [r[0] for r in self._conn.execute("SELECT DISTINCT prompt_hash FROM annotations ORDER BY prompt_hash")]

    def to_frame(self, prompt_hash: Optional[str] = None):
        """All rows (or one prompt hash's) as a pandas DataFrame with :data:`COLUMNS`;
        ``decoding`` and ``p_out`` stay JSON text (:func:`p_out_values` reads the latter)."""
        import pandas as pd

        return pd.DataFrame(self.rows(prompt_hash=prompt_hash), columns=COLUMNS)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per teacher (and prompt hash): total rows and counts by status, plus failure reasons."""
        out: dict[str, dict[str, Any]] = {}
        q = "SELECT teacher, prompt_hash, status, reason, COUNT(*) FROM annotations GROUP BY teacher, prompt_hash, status, reason"
        for teacher, ph, status, reason, n in self._conn.execute(q):
            entry = out.setdefault(teacher, {"total": 0, "by_status": Counter(), "failed_by_reason": Counter(), "prompt_hashes": set()})
            entry["total"] += n
            entry["by_status"][status] += n
            entry["prompt_hashes"].add(ph)
            if status == FAILED:
                entry["failed_by_reason"][failure_kind(reason)] += n
        for entry in out.values():
            entry["by_status"] = dict(entry["by_status"])
            entry["failed_by_reason"] = dict(entry["failed_by_reason"])
            entry["prompt_hashes"] = sorted(entry["prompt_hashes"])
        return out

    def meta(self) -> dict[str, str]:
        """Free key/value notes about the store (e.g. ``notice`` for the synthetic world)."""
        return dict(self._conn.execute("SELECT key, value FROM meta"))

    # -- writing --------------------------------------------------------------------------
    def set_meta(self, key: str, value: str) -> None:
        with self._transaction() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    def put_many(self, rows: Iterable[Mapping[str, Any]], redo_failed: bool = False) -> int:
        """Insert a batch in one transaction; returns how many rows were written.

        A key that is already stored is left as it is — except, with ``redo_failed``, a stored
        request failure, which the new row replaces. Rows never duplicate.
        """
        return sum(self.put_rows(rows, redo_failed))

    def put_rows(self, rows: Iterable[Mapping[str, Any]], redo_failed: bool = False) -> list[bool]:
        """:meth:`put_many`, saying for each row whether the store wrote it (False: its key was
        already stored), so that a run counts what it really added."""
        prepared = [_prepare(r) for r in rows]
        if not prepared:
            return []
        cols = ", ".join(COLUMNS)
        marks = ", ".join("?" for _ in COLUMNS)
        if redo_failed:
            updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in KEY)
            conflict = f"ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET {updates} WHERE annotations.status = '{FAILED}'"
        else:
            conflict = f"ON CONFLICT ({', '.join(KEY)}) DO NOTHING"
        sql = f"INSERT INTO annotations ({cols}) VALUES ({marks}) {conflict}"
        with self._transaction() as conn:
            return [conn.execute(sql, tuple(r[c] for c in COLUMNS)).rowcount == 1 for r in prepared]

    def reparse(self, parser: Parser, teacher: Optional[str] = None, batch_size: int = 500) -> dict[str, Any]:
        """Re-run ``parser`` over every stored raw answer and update the parsed columns.

        Request failures (no raw text) are left alone. Returns counts: rows read, rows whose
        parsed fields changed, and the status counts before and after.
        """
        sql, args = _where(f"SELECT {', '.join(KEY)}, raw, {', '.join(PARSED_COLUMNS)} FROM annotations", teacher=teacher)
        sql += " AND raw IS NOT NULL" if args else " WHERE raw IS NOT NULL"
        before: Counter = Counter()
        after: Counter = Counter()
        changed = 0
        seen = 0
        pending: list[tuple] = []
        sets = ", ".join(f"{c} = ?" for c in PARSED_COLUMNS)
        update = f"UPDATE annotations SET {sets} WHERE sample_id = ? AND teacher = ? AND prompt_hash = ?"
        for row in list(self._conn.execute(sql, args)):
            key, raw, old = row[:3], row[3], dict(zip(PARSED_COLUMNS, row[4:]))
            new = parsed_fields(parser(raw))
            seen += 1
            before[old["status"]] += 1
            after[new["status"]] += 1
            if new != old:
                changed += 1
                pending.append(tuple(new[c] for c in PARSED_COLUMNS) + tuple(key))
            if len(pending) >= batch_size:
                self._update(update, pending)
                pending = []
        self._update(update, pending)
        return {"rows": seen, "changed": changed, "status_before": dict(before), "status_after": dict(after)}

    def _update(self, sql: str, params: list[tuple]) -> None:
        if params:
            with self._transaction() as conn:
                conn.executemany(sql, params)


def _where(sql: str, **filters: Optional[str]) -> tuple[str, list[str]]:
    conds = [f"{k} = ?" for k, v in filters.items() if v is not None]
    args = [v for v in filters.values() if v is not None]
    return (sql + (" WHERE " + " AND ".join(conds) if conds else ""), args)


def _prepare(row: Mapping[str, Any]) -> dict[str, Any]:
    """Fill defaults, check the key and status, serialise decoding to JSON text."""
    missing = [k for k in KEY if not row.get(k)]
    if missing:
        raise ValueError(f"annotation row lacks {', '.join(missing)}: {dict(row)!r:.200}")
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise ValueError(f"annotation row has unknown column(s) {sorted(unknown)}")
    out = {c: row.get(c) for c in COLUMNS}
    out["sample_id"] = str(out["sample_id"])
    if not out.get("status"):
        raise ValueError(f"annotation row for {out['sample_id']!r} has no status")
    if out["status"] == FAILED and out.get("raw") is not None:
        raise ValueError(f"row for {out['sample_id']!r} is marked failed but carries raw text")
    dec = out.get("decoding")
    if dec is not None and not isinstance(dec, str):
        out["decoding"] = json.dumps(dec, sort_keys=True)
    probs = out.get("p_out")
    if probs is not None:
        out["p_out"] = json.dumps(check_p_out(probs, out["sample_id"]), sort_keys=True)
    out["created_at"] = out.get("created_at") or now_utc()
    return out
