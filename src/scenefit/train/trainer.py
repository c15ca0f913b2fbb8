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
import copy
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
from scenefit.core.files import atomic_write_text, file_sha256, write_json
from scenefit.core.records import is_synthetic
from scenefit.student.answer import AnswerFormat
from scenefit.student.chat import StudentChat
from scenefit.student.decision import accuracy, judge_rows
from scenefit.student.metadata import StudentMeta, base_record, loadable_base, write_student_meta
from scenefit.train.checkpoints import (
    CheckpointScan,
    checkpoint_problem,
    is_trained,
    scan_checkpoints,
    training_finished,
    trim_jsonl_log,
    whole_run_train_loss,
)
from scenefit.train.config import TrainConfig
from scenefit.train.data import (
    SPLIT_FILES,
    AnswerOnlyCollator,
    StudentExamples,
    dataset_chat,
    datasets_stage_manifest,
    fit_lengths,
    read_split,
    split_path,
)
from scenefit.train.launch import sharding_fallback_warning, world_size
from scenefit.train.packing import PackedCollator, use_packed_attention

CHECKPOINTS_DIR = "trainer"


@dataclass
class TrainResult:
    criterion: str
    out_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False


def _trainer_classes():
    """Callback and Trainer subclasses, built on first use (transformers is heavy to import)."""
    from transformers import Trainer, TrainerCallback

    from scenefit.train.distill import DistillLossMixin

    class JsonlLogCallback(TrainerCallback):
        """Every log line (train loss, eval metrics) appended to a JSONL file by the main process."""

        def __init__(self, path: Path):
            self.path = path

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                rec = {"step": state.global_step, "epoch": state.epoch, "time": time.time(), **logs}
                with self.path.open("a") as f:
                    f.write(json.dumps(rec, default=float) + "\n")

    class StudentTrainer(DistillLossMixin, Trainer):
        """A Trainer whose evaluations also report decision accuracy on the validation rows (and whose loss
        adds the soft-label term of ``train.distill`` when its weight is above 0)."""

        def __init__(self, *args, decision_rows: list[dict], scoring_processor, scoring_batch_size: int,
                     chat: Optional[StudentChat] = None, max_new_tokens: int = 128, **kwargs):
            super().__init__(*args, **kwargs)
            self.decision_rows = decision_rows
            self.scoring_processor = scoring_processor
            self.scoring_batch_size = scoring_batch_size
            self.chat = chat or StudentChat.packaged()
            self.max_new_tokens = max_new_tokens

        def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"):
            out = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
            if self.decision_rows:
                accuracy, balanced, unread = self._decision_accuracy()
                out.metrics[f"{metric_key_prefix}_decision_accuracy"] = accuracy
                out.metrics[f"{metric_key_prefix}_decision_balanced_accuracy"] = balanced
                out.metrics[f"{metric_key_prefix}_decision_unreadable"] = unread
            return out

        def _decision_accuracy(self) -> tuple[float, float, int]:
            """Decision accuracy and balanced accuracy (the mean of the two labels' recalls, so the
            majority class scores 50 % on any label mix) of the validation rows, and the number of
            answers without a readable decision (counted as wrong, never guessed). Decision-first:
            a decision the student would not write (its argmax at the decision position is
            another token) is unreadable too — else the best checkpoint can be an early one that
            ranks the labels but writes ``Decision:`` and a line break (seen on the demo's size
            student: 63 of 220 test answers unreadable)."""
            import torch

            # Each process scores an equal share (ZeRO-3 needs every rank in every forward pass);
            # counts are summed across processes so every rank sees the same metric.
            world, rank = self.accelerator.num_processes, self.accelerator.process_index
            share = math.ceil(len(self.decision_rows) / world)
            mine = self.decision_rows[rank * share : (rank + 1) * share]
            pad = share - len(mine)
            rows = mine + self.decision_rows[:pad]
            preds = judge_rows(self.model, self.scoring_processor, rows, self.chat, self.scoring_batch_size,
                               self.max_new_tokens, written_only=True)
            from scenefit.evaluate.metrics import balanced_accuracy

            labels = (Label.IN.value, Label.OUT.value)
            # confusion matrix (rows: the validation label, columns: the prediction; an unreadable
            # answer goes to the other label's column, i.e. counts as wrong), summed over processes
            matrix = torch.zeros(2, 2, dtype=torch.float64, device=self.args.device)
            unread = torch.zeros(1, dtype=torch.float64, device=self.args.device)
            for p, r in zip(preds[: len(mine)], mine):
                ref = labels.index(r["label"])
                if p["label"] is None:
                    unread += 1
                matrix[ref, labels.index(p["label"]) if p["label"] is not None else 1 - ref] += 1
            if world > 1:
                matrix = self.accelerator.reduce(matrix, reduction="sum")
                unread = self.accelerator.reduce(unread, reduction="sum")
            total = float(matrix.sum())
            accuracy = float(matrix.trace()) / total if total else float("nan")
            balanced = balanced_accuracy(matrix.long().tolist())[0]
            return accuracy, (float("nan") if balanced is None else balanced), int(unread.item())

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
    return {"criterion": criterion, "files": files, "datasets_manifest": datasets_stage_manifest(data_dir)}


