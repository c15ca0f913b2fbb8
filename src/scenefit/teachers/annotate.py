"""Ask every teacher about every sample and store the answers, resumably.

    scenefit annotate runs/demo/ingest/manifest.parquet --db runs/demo/annotate/annotations.sqlite --config demo

    from scenefit.teachers.annotate import annotate
    summary = annotate(samples, cfg, "annotations.sqlite", manifest_path=path)

Per teacher, ``concurrency`` workers take ``batch_size`` pending samples at a time from a
shared list and hand answers to one writer, which commits them in batches of
``commit_every`` (or after ``commit_interval_s``). A killed run therefore loses at most the
answers not yet committed; a rerun skips every stored (sample, teacher, prompt hash) — also
stored request failures, unless ``redo_failed``. A run holds the store's :class:`RunLock`
while it works, so a second run on the same store waits for it (``lock_wait_s``) or refuses
with :class:`~scenefit.teachers.store.StoreBusy`, and never asks a teacher what the first one asks; the
summary's ``stored`` counts the rows the store really wrote.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from scenefit.core.progress import Progress
from scenefit.core.records import Sample
from scenefit.prompts import PromptTemplate, teacher_prompt
from scenefit.teachers.base import Teacher, TeacherRequest, TeacherResult
from scenefit.teachers.config import AnnotateConfig
from scenefit.teachers.parse import parse_teacher_answer
from scenefit.teachers.registry import make_teacher
from scenefit.teachers.store import FAILED, AnnotationStore, RunLock, StoreError, failure_kind, parsed_fields


@dataclass
class TeacherTally:
    """What happened for one teacher in one run."""

    model_id: str = ""
    backend: str = ""
    pending: int = 0
    skipped: int = 0
    stored: int = 0
    failed_by_reason: Counter = field(default_factory=Counter)
    by_status: Counter = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "backend": self.backend,
            "pending": self.pending,
            "skipped": self.skipped,
            "stored": self.stored,
            "failed": sum(self.failed_by_reason.values()),
            "failed_by_reason": dict(self.failed_by_reason),
            "by_status": dict(self.by_status),
        }


@dataclass
class AnnotateSummary:
    prompt_name: str
    prompt_hash: str
    samples: int
    teachers: dict[str, TeacherTally]
    elapsed_s: float = 0.0
    interrupted: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt_name,
            "prompt_hash": self.prompt_hash,
            "samples": self.samples,
            "elapsed_s": round(self.elapsed_s, 3),
            "interrupted": self.interrupted,
            "teachers": {k: v.to_json() for k, v in self.teachers.items()},
        }


def result_row(teacher: Teacher, sample_id: str, prompt_hash: str, result: TeacherResult) -> dict[str, Any]:
    """The store row of one answer (parsed) or one request failure."""
    row: dict[str, Any] = {
        "sample_id": sample_id,
        "teacher": teacher.name,
        "prompt_hash": prompt_hash,
        "model_id": teacher.model_id,
        "backend": teacher.backend,
        "raw": result.raw,
        "decoding": teacher.decoding(),
        "latency_s": round(result.latency_s, 4),
        "attempts": result.attempts,
    }
    if result.raw is None:
        row.update(status=FAILED, reason=result.error or "unknown: no answer and no reason")
    else:
        row.update(parsed_fields(parse_teacher_answer(result.raw)))
        row.update(p_out=result.p_out, p_out_note=result.p_out_note)
    return row


class _Writer:
    """Collects rows and commits them in batches (the only place that writes the store)."""

    def __init__(self, store: AnnotationStore, cfg: AnnotateConfig, tallies: dict[str, TeacherTally],
                 progress: Progress):
        self.store, self.cfg, self.tallies, self.progress = store, cfg, tallies, progress
        self.pending: list[dict[str, Any]] = []
        self.last_flush = time.monotonic()

    def add(self, row: dict[str, Any]) -> None:
        self.pending.append(row)
        self.progress.advance(1)
        if len(self.pending) >= self.cfg.commit_every:
            self.flush()
        else:
            self.flush_if_due()

    def flush_if_due(self) -> None:
        if self.pending and time.monotonic() - self.last_flush >= self.cfg.commit_interval_s:
            self.flush()

    async def tick(self) -> None:
        """Commit waiting answers every ``commit_interval_s`` even when no new one arrives
        (slow teachers), so a kill loses only what is in flight."""
        while True:
            await asyncio.sleep(self.cfg.commit_interval_s / 2)
            self.flush_if_due()

    def flush(self) -> None:
        self.last_flush = time.monotonic()
        if not self.pending:
            return
        rows, self.pending = self.pending, []
        written = self.store.put_rows(rows, redo_failed=self.cfg.redo_failed)
        for r, was_written in zip(rows, written):
            t = self.tallies[r["teacher"]]
            if not was_written:  # another writer stored this key meanwhile: the summary counts what we added
                t.skipped += 1
                continue
            t.stored += 1
            t.by_status[r["status"]] += 1
            if r["status"] == FAILED:
                t.failed_by_reason[failure_kind(r["reason"])] += 1
        self.progress.note(failed=sum(sum(t.failed_by_reason.values()) for t in self.tallies.values()))


async def _run_teacher(teacher: Teacher, samples: Sequence[Sample], prompt: PromptTemplate, writer: _Writer) -> None:
    """``concurrency`` workers draining one shared iterator of pending samples."""
    queue: Iterator[Sample] = iter(samples)

    def next_batch() -> list[Sample]:
        batch = []
        for s in queue:
            batch.append(s)
            if len(batch) >= teacher.batch_size:
                break
        return batch

    if teacher.streams:  # an engine that takes the whole run (Ray Data): answers come back as they finish
        requests = [TeacherRequest(sample=s, prompt=prompt.render(s.object)) for s in samples]
        async for request, res in teacher.answer_stream(requests):
            writer.add(result_row(teacher, request.sample.id, prompt.hash, res))
        return

    async def worker() -> None:
        while batch := next_batch():
            requests = [TeacherRequest(sample=s, prompt=prompt.render(s.object)) for s in batch]
            try:
                results = await teacher.answer_batch(requests)
            except Exception as e:  # a backend bug must not lose the batch silently
                results = [TeacherResult.failure("error", f"{type(e).__name__}: {e}") for _ in batch]
            for s, res in zip(batch, results):
                writer.add(result_row(teacher, s.id, prompt.hash, res))

    await asyncio.gather(*(worker() for _ in range(min(teacher.concurrency, max(1, len(samples))))))


async def annotate_async(
    samples: Sequence[Sample],
    cfg: AnnotateConfig,
    store: AnnotationStore,
    manifest_path: Optional[Path] = None,
    teachers: Optional[list[Teacher]] = None,
) -> AnnotateSummary:
    """Annotate ``samples`` with the configured teachers (or the given ``teachers``)."""
    t_start = time.perf_counter()
    prompt = teacher_prompt(cfg.prompt_file, cfg.prompt_variant, cfg.prompt_version)
    if cfg.limit:
        samples = list(samples)[: cfg.limit]
    if teachers is None:
        if not cfg.selected():
            raise ValueError("no teachers configured (annotate.teachers is empty)")
        teachers = [make_teacher(t, json_answer=cfg.prompt_variant == "json", manifest_path=manifest_path) for t in cfg.selected()]
    # One run at a time asks the teachers: a second run on this store would see the same samples
    # missing and ask for them again. It waits (lock_wait_s), then reads what is done.
    lock = RunLock(store.path, f"scenefit annotate on {store.path.name}")
    await lock.acquire(cfg.lock_wait_s)
    try:
        return await _annotate_locked(samples, cfg, store, prompt, teachers, t_start)
    finally:
        lock.release()


def _todo(samples: Sequence[Sample], teacher: str, prompt_hash: str, cfg: AnnotateConfig,
          store: AnnotationStore) -> list[Sample]:
    """The samples a run still asks ``teacher``: none stored under this prompt (request failures
    count as stored unless ``redo_failed``)."""
    done = store.done_keys(teacher, prompt_hash, include_failed=not cfg.redo_failed)
    return [s for s in samples if s.id not in done]


def missing_answers(samples: Sequence[Sample], cfg: AnnotateConfig, store: AnnotationStore) -> dict[str, int]:
    """Per selected teacher, how many of ``samples`` a run with ``cfg`` would still ask (0 for
    every teacher: the stage is complete) — the same rule the run itself skips by."""
    prompt = teacher_prompt(cfg.prompt_file, cfg.prompt_variant, cfg.prompt_version)
    samples = list(samples)[: cfg.limit] if cfg.limit else samples
    return {t.name: len(_todo(samples, t.name, prompt.hash, cfg, store)) for t in cfg.selected()}


async def _annotate_locked(
    samples: Sequence[Sample],
    cfg: AnnotateConfig,
    store: AnnotationStore,
    prompt: PromptTemplate,
    teachers: list[Teacher],
    t_start: float,
) -> AnnotateSummary:
    tallies: dict[str, TeacherTally] = {}
    work: list[tuple[Teacher, list[Sample]]] = []
    for t in teachers:
        todo = _todo(samples, t.name, prompt.hash, cfg, store)
        tallies[t.name] = TeacherTally(model_id=t.model_id, backend=t.backend, pending=len(todo), skipped=len(samples) - len(todo))
        work.append((t, todo))
    summary = AnnotateSummary(prompt.name, prompt.hash, len(samples), tallies)
    total = sum(len(todo) for _, todo in work)
    progress = Progress(enabled=cfg.progress, unit="ans").bar("annotate", total)
    writer = _Writer(store, cfg, tallies, progress)
    started: list[Teacher] = []
    ticker = asyncio.get_running_loop().create_task(writer.tick())
    try:
        for t, todo in work:
            if todo:
                started.append(t)  # closed below even when start() fails half-way
                await t.start()
        runs = [asyncio.ensure_future(_run_teacher(t, todo, prompt, writer)) for t, todo in work if todo]
        try:
            await asyncio.gather(*runs)
        except BaseException:  # one teacher's run failed (or Ctrl-C): the others stop too, nothing runs on
            for run in runs:
                run.cancel()
            await asyncio.gather(*runs, return_exceptions=True)
            raise
    except (asyncio.CancelledError, KeyboardInterrupt):
        summary.interrupted = True
        raise
    except StoreError:  # the store refused a write (full disk, read-only): what it refused is not retried
        writer.pending = []
        raise
    finally:
        ticker.cancel()
        writer.flush()  # answers already received are kept, even on Ctrl-C
        progress.close()
        for t in started:
            try:
                await t.aclose()
            except Exception:
                pass
        summary.elapsed_s = time.perf_counter() - t_start
    return summary


def annotate(
    samples: Sequence[Sample],
    cfg: AnnotateConfig,
    db_path: Path | str,
    manifest_path: Optional[Path] = None,
) -> AnnotateSummary:
    """Synchronous entry point: open the store, run, close."""
    with AnnotationStore(db_path) as store:
        return asyncio.run(annotate_async(samples, cfg, store, manifest_path=manifest_path))
