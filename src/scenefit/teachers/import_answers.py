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

Optional probability columns carry the teacher's own P(Out-of-context) (soft labels):
``p_out_location``, ``p_out_size``, ``p_out_co_occurrence`` and ``p_out_final`` (:data:`P_OUT_COLUMNS`),
each a number from 0 to 1 or empty (unknown). A value that is not such a number makes its row
an error naming the line and the column; the rest goes on. An empty or absent one is stored as
null with the note "not in the imported file".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from scenefit.core.errors import error_row
from scenefit.core.files import write_jsonl
from scenefit.core.table_rows import RowReader, cell_text, detect_format
from scenefit.teachers.parse import parse_teacher_answer
from scenefit.teachers.store import P_OUT_KEYS, AnnotationStore, parsed_fields

IMPORTED_PROMPT_HASH = "imported"
ID_COLUMNS = ("sample_id", "id", "coco_index")
ANSWER_COLUMNS = ("response", "raw", "answer", "text", "output")
#: Optional columns with the teacher's probability of Out-of-context, per criterion and final.
P_OUT_COLUMNS = {f"p_out_{key}": key for key in P_OUT_KEYS}
NOT_IN_FILE = "not in the imported file"


def read_p_out(row: dict[str, Any]) -> tuple[Optional[dict[str, Optional[float]]], Optional[str], Optional[str]]:
    """(p_out, note, problem) from a row's probability columns; ``problem`` names the first
    column whose value is no probability. Without any such column: (None, note, None)."""
    if not any(col in row for col in P_OUT_COLUMNS):
        return None, NOT_IN_FILE, None
    out: dict[str, Optional[float]] = {}
    for col, key in P_OUT_COLUMNS.items():
        value = row.get(col)
        if value is None or (isinstance(value, str) and not value.strip()):
            out[key] = None
            continue
        try:
            number = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None or not 0.0 <= number <= 1.0:  # NaN fails too
            return None, None, f"{col} is {value!r}, not a probability from 0 to 1"
        out[key] = number
    missing = [k for k, v in out.items() if v is None]
    return out, (f"{', '.join(missing)}: {NOT_IN_FILE}" if missing else None), None


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
        errors.append(error_row(sid or f"line {raw.line}", code, f"{p.name} line {raw.line}: {reason}",
                                file=str(p), line=raw.line, row=raw.row))

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
        sid = cell_text(row.get(id_col))
        if sid is None:
            reject(raw, "missing_field", f"empty {id_col}")
            continue
        if sid in seen:
            reject(raw, "duplicate_id", f"id {sid!r} already given in row {seen[sid]}; first kept", sid)
            continue
        p_out, p_note, problem = read_p_out(row)
        if problem:
            reject(raw, "bad_probability", problem, sid)
            continue
        seen[sid] = raw.row
        answer = row.get(ans_col)
        answer = "" if answer is None else str(answer)
        fields = parsed_fields(parse_teacher_answer(answer))
        by_status[fields["status"]] = by_status.get(fields["status"], 0) + 1
        to_store.append({
            "sample_id": sid, "teacher": teacher, "prompt_hash": prompt_hash,
            "model_id": model_id or teacher, "backend": "import", "raw": answer, **fields,
            "decoding": {"source": p.name}, "p_out": p_out, "p_out_note": p_note,
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
