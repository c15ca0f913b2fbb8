"""How long `POST /v1/classify` waits while chat clients keep the students generating.

    .venv/bin/python benchmarks/classify_beside_chat.py                 # 8 chat clients, 512-token answers
    .venv/bin/python benchmarks/classify_beside_chat.py --smoke         # seconds: 2 clients, 8-token answers
    .venv/bin/python benchmarks/classify_beside_chat.py --classify 20   # the run in RESULTS.md (~10 min)

One server, one set of students (the demo's when `make demo` has run, else untrained toy
students on the tiny base: benchmarks/_students.py), one process. Classify requests are sent one
after another and timed end to end; the table gives their p50 / p95 / max:

- alone: no chat traffic (the baseline);
- beside chat, arrival order: ``--chat-clients`` clients send chat requests of ``--chat-tokens``
  new tokens (the students' chat limit is 512) round-robin to the four chat models, back to back,
  and the model goes to whoever asked first (``classify_turns_before_chat=0``: how the server
  handed it out before issue 27): classify queues behind every generation waiting before it;
- beside chat, classify first: the same traffic with the server's default
  (``classify_turns_before_chat=4``): classify waits for the generation holding the model only.

Ratios are each p95 over the p95 alone, measured in the same run. The toy students never stop
early, so each chat answer is exactly ``--chat-tokens`` tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _report import ratio  # noqa: E402
from _students import bench_items, demo_students, toy_students  # noqa: E402

BENCH_ARGS: list[str] = []

CHAT_MODELS = ("scenefit-base", "scenefit-location", "scenefit-size", "scenefit-co_occurrence")


def classify_bodies(students: Path, n: int) -> list[dict]:
    from scenefit.predict import prepare_image, to_item

    items, _ = bench_items(n, students)
    bodies = []
    for i, raw in enumerate(items):
        item = to_item(raw, i)
        buf = io.BytesIO()
        prepare_image(item).save(buf, format="PNG")  # already boxed: the request says so
        bodies.append({"image": base64.b64encode(buf.getvalue()).decode(), "object": item.object, "boxed": True})
    return bodies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def classify_latencies(base: str, bodies: list[dict]) -> list[float]:
    out = []
    async with httpx.AsyncClient(base_url=base, timeout=600) as client:
        for body in bodies:
            t0 = time.perf_counter()
            r = await client.post("/v1/classify", json=body)
            r.raise_for_status()
            out.append(time.perf_counter() - t0)
    return out


async def beside_chat(base: str, bodies: list[dict], clients: int, tokens: int) -> tuple[list[float], int]:
    """Classify latencies while ``clients`` chat clients keep asking; (latencies, chats answered)."""
    stop = asyncio.Event()
    answered = 0

    async def chat_client(k: int) -> None:
        nonlocal answered
        async with httpx.AsyncClient(base_url=base, timeout=600) as client:
            turn = k
            while not stop.is_set():
                r = await client.post("/v1/chat/completions", json={
                    "model": CHAT_MODELS[turn % len(CHAT_MODELS)], "max_tokens": tokens,
                    "messages": [{"role": "user", "content": f"Describe a busy street, client {k}, turn {turn}."}]})
                r.raise_for_status()
                answered += 1
                turn += 1

    tasks = [asyncio.ensure_future(chat_client(k)) for k in range(clients)]
    async with httpx.AsyncClient(base_url=base, timeout=60) as probe:  # start timing once every client waits
        end = time.monotonic() + 600
        while (await probe.get("/v1/metrics")).json()["in_flight"] < clients and time.monotonic() < end:
            await asyncio.sleep(0.05)
    try:
        latencies = await classify_latencies(base, bodies)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    return latencies, answered


def measure(predictor, bodies: list[dict], turns: int, clients: int, tokens: int) -> tuple[list[float], int]:
    from scenefit.serve.app import create_app
    from scenefit.serve.config import ServeConfig
    from scenefit.serve.openai_server import serve_in_thread

    cfg = ServeConfig(max_wait_ms=5, request_timeout_s=600, classify_turns_before_chat=turns, log_level="warning",
                      chat_max_tokens_limit=max(512, tokens))
    with serve_in_thread(create_app(predictor, cfg)) as base:
        asyncio.run(classify_latencies(base, bodies[:2]))  # warm-up
        if clients == 0:
            return asyncio.run(classify_latencies(base, bodies)), 0
        return asyncio.run(beside_chat(base, bodies, clients, tokens))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--students", type=Path, default=None, help="students folder (default: the demo's, else toy ones)")
    ap.add_argument("--chat-clients", type=int, default=8)
    ap.add_argument("--chat-tokens", type=int, default=512, help="new tokens per chat answer")
    ap.add_argument("--classify", type=int, default=10, help="classify requests timed per condition")
    ap.add_argument("--smoke", action="store_true", help="smallest run (2 clients, 8 tokens, 4 requests): checks it runs")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine's cores are shared)")
    args = ap.parse_args()
    if args.smoke:
        args.chat_clients, args.chat_tokens, args.classify = 2, 8, 4
    import torch

    from scenefit.predict import PredictConfig, Predictor

    torch.set_num_threads(args.threads)
    students = args.students or (None if args.smoke else demo_students()) or toy_students(steps=0)
    predictor = Predictor.from_students(students, config=PredictConfig(batch_size=16, device="cpu"))
    bodies = classify_bodies(students, args.classify)
    t0 = time.perf_counter()
    rows = {"alone": measure(predictor, bodies, 4, 0, args.chat_tokens)}
    rows["beside chat, arrival order"] = measure(predictor, bodies, 0, args.chat_clients, args.chat_tokens)
    rows["beside chat, classify first"] = measure(predictor, bodies, 4, args.chat_clients, args.chat_tokens)
    alone_p95 = percentile(rows["alone"][0], 0.95)
    print(f"classify latency: {len(bodies)} sequential requests per row; {args.chat_clients} chat clients, "
          f"{args.chat_tokens}-token answers; students {students}; torch threads {args.threads}")
    print(f"{'condition':<30} {'p50 s':>8} {'p95 s':>8} {'max s':>8} {'chats':>6} {'p95 / alone':>12}")
    for name, (lat, chats) in rows.items():
        p95 = percentile(lat, 0.95)
        print(f"{name:<30} {statistics.median(lat):>8.3f} {p95:>8.3f} {max(lat):>8.3f} {chats:>6} {p95 / alone_p95:>11.1f}x")
    first, arrival = (percentile(rows[k][0], 0.95) for k in ("beside chat, classify first", "beside chat, arrival order"))
    print(f"ratio: classify p95 beside chat / alone = {first / alone_p95:.1f}x with classify first "
          f"({arrival / alone_p95:.1f}x in arrival order); {time.perf_counter() - t0:.0f} s")
    for key, p95 in (("classify_first", first), ("arrival_order", arrival)):
        ratio(f"beside_chat.{key}.p95_vs_alone", p95 / alone_p95,
              what=f"classify p95 beside {args.chat_clients} chat clients of {args.chat_tokens}-token answers, "
                   f"{key.replace('_', ' ')}: {p95:.3g} s vs {alone_p95:.3g} s alone ({len(bodies)} requests each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
