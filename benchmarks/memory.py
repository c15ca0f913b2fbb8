"""Benchmark: peak resident memory of three students as one base + three adapters vs three
separately loaded models.

    .venv/bin/python benchmarks/memory.py
    .venv/bin/python benchmarks/memory.py --scales tiny --students runs/demo/students
    .venv/bin/python benchmarks/memory.py --smoke          # smallest size, seconds

Each configuration loads in its own fresh process and reports its peak RSS (VmHWM) and the
bytes of the loaded weights (every parameter and buffer, shared storage counted once):

- imports only: torch, transformers and peft imported, no model (the floor every process pays);
- one student: the base + one adapter (what serving a single criterion takes);
- project: the base once + the three adapters (scenefit.predict.Predictor);
- three models: three bases, each with its adapter (three students loaded separately), and one
  processor (the stand-in's tokenizer alone holds some 100 MB: every configuration has one).

Ratios are against one student, on the RSS above the imports-only floor. Two scales: the
demo's tiny students (after `make demo`; else toy students) — their base is a few MB and vanishes
in the ~400 MB floor, so that ratio says little — and the offline stand-in of Qwen2.5-VL-3B at
``benchmarks/_students.py``'s ``STANDIN_CPU`` size (real vocabulary; random weights, ~174 M
parameters, fp32) with random rank-16 adapters in two shapes: the paper's (LoRA q/k/v/o only)
and the demo's (LoRA q/k/v/o + a copy of the output layer each). Goal (issue 8): project <= 1.15x
one student with the paper's adapters, vs ~3x for three models.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import ratio, smoke_flag  # noqa: E402

BENCH_ARGS: list[str] = []

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
    else:  # three separately loaded students (and one processor, as the Predictor holds)
        from scenefit.models.loading import load_processor
        infos = find_students(students)
        base = choose_base(infos, None)
        modules = [PeftModel.from_pretrained(load_model(base, dtype="fp32", device="cpu"), str(i.path)) for i in infos.values()]
        processor = load_processor(str(next(iter(infos.values())).path))
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


def report(title: str, res: dict[str, dict], name: str, goal: bool, note: str = "") -> float:
    floor = res["imports"]["peak_rss"]
    one_net = res["one"]["peak_rss"] - floor
    print(f"\n{title}")
    print(f"{'configuration':34s} {'peak RSS MB':>12s} {'above floor':>12s} {'x one':>7s} {'weights MB':>11s} {'x one':>7s}")
    for mode, label in MODES:
        rss, w = res[mode]["peak_rss"], res[mode]["weights"]
        net = rss - floor
        ratio_col = f"{net / one_net:7.2f}" if mode != "imports" else "      -"
        wr = f"{w / res['one']['weights']:7.2f}" if mode != "imports" else "      -"
        print(f"{label:34s} {rss / 2**20:12.1f} {net / 2**20:12.1f} {ratio_col} {w / 2**20:11.1f} {wr}")
    project = (res["project"]["peak_rss"] - floor) / one_net
    three = (res["three"]["peak_rss"] - floor) / one_net
    print(f"project vs one student: {project:.2f}x RSS above the floor, "
          f"{res['project']['weights'] / res['one']['weights']:.2f}x weights; three models: {three:.2f}x")
    mb = lambda mode: (res[mode]["peak_rss"] - floor) / 2**20  # noqa: E731
    ratio(f"{name}.project_vs_one_student", project,
          what=f"{title}: one base + three adapters {mb('project'):.0f} MB vs one student {mb('one'):.0f} MB of peak RSS "
               f"above the {floor / 2**20:.0f} MB imports floor{note}",
          **({"goal": "<= 1.15", "met": project <= 1.15} if goal else {}))
    ratio(f"{name}.three_models_vs_one_student", three,
          what=f"{title}: three separately loaded students {mb('three'):.0f} MB vs one student {mb('one'):.0f} MB")
    return project


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", nargs="+", choices=("tiny", "standin"), default=["tiny", "standin"])
    ap.add_argument("--students", type=Path, default=None,
                    help="tiny scale: these students (default: the demo's when trained, else toy students)")
    ap.add_argument("--rank", type=int, default=16, help="LoRA rank of the stand-in's adapters")
    ap.add_argument("--repeats", type=int, default=1, help="processes per configuration (median)")
    smoke_flag(ap)
    args = ap.parse_args()
    if args.smoke:  # fresh processes cost seconds each: one scale and one adapter shape
        args.scales = ["standin"]
    from _students import STANDIN_CPU, STANDIN_SMOKE, demo_students, describe, standin_students, toy_students

    floor = None
    if "tiny" in args.scales:
        students = None if args.smoke else (args.students or demo_students())
        label = ("toy students on the tiny base" if students is None else "the demo's students" if args.students is None
                 else "the given students")  # no machine path in the results file
        print(f"tiny: {label} ({students or 'built here'})")
        res = measure(students or toy_students(steps=0), args.repeats)
        floor = res["imports"]
        report(f"tiny: {label}", res, "tiny", goal=False,
               note=" (the tiny base's few MB vanish in the floor: this ratio says little; see the stand-in's)")
    if "standin" in args.scales:
        size = STANDIN_SMOKE if args.smoke else STANDIN_CPU
        t0 = time.perf_counter()
        paper_like = standin_students(size, rank=args.rank)
        demo_like = None if args.smoke else standin_students(size, rank=args.rank, modules_to_save=("lm_head",))
        print(f"stand-in: {describe(size)}; random rank-{args.rank} adapters; built in {time.perf_counter() - t0:.1f} s")
        res = measure(paper_like, args.repeats, floor)
        report("stand-in, adapters like the paper's (LoRA q/k/v/o)", res, "standin.paper_adapters", goal=True)
        if args.smoke:
            return 0
        report("stand-in, adapters like the demo's (LoRA q/k/v/o + an lm_head copy each)",
               measure(demo_like, args.repeats, res["imports"]), "standin.demo_adapters", goal=False,
               note=" (each adapter carries its own copy of the 151,936-row output layer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
