"""``scenefit_student.json``: what a student folder promises, typed, written and read here only.

``scenefit train`` writes it (:func:`write_student_meta`), so do the test bed's toy students;
predict, evaluate, serve and export read it through :func:`read_student`, which also checks
that this install can honour it (the decision prefix of the student's answer format). How the
student is asked — its prompt, system turn, image position and answer format — is recorded here
and read back as one :class:`~scenefit.student.chat.StudentChat` (:attr:`StudentMeta.chat`), so
every user asks it exactly as it was trained.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from scenefit.core.criteria import Criterion
from scenefit.core.errors import ScenefitError
from scenefit.core.images import BoxStyle, common_box_style
from scenefit.student.answer import DECISION_PREFIX, AnswerFormat, decision_continuations
from scenefit.student.chat import ImagePosition, StudentChat

STUDENT_META = "scenefit_student.json"
ADAPTER_CONFIG = "adapter_config.json"
#: The adapter's weights, in the names PEFT saves them under (the first that exists is read).
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


class StudentError(ScenefitError, ValueError):
    """Students that cannot be used as asked (missing folders, mismatched bases, bad prefix)."""


class StudentMeta(BaseModel):
    """The content of ``scenefit_student.json``. Unknown keys (a newer writer's) are kept."""

    model_config = ConfigDict(extra="allow")

    criterion: str = Field(description="The criterion this student answers (machine name).")
    base_model: Optional[str] = Field(default=None, description="Base model the adapter was trained on, as the "
                                      "user named it: a hub id (e.g. Qwen/Qwen2.5-VL-3B-Instruct), else the base "
                                      "folder's own name. Older files hold the path as given (resolved as before).")
    base_model_path: Optional[str] = Field(default=None, description="Absolute path of the base folder at training "
                                           "time; null when the base was a hub id.")
    base_model_relative: Optional[str] = Field(default=None, description="Path of the base folder relative to the "
                                               "students folder (the one holding this student's folder), so a run "
                                               "moved whole finds its base; null when the base was a hub id.")
    prompt_version: Optional[str] = Field(default=None, description="Student prompt file version and hash.")
    prompt: Optional[str] = Field(default=None, description=(
        "The student's prompt template ({object} placeholder) as trained; absent in older files: the packaged "
        "student-v2 prompts, their system turn and image position."))
    system: Optional[str] = Field(default=None, description="System turn as trained; null = none of its own "
                                  "(the chat template's default turn).")
    image_position: Optional[ImagePosition] = Field(default=None, description="The image before or after the "
                                                    "question in the user turn, as trained.")
    answer_format: AnswerFormat = Field(default=AnswerFormat.DECISION_FIRST, description=(
        "Answer layout the student was trained on: decision_first (fast path possible) or reasoning_first "
        "(decision read from the generated text). Absent in older files: decision_first."))
    decision_prefix: str = Field(default=DECISION_PREFIX, description="Text the decision follows "
                                 "('Decision:' decision-first, 'Final decision:' reasoning-first).")
    label_continuations: dict[str, str] = Field(default_factory=lambda: {
        lab.value: text for lab, text in decision_continuations().items()},
        description="Text after the prefix for each label (the fast path's alternatives).")
    lora: Optional[dict[str, Any]] = Field(default=None, description="LoRA settings and adapted modules.")
    min_pixels: Optional[int] = Field(default=None, description="Image processor minimum pixels used in training.")
    max_pixels: Optional[int] = Field(default=None, description="Image processor maximum pixels used in training.")
    box_style: Optional[BoxStyle] = Field(default=None, description=(
        "How the red box was drawn on the images the student was trained on (width setting, null = grown with "
        "the image; colour), as the datasets recorded it; predict and serve draw it so unless told otherwise. "
        "Null when unknown (images that came boxed, a mix of drawings, students written before it was kept)."))
    vllm_servable: Optional[bool] = Field(default=None, description="Whether vLLM's --lora-modules can serve it.")
    vllm_note: Optional[str] = Field(default=None, description="Why vLLM cannot serve it, when it cannot.")
    synthetic: bool = Field(default=False, description="Trained on the synthetic world: its answers carry the notice.")
    notice: Optional[str] = Field(default=None, description="The SYNTHETIC notice, when synthetic.")
    toy: bool = Field(default=False, description="A toy student of the test bed (also shown with the notice).")
    train_steps: Optional[int] = Field(default=None, description="Toy students: optimiser steps.")
    trained_on: Optional[list[str]] = Field(default=None, description="Toy students: criteria of the training prompts.")
    rank: Optional[int] = Field(default=None, description="Toy students: LoRA rank.")

    @field_validator("criterion")
    @classmethod
    def _criterion(cls, v: str) -> str:
        return Criterion.parse(v).value

    @field_validator("answer_format", mode="before")
    @classmethod
    def _answer_format(cls, v: Any) -> AnswerFormat:
        return AnswerFormat.parse(v)

    @classmethod
    def for_chat(cls, chat: StudentChat, criterion: str, **fields: Any) -> "StudentMeta":
        """The metadata of ``criterion``'s student trained with ``chat`` (its prompt, system turn, image
        position, answer format and decision prefix), plus ``fields``."""
        crit = Criterion.parse(criterion).value
        mine = chat.for_criterion(Criterion(crit))
        return cls(criterion=crit, prompt_version=mine.prompt_version, prompt=mine.prompts[crit], system=mine.system,
                   image_position=mine.image_position, answer_format=mine.answer_format,
                   decision_prefix=mine.answer_format.decision_prefix, **fields)

    @property
    def chat(self) -> StudentChat:
        """How this student is asked, as it was trained (older files: the packaged student-v2 prompts)."""
        if self.prompt is None:
            legacy = StudentChat.legacy(self.answer_format)
            return legacy.for_criterion(Criterion(self.criterion))
        return StudentChat(prompt_version=self.prompt_version or "unknown", prompts={self.criterion: self.prompt},
                           system=self.system, image_position=self.image_position or "before_text",
                           answer_format=self.answer_format)

    @property
    def shows_notice(self) -> bool:
        """Trained on the synthetic world, or a toy student: what it says carries the SYNTHETIC
        notice wherever it is shown (predict, serve, evaluate)."""
        return bool(self.synthetic or self.toy)


def base_record(base: str, students_root: Path | str) -> dict[str, Optional[str]]:
    """How a student records its base (the ``base_model*`` fields): an existing folder as its own
    name, its absolute path and its path relative to ``students_root`` (the folder that holds the
    student folders); anything else as the hub id given."""
    folder = Path(base).expanduser()
    if not folder.is_dir():
        return {"base_model": base, "base_model_path": None, "base_model_relative": None}
    folder = folder.resolve()
    return {"base_model": folder.name, "base_model_path": str(folder),
            "base_model_relative": os.path.relpath(folder, Path(students_root).resolve())}


def loadable_base(record: dict[str, Optional[str]]) -> str:
    """What PEFT and vLLM can load from any working folder: the absolute path of a folder base,
    else the hub id (``adapter_config.json``'s ``base_model_name_or_path``)."""
    return record.get("base_model_path") or record["base_model"]


def write_student_meta(meta: StudentMeta, folder: Path | str) -> Path:
    """Write ``folder/scenefit_student.json`` atomically."""
    from scenefit.core.files import write_json

    return write_json(meta.model_dump(mode="json"), Path(folder) / STUDENT_META)


def read_student_meta(folder: Path | str) -> Optional[StudentMeta]:
    """The folder's metadata, None when it has no ``scenefit_student.json``; a file that does
    not parse or validate is a StudentError naming it."""
    path = Path(folder) / STUDENT_META
    if not path.is_file():
        return None
    try:
        return StudentMeta.model_validate(json.loads(path.read_text()))
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'file'}: {err['msg']}" for err in e.errors())
        raise StudentError(f"{path}: not a valid {STUDENT_META}: {problems}") from None
    except ValueError as e:  # not JSON
        raise StudentError(f"{path}: not a valid {STUDENT_META}: {e}") from None


