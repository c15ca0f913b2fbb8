"""GPU check of the ray_vllm teacher: a few synthetic scenes annotated by vLLM engines inside Ray Data.

    # on a GPU machine with vllm and the `ray` extra installed, from the repository root:
    python benchmarks/gpu_ray_vllm.py --model /path/to/Qwen2.5-VL-folder --out "$OUT/ray_vllm.json"
    python benchmarks/gpu_ray_vllm.py --model M --tp 4 --engines 1 --n 64     # the paper's 72B layout (4 GPUs)

Not run in `make test` (no GPU there; the processor itself is built and checked by
tests/e2e/test_ray_engines.py). What it does: draws ``--n`` synthetic scenes
(:func:`scenefit.testbed.world.generate_world`, SYNTHETIC), starts a local Ray on the machine's GPUs,
annotates them with one teacher ``backend: ray_vllm`` (``tensor_parallel_size`` = ``--tp``,
``ray_actors`` = ``--engines``) into a fresh store, runs the same command again to show it resumes
(0 asked), and writes a JSON with the summary, answers/s, the parse statuses, how many answers
carry P(out), and the versions. A random-weight model (``scenefit standin-model``) answers
gibberish: the check is then that every sample ends answered or failed with a reason, not the labels.
Exit status 0 when every sample is in the store.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import skipped  # noqa: E402

BENCH_ARGS = "smoke"  # needs a GPU machine with vllm and the ray extra


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model folder (or hub id the nodes can reach) vLLM serves (required)")
    ap.add_argument("--tp", type=int, default=1, help="tensor_parallel_size: GPUs per engine")
    ap.add_argument("--engines", type=int, default=1, help="ray_actors: engines (data parallel)")
    ap.add_argument("--n", type=int, default=32, help="synthetic scenes to annotate")
    ap.add_argument("--batch", type=int, default=16, help="rows per Ray Data batch")
    ap.add_argument("--max-model-len", type=int, default=8192)
    ap.add_argument("--out", type=Path, default=Path("ray_vllm.json"))
    ap.add_argument("--smoke", action="store_true", help="say whether this machine can run it (GPU, vllm, ray), then stop")
    args = ap.parse_args()
    if args.smoke:
        import importlib.util

        import torch

        missing = [m for m in ("vllm", "ray") if importlib.util.find_spec(m) is None]
        missing += [] if torch.cuda.is_available() else ["a CUDA GPU"]
        skipped(f"needs {', '.join(missing)} (a GPU check: see its docstring)" if missing else
                "this machine could run it: pass --model MODEL (the smoke run does not serve a model)")
        return 0
    if args.model is None:
        ap.error("--model is required")

    import ray

    from scenefit.teachers.annotate import annotate
    from scenefit.teachers.config import AnnotateConfig
    from scenefit.teachers.store import AnnotationStore
    from scenefit.testbed.world import WorldConfig, generate_world

    report: dict = {"model": args.model, "tp": args.tp, "engines": args.engines, "n": args.n,
                    "versions": {"ray": ray.__version__}}
    try:
        import vllm

        report["versions"]["vllm"] = vllm.__version__
    except ImportError as e:
        report["error"] = f"vllm is not importable here: {e}"
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(report["error"], file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        generate_world(WorldConfig(n=args.n, seed=0, image_size=448), Path(tmp) / "world")
        samples = _samples(Path(tmp) / "world")
        teacher = {"name": "teacher", "backend": "ray_vllm", "model": args.model, "tensor_parallel_size": args.tp,
                   "ray_actors": args.engines, "batch_size": args.batch, "max_tokens": 256,
                   "engine_kwargs": {"max_model_len": args.max_model_len}}
        cfg = AnnotateConfig(teachers=[teacher], progress=False)
        db = Path(tmp) / "a.sqlite"
        t0 = time.perf_counter()
        first = annotate(samples, cfg, db)
        report["first_run_s"] = time.perf_counter() - t0
        second = annotate(samples, cfg, db)
        with AnnotationStore(db) as store:
            df = store.to_frame()
    report["summary"] = first.to_json()
    report["rerun_pending"] = second.teachers["teacher"].pending
    report["answers_per_s_incl_start"] = len(df) / report["first_run_s"]
    report["by_status"] = df["status"].value_counts().to_dict()
    report["with_p_out"] = int(df["p_out"].notna().sum())
    report["notice"] = "SYNTHETIC world scenes; engine start and model load included in the rate"
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(json.dumps(report, indent=2, default=str))
    return 0 if len(df) == len(samples) and report["rerun_pending"] == 0 else 1


def _samples(world_dir: Path) -> list:
    from scenefit.data.manifest import read_manifest

    samples, _ = read_manifest(world_dir / "manifest.parquet")
    return samples


if __name__ == "__main__":
    sys.exit(main())
