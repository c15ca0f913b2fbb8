"""The benchmarks' one timer: median wall time of repeated calls (warm-up is the caller's)."""

from __future__ import annotations

import statistics
import time


def timed(fn, repeats: int) -> tuple[float, object]:
    """(median seconds over ``repeats`` calls of ``fn``, the last call's result)."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result
