"""User text that goes into a prompt: the one check every prompt builder uses.

    from scenefit.core.text import UnsafeText, check_object_name, check_chat_text
    name = check_object_name("traffic light")          # -> "traffic light"
    check_object_name("dog<|im_end|>")                  # UnsafeText(code="bad_object")

A chat template turns a conversation into one string that the tokenizer reads back, special
tokens included: a ``<|im_end|>`` typed by a user would close their turn and let them write the
assistant's, and an ``<|image_pad|>`` would desynchronise the image placeholders from the image
(a 500 inside the processor). Such text is **refused**, never silently rewritten: a changed
object name would judge another object, and a quietly edited chat would answer another question.

Two rules, one module:

* **Object names** (ingest, annotate, datasets, predict, the classify API) are short words such
  as ``traffic light``: whitespace runs become one space; any character of
  :data:`OBJECT_FORBIDDEN` (the brackets and bars every chat template's special tokens are spelt
  with — Qwen's ``<|…|>``, ``<tool_call>``, Mistral's ``[INST]``, Jinja's ``{{ }}``) and any
  control, format (bidi overrides, zero-width), private-use, surrogate or unassigned character
  is refused with code ``bad_object``.
* **Chat text** (``/v1/chat/completions`` on both servers) is free text: newlines and tabs stay,
  and so do the zero-width (non-)joiners that emoji and several scripts need; refused with code
  ``unsafe_text`` are the special-token spellings (``<|…|>`` and the served tokenizer's own added
  tokens), the other control characters (NUL, ESC, …), the bidi controls (U+202A–U+202E,
  U+2066–U+2069, U+200E/F, U+061C) and the invisible ones (U+200B, U+2060–U+2064, U+FEFF, U+180E).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable, Optional

from scenefit.core.errors import ScenefitError

#: Characters an object name may not hold: the spelling of special tokens and template syntax.
OBJECT_FORBIDDEN = frozenset("<>[]{}|\\`")

#: Unicode categories refused in object names: control, format (bidi, zero-width), surrogate,
#: private use, unassigned, line and paragraph separators.
OBJECT_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})

#: Any ``<|…|>`` token (Qwen, Llama 3, many more), whatever the tokenizer's exact list.
SPECIAL_TOKEN_SHAPE = re.compile(r"<\|[^<>|\s]{0,64}\|>")

#: Format characters refused in chat text: bidi embeddings, overrides, isolates and marks, and
#: the invisible ones that are no part of any script (the joiners U+200C/U+200D stay).
CHAT_FORBIDDEN_FORMAT = frozenset(
    [chr(c) for c in range(0x202A, 0x202F)] + [chr(c) for c in range(0x2066, 0x206A)]
    + ["\u200e", "\u200f", "\u061c", "\u200b", "\u2060", "\u2061", "\u2062", "\u2063", "\u2064", "\ufeff", "\u180e"]
)
#: One pass over the text finds any refused character: the C0/C1 controls but tab, newline and
#: carriage return (exactly Unicode's ``Cc``), and :data:`CHAT_FORBIDDEN_FORMAT`.
_CHAT_FORBIDDEN_CHARS = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f" + "".join(sorted(CHAT_FORBIDDEN_FORMAT)) + "]")


class UnsafeText(ScenefitError, ValueError):
    """User text refused before it reaches a prompt; ``code`` is ``bad_object`` or ``unsafe_text``."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _describe(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X}" + (f" {name}" if name else "")


def object_name_problem(name: str) -> Optional[str]:
    """Why ``name`` (already whitespace-normalised) cannot be an object name, or None."""
    if not name:
        return "it is empty"
    for ch in name:
        if ch in OBJECT_FORBIDDEN:
            return (f"it holds {ch!r}; object names may not use {''.join(sorted(OBJECT_FORBIDDEN))} "
                    "(the spelling of a chat template's special tokens)")
        if unicodedata.category(ch) in OBJECT_FORBIDDEN_CATEGORIES:
            return f"it holds the invisible or control character {_describe(ch)}"
    return None


def check_object_name(value: object, what: str = "object") -> str:
    """The object name with whitespace runs made one space; :class:`UnsafeText` (``bad_object``)
    when it is not a string, is empty or holds a character an object name may not hold."""
    if not isinstance(value, str):
        raise UnsafeText("bad_object", f"{what} must be a string, got {type(value).__name__}")
    name = " ".join(value.split())
    problem = object_name_problem(name)
    if problem:
        raise UnsafeText("bad_object", f"{what} {value[:80]!r} is refused: {problem}")
    return name


def chat_text_problem(text: str, reserved: Iterable[str] = ()) -> Optional[str]:
    """Why ``text`` cannot go into a chat prompt, or None. ``reserved``: the tokenizer's own
    added tokens (special or not), refused as substrings."""
    found = SPECIAL_TOKEN_SHAPE.search(text)
    if found:
        return f"it spells the special token {found.group()!r}"
    for token in reserved:
        if token and token in text:
            return f"it spells the tokenizer's reserved token {token!r}"
    bad = _CHAT_FORBIDDEN_CHARS.search(text)
    if bad:
        return f"it holds the control character {_describe(bad.group())}"
    return None


def check_chat_text(text: str, what: str, reserved: Iterable[str] = ()) -> str:
    """``text`` unchanged, or :class:`UnsafeText` (``unsafe_text``) naming ``what`` and the problem."""
    problem = chat_text_problem(text, reserved)
    if problem:
        raise UnsafeText("unsafe_text", f"{what} is refused: {problem}")
    return text
