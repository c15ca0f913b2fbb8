"""LoRA on the language model only: target modules are chosen by their full module path.

Qwen2.5-VL's vision tower reuses projection names (``qkv``, ``proj``, ``gate_proj``…), so a
bare name list would adapt it too. The PEFT ``target_modules`` here is a regex over the full
path (``model.language_model.layers.3.self_attn.q_proj``), which keeps adapters loadable by
vLLM's ``--lora-modules`` (it serves language-model LoRA only).
"""

from __future__ import annotations

import re
from typing import Iterable

from scenefit.train.config import LoraSettings

#: Path fragments of vision modules; a test and :func:`apply_lora` check none is adapted.
VISION_MARKERS = ("visual", "vision_tower", "vision_model", "merger")


def lora_config(settings: LoraSettings):
    from peft import LoraConfig, TaskType

    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_regex,
        modules_to_save=list(settings.modules_to_save) or None,
        bias="none",
        task_type=TaskType.CAUSAL_LM,
    )


def matching_modules(model, settings: LoraSettings) -> list[str]:
    """Full names of the linear modules the adapter will wrap (before wrapping)."""
    import torch

    pattern = re.compile(settings.target_regex)
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and pattern.fullmatch(n)]


def adapted_modules(peft_model) -> list[str]:
    """Names (in the base model's namespace) of modules that carry LoRA weights."""
    from peft.tuners.lora import LoraLayer

    prefix = "base_model.model."
    return [n.removeprefix(prefix) for n, m in peft_model.named_modules() if isinstance(m, LoraLayer)]


def vision_modules(names: Iterable[str]) -> list[str]:
    return [n for n in names if any(f".{v}." in f".{n}." or n.startswith(f"{v}.") for v in VISION_MARKERS)]


def apply_lora(model, settings: LoraSettings):
    """Wrap ``model`` with a LoRA adapter; refuse targets that miss or touch the vision tower."""
    from peft import get_peft_model

    targets = matching_modules(model, settings)
    if not targets:
        raise ValueError(
            f"no module of the base model matches the LoRA targets {settings.target_regex!r}; "
            "check lora.target_modules and lora.layers_pattern"
        )
    bad = vision_modules(targets)
    if bad:
        raise ValueError(f"LoRA targets would adapt vision modules ({bad[:3]}…); narrow lora.layers_pattern")
    peft_model = get_peft_model(model, lora_config(settings))
    return peft_model
