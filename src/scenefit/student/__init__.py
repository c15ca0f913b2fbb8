"""The student contract: everything a trained student promises, in one place.

- ``answer`` — the answer formats (decision-first, reasoning-first), rendering and parsing; each
  format carries its decision prefix, from which the readers and the distillation term derive;
- ``chat`` — how a student is asked (``StudentChat``: prompts, system turn, image position, answer
  format) and the one builder of its (prompt, system) request and chat;
- ``decision`` — the decision tokens and the one decision scorer (fast path and generation)
  used by training-time eval, evaluation, prediction and serving;
- ``metadata`` — ``scenefit_student.json``, typed, written by train and read by the rest.

The dataset builder writes targets with ``answer`` and asks with ``chat``; ``scenefit train`` learns
them and records both in the metadata; predict, evaluate, serve and export-vllm read them from the student.
"""

from scenefit.student.answer import (
    DECISION_PREFIX,
    DEFAULT_ANSWER_FORMAT,
    FINAL_DECISION_PREFIX,
    AnswerFormat,
    StudentAnswer,
    decision_continuations,
    parse_student_answer,
    render_student_answer,
)
from scenefit.student.chat import StudentChat, StudentRequest
from scenefit.student.metadata import (
    STUDENT_META,
    StudentError,
    StudentInfo,
    StudentMeta,
    read_student,
    read_student_meta,
    write_student_meta,
)

__all__ = [
    "AnswerFormat", "DEFAULT_ANSWER_FORMAT", "DECISION_PREFIX", "FINAL_DECISION_PREFIX", "StudentAnswer",
    "decision_continuations", "parse_student_answer", "render_student_answer", "StudentChat", "StudentRequest",
    "STUDENT_META", "StudentError", "StudentInfo", "StudentMeta", "read_student", "read_student_meta",
    "write_student_meta",
]
