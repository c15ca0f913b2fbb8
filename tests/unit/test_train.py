"""Student training pieces without a training run: config, LoRA targets, answer-only labels,
the decision prefix, the collator, the accelerate configs and the CLI help.

    .venv/bin/python -m pytest tests/unit/test_train.py -q
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from scenefit.core.config import load_project, packaged_configs_dir, resolve
from scenefit.core.criteria import Criterion, Label
from scenefit.student.answer import DECISION_PREFIX, render_student_answer
from scenefit.train.config import LoraSettings, TrainConfig

REPO = Path(__file__).resolve().parents[2]
ACCELERATE_DIR = packaged_configs_dir() / "accelerate"


# --- config ---------------------------------------------------------------------------------

def test_effective_batch_arithmetic_is_checked():
    TrainConfig(per_device_batch_size=4, gradient_accumulation_steps=4, num_devices=4, effective_batch_size=64)
    with pytest.raises(ValueError, match="effective_batch_size 64"):
        TrainConfig(per_device_batch_size=4, gradient_accumulation_steps=2, num_devices=4, effective_batch_size=64)
    # No declared effective batch: any combination is fine.
    TrainConfig(per_device_batch_size=3, gradient_accumulation_steps=5, num_devices=1, effective_batch_size=None)


def test_accumulation_is_recomputed_for_another_world_size():
    cfg = TrainConfig(per_device_batch_size=4, gradient_accumulation_steps=4, num_devices=4, effective_batch_size=64)
    assert cfg.accumulation_for(4) == 4
    assert cfg.accumulation_for(8) == 2
    assert cfg.accumulation_for(1) == 16
    with pytest.raises(ValueError, match="not a multiple"):
        cfg.accumulation_for(3)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="multiple of eval_steps"):
        TrainConfig(eval_steps=100, save_steps=150)
    with pytest.raises(ValueError, match="metric_for_best_model"):
        TrainConfig(metric_for_best_model="f1")
    assert TrainConfig(metric_for_best_model="decision_accuracy").metric_for_best_model == "eval_decision_accuracy"
    balanced = TrainConfig(metric_for_best_model="decision_balanced_accuracy")
    assert balanced.metric_for_best_model == "eval_decision_balanced_accuracy" and balanced.greater_is_better
    assert TrainConfig(metric_for_best_model="decision_accuracy").greater_is_better
    assert not TrainConfig().greater_is_better
    with pytest.raises(ValueError):
        TrainConfig(criteria=["colour"])
    with pytest.raises(ValueError, match="plain module names"):
        LoraSettings(target_modules=["q_proj|visual"])
    with pytest.raises(ValueError, match="regex"):
        LoraSettings(layers_pattern="(")
    with pytest.raises(ValueError):
        TrainConfig(unknown_key=1)


def test_paper_config_is_the_papers_recipe():
    cfg = resolve("train", packaged_configs_dir() / "paper.yaml")
    assert cfg.base_model == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (256, 512, 0.1)
    assert sorted(cfg.lora.target_modules) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert cfg.lora.modules_to_save == []
    assert cfg.learning_rate == 2e-4 and cfg.warmup_ratio == 0.1 and cfg.epochs == 3
    assert cfg.optimizer.startswith("adamw")
    assert cfg.per_device_batch_size * cfg.gradient_accumulation_steps * cfg.num_devices == 64 == cfg.effective_batch_size
    assert cfg.num_devices == 4
    assert cfg.eval_steps == 125 and cfg.metric_for_best_model == "eval_loss" and cfg.early_stopping_patience == 3
    assert cfg.early_stopping_threshold == 0.001  # the authors' code
    assert cfg.precision == "bf16"
    # the authors balance each criterion's labels 1:1: each criterion's own 1:1 draw per split
    datasets = resolve("datasets", packaged_configs_dir() / "paper.yaml")
    assert datasets.rebalance == [] and datasets.counts.model_dump() == {"train": 20000, "val": 2000, "test": 2000}


def test_demo_and_paper_configs_validate():
    for name in ("demo.yaml", "paper.yaml"):
        sections = load_project(packaged_configs_dir() / name)
        assert "train" in sections, name


# --- LoRA targets -----------------------------------------------------------------------------

def _tiny_model(tiny_model_dir):
    from scenefit.models.loading import load_model

    return load_model(tiny_model_dir, "fp32", "cpu")


def test_lora_adapts_language_model_projections_only(tiny_model_dir):
    from scenefit.train.lora import adapted_modules, apply_lora, vision_modules

    model = _tiny_model(tiny_model_dir)
    names = [n for n, _ in model.named_modules()]
    # The vision tower reuses projection names: a name-only selection would catch it.
    assert any(n.startswith("model.visual.") and n.endswith(("qkv", "proj", "gate_proj")) for n in names)
    settings = LoraSettings(target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                            modules_to_save=["lm_head"])
    peft_model = apply_lora(model, settings)
    adapted = adapted_modules(peft_model)
    layers = model.config.text_config.num_hidden_layers
    assert len(adapted) == 7 * layers
    assert vision_modules(adapted) == []
    assert all(".language_model.layers." in n for n in adapted)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert not any("visual" in n for n in trainable)
    assert any("lm_head" in n for n in trainable)


def test_lora_refuses_targets_that_match_nothing(tiny_model_dir):
    from scenefit.train.lora import apply_lora

    with pytest.raises(ValueError, match="no module of the base model matches"):
        apply_lora(_tiny_model(tiny_model_dir), LoraSettings(target_modules=["qkv"]))


def test_lora_refuses_a_pattern_that_reaches_the_vision_tower(tiny_model_dir):
    from scenefit.train.lora import apply_lora

    with pytest.raises(ValueError, match="vision modules"):
        apply_lora(_tiny_model(tiny_model_dir), LoraSettings(target_modules=["qkv"], layers_pattern=r".*blocks\.\d+\.attn"))


# --- data: answer-only labels, no truncation, the decision prefix ------------------------------

def _row(image: Path, label: Label = Label.OUT, rid: str = "s1") -> dict:
    from scenefit.prompts import student_prompt, student_system_prompt

    crit = Criterion.LOCATION
    return {
        "id": rid, "image": str(image), "prompt": student_prompt(crit).render("cow"),
        "system": student_system_prompt(), "target": render_student_answer(crit, label, "The cow floats in the sky."),
        "label": label.value, "criterion": crit.value,
    }


@pytest.fixture(scope="module")
def image_path(tmp_path_factory) -> Path:
    from PIL import Image, ImageDraw

    p = tmp_path_factory.mktemp("img") / "a.png"
    im = Image.new("RGB", (112, 112), (120, 200, 255))
    ImageDraw.Draw(im).rectangle((20, 10, 60, 40), outline=(255, 0, 0), width=2)
    im.save(p)
    return p


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    from scenefit.models.loading import load_processor

    return load_processor(tiny_model_dir)


def test_labels_cover_exactly_the_answer_and_im_end(processor, image_path):
    from scenefit.train.data import IGNORE_INDEX, encode_example

    row = _row(image_path)
    enc = encode_example(processor, row, max_seq_length=4096)
    ids, labels = enc["input_ids"].tolist(), enc["labels"].tolist()
    tok = processor.tokenizer
    answer_ids = tok(row["target"], add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]
    kept = [i for i, lab in enumerate(labels) if lab != IGNORE_INDEX]
    # One contiguous span, equal to the input ids there, spelling the answer and its <|im_end|>.
    assert kept == list(range(kept[0], kept[0] + len(kept)))
    assert [ids[i] for i in kept] == [labels[i] for i in kept] == answer_ids
    assert tok.decode([ids[i] for i in kept]) == row["target"] + "<|im_end|>"
    # Everything before it (system, image tokens, prompt, "assistant\n") is masked.
    image_pad = tok.convert_tokens_to_ids("<|image_pad|>")
    assert ids.count(image_pad) == 16 and all(labels[i] == IGNORE_INDEX for i, t in enumerate(ids) if t == image_pad)
    assert tok.decode(ids[: kept[0]]).endswith("<|im_start|>assistant\n")


def test_too_long_sample_is_an_error_naming_it(processor, image_path):
    from scenefit.train.data import DatasetError, encode_example

    with pytest.raises(DatasetError, match="sample 's1'.*exceed max_seq_length 64"):
        encode_example(processor, _row(image_path), max_seq_length=64)


def test_unreadable_image_is_an_error_naming_the_sample(processor, tmp_path):
    from scenefit.train.data import DatasetError, encode_example

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="sample 's1'"):
        encode_example(processor, _row(bad), max_seq_length=4096)


def test_decision_prefix_tokenizes_as_in_training(processor, image_path):
    """The fast path's prompt + 'Decision:' must equal the training sequence up to the label."""
    from scenefit.predict import decision_token_ids
    from scenefit.student.decision import scoring_batch
    from scenefit.train.data import IGNORE_INDEX, encode_example

    for label in Label:
        row = _row(image_path, label)
        enc = encode_example(processor, row, max_seq_length=4096)
        ids, labels = enc["input_ids"].tolist(), enc["labels"].tolist()
        start = next(i for i, lab in enumerate(labels) if lab != IGNORE_INDEX)
        n_prefix = len(processor.tokenizer(DECISION_PREFIX, add_special_tokens=False)["input_ids"])
        scored = scoring_batch(processor, [row])["input_ids"][0].tolist()
        assert scored == ids[: start + n_prefix]
        assert ids[start + n_prefix] == decision_token_ids(processor)[1][label]


