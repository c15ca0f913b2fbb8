"""The training loop: a transformers ``Trainer`` with the project's collator, a LoRA adapter on
the language model, decision accuracy added to every evaluation, a JSONL log and early stopping.

    from scenefit.train.trainer import train_student
    result = train_student("location", "runs/demo/datasets", "runs/demo/model", "runs/demo/students", cfg)

Why a plain ``Trainer`` rather than TRL's ``SFTTrainer``: the collator (answer-only labels from
the chat template's generation marks, no truncation) is the project's own either way, and the
plain Trainer encodes each sample once instead of re-rendering chats per batch
(``benchmarks/train_step.py`` compares the two).

Output folder ``OUT/<criterion>/``: the adapter (``adapter_config.json``, weights) with the
processor beside it, ``README.md`` (model card), ``config.yaml`` (resolved), ``metrics.json``,
``dataset_manifest.json``, ``scenefit_student.json``, ``log.jsonl``; checkpoints and the
tensorboard events under ``trainer/``.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from scenefit import SYNTHETIC_NOTICE
from scenefit.core.config import dump_yaml
from scenefit.core.criteria import Criterion, Label
from scenefit.formats import DECISION_PREFIX, decision_continuations
from scenefit.core.parquet_io import atomic_write_text, file_sha256, write_json
from scenefit.prompts import student_prompt_version
from scenefit.train.checkpoints import (
    STATE_FILE,
    CheckpointScan,
    checkpoint_problem,
    scan_checkpoints,
    training_finished,
    trim_jsonl_log,
    whole_run_train_loss,
)
from scenefit.train.config import TrainConfig
from scenefit.train.data import SPLIT_FILES, AnswerOnlyCollator, StudentExamples, read_split, split_path
from scenefit.train.decision import accuracy, score_rows
from scenefit.train.launch import sharding_fallback_warning, world_size
from scenefit.train.packing import PackedCollator, use_packed_attention

CHECKPOINTS_DIR = "trainer"
STUDENT_FILE = "scenefit_student.json"


@dataclass
class TrainResult:
    criterion: str
    out_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False


def _trainer_classes():
    """Callback and Trainer subclasses, built on first use (transformers is heavy to import)."""
    from transformers import Trainer, TrainerCallback

    class JsonlLogCallback(TrainerCallback):
        """Every log line (train loss, eval metrics) appended to a JSONL file by the main process."""

        def __init__(self, path: Path):
            self.path = path

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                rec = {"step": state.global_step, "epoch": state.epoch, "time": time.time(), **logs}
                with self.path.open("a") as f:
                    f.write(json.dumps(rec, default=float) + "\n")

    class StudentTrainer(Trainer):
        """A Trainer whose evaluations also report decision accuracy on the validation rows."""

        def __init__(self, *args, decision_rows: list[dict], scoring_processor, scoring_batch_size: int, **kwargs):
            super().__init__(*args, **kwargs)
            self.decision_rows = decision_rows
            self.scoring_processor = scoring_processor
            self.scoring_batch_size = scoring_batch_size

        def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"):
            out = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
            if self.decision_rows:
                accuracy, balanced = self._decision_accuracy()
                out.metrics[f"{metric_key_prefix}_decision_accuracy"] = accuracy
                out.metrics[f"{metric_key_prefix}_decision_balanced_accuracy"] = balanced
            return out

        def _decision_accuracy(self) -> tuple[float, float]:
            """Decision accuracy and balanced accuracy (the mean of the two labels' recalls, so the
            majority class scores 50 % on any label mix) of the validation rows."""
            import torch

            # Each process scores an equal share (ZeRO-3 needs every rank in every forward pass);
            # counts are summed across processes so every rank sees the same metric.
            world, rank = self.accelerator.num_processes, self.accelerator.process_index
            share = math.ceil(len(self.decision_rows) / world)
            mine = self.decision_rows[rank * share : (rank + 1) * share]
            pad = share - len(mine)
            rows = mine + self.decision_rows[:pad]
            preds = score_rows(self.model, self.scoring_processor, rows, self.scoring_batch_size)
            from scenefit.evaluate.metrics import balanced_accuracy

            labels = (Label.IN.value, Label.OUT.value)
            # confusion matrix (rows: the validation label, columns: the prediction), summed over processes
            matrix = torch.zeros(2, 2, dtype=torch.float64, device=self.args.device)
            for p, r in zip(preds[: len(mine)], mine):
                matrix[labels.index(r["label"]), labels.index(p["label"])] += 1
            matrix = self.accelerator.reduce(matrix, reduction="sum") if world > 1 else matrix
            total = float(matrix.sum())
            accuracy = float(matrix.trace()) / total if total else float("nan")
            balanced = balanced_accuracy(matrix.long().tolist())[0]
            return accuracy, (float("nan") if balanced is None else balanced)

    return JsonlLogCallback, StudentTrainer


def _precision(cfg: TrainConfig) -> str:
    import torch

    if cfg.precision != "auto":
        return cfg.precision
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def training_arguments(cfg: TrainConfig, output_dir: Path, accumulation: int):
    import os

    import torch
    from transformers import TrainingArguments

    precision = _precision(cfg)
    # `accelerate launch --config_file …` exports the file's mixed_precision (bf16 in the shipped
    # GPU configs), and accelerate would autocast to it even where the config chose fp32 (CPU):
    # train.precision is the one setting that decides.
    os.environ["ACCELERATE_MIXED_PRECISION"] = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}[precision]
    return TrainingArguments(
        output_dir=str(output_dir),
        # Without use_cpu a CPU-only machine launched by torchrun gets WORLD_SIZE processes that each
        # train alone (parallel_mode NOT_PARALLEL, every rank writing every output); with it
        # accelerate sets up DDP over gloo.
        use_cpu=not torch.cuda.is_available(),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        lr_scheduler_type=cfg.lr_scheduler,
        optim=cfg.optimizer,
        max_grad_norm=cfg.max_grad_norm,
        per_device_train_batch_size=cfg.per_device_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=accumulation,
        eval_strategy="steps",
        eval_steps=cfg.eval_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps or cfg.eval_steps,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model=cfg.metric_for_best_model,
        greater_is_better=cfg.greater_is_better,
        logging_steps=cfg.logging_steps,
        report_to=list(cfg.report_to) or "none",
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        activation_checkpointing=cfg.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        dataloader_num_workers=cfg.dataloader_num_workers,
        dataloader_pin_memory=False,
        remove_unused_columns=False,
        label_names=["labels"],
        prediction_loss_only=True,
        ddp_find_unused_parameters=False,
        disable_tqdm=False,
    )


def dataset_manifest(data_dir: Path, criterion: str) -> dict[str, Any]:
    """What the student trained on: the split files with hashes and the datasets stage's manifest."""
    files = {}
    for split in SPLIT_FILES:
        p = split_path(data_dir, criterion, split)
        if p.is_file():
            files[split] = {"path": str(p), "sha256": file_sha256(p)}
    stage = data_dir / "manifest.json"
    return {
        "criterion": criterion,
        "files": files,
        "datasets_manifest": json.loads(stage.read_text()) if stage.is_file() else None,
    }


