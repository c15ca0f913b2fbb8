"""Benchmark: the vision tower's window attention, one call per window vs one call per block.

    .venv/bin/python benchmarks/vision_tower.py
    .venv/bin/python benchmarks/vision_tower.py --images 8 --depth 8 --hidden 160 --repeats 5
    .venv/bin/python benchmarks/vision_tower.py --smoke        # smallest size, seconds

Issue 20, item 2. Same weights, same inputs, same process; the two paths differ only in the
tower's attention (``scenefit.models.vision_attention``): "transformers" (transformers' sdpa, one call
per window) and "packed" (one call per block, what ``load_model`` installs by default).

1. Tower: a reduced Qwen2.5-VL tower with the 3B's geometry (patch 14, 2×2 merge, 112-px windows,
   head dim 80, one full-attention block in 8) but narrower and shallower, random weights, fp32,
   on batches of random patches: square 448×448 images (16 equal windows each, as in the GPU
   figures), 504×364 ones (ragged edge windows) and a mix of sizes. Median seconds per forward,
   and the largest difference between the two paths' outputs.
2. Fast path: the Predictor's decision path (all three criteria) on toy students whose tiny base
   has the reduced tower and takes 448×448 images; images/s.

Torch runs one thread by default (the machine's 2 cores are shared; --threads to change).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import ratio, smoke_flag  # noqa: E402
from _timing import timed  # noqa: E402

#: make bench: 3 alternating repeats instead of 5 (the script's budget).
BENCH_ARGS = ["--repeats", "3"]
MODES = ("transformers", "packed")
#: (label, grid_thw rows in patches): 448² = 32×32 patches; 504×364 = 36×26 (ragged windows).
BATCHES = {
    "448x448": [(1, 32, 32)],
    "504x364 (ragged)": [(1, 26, 36)],
    "mixed sizes": [(1, 32, 32), (1, 26, 36), (1, 16, 40), (1, 20, 20)],
}


def reduced_tower(depth: int, hidden: int, seed: int = 0):
    """A random Qwen2.5-VL vision tower: the 3B's geometry, ``depth`` blocks of width ``hidden``."""
    import torch
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

    cfg = Qwen2_5_VLVisionConfig(depth=depth, hidden_size=hidden, intermediate_size=hidden * 27 // 10,
                                 num_heads=hidden // 80, out_hidden_size=256, window_size=112, patch_size=14,
                                 spatial_merge_size=2, temporal_patch_size=2,
                                 fullatt_block_indexes=list(range(7, depth, 8)) or [depth - 1])
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    return Qwen2_5_VisionTransformerPretrainedModel(cfg).eval()


def alternating(model, fn, repeats: int) -> tuple[dict[str, tuple[float, float]], dict[str, object]]:
    """Per mode: (median wall seconds, median CPU seconds of this process) of ``fn``, and its
    last result. The modes take turns call by call (after a warm-up each), so a change in the
    shared machine's load hits both alike; with one torch thread the CPU seconds are the
    steadier figure on a loaded machine."""
    import statistics
    import time

    from scenefit.models.vision_attention import set_vision_attention

    walls: dict[str, list[float]] = {m: [] for m in MODES}
    cpus: dict[str, list[float]] = {m: [] for m in MODES}
    results: dict[str, object] = {}
    for m in MODES:
        set_vision_attention(model, m)
        fn()
    for _ in range(repeats):
        for m in MODES:
            set_vision_attention(model, m)
            cpu0 = time.process_time()
            wall, results[m] = timed(fn, 1)
            cpus[m].append(time.process_time() - cpu0)
            walls[m].append(wall)
    return {m: (statistics.median(walls[m]), statistics.median(cpus[m])) for m in MODES}, results


def sdpa_calls_per_forward(model, fn) -> dict[str, int]:
    from scenefit.models.vision_attention import counting_sdpa_calls, set_vision_attention

    counts = {}
    for m in MODES:
        set_vision_attention(model, m)
        with counting_sdpa_calls() as calls:
            fn()
        counts[m] = len(calls)
    return counts