@dataclass(frozen=True)
class StudentInfo:
    """One student folder and what its metadata says."""

    criterion: Criterion
    path: Path
    base_model: Optional[str]
    meta: StudentMeta
    adapter_config: dict = field(default_factory=dict)

    @property
    def synthetic(self) -> bool:
        """Trained on the synthetic world, or a toy student of the test bed (see StudentMeta.shows_notice)."""
        return self.meta.shows_notice

    @property
    def answer_format(self) -> AnswerFormat:
        return self.meta.answer_format

    @property
    def chat(self) -> StudentChat:
        """How this student is asked, as it was trained."""
        return self.meta.chat

    @property
    def rank(self) -> int:
        ranks = [int(self.adapter_config.get("r", 0) or 0)]
        ranks += [int(v) for v in (self.adapter_config.get("rank_pattern") or {}).values()]
        return max(ranks)


def trained_box_style(students: Iterable[StudentInfo]) -> Optional[BoxStyle]:
    """The box the students were trained on, when every one of them records the same; None when
    any records none. Students that record different boxes also give None, with a warning: one
    image is drawn for all of them."""
    styles = [s.meta.box_style for s in students]
    common = common_box_style(styles)
    if common is None and len({s for s in styles if s is not None}) > 1:
        warnings.warn("the students were trained on differently drawn boxes "
                      f"({sorted({s.model_dump_json() for s in styles if s is not None})}); set predict.box_width "
                      "and predict.box_color to choose one", stacklevel=2)
    return common


