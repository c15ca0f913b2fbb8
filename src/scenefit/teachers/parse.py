"""Read a teacher's answer into per-criterion labels, analysis sentences and a final decision.

    scenefit parse --text-file answer.txt --json     # the parse of one answer
    scenefit parse --db runs/demo/annotate/annotations.sqlite   # re-parse every stored answer

The expected answer (design §2) is::

    Analysis:
    Location: <sentence>
    Co-occurrence: <sentence>
    Size: <sentence>
    Summary:
    Location: In-context|Out-of-context
    Co-occurrence: ...
    Size: ...
    Final decision: In-context.|Out-of-context.

Real answers deviate (markdown bold, bullets, numbering, headings, lower case, missing period,
missing lines, extra prose, sections in another order, one-line summaries, a JSON object).
The parser reads all of these; what it cannot read is never dropped: every parse carries a
``status`` and, when anything was missing or odd, a ``reason`` naming it.

Statuses: ``ok`` (three labels, three analyses, a final decision that agrees with them — a
final decision derived from the three labels because the answer lacked one is still ``ok``,
with ``final_derived`` set and the reason saying so; consensus does not count it as the
teacher's own vote unless told to), ``partial`` (something missing or ambiguous; what was read is
kept), ``contradiction`` (the final decision disagrees with the criteria; labels kept),
``unparseable`` (no label and no final decision found), ``empty`` (no text).

Which line a label comes from matters. A Summary line (or a line that is only a label) states
the label; a label phrase met inside the analysis (an analysis line that opens with one, or a
prose sentence) is read only when the answer states none for that criterion, so it never
overrides or conflicts with the Summary. A bare "In"/"Out" after "Final decision" is a label; a
bare "yes"/"no" never is; a negated label ("not in-context") is no label.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from scenefit.core.criteria import CRITERIA, Criterion, Label, fuse

STATUSES = ("ok", "partial", "contradiction", "unparseable", "empty")


@dataclass
class TeacherParse:
    """The parse of one teacher answer. Unread fields are None, never guessed."""

    labels: dict[Criterion, Optional[Label]] = field(default_factory=lambda: {c: None for c in CRITERIA})
    analyses: dict[Criterion, Optional[str]] = field(default_factory=lambda: {c: None for c in CRITERIA})
    final: Optional[Label] = None
    status: str = "ok"
    reason: Optional[str] = None
    final_derived: bool = False  # the answer had no final decision; ``final`` was fused from the labels

    def to_json(self) -> dict[str, Any]:
        """Plain JSON: ``labels`` and ``analyses`` keyed by criterion value, labels as strings."""
        return {
            "labels": {c.value: (self.labels.get(c).value if self.labels.get(c) else None) for c in CRITERIA},
            "analyses": {c.value: self.analyses.get(c) for c in CRITERIA},
            "final": self.final.value if self.final else None,
            "final_derived": self.final_derived,
            "status": self.status,
            "reason": self.reason,
        }


def teacher_json_schema() -> dict[str, Any]:
    """JSON schema of the JSON answer variant (prompt ``teacher_json_v1``), for servers that
    constrain output with ``response_format: {type: json_schema}``."""
    labels = {"type": "string", "enum": [lab.value for lab in Label]}
    per_criterion = lambda item: {  # noqa: E731
        "type": "object",
        "properties": {c.value: item for c in CRITERIA},
        "required": [c.value for c in CRITERIA],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {
            "analysis": per_criterion({"type": "string"}),
            "summary": per_criterion(labels),
            "final_decision": labels,
        },
        "required": ["analysis", "summary", "final_decision"],
        "additionalProperties": False,
    }



#: What a re-parse takes: raw text in, a parse out (``AnnotationStore.reparse`` accepts any such).
Parser = Callable[[str], TeacherParse]

#: The reason note of a final decision the parser derived (the store keeps the reason, so a
#: stored answer says whether its final decision was written or derived).
DERIVED_FINAL_NOTE = "final decision missing; derived from the three criteria"


def final_was_derived(reason: Optional[str]) -> bool:
    """Whether a stored parse reason says the final decision was derived, not written."""
    return isinstance(reason, str) and DERIVED_FINAL_NOTE in reason

# --- text normalisation ----------------------------------------------------------------

_CRITERION_WORDS = {
    Criterion.LOCATION: ("location", "placement", "position"),
    Criterion.SIZE: ("size", "scale"),
    Criterion.CO_OCCURRENCE: ("co-occurrence", "cooccurrence", "co occurrence", "co_occurrence", "co-occurence"),
}
_NAME_TO_CRITERION = {w: c for c, words in _CRITERION_WORDS.items() for w in words}
_CRIT_ALT = "|".join(sorted((re.escape(w) for w in _NAME_TO_CRITERION), key=len, reverse=True))

# A label phrase at the start of a text: "In-context", "out of context", "OUT-OF-CONTEXT." ...
# It must end the text or be followed by punctuation or a connective: "In context of a
# bathroom, ..." opens a sentence, not a label.
_LABEL_AT_START = re.compile(
    r"^\W*(out[\s_-]*of[\s_-]*context|in[\s_-]*context)\b"
    r"(?=\W*$|\s*[-–—:;,.!()\[\]*_]|\s+(?:because|since|as|given|for)\b)\W*",
    re.IGNORECASE,
)
# "Final decision: X", "Final answer is X", "Overall: X", "Decision - X" (anywhere in a line);
# X may be a bare "In"/"Out" when the line ends or punctuation follows it ("Final decision: Out.",
# "Final decision: Out, since ..."), but not when a sentence goes on ("Final decision: In the end ...").
_FINAL_RE = re.compile(
    r"\b(?:final\s+(?:decision|answer|verdict|label|judg(?:e)?ment)|overall(?:\s+decision)?|decision|verdict)"
    r"\s*(?:is|=|:|-|–|—)?\s*[:\-–—]?\s*\W*"
    r"(out[\s_-]*of[\s_-]*context\b|in[\s_-]*context\b|(?:in|out)\b(?=[\s*_`]*(?:$|[.,;:!()\[\]]|\s[-–—]\s)))",
    re.IGNORECASE,
)
# "<Criterion>: rest" with optional markdown around the name; ':' or a dash as separator.
_CRIT_LINE = re.compile(rf"^(?P<name>{_CRIT_ALT})\s*(?:\((?P<paren>[^)]*)\))?\s*(?::|\s[-–—]\s)\s*(?P<rest>.*)$", re.IGNORECASE)
# The same pattern inside a line ("Location: In-context, Size: Out-of-context, ...").
_INLINE_LABEL = re.compile(
    rf"(?P<name>{_CRIT_ALT})\s*(?::|\s[-–—]\s|=)\s*\W*(?P<label>out[\s_-]*of[\s_-]*context|in[\s_-]*context)\b",
    re.IGNORECASE,
)
_ANALYSIS_HEADERS = ("analysis", "analyses", "reasoning", "explanation", "explanations", "rationale", "justification")
_HEADER_RE = re.compile(
    rf"^({'|'.join(_ANALYSIS_HEADERS)}|summary|labels|verdicts?|conclusion)\s*:?\s*$", re.IGNORECASE
)
_BULLET_RE = re.compile(r"^\s*(?:[-*+•·>]+|\d+[.)]|[a-z][.)](?=\s))\s*", re.IGNORECASE)
# "In-context or Out-of-context": the prompt's choice echoed back, not an answer.
_CHOICE_ECHO = re.compile(r"^\W*(?:or|/|\|)\s*\W*(?:out[\s_-]*of[\s_-]*context|in[\s_-]*context)\b", re.IGNORECASE)
_NEGATED = re.compile(r"\bnot\b|\bn't\b", re.IGNORECASE)


def _clean_line(line: str) -> str:
    """Drop markdown decoration, bullets and numbering; keep the words."""
    s = line.strip()
    s = _BULLET_RE.sub("", s, count=1)
    s = re.sub(r"^#+\s*", "", s)
    s = s.replace("**", "").replace("__", "").replace("`", "")
    # a single '*' emphasis around the name ("*Location*: ...")
    s = re.sub(r"(^|\s)\*([^*]+)\*(?=\s|:|$)", r"\1\2", s)
    s = _BULLET_RE.sub("", s, count=1)  # bullets inside bold ("**- Location:**")
    return s.strip()


def _label_prefix(text: str) -> tuple[Optional[Label], str]:
    """(label, rest) when text starts with a label phrase, else (None, text)."""
    m = _LABEL_AT_START.match(text)
    if not m or _CHOICE_ECHO.match(text[m.end(1):]):
        return None, text
    return Label.parse(m.group(1)), text[m.end():].strip()


def _inline_labels(line: str) -> list[tuple[Criterion, Label]]:
    """Every "<criterion>: <label>" inside a line, except an echoed "X or Y" choice."""
    out = []
    for m in _INLINE_LABEL.finditer(line):
        if not _CHOICE_ECHO.match(line[m.end():]):
            out.append((_NAME_TO_CRITERION[m.group("name").lower()], Label.parse(m.group("label"))))
    return out


def _tidy_sentence(text: str) -> Optional[str]:
    s = " ".join(text.split()).strip().strip("*_").strip()
    s = s.lstrip("-–—:;, ").strip()
    return s or None


# --- recording values, with conflicts made visible -------------------------------------

class _Reading:
    """What one parse has read so far, plus the issues met (they become the reason).

    Labels are gathered per criterion in two tiers: *stated* (a Summary line, a line that is
    only a label, a JSON summary) and *mentioned* (a label phrase inside analysis text).
    :meth:`settle` keeps the stated ones when there are any, so a mention never overrides or
    conflicts with a Summary line; two different labels within the deciding tier leave the
    criterion unknown.
    """

    def __init__(self) -> None:
        self.out = TeacherParse()
        self.issues: list[str] = []
        self.stated: dict[Criterion, list[Label]] = {c: [] for c in CRITERIA}
        self.mentioned: dict[Criterion, list[Label]] = {c: [] for c in CRITERIA}
        self.final_conflict = False  # final lines that disagree: not missing, so never derived

    def record(self, c: Criterion, text: str, kind: str) -> None:
        """Store a label ('summary'), an analysis ('analysis') or decide by shape ('auto': a
        label with a sentence after it is a mention, a label alone is stated)."""
        text = text.strip()
        if kind in ("summary", "auto"):
            lab, rest = _label_prefix(text)
            # a Summary line may say more than the label; outside a Summary only a bare label
            # ("Size: Out") is one, a sentence is an analysis
            bare = kind == "auto" and len(text.split()) <= 2
            if lab is None and (kind == "summary" or bare) and not _NEGATED.search(text):
                lab, rest = Label.parse(text), ""
            if lab is not None:
                sentence = bool(rest) and len(rest.split()) >= 3
                self.label(c, lab, mention=kind == "auto" and sentence)
                if sentence:
                    self.analysis(c, rest)
                return
            if kind == "summary":
                self.issues.append(f"{c.value} summary {text[:60]!r} names no label")
                self.analysis(c, text)  # kept as the analysis when there is none yet
                return
        self.analysis(c, text)

    def label(self, c: Criterion, lab: Optional[Label], mention: bool = False) -> None:
        """Note a label for ``c``: stated, or only mentioned inside analysis text."""
        if lab is not None:
            (self.mentioned if mention else self.stated)[c].append(lab)

    def settle(self) -> None:
        """Each criterion's label from its deciding tier; a split tier leaves it unknown."""
        for c in CRITERIA:
            found = set(self.stated[c] or self.mentioned[c])
            if len(found) == 1:
                self.out.labels[c] = found.pop()
            elif found:
                self.issues.append(f"conflicting labels for {c.value}")

    def analysis(self, c: Criterion, text: str) -> None:
        s = _tidy_sentence(text)
        if s and self.out.analyses.get(c) is None:
            self.out.analyses[c] = s


