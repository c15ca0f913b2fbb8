"""Section ``train`` of a project config: the student's LoRA recipe and the trainer settings.

    scenefit train --criterion all --data runs/demo/datasets --model runs/demo/model \
        --out runs/demo/students --config demo

The packaged ``paper`` config carries the paper's recipe (LoRA r=256/alpha=512/dropout 0.1 on the
language model's q/k/v/o, AdamW 2e-4, warmup 10 %, 3 epochs, effective batch 64 on 4 GPUs,
eval every 125 steps, best by eval loss, patience 3, bf16); ``demo`` a tiny CPU run.
"""

from __future__ import annotations

import re
from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from scenefit.core.config import StageConfig
from scenefit.core.criteria import CRITERIA, criteria_list
from scenefit.train.distill import DistillSettings

#: Metrics the trainer can pick the best checkpoint by (names as the Trainer logs them).
# name -> greater is better
BEST_METRICS = {"eval_loss": False, "eval_decision_accuracy": True, "eval_decision_balanced_accuracy": True}


class LoraSettings(StageConfig):
    """Sub-section ``train.lora``: which layers get adapters, and their size."""

    r: int = Field(32, ge=1, description="LoRA rank.")
    alpha: int = Field(64, ge=1, description="LoRA alpha (the update is scaled by alpha / r).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="Projection names to adapt inside the language model's decoder layers "
        "(q_proj k_proj v_proj o_proj gate_proj up_proj down_proj).",
    )
    layers_pattern: str = Field(
        r"(?:.*\.)?language_model\.layers\.\d+\.(?:self_attn|mlp)",
        description="Regex (full match) of the parent module path the targets must sit under; the default "
        "selects the language model's decoder layers only, so the vision tower (which reuses names such as "
        "qkv/proj/gate_proj) is never adapted and vLLM's --lora-modules can load the adapter.",
    )
    modules_to_save: list[str] = Field(
        default_factory=list,
        description="Modules trained in full and saved with the adapter (e.g. lm_head; a random tiny model "
        "needs it). vLLM's multi-LoRA serving cannot load adapters that carry such modules.",
    )

    @field_validator("target_modules")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        bad = [n for n in v if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n)]
        if not v or bad:
            raise ValueError(f"target_modules must be plain module names, got {bad or v}")
        return v

    @field_validator("layers_pattern")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"layers_pattern is not a valid regex: {e}") from None
        return v

    @property
    def target_regex(self) -> str:
        """The PEFT ``target_modules`` regex: the layer path, then one of the target names."""
        return f"{self.layers_pattern}\\.(?:{'|'.join(map(re.escape, self.target_modules))})"