def test_collator_pads_right_and_never_labels_padding(processor, image_path):
    from scenefit.train.data import IGNORE_INDEX, AnswerOnlyCollator, encode_example

    short = encode_example(processor, _row(image_path, rid="a"), 4096)
    long_row = _row(image_path, rid="b")
    long_row["target"] += " It hangs far above the grass with nothing holding it up at all."
    longer = encode_example(processor, long_row, 4096)
    pad = processor.tokenizer.pad_token_id
    batch = AnswerOnlyCollator(pad)([short, longer])
    n = len(short["input_ids"])
    assert batch["input_ids"].shape == (2, len(longer["input_ids"]))
    assert (batch["input_ids"][0, n:] == pad).all()
    assert (batch["attention_mask"][0, n:] == 0).all() and (batch["attention_mask"][0, :n] == 1).all()
    assert (batch["labels"][0, n:] == IGNORE_INDEX).all()
    assert batch["pixel_values"].shape[0] == short["pixel_values"].shape[0] + longer["pixel_values"].shape[0]
    assert batch["image_grid_thw"].shape == (2, 3)


def test_read_split_names_missing_columns_and_files(tmp_path):
    from scenefit.train.data import DatasetError, read_split

    with pytest.raises(DatasetError, match="not found"):
        read_split(tmp_path, "location", "train")
    (tmp_path / "location").mkdir()
    pd.DataFrame({"id": ["a"], "image": ["x.png"]}).to_parquet(tmp_path / "location" / "train.parquet")
    with pytest.raises(DatasetError, match=r"missing column\(s\).*prompt"):
        read_split(tmp_path, "location", "train")
    from support.train_data import make_datasets

    data = make_datasets(tmp_path / "ok", sizes=(("train", 4),))
    rows = pd.read_parquet(data / "location" / "train.parquet")
    rows.loc[2, "label"] = "in-context"  # not as `scenefit datasets` writes it
    rows.to_parquet(data / "location" / "train.parquet")
    with pytest.raises(DatasetError, match=r"sample 'train-2' has label 'in-context'"):
        read_split(data, "location", "train")


