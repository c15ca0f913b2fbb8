"""The three criteria, the two labels and the fusion rule — defined once, used everywhere.

Nothing downstream copies per-criterion logic: prompts, parsers, trainers and metrics all
take a :class:`Criterion` value.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Iterable, Optional


class Criterion(str, Enum):
    """One judging criterion. The value is the machine name used in files and flags."""

    LOCATION = "location"
    SIZE = "size"
    CO_OCCURRENCE = "co_occurrence"

    @property
    def display(self) -> str:
        """Name as written in answers and reports ("Co-occurrence")."""
        return _DISPLAY[self]

    @property
    def question(self) -> str:
        """What the criterion asks, in one line (used in docs and the web page)."""
        return _QUESTION[self]

    @classmethod
    def parse(cls, text: str) -> "Criterion":
        """Accept a machine name or a display name, any case, '-', '_' or ' ' alike."""
        key = text.strip().lower().replace("-", "_").replace(" ", "_")
        for c in cls:
            if key in (c.value, c.display.lower().replace("-", "_")):
                return c
        raise ValueError(
            f"unknown criterion {text!r}; expected one of: " + ", ".join(c.value for c in cls)
        )

    def __str__(self) -> str:  # so f-strings and paths read "location", not "Criterion.LOCATION"
        return self.value


_DISPLAY = {
    Criterion.LOCATION: "Location",
    Criterion.SIZE: "Size",
    Criterion.CO_OCCURRENCE: "Co-occurrence",
}
_QUESTION = {
    Criterion.LOCATION: "Is the object placed where it physically and contextually can be?",
    Criterion.SIZE: "Does its scale fit the scene geometry and the other objects?",
    Criterion.CO_OCCURRENCE: "Can it plausibly appear together with the other objects in the scene?",
}

#: Criteria in their canonical order (files, tables, reports).
CRITERIA: tuple[Criterion, ...] = tuple(Criterion)

#: Criteria in the order the teacher prompt asks for them (the authors' order, design §2).
TEACHER_ORDER: tuple[Criterion, ...] = (Criterion.LOCATION, Criterion.CO_OCCURRENCE, Criterion.SIZE)


class Label(str, Enum):
    """The two decisions. Anything unreadable is ``None`` — never a third class."""

    IN = "In-context"
    OUT = "Out-of-context"

    @classmethod
    def parse(cls, text: str) -> Optional["Label"]:
        """Read a label written loosely ("in context", "OUT-OF-CONTEXT.", "**In-context**").

        Returns None when the text names neither label, names both, or negates one ("not
        in-context" is no label, never its opposite). A bare "in"/"out" is a label; a bare
        "yes"/"no" is not: which label it affirms depends on a question the text does not carry.
        """
        if _NEGATED_LABEL.search(text):
            return None
        t = text.strip().strip("*_`.:;!\"' ").lower().replace("_", "-").replace(" ", "-")
        t = "-".join(p for p in t.split("-") if p)
        has_out = "out-of-context" in t or t in ("out", "ooc")
        has_in = "in-context" in t.replace("out-of-context", "") or t == "in"
        if has_out and not has_in:
            return cls.OUT
        if has_in and not has_out:
            return cls.IN
        return None

    @property
    def is_out(self) -> bool:
        return self is Label.OUT

    def __str__(self) -> str:
        return self.value


LABELS: tuple[Label, ...] = (Label.IN, Label.OUT)

# "not in-context", "isn't out of context", "never in context": a negated label phrase.
# A bare "not in" counts only at the end of the text ("not in a bathroom" negates no label).
_NEGATED_LABEL = re.compile(
    r"(?:\b(?:not|never|no)|n't)[\s*_`]+(?:in[\s_-]*context\b|out[\s_-]*of[\s_-]*context\b|(?:in|out)\W*$)",
    re.IGNORECASE,
)


def fuse(labels: Iterable[Optional[Label]]) -> Optional[Label]:
    """Final decision: out-of-context when any criterion is; in-context when all are in.

    Unknown (None) criteria make the result unknown unless another criterion is already out,
    since one out-of-context criterion decides the final label on its own.
    """
    seen_unknown = False
    any_label = False
    for lab in labels:
        if lab is None:
            seen_unknown = True
            continue
        any_label = True
        if Label(lab) is Label.OUT:
            return Label.OUT
    if seen_unknown or not any_label:
        return None
    return Label.IN


def criteria_list(values: Iterable[str | Criterion]) -> list[str]:
    """Validate a config's criteria list: at least one, each a known criterion, no repeats.

    Returns machine names in the given order (config fields keep plain strings)."""
    raw = list(values or [])
    if not raw:
        raise ValueError("at least one criterion is needed")
    out = [Criterion.parse(str(c.value if isinstance(c, Criterion) else c)).value for c in raw]
    if len(set(out)) != len(out):
        raise ValueError(f"criteria repeat: {raw}")
    return out