# --- JSON answers ---------------------------------------------------------------------

def _json_object(text: str) -> Optional[dict]:
    """The first JSON object in the text (bare, or inside a ``` fence), else None."""
    stripped = text.strip()
    fence = re.search(r"```(?:json)?\s*(\{.*?\})\s*```", stripped, re.DOTALL | re.IGNORECASE)
    candidates = [fence.group(1)] if fence else []
    start, end = stripped.find("{"), stripped.rfind("}")
    if start != -1 and end > start:
        candidates.append(stripped[start : end + 1])
    for cand in candidates:
        try:
            obj = json.loads(cand)
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(obj, dict):
            return obj
    return None


def _norm_key(k: Any) -> str:
    return re.sub(r"[\s_\-]+", "", str(k).lower())


def _crit_of_key(k: Any) -> Optional[Criterion]:
    key = _norm_key(k)
    for word, c in _NAME_TO_CRITERION.items():
        if key == re.sub(r"[\s_\-]+", "", word):
            return c
    return None


def _parse_json(obj: dict, r: _Reading) -> None:
    """Fill the reading from a JSON answer: {analysis:{...}, summary:{...}, final_decision}
    and flatter shapes ({location:{analysis,label}, ...}, {location_label: ...})."""
    flat = {_norm_key(k): v for k, v in obj.items()}
    sections = {"analysis": ("analysis", "analyses", "reasoning"), "summary": ("summary", "labels", "verdicts")}
    for kind, names in sections.items():
        for name in names:
            sec = flat.get(name)
            if isinstance(sec, dict):
                for k, v in sec.items():
                    c = _crit_of_key(k)
                    if c is not None and v is not None:
                        r.record(c, str(v), kind)
    label_keys = ("label", "decision", "verdict")
    analysis_keys = ("analysis", "reason", "reasoning", "explanation")
    for k, v in obj.items():
        c, nk = _crit_of_key(k), _norm_key(k)
        if c is not None:
            if isinstance(v, dict):
                for kk, vv in v.items():
                    nkk = _norm_key(kk)
                    if vv is not None and nkk in label_keys + analysis_keys:
                        r.record(c, str(vv), "summary" if nkk in label_keys else "analysis")
            elif v is not None:
                r.record(c, str(v), "auto")
            continue
        for suffix, kind in (("label", "summary"), ("decision", "summary"), ("analysis", "analysis")):
            if nk.endswith(suffix) and (cc := _crit_of_key(nk[: -len(suffix)])) is not None and v is not None:
                r.record(cc, str(v), kind)
    for name in ("finaldecision", "final", "decision", "finalanswer", "verdict", "overall"):
        if isinstance(flat.get(name), str):
            lab = Label.parse(flat[name])
            if lab is None:
                r.issues.append(f"final decision {flat[name]!r} names no label")
            r.out.final = lab
            break


