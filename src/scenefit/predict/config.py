"""Settings of ``scenefit predict`` and of the :class:`~scenefit.predict.Predictor`
(config section ``predict``); the ``engine`` and ``ray_*`` fields choose where a manifest is judged."""

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
        description="Width in pixels of the red box drawn on images that are not boxed yet; null = as the students "
        "were trained (box_style in their scenefit_student.json), else by the image's size as ingest draws it "
        "(scenefit.core.images.box_width_for).",
    )
    box_color: Optional[tuple[int, int, int]] = Field(
        None, description="RGB colour of the drawn box; null = as the students were trained, else red (255, 0, 0).")
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

    # Where the items are judged (scenefit predict --manifest ... --out ...)
    engine: Literal["inprocess", "ray"] = Field(
        "inprocess",
        description="inprocess: this process judges every item; ray: a pool of Ray actors does (needs --manifest, --out "
        "and the `ray` extra), committing shards so a killed run resumes.",
    )
    ray_address: Optional[str] = Field(
        None,
        description="engine ray: the Ray cluster (the address `ray start --head` printed, or auto); null = a local Ray "
        "on this machine (or the Ray this process already joined).",
    )
    ray_actors: int = Field(1, ge=1, description="engine ray: actors, each loading one base + the adapters once.")
    ray_cpus_per_actor: float = Field(1.0, gt=0, description="engine ray: CPUs Ray reserves for each actor (its torch threads).")
    ray_gpus_per_actor: float = Field(0.0, ge=0, description="engine ray: GPUs per actor (1: one actor per GPU; 0.5: two share one).")
    shard_size: int = Field(
        512, ge=1,
        description="engine ray: items per committed shard (a killed run redoes at most the shards in flight).",
    )

    @field_validator("criteria")
    @classmethod
    def _criteria(cls, v: list[str]) -> list[str]:
        return criteria_list(v)
