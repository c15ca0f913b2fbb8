"""Load existing teacher answers (CSV or JSONL) into the annotation store, parsed like any other.

    scenefit import-answers qwen72b_answers.csv --teacher qwen72b --db runs/paper/annotations.sqlite

The paper's published per-teacher files have the columns ``coco_index,response``; other files
may name the id ``sample_id`` or ``id`` and the answer ``raw``, ``answer`` or ``text``. So that
consensus can compare teachers, every import uses the same prompt hash
(:data:`IMPORTED_PROMPT_HASH` unless ``--prompt-hash`` says otherwise). A row without an id or
an answer, an unreadable row (an unclosed quote, bytes that are not UTF-8, a cell over
:data:`scenefit.core.table_rows.MAX_CELL_CHARS`) is one error naming the file and its line; the
rest goes on. The file is checked whole before anything is written, and its good rows are
stored in one transaction: an import is never half done. An empty answer is stored (status
``empty``), never skipped. Re-importing skips keys already stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from scenefit.data.manifest import _text, detect_format
from scenefit.core.parquet_io import write_jsonl
from scenefit.teachers.parse import parse_teacher_answer
from scenefit.teachers.store import AnnotationStore, parsed_fields
from scenefit.core.table_rows import RowReader

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
    errors_path: Optional[Path | str] = None,
) -> dict[str, Any]:
    """Import one file of one teacher's answers; returns counts and per-row errors.

    The whole file is read and checked first; the good rows then go into the store in one
    transaction, so a bad row, a crash or a kill never leaves half a file imported. Each bad
    row is one error naming the file and its line (also written to ``errors_path`` as JSONL
    when given), and the other rows go on.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"answers file not found: {p}")
    fmt = detect_format(p)
    if fmt == "parquet":
        raise ValueError(f"{p}: import answers from CSV or JSONL")
    errors: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    to_store: list[dict[str, Any]] = []
    by_status: dict[str, int] = {}
    id_col = ans_col = None
    reader = RowReader(p, fmt)

    def reject(raw, code: str, reason: str, sid: Optional[str] = None) -> None:
        err = {"file": str(p), "line": raw.line, "row": raw.row, "code": code,
               "reason": f"{p.name} line {raw.line}: {reason}"}
        errors.append(err if sid is None else {**err, "id": sid})

    for raw in reader:
        row = raw.data
        if row is None:
            reject(raw, raw.code, raw.problem.removeprefix(f"line {raw.line}: "))
            continue
        if id_col is None:  # the columns are chosen from the first readable row
            id_col = _pick(set(row), id_column, ID_COLUMNS, "sample id", p)
            ans_col = _pick(set(row), answer_column, ANSWER_COLUMNS, "answer", p)
        if fmt == "jsonl" and (id_col not in row or ans_col not in row):
            reject(raw, "missing_field", f"no {id_col!r} or no {ans_col!r} key (the first row has both)")
            continue
        sid = _text(row.get(id_col))
        if sid is None:
            reject(raw, "missing_field", f"empty {id_col}")
            continue
        if sid in seen:
            reject(raw, "duplicate_id", f"id {sid!r} already given in row {seen[sid]}; first kept", sid)
            continue
        seen[sid] = raw.row
        answer = row.get(ans_col)
        answer = "" if answer is None else str(answer)
        fields = parsed_fields(parse_teacher_answer(answer))
        by_status[fields["status"]] = by_status.get(fields["status"], 0) + 1
        to_store.append({
            "sample_id": sid, "teacher": teacher, "prompt_hash": prompt_hash,
            "model_id": model_id or teacher, "backend": "import", "raw": answer, **fields,
            "decoding": {"source": p.name},
        })
    stored = store.put_many(to_store)  # one transaction: all of the file's good rows or none
    if errors_path is not None:
        write_jsonl(errors, errors_path)
    accepted = len(seen)
    return {
        "file": str(p),
        "teacher": teacher,
        "prompt_hash": prompt_hash,
        "rows": reader.rows,
        "lines": reader.lines,
        "line_note": reader.line_note(),
        "accepted": accepted,
        "stored": stored,
        "already_stored": accepted - stored,
        "errors": errors,
        "by_status": by_status,
    }
