"""Run the CPU benchmark set, one script after another, each in its own process.

    make bench                       # or: .venv/bin/python benchmarks/run_all.py
    .venv/bin/python benchmarks/run_all.py --only data_stages annotate_client

Each script measures its baseline and the project's path in the same run, on the same inputs,
and prints a table with ratios (median of repeats, warm-up excluded). Budget: <= 10 minutes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: In the order the README's performance section quotes them.
SCRIPTS = ("student_inference", "memory", "annotate_client", "data_stages", "train_step", "serve_load", "packing")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=None, help="run only these scripts (names without .py)")
    ap.add_argument("--timeout", type=float, default=360, help="seconds allowed per script")
    args = ap.parse_args()
    names = args.only or SCRIPTS
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    failed = []
    t_all = time.perf_counter()
    for name in names:
        script = HERE / f"{name}.py"
        if not script.is_file():
            print(f"!! {name}: {script} not found", flush=True)
            failed.append(name)
            continue
        print(f"\n===== {name} =====", flush=True)
        t0 = time.perf_counter()
        try:
            rc = subprocess.run([sys.executable, str(script)], env=env, timeout=args.timeout).returncode
        except subprocess.TimeoutExpired:
            print(f"!! {name}: over {args.timeout:.0f} s, stopped", flush=True)
            rc = -1
        print(f"----- {name}: exit {rc}, {time.perf_counter() - t0:.1f} s", flush=True)
        if rc != 0:
            failed.append(name)
    print(f"\nall benchmarks: {time.perf_counter() - t_all:.1f} s; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
