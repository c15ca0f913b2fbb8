"""The prompt registry: every prompt is a data file with placeholders and a content hash.

One registry serves all criteria; nothing is copied per criterion. A prompt's hash (first 12
hex digits of SHA-256 over its exact text) is stored with every teacher answer and every
student dataset row, so a changed prompt never mixes with results of an old one.
"""

from __future__ import annotations

import hashlib
import json
import string
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Optional

from .criteria import Criterion

_PACKAGE_FILES = resources.files("scenefit") / "prompts"


def text_hash(text: str) -> str:
    """Stable short content hash of a prompt text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class PromptTemplate:
    """A template with an ``{object}`` placeholder; ``hash`` identifies its exact wording."""

    name: str
    text: str

    @property
    def hash(self) -> str:
        return text_hash(self.text)

    def render(self, object_name: str) -> str:
        return self.text.replace("{object}", object_name.strip())

    @classmethod
    def from_text(cls, name: str, text: str) -> "PromptTemplate":
        fields = {f for _, f, _, _ in string.Formatter().parse(text.replace("{{", "").replace("}}", "")) if f}
        if "object" not in fields:
            raise ValueError(f"prompt {name!r} has no {{object}} placeholder")
        unknown = fields - {"object"}
        if unknown:
            raise ValueError(f"prompt {name!r} has unknown placeholder(s) {sorted(unknown)}; only {{object}} is filled")
        return cls(name=name, text=text)


@lru_cache(maxsize=None)
def _package_text(filename: str) -> str:
    return (_PACKAGE_FILES / filename).read_text(encoding="utf-8")


def teacher_prompt(path: Optional[Path | str] = None, variant: str = "text") -> PromptTemplate:
    """The teacher question. ``path`` is a user's own template file; ``variant`` 'json' asks
    for the JSON answer variant used with structured output."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"prompt file not found: {p}")
        return PromptTemplate.from_text(p.stem, p.read_text(encoding="utf-8"))
    filename = {"text": "teacher_v1.txt", "json": "teacher_json_v1.txt"}.get(variant)
    if filename is None:
        raise ValueError(f"unknown teacher prompt variant {variant!r}; expected 'text' or 'json'")
    return PromptTemplate.from_text(filename.removesuffix(".txt"), _package_text(filename))


#: The student prompt file. v2 keeps v1's words and moves the image after the question: with
#: the image last, the decision token sits a fixed number of positions after every image row
#: (the object's name, whose token count varies, comes before the image), which is what lets a
#: small student read rows through RoPE. A real Qwen2.5-VL reads either order.
STUDENT_PROMPT_FILE = "student_v2.json"
IMAGE_POSITIONS = ("before_text", "after_text")


@lru_cache(maxsize=None)
def _student_spec() -> dict:
    spec = json.loads(_package_text(STUDENT_PROMPT_FILE))
    if spec.get("image_position", "before_text") not in IMAGE_POSITIONS:
        raise ValueError(f"{STUDENT_PROMPT_FILE}: image_position must be one of {IMAGE_POSITIONS}")
    return spec


def student_prompt(criterion: Criterion | str) -> PromptTemplate:
    """The student question for one criterion (versioned with the whole student file)."""
    c = Criterion(criterion) if not isinstance(criterion, Criterion) else criterion
    spec = _student_spec()
    return PromptTemplate.from_text(f"{spec['version']}:{c.value}", spec["criteria"][c.value])


def student_system_prompt() -> str:
    return _student_spec()["system"]


def student_image_after_text() -> bool:
    """Whether the student's user turn puts the image after the question (else before)."""
    return _student_spec().get("image_position", "before_text") == "after_text"


def student_prompt_version() -> str:
    """Version tag plus hash of the whole student prompt file."""
    return f"{_student_spec()['version']}-{text_hash(_package_text(STUDENT_PROMPT_FILE))}"