def tower_rows(args) -> list[tuple]:
    import torch

    tower = reduced_tower(args.depth, args.hidden)
    rows = []
    for label, grids in BATCHES.items():
        grid = torch.tensor([g for _ in range(args.images // len(grids)) for g in grids])
        pixels = torch.randn(int(grid.prod(-1).sum()), 3 * 2 * 14 * 14)
        with torch.inference_mode():
            forward = lambda: tower(pixels, grid_thw=grid).pooler_output  # noqa: E731
            calls = sdpa_calls_per_forward(tower, forward)
            times, outs = alternating(tower, forward, args.repeats)
        diff = (outs["packed"] - outs["transformers"]).abs().max().item()
        rows.append((f"{len(grid)} × {label}", int(grid.prod(-1).sum()), calls, times, diff, label))
    return rows


def fast_path_rows(args) -> list[tuple]:
    from _students import toy_students

    from scenefit.predict import PredictConfig, Predictor
    from scenefit.testbed.tiny_model import TinyModelConfig
    from scenefit.testbed.toy_students import toy_items

    side = 448 * 448
    tiny = TinyModelConfig(seed=0, vision_depth=args.depth, vision_hidden_size=args.hidden,
                           vision_heads=args.hidden // 80, vision_intermediate_size=args.hidden * 27 // 10,
                           min_pixels=side, max_pixels=side)
    students = toy_students(steps=0, tiny_cfg=tiny)
    predictor = Predictor.from_students(students, config=PredictConfig(device="cpu", batch_size=args.images))
    items, _ = toy_items(args.images, seed=0)
    times, preds = alternating(predictor.model, lambda: predictor.predict(items), args.repeats)
    labels = {mode: [p.criteria[c].label for p in ps for c in predictor.criteria] for mode, ps in preds.items()}
    same = sum(a is b for a, b in zip(labels["packed"], labels["transformers"]))
    return [(f"{len(items)} images 448×448, 3 criteria", len(items), times, same, len(labels["packed"]))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=8, help="images per batch (tower and fast path)")
    ap.add_argument("--depth", type=int, default=8, help="tower blocks (the 3B has 32)")
    ap.add_argument("--hidden", type=int, default=160, help="tower width, a multiple of 80 (the 3B: 1280)")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per mode (median), alternating")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-fast-path", action="store_true", help="measure the tower only")
    ap.add_argument("--pad-on-cpu", action="store_true",
                    help="packed mode pads ragged blocks into one call as on a GPU (the CPU default: runs of equal length)")
    smoke_flag(ap)
    args = ap.parse_args()
    if args.smoke:
        args.images, args.depth, args.hidden, args.repeats = 4, 2, 80, 1
    if args.hidden % 80:
        ap.error("--hidden must be a multiple of 80 (the 3B's head dim)")

    import torch

    from scenefit import SYNTHETIC_NOTICE

    torch.set_num_threads(args.threads)
    if args.pad_on_cpu:
        import scenefit.models.vision_attention

        scenefit.models.vision_attention.PADDED_DEVICES = ("cuda", "cpu")
    print(f"reduced tower: depth {args.depth}, width {args.hidden} ({args.hidden // 80} heads of 80), "
          f"fp32, torch {torch.__version__}, {torch.get_num_threads()} thread(s); ragged blocks "
          f"{'padded into one call' if args.pad_on_cpu else 'in runs of equal length'}", flush=True)
    head = f"{'per window':>16s} {'packed':>16s} {'speed-up':>15s}"
    unit = f"{'wall / CPU s':>16s} {'wall / CPU s':>16s} {'wall / CPU':>15s}"
    print(f"\n{'tower batch':28s} {'patches':>8s} {'SDPA calls':>12s} {head} {'max |diff|':>10s}")
    print(f"{'':28s} {'':>8s} {'before/after':>12s} {unit}")
    rows = tower_rows(args)
    for name, patches, calls, t, diff, _ in rows:
        (w0, c0), (w1, c1) = t["transformers"], t["packed"]
        print(f"{name:28s} {patches:8d} {calls['transformers']:>6d}/{calls['packed']:<5d} {w0:7.3f} / {c0:6.3f} "
              f"{w1:7.3f} / {c1:6.3f} {w0 / w1:6.2f}x / {c0 / c1:5.2f}x {diff:10.1e}", flush=True)
    for name, patches, calls, t, diff, label in rows:
        (w0, c0), (w1, c1) = t["transformers"], t["packed"]
        ratio(f"tower.{label.split(' ')[0]}.per_window_vs_packed_cpu_time", c0 / c1,
              what=f"tower width {args.hidden}, {name}: SDPA calls {calls['transformers']} -> {calls['packed']}, CPU "
                   f"seconds per forward {c0:.3f} per window vs {c1:.3f} packed (wall {w0:.3f} vs {w1:.3f}); "
                   f"outputs differ by {diff:.1e}")
    if not args.skip_fast_path:
        print(f"\n{'fast path':34s} {'per window':>17s} {'packed':>17s} {'speed-up':>15s} {'same labels':>12s}")
        print(f"{'':34s} {'img/s wall / CPU':>17s} {'img/s wall / CPU':>17s} {'wall / CPU':>15s}")
        for name, n, t, same, total in fast_path_rows(args):
            (w0, c0), (w1, c1) = t["transformers"], t["packed"]
            print(f"{name:34s} {n / w0:8.2f} / {n / c0:6.2f} {n / w1:8.2f} / {n / c1:6.2f} "
                  f"{w0 / w1:6.2f}x / {c0 / c1:5.2f}x {same:>6d}/{total}")
            ratio("fast_path.per_window_vs_packed_cpu_time", c0 / c1,
                  what=f"fast path, {name}: {n / c0:.3g} vs {n / c1:.3g} images per CPU second (per window vs packed); "
                       f"the same label on {same}/{total} answers")
        print(SYNTHETIC_NOTICE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
