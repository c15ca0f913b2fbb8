"""Throughput of `POST /v1/classify` under concurrent load: micro-batching vs one request per
predictor call, on the same server code, the same students and the same requests.

    .venv/bin/python benchmarks/serve_load.py                      # tiny students, built here
    .venv/bin/python benchmarks/serve_load.py --students runs/demo/students --concurrency 1 8 32
    .venv/bin/python benchmarks/serve_load.py --fake-cost 0.05 0.004   # cost model, no torch
    .venv/bin/python benchmarks/serve_load.py --smoke                  # smallest size, seconds
    python3 benchmarks/serve_load.py --device cuda --concurrency 1 8 32 64 --requests 64 --max-batch 32

Baseline: the server with ``max_batch=1`` (every request is its own predictor call).
Project path: the server with ``max_batch=16`` (``--max-batch``) (requests merged across clients). For each
concurrency level both answer the same ``--requests`` requests from an httpx AsyncClient on
127.0.0.1; the table shows the median of ``--repeats`` runs (one warm-up excluded) in requests
per second, the ratio batched / baseline, and each path's ratio to its own concurrency 1.
``--fake-cost A B`` replaces the model by a predictor that sleeps A + B * batch_size seconds
per call (a fixed per-call overhead plus a per-item cost), to see the batching logic alone.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import ratio, smoke_flag  # noqa: E402

from scenefit.serve.app import create_app  # noqa: E402
from scenefit.serve.config import ServeConfig  # noqa: E402
from scenefit.serve.openai_server import serve_in_thread  # noqa: E402

BENCH_ARGS: list[str] = []


class CostModelPredictor:
    """Sleeps ``fixed + per_item * n`` per call and answers In-context everywhere."""

    def __init__(self, fixed: float, per_item: float):
        self.fixed, self.per_item = fixed, per_item

    def predict(self, items, explain=False, criteria=None):
        time.sleep(self.fixed + self.per_item * len(items))
        verdict = {"label": "In-context", "probability": 0.9, "analysis": None}
        return [{"criteria": {c: dict(verdict) for c in ("location", "size", "co_occurrence")}, "final": "In-context"}
                for _ in items]


def real_predictor(students: str | None, workdir: Path, device: str | None, batch_size: int):
    from scenefit.predict import PredictConfig, Predictor

    if students is None:
        from scenefit.testbed.tiny_model import TinyModelConfig, build_tiny_model
        from scenefit.testbed.toy_students import build_toy_students

        base = build_tiny_model(workdir / "model", TinyModelConfig(seed=0))
        students = str(build_toy_students(base, workdir / "students", steps=0))
    return Predictor.from_students(students, config=PredictConfig(batch_size=batch_size, device=device))


def request_bodies(n: int) -> list[dict]:
    from scenefit.testbed.toy_students import toy_items

    items, _ = toy_items(n, seed=7)
    out = []
    for image, obj, box in items:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        out.append({"image": base64.b64encode(buf.getvalue()).decode(), "object": obj, "box": list(box)})
    return out


async def run_load(base: str, bodies: list[dict], concurrency: int) -> float:
    """Requests per second for all ``bodies`` with at most ``concurrency`` in flight."""
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as client:

        async def one(body):
            async with gate:
                r = await client.post("/v1/classify", json=body)
                r.raise_for_status()

        t0 = time.perf_counter()
        await asyncio.gather(*[one(b) for b in bodies])
        return len(bodies) / (time.perf_counter() - t0)


def measure(predictor, max_batch: int, bodies: list[dict], levels: list[int], repeats: int) -> dict[int, float]:
    cfg = ServeConfig(max_batch=max_batch, max_wait_ms=5, max_concurrency=max(*levels, max_batch), request_timeout_s=600,
                      log_level="warning")
    out = {}
    with serve_in_thread(create_app(predictor, cfg)) as base:
        asyncio.run(run_load(base, bodies[: max(2, len(bodies) // 4)], max(levels)))  # warm-up
        for level in levels:
            out[level] = statistics.median(asyncio.run(run_load(base, bodies, level)) for _ in range(repeats))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--students", default=None, help="students folder (default: untrained tiny students built here)")
    ap.add_argument("--fake-cost", nargs=2, type=float, metavar=("FIXED_S", "PER_ITEM_S"), default=None)
    ap.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 16])
    ap.add_argument("--requests", type=int, default=16, help="requests per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--device", default=None, help="torch device of the students (default: cuda when available, else cpu)")
    smoke_flag(ap)
    args = ap.parse_args()
    if args.smoke:
        args.concurrency, args.requests, args.repeats, args.max_batch = [1, 4], 4, 1, 4
    with tempfile.TemporaryDirectory() as tmp:
        if args.fake_cost:
            predictor, what = CostModelPredictor(*args.fake_cost), f"cost model {args.fake_cost[0]}+{args.fake_cost[1]}*n s"
        else:
            predictor, what = real_predictor(args.students, Path(tmp), args.device, args.max_batch), f"students {args.students or '(tiny, untrained)'}"
        bodies = request_bodies(args.requests)
        baseline = measure(predictor, 1, bodies, args.concurrency, args.repeats)
        batched = measure(predictor, args.max_batch, bodies, args.concurrency, args.repeats)
    print(f"POST /v1/classify on 127.0.0.1, {what}; {args.requests} requests per run, median of {args.repeats}")
    print(f"{'concurrency':>11} {'baseline req/s':>15} {'batched req/s':>14} {'batched/baseline':>17} "
          f"{'baseline/c1':>12} {'batched/c1':>11}")
    c1 = args.concurrency[0]
    for level in args.concurrency:
        b, m = baseline[level], batched[level]
        print(f"{level:>11} {b:>15.2f} {m:>14.2f} {m / b:>16.2f}x {b / baseline[c1]:>11.2f}x {m / batched[c1]:>10.2f}x")
    top = args.concurrency[-1]
    for level in args.concurrency:
        gain = batched[level] / baseline[level]
        grows = {"goal": "> 1, growing with load", "met": gain > 1 and gain >= batched[c1] / baseline[c1]} \
            if level == top and level != c1 else {}
        ratio(f"batched_vs_one_call.c{level}", gain, what=f"{level} clients: micro-batched {batched[level]:.3g} vs one "
              f"predictor call per request {baseline[level]:.3g} requests/s ({what})", **grows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
