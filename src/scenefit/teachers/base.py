"""The one teacher interface every backend implements, and the image every teacher sees.

    from scenefit.teachers.base import make_teacher
    teacher = make_teacher(teacher_config, json_answer=False, manifest_path=path)
    await teacher.start(); results = await teacher.answer_batch(requests); await teacher.aclose()

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
from pathlib import Path
from typing import Any, Optional

from scenefit.core.records import Sample
from scenefit.teachers.config import TeacherConfig


@dataclass(frozen=True)
class TeacherRequest:
    """One question: the sample (its image and boxed object) and the rendered prompt."""

    sample: Sample
    prompt: str


@dataclass
class TeacherResult:
    """One answer, or the reason there is none (``raw`` None, ``error`` set)."""

    raw: Optional[str]
    error: Optional[str] = None
    latency_s: float = 0.0
    attempts: int = 1

    @classmethod
    def failure(cls, kind: str, detail: str, latency_s: float = 0.0, attempts: int = 1) -> "TeacherResult":
        return cls(raw=None, error=f"{kind}: {detail}", latency_s=latency_s, attempts=attempts)


class Teacher(ABC):
    """A teacher behind one interface. ``batch_size`` requests go to :meth:`answer_batch` at a
    time and ``concurrency`` such calls run at once."""

    def __init__(self, cfg: TeacherConfig):
        self.cfg = cfg

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


def teacher_image(sample: Sample, max_pixels: Optional[int] = None):
    """The image a teacher sees: loaded defensively, the red box drawn when the file lacks it,
    downscaled (aspect kept) to at most ``max_pixels``. Raises scenefit.core.images.ImageError."""
    from PIL import Image

    from scenefit.core.images import draw_box, load_image

    img = load_image(sample.image)
    if not sample.boxed and sample.box is not None:
        img = draw_box(img, sample.box, width=max(2, round(min(img.size) / 150)))
    if max_pixels and img.width * img.height > max_pixels:
        scale = math.sqrt(max_pixels / (img.width * img.height))
        size = (max(1, int(img.width * scale)), max(1, int(img.height * scale)))
        img = img.resize(size, Image.Resampling.LANCZOS)
    return img


def make_teacher(cfg: TeacherConfig, json_answer: bool = False, manifest_path: Optional[Path] = None) -> Teacher:
    """The backend object for one teacher config (backends are imported only when used)."""
    if cfg.backend == "openai":
        from scenefit.teachers.openai_backend import OpenAITeacher

        return OpenAITeacher(cfg, json_answer=json_answer)
    if cfg.backend == "transformers":
        from scenefit.teachers.transformers_backend import TransformersTeacher

        return TransformersTeacher(cfg)
    if cfg.backend == "simulated":
        from scenefit.testbed.simulated_backend import SimulatedBackend

        return SimulatedBackend(cfg, manifest_path=manifest_path)
    raise ValueError(f"teacher {cfg.name!r}: unknown backend {cfg.backend!r}")
