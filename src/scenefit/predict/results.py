"""What the predictor returns: per criterion a label, a probability and (when asked) the
explanation, plus the fused decision.

``label`` is one decision per criterion, named by ``decision``: the fast path's (the logits after
the forced prefix) for a decision-first student, also when explanations are generated — the
label the generated text names is kept beside it (``generated_label``, ``agrees_with_fast``;
``text_label``/``text_agrees`` in the JSON) and ``analysis_status`` says whether the explanation
could be read. ``probability`` is the probability of ``label`` — the softmax over the two
decision alternatives' first-token logits at the decision position (>= 0.5). ``p_out`` is the same softmax's probability of out-of-context, for ROC-style metrics.
A reasoning-first student has no decision logits (its decision is the generated ``Final
decision:`` line): its ``probability``, ``p_out`` and ``fast_label`` are None, and its
``label`` is None when the answer cannot be read (never guessed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from scenefit.core.criteria import CRITERIA, Criterion, Label, fuse
from scenefit.core.errors import error_row


@dataclass
class CriterionResult:
    """One criterion's verdict on one item."""

    criterion: Criterion
    label: Optional[Label]
    probability: Optional[float]  # of `label` (see module docstring); None: reasoning-first
    p_out: Optional[float]
    fast_label: Optional[Label]  # the label the decision logits pick; None: reasoning-first
    analysis: Optional[str] = None
    raw: Optional[str] = None  # the generated answer text (explanations only)
    generated_label: Optional[Label] = None  # parsed from `raw`; None when unreadable or not explained
    status: str = "fast"  # "fast" | parse status of the generated answer ("ok", "no_analysis", ...)

    @property
    def agrees_with_fast(self) -> Optional[bool]:
        """With explanations: does the generated answer's label equal the fast decision?"""
        if self.raw is None or self.fast_label is None:
            return None
        return self.generated_label is self.fast_label

    @property
    def decision(self) -> str:
        """Which decision ``label`` is: ``logits`` (the fast path's, decision-first students) or
        ``generated_text`` (the ``Final decision:`` line of a reasoning-first student)."""
        return "logits" if self.fast_label is not None else "generated_text"

    @property
    def analysis_status(self) -> str:
        """``not_requested`` (no explanation asked), ``ok``, or why the explanation could not be
        read (the answer parser's status, e.g. ``no_analysis``)."""
        if self.raw is None:
            return "not_requested"
        return "ok" if self.analysis and self.status == "ok" else (self.status if self.status != "ok" else "no_analysis")

    def to_json(self) -> dict:
        out = {
            "label": self.label.value if self.label else None,
            "probability": _round(self.probability),
            "decision": self.decision,
            "analysis": self.analysis,
            "analysis_status": self.analysis_status,
        }
        if self.raw is not None and self.fast_label is not None:  # explained: does the text say the same?
            out["text_label"] = self.generated_label.value if self.generated_label else None
            out["text_agrees"] = self.agrees_with_fast
        return out


@dataclass
class Prediction:
    """The three (or the requested) criteria and the fused decision for one item, or its error."""

    id: str
    criteria: dict[Criterion, CriterionResult] = field(default_factory=dict)
    error: Optional[dict] = None  # {"code", "message"} when the item could not be judged

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def final(self) -> Optional[Label]:
        """scenefit.core.criteria.fuse over the judged criteria."""
        if not self.criteria:
            return None
        return fuse(r.label for r in self.criteria.values())

    @property
    def disagreements(self) -> list[Criterion]:
        """Criteria whose generated answer names another label than the fast decision."""
        return [c for c, r in self.criteria.items() if r.agrees_with_fast is False]

    def to_json(self) -> dict:
        """The public JSON (CLI, HTTP API): ``{"criteria": {name: {label, probability, decision,
        analysis, analysis_status[, text_label, text_agrees]}}, "final": label}`` (see
        :meth:`CriterionResult.to_json`); an item that failed gives its error row ``{"id", "code", "message"}``."""
        if self.error is not None:
            return error_row(self.id, self.error.get("code"), self.error.get("message"))
        return {
            "criteria": {c.value: self.criteria[c].to_json() for c in CRITERIA if c in self.criteria},
            "final": self.final.value if self.final else None,
        }

    def to_record(self) -> dict[str, Any]:
        """A flat row for JSONL/CSV/Parquet output: everything, disagreements included."""
        row: dict[str, Any] = {"id": self.id, "final": self.final.value if self.final else None,
                               "code": None, "message": None}  # an error row's two fields, None when judged
        if self.error is not None:
            row["code"], row["message"] = self.error.get("code"), self.error.get("message")
        for c in CRITERIA:
            r = self.criteria.get(c)
            row[f"{c.value}_label"] = r.label.value if r and r.label else None
            row[f"{c.value}_probability"] = _round(r.probability) if r else None
            row[f"{c.value}_p_out"] = _round(r.p_out) if r else None
            row[f"{c.value}_analysis"] = r.analysis if r else None
            row[f"{c.value}_raw"] = r.raw if r else None
            row[f"{c.value}_status"] = r.status if r else None
            row[f"{c.value}_decision"] = r.decision if r else None
            row[f"{c.value}_analysis_status"] = r.analysis_status if r else None
            row[f"{c.value}_text_label"] = r.generated_label.value if r and r.generated_label else None
            row[f"{c.value}_agrees_with_fast"] = r.agrees_with_fast if r else None
        return row


def _round(p: Optional[float]) -> Optional[float]:
    return None if p is None else round(float(p), 6)
