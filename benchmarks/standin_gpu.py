"""Benchmark (GPU): one student trained with the paper recipe on the full-size Qwen2.5-VL-3B-Instruct
stand-in (issue 14, item 4). One prepared script for a device session; not run yet.

    python benchmarks/standin_gpu.py --out "$OUT/standin_gpu.json"                          # on the H200
    .venv/bin/python benchmarks/standin_gpu.py --small --device cpu --steps 3 --batch 1 --accum 1 \\
        --side 56 --out /tmp/standin_gpu.json                                                  # CPU smoke run

Builds the stand-in at full size (`scenefit standin-model` without flags: real vocabulary,
random bf16 weights), draws 448x448 boxed scenes (256 image tokens each, the paper's pixel budget
floor), and trains one student with the `paper` config's train section (LoRA r=256, alpha 512,
dropout 0.1 on q/k/v/o, AdamW 2e-4, bf16, gradient checkpointing) at batch 4 x accumulation 4 on
one GPU for --steps optimizer steps. Reports samples/s over the steps after the first five (warm-up
excluded), peak GPU memory, and the projected wall time of the paper's run: 20,000 samples x 3
epochs x 3 students on 4 GPUs, assuming DDP scales linearly (an upper bound on speed). Expected
device time: about 4-5 minutes (1-2 to build the 3B, then the steps).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAPER_SAMPLES, PAPER_EPOCHS, PAPER_STUDENTS, PAPER_GPUS = 20_000, 3, 3, 4


def write_dataset(root: Path, n_train: int, n_val: int, side: int) -> Path:
    """DATA/location/{train,val}.parquet of boxed synthetic scenes (half floating, half standing)."""
    import pandas as pd
    from PIL import Image, ImageDraw

    from scenefit.core.criteria import Criterion, Label
    from scenefit.student.answer import render_student_answer
    from scenefit.prompts import student_prompt, student_system_prompt

    crit = Criterion.LOCATION
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "data" / crit.value).mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("val", n_val)):
        rows = []
        for i in range(n):
            label = Label.OUT if i % 2 else Label.IN
            im = Image.new("RGB", (side, side), (120, 200, 255))
            d = ImageDraw.Draw(im)
            d.rectangle((0, side * 2 // 3, side, side), fill=(60, 170, 50))
            top = side // 8 if label is Label.OUT else side * 3 // 4
            d.rectangle((side // 3, top, side // 2, top + side // 8), outline=(255, 0, 0), width=max(2, side // 100))
            path = root / "images" / f"{split}-{i}.png"
            im.save(path)
            rows.append({"id": f"{split}-{i}", "image": str(path), "criterion": crit.value, "label": label.value,
                         "prompt": student_prompt(crit).render("cow"), "system": student_system_prompt(),
                         "target": render_student_answer(crit, label, "The cow is where the box is.")})
        pd.DataFrame(rows).to_parquet(root / "data" / crit.value / f"{split}.parquet")
    return root / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--accum", type=int, default=4)
    ap.add_argument("--side", type=int, default=448)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="a 2-layer stand-in (smoke runs)")
    args = ap.parse_args()

    import torch
    from transformers import TrainerCallback

    from scenefit.core.config import packaged_configs_dir, resolve
    from scenefit.testbed.standin import StandinSize, build_standin_model
    from scenefit.train.trainer import train_student

    class StepClock(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def on_step_end(self, *a, **k):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())

    work = Path(tempfile.mkdtemp(prefix="standin_gpu_"))
    size = StandinSize(layers=2, hidden=64, intermediate=128, heads=4, vision_depth=2, vision_hidden=32,
                       vision_intermediate=64, vision_heads=2) if args.small else StandinSize()
    t0 = time.perf_counter()
    base = build_standin_model(work / "base", size)
    build_s = time.perf_counter() - t0
    per_step = args.batch * args.accum
    data = write_dataset(work, per_step * args.steps, 2 * args.batch, args.side)
    pixels = args.side * args.side
    cfg = resolve("train", packaged_configs_dir() / "paper.yaml", {
        "max_steps": args.steps, "num_devices": 1, "per_device_batch_size": args.batch,
        "gradient_accumulation_steps": args.accum, "effective_batch_size": per_step, "eval_steps": args.steps,
        "save_steps": args.steps, "report_to": [], "score_test": False, "min_pixels": pixels, "max_pixels": pixels,
        **({"precision": "fp32", "gradient_checkpointing": False, "dataloader_num_workers": 0} if args.device == "cpu" else {}),
    })
    clock = StepClock()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t1 = time.perf_counter()
    train_student("location", data, str(base), work / "students", cfg, extra_callbacks=[clock])
    total_s = time.perf_counter() - t1
    warm = min(5, len(clock.times) - 1)
    timed = clock.times[warm:]
    samples_per_s = per_step * (len(timed) - 1) / (timed[-1] - timed[0]) if len(timed) > 1 else float("nan")
    paper_samples = PAPER_SAMPLES * PAPER_EPOCHS * PAPER_STUDENTS
    result = {
        "size": size.model_dump(), "steps": args.steps, "batch": args.batch, "accumulation": args.accum,
        "image_side": args.side, "build_s": round(build_s, 1), "train_wall_s": round(total_s, 1),
        "samples_per_s": round(samples_per_s, 3),
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
        "paper_run_projection_h": round(paper_samples / (PAPER_GPUS * samples_per_s) / 3600, 2),
        "projection_note": f"{paper_samples} samples on {PAPER_GPUS} GPUs at this rate each (linear DDP scaling assumed)",
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }
    shutil.rmtree(work, ignore_errors=True)  # the 3B folder is ~7.5 GB
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
