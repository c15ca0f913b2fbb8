"""The one shape of a problem scenefit reports: an exception base for everything it raises on
purpose, and one error row for an input item that could not be used.

    from scenefit.core.errors import ScenefitError, error_row
    class StoreError(ScenefitError, OSError): ...          # keeps its builtin base for callers
    errors.append(error_row(sample.id, "bad_box", f"sample {sample.id}: box (3,1,2,4) is empty", row=7))

An error row is ``{"id", "code", "message"}`` — ``code`` a stable word a program can branch
on, ``message`` a sentence naming the item and the problem — plus, where it helps to find the
item, where it came from (``row``, ``line``, ``image``). Every stage writes its rejected items in
this shape (``errors.jsonl``, ``predict --out``/``--json``, ``evaluate``'s errors); the HTTP
servers wrap the same two fields in their protocol's envelope (``{"error": {"code", "message"}}``).
"""

from __future__ import annotations

from typing import Any

#: Keys every error row has, in this order.
ERROR_ROW_KEYS = ("id", "code", "message")


class ScenefitError(Exception):
    """Base of every exception scenefit raises on purpose (bad input, a missing file, a refused
    setting). Subclasses also derive from the builtin they always were (ValueError, OSError, ...),
    so ``except ValueError`` keeps working; ``except ScenefitError`` catches them all. ``code`` is
    the stable word for the problem where one applies."""

    code: str = "error"


class DatasetError(ScenefitError, ValueError):
    """A dataset file or row that cannot be used (training, scoring); the message names it."""


def error_row(item_id: Any, code: str, message: str, **where: Any) -> dict[str, Any]:
    """One rejected item: ``{"id", "code", "message"}`` plus the optional ``where`` fields
    (``row``, ``line``, ``image``, ...); ``None`` values in ``where`` are left out."""
    return {"id": str(item_id), "code": str(code), "message": str(message),
            **{k: v for k, v in where.items() if v is not None}}
