"""Settings of ``scenefit predict`` and of the :class:`~scenefit.predict.Predictor`
(config section ``predict``)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator

from scenefit.core.config import StageConfig
from scenefit.core.criteria import CRITERIA, criteria_list
from scenefit.core.images import DEFAULT_MAX_PIXELS


class PredictConfig(StageConfig):
    """Section ``predict``: which students, on which device, how to batch and explain."""

    students: Optional[str] = Field(
        None,
        description="Folder holding one student folder per criterion (<criterion>/adapter_config.json, "
        "scenefit_student.json, the processor); null = no default, pass --students or --demo.",
    )
    base: Optional[str] = Field(
        None,
        description="Base model (folder or hub id) under the adapters; null = the base_model named in the "
        "students' scenefit_student.json.",
    )
    criteria: list[str] = Field(
        default_factory=lambda: [c.value for c in CRITERIA],
        description="Criteria to judge (location, size, co_occurrence); the fused decision uses those judged.",
    )
    device: Optional[str] = Field(None, description="torch device (cpu, cuda, cuda:1); null = cuda when available, else cpu.")
    dtype: str = Field("auto", description="Weights dtype: auto (bf16 on a CUDA GPU, fp32 on CPU), bf16, fp16 or fp32.")
    batch_size: int = Field(16, ge=1, le=4096, description="Most prompts in one forward pass or one generate call.")
    explain: bool = Field(False, description="Generate each criterion's explanation (slower) instead of only scoring the decision.")
    max_new_tokens: int = Field(
        96, ge=4, le=4096, description="Upper bound on generated tokens per explanation (generation also stops at EOS)."
    )
    force_decision_prefix: bool = Field(
        True,
        description="Explanations continue from the forced answer prefix 'Decision:' (so one prefill serves both "
        "the decision probability and the text); false = generate the whole answer freely.",
    )
    box_width: Optional[int] = Field(
        None, ge=1, le=64,
        description="Width in pixels of the red box drawn on images that are not boxed yet (match ingest); null = "
        "by the image's size, as ingest draws it (scenefit.core.images.box_width_for).",
    )
    box_color: tuple[int, int, int] = Field((255, 0, 0), description="RGB colour of the drawn box (the students are trained on red).")
    max_image_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="Images declaring more pixels are refused before decoding.")
    share_vision: bool = Field(
        True,
        description="Encode each image once and reuse the vision features for all criteria (only when no adapter "
        "touches the vision tower).",
    )

    attn_implementation: Optional[Literal["eager", "sdpa", "flash_attention_2", "flash_attention_3"]] = Field(
        None,
        description="Attention kernels of the loaded model; null = transformers' default (sdpa). Without flash "
        "attention, Qwen2.5-VL's vision tower runs its window attention as a loop of small calls (on an H200 it took "
        "most of the fast path's time in the project's benchmark); flash_attention_2 needs the flash-attn package and a GPU.",
    )

    @field_validator("criteria")
    @classmethod
    def _criteria(cls, v: list[str]) -> list[str]:
        return criteria_list(v)
