"""Benchmark: throughput of the openai teacher client against a loopback server with a fixed
per-request latency, at concurrency 1, 8, 32 and 128.

    .venv/bin/python benchmarks/annotate_client.py
    .venv/bin/python benchmarks/annotate_client.py --latency-ms 500 50 --slots 32 --repeats 3
    .venv/bin/python benchmarks/annotate_client.py --smoke           # 50 ms, c=1 and 8, a second

The server (a separate process, so it does not share the client's GIL) is a minimal asyncio
HTTP/1.1 server answering chat completions with a fixed teacher answer: it holds each request
``--latency-ms`` and serves at most ``--slots`` at once, so its capacity is slots / latency
requests per second, and its own cost per request is small (the FastAPI server of
``scenefit serve-teacher`` costs more per request than the client and would cap the
measurement). The client path is the whole ``annotate`` run — image loaded, boxed and encoded
as a data URL, the HTTP request, the parse, the batched SQLite commit — and every answer is
checked to be stored.

Compared in the same run, on the same server:
- ``c=1``: the project's client one request at a time (a sequential batch-1 loop) — the
  baseline of the "x c=1" column;
- ``one client``: all connections in one httpx client (``connections_per_client`` = c), measured
  at latencies up to ``--one-client-below-ms`` only (where the client's CPU is the limit);
- ``project``: the default, connections spread over clients of 8.
Printed per concurrency: answers/s (median of the repeats), ratios, the ideal min(c, slots) /
latency, the share of the server's capacity (slots / latency) reached by the whole run, and the
steady-state rate: the marginal rate of a run twice as long, so a run's ~1 s of start-up and
drain cancels out (a real annotation run of 24,000 samples is all steady state). With 32 slots, c=32
can fill the server exactly, which is where the goal is read.

Hold times vary by +-50 % by default (``--jitter``): a real endpoint's latency follows the
answer's length, while a fixed one makes every request of a wave finish at the same instant and
queues the client's per-answer work behind each wave's end (``--jitter 0`` shows that case).

Two latencies by default: 500 ms (still quicker than a 72B teacher writing ~150 tokens, which
takes seconds) and 50 ms, a stress level at which the client's own CPU work per answer (a few
ms on 2 cores: image, data URL, parse, SQLite) becomes the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ratio, smoke_flag  # noqa: E402

#: make bench: runs of 5 s at the ideal rate (the default 10 s doubles the script's ~2 minutes).
BENCH_ARGS = ["--seconds", "5"]
ANSWER = ("Analysis:\nLocation: It stands on the floor.\nCo-occurrence: It fits the room.\nSize: Normal size.\n"
          "Summary:\nLocation: In-context\nCo-occurrence: In-context\nSize: In-context\nFinal decision: In-context.")


def _serve(latency_s: float, slots: int, queue, jitter: float = 0.0) -> None:
    """Server process: each request held ``latency_s`` (times a seeded uniform factor in
    [1 - jitter, 1 + jitter], mean 1), at most ``slots`` at once, keep-alive."""
    import random

    rng = random.Random(0)
    payload = json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "fixed-latency",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 60, "total_tokens": 110},
    }).encode()
    response = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(payload), payload)

    async def serve_forever() -> None:
        sem = asyncio.Semaphore(slots)

        async def handle(reader, writer) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":", 1)[1])
                    await reader.readexactly(length)
                    async with sem:
                        await asyncio.sleep(latency_s * rng.uniform(1 - jitter, 1 + jitter))
                    writer.write(response)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        queue.put(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        await server.serve_forever()

    asyncio.run(serve_forever())


def _samples(folder: Path, n: int):
    from PIL import Image

    from scenefit.core.records import Sample

    img = folder / "scene.png"
    if not img.exists():
        Image.new("RGB", (112, 112), (90, 140, 60)).save(img)
    return [Sample(id=f"b{i}", image=str(img), object="zebra", box=(20, 20, 80, 90)) for i in range(n)]


def run_once(base: str, concurrency: int, n: int, folder: Path, per_client: int = 8) -> float:
    """Answers per second of one annotate run of ``n`` samples at ``concurrency``."""
    from scenefit.teachers.annotate import annotate_async
    from scenefit.teachers.config import AnnotateConfig
    from scenefit.teachers.store import AnnotationStore

    cfg = AnnotateConfig(
        teachers=[{"name": "bench", "backend": "openai", "model": "fixed-latency", "base_urls": [base + "/v1"],
                   "concurrency": concurrency, "timeout_s": 60, "max_attempts": 1, "connections_per_client": per_client}],
        progress=False, commit_every=64,
    )
    db = Path(tempfile.mkdtemp(dir=folder)) / "bench.sqlite"
    samples = _samples(folder, n)
    with AnnotationStore(db) as store:
        t0 = time.perf_counter()
        summary = asyncio.run(annotate_async(samples, cfg, store))
        dt = time.perf_counter() - t0
        assert store.count() == n, "every request must be stored"
    failed = sum(summary.teachers["bench"].failed_by_reason.values())
    if failed:
        print(f"   ! {failed} of {n} requests failed at c={concurrency}", file=sys.stderr)
    return n / dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency-ms", type=float, nargs="+", default=[500.0, 50.0],
                    help="server hold time per request; one table per value")
    ap.add_argument("--slots", type=int, default=32, help="requests the server holds at once")
    ap.add_argument("--jitter", type=float, default=0.5,
                    help="hold times vary uniformly by +-jitter around the latency (0 = fixed)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    ap.add_argument("--one-client-below-ms", type=float, default=100.0,
                    help="measure the one-httpx-client baseline only at latencies up to this")
    ap.add_argument("--seconds", type=float, default=10.0,
                    help="target length of one timed run at the ideal rate (long: a run pays ~1 s to start and drain)")
    ap.add_argument("--max-requests", type=int, default=1024, help="cap on requests per timed run")
    ap.add_argument("--repeats", type=int, default=1, help="timed repeats (median); runs are long, so 1 is steady")
    smoke_flag(ap)
    args = ap.parse_args()
    if args.smoke:
        args.latency_ms, args.slots, args.concurrency, args.seconds = [50.0], 8, [1, 8], 0.5
    for latency_ms in args.latency_ms:
        measure(latency_ms / 1000, args)
    return 0


def measure(latency: float, args) -> None:
    """One loopback server at ``latency``; the table over ``args.concurrency``."""
    capacity = args.slots / latency
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    server = ctx.Process(target=_serve, args=(latency, args.slots, q, args.jitter), daemon=True)
    server.start()
    try:
        base = q.get(timeout=120)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            run_once(base, 4, 16, folder)  # warm-up: imports, first connections
            print(f"\nloopback server: {latency * 1000:g} ms per request (+-{args.jitter:.0%}), {args.slots} slots "
                  f"-> capacity {capacity:,.0f} req/s")
            print(f"{'c':>4} {'requests':>8} {'one client/s':>12} {'project/s':>10} {'x one client':>12} "
                  f"{'x c=1':>6} {'ideal/s':>8} {'of capacity':>11} {'steady/s':>9} {'steady of cap':>13}")
            base_rate = None
            rows: list[tuple] = []
            for c in args.concurrency:
                ideal = min(c, args.slots) / latency
                n = min(args.max_requests, max(2 * c, int(ideal * args.seconds)))  # two waves at least
                # One httpx client for all c connections vs the project's clients of 8: only where
                # the client's CPU is the limit (short latencies); at 500 ms both are the same.
                single = (statistics.median(run_once(base, c, n, folder, per_client=c) for _ in range(args.repeats))
                          if latency <= args.one_client_below_ms / 1000 else None)
                runs = [(run_once(base, c, n, folder), run_once(base, c, 2 * n, folder) if c > 1 else None)
                        for _ in range(args.repeats)]
                project = statistics.median(r for r, _ in runs)
                base_rate = base_rate or project
                # Steady state: the marginal rate of the second n requests (a run's ~1 s of start and
                # drain cancels out), which is what a 24,000-sample annotation run sees.
                steady = (statistics.median(n / (2 * n / r2 - n / r1) for r1, r2 in runs) if c > 1 else None)
                steady_cols = f"{steady:>9.1f} {steady / capacity:>12.1%}" if steady else f"{'-':>9} {'-':>13}"
                single_cols = f"{single:>12.1f}" if single else f"{'-':>12}"
                ratio_col = f"{project / single:>12.2f}" if single else f"{'-':>12}"
                print(f"{c:>4} {n:>8} {single_cols} {project:>10.1f} {ratio_col} "
                      f"{project / base_rate:>6.1f} {ideal:>8.0f} {project / capacity:>10.1%} {steady_cols}", flush=True)
                rows.append((c, project, single, steady))
            report(latency, capacity, rows, args.slots)
    finally:
        server.terminate()
        server.join(timeout=10)


def report(latency: float, capacity: float, rows: list[tuple], slots: int) -> None:
    """The ratio lines of one latency's table: each concurrency's steady rate as a share of the
    server's capacity (the goal is read where c fills the slots at 500 ms), and clients of 8 vs one
    httpx client where both were measured."""
    ms = f"{latency * 1000:g}"
    for c, project, single, steady in rows:
        if c > 1 and steady:
            goal = {"goal": ">= 0.9", "met": steady / capacity >= 0.9} if c == slots and latency >= 0.5 else {}
            ratio(f"latency{ms}ms.c{c}.steady_share_of_capacity", steady / capacity,
                  what=f"{ms} ms per request, {slots} slots: steady {steady:.1f} answers/s of a {capacity:,.0f}/s capacity "
                       f"(whole run {project:.1f}/s)", **goal)
        if single:
            ratio(f"latency{ms}ms.c{c}.clients_of_8_vs_one_client", project / single,
                  what=f"{ms} ms, c={c}: connections over httpx clients of 8 {project:.1f} vs one client {single:.1f} answers/s")


if __name__ == "__main__":
    sys.exit(main())