def test_accuracy_skips_rows_without_reference():
    from scenefit.student.decision import accuracy

    preds = [{"label": "In-context"}, {"label": "Out-of-context"}, {"label": "In-context"}]
    rows = [{"label": "In-context", "truth": None}, {"label": "In-context", "truth": "out-of-context"},
            {"label": "In-context", "truth": float("nan")}]
    assert accuracy(preds, rows) == pytest.approx(2 / 3)
    assert accuracy(preds, rows, "truth") == 1.0
    assert accuracy(preds[:1], rows[:1], "truth") is None


# --- accelerate configs and the CLI -------------------------------------------------------------

ACCELERATE_FILES = ["single_gpu.yaml", "multi_gpu_ddp.yaml", "deepspeed_zero2.yaml", "deepspeed_zero3.yaml", "fsdp.yaml"]


@pytest.mark.parametrize("name", ACCELERATE_FILES)
def test_accelerate_config_parses_with_valid_fields(name):
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.utils import DistributedType

    path = ACCELERATE_DIR / name
    raw = yaml.safe_load(path.read_text())
    cfg = ClusterConfig.from_yaml_file(str(path))  # raises on unknown top-level keys
    assert cfg.mixed_precision == "bf16"
    expected = {"single_gpu.yaml": DistributedType.NO, "multi_gpu_ddp.yaml": DistributedType.MULTI_GPU,
                "deepspeed_zero2.yaml": DistributedType.DEEPSPEED, "deepspeed_zero3.yaml": DistributedType.DEEPSPEED,
                "fsdp.yaml": DistributedType.FSDP}[name]
    assert cfg.distributed_type == expected
    # `accelerate launch` copies each nested key onto its own argument of the same name
    # (fsdp_config.x -> fsdp_x) and silently ignores names it has no argument for.
    from accelerate.commands.launch import launch_command_parser

    launch_args = {a.dest for a in launch_command_parser()._actions}
    for section in ("deepspeed_config", "fsdp_config"):
        for key in raw.get(section, {}):
            arg = key if section != "fsdp_config" or key.startswith("fsdp") else f"fsdp_{key}"
            assert arg in launch_args, f"{name}: {section}.{key} is not an accelerate launch setting"
    if "deepspeed_config" in raw:
        assert raw["deepspeed_config"]["zero_stage"] == (2 if "zero2" in name else 3)
    if "fsdp_config" in raw:
        import transformers.models.qwen2_5_vl.modeling_qwen2_5_vl as qwen

        for cls in raw["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"].split(","):
            assert hasattr(qwen, cls), f"{name}: no layer class {cls}"


def test_every_accelerate_config_is_tested():
    assert sorted(p.name for p in ACCELERATE_DIR.glob("*.yaml")) == sorted(ACCELERATE_FILES)


def test_train_help_lists_the_flags():
    from typer.testing import CliRunner

    from scenefit.cli import app

    out = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    for flag in ("--criterion", "--data", "--model", "--out", "--config", "--resume", "--overwrite", "--set"):
        assert flag in out.output
