"""Training throughput: the project's `scenefit train` path vs a plain TRL SFTTrainer script,
same data, same tiny model, same LoRA, same batch and steps. Prints samples/s (median of
repeats) and the ratio; the project must not be more than 10 % slower.

    .venv/bin/python benchmarks/train_step.py                 # 3 repeats x 30 steps
    .venv/bin/python benchmarks/train_step.py --repeats 5 --steps 60

Both sides read the same Parquet rows (the student dataset format) and train LoRA r=32 on the
language model's projections with a trainable lm_head, batch 8, fp32, no evaluation. TRL's
side is the plain recipe: prompt/completion chats + images, completion-only loss,
``max_length=None``; samples/s is the trainer's own ``train_samples_per_second``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def project_run(data: Path, model: Path, out: Path, steps: int, batch: int, **settings) -> float:
    """samples/s of `scenefit train` with the recipe below; ``settings`` adds train-config fields."""
    from scenefit.train.config import TrainConfig
    from scenefit.train.trainer import train_student

    cfg = TrainConfig(
        lora={"r": 32, "alpha": 64, "dropout": 0.0, "target_modules": TARGETS, "modules_to_save": ["lm_head"]},
        max_steps=steps, learning_rate=1e-3, warmup_ratio=0.0, per_device_batch_size=batch,
        gradient_accumulation_steps=1, num_devices=1, effective_batch_size=batch, eval_steps=10 * steps,
        early_stopping_patience=None, precision="fp32", cache_examples=True, report_to=[], score_test=False,
        keep_checkpoints=False, logging_steps=steps, seed=0, **settings,
    )
    res = train_student("location", data, str(model), out, cfg, overwrite=True)
    return float(res.metrics["train"]["train_samples_per_second"])


def trl_run(data: Path, model_dir: Path, out: Path, steps: int, batch: int) -> float:
    from datasets import Dataset
    from peft import LoraConfig
    from PIL import Image
    from trl import SFTConfig, SFTTrainer

    from scenefit.models.loading import load_model, load_processor
    from scenefit.student.chat import StudentChat, StudentRequest
    from scenefit.core.parquet_io import read_table

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
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch, learning_rate=1e-3,
        logging_steps=steps, save_strategy="no", report_to="none", max_length=None, bf16=False,
        gradient_checkpointing=False, seed=0, dataloader_pin_memory=False, disable_tqdm=True,
    )
    peft_config = LoraConfig(r=32, lora_alpha=64, lora_dropout=0.0, modules_to_save=["lm_head"],
                             target_modules=r"(?:.*\.)?language_model\.layers\.\d+\.(?:self_attn|mlp)\.(?:" + "|".join(TARGETS) + ")")
    trainer = SFTTrainer(model=load_model(model_dir, "fp32", "cpu"), args=args, train_dataset=ds,
                         processing_class=load_processor(model_dir), peft_config=peft_config)
    return float(trainer.train().metrics["train_samples_per_second"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()

    from scenefit.testbed.tiny_model import TinyModelConfig, build_tiny_model
    from test_train_run import make_datasets

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tiny_model(root / "model", TinyModelConfig(seed=0))
        data = make_datasets(root, sizes=(("train", 64), ("val", 8), ("test", 8)))
        project, trl = [], []
        for i in range(args.repeats):  # interleaved, so machine load hits both sides alike
            project.append(project_run(data, model, root / f"p{i}", args.steps, args.batch))
            trl.append(trl_run(data, model, root / f"t{i}", args.steps, args.batch))
            print(f"repeat {i + 1}: project {project[-1]:.2f} samples/s, TRL SFTTrainer {trl[-1]:.2f} samples/s", flush=True)
    p, t = statistics.median(project), statistics.median(trl)
    print(f"\nmedian samples/s  project {p:.2f}  TRL {t:.2f}  ratio project/TRL {p / t:.2f}x "
          f"({'OK' if p >= 0.9 * t else 'SLOWER than 0.9x'}; {args.repeats} repeats x {args.steps} steps, batch {args.batch})")


if __name__ == "__main__":
    main()
