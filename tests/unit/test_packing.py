"""Padding-free packing gives the padded batch's logits and losses, sample by sample (fp32, CPU).

    .venv/bin/python -m pytest tests/unit/test_packing.py -q

Samples of different lengths (image sizes, object names, answers) are run once as a right-padded
batch and once packed into one row; a naive packing (positions over the whole row, no per-sample
mask) is the control that shows the comparison can fail. Training with packing:
tests/e2e/test_packing_training.py.
"""

from __future__ import annotations

import pytest

from scenefit.core.config import packaged_configs_dir
from scenefit.core.criteria import Criterion, Label
from scenefit.prompts import student_prompt, student_system_prompt
from scenefit.student.answer import render_student_answer

#: (image size, object name, words in the answer): every sample a different length.
SAMPLES = [((112, 112), "cow", 1), ((56, 112), "traffic light", 7), ((112, 56), "bicycle with a basket", 15)]

@pytest.fixture(scope="module")
def model_and_examples(tiny_model_dir, tmp_path_factory):
    from PIL import Image

    from scenefit.models.loading import load_model, load_processor
    from scenefit.train.data import encode_example

    folder = tmp_path_factory.mktemp("packing")
    processor = load_processor(tiny_model_dir)
    model = load_model(tiny_model_dir, "fp32", "cpu").eval()
    examples = []
    for i, (size, obj, words) in enumerate(SAMPLES):
        path = folder / f"{i}.png"
        Image.new("RGB", size, (40 * i, 180, 60)).save(path)
        label = Label.OUT if i % 2 else Label.IN
        row = {"id": str(i), "image": str(path), "prompt": student_prompt(Criterion.LOCATION).render(obj),
               "system": student_system_prompt(),
               "target": render_student_answer(Criterion.LOCATION, label, " ".join(["grass"] * words))}
        examples.append(encode_example(processor, row, 8192))
    assert len({len(e["input_ids"]) for e in examples}) == len(examples)
    assert len({tuple(e["image_grid_thw"][0].tolist()) for e in examples}) > 1
    return model, processor, examples

def _padded_and_packed(model, processor, examples):
    import torch

    from scenefit.train.data import AnswerOnlyCollator
    from scenefit.train.packing import PackedCollator

    with torch.no_grad():
        padded = model(**AnswerOnlyCollator(processor.tokenizer.pad_token_id)(examples))
        packed = model(**PackedCollator(model)(examples))
    return padded, packed

@pytest.mark.parametrize("attention", ["block_mask", "per_sample_sdpa"])
def test_packed_forward_equals_padded_per_sample(model_and_examples, tiny_model_dir, attention):
    """Both ways of keeping samples apart: transformers' block-diagonal mask over the row, and the
    project's attention that runs sdpa per sample (``use_packed_attention``, what training uses)."""
    import torch

    from scenefit.models.loading import load_model
    from scenefit.train.packing import per_sample_loss, sample_spans, use_packed_attention

    model, processor, examples = model_and_examples
    if attention == "per_sample_sdpa":
        model = load_model(tiny_model_dir, "fp32", "cpu").eval()  # a copy: the fixture's keeps plain sdpa
        tower = model.config.vision_config._attn_implementation
        use_packed_attention(model)
        # the text model switches; the vision tower keeps load_model's one-call window attention
        assert model.config.text_config._attn_implementation == "scenefit_packed_sdpa"
        assert model.config.vision_config._attn_implementation == tower != "scenefit_packed_sdpa"
    padded, packed = _padded_and_packed(model, processor, examples)
    assert packed.logits.shape[:2] == (1, sum(len(e["input_ids"]) for e in examples))
    for i, (start, end) in enumerate(sample_spans(examples)):
        n = end - start
        assert torch.allclose(packed.logits[0, start:end], padded.logits[i, :n], atol=1e-4), f"sample {i}"
        labels = examples[i]["labels"]
        assert per_sample_loss(packed.logits[0, start:end], labels) == pytest.approx(
            per_sample_loss(padded.logits[i, :n], labels), rel=1e-5)
    # The batch loss (mean over every labelled token) is the padded batch's too.
    assert float(packed.loss) == pytest.approx(float(padded.loss), rel=1e-5)

def test_naive_packing_breaks_the_later_samples(model_and_examples):
    """The control: one row whose positions run on across samples and whose samples see each other."""
    import torch

    from scenefit.train.packing import PackedCollator, sample_spans

    model, processor, examples = model_and_examples
    padded, _ = _padded_and_packed(model, processor, examples)
    naive = PackedCollator(model)(examples)
    del naive["position_ids"]  # the model then derives one set of positions for the whole row
    with torch.no_grad():
        logits = model(**naive).logits
    (s0, e0), (s1, e1) = sample_spans(examples)[:2]
    assert torch.allclose(logits[0, s0:e0], padded.logits[0, : e0 - s0], atol=1e-4)  # the first is unaffected
    assert not torch.allclose(logits[0, s1:e1], padded.logits[1, : e1 - s1], atol=1e-2)

def test_packing_needs_a_qwen25vl_model():
    import torch

    from scenefit.train.packing import PackedCollator

    with pytest.raises(TypeError, match="get_rope_index"):
        PackedCollator(torch.nn.Linear(2, 2))

def test_packing_is_off_where_the_authors_ran_without_it(repo_root):
    """benchmarks/packing.py measured a win at the paper recipe's image budget, none on the demo's shape;
    the authors' students trained without packing, so paper.yaml names it as an option (docs/paper-setup.md)."""
    from scenefit.core.config import resolve

    assert resolve("train", packaged_configs_dir() / "paper.yaml").packing is False
    assert resolve("train", packaged_configs_dir() / "demo.yaml").packing is False
    assert resolve("train").packing is False

