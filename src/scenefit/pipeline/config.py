"""Typed config of `scenefit run` (YAML section ``run``): what the run starts from.

    scenefit run --config demo --out runs/demo

The other sections configure the stages the run calls; this one says where the samples come
from and whether the run builds its own tiny base model (the demo) or trains on
``train.base_model``.
"""

from __future__ import annotations

from typing import Optional

from pydantic import Field

from scenefit.core.config import StageConfig


class RunConfig(StageConfig):
    """What `scenefit run` chains: the data, the base model, the demo's last check."""

    manifest: Optional[str] = Field(
        default=None,
        description="Your samples: a JSONL, CSV or Parquet manifest (columns: `scenefit ingest --help`); a relative "
        "path resolves against the config file's folder (`scenefit run --manifest M` against the current one). "
        "None: the synthetic world of the `world` section (the demo).",
    )
    tiny_base: bool = Field(
        default=False,
        description="Build the tiny Qwen2.5-VL of the `tiny_model` section into RUN/model and train the students on "
        "it (the demo: nothing from a model hub). False: the students' base is train.base_model.",
    )
    serve_check: bool = Field(
        default=False,
        description="Last step: serve the trained students on 127.0.0.1 and classify one test sample over HTTP "
        "(the demo shows the serving path works end to end).",
    )
