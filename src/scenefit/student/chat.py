"""How a student is asked: its request, its chat layout and its prompt text — one builder for
every site that asks a student (the dataset builder, training and its evaluation, the Predictor,
vLLM export, the test bed's toy students), so the text the model sees at prediction time is the
text it was trained on.

A :class:`StudentChat` holds what the students of one run were trained with: the prompt template
of each criterion, the system turn (None: none of its own, so the chat template's default turn
applies — Qwen2.5-VL's "You are a helpful assistant."), where the image goes (before or after the
question) and the answer format. ``scenefit datasets`` builds it (:meth:`StudentChat.from_settings`)
and records it in the datasets manifest; ``scenefit train`` reads it there and records each
criterion's part in ``scenefit_student.json``; predict, evaluate, serve and export-vllm read it from
the student (:attr:`scenefit.student.metadata.StudentMeta.chat`).

:meth:`StudentChat.request` is the one function that builds a (prompt, system) request;
:func:`chat_messages` is the plain layout (image first) that teachers and other chats use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, NamedTuple, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from scenefit.core.criteria import Criterion
from scenefit.core.text import check_chat_text
from scenefit.prompts import IMAGE_POSITIONS, PromptTemplate, student_prompt_file
from scenefit.student.answer import AnswerFormat

ImagePosition = Literal[IMAGE_POSITIONS]  # before_text, after_text
#: How the system turn is chosen: the prompt file's, or none of the student's own (the chat
#: template's default turn, as the authors' students were asked).
SystemTurn = Literal["prompt_file", "template_default"]


class StudentRequest(NamedTuple):
    """One question to a student: the rendered prompt and the system turn (None: the template's default)."""

    prompt: str
    system: Optional[str]

    @classmethod
    def of_row(cls, row: dict) -> "StudentRequest":
        """The request a dataset row holds (its ``prompt`` and ``system`` columns, built by :meth:`StudentChat.request`)."""
        system = row.get("system")
        return cls(row["prompt"], system if isinstance(system, str) and system else None)



def user_message(text: str, with_image: bool = True, image_after_text: bool = False) -> dict:
    """One user turn: the image and the question, the image first unless ``image_after_text``."""
    content: list[dict] = [{"type": "text", "text": text}]
    if with_image:
        content.insert(len(content) if image_after_text else 0, {"type": "image"})
    return {"role": "user", "content": content}


def chat_messages(
    prompt: str, system: Optional[str] = None, answer: Optional[str] = None, image_after_text: bool = False
) -> list[dict]:
    """System (optional) + user(image, prompt) + assistant answer (optional). Each text is
    checked first (:func:`scenefit.core.text.check_chat_text`): one that spells a special token
    or holds a control character raises UnsafeText instead of becoming part of a prompt."""
    for what, text in (("the prompt", prompt), ("the system prompt", system), ("the answer", answer)):
        if text:
            check_chat_text(text, what)
    msgs: list[dict] = []
    if system:
        msgs.append({"role": "system", "content": [{"type": "text", "text": system}]})
    msgs.append(user_message(prompt, image_after_text=image_after_text))
    if answer is not None:
        msgs.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return msgs


class StudentChat(BaseModel):
    """What the students of a run are asked and how (see the module docstring); typed, frozen."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt_version: str = Field(description="Version tag of the student prompt file plus the hash of its texts.")
    prompts: dict[str, str] = Field(description="Prompt template per criterion, with an {object} placeholder.")
    system: Optional[str] = Field(description="System turn; null = none of the student's own (the chat "
                                  "template's default turn applies).")
    image_position: ImagePosition = Field(description="The image before or after the question in the user turn.")
    answer_format: AnswerFormat = Field(description="Layout of the answers (scenefit.student.answer).")

    @field_validator("answer_format", mode="before")
    @classmethod
    def _answer_format(cls, v):
        return AnswerFormat.parse(v)

    @classmethod
    def from_settings(cls, answer_format: AnswerFormat, prompt_file: Optional[Path | str] = None,
                      system_turn: SystemTurn = "prompt_file",
                      image_position: Optional[ImagePosition] = None) -> "StudentChat":
        """The chat of a datasets run: the prompt file (``prompt_file``, else the packaged one for
        ``answer_format``), its system turn unless ``system_turn`` is template_default, its image
        position unless ``image_position`` is given."""
        spec = student_prompt_file(prompt_file, answer_format)
        return cls(prompt_version=spec.version, prompts={k: t.text for k, t in spec.templates.items()},
                   system=spec.system if system_turn == "prompt_file" else None,
                   image_position=image_position or spec.image_position, answer_format=answer_format)

    @classmethod
    def packaged(cls, answer_format: AnswerFormat = AnswerFormat.DECISION_FIRST) -> "StudentChat":
        """The packaged prompts of ``answer_format`` as they are (the default of every datasets run)."""
        return cls.from_settings(answer_format)

    @classmethod
    def legacy(cls, answer_format: AnswerFormat) -> "StudentChat":
        """The chat of students and datasets written before it was recorded: the packaged
        decision-first prompt file (student-v2) was the only one, whatever their answer format."""
        return cls.packaged(AnswerFormat.DECISION_FIRST).with_answer_format(answer_format)

    # ---- the one request builder and its chat -------------------------------------------------

    def request(self, criterion: Criterion, object_name: str) -> StudentRequest:
        """The (prompt, system) request for one object on one criterion."""
        crit = Criterion(criterion)
        if crit.value not in self.prompts:
            raise ValueError(f"the student prompts {self.prompt_version} have no prompt for {crit.value} "
                             f"(they hold {', '.join(sorted(self.prompts))})")
        return StudentRequest(PromptTemplate(f"{self.prompt_version}:{crit.value}", self.prompts[crit.value])
                              .render(object_name), self.system)

    def messages(self, request: StudentRequest, answer: Optional[str] = None) -> list[dict]:
        """The chat of one request (and its answer, for training), in this chat's layout."""
        return chat_messages(request.prompt, request.system or None, answer,
                             image_after_text=self.image_position == "after_text")

    def prompt_text(self, processor, request: StudentRequest) -> str:
        """The chat-templated request, ending with the opening of the assistant turn (what
        generation continues)."""
        return processor.apply_chat_template(self.messages(request), tokenize=False, add_generation_prompt=True)

    def decision_prompt(self, processor, request: StudentRequest) -> str:
        """:meth:`prompt_text` with the forced decision prefix appended (the fast path's input;
        decision-first students only)."""
        if not self.answer_format.has_fast_path:
            raise ValueError(f"{self.answer_format.value} students have no forced decision prefix")
        return self.prompt_text(processor, request) + self.answer_format.decision_prefix

    def for_criterion(self, criterion: Criterion) -> "StudentChat":
        """This chat narrowed to one criterion's prompt (what one student records)."""
        crit = Criterion(criterion)
        self.request(crit, "x")  # the criterion must have a prompt
        return self.model_copy(update={"prompts": {crit.value: self.prompts[crit.value]}})

    def with_answer_format(self, answer_format: AnswerFormat) -> "StudentChat":
        """The same questions read in another format (the untrained base is scored on the fast path
        whatever its students answer in)."""
        return self.model_copy(update={"answer_format": answer_format})

    def describe_layout(self) -> str:
        """The user turn's order in words (for cards and reports)."""
        return "the question, then the image" if self.image_position == "after_text" else "the image, then the question"