def datasets_box_style(data_dir: Path) -> Optional[dict]:
    """How the datasets' images were boxed, as the datasets stage recorded it (None: not recorded)."""
    return (datasets_stage_manifest(data_dir) or {}).get("box_style")


def _subset(frame, n: Optional[int], seed: int):
    if n is None or len(frame) <= n:
        return frame
    return frame.sample(n=n, random_state=seed).sort_index()


def score_split(model, processor, frame, batch_size: int, with_base: bool, chat: StudentChat,
                max_new_tokens: int = 128) -> dict[str, Any]:
    """Decision accuracy of the student (and of the bare base, adapter disabled) on a split,
    against the dataset's labels and, where present, the world's truth. The student is read
    the way its answer format allows (:func:`scenefit.student.decision.judge_rows`); the bare
    base is asked the same prompts on the fast path (it was trained on neither format)."""
    rows = frame.to_dict("records")
    # which decision the accuracy is of: the logits after the forced prefix, or the generated text's
    result: dict[str, Any] = {"n": len(rows), "decision": "logits" if chat.answer_format.has_fast_path else "generated_text"}
    preds = judge_rows(model, processor, rows, chat, batch_size, max_new_tokens)
    result["student"] = {"accuracy": accuracy(preds, rows, "label"), "accuracy_vs_truth": accuracy(preds, rows, "truth")}
    if not chat.answer_format.has_fast_path:
        result["student"]["unreadable"] = sum(p["label"] is None for p in preds)
    if with_base:
        with model.disable_adapter():
            preds = judge_rows(model, processor, rows, chat.with_answer_format(AnswerFormat.DECISION_FIRST), batch_size)
        result["base"] = {"accuracy": accuracy(preds, rows, "label"), "accuracy_vs_truth": accuracy(preds, rows, "truth")}
    return result


def student_info(cfg: TrainConfig, criterion: str, base_model: str, synthetic: bool, targets: list[str],
                 chat: StudentChat, students_root: Path | str = ".", box_style: Optional[dict] = None) -> StudentMeta:
    """``scenefit_student.json``: what predict/serve/evaluate need to use the adapter (the base
    recorded by :func:`scenefit.student.metadata.base_record` against ``students_root``), to ask
    it as it was trained (``chat``: its prompt, system turn, image position, answer format) and to
    draw the box it was trained on (``box_style``, as its datasets record it)."""
    vllm_ok = not cfg.lora.modules_to_save
    return StudentMeta.for_chat(chat, criterion, **{
        **base_record(base_model, students_root),
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
        "box_style": box_style,
        "vllm_servable": vllm_ok,
        "vllm_note": None if vllm_ok else (
            f"modules_to_save={list(cfg.lora.modules_to_save)} are fully trained copies; vLLM's --lora-modules "
            "cannot serve this adapter: load it with PEFT, or merge it for vLLM (scenefit export-vllm --merge DIR)."
        ),
        "synthetic": synthetic,
        "notice": SYNTHETIC_NOTICE if synthetic else None,
    })


def _finish_from_checkpoint(trainer, scan: CheckpointScan) -> dict[str, Any]:
    """Finish a run whose last checkpoint is its end: restore the Trainer's state and the best
    checkpoint's adapter (what ``load_best_model_at_end`` would have loaded), train nothing."""
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights
    from transformers import TrainerState

    state = TrainerState(**copy.deepcopy(scan.state))  # the scan already read trainer_state.json once
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