# --- text answers ---------------------------------------------------------------------

def _parse_text(text: str, r: _Reading) -> None:
    section: Optional[str] = None  # "analysis" | "summary" | None (before any header)
    finals: list[Optional[Label]] = []
    for raw_line in text.splitlines():
        line = _clean_line(raw_line)
        if not line:
            continue
        h = _HEADER_RE.match(line)
        if h:
            section = "analysis" if h.group(1).lower() in _ANALYSIS_HEADERS else "summary"
            continue
        # "Analysis: Location: ..." (header and first line joined)
        joined = re.match(r"^(analysis|summary)\s*:\s*(.+)$", line, re.IGNORECASE)
        if joined and _CRIT_LINE.match(joined.group(2).strip()):
            section = joined.group(1).lower()
            line = joined.group(2).strip()
        m_final = _FINAL_RE.search(line)
        if m_final and _CHOICE_ECHO.match(line[m_final.end():]):
            m_final = None  # "Final decision: In-context. or Out-of-context." echoes the template
        m = _CRIT_LINE.match(line)
        if m is None:
            if m_final:
                finals.append(Label.parse(m_final.group(1)))
            else:
                for c, lab in _inline_labels(line):  # labels inside prose lines: mentions outside a Summary
                    r.label(c, lab, mention=section != "summary")
            continue
        c = _NAME_TO_CRITERION[m.group("name").lower()]
        rest = m.group("rest").strip()
        paren = (m.group("paren") or "").strip()
        inline = _inline_labels(line)
        if len(inline) > 1:  # "Location: In-context, Size: Out-of-context, ..."
            for ci, lab in inline:
                r.label(ci, lab, mention=section == "analysis")
        elif paren and Label.parse(paren) is not None:  # "Location (Out-of-context): sentence"
            r.label(c, Label.parse(paren), mention=section == "analysis")
            r.analysis(c, rest)
        elif section == "analysis":
            # An analysis line that opens with a label mentions it: used only when no Summary
            # line states one for this criterion.
            lab, after = _label_prefix(rest)
            if lab is not None and (not after or len(after.split()) >= 3):
                r.label(c, lab, mention=True)
                if after:
                    r.analysis(c, after)
            else:
                r.analysis(c, rest)
        else:
            r.record(c, rest, "summary" if section == "summary" else "auto")
        if m_final and m_final.start() > 0:
            finals.append(Label.parse(m_final.group(1)))
    distinct = {f for f in finals if f is not None}
    if len(distinct) == 1:
        r.out.final = distinct.pop()
    elif len(distinct) > 1:
        r.final_conflict = True
        r.issues.append("final decision lines disagree")
    elif re.search(r"\bfinal\s+(decision|answer|verdict)\b", text, re.IGNORECASE):
        r.issues.append("final decision line names no label")