def _is_synthetic(*frames) -> bool:
    return any("synthetic" in f and bool(f["synthetic"].fillna(False).astype(bool).any()) for f in frames)


def _subset(frame, n: Optional[int], seed: int):
    if n is None or len(frame) <= n:
        return frame
    return frame.sample(n=n, random_state=seed).sort_index()


def score_split(model, processor, frame, batch_size: int, with_base: bool) -> dict[str, Any]:
    """Decision accuracy of the student (and of the bare base, adapter disabled) on a split,
    against the dataset's labels and, where present, the world's truth."""
    rows = frame.to_dict("records")
    result: dict[str, Any] = {"n": len(rows)}
    runs = [("student", None)]
    if with_base:
        runs.append(("base", "disable"))
    for name, mode in runs:
        if mode == "disable":
            with model.disable_adapter():
                preds = score_rows(model, processor, rows, batch_size)
        else:
            preds = score_rows(model, processor, rows, batch_size)
        result[name] = {"accuracy": accuracy(preds, rows, "label"), "accuracy_vs_truth": accuracy(preds, rows, "truth")}
    return result


def student_info(cfg: TrainConfig, criterion: str, base_model: str, synthetic: bool, targets: list[str]) -> dict[str, Any]:
    """``scenefit_student.json``: what predict/serve/evaluate need to use the adapter."""
    vllm_ok = not cfg.lora.modules_to_save
    return {
        "criterion": criterion,
        "base_model": base_model,
        "prompt_version": student_prompt_version(),
        "decision_prefix": DECISION_PREFIX,
        "label_continuations": {lab.value: text for lab, text in decision_continuations().items()},
        "lora": {
            "r": cfg.lora.r,
            "alpha": cfg.lora.alpha,
            "dropout": cfg.lora.dropout,
            "target_regex": cfg.lora.target_regex,
            "targets": targets,
            "modules_to_save": list(cfg.lora.modules_to_save),
        },
        "min_pixels": cfg.min_pixels,
        "max_pixels": cfg.max_pixels,
        "vllm_servable": vllm_ok,
        "vllm_note": None if vllm_ok else (
            f"modules_to_save={list(cfg.lora.modules_to_save)} are fully trained copies; vLLM's --lora-modules "
            "cannot serve this adapter (load it with PEFT instead)."
        ),
        "synthetic": synthetic,
        "notice": SYNTHETIC_NOTICE if synthetic else None,
    }