def train_student(
    criterion: str,
    data_dir: Path | str,
    base_model: str,
    out_root: Path | str,
    cfg: TrainConfig,
    overwrite: bool = False,
    extra_callbacks: Optional[list] = None,
) -> TrainResult:
    """Train (or resume) the student of one criterion; returns its metrics.

    Reads top to bottom: the output folder, the data, the model, the Trainer, training (or
    resuming, or finishing from the last checkpoint), then the student folder."""
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

    frames = _read_frames(data_dir, crit)
    synthetic = is_synthetic(*frames.values())
    chat = dataset_chat(data_dir, crit, frames)
    # PEFT records the name the base was loaded by in adapter_config.json: load it by what loads
    # from any folder (an absolute path or a hub id), never a path relative to where train ran.
    base_model = loadable_base(base_record(base_model, out_root))
    processor, model, targets = _load_base(base_model, cfg)
    frames, lengths = fit_lengths(processor, frames, chat, cfg.max_seq_length, cfg.truncation,
                                  {s: split_path(data_dir, crit, s) for s in frames})
    val_rows = _subset(frames["val"], cfg.eval_samples, cfg.seed)
    trainer, distill_summary = _build_trainer(model, processor, args, cfg, frames, val_rows, data_dir, crit, out,
                                              chat, extra_callbacks)
    scan, train_metrics, seconds = _train_or_resume(trainer, cfg, run_dir, out, crit)

    metrics: dict[str, Any] = {
        "criterion": crit,
        "base_model": base_model,
        "resumed_from": str(scan.resume_from) if scan.resume_from is not None else None,
        "skipped_checkpoints": [{"path": str(p), "problem": why} for p, why in scan.skipped],
        "global_step": trainer.state.global_step,
        "epoch": trainer.state.epoch,
        "train": train_metrics,
        "wall_seconds": seconds,
        "train_rows": len(frames["train"]),
        "length": lengths,
        "val_rows_used": len(val_rows),
        "world_size": trainer.args.world_size,
        "gradient_accumulation_steps": accumulation,
        "effective_batch_size": cfg.per_device_batch_size * accumulation * trainer.args.world_size,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_metric": {"name": cfg.metric_for_best_model, "value": trainer.state.best_metric},
        "eval_history": [h for h in trainer.state.log_history if "eval_loss" in h],
        "synthetic": synthetic,
        "answer_format": chat.answer_format.value,
        "student_prompt": chat.prompt_version,
        "distill": distill_summary,
    }
    if cfg.score_test and "test" in frames:
        # Every rank runs the same forward passes (ZeRO-3 gathers parameters collectively).
        metrics["test"] = score_split(trainer.model, processor, frames["test"], cfg.per_device_eval_batch_size,
                                      with_base=True, chat=chat, max_new_tokens=cfg.eval_max_new_tokens)
    info = student_info(cfg, crit, base_model, synthetic, targets, chat, students_root=out_root,
                        box_style=datasets_box_style(data_dir))
    _save_student(trainer, processor, cfg, info, metrics, data_dir, out, run_dir)
    return TrainResult(crit, out, metrics)


def _read_frames(data_dir: Path, crit: str) -> dict:
    """The criterion's dataset splits present in ``data_dir``; train and val must hold rows."""
    frames = {s: read_split(data_dir, crit, s) for s in SPLIT_FILES if split_path(data_dir, crit, s).is_file()}
    for need in ("train", "val"):
        if need not in frames or frames[need].empty:
            raise FileNotFoundError(f"{split_path(data_dir, crit, need)}: missing or empty; the student needs it")
    return frames


def _load_base(base_model: str, cfg: TrainConfig):
    """(processor, the base with fresh LoRA adapters, the adapted module names)."""
    import torch

    from scenefit.models.loading import load_model, load_processor
    from scenefit.train.lora import adapted_modules, apply_lora

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
    return processor, model, targets


