"""Load existing teacher answers (CSV or JSONL) into the annotation store, parsed like any other.

    scenefit import-answers qwen72b_answers.csv --teacher qwen72b --db runs/paper/annotations.sqlite

The paper's published per-teacher files have the columns ``coco_index,response``; other files
may name the id ``sample_id`` or ``id`` and the answer ``raw``, ``answer`` or ``text``. So that
consensus can compare teachers, every import uses the same prompt hash
(:data:`IMPORTED_PROMPT_HASH` unless ``--prompt-hash`` says otherwise). A row without an id or
an answer is reported with its row number; an empty answer is stored (status ``empty``), never
skipped. Re-importing skips keys already stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..manifest import _iter_rows, _text, detect_format
from ..parse import parse_teacher_answer
from ..store import AnnotationStore, parsed_fields

IMPORTED_PROMPT_HASH = "imported"
ID_COLUMNS = ("sample_id", "id", "coco_index")
ANSWER_COLUMNS = ("response", "raw", "answer", "text", "output")


def _pick(columns: set[str], wanted: Optional[str], options: tuple[str, ...], what: str, path: Path) -> str:
    if wanted:
        if wanted not in columns:
            raise ValueError(f"{path}: no column {wanted!r} for the {what}; columns: {sorted(columns)}")
        return wanted
    for name in options:
        if name in columns:
            return name
    raise ValueError(f"{path}: no {what} column (tried {', '.join(options)}); columns: {sorted(columns)}")


def import_answers(
    path: Path | str,
    store: AnnotationStore,
    teacher: str,
    prompt_hash: str = IMPORTED_PROMPT_HASH,
    model_id: Optional[str] = None,
    id_column: Optional[str] = None,
    answer_column: Optional[str] = None,
    batch_size: int = 1000,
) -> dict[str, Any]:
    """Import one file of one teacher's answers; returns counts and per-row errors."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"answers file not found: {p}")
    fmt = detect_format(p)
    if fmt == "parquet":
        raise ValueError(f"{p}: import answers from CSV or JSONL")
    errors: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    batch: list[dict[str, Any]] = []
    read = stored = 0
    by_status: dict[str, int] = {}
    id_col = ans_col = None

    def flush() -> None:
        nonlocal stored, batch
        stored += store.put_many(batch)
        batch = []

    for i, row, problem in _iter_rows(p, fmt):
        read += 1
        if problem is not None:
            errors.append({"row": i, "reason": problem})
            continue
        if id_col is None or (fmt == "jsonl" and (id_col not in row or ans_col not in row)):
            id_col = _pick(set(row), id_column, ID_COLUMNS, "sample id", p)
            ans_col = _pick(set(row), answer_column, ANSWER_COLUMNS, "answer", p)
        sid = _text(row.get(id_col))
        if sid is None:
            errors.append({"row": i, "reason": f"row {i}: empty {id_col}"})
            continue
        if sid in seen:
            errors.append({"row": i, "id": sid, "reason": f"row {i}: id {sid!r} already given in row {seen[sid]}; first kept"})
            continue
        seen[sid] = i
        raw = row.get(ans_col)
        raw = "" if raw is None else str(raw)
        fields = parsed_fields(parse_teacher_answer(raw))
        by_status[fields["status"]] = by_status.get(fields["status"], 0) + 1
        batch.append({
            "sample_id": sid, "teacher": teacher, "prompt_hash": prompt_hash,
            "model_id": model_id or teacher, "backend": "import", "raw": raw, **fields,
            "decoding": {"source": p.name},
        })
        if len(batch) >= batch_size:
            flush()
    flush()
    accepted = len(seen)
    return {
        "file": str(p),
        "teacher": teacher,
        "prompt_hash": prompt_hash,
        "rows": read,
        "accepted": accepted,
        "stored": stored,
        "already_stored": accepted - stored,
        "errors": errors,
        "by_status": by_status,
    }
