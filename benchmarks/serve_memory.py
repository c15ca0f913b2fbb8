"""Server memory under large uploads (issue 21 item 4): sixteen 5000 x 5000 PNGs (~70 kB each,
the `--demo` pixel cap) sent at once to `POST /v1/classify`.

    .venv/bin/python benchmarks/serve_memory.py
    .venv/bin/python benchmarks/serve_memory.py --clients 32 --side 4000
    .venv/bin/python benchmarks/serve_memory.py --smoke          # 2 clients, 1000 x 1000

Baseline: the server decoding every upload at full size, with no bound on pixels in flight, on
40 threads (the behaviour before the fix, when decoding ran on starlette's thread pool:
``decode_max_pixels`` and ``decode_pixels_in_flight`` set past any image, ``decode_workers=40``).
Project path: the defaults — images scaled down to the model's max_pixels (here the demo's
12,544) while decoding, at most 100 M pixels decoded at once, on 2 decoding threads. Each runs in a fresh process with a
predictor that answers at once (the model is not what is measured); the table shows the peak RSS
growth during the burst and what stays resident after it, in MB, and the ratio baseline / project.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ratio, smoke_flag  # noqa: E402

BENCH_ARGS: list[str] = []


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class InstantPredictor:
    """Answers at once; keeps nothing (so only the server's own memory is measured)."""

    processor = None

    def predict(self, items, explain=False, criteria=None):
        return [{"criteria": {}, "final": "In-context"} for _ in items]


def child(mode: str, clients: int, side: int) -> dict:
    import httpx
    from PIL import Image

    from scenefit.serve.app import create_app
    from scenefit.serve.config import ServeConfig
    from scenefit.serve.openai_server import serve_in_thread

    huge = 10**12
    # baseline = before the fix: full-size decodes, no budget, on as many threads as starlette's pool (40)
    limits = dict(decode_max_pixels=huge, decode_pixels_in_flight=huge, decode_workers=40) if mode == "baseline" else \
        dict(decode_max_pixels=12_544)
    cfg = ServeConfig(max_image_pixels=side * side, max_body_bytes=64 * 1024 * 1024, **limits)
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (90, 140, 60)).save(buf, format="PNG")
    body = {"image": base64.b64encode(buf.getvalue()).decode(), "object": "dog", "box": [10, 10, 200, 200]}
    with serve_in_thread(create_app(InstantPredictor(), cfg)) as base:
        httpx.get(base + "/health", timeout=60)
        before = rss_mb()
        peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        async def burst():
            async with httpx.AsyncClient(base_url=base, timeout=600) as c:
                return await asyncio.gather(*[c.post("/v1/classify", json=body) for _ in range(clients)])

        codes = [r.status_code for r in asyncio.run(burst())]
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        after = rss_mb()
        decoding = httpx.get(base + "/v1/metrics", timeout=60).json()["decoding"]
    return {"mode": mode, "ok": codes.count(200), "png_kb": len(buf.getvalue()) / 1024,
            "peak_growth_mb": peak - max(before, peak_before), "resident_after_mb": after - before,
            "pixels_in_flight_peak": decoding["pixels_in_flight_peak"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--side", type=int, default=5000)
    ap.add_argument("--child", choices=("baseline", "project"), help=argparse.SUPPRESS)
    smoke_flag(ap)
    args = ap.parse_args()
    if args.smoke:
        args.clients, args.side = 2, 1000
    if args.child:
        print(json.dumps(child(args.child, args.clients, args.side)))
        return 0
    rows = {}
    for mode in ("baseline", "project"):
        out = subprocess.run([sys.executable, __file__, "--child", mode, "--clients", str(args.clients),
                              "--side", str(args.side)], capture_output=True, text=True, check=True)
        rows[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    b, p = rows["baseline"], rows["project"]
    print(f"{args.clients} concurrent {args.side}x{args.side} PNGs ({b['png_kb']:.0f} kB each); answered: "
          f"baseline {b['ok']}, project {p['ok']}")
    print(f"{'':<28}{'baseline':>10}{'project':>10}{'ratio':>8}")
    for key, label in (("peak_growth_mb", "peak RSS growth (MB)"), ("resident_after_mb", "resident after (MB)")):
        gain = b[key] / p[key] if p[key] > 1 else float("inf")
        print(f"{label:<28}{b[key]:>10.0f}{p[key]:>10.0f}{gain:>7.1f}x")
        ratio(f"{key.removesuffix('_mb')}.baseline_vs_project", gain,
                           what=f"{args.clients} concurrent {args.side}x{args.side} PNGs: {label.split(' (')[0]} "
                                f"{b[key]:.0f} MB with full-size decodes on 40 threads vs {p[key]:.0f} MB scaled "
                                "while decoding, bounded, 2 threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
