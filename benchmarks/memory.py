"""Benchmark: peak resident memory of three students as one base + three adapters vs three
separately loaded models.

    .venv/bin/python benchmarks/memory.py
    .venv/bin/python benchmarks/memory.py --hidden 1024 --layers 8 --students runs/demo/students

Each configuration loads in its own fresh process and reports its peak RSS (VmHWM) and the
bytes of the loaded weights (every parameter and buffer, shared storage counted once):

- imports only: torch, transformers and peft imported, no model (the floor every process pays);
- one student: the base + one adapter (what serving a single criterion takes);
- project: the base once + the three adapters (scenefit.predict.Predictor);
- three models: three bases, each with its adapter (three students loaded separately).

Ratios are against one student, on the RSS above the imports-only floor. The tiny demo model
(~3 MB) would vanish in the ~400 MB floor, so by default the base here is a random Qwen2.5-VL
of ~100 M parameters (--hidden/--layers; scenefit.testbed.tiny_model's builder) with random-weight adapters in
two shapes: the demo's (LoRA q/k/v/o + an lm_head copy) and the paper's (LoRA q/k/v/o only).
Goal (issue 8): project <= 1.15x one student, vs ~3x for three models. With --students the
given students and their base are measured instead.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

CHILD = r"""
import json, sys
import torch, transformers, peft  # noqa: F401  (the floor)
mode, students = sys.argv[1], sys.argv[2]
weights, modules = 0, []
if mode != "imports":
    from peft import PeftModel
    from scenefit.predict import Predictor, find_students, module_bytes
    from scenefit.predict.students import choose_base
    from scenefit.models.loading import load_model
    if mode in ("one", "project"):
        pred = Predictor.from_students(students, device="cpu", dtype="fp32", criteria=["location"] if mode == "one" else None)
        modules = [pred.peft_model]
    else:  # three separately loaded students
        infos = find_students(students)
        base = choose_base(infos, None)
        modules = [PeftModel.from_pretrained(load_model(base, dtype="fp32", device="cpu"), str(i.path)) for i in infos.values()]
    weights = sum(module_bytes(m) for m in modules)
    # Read every page of every weight once: safetensors maps the file, and mapped pages stay out
    # of RSS until touched (a serving process touches them on its first request).
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            t.detach().reshape(-1)[::1024].sum()
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the parent process.
hwm = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"peak_rss": hwm, "weights": weights}))
"""

MODES = (("imports", "imports only"), ("one", "one student (base + 1 adapter)"),
         ("project", "project: 1 base + 3 adapters"), ("three", "three separate models"))


def measure(students: Path, repeats: int, floor: dict | None = None) -> dict[str, dict]:
    """Median (by peak RSS) of ``repeats`` fresh processes per configuration; ``floor`` reuses an
    imports-only measurement."""
    out = {"imports": floor} if floor else {}
    for mode, _ in MODES:
        if mode in out:
            continue
        runs = []
        for _ in range(repeats):
            r = subprocess.run([sys.executable, "-c", CHILD, mode, str(students)], capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"{mode} failed:\n{r.stderr[-2000:]}")
            runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
        runs.sort(key=lambda d: d["peak_rss"])
        out[mode] = runs[len(runs) // 2]  # median
    return out


def report(title: str, res: dict[str, dict]) -> float:
    floor = res["imports"]["peak_rss"]
    one_net = res["one"]["peak_rss"] - floor
    print(f"\n{title}")
    print(f"{'configuration':34s} {'peak RSS MB':>12s} {'above floor':>12s} {'x one':>7s} {'weights MB':>11s} {'x one':>7s}")
    for mode, name in MODES:
        rss, w = res[mode]["peak_rss"], res[mode]["weights"]
        net = rss - floor
        ratio = f"{net / one_net:7.2f}" if mode != "imports" else "      -"
        wr = f"{w / res['one']['weights']:7.2f}" if mode != "imports" else "      -"
        print(f"{name:34s} {rss / 2**20:12.1f} {net / 2**20:12.1f} {ratio} {w / 2**20:11.1f} {wr}")
    project = (res["project"]["peak_rss"] - floor) / one_net
    print(f"project vs one student: {project:.2f}x RSS above the floor, "
          f"{res['project']['weights'] / res['one']['weights']:.2f}x weights (goal <= 1.15x: "
          f"{'met' if project <= 1.15 else 'NOT met'}); three models: "
          f"{(res['three']['peak_rss'] - floor) / one_net:.2f}x")
    return project


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--students", type=Path, default=None, help="measure these students instead of built ones")
    ap.add_argument("--hidden", type=int, default=1024, help="text hidden size of the built base")
    ap.add_argument("--layers", type=int, default=8, help="text layers of the built base")
    ap.add_argument("--rank", type=int, default=16, help="LoRA rank of the built adapters")
    ap.add_argument("--repeats", type=int, default=1, help="processes per configuration (median)")
    args = ap.parse_args()
    from _students import toy_students

    from scenefit.testbed.tiny_model import TinyModelConfig

    if args.students:
        report(f"students {args.students}", measure(args.students, args.repeats))
        return 0
    t0 = time.perf_counter()
    tiny = TinyModelConfig(hidden_size=args.hidden, intermediate_size=args.hidden * 11 // 4, num_layers=args.layers,
                           num_heads=args.hidden // 128, num_kv_heads=max(1, args.hidden // 512))
    demo_like = toy_students(steps=0, tiny_cfg=tiny, rank=args.rank)
    paper_like = toy_students(steps=0, tiny_cfg=tiny, rank=args.rank, modules_to_save=None)
    print(f"base: random Qwen2.5-VL, text hidden {args.hidden} x {args.layers} layers; adapters rank {args.rank}; "
          f"built in {time.perf_counter() - t0:.1f} s")
    demo_res = measure(demo_like, args.repeats)
    report("adapters like the demo's (LoRA q/k/v/o + lm_head copy)", demo_res)
    report("adapters like the paper's (LoRA q/k/v/o only)", measure(paper_like, args.repeats, demo_res["imports"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
