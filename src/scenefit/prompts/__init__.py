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


#: The student prompt files shipped, one per answer format (``datasets.answer_format``), each in
#: the layout its answers take. decision_first: ``student_v2.json`` — v1's words with the image after
#: the question: with the image last, the decision token sits a fixed number of positions after every
#: image row (the object's name, whose token count varies, comes before the image), which is what lets
#: a small student read rows through RoPE (a real Qwen2.5-VL reads either order); its own system turn.
#: reasoning_first: ``student_reasoning_v1.json`` — the authors' student layout in this project's words:
#: the image before the question, no system turn of its own (the chat template's default one), and the
#: answer asked for as ``Analysis:`` / ``Summary:`` / ``Final decision:``. A user's own file
#: (``datasets.prompt_file``, ``--student-prompt-file``) has the same shape (:func:`student_prompt_file`).
STUDENT_PROMPT_FILES = {"decision_first": "student_v2.json", "reasoning_first": "student_reasoning_v1.json"}
STUDENT_PROMPT_FILE = STUDENT_PROMPT_FILES["decision_first"]
IMAGE_POSITIONS = ("before_text", "after_text")


@dataclass(frozen=True)
class StudentPromptFile:
    """A student prompt file, read: one template per criterion, the system turn (None: the file names
    none, so the chat template's own default applies), where the image goes, and a version tag that
    ends in the hash of every text the file holds or names."""

    version: str
    templates: dict[str, PromptTemplate]
    system: Optional[str]
    image_position: str


def student_prompt_file(path: Optional[Path | str] = None, answer_format: str = "decision_first") -> StudentPromptFile:
    """Read a student prompt file: ``path`` (a user's own), else the packaged one for ``answer_format``.

    The file is JSON: ``criteria`` maps each criterion (location, size, co_occurrence) to its template
    — the text itself, or ``{"file": "name.txt"}`` for a text file beside the JSON — with an
    ``{object}`` placeholder; optional ``system`` (text, or null for none of its own), ``image_position``
    (before_text, the default, or after_text) and ``version`` (a tag; default the file's name).
    Problems are ValueErrors naming the file and the key."""
    if path is None:
        name = STUDENT_PROMPT_FILES[str(getattr(answer_format, "value", answer_format))]
        return _read_student_file(name, _package_text(name), None)
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"student prompt file not found: {p}")
    return _read_student_file(str(p), p.read_text(encoding="utf-8"), p.parent)


@lru_cache(maxsize=None)
def _packaged_student(name: str) -> StudentPromptFile:
    return _parse_student_file(name, _package_text(name), None)


def _read_student_file(name: str, text: str, folder: Optional[Path]) -> StudentPromptFile:
    return _packaged_student(name) if folder is None else _parse_student_file(name, text, folder)


def _parse_student_file(name: str, text: str, folder: Optional[Path]) -> StudentPromptFile:
    try:
        spec = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{name}: not JSON: {e}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("criteria"), dict) or not spec["criteria"]:
        raise ValueError(f"{name}: needs a 'criteria' object mapping criteria to prompt templates")
    unknown = sorted(set(spec) - {"version", "image_position", "system", "criteria"})
    if unknown:
        raise ValueError(f"{name}: unknown key(s) {unknown}")
    position = spec.get("image_position", "before_text")
    if position not in IMAGE_POSITIONS:
        raise ValueError(f"{name}: image_position must be one of {IMAGE_POSITIONS}, got {position!r}")
    system = spec.get("system")
    if system is not None and not isinstance(system, str):
        raise ValueError(f"{name}: system must be text or null")
    tag = str(spec.get("version") or Path(name).stem)
    hashed = [text]
    templates = {}
    for key, value in spec["criteria"].items():
        crit = Criterion.parse(key)
        if isinstance(value, dict) and set(value) == {"file"} and folder is not None:
            ref = folder / str(value["file"])
            if not ref.is_file():
                raise ValueError(f"{name}: criteria.{key}: file not found: {ref}")
            value = ref.read_text(encoding="utf-8")
            hashed.append(value)
        if not isinstance(value, str):
            raise ValueError(f"{name}: criteria.{key} must be the template text or {{\"file\": \"NAME.txt\"}}")
        templates[crit.value] = PromptTemplate.from_text(f"{tag}:{crit.value}", value)
    return StudentPromptFile(f"{tag}-{text_hash(chr(0).join(hashed))}", templates, system, position)


def student_prompt(criterion: Criterion | str) -> PromptTemplate:
    """The packaged decision-first student question for one criterion (versioned with the whole file)."""
    return student_prompt_file().templates[Criterion.parse(str(getattr(criterion, "value", criterion))).value]


def student_system_prompt() -> Optional[str]:
    """The packaged decision-first student prompts' system turn."""
    return student_prompt_file().system


def student_image_after_text() -> bool:
    """Whether the packaged decision-first student turn puts the image after the question."""
    return student_prompt_file().image_position == "after_text"


def student_prompt_version() -> str:
    """Version tag plus hash of the packaged decision-first student prompt file."""
    return student_prompt_file().version


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
