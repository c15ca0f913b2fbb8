"""Training throughput: the project's `scenefit train` path vs a plain TRL SFTTrainer script, same
data, same model, same LoRA, same batch and steps, at two scales. Prints samples/s (median of
interleaved repeats) and the ratio; the project must not be more than 10 % slower.

    .venv/bin/python benchmarks/train_step.py                              # both scales (~4-5 min on 2 cores)
    .venv/bin/python benchmarks/train_step.py --scales tiny --repeats 5 --steps 60
    .venv/bin/python benchmarks/train_step.py --smoke                      # smallest size, seconds

Both sides read the same Parquet rows (the student dataset format, ``_students.student_datasets``)
and train in fp32 with no evaluation. TRL's side is the plain recipe: prompt/completion chats +
images, completion-only loss, ``max_length=None``. samples/s is counted over the optimizer steps
after the first (``StepClock``: the first step's start-up — data loading, first allocations — is
left out on both sides alike).

- ``tiny``: the demo's tiny base and recipe (LoRA r=32 on every projection + a trainable
  ``lm_head``), 112x112 images (16 image tokens), batch 8;
- ``standin``: the offline stand-in of Qwen2.5-VL-3B (real vocabulary; random weights) at
  ``benchmarks/_students.py``'s ``STANDIN_CPU`` size, the paper's adapter shape (LoRA on q/k/v/o,
  dropout 0.1, alpha = 2r, here r=64), 224x224 images (64 image tokens), batch 2 (a step takes
  seconds on one core: the 151,936-row output layer runs over every position in training).

``project_run``, ``trl_run`` and ``StepClock`` are shared with ``packing.py`` and ``gpu_all.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import ratio, smoke_flag  # noqa: E402

BENCH_ARGS: list[str] = []
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
#: (LoRA settings, image side, batch) per scale
RECIPES = {
    "tiny": ({"r": 32, "alpha": 64, "dropout": 0.0, "target_modules": ALL_PROJECTIONS, "modules_to_save": ["lm_head"]},
             112, 8),
    "standin": ({"r": 64, "alpha": 128, "dropout": 0.1, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
                 "modules_to_save": []}, 224, 2),
}


def step_clock(sync: bool = False):
    """A TrainerCallback recording when each optimizer step ends (device synchronised when ``sync``)."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def on_train_begin(self, *a, **k):
            self.times = []

        def on_step_end(self, *a, **k):
            if sync:
                import torch

                torch.cuda.synchronize()
            self.times.append(time.perf_counter())

        def samples_per_s(self, per_step: int, warm: int = 1) -> float:
            """Samples per second over the steps after the first ``warm`` ones."""
            t = self.times[warm - 1:] if warm > 0 else self.times
            return per_step * (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 else float("nan")

    return StepClock()


def project_run(data: Path, model: Path, out: Path, steps: int, batch: int, lora: Optional[dict] = None, clock=None,
                accumulation: int = 1, config=None, **settings) -> float:
    """Steady samples/s of `scenefit train`: ``config`` (a TrainConfig, e.g. paper.yaml's) keeps its
    recipe, else this benchmark's (``lora``, fp32, lr 1e-3, examples cached); the run's shape (steps,
    batch, accumulation, no evaluation or checkpoints on the way) is set here; ``settings``
    overrides any field."""
    from scenefit.train.config import TrainConfig
    from scenefit.train.trainer import train_student

    clock = clock or step_clock()
    recipe = {} if config is not None else dict(lora=lora, learning_rate=1e-3, warmup_ratio=0.0, precision="fp32",
                                                cache_examples=True, seed=0)
    shape = dict(max_steps=steps, per_device_batch_size=batch, gradient_accumulation_steps=accumulation, num_devices=1,
                 effective_batch_size=batch * accumulation, eval_steps=10 * steps, save_steps=10 * steps,
                 early_stopping_patience=None, report_to=[], score_test=False, keep_checkpoints=False,
                 logging_steps=steps)
    fields = {**recipe, **shape, **settings}
    cfg = config.model_validate({**config.model_dump(), **fields}) if config is not None else TrainConfig(**fields)
    train_student("location", data, str(model), out, cfg, overwrite=True, extra_callbacks=[clock])
    return clock.samples_per_s(batch * accumulation)


def trl_run(data: Path, model_dir: Path, out: Path, steps: int, batch: int, lora: dict, clock=None,
            accumulation: int = 1, precision: str = "fp32", device: str = "cpu", gradient_checkpointing: bool = False,
            min_pixels=None, max_pixels=None, workers: int = 0) -> float:
    """Steady samples/s of a plain TRL SFTTrainer script on the same rows and LoRA."""
    from datasets import Dataset
    from peft import LoraConfig
    from PIL import Image
    from trl import SFTConfig, SFTTrainer

    from scenefit.core.parquet_io import read_table
    from scenefit.models.loading import load_model, load_processor
    from scenefit.student.chat import StudentChat, StudentRequest

    clock = clock or step_clock()
    rows = read_table(data / "location" / "train.parquet")[0].to_dict("records")  # images resolved
    ds = Dataset.from_list([
        {
            # the same chat as the project's (the packaged students' layout)
            "prompt": StudentChat.packaged().messages(StudentRequest.of_row(r)),
            "completion": [{"role": "assistant", "content": [{"type": "text", "text": r["target"]}]}],
            "images": [Image.open(r["image"]).convert("RGB")],
        }
        for r in rows
    ])
    args = SFTConfig(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation,
        learning_rate=1e-3, logging_steps=steps, save_strategy="no", report_to="none", max_length=None,
        bf16=precision == "bf16", gradient_checkpointing=gradient_checkpointing, seed=0, dataloader_pin_memory=False,
        disable_tqdm=True, use_cpu=device == "cpu", dataloader_num_workers=workers,
    )
    targets = "|".join(lora["target_modules"])
    peft_config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                             modules_to_save=lora.get("modules_to_save") or None,
                             target_modules=rf"(?:.*\.)?language_model\.layers\.\d+\.(?:self_attn|mlp)\.(?:{targets})")
    dtype = "bf16" if precision == "bf16" else "fp32"
    trainer = SFTTrainer(model=load_model(model_dir, dtype, device), args=args, train_dataset=ds,
                         processing_class=load_processor(model_dir, min_pixels, max_pixels), peft_config=peft_config,
                         callbacks=[clock])
    trainer.train()
    return clock.samples_per_s(batch * accumulation)


