"""Section ``evaluate`` of the project YAML: what ``scenefit evaluate`` measures and how; how the
students run is the nested ``predict`` settings (the file's ``predict`` section unless overridden).

    scenefit evaluate --students runs/demo/students --data runs/demo/datasets --out runs/demo/report \
        --config demo
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from scenefit.core.config import StageConfig
from scenefit.core.criteria import CRITERIA, criteria_list
from scenefit.predict.config import PredictConfig


class EvaluateConfig(StageConfig):
    """Section ``evaluate``: split, baseline, shortcut test and report settings."""

    criteria: list[str] = Field(
        default_factory=lambda: [c.value for c in CRITERIA],
        description="Criteria to evaluate (location, size, co_occurrence); the fused decision needs all three.",
    )
    split: Literal["train", "val", "test"] = Field(
        default="test", description="Dataset split the students are evaluated on."
    )
    limit: Optional[int] = Field(
        default=None, ge=1, description="Evaluate at most this many rows per criterion (first rows in file order)."
    )
    baseline: bool = Field(
        default=True, description="Also run the untrained base model (no adapter) as the baseline."
    )
    predict: PredictConfig = Field(
        default_factory=PredictConfig,
        description="How the students and the baseline run: the predict section's settings (base, device, dtype, "
        "batch_size, max_new_tokens, box drawing, attention kernels, ...). Keys left out here come from the file's "
        "own `predict` section, so a setting is written once; set one here to differ for evaluate only.",
    )
    explain: bool = Field(
        default=True,
        description="Generate the analysis sentence (needed for the reasoning metrics); false scores the "
        "decision only (fast path).",
    )
    baseline_explain: Optional[bool] = Field(
        default=None,
        description="Generate the baseline's sentences too (null = as explain); false scores the untrained base's "
        "decision logits only — on CPU a random base rambles to max_new_tokens.",
    )
    shortcut_explain: bool = Field(
        default=False,
        description="Generate sentences in the shortcut test too; by default it scores decisions only, which is "
        "all the test reads.",
    )
    originals: Optional[str] = Field(
        default=None,
        description="Manifest of unmodified images (one in-context object boxed) for the shortcut test; default: "
        "the synthetic world's originals/manifest.parquet when it can be found from the datasets.",
    )
    originals_limit: Optional[int] = Field(
        default=None, ge=1, description="Use at most this many originals in the shortcut test."
    )
    shortcut_box_width: Optional[int] = Field(
        default=None, ge=1,
        description="Width in pixels of the red box drawn on the shortcut test's unmodified images (the authors "
        "draw 3); null = as predict draws boxes.",
    )
    shortcut_threshold: float = Field(
        default=0.95,
        ge=0.0,
        le=1.0,
        description="A student is called robust in the shortcut test when at least this share of its answers on "
        "unmodified images is in-context.",
    )
    shortcut_min_recall: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="The shortcut test calls a criterion robust only when its out-of-context recall on the evaluated "
        "split (vs the truth where known) is at least this too: a student that answers In to everything is 100 % "
        "in-context on unmodified images.",
    )
    probe: bool = Field(
        default=False,
        description="Also fit a linear probe (logistic regression) on the frozen base's features with the training "
        "split's labels and score it on the evaluated split: what the base's features carry before any student "
        "(scenefit.evaluate.probe; one forward pass over the train and evaluated rows).",
    )
    probe_seed: int = Field(default=0, description="Seed of the probe's cross-validation folds.")
    calibration_bins: int = Field(default=10, ge=2, le=50, description="Bins of the reliability (calibration) plot.")
    gallery_size: int = Field(default=12, ge=0, le=200, description="Worst errors shown in the report's gallery.")
    top_confusions: int = Field(
        default=10, ge=1, description="Object categories and scenes listed per criterion in the error breakdown."
    )
    thumbnail_px: int = Field(default=192, ge=32, le=1024, description="Longer side of gallery thumbnails, pixels.")

    @model_validator(mode="before")
    @classmethod
    def _predict_keys_live_in_predict(cls, data):
        """An inference setting written at evaluate's top level (the layout before evaluate nested
        the predict settings) is named with where it goes now, instead of a bare 'not a setting'."""
        if isinstance(data, dict):
            moved = sorted(k for k in data if k not in cls.model_fields and k in PredictConfig.model_fields)
            if moved:
                raise ValueError(f"{', '.join(moved)}: inference settings live under evaluate.predict (or the "
                                 f"file's predict section), e.g. --set predict.{moved[0]}=...")
        return data

    @field_validator("criteria")
    @classmethod
    def _criteria(cls, v: list[str]) -> list[str]:
        return criteria_list(v)