# --- entry point ----------------------------------------------------------------------

def parse_teacher_answer(text: Optional[str]) -> TeacherParse:
    """Parse one teacher answer (text format or JSON). Never raises on odd input."""
    if text is None or not str(text).strip():
        return TeacherParse(status="empty", reason="no text")
    text = str(text)
    r = _Reading()
    obj = _json_object(text) if "{" in text else None
    if obj is not None:
        _parse_json(obj, r)
        if not any(r.stated[c] or r.mentioned[c] for c in CRITERIA) and r.out.final is None:
            obj, r = None, _Reading()  # a JSON object holding none of the answer: read as text
    if obj is None:
        _parse_text(text, r)
    r.settle()
    _judge(r.out, r.issues, derive_final=not r.final_conflict)
    return r.out


def _judge(out: TeacherParse, issues: list[str], derive_final: bool = True) -> None:
    """Set status and reason from what was read."""
    known = [out.labels[c] for c in CRITERIA if out.labels[c] is not None]
    missing_labels = [c.value for c in CRITERIA if out.labels[c] is None]
    missing_analyses = [c.value for c in CRITERIA if out.analyses[c] is None]
    if not known and out.final is None:
        out.status = "unparseable"
        issues.insert(0, "no criterion label and no final decision found")
        out.reason = "; ".join(issues)
        return
    if out.final is None and not missing_labels and derive_final:
        out.final = fuse(out.labels[c] for c in CRITERIA)
        out.final_derived = True
        issues.append(DERIVED_FINAL_NOTE)
    contradiction = False
    if out.final is Label.IN and any(lab is Label.OUT for lab in known):
        outs = [c.value for c in CRITERIA if out.labels[c] is Label.OUT]
        issues.insert(0, f"final decision In-context but {', '.join(outs)} Out-of-context")
        contradiction = True
    elif out.final is Label.OUT and not missing_labels and all(lab is Label.IN for lab in known):
        issues.insert(0, "final decision Out-of-context but all three criteria In-context")
        contradiction = True
    if missing_labels:
        issues.append(f"no label for {', '.join(missing_labels)}")
    if out.final is None:
        issues.append("no final decision")
    if missing_analyses:
        issues.append(f"no analysis for {', '.join(missing_analyses)}")
    if contradiction:
        out.status = "contradiction"
    elif missing_labels or out.final is None or missing_analyses or any("conflict" in i or "disagree" in i or "names no label" in i for i in issues):
        out.status = "partial"
    else:
        out.status = "ok"
    out.reason = "; ".join(dict.fromkeys(issues)) or None
