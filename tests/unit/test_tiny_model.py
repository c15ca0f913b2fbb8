"""The tiny Qwen2.5-VL: save -> load -> chat template -> generate on a boxed image, and the
images-only processor fix for machines without torchvision."""

from __future__ import annotations

import json

import pytest
from PIL import Image, ImageDraw

from scenefit.models.loading import load_model, load_processor, torchvision_available
from scenefit.student.chat import chat_messages
from scenefit.testbed.tiny_model import SPECIAL_TOKENS, TinyModelConfig


def boxed_image(size=112):
    img = Image.new("RGB", (size, size), (90, 160, 230))
    d = ImageDraw.Draw(img)
    d.rectangle([0, size // 2, size, size], fill=(60, 140, 50))
    d.rectangle([30, 40, 70, 90], outline=(255, 0, 0), width=3)
    return img


def test_folder_loads_and_generates(tiny_model_dir):
    from transformers import Qwen2_5_VLForConditionalGeneration

    proc = load_processor(tiny_model_dir)
    model = load_model(tiny_model_dir, device="cpu")
    assert isinstance(model, Qwen2_5_VLForConditionalGeneration)
    assert model.config.text_config.rope_parameters["rope_theta"] == 10.0
    msgs = chat_messages("Is the cow in context?", system="You judge scenes.")
    text = proc.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nYou judge scenes.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>")
    assert text.endswith("<|im_start|>assistant\n")
    inputs = proc(text=[text], images=[boxed_image()], return_tensors="pt")
    # 112x112 -> 8x8 patches of 14 px -> merged 2x2 -> 16 image tokens
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 16
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    again = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert out.tolist() == again.tolist()  # greedy is deterministic


def test_special_tokens_and_ids(tiny_model_dir):
    proc = load_processor(tiny_model_dir)
    tok = proc.tokenizer
    ids = [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert len(set(ids)) == len(SPECIAL_TOKENS) and None not in ids
    assert ids == sorted(ids)  # appended in Qwen's order
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert cfg["image_token_id"] == tok.convert_tokens_to_ids("<|image_pad|>")
    # each special token encodes as one token, never split into bytes
    for t in SPECIAL_TOKENS:
        assert tok(t, add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids(t)]


def test_answer_span_covers_only_answer(tiny_model_dir):
    from scenefit.train.data import answer_span

    proc = load_processor(tiny_model_dir)
    answer = "Decision: Out-of-context\nSize: The cup is three times taller than the person."
    msgs = chat_messages("How big?", answer=answer)
    out = proc.apply_chat_template(msgs, tokenize=True, return_dict=True, images=[boxed_image()])
    ids = out["input_ids"][0] if isinstance(out["input_ids"][0], list) else out["input_ids"]
    start, end = answer_span(proc.tokenizer, ids)
    assert proc.tokenizer.decode(ids[start:end]) == answer + "<|im_end|>"


def test_tiny_model_carries_the_stock_template(tiny_model_dir):
    """The demo model renders chats with the stock Qwen2.5-VL-Instruct template, so the demo and a
    real base run the same labelling code."""
    from scenefit.testbed.tiny_model import chat_template

    proc = load_processor(tiny_model_dir)
    assert proc.chat_template == chat_template()
    assert "{% generation" not in chat_template() and "add_vision_id" in chat_template()


def test_min_max_pixels_override(tiny_model_dir):
    proc = load_processor(tiny_model_dir, min_pixels=28 * 28, max_pixels=56 * 56)
    inputs = proc(text=["<|vision_start|><|image_pad|><|vision_end|>x"], images=[boxed_image(112)], return_tensors="pt")
    assert tuple(inputs["image_grid_thw"][0].tolist()) == (1, 4, 4)  # 56x56 -> 4x4 patches


def test_seed_determinism(tmp_path):
    from safetensors.torch import load_file

    from scenefit.testbed.tiny_model import build_tiny_model

    a = load_file(build_tiny_model(tmp_path / "a", TinyModelConfig(seed=3, num_layers=1)) / "model.safetensors")
    b = load_file(build_tiny_model(tmp_path / "b", TinyModelConfig(seed=3, num_layers=1)) / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        TinyModelConfig(hidden_size=130, num_heads=4)
    with pytest.raises(ValueError, match="num_kv_heads"):
        TinyModelConfig(num_heads=4, num_kv_heads=3)
    assert sum(TinyModelConfig().mrope_section) == 128 // 4 // 2


def test_folder_is_standard_for_machines_with_torchvision(tiny_model_dir):
    """Saved without torchvision, the folder still names the public processor class and
    carries a video processor config, so AutoProcessor loads it where torchvision exists."""
    pc = json.loads((tiny_model_dir / "processor_config.json").read_text())
    assert pc["processor_class"] == "Qwen2_5_VLProcessor"
    vp = json.loads((tiny_model_dir / "video_preprocessor_config.json").read_text())
    assert vp["video_processor_type"] == "Qwen2VLVideoProcessor" and vp["merge_size"] == 2
    if torchvision_available():  # on such a machine the standard loader must take it
        from transformers import AutoProcessor

        AutoProcessor.from_pretrained(str(tiny_model_dir))


@pytest.mark.skipif(torchvision_available(), reason="checks the images-only path taken without torchvision")
def test_images_only_processor_without_torchvision(tiny_model_dir, tmp_path):
    from scenefit.models.loading import save_processor

    proc = load_processor(tiny_model_dir)
    assert getattr(proc, "video_processor", None) is None
    save_processor(proc, tmp_path / "resaved")  # saving works without torchvision too
    again = load_processor(tmp_path / "resaved")
    assert again.tokenizer.get_vocab() == proc.tokenizer.get_vocab()
