"""What Ray adds to `scenefit predict`: rows/s in process vs on a local Ray with 1 and 2 actors,
and the wall-time projections that follow from it (stated as projections, with their assumptions).

    .venv/bin/python benchmarks/ray_predict.py            # 192 items, 3 repeats (~5-8 minutes on 2 shared cores)
    .venv/bin/python benchmarks/ray_predict.py --smoke    # 6 items, 1 repeat, 1 actor: does it run (~1 minute: Ray's start)

Same items (tiny Qwen2.5-VL, three random toy students, 112x112 scenes), same batch size, same
machine. In process: one Predictor loaded, then ``predict`` over all items. Ray: a local Ray started
once (its start is reported apart), then :func:`scenefit.predict.ray_engine.predict_on_ray` — which
starts the actors (each loads the model), judges, commits shards and reads them back. Each path is
split into its start (until the first rows are judged: the model loaded; on Ray, the actors
started) and its steady rate (rows per second from the arrival that passes a quarter of the rows
to the last), and Ray's steady cost per row is 1/rate(Ray, 1 actor) - 1/rate(in process). A smoke run is dominated by Ray's and the actors' start (tens of seconds here). On a loaded
machine (other agents share the cores) the figures move between runs: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ratio, skipped  # noqa: E402

#: make bench: 96 items, 2 repeats (the defaults take 5-8 minutes of a loaded machine).
BENCH_ARGS = ["--items", "96", "--repeats", "2"]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: One H200, full-size Qwen2.5-VL-3B (random weights, bf16), fast path at batch 64, run B (benchmarks/RESULTS.md).
GPU_FAST_IMAGES_PER_S = 21.4
#: Same, explanations at batch 64, run B.
GPU_EXPLAIN_IMAGES_PER_S = 3.63
PAPER_IMAGES, PAPER_TEACHERS = 97_722, 3


def build(root: Path, n: int):
    from PIL import Image, ImageDraw

    from scenefit.core.records import Sample
    from scenefit.testbed.tiny_model import TinyModelConfig, build_tiny_model
    from scenefit.testbed.toy_students import build_toy_students

    model = build_tiny_model(root / "model", TinyModelConfig(seed=0))
    students = build_toy_students(model, root / "students", steps=0, rank=8)
    items = []
    for i in range(n):
        p = root / f"img{i:04d}.png"
        im = Image.new("RGB", (112, 112), (40 + i % 150, 140, 200 - i % 150))
        ImageDraw.Draw(im).rectangle((10 + i % 40, 50, 40 + i % 40, 90), fill=(90, 60, 30))
        im.save(p)
        items.append(Sample(id=f"i{i:04d}", image=str(p), object=["cow", "kite", "oven"][i % 3], box=(10 + i % 40, 50, 40 + i % 40, 90)))
    return students, items


def steady(arrivals: list[tuple[float, int]], n: int) -> tuple[float, float]:
    """(time the first rows came, rows/s from the arrival that passes a quarter of the rows to the
    last): past the start and any rows Ray had buffered before the first arrival."""
    done, marks = 0, []
    for t, k in arrivals:
        done += k
        marks.append((t, done))
    t_q, rows_q = next((t, d) for t, d in marks if d >= n / 4)
    t_end = marks[-1][0]
    return marks[0][0], (n - rows_q) / (t_end - t_q) if t_end > t_q else float("nan")


class Arrivals:
    """A Progress stand-in recording when rows finish: (time, rows) per advance."""

    def __init__(self):
        self.marks: list[tuple[float, int]] = []

    def bar(self, *args, **kwargs) -> "Arrivals":
        return self

    def note(self, **counts) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        self.marks.append((time.perf_counter(), n))


def in_process(students: Path, items: list, batch: int) -> tuple[float, float]:
    """(seconds until the first batch was judged, the Predictor loaded; steady rows/s)."""
    from scenefit.predict import PredictConfig, Predictor

    arrivals = Arrivals()
    t0 = time.perf_counter()
    pred = Predictor.from_students(students, config=PredictConfig(batch_size=batch))
    pred.predict(items, progress=arrivals)
    first, rate = steady(arrivals.marks, len(items))
    return first - t0, rate


def on_ray(students: Path, items: list, batch: int, actors: int, out: Path) -> tuple[float, float]:
    """(seconds until the first rows came back — actors started, model loaded, first shard judged —;
    steady rows/s)."""
    from scenefit.predict import PredictConfig
    from scenefit.predict.ray_engine import RaySettings, predict_on_ray
    from scenefit.predict.shards import remove_parts

    cfg = PredictConfig(students=str(students), batch_size=batch)
    arrivals = Arrivals()
    t0 = time.perf_counter()
    predict_on_ray(items, cfg, out, RaySettings(actors=actors, shard_size=batch), progress=arrivals)
    remove_parts(out)
    first, rate = steady(arrivals.marks, len(items))
    return first - t0, rate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="smallest size: 6 items, one repeat, 1 actor")
    ap.add_argument("--items", type=int, default=192)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = ap.parse_args()
    n, repeats, actor_counts = (6, 1, (1,)) if args.smoke else (args.items, args.repeats, (1, 2))
    args.batch = 1 if args.smoke else args.batch

    import torch

    torch.set_num_threads(1)
    try:
        import ray
    except ImportError:
        skipped("ray is not installed here: pip install 'scenefit[ray]'")
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        students, items = build(root, n)
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - t0
        times: dict[str, list[float]] = {"in process": []}
        for a in actor_counts:
            times[f"ray, {a} actor(s)"] = []  # (start s, steady rows/s)
        for _ in range(repeats):  # interleaved, so drifting load hits every path alike
            times["in process"].append(in_process(students, items, args.batch))
            for a in actor_counts:
                times[f"ray, {a} actor(s)"].append(on_ray(students, items, args.batch, a, root / "p.jsonl"))
        ray.shutdown()
    first = {k: statistics.median(r[0] for r in v) for k, v in times.items()}
    rate = {k: statistics.median(r[1] for r in v) for k, v in times.items()}
    print(f"\n{n} items, batch {args.batch}, median of {repeats}, torch 1 thread per process, 2 CPUs shared with other "
          f"work; local Ray start {ray_start:.1f} s (not in the rows below)\n")
    print(f"{'path':<18} {'start s':>8} {'steady rows/s':>14} {'x in process':>13}")
    for k in times:
        print(f"{k:<18} {first[k]:8.2f} {rate[k]:14.2f} {rate[k] / rate['in process']:13.2f}")
    print("start: until the first rows were judged (in process: the Predictor loaded; Ray: actors started, model "
          "loaded). steady: rows/s from the arrival passing a quarter of the rows to the last.")
    overhead = 1 / rate["ray, 1 actor(s)"] - 1 / rate["in process"]
    print(f"\nRay's steady cost at one actor: {overhead * 1000:.1f} ms per row over in process")
    figures = {"items": n, "batch": args.batch, "repeats": repeats, "ray_start_s": ray_start, "start_s": first,
               "steady_rows_per_s": rate, "overhead_s_per_row": overhead}
    print(projections(overhead, first["ray, 1 actor(s)"]))
    ratio("ray_1_actor_vs_in_process.steady_rate", rate["ray, 1 actor(s)"] / rate["in process"],
          what=f"steady rows/s on a local Ray with one actor {rate['ray, 1 actor(s)']:.3g} vs in process "
               f"{rate['in process']:.3g} ({n} items, batch {args.batch})")
    ratio("ray_1_actor_vs_in_process.start", first["ray, 1 actor(s)"] / max(first["in process"], 1e-9),
          what=f"until the first rows are judged: {first['ray, 1 actor(s)']:.3g} s on Ray (actor started, model loaded) "
               f"vs {first['in process']:.3g} s in process; a local Ray's own start {ray_start:.3g} s apart")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def projections(overhead_s: float, start_s: float) -> str:
    """Wall-time projections from the GPU figures of benchmarks/RESULTS.md and the Ray costs measured here."""
    lines = ["\nProjections (not measured; assumptions stated): each GPU one actor at the H200 rate below, Ray's "
             f"steady cost per row added in series (conservative), plus one start of {start_s:.0f} s as measured here"]
    for label, rate in (("fast path", GPU_FAST_IMAGES_PER_S), ("explanations", GPU_EXPLAIN_IMAGES_PER_S)):
        per_row = 1 / rate + max(overhead_s, 0.0)
        for gpus in (1, 8, 32):
            hours = (1_000_000 * per_row / gpus + start_s) / 3600
            lines.append(f"  1,000,000 images, {label}, {gpus:>2} GPU(s), one actor per GPU: {hours:7.1f} h "
                         f"({rate} images/s per H200 measured for the 3B, + {max(overhead_s, 0) * 1000:.0f} ms/row Ray)")
    answers = PAPER_IMAGES * PAPER_TEACHERS
    for per_engine in (1.0, 4.0):
        for engines in (1, 4):
            hours = answers / (per_engine * engines) / 3600
            lines.append(f"  paper annotation, {answers:,} answers, {engines} engine(s) per teacher at an ASSUMED "
                         f"{per_engine:g} answers/s each: {hours:7.1f} h "
                         f"(the three teachers in turn; no 72B throughput was measured here)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