def read_student(path: Path, criterion: Optional[Criterion] = None) -> StudentInfo:
    """Read one student folder: its adapter config, its weights file (present, not empty) and
    its ``scenefit_student.json``, which must exist: without it nothing says how the adapter was
    trained (answer format, decision prefix, prompt version), and serving it with guessed
    defaults could read its decisions at the wrong place. A StudentError names the file."""
    from scenefit.prompts import student_prompt_version

    path = Path(path)
    if not (path / ADAPTER_CONFIG).is_file():
        raise StudentError(f"{path}: no {ADAPTER_CONFIG} (not a PEFT adapter folder)")
    try:
        adapter_config = json.loads((path / ADAPTER_CONFIG).read_text())
    except ValueError as e:
        raise StudentError(f"{path / ADAPTER_CONFIG}: not valid JSON ({e})") from None
    weights = next((path / w for w in ADAPTER_WEIGHTS if (path / w).is_file()), None)
    if weights is None:
        raise StudentError(f"{path}: no adapter weights ({' or '.join(ADAPTER_WEIGHTS)})")
    if weights.stat().st_size == 0:
        raise StudentError(f"{weights}: the adapter weights file is empty (0 bytes); copy or train it again")
    meta = read_student_meta(path)
    if meta is None:
        raise StudentError(
            f"{path}: no {STUDENT_META}, so nothing says how this adapter was trained (answer format, decision "
            f"prefix, prompt version); train it with `scenefit train`, or write one: "
            f'{{"criterion": "{criterion.value if criterion else path.name}"}} declares a decision-first student '
            "of this version"
        )
    crit = Criterion.parse(meta.criterion)
    if criterion is not None and crit is not criterion:
        raise StudentError(f"{path}: {STUDENT_META} says criterion {crit.value}, but it was given for {criterion.value}")
    expected = meta.answer_format.decision_prefix
    if meta.decision_prefix != expected:
        raise StudentError(
            f"{path}: trained with answer prefix {meta.decision_prefix!r}, but this version's "
            f"{meta.answer_format.value} students decide after {expected!r}"
        )
    if meta.prompt is None and meta.prompt_version and meta.prompt_version != student_prompt_version():
        warnings.warn(
            f"{path}: trained with student prompts {meta.prompt_version}, this install has {student_prompt_version()}; "
            "answers may be worse than measured",
            stacklevel=2,
        )
    base = meta.base_model or adapter_config.get("base_model_name_or_path")
    return StudentInfo(crit, path.resolve(), base, meta, adapter_config)
