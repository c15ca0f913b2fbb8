"""The student answer format — written by the dataset builder, read back by evaluation,
prediction and the fast decision path. One place, so they can never drift apart.

Two formats (``answer_format``, a setting of the datasets stage recorded in every student's
metadata):

``decision_first`` (default) — the decision, then one sentence; the fast path scores the
decision in one forward pass without generating the sentence::

    Decision: Out-of-context
    Location: The cow hangs in the sky, well above the ground line.

``reasoning_first`` — the authors' shape (analysis first, decision last): an ``Analysis:``
block with the criterion's sentence, a ``Summary:`` block with its label, then the final
decision on the last line. Its decision can only be read from generated text::

    Analysis:
    Location: The cow hangs in the sky, well above the ground line.
    Summary:
    Location: Out-of-context
    Final decision: Out-of-context
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Optional

from scenefit.core.criteria import Criterion, Label


class AnswerFormat(str, Enum):
    """How a student's answer is laid out (see the module docstring)."""

    DECISION_FIRST = "decision_first"
    REASONING_FIRST = "reasoning_first"

    @classmethod
    def parse(cls, value: "str | AnswerFormat | None") -> "AnswerFormat":
        """None means the historical default (decision-first: students written before the setting)."""
        if value is None:
            return cls.DECISION_FIRST
        try:
            return cls(str(getattr(value, "value", value)).strip().lower().replace("-", "_"))
        except ValueError:
            raise ValueError(f"unknown answer_format {value!r}; expected one of "
                             f"{', '.join(f.value for f in cls)}") from None

    @property
    def has_fast_path(self) -> bool:
        """Whether the decision can be scored in one forward pass (the decision comes first)."""
        return self is AnswerFormat.DECISION_FIRST

    def __str__(self) -> str:
        return self.value


DEFAULT_ANSWER_FORMAT = AnswerFormat.DECISION_FIRST

#: The decision-first answer starts with exactly this text; the fast path forces it and reads
#: the logits of the next token. It must tokenize exactly as in training.
DECISION_PREFIX = "Decision:"
#: The reasoning-first answer's last line starts with this text.
FINAL_DECISION_PREFIX = "Final decision:"


def render_student_answer(criterion: Criterion, label: Label, analysis: str,
                          answer_format: AnswerFormat | str = DEFAULT_ANSWER_FORMAT) -> str:
    """The SFT target for one criterion in ``answer_format``."""
    crit, lab = Criterion(criterion), Label(label)
    sentence = " ".join(analysis.split())
    if AnswerFormat.parse(answer_format) is AnswerFormat.REASONING_FIRST:
        return (f"Analysis:\n{crit.display}: {sentence}\nSummary:\n{crit.display}: {lab.value}\n"
                f"{FINAL_DECISION_PREFIX} {lab.value}")
    return f"{DECISION_PREFIX} {lab.value}\n{crit.display}: {sentence}"


def decision_continuations() -> dict[Label, str]:
    """Text that follows DECISION_PREFIX for each label (the fast path's alternatives)."""
    return {lab: f" {lab.value}" for lab in Label}


@dataclass(frozen=True)
class StudentAnswer:
    """A parsed student answer. ``label`` is None when unreadable — never a third class."""

    label: Optional[Label]
    analysis: Optional[str]
    status: str  # "ok" | "no_decision" | "ambiguous_decision" | "no_analysis" | "summary_disagrees"
    reason: Optional[str] = None


_DECISION_RE = re.compile(r"^\W*decision\W*:\s*(.+)$", re.IGNORECASE | re.MULTILINE)
_FINAL_DECISION_RE = re.compile(r"^\W*final\s+decision\W*:\s*(.+)$", re.IGNORECASE | re.MULTILINE)
_SECTION_RE = re.compile(r"^\W*(analysis|summary)\W*:\s*(.*)$", re.IGNORECASE)


def parse_student_answer(text: str, criterion: Criterion,
                         answer_format: AnswerFormat | str = DEFAULT_ANSWER_FORMAT) -> StudentAnswer:
    """Read a student's answer anywhere in the text (not by looking at its last characters).

    decision-first: the ``Decision:`` line is required. reasoning-first: the ``Final decision:``
    line is required, and the criterion's ``Summary`` label, when present, must name the same
    label (else the label is kept from the final decision and ``status`` says
    ``summary_disagrees``). In both, the analysis line (``<Criterion>: …``) is optional for the
    label but its absence is reported in ``status``. A line that names no label, or several
    lines that disagree, give no label — never a guess.
    """
    crit = Criterion(criterion)
    fmt = AnswerFormat.parse(answer_format)
    text = text or ""
    pattern, name = ((_FINAL_DECISION_RE, FINAL_DECISION_PREFIX) if fmt is AnswerFormat.REASONING_FIRST
                     else (_DECISION_RE, DECISION_PREFIX))
    sections = _sections(text, crit, headings=fmt is AnswerFormat.REASONING_FIRST)
    analysis = sections["analysis"]
    matches = pattern.findall(text)
    labels = {Label.parse(m) for m in matches} - {None}
    if not matches:
        return StudentAnswer(None, analysis, "no_decision", f"no {name!r} line")
    if len(labels) != 1:
        why = "decision names no label" if not labels else "decision lines disagree"
        return StudentAnswer(None, analysis, "ambiguous_decision", why)
    label = labels.pop()
    if not analysis:
        return StudentAnswer(label, None, "no_analysis", f"no '{crit.display}:' line")
    summary = sections["summary"]
    if fmt is AnswerFormat.REASONING_FIRST and summary is not None and Label.parse(summary) not in (None, label):
        return StudentAnswer(label, analysis, "summary_disagrees",
                             f"the Summary says {summary!r}, the final decision {label.value}")
    return StudentAnswer(label, analysis, "ok")


def _sections(text: str, crit: Criterion, headings: bool) -> dict[str, Optional[str]]:
    """The criterion's first line in the analysis part and (``headings``: reasoning-first) in
    the ``Summary:`` part. Lines before any ``Summary:`` heading are analysis; ``Analysis:
    Location: …`` on one line counts as the analysis line."""
    names = {crit.display.lower(), crit.value.lower(), crit.value.replace("_", " ")}
    found: dict[str, Optional[str]] = {"analysis": None, "summary": None}
    part = "analysis"
    for line in text.splitlines():
        heading = _SECTION_RE.match(line.strip()) if headings else None
        if heading:
            part = heading.group(1).lower()
            line = heading.group(2)
        head, sep, rest = line.strip().lstrip("-*• ").partition(":")
        if sep and head.strip("* ").lower() in names and rest.strip() and found[part] is None:
            found[part] = rest.strip().strip("*").strip()
    return found
