"""`scenefit serve-teacher`'s memory under large bodies (issue 27 item 4): resident memory of the
server process before, at the peak of and after each request, with the answer it got.

    .venv/bin/python benchmarks/serve_teacher_memory.py              # 50 MB bodies, a 15 MiB prompt
    .venv/bin/python benchmarks/serve_teacher_memory.py --smoke      # seconds: 2 MB bodies, 1 MiB prompt

The server runs as `scenefit serve-teacher --model <tiny model built here>` with its defaults
(16 MiB body cap, 16,384 prompt tokens); each request is sent once:

- a ``--mb`` MB chat message with its Content-Length: refused (413) before any byte is read;
- the same body streamed without a length: counted as it arrives, refused (413) at the cap;
- a message just under the body cap: read and parsed, refused (400 context_length_exceeded) by
  the prompt-token cap before any model work.

Peak RSS is the kernel's high-water mark of the process (``VmHWM``, reset before each request
through ``/proc/PID/clear_refs``). Before the guards (the issue's probe) one 50 MB message took
252 s, grew the server from 0.6 to 9.7 GB, kept 5.3 GB after, and ended in a 500.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import httpx  # noqa: E402
from _report import ratio  # noqa: E402

BENCH_ARGS: list[str] = []

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def memory_mb(pid: int) -> dict[str, float]:
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}


def reset_peak(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def body(n_bytes: int) -> bytes:
    head, tail = b'{"messages": [{"role": "user", "content": "', b'"}], "max_tokens": 4}'
    return head + b"zebra " * ((n_bytes - len(head) - len(tail)) // 6) + tail


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=50.0, help="size of the oversized bodies, MB")
    ap.add_argument("--smoke", action="store_true", help="2 MB bodies against a 1 MiB cap: checks it runs")
    args = ap.parse_args()
    from scenefit.testbed.tiny_model import TinyModelConfig, build_tiny_model

    cap = 1024 * 1024 if args.smoke else 16 * 1024 * 1024
    size = int((2.0 if args.smoke else args.mb) * 1e6)
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_model(Path(tmp) / "model", TinyModelConfig(seed=0))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        server = subprocess.Popen([sys.executable, "-c", "from scenefit.cli import main; main()", "serve-teacher", "--model", str(model),
                                   "--port", "0", "--set", f"max_body_bytes={cap}"],
                                  stdout=subprocess.PIPE, text=True, env=env)
        try:
            base = server.stdout.readline().split()[-1]  # "serving http://127.0.0.1:PORT/v1"
            rows = []
            with httpx.Client(base_url=base, timeout=600) as client:
                client.get("/models")
                cases = [("declared", body(size), {}), ("streamed", body(size), {"stream": True}),
                         ("under the cap", body(cap - 1024), {})]
                for name, data, how in cases:
                    before = memory_mb(server.pid)["VmRSS"]
                    peak_known = reset_peak(server.pid)
                    t0 = time.perf_counter()
                    content = (data[i:i + 65536] for i in range(0, len(data), 65536)) if how else data
                    r = client.post("/chat/completions", content=content, headers={"content-type": "application/json"})
                    seconds = time.perf_counter() - t0
                    time.sleep(0.5)
                    after = memory_mb(server.pid)
                    code = r.json().get("error", {}).get("code") if r.headers.get("content-type", "").startswith(
                        "application/json") else None
                    rows.append((name, len(data) / 1e6, r.status_code, code, seconds, before,
                                 after["VmHWM"] if peak_known else float("nan"), after["VmRSS"]))
        finally:
            server.terminate()
            server.wait(30)
    print(f"serve-teacher, tiny model, body cap {cap / 2**20:g} MiB; RSS of the server process in MB")
    print(f"{'request':<15} {'MB':>7} {'status':>7} {'code':>25} {'s':>7} {'RSS before':>11} {'peak':>8} {'after':>8}")
    for name, mb, status, code, s, before, peak, after in rows:
        print(f"{name:<15} {mb:>7.1f} {status:>7} {str(code):>25} {s:>7.2f} {before:>11.0f} {peak:>8.0f} {after:>8.0f}")
    worst = max(r[6] for r in rows) - rows[0][5]
    print(f"ratio: peak RSS growth over the start {worst:.0f} MB for bodies up to {size / 1e6:.0f} MB "
          f"(before the guards: +9,100 MB for one 50 MB body)")
    ratio("peak_rss_growth_vs_body_size", worst / (size / 1e6),
          what=f"serve-teacher's peak RSS growth {worst:.0f} MB while refusing bodies up to {size / 1e6:.0f} MB "
               f"(body cap {cap / 2**20:g} MiB)")
    print(json.dumps({"rows": rows}), file=sys.stderr)
    return 0 if all(r[2] in (400, 413) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
