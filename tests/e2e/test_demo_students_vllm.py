"""vLLM and the demo's students (issue 26 item 5): students trained with the demo config's recipe
carry a trained lm_head copy, and export-vllm refuses them saying why and what to do; the same
recipe with LoRA only (train --set lora.modules_to_save=[]) is exported.

    .venv/bin/python -m pytest tests/e2e/test_demo_students_vllm.py -q
"""

from __future__ import annotations

import json

import pytest

from support.train_data import make_datasets

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("torch_one_thread")]


def test_export_vllm_on_students_trained_with_the_demo_recipe(tiny_model_dir, tmp_path):
    from scenefit.cli.common import load_config
    from scenefit.core.config import find_config
    from scenefit.core.criteria import Criterion
    from scenefit.serve.vllm_export import VllmExportError, export_vllm
    from scenefit.train.trainer import train_student

    demo = load_config("train", find_config("demo"), None)
    # the demo's recipe (LoRA rank, alpha, targets, modules_to_save), two steps on a small dataset
    short = {"max_steps": 2, "eval_steps": 2, "eval_samples": None, "score_test": False, "per_device_batch_size": 2,
             "effective_batch_size": 2, "early_stopping_patience": None, "cache_examples": False,
             "distill": demo.distill.model_copy(update={"weight": 0.0})}
    data = make_datasets(tmp_path)
    lora_only = demo.lora.model_copy(update={"modules_to_save": []})
    for name, cfg in (("demo", demo.model_copy(update=short)),
                      ("lora_only", demo.model_copy(update={**short, "lora": lora_only}))):
        train_student("location", data, str(tiny_model_dir), tmp_path / name, cfg)

    assert demo.lora.modules_to_save == ["lm_head"]
    with pytest.raises(VllmExportError) as refused:
        export_vllm(tmp_path / "demo", tmp_path / "demo.json", criteria=[Criterion.LOCATION])
    message = str(refused.value)
    for words in ("modules_to_save ['lm_head']", "vLLM's LoRA loader refuses", "scenefit serve",
                  "--set lora.modules_to_save=[]", "keeps the decisions"):
        assert words in message, message
    assert json.loads((tmp_path / "demo" / "location" / "scenefit_student.json").read_text())["vllm_servable"] is False

    # LoRA only: exported; --probe: the trained weights move the decision logits when loaded alone
    export = export_vllm(tmp_path / "lora_only", tmp_path / "lora.json", criteria=[Criterion.LOCATION], probe=2)
    spec = json.loads((tmp_path / "lora.json").read_text())
    assert spec["forced"] is False and spec["problems"] == {} and spec["decision_shifts"]["scenefit-location"] > 0
    assert "--enable-lora" in export.command
