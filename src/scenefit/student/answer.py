"""The student answer format — written by the dataset builder, read back by evaluation,
prediction, the fast decision path and the distillation term. One place, so they can never drift
apart: each format carries its decision prefix, and the regexes that read the decision and the
position the distillation term looks at are derived from it (:class:`AnswerFormat`).

Two formats (``answer_format``, a setting of the datasets stage recorded in every student's
metadata):

``decision_first`` (default) — the decision, then one sentence; the fast path scores the
decision in one forward pass without generating the sentence::

    Decision: Out-of-context
    Location: The cow hangs in the sky, well above the ground line.

``reasoning_first`` — the authors' student target exactly (their ``prepare_dataset.ipynb``,
``reformat_ground_truth_response_with_label``): an ``Analysis:`` block with the criterion's
sentence, a blank line, ``Summary:``, then the final decision on the last line. Its decision can
only be read from generated text::

    Analysis:
    Location: The cow hangs in the sky, well above the ground line.

    Summary:
    Final decision: Out-of-context

(Students trained before this layout carried a ``Location: <label>`` line under ``Summary:``; the
parser still reads them, and checks that line against the final decision where it is present.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Optional

from scenefit.core.criteria import Criterion, Label

#: The decision-first answer starts with exactly this text; the fast path forces it and reads
#: the logits of the next token. It must tokenize exactly as in training.
DECISION_PREFIX = "Decision:"
#: The reasoning-first answer's last line starts with this text.
FINAL_DECISION_PREFIX = "Final decision:"
#: The reasoning-first answer's two headings (the authors' words).
ANALYSIS_HEADING, SUMMARY_HEADING = "Analysis:", "Summary:"


def _line_pattern(prefix: str) -> re.Pattern:
    """A whole line that starts with ``prefix`` written loosely (any case, markdown or bullets
    around the words, spaces before the colon), capturing the rest of the line."""
    words = prefix.rstrip(":").split()
    return re.compile(r"^\W*" + r"\s+".join(map(re.escape, words)) + r"\W*:\s*(.+)$", re.IGNORECASE | re.MULTILINE)


class AnswerFormat(str, Enum):
    """How a student's answer is laid out (see the module docstring)."""

    DECISION_FIRST = "decision_first"
    REASONING_FIRST = "reasoning_first"

    @classmethod
    def parse(cls, value: "str | AnswerFormat | None") -> "AnswerFormat":
        """The format a setting or a file names; None means the historical default (decision-first:
        students and datasets written before the setting). Used where the value enters: config
        validators and the typed metadata."""
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

    @property
    def decision_prefix(self) -> str:
        """The text the decision follows: ``Decision:`` (first line) or ``Final decision:`` (last line)."""
        return DECISION_PREFIX if self is AnswerFormat.DECISION_FIRST else FINAL_DECISION_PREFIX

    @property
    def decision_line(self) -> re.Pattern:
        """The decision line as a reader finds it in generated text (derived from the prefix)."""
        return _DECISION_LINES[self]

    def render(self, criterion: Criterion, label: Label, analysis: str) -> str:
        """The SFT target for one criterion (whitespace in the sentence collapsed to single spaces)."""
        crit, lab = Criterion(criterion), Label(label)
        sentence = " ".join(analysis.split())
        if self is AnswerFormat.REASONING_FIRST:
            return (f"{ANALYSIS_HEADING}\n{crit.display}: {sentence}\n\n{SUMMARY_HEADING}\n"
                    f"{self.decision_prefix} {lab.value}")
        return f"{self.decision_prefix} {lab.value}\n{crit.display}: {sentence}"

    def decision_offset(self, answer: str) -> Optional[int]:
        """Where the decision's label begins in an answer written in this format (a rendered target):
        right after the prefix that opens a decision-first answer, or after the prefix of a
        reasoning-first answer's last line — never a "decision:" inside the analysis text. None when
        the answer does not carry the prefix there."""
        prefix = self.decision_prefix
        if self is AnswerFormat.DECISION_FIRST:
            return len(prefix) if answer.startswith(prefix) else None
        lines = answer.rstrip().splitlines()
        if not lines or not lines[-1].startswith(prefix):
            return None
        return len(answer.rstrip()) - len(lines[-1]) + len(prefix)

    def complete(self, continuation: str) -> str:
        """The whole answer of a generation that was started after the forced prefix."""
        return self.decision_prefix + continuation

    def __str__(self) -> str:
        return self.value


DEFAULT_ANSWER_FORMAT = AnswerFormat.DECISION_FIRST
_DECISION_LINES = {f: _line_pattern(f.decision_prefix) for f in AnswerFormat}


def render_student_answer(criterion: Criterion, label: Label, analysis: str,
                          answer_format: AnswerFormat = DEFAULT_ANSWER_FORMAT) -> str:
    """The SFT target for one criterion in ``answer_format``."""
    return answer_format.render(criterion, label, analysis)


def decision_continuations() -> dict[Label, str]:
    """Text that follows the decision prefix for each label (the fast path's alternatives)."""
    return {lab: f" {lab.value}" for lab in Label}


@dataclass(frozen=True)
class StudentAnswer:
    """A parsed student answer. ``label`` is None when unreadable — never a third class."""

    label: Optional[Label]
    analysis: Optional[str]
    status: str  # "ok" | "no_decision" | "ambiguous_decision" | "no_analysis" | "summary_disagrees"
    reason: Optional[str] = None


_SECTION_RE = re.compile(
    "^\\W*(" + "|".join(h.rstrip(":").lower() for h in (ANALYSIS_HEADING, SUMMARY_HEADING)) + ")\\W*:\\s*(.*)$",
    re.IGNORECASE)


def parse_student_answer(text: str, criterion: Criterion,
                         answer_format: AnswerFormat = DEFAULT_ANSWER_FORMAT) -> StudentAnswer:
    """Read a student's answer anywhere in the text (not by looking at its last characters).

    decision-first: the ``Decision:`` line is required. reasoning-first: the ``Final decision:``
    line is required, and the criterion's ``Summary`` label, when present (students of the earlier
    layout write one), must name the same label (else the label is kept from the final decision
    and ``status`` says ``summary_disagrees``). In both, the analysis line (``<Criterion>: …``) is
    optional for the label but its absence is reported in ``status``. A line that names no label,
    or several lines that disagree, give no label — never a guess.
    """
    crit = Criterion(criterion)
    fmt = answer_format
    text = text or ""
    name = fmt.decision_prefix
    sections = _sections(text, crit, headings=fmt is AnswerFormat.REASONING_FIRST)
    analysis = sections["analysis"]
    matches = fmt.decision_line.findall(text)
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
