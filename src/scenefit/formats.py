"""The student answer format — written by the dataset builder, read back by evaluation,
prediction and the fast decision path. One place, so the three can never drift apart.

A student answers its one criterion, decision first (so the fast path can score the
decision in one forward pass, without generating the explanation)::

    Decision: Out-of-context
    Location: The cow hangs in the sky, well above the ground line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from scenefit.core.criteria import Criterion, Label

#: The assistant answer starts with exactly this text; the fast path forces it and reads
#: the logits of the next token. It must tokenize exactly as in training.
DECISION_PREFIX = "Decision:"


def render_student_answer(criterion: Criterion, label: Label, analysis: str) -> str:
    """The SFT target for one criterion."""
    sentence = " ".join(analysis.split())
    return f"{DECISION_PREFIX} {Label(label).value}\n{Criterion(criterion).display}: {sentence}"


def decision_continuations() -> dict[Label, str]:
    """Text that follows DECISION_PREFIX for each label (the fast path's alternatives)."""
    return {lab: f" {lab.value}" for lab in Label}


@dataclass(frozen=True)
class StudentAnswer:
    """A parsed student answer. ``label`` is None when unreadable — never a third class."""

    label: Optional[Label]
    analysis: Optional[str]
    status: str  # "ok" | "no_decision" | "ambiguous_decision" | "no_analysis"
    reason: Optional[str] = None


_DECISION_RE = re.compile(r"^\W*decision\W*:\s*(.+)$", re.IGNORECASE | re.MULTILINE)


def parse_student_answer(text: str, criterion: Criterion) -> StudentAnswer:
    """Read a student's answer anywhere in the text (not by looking at its last characters).

    The decision line is required; the analysis line (``<Criterion>: …``) is optional for the
    label but its absence is reported in ``status``.
    """
    crit = Criterion(criterion)
    matches = _DECISION_RE.findall(text or "")
    labels = {Label.parse(m) for m in matches} - {None}
    if not matches:
        return StudentAnswer(None, _analysis(text, crit), "no_decision", "no 'Decision:' line")
    if len(labels) != 1:
        why = "decision names no label" if not labels else "decision lines disagree"
        return StudentAnswer(None, _analysis(text, crit), "ambiguous_decision", why)
    label = labels.pop()
    analysis = _analysis(text, crit)
    if not analysis:
        return StudentAnswer(label, None, "no_analysis", f"no '{crit.display}:' line")
    return StudentAnswer(label, analysis, "ok")


def _analysis(text: str, crit: Criterion) -> Optional[str]:
    names = {crit.display.lower(), crit.value.lower(), crit.value.replace("_", " ")}
    for line in (text or "").splitlines():
        head, sep, rest = line.strip().lstrip("-*• ").partition(":")
        if sep and head.strip("* ").lower() in names and rest.strip():
            return rest.strip().strip("*").strip()
    return None
