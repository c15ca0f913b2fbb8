"""The one teacher interface every backend implements, and the image every teacher sees.

    from scenefit.teachers.registry import make_teacher
    teacher = make_teacher(teacher_config, json_answer=False, manifest_path=path)
    await teacher.start(); results = await teacher.answer_batch(requests); await teacher.aclose()

Backends are found by name through :mod:`scenefit.teachers.registry`; this module knows none of them.
A backend that hands a whole run to an engine (the Ray backends) sets ``streams`` and answers
through :meth:`Teacher.answer_stream` instead of batches.

A backend never raises for one bad sample or one failed request: it returns a
:class:`TeacherResult` with ``raw=None`` and an ``error`` of the form ``"<kind>: <detail>"``
(``kind`` is a short stable word such as ``http_500``, ``timeout``, ``connect``, ``image``), so
the run records it and goes on.
"""

from __future__ import annotations

import asyncio
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, AsyncIterator, Optional

from scenefit.core.records import Sample
from scenefit.teachers.config import TeacherConfig


@dataclass(frozen=True)
class TeacherRequest:
    """One question: the sample (its image and boxed object) and the rendered prompt."""

    sample: Sample
    prompt: str


@dataclass
class TeacherResult:
    """One answer, or the reason there is none (``raw`` None, ``error`` set).

    ``p_out``: the teacher's probability of Out-of-context at each label it wrote (keys
    :data:`scenefit.teachers.store.P_OUT_KEYS`, None where unknown), or None when the backend gives no
    probabilities; ``p_out_note`` says why a value is None."""

    raw: Optional[str]
    error: Optional[str] = None
    latency_s: float = 0.0
    attempts: int = 1
    p_out: Optional[dict[str, Optional[float]]] = None
    p_out_note: Optional[str] = None

    @classmethod
    def failure(cls, kind: str, detail: str, latency_s: float = 0.0, attempts: int = 1) -> "TeacherResult":
        return cls(raw=None, error=f"{kind}: {detail}", latency_s=latency_s, attempts=attempts)


class Teacher(ABC):
    """A teacher behind one interface. ``batch_size`` requests go to :meth:`answer_batch` at a
    time and ``concurrency`` such calls run at once."""

    #: True for a backend that takes all of a run's requests at once (:meth:`answer_stream`).
    streams: bool = False

    def __init__(self, cfg: TeacherConfig):
        self.cfg = cfg

    @classmethod
    def create(cls, cfg: TeacherConfig, context: Any) -> "Teacher":
        """Build from the teacher's config and the run's :class:`~scenefit.teachers.registry.TeacherContext`
        (what :func:`scenefit.teachers.registry.make_teacher` calls); backends that need the context override it."""
        return cls(cfg)

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def backend(self) -> str:
        return self.cfg.backend

    @property
    def model_id(self) -> str:
        return self.cfg.model or ""

    @property
    def batch_size(self) -> int:
        return 1

    @property
    def concurrency(self) -> int:
        return self.cfg.concurrency

    def decoding(self) -> dict[str, Any]:
        return self.cfg.decoding()

    async def start(self) -> None:
        """Open clients / load models (called once before the first request)."""

    async def aclose(self) -> None:
        """Release what :meth:`start` opened."""

    async def answer_batch(self, requests: list[TeacherRequest]) -> list[TeacherResult]:
        """Answers in request order; the default asks :meth:`answer_one` for each, concurrently."""
        return list(await asyncio.gather(*(self.answer_one(r) for r in requests)))

    @abstractmethod
    async def answer_one(self, request: TeacherRequest) -> TeacherResult:
        """Answer one request (never raises for a failure of that request)."""

    def answer_stream(self, requests: list[TeacherRequest]) -> AsyncIterator[tuple[TeacherRequest, TeacherResult]]:
        """A streaming backend's answers to all ``requests``, as they come, in any order."""
        raise NotImplementedError(f"backend {self.backend!r} answers in batches (streams is False)")


def teacher_image(sample: Sample, max_pixels: Optional[int] = None):
    """The image a teacher sees: loaded defensively, the red box drawn when the file lacks it,
    downscaled (aspect kept) to at most ``max_pixels``. Raises scenefit.core.images.ImageError."""
    from PIL import Image

    from scenefit.core.images import draw_box, load_image

    img = load_image(sample.image)
    if not sample.boxed and sample.box is not None:
        img = draw_box(img, sample.box)  # the one width rule, as ingest draws it
    if max_pixels and img.width * img.height > max_pixels:
        scale = math.sqrt(max_pixels / (img.width * img.height))
        size = (max(1, int(img.width * scale)), max(1, int(img.height * scale)))
        img = img.resize(size, Image.Resampling.LANCZOS)
    return img