def measure(scale: str, model: Path, data: Path, root: Path, steps: int, repeats: int, what: str) -> None:
    lora, _, batch = RECIPES[scale]
    project, trl = [], []
    for i in range(repeats):  # interleaved, so machine load hits both sides alike
        project.append(project_run(data, model, root / f"{scale}-p{i}", steps, batch, lora))
        trl.append(trl_run(data, model, root / f"{scale}-t{i}", steps, batch, lora))
        print(f"[{scale}] repeat {i + 1}: project {project[-1]:.2f} samples/s, TRL SFTTrainer {trl[-1]:.2f} samples/s",
              flush=True)
    p, t = statistics.median(project), statistics.median(trl)
    print(f"[{scale}] median samples/s  project {p:.2f}  TRL {t:.2f}  ratio project/TRL {p / t:.2f}x "
          f"({repeats} repeats x {steps} steps, batch {batch})")
    ratio(f"{scale}.project_vs_trl", p / t, goal=">= 0.9", met=p >= 0.9 * t,
          what=f"`scenefit train` {p:.3g} vs plain TRL SFTTrainer {t:.3g} samples/s ({what}, batch {batch}, "
               f"{repeats} interleaved repeats x {steps} steps, the first step left out)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", nargs="+", choices=tuple(RECIPES), default=list(RECIPES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30, help="tiny scale: optimizer steps per run")
    ap.add_argument("--standin-repeats", type=int, default=2)
    ap.add_argument("--standin-steps", type=int, default=5, help="stand-in scale: optimizer steps per run")
    smoke_flag(ap)
    args = ap.parse_args()
    if args.smoke:
        args.repeats = args.standin_repeats = 1
        args.steps = args.standin_steps = 3

    import torch

    torch.set_num_threads(1)  # 2 shared cores: one thread per process (see student_inference.py)
    from _students import STANDIN_CPU, STANDIN_SMOKE, describe, standin_base, student_datasets

    from scenefit.testbed.tiny_model import TinyModelConfig, build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "tiny" in args.scales:
            model = build_tiny_model(root / "tiny-model", TinyModelConfig(seed=0))
            data = student_datasets(root / "tiny-data", (("train", 64), ("val", 8), ("test", 8)), side=RECIPES["tiny"][1])
            measure("tiny", model, data, root, args.steps, args.repeats,
                    "tiny base, LoRA r=32 on every projection + trainable lm_head, 112 px images")
        if "standin" in args.scales:
            size = STANDIN_SMOKE if args.smoke else STANDIN_CPU
            side = 56 if args.smoke else RECIPES["standin"][1]
            data = student_datasets(root / "standin-data", (("train", 32), ("val", 4), ("test", 4)), side=side)
            measure("standin", standin_base(size), data, root, args.standin_steps, args.standin_repeats,
                    f"Qwen2.5-VL-3B stand-in {describe(size)}, LoRA r=64 on q/k/v/o, {side} px images")


if __name__ == "__main__":
    main()