class TrainConfig(StageConfig):
    """Section ``train``: LoRA SFT of one student per criterion."""

    base_model: Optional[str] = Field(
        None, description="Base model: a local folder or a hub id (e.g. Qwen/Qwen2.5-VL-3B-Instruct) (flag: --model or --base)."
    )
    criteria: list[str] = Field(
        default_factory=lambda: [c.value for c in CRITERIA],
        description="Criteria to train students for when --criterion is 'all'.",
    )
    min_pixels: Optional[int] = Field(None, ge=28 * 28, description="Image processor min pixels; null keeps the base's.")
    max_pixels: Optional[int] = Field(None, ge=28 * 28, description="Image processor max pixels; null keeps the base's.")
    max_seq_length: int = Field(
        8192, ge=64,
        description="Longest allowed sequence (image tokens included), checked for every row before training.",
    )
    truncation: bool = Field(
        False,
        description="Rows longer than max_seq_length: false = an error naming them (nothing cut); true = the answer's "
        "end is cut to fit (the authors' max_length truncation), never a prompt or image token, and a row whose "
        "decision line would not fit is left out of training (counted in metrics.json 'length' and on stderr).",
    )
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA adapter settings.")
    distill: DistillSettings = Field(
        default_factory=DistillSettings,
        description="Soft-label distillation: weight x KL(teacher || student) over {In, Out} at the decision token "
        "(scenefit.train.distill); weight 0 trains on the hard labels only.",
    )

    epochs: float = Field(3.0, gt=0, description="Training epochs (ignored when max_steps > 0).")
    max_steps: int = Field(-1, description="Optimizer steps to train; -1 trains for `epochs`.")
    learning_rate: float = Field(2e-4, gt=0, description="Peak AdamW learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of the steps spent warming the learning rate up.")
    lr_scheduler: str = Field("linear", description="Learning-rate schedule after warm-up (linear, cosine, constant_with_warmup…).")
    optimizer: str = Field("adamw_torch", description="transformers optimizer name.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")

    per_device_batch_size: int = Field(4, ge=1, description="Training samples per device per forward pass.")
    gradient_accumulation_steps: int = Field(4, ge=1, description="Forward passes accumulated per optimizer step.")
    num_devices: int = Field(
        4, ge=1,
        description="Devices (processes) the recipe is written for. At launch, when the real world size differs "
        "and effective_batch_size is set, accumulation is recomputed to keep the effective batch.",
    )
    effective_batch_size: Optional[int] = Field(
        64, ge=1, description="Samples per optimizer step; must equal per_device x accumulation x num_devices."
    )
    per_device_eval_batch_size: int = Field(8, ge=1, description="Evaluation samples per device per forward pass.")

    eval_steps: int = Field(125, ge=1, description="Evaluate on the validation split every N optimizer steps.")
    save_steps: Optional[int] = Field(
        None, ge=1, description="Checkpoint every N steps; null = eval_steps (must be a multiple of eval_steps)."
    )
    save_total_limit: Optional[int] = Field(3, ge=1, description="Checkpoints kept (the best one is always kept).")
    logging_steps: int = Field(10, ge=1, description="Log the training loss every N steps.")
    eval_max_new_tokens: int = Field(
        128, ge=8, description="Reasoning-first students only: tokens generated per validation/test answer when "
        "their decision is read from the text (decision-first students are scored in one forward pass)."
    )
    eval_samples: Optional[int] = Field(
        None, ge=1, description="Validation rows used per evaluation (loss and decision accuracy); null = all."
    )
    metric_for_best_model: str = Field(
        "eval_loss", description="Best checkpoint by: eval_loss (lower is better), eval_decision_accuracy or "
        "eval_decision_balanced_accuracy (the mean of the two labels' recalls: the majority class scores 50 %); "
        "a decision the student would not write counts wrong in both."
    )
    early_stopping_patience: Optional[int] = Field(
        3, ge=1, description="Stop after this many evaluations without improvement; null disables early stopping."
    )
    early_stopping_threshold: float = Field(0.0, ge=0, description="Least improvement that counts for early stopping.")

    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="Training precision; auto = bf16 on a CUDA device that has it, else fp32."
    )
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass (saves memory).")
    packing: bool = Field(
        False, description="Pack each batch's samples into one row without padding, each with its own mRoPE "
        "positions and no attention across samples (scenefit.train.packing). Off by default (the demo's samples are all "
        "one length: 0.94x); on in the packaged paper config, whose image budget gives varied lengths (1.14x on CPU, "
        "measured by the project's packing benchmark).",
    )
    seed: int = Field(42, description="Seed of weights init (LoRA), data order and dropout.")
    dataloader_num_workers: int = Field(0, ge=0, description="DataLoader worker processes that encode samples.")
    cache_examples: bool = Field(
        False, description="Keep encoded samples (token ids, pixel values) in memory after their first use; "
        "for small datasets (the demo), not for 20,000 full-size images."
    )
    report_to: list[str] = Field(
        default_factory=lambda: ["tensorboard"], description="Trainer loggers (tensorboard, wandb …; [] for none). "
        "A JSONL log (log.jsonl) is always written."
    )
    resume: bool = Field(True, description="Resume from the latest checkpoint of an interrupted run.")
    jobs: int = Field(
        1, ge=1, le=64,
        description="Students trained at once, each in its own process (with more than one criterion): the CPU "
        "cores are shared out between them (one torch thread each on 2 cores), and with several GPUs each process "
        "gets its own. 1: one student after another in this process. Each student trains exactly as it would "
        "alone (its own seed and data order).",
    )
    keep_checkpoints: bool = Field(True, description="Keep the checkpoints folder after the adapter is saved.")
    score_test: bool = Field(
        True, description="After training, score the test split's decisions with the student and with the bare base."
    )

    @field_validator("criteria")
    @classmethod
    def _criteria(cls, v: list[str]) -> list[str]:
        return criteria_list(v)

    @field_validator("metric_for_best_model")
    @classmethod
    def _metric(cls, v: str) -> str:
        name = v if v.startswith("eval_") else f"eval_{v}"
        if name not in BEST_METRICS:
            raise ValueError(f"metric_for_best_model {v!r}: expected one of {sorted(BEST_METRICS)}")
        return name

    @model_validator(mode="after")
    def _arithmetic(self):
        per_step = self.per_device_batch_size * self.gradient_accumulation_steps * self.num_devices
        if self.effective_batch_size is not None and per_step != self.effective_batch_size:
            raise ValueError(
                f"effective_batch_size {self.effective_batch_size} != per_device_batch_size {self.per_device_batch_size}"
                f" x gradient_accumulation_steps {self.gradient_accumulation_steps} x num_devices {self.num_devices}"
                f" = {per_step}"
            )
        if self.save_steps is not None and self.save_steps % self.eval_steps:
            raise ValueError(f"save_steps {self.save_steps} must be a multiple of eval_steps {self.eval_steps}")
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ValueError("min_pixels must not exceed max_pixels")
        return self

    @property
    def greater_is_better(self) -> bool:
        return BEST_METRICS[self.metric_for_best_model]

    def accumulation_for(self, world_size: int) -> int:
        """Accumulation steps that keep the effective batch on ``world_size`` processes."""
        if self.effective_batch_size is None or world_size == self.num_devices:
            return self.gradient_accumulation_steps
        per_pass = self.per_device_batch_size * world_size
        if self.effective_batch_size % per_pass:
            raise ValueError(
                f"effective_batch_size {self.effective_batch_size} is not a multiple of per_device_batch_size "
                f"{self.per_device_batch_size} x {world_size} processes; set per_device_batch_size or num_devices"
            )
        return self.effective_batch_size // per_pass
