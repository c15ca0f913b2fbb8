"""The chat layout: how a prompt, its image and an answer become the model's chat messages.

One builder for every user of a student's chat — training rows (:mod:`scenefit.train.data`),
the fast decision path and generation (:mod:`scenefit.student.decision`,
:class:`scenefit.predict.Predictor`) — so the text the model sees at prediction time is the
text it was trained on. :func:`chat_messages` is the plain layout (image first) that teachers
and other chats use.
"""

from __future__ import annotations

from typing import Optional

from scenefit.core.text import check_chat_text


def user_message(text: str, with_image: bool = True, image_after_text: bool = False) -> dict:
    """One user turn: the image and the question, the image first unless ``image_after_text``
    (the students' layout, see prompts.student_image_after_text)."""
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


def student_messages(prompt: str, system: Optional[str] = None, answer: Optional[str] = None) -> list[dict]:
    """A student's chat, in the layout of the student prompt file (image before or after the text)."""
    from scenefit.prompts import student_image_after_text

    return chat_messages(prompt, system, answer, image_after_text=student_image_after_text())


def student_prompt_text(processor, prompt: str, system: Optional[str]) -> str:
    """A student's chat-templated prompt, ending with the opening of the assistant turn (what
    generation continues and the fast path appends the decision prefix to)."""
    return processor.apply_chat_template(student_messages(prompt, system or None), tokenize=False,
                                         add_generation_prompt=True)