def _finish_from_checkpoint(trainer, scan: CheckpointScan) -> dict[str, Any]:
    """Finish a run whose last checkpoint is its end: restore the Trainer's state and the best
    checkpoint's adapter (what ``load_best_model_at_end`` would have loaded), train nothing."""
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights
    from transformers import TrainerState

    state = TrainerState.load_from_json(str(scan.resume_from / STATE_FILE))
    trainer.state = state
    best = scan.resume_from
    if state.best_global_step:
        candidate = scan.resume_from.parent / f"checkpoint-{state.best_global_step}"
        if candidate.is_dir() and checkpoint_problem(candidate) is None:
            best = candidate
    set_peft_model_state_dict(trainer.model, load_peft_weights(str(best), device="cpu"))
    state.best_model_checkpoint = str(best)
    return {
        "train_loss": whole_run_train_loss(state.log_history, state.global_step, None, 0),
        "finished_from_checkpoint": str(scan.resume_from),
        "loaded_adapter_from": str(best),
        "epoch": state.epoch,
    }


def is_trained(out_dir: Path) -> bool:
    return (out_dir / "adapter_config.json").is_file() and (out_dir / "metrics.json").is_file()


def train_student(
    criterion: str,
    data_dir: Path | str,
    base_model: str,
    out_root: Path | str,
    cfg: TrainConfig,
    overwrite: bool = False,
    extra_callbacks: Optional[list] = None,
) -> TrainResult:
    """Train (or resume) the student of one criterion; returns its metrics."""
    import torch
    from transformers import EarlyStoppingCallback

    from scenefit.models.loading import load_model, load_processor, save_processor
    from scenefit.train.card import model_card
    from scenefit.train.lora import adapted_modules, apply_lora

    crit = Criterion.parse(criterion).value
    data_dir = Path(data_dir)
    out = Path(out_root) / crit
    run_dir = out / CHECKPOINTS_DIR
    accumulation = cfg.accumulation_for(world_size())
    args = training_arguments(cfg, run_dir, accumulation)  # sets up the process group when launched in several
    # The main process clears or checks the folder first; the others wait, then see what it left.
    with args.main_process_first(desc=f"{crit}: output folder"):
        if overwrite and out.exists() and args.process_index == 0:
            shutil.rmtree(out)
        if is_trained(out):
            return TrainResult(crit, out, json.loads((out / "metrics.json").read_text()), skipped=True)
        out.mkdir(parents=True, exist_ok=True)

    frames = {s: read_split(data_dir, crit, s) for s in SPLIT_FILES if split_path(data_dir, crit, s).is_file()}
    for need in ("train", "val"):
        if need not in frames or frames[need].empty:
            raise FileNotFoundError(f"{split_path(data_dir, crit, need)}: missing or empty; the student needs it")
    synthetic = _is_synthetic(*frames.values())

    processor = load_processor(base_model, cfg.min_pixels, cfg.max_pixels)
    precision = _precision(cfg)
    model = load_model(base_model, dtype={"bf16": "bf16", "fp16": "fp32", "fp32": "fp32"}[precision], device="cpu")
    if cfg.packing:
        use_packed_attention(model)  # sdpa per sample of a packed row, not over the whole row
    torch.manual_seed(cfg.seed)  # LoRA init
    model = apply_lora(model, cfg.lora)
    targets = adapted_modules(model)
    if cfg.gradient_checkpointing:
        model.enable_input_require_grads()

    val_rows = _subset(frames["val"], cfg.eval_samples, cfg.seed)
    train_set = StudentExamples(frames["train"], processor, cfg.max_seq_length, cache=cfg.cache_examples)
    val_set = StudentExamples(val_rows, processor, cfg.max_seq_length, cache=cfg.cache_examples)
    JsonlLogCallback, StudentTrainer = _trainer_classes()
    callbacks = [JsonlLogCallback(out / "log.jsonl")]
    if cfg.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(cfg.early_stopping_patience, cfg.early_stopping_threshold))
    trainer = StudentTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set,
        data_collator=PackedCollator(model) if cfg.packing else AnswerOnlyCollator(processor.tokenizer.pad_token_id),
        callbacks=callbacks + list(extra_callbacks or []),
        decision_rows=val_rows.to_dict("records"),
        scoring_processor=processor,
        scoring_batch_size=cfg.per_device_eval_batch_size,
    )
    if trainer.is_world_process_zero():
        sharding = sharding_fallback_warning(trainer.accelerator.distributed_type)
        if sharding:
            print(f"warning: {sharding}", file=sys.stderr)
    scan = scan_checkpoints(run_dir) if cfg.resume else CheckpointScan()
    trainer.accelerator.wait_for_everyone()  # every rank has chosen before the main one removes anything
    if trainer.is_world_process_zero():
        for path, problem in scan.skipped:
            print(f"warning: {crit}: skipping incomplete checkpoint {path}: {problem}; removed it", file=sys.stderr)
            shutil.rmtree(path, ignore_errors=True)
        if scan.resume_from is not None:
            print(f"{crit}: resuming from {scan.resume_from} (step {scan.resumed_step})", file=sys.stderr)
        trim_jsonl_log(out / "log.jsonl", scan.resumed_step)  # the resumed steps are logged again
    trainer.accelerator.wait_for_everyone()
    resume_from = str(scan.resume_from) if scan.resume_from is not None else None
    started = time.time()
    if scan.resume_from is not None and training_finished(scan.state, cfg.max_steps):
        # The kill came after the last checkpoint: Trainer.train would run one step past the end.
        train_metrics = _finish_from_checkpoint(trainer, scan)
    else:
        # The Trainer prints its log dicts to stdout; the CLI keeps stdout for its JSON summary.
        with contextlib.redirect_stdout(sys.stderr):
            train_output = trainer.train(resume_from_checkpoint=resume_from)
        train_metrics = dict(train_output.metrics)
        if scan.resume_from is not None:
            # The Trainer's train_loss averages only the steps of this call.
            train_metrics["train_loss"] = whole_run_train_loss(
                trainer.state.log_history, scan.resumed_step, train_metrics.get("train_loss"),
                trainer.state.global_step - scan.resumed_step)
    seconds = time.time() - started

    metrics: dict[str, Any] = {
        "criterion": crit,
        "base_model": base_model,
        "resumed_from": resume_from,
        "skipped_checkpoints": [{"path": str(p), "problem": why} for p, why in scan.skipped],
        "global_step": trainer.state.global_step,
        "epoch": trainer.state.epoch,
        "train": train_metrics,
        "wall_seconds": seconds,
        "train_rows": len(frames["train"]),
        "val_rows_used": len(val_rows),
        "world_size": trainer.args.world_size,
        "gradient_accumulation_steps": accumulation,
        "effective_batch_size": cfg.per_device_batch_size * accumulation * trainer.args.world_size,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_metric": {"name": cfg.metric_for_best_model, "value": trainer.state.best_metric},
        "eval_history": [h for h in trainer.state.log_history if "eval_loss" in h],
        "synthetic": synthetic,
    }
    if cfg.score_test and "test" in frames:
        # Every rank runs the same forward passes (ZeRO-3 gathers parameters collectively).
        metrics["test"] = score_split(trainer.model, processor, frames["test"], cfg.per_device_eval_batch_size, with_base=True)

    trainer.save_model(str(out))  # collective under ZeRO-3/FSDP; the main process writes the adapter
    if trainer.is_world_process_zero():
        (out / "training_args.bin").unlink(missing_ok=True)  # a pickle; config.yaml is the readable record
        save_processor(processor, out)
        dump_yaml(cfg, out / "config.yaml")
        write_json(dataset_manifest(data_dir, crit), out / "dataset_manifest.json")
        info = student_info(cfg, crit, base_model, synthetic, targets)
        write_json(info, out / STUDENT_FILE)
        atomic_write_text(model_card(info, metrics, cfg), out / "README.md")
        write_json(metrics, out / "metrics.json")  # last: its presence marks the student as complete
        if not cfg.keep_checkpoints:
            for ckpt in run_dir.glob("checkpoint-*"):
                shutil.rmtree(ckpt, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return TrainResult(crit, out, metrics)
