"""Micro-batching: requests from many clients merged into one predictor call.

    batcher = MicroBatcher(run_batch, max_batch=16, max_wait_ms=10)
    result = await batcher.submit(item, options)        # inside the server's event loop

``run_batch(items, options)`` is a blocking function (a model forward pass) that returns one
result per item. It runs in one worker thread, never two at once: a model on one device gains
nothing from overlapping calls, and while one batch runs, the requests arriving meanwhile
queue up and leave together as the next batch — so under load batches fill by themselves and
throughput grows with concurrency, while a lone request waits at most ``max_wait_ms``.

Requests whose ``options`` differ (explanations asked or not) are never merged into one call.
When a merged call fails, its halves are retried apart (bisection), so one bad item fails alone
without its whole batch being re-run item by item.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Optional, Sequence

from scenefit.core.errors import ScenefitError


@dataclass
class _Pending:
    item: Any
    options: Hashable
    future: asyncio.Future


@dataclass
class BatchStats:
    """Counters for /v1/metrics and the tests: how many calls, of which sizes."""

    batches: int = 0
    items: int = 0
    failed_items: int = 0
    sizes: Counter = field(default_factory=Counter)

    def record(self, size: int) -> None:
        self.batches += 1
        self.items += size
        self.sizes[size] += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "items": self.items,
            "failed_items": self.failed_items,
            "max_batch_size": max(self.sizes, default=0),
            "mean_batch_size": round(self.items / self.batches, 3) if self.batches else 0.0,
            "batch_sizes": {str(k): v for k, v in sorted(self.sizes.items())},
        }


class BatcherClosed(ScenefitError, RuntimeError):
    """Raised to requests still waiting when the server shuts down."""


class MicroBatcher:
    def __init__(
        self,
        run_batch: Callable[[Sequence[Any], Hashable], Sequence[Any]],
        max_batch: int = 16,
        max_wait_ms: float = 10.0,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max(0.0, max_wait_ms) / 1000.0
        self.stats = BatchStats()
        self._queue: Optional[asyncio.Queue[_Pending]] = None
        self._task: Optional[asyncio.Task] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scenefit-predict")
        self._start_lock = threading.Lock()
        self._closed = False

    @property
    def queued(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def _ensure_started(self) -> None:
        # Started lazily inside the serving loop: the app may be built before any loop exists.
        loop = asyncio.get_running_loop()
        with self._start_lock:
            if self._closed:
                raise BatcherClosed("the server is shutting down")
            if self._task is None or self._loop is not loop:
                self._loop = loop
                self._queue = asyncio.Queue()
                self._task = loop.create_task(self._run(), name="scenefit-microbatcher")

    async def submit(self, item: Any, options: Hashable = None) -> Any:
        """Queue one item and wait for its result (cancelling the wait drops the item if its
        batch has not started yet)."""
        self._ensure_started()
        future = asyncio.get_running_loop().create_future()
        assert self._queue is not None
        self._queue.put_nowait(_Pending(item, options, future))
        return await future

    async def _collect(self) -> list[_Pending]:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        first = await self._queue.get()
        batch = [first] if not first.future.done() else []
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    pending = self._queue.get_nowait()  # take what is already waiting, no more
                else:
                    pending = await asyncio.wait_for(self._queue.get(), remaining)
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
            if not pending.future.done():  # done = its client gave up (timeout, disconnect)
                batch.append(pending)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            groups: dict[Hashable, list[_Pending]] = {}
            for p in batch:
                groups.setdefault(p.options, []).append(p)
            for options, group in groups.items():
                live = [p for p in group if not p.future.done()]
                if not live:
                    continue
                try:
                    outcomes = await loop.run_in_executor(self._executor, self._call, [p.item for p in live], options)
                except Exception as e:  # the executor itself failed: answer everyone, keep serving
                    outcomes = [(False, e)] * len(live)
                for p, (ok, value) in zip(live, outcomes):
                    if p.future.done():
                        continue
                    if ok:
                        p.future.set_result(value)
                    else:
                        p.future.set_exception(value)

    def _call(self, items: list[Any], options: Hashable) -> list[tuple[bool, Any]]:
        """Runs in the worker thread: one merged call; when it fails, its two halves apart, down
        to the item that fails alone (one bad item of n costs about 2 log2(n) calls, not n)."""
        self.stats.record(len(items))
        try:
            results = list(self.run_batch(items, options))
            if len(results) != len(items):
                raise RuntimeError(f"predictor returned {len(results)} results for {len(items)} items")
            return [(True, r) for r in results]
        except Exception as merged_error:
            if len(items) == 1:
                self.stats.failed_items += 1
                return [(False, merged_error)]
        mid = len(items) // 2
        return self._call(items[:mid], options) + self._call(items[mid:], options)

    async def aclose(self) -> None:
        """Stop collecting; requests still queued get BatcherClosed."""
        with self._start_lock:
            self._closed = True
            task, queue = self._task, self._queue
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        while queue is not None and not queue.empty():
            p = queue.get_nowait()
            if not p.future.done():
                p.future.set_exception(BatcherClosed("the server is shutting down"))
        self._executor.shutdown(wait=False, cancel_futures=True)


class ModelTurns:
    """Who uses the one model next: the classify batcher and the chat batchers each run in their
    own thread and share one base. ``with turns.hold("classify"):`` / ``hold("chat")`` waits for
    a turn. Waiters of one kind go in arrival order; a waiting classify batch goes before waiting
    chat batches, up to ``classify_turns_before_chat`` times in a row while a chat batch waits,
    then that chat batch has its turn. So classify waits for at most the one generation that
    holds the model (bounded by the chat caps on answer and prompt tokens), never behind a queue
    of generations, and chat is never starved. ``classify_turns_before_chat=0``: strict arrival
    order across kinds. ``waiting`` counts the threads queued."""

    KINDS = ("classify", "chat")

    def __init__(self, classify_turns_before_chat: int = 4):
        self.limit = classify_turns_before_chat
        self._cond = threading.Condition()
        self._queues: dict[str, deque[int]] = {k: deque() for k in self.KINDS}
        self._next_ticket = 0
        self._busy = False
        self._streak = 0  # classify turns taken in a row while a chat batch waited

    @property
    def waiting(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._queues.values())

    def _chosen(self) -> Optional[int]:
        classify, chat = self._queues["classify"], self._queues["chat"]
        if not classify or not chat:
            return (classify or chat)[0] if (classify or chat) else None
        if self.limit == 0:
            return min(classify[0], chat[0])
        return classify[0] if self._streak < self.limit else chat[0]

    @contextlib.contextmanager
    def hold(self, kind: str):
        if kind not in self._queues:
            raise ValueError(f"unknown kind {kind!r}; expected one of {self.KINDS}")
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._queues[kind].append(ticket)
            self._cond.wait_for(lambda: not self._busy and self._chosen() == ticket)
            self._queues[kind].popleft()
            self._streak = self._streak + 1 if kind == "classify" and self._queues["chat"] else 0
            self._busy = True
        try:
            yield self
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
