"""vLLM and the demo's students (issue 26 item 5): students trained with the demo config's recipe
carry a trained lm_head copy, and export-vllm refuses them saying why and what to do; the same
recipe with LoRA only (train --set lora.modules_to_save=[]) is exported.

    .venv/bin/python -m pytest tests/e2e/test_demo_students_vllm.py -q
"""

from __future__ import annotations

import json
import shlex

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


def test_export_vllm_merge_serves_the_demo_recipe_as_plain_checkpoints(tiny_model_dir, tmp_path):
    """--merge: a student with a trained lm_head copy (the demo's recipe) becomes a plain
    checkpoint whose decision logits are the PEFT student's, its lm_head the trained copy (not
    re-tied to the embeddings), with one `vllm serve` per student and no LoRA flags."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file

    from scenefit.cli.common import load_config
    from scenefit.core.config import find_config
    from scenefit.core.criteria import Criterion
    from scenefit.core.images import draw_box
    from scenefit.models.loading import load_model, load_processor
    from scenefit.serve.vllm_export import export_vllm, probe_items
    from scenefit.student.chat import StudentChat
    from scenefit.student.decision import scoring_batch
    from scenefit.train.trainer import train_student

    demo = load_config("train", find_config("demo"), None)
    short = {"max_steps": 3, "eval_steps": 3, "eval_samples": None, "score_test": False, "per_device_batch_size": 2,
             "effective_batch_size": 2, "early_stopping_patience": None, "cache_examples": False,
             "learning_rate": 1e-2, "distill": demo.distill.model_copy(update={"weight": 0.0})}
    train_student("location", make_datasets(tmp_path), str(tiny_model_dir), tmp_path / "s", demo.model_copy(update=short))
    student = tmp_path / "s" / "location"

    export = export_vllm(tmp_path / "s", tmp_path / "vllm.json", criteria=[Criterion.LOCATION], merge=tmp_path / "merged")
    spec = json.loads((tmp_path / "vllm.json").read_text())
    folder = tmp_path / "merged" / "location"
    assert spec["merged"] == {"scenefit-location": str(folder.resolve())} and spec["enable_lora"] is False
    assert not list((tmp_path / "merged").glob("*.partial"))
    (cmd,) = export.merged_commands.values()
    assert cmd[:3] == ["vllm", "serve", str(folder.resolve())] and "--enable-lora" not in cmd
    assert cmd[cmd.index("--served-model-name") + 1] == "scenefit-location" and "--max-model-len" in cmd
    # the spec names every merged server; no single multi-LoRA command pretends to serve them
    assert spec["merged_commands"] == {"scenefit-location": shlex.join(cmd)} and spec["command_line"] is None

    processor = load_processor(folder, padding_side="left")  # the merged folder carries the processor
    chat = StudentChat.packaged()
    items = probe_items(3)
    rows = [{"id": str(i), **chat.request(Criterion.LOCATION, obj)._asdict()} for i, (_, obj, _) in enumerate(items)]
    images = [draw_box(im, box) for im, _, box in items]

    def logits(model):
        with torch.no_grad():
            return model(**scoring_batch(processor, rows, images, chat), logits_to_keep=1).logits[:, -1, :]

    merged = load_model(folder, dtype="fp32", device="cpu")
    peft = PeftModel.from_pretrained(load_model(str(tiny_model_dir), dtype="fp32", device="cpu"), str(student))
    base = load_model(str(tiny_model_dir), dtype="fp32", device="cpu")
    assert not torch.allclose(logits(base), logits(peft), atol=1e-4)  # the student moved the logits
    assert torch.allclose(logits(merged), logits(peft), atol=1e-4)
    trained_head = next(v for k, v in load_file(str(student / "adapter_model.safetensors")).items() if "lm_head" in k)
    assert torch.equal(merged.get_output_embeddings().weight, trained_head)
    assert not torch.equal(merged.get_output_embeddings().weight, merged.get_input_embeddings().weight)
