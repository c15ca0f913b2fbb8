"""Simulated teachers: the synthetic world's personas answering in the teachers' text format.

    scenefit annotate runs/demo/ingest/manifest.parquet --db runs/demo/annotate/annotations.sqlite --config demo

Registered as the teacher backend ``simulated`` through the package's entry points
(:mod:`scenefit.teachers.registry`), so no product module imports the test bed.
The answers come from :mod:`scenefit.testbed.personas` (per-persona error rates and style noise).
The scene layout (``layout.jsonl`` of the world folder) lets a persona describe what is really
in the image; without it the persona answers from the sample alone. ``delay_s`` adds an
artificial latency so that concurrency, progress and kill-and-resume can be exercised.
Each answer also carries the persona's probability of Out-of-context at every label it wrote
(its stated confidence model, :mod:`scenefit.testbed.personas`), which the store keeps as ``p_out``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Optional

from scenefit.teachers.base import Teacher, TeacherRequest, TeacherResult
from scenefit.teachers.config import TeacherConfig

LAYOUT_FILE = "layout.jsonl"


def find_world_dir(manifest_path: Optional[Path]) -> Optional[Path]:
    """The world folder near a manifest: its own folder, the one above, or a sibling of it
    (``runs/demo/ingest/manifest.parquet`` finds ``runs/demo/world/layout.jsonl``)."""
    if manifest_path is None:
        return None
    here = Path(manifest_path).resolve().parent
    candidates = [here, here.parent]
    if here.parent.is_dir():
        candidates += sorted(p for p in here.parent.iterdir() if p.is_dir() and p != here)
    for c in candidates:
        if (c / LAYOUT_FILE).is_file():
            return c
    return None


class SimulatedBackend(Teacher):
    """One persona of the synthetic world behind the teacher interface."""

    def __init__(self, cfg: TeacherConfig, manifest_path: Optional[Path] = None):
        super().__init__(cfg)
        self.manifest_path = manifest_path
        self.world_dir: Optional[Path] = None
        self._teacher: Any = None
        self._layouts: dict[str, Any] = {}

    @classmethod
    def create(cls, cfg: TeacherConfig, context: Any) -> "SimulatedBackend":
        return cls(cfg, manifest_path=context.manifest_path)

    @property
    def persona(self) -> str:
        return self.cfg.persona or self.cfg.name

    @property
    def model_id(self) -> str:
        """The model the persona stands in for, marked simulated (from the persona itself)."""
        from scenefit.testbed.personas import PERSONAS

        known = PERSONAS.get(self.persona)
        return known.model_id if known else f"simulated:{self.persona}"

    async def start(self) -> None:
        from scenefit.testbed.personas import PERSONAS, SimulatedTeacher, load_layouts

        if self.persona not in PERSONAS:
            raise ValueError(f"teacher {self.name!r}: unknown persona {self.persona!r} (set `persona:`); known: {', '.join(PERSONAS)}")
        self._teacher = SimulatedTeacher(self.persona)
        if self.cfg.world_dir:
            self.world_dir = Path(self.cfg.world_dir)
            if not (self.world_dir / LAYOUT_FILE).is_file():
                raise FileNotFoundError(f"teacher {self.name!r}: no {LAYOUT_FILE} in world_dir {self.world_dir}")
        else:
            self.world_dir = find_world_dir(self.manifest_path)
        if self.world_dir is not None:
            self._layouts = load_layouts(self.world_dir)

    async def answer_one(self, request: TeacherRequest) -> TeacherResult:
        t0 = time.perf_counter()
        if self.cfg.delay_s:
            await asyncio.sleep(self.cfg.delay_s)
        try:
            answer = self._teacher.respond(request.sample, self._layouts.get(request.sample.id))
        except Exception as e:  # one sample the persona cannot answer must not stop the run
            return TeacherResult.failure("simulated", f"{type(e).__name__}: {e}", time.perf_counter() - t0)
        missing = [k for k, v in answer.p_out.items() if v is None]
        note = f"{', '.join(missing)}: label line not in the answer" if missing else None
        return TeacherResult(raw=answer.text, latency_s=time.perf_counter() - t0, p_out=answer.p_out, p_out_note=note)
