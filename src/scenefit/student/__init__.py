"""The student contract: everything a trained student promises, in one place.

- ``answer`` — the answer formats (decision-first, reasoning-first), rendering and parsing;
- ``chat`` — the chat layout (system, user turn with the boxed image, the answer);
- ``decision`` — the decision tokens and the one decision scorer (fast path and generation)
  used by training-time eval, evaluation, prediction and serving;
- ``metadata`` — ``scenefit_student.json``, typed, written by train and read by the rest.

The dataset builder writes targets with ``answer``; ``scenefit train`` learns them and records
the format in the metadata; predict, evaluate and serve read the format from the student.
"""

from scenefit.student.answer import (
    DECISION_PREFIX, DEFAULT_ANSWER_FORMAT, FINAL_DECISION_PREFIX, AnswerFormat, StudentAnswer,
    decision_continuations, parse_student_answer, render_student_answer,
)
from scenefit.student.metadata import STUDENT_META, StudentError, StudentInfo, StudentMeta, read_student, read_student_meta, write_student_meta

__all__ = [
    "AnswerFormat", "DEFAULT_ANSWER_FORMAT", "DECISION_PREFIX", "FINAL_DECISION_PREFIX", "StudentAnswer",
    "decision_continuations", "parse_student_answer", "render_student_answer",
    "STUDENT_META", "StudentError", "StudentInfo", "StudentMeta", "read_student", "read_student_meta",
    "write_student_meta",
]
