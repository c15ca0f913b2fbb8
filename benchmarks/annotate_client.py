"""Benchmark: throughput of the openai teacher client against a loopback server with a fixed
per-request latency, at concurrency 1, 8, 32 and 128.

    .venv/bin/python benchmarks/annotate_client.py
    .venv/bin/python benchmarks/annotate_client.py --latency-ms 50 --slots 64 --repeats 3

The server (a separate process, so it does not share the client's GIL) is a minimal asyncio
HTTP/1.1 server answering chat completions with a fixed teacher answer: it holds each request
``--latency-ms`` and serves at most ``--slots`` at once, so its capacity is slots / latency
requests per second, and its own cost per request is small (the FastAPI server of
``scenefit serve --openai`` costs more per request than the client and would cap the
measurement). The client path is the whole ``annotate`` run — image loaded, boxed and encoded
as a data URL, the HTTP request, the parse, the batched SQLite commit — and every answer is
checked to be stored.

Compared in the same run, on the same server:
- ``c=1``: the project's client one request at a time (a sequential batch-1 loop) — the
  baseline of the "x c=1" column;
- ``one client``: all connections in one httpx client (``connections_per_client`` = c);
- ``project``: the default, connections spread over clients of 8.
Printed per concurrency: median answers/s of the repeats, ratios, the ideal min(c, slots) /
latency, and the share of the server's capacity reached.
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

ANSWER = ("Analysis:\nLocation: It stands on the floor.\nCo-occurrence: It fits the room.\nSize: Normal size.\n"
          "Summary:\nLocation: In-context\nCo-occurrence: In-context\nSize: In-context\nFinal decision: In-context.")


def _serve(latency_s: float, slots: int, queue) -> None:
    """Server process: fixed latency, at most ``slots`` requests held at once, keep-alive."""
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
                        await asyncio.sleep(latency_s)
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

    from scenefit.records import Sample

    img = folder / "scene.png"
    if not img.exists():
        Image.new("RGB", (112, 112), (90, 140, 60)).save(img)
    return [Sample(id=f"b{i}", image=str(img), object="zebra", box=(20, 20, 80, 90)) for i in range(n)]


def run_once(base: str, concurrency: int, n: int, folder: Path, per_client: int = 8) -> float:
    """Answers per second of one annotate run of ``n`` samples at ``concurrency``."""
    from scenefit.store import AnnotationStore
    from scenefit.teachers.annotate import annotate_async
    from scenefit.teachers.config import AnnotateConfig

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
    ap.add_argument("--latency-ms", type=float, default=50.0, help="server hold time per request")
    ap.add_argument("--slots", type=int, default=64, help="requests the server holds at once")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    ap.add_argument("--seconds", type=float, default=1.0, help="target length of one timed run at the ideal rate")
    ap.add_argument("--max-requests", type=int, default=240, help="cap on requests per timed run")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    latency = args.latency_ms / 1000
    capacity = args.slots / latency

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    server = ctx.Process(target=_serve, args=(latency, args.slots, q), daemon=True)
    server.start()
    try:
        base = q.get(timeout=120)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            run_once(base, 4, 16, folder)  # warm-up: imports, first connections
            print(f"loopback server: {args.latency_ms:g} ms per request, {args.slots} slots -> capacity {capacity:,.0f} req/s")
            print(f"{'c':>4} {'requests':>8} {'one client/s':>12} {'project/s':>10} {'x one client':>12} "
                  f"{'x c=1':>6} {'ideal/s':>8} {'of capacity':>11}")
            base_rate = None
            for c in args.concurrency:
                ideal = min(c, args.slots) / latency
                n = min(args.max_requests, max(20, int(ideal * args.seconds)))
                single = statistics.median(run_once(base, c, n, folder, per_client=c) for _ in range(args.repeats))
                project = statistics.median(run_once(base, c, n, folder) for _ in range(args.repeats))
                base_rate = base_rate or project
                print(f"{c:>4} {n:>8} {single:>12.1f} {project:>10.1f} {project / single:>12.2f} "
                      f"{project / base_rate:>6.1f} {ideal:>8.0f} {project / capacity:>10.1%}", flush=True)
    finally:
        server.terminate()
        server.join(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