def _build_trainer(model, processor, args, cfg: TrainConfig, frames: dict, val_rows, data_dir: Path, crit: str,
                   out: Path, chat: StudentChat, extra_callbacks: Optional[list]):
    """(the StudentTrainer over the example sets and collator, the distillation summary or None)."""
    from transformers import EarlyStoppingCallback

    train_set = StudentExamples(frames["train"], processor, cfg.max_seq_length, cfg.cache_examples, chat, cfg.truncation)
    val_set = StudentExamples(val_rows, processor, cfg.max_seq_length, cfg.cache_examples, chat, cfg.truncation)
    collator = PackedCollator(model) if cfg.packing else AnswerOnlyCollator(processor.tokenizer.pad_token_id)
    distill_summary = distill_ids = None
    if cfg.distill.enabled:  # weight 0 wraps nothing: today's training exactly
        from scenefit.train.distill import prepare

        sets, collator, distill_ids, distill_summary = prepare(
            cfg.distill, processor, {"train": train_set, "val": val_set}, {"train": frames["train"], "val": val_rows},
            collator, cfg.packing, {s: split_path(data_dir, crit, s) for s in ("train", "val")}, chat.answer_format)
        train_set, val_set = sets["train"], sets["val"]
        skipped = distill_summary["rows"]["train"]["skipped_null"]
        if skipped:
            print(f"warning: {crit}: {skipped} of {len(frames['train'])} training rows have no {cfg.distill.column}; "
                  "the KL term is skipped for them (cross-entropy only)", file=sys.stderr)
    JsonlLogCallback, StudentTrainer = _trainer_classes()
    callbacks = [JsonlLogCallback(out / "log.jsonl")]
    if cfg.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(cfg.early_stopping_patience, cfg.early_stopping_threshold))
    trainer = StudentTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set,
        data_collator=collator,
        callbacks=callbacks + list(extra_callbacks or []),
        decision_rows=val_rows.to_dict("records"),
        scoring_processor=processor,
        scoring_batch_size=cfg.per_device_eval_batch_size,
        chat=chat,
        max_new_tokens=cfg.eval_max_new_tokens,
    )
    if distill_summary is not None:
        trainer.distill, trainer.distill_token_ids = cfg.distill, distill_ids
    if trainer.is_world_process_zero():
        sharding = sharding_fallback_warning(trainer.accelerator.distributed_type)
        if sharding:
            print(f"warning: {sharding}", file=sys.stderr)
    return trainer, distill_summary


def _train_or_resume(trainer, cfg: TrainConfig, run_dir: Path, out: Path, crit: str):
    """Resume from the newest complete checkpoint (incomplete ones removed), finish a run whose
    last checkpoint is its end, or train; returns (the scan, the train metrics, wall seconds)."""
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
    started = time.time()
    if scan.resume_from is not None and training_finished(scan.state, cfg.max_steps):
        # The kill came after the last checkpoint: Trainer.train would run one step past the end.
        return scan, _finish_from_checkpoint(trainer, scan), time.time() - started
    # The Trainer prints its log dicts to stdout; the CLI keeps stdout for its JSON summary.
    with contextlib.redirect_stdout(sys.stderr):
        train_output = trainer.train(resume_from_checkpoint=None if scan.resume_from is None else str(scan.resume_from))
    train_metrics = dict(train_output.metrics)
    if scan.resume_from is not None:
        # The Trainer's train_loss averages only the steps of this call.
        train_metrics["train_loss"] = whole_run_train_loss(
            trainer.state.log_history, scan.resumed_step, train_metrics.get("train_loss"),
            trainer.state.global_step - scan.resumed_step)
    return scan, train_metrics, time.time() - started


def _save_student(trainer, processor, cfg: TrainConfig, info, metrics: dict, data_dir: Path, out: Path,
                  run_dir: Path) -> None:
    """The student folder: adapter, processor, config, dataset manifest, metadata, card, and
    metrics.json last — its presence marks the student complete."""
    from scenefit.models.loading import save_student_processor
    from scenefit.train.card import model_card

    trainer.save_model(str(out))  # collective under ZeRO-3/FSDP; the main process writes the adapter
    if trainer.is_world_process_zero():
        (out / "training_args.bin").unlink(missing_ok=True)  # a pickle; config.yaml is the readable record
        save_student_processor(processor, out)
        dump_yaml(cfg, out / "config.yaml")
        write_json(dataset_manifest(data_dir, info.criterion), out / "dataset_manifest.json")
        write_student_meta(info, out)
        atomic_write_text(model_card(info, metrics, cfg), out / "README.md")
        write_json(metrics, out / "metrics.json")  # last: its presence marks the student as complete
        if not cfg.keep_checkpoints:
            for ckpt in run_dir.glob("checkpoint-*"):
                shutil.rmtree(ckpt, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
