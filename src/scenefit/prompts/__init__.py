"""The prompt registry: every prompt is a data file with placeholders and a content hash.

One registry serves all criteria; nothing is copied per criterion. A prompt's hash (first 12
hex digits of SHA-256 over its exact text) is stored with every teacher answer and every
student dataset row, so a changed prompt never mixes with results of an old one.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Optional

from scenefit.core.criteria import CRITERIA, TEACHER_ORDER, Criterion, Label, fuse
from scenefit.core.text import check_object_name

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
        """The prompt for ``object_name``; UnsafeText (code ``bad_object``) when the name could
        become a special token or hides control characters (:mod:`scenefit.core.text`)."""
        return self.text.replace("{object}", check_object_name(object_name))

    @classmethod
    def from_text(cls, name: str, text: str) -> "PromptTemplate":
        # a placeholder is a bare name in braces; JSON in a prompt ({"analysis": ...}) is not one
        fields = set(re.findall(r"\{([A-Za-z_]\w*)\}", text.replace("{{", "").replace("}}", "")))
        if "object" not in fields:
            raise ValueError(f"prompt {name!r} has no {{object}} placeholder")
        unknown = fields - {"object"}
        if unknown:
            raise ValueError(f"prompt {name!r} has unknown placeholder(s) {sorted(unknown)}; only {{object}} is filled")
        return cls(name=name, text=text)


@lru_cache(maxsize=None)
def _package_text(filename: str) -> str:
    return (_PACKAGE_FILES / filename).read_text(encoding="utf-8")


#: Packaged teacher prompt versions. v1: the criteria and the answer format. v2 (default): v1's
#: content plus what the authors' prompt instructs and v1 lacked (design, "The authors' prompts,
#: as facts"): take the object as really there whatever its rendering; the bar is "unusual",
#: not "impossible"; each criterion on its own; each summary label agrees with its own
#: analysis; never judge another category; analysis first, decision last; two worked examples.
#: Users who need the authors' exact wording pass it as their own file (``--prompt-file``).
TEACHER_PROMPT_VERSIONS = ("v1", "v2")
DEFAULT_TEACHER_PROMPT = "v2"
TEACHER_VARIANTS = ("text", "json")


def teacher_prompt(path: Optional[Path | str] = None, variant: str = "text",
                   version: str = DEFAULT_TEACHER_PROMPT) -> PromptTemplate:
    """The teacher question. ``path`` is a user's own template file (it wins over ``version``);
    ``variant`` 'json' asks for the JSON answer variant used with structured output;
    ``version`` picks a packaged prompt (:data:`TEACHER_PROMPT_VERSIONS`)."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"prompt file not found: {p}")
        return PromptTemplate.from_text(p.stem, p.read_text(encoding="utf-8"))
    if variant not in TEACHER_VARIANTS:
        raise ValueError(f"unknown teacher prompt variant {variant!r}; expected 'text' or 'json'")
    if version == "v1":
        filename = {"text": "teacher_v1.txt", "json": "teacher_json_v1.txt"}[variant]
        return PromptTemplate.from_text(filename.removesuffix(".txt"), _package_text(filename))
    if version == "v2":
        return PromptTemplate.from_text(f"teacher_{'json_' if variant == 'json' else ''}v2", _teacher_v2_text(variant))
    raise ValueError(f"unknown teacher prompt version {version!r}; expected one of {', '.join(TEACHER_PROMPT_VERSIONS)}")


def _teacher_v2_text(variant: str) -> str:
    """v2 = the shared rules + the variant's answer format + the worked examples written in that
    variant, so the text and JSON prompts never drift apart and every example is a well-formed
    answer (a test parses them back)."""
    examples = []
    for i, ex in enumerate(json.loads(_package_text("teacher_v2_examples.json")), start=1):
        analyses = {Criterion(k): v for k, v in ex["analysis"].items()}
        labels = {Criterion(k): Label(v) for k, v in ex["summary"].items()}
        examples.append(f"Example {i}, {ex['image']}:\n{render_teacher_answer(analyses, labels, variant)}")
    answer = _package_text(f"teacher_v2_answer_{variant}.txt").replace("{examples}", "\n\n".join(examples))
    return _package_text("teacher_v2_rules.txt").rstrip("\n") + "\n\n" + answer


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

def render_teacher_answer(analyses: dict[Criterion, str], labels: dict[Criterion, Label], variant: str = "text") -> str:
    """A well-formed teacher answer (the prompt's worked examples): ``text`` (Analysis / Summary /
    Final decision, criteria in the prompt's order) or ``json`` (the JSON variant's object)."""
    final = fuse(labels[c] for c in CRITERIA)
    if variant == "json":
        return json.dumps({
            "analysis": {c.value: analyses[c] for c in TEACHER_ORDER},
            "summary": {c.value: Label(labels[c]).value for c in TEACHER_ORDER},
            "final_decision": final.value,
        })
    if variant != "text":
        raise ValueError(f"unknown answer variant {variant!r}; expected 'text' or 'json'")
    lines = ["Analysis:", *(f"{c.display}: {analyses[c]}" for c in TEACHER_ORDER), "Summary:",
             *(f"{c.display}: {Label(labels[c]).value}" for c in TEACHER_ORDER), f"Final decision: {final.value}."]
    return "\n".join(lines)
