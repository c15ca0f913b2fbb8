"""The Predictor: fast decision path vs generation, explanations, batching, adapter switching,
the fused rule, memory of one base + three adapters, and bad items (trained students:
tests/e2e/test_predict_students.py).

    .venv/bin/python -m pytest tests/unit/test_predict.py -q

Students here are built by scenefit.testbed.toy_students on the tiny base: `trained` (one
adapter trained briefly on all three criteria's prompts, saved per criterion, so answers are
in the real format), `random_head` (demo-like: random LoRA + lm_head copy, three distinct
adapters), `lora_only` (the paper's recipe shape: LoRA on q/k/v/o only).
"""

from __future__ import annotations

import importlib.util
import itertools
import json

import pytest
from PIL import Image

from scenefit.core.criteria import CRITERIA, Criterion, Label, fuse
from scenefit.predict import (
    CriterionResult,
    DecisionTokenError,
    PredictConfig,
    Prediction,
    Predictor,
    StudentError,
    decision_token_ids,
)
from scenefit.predict.predictor import BatchPixels
from scenefit.student.answer import DECISION_PREFIX
from scenefit.testbed.toy_students import build_toy_students, toy_items


@pytest.fixture(scope="module")
def random_head_dir(random_head_students):
    return random_head_students

@pytest.fixture(scope="module")
def lora_only_dir(tiny_model_dir, tmp_path_factory):
    return build_toy_students(tiny_model_dir, tmp_path_factory.mktemp("lora_only"), steps=0, rank=8,
                              modules_to_save=None)

@pytest.fixture(scope="module")
def random_head(random_head_dir):
    return Predictor.from_students(random_head_dir, device="cpu", batch_size=8)

def test_decision_alternatives_start_with_different_tokens(random_head):
    prefix_ids, first = decision_token_ids(random_head.processor)
    tok = random_head.tokenizer
    assert tok.decode(prefix_ids) == DECISION_PREFIX
    assert first[Label.IN] != first[Label.OUT]
    assert tok.decode([first[Label.IN]]).strip().lower().startswith("in")
    assert tok.decode([first[Label.OUT]]).strip().lower().startswith("out")

def test_same_first_token_is_a_clear_error(random_head, monkeypatch):
    import scenefit.student.decision as pred_mod

    monkeypatch.setattr(pred_mod, "decision_continuations",
                        lambda: {Label.IN: " the object fits", Label.OUT: " the object does not fit"})
    with pytest.raises(DecisionTokenError, match="same token"):
        decision_token_ids(random_head.processor)

def test_disagreement_is_reported_not_hidden():
    # one decision (the logits'), the generated text's own label beside it
    r = CriterionResult(Criterion.SIZE, Label.IN, 0.7, 0.3, Label.IN, "It is huge.", "Decision: Out-of-context\nSize: It is huge.",
                        Label.OUT, "ok")
    p = Prediction("x", {Criterion.SIZE: r})
    assert r.agrees_with_fast is False and p.disagreements == [Criterion.SIZE]
    assert p.to_record()["size_agrees_with_fast"] is False and p.to_record()["size_text_label"] == "Out-of-context"
    assert p.to_json()["criteria"]["size"] == {"label": "In-context", "probability": 0.7, "decision": "logits",
                                               "analysis": "It is huge.", "analysis_status": "ok",
                                               "text_label": "Out-of-context", "text_agrees": False}
    unread = CriterionResult(Criterion.SIZE, Label.IN, 0.7, 0.3, Label.IN, None, "Decision: In-context", Label.IN, "no_analysis")
    assert unread.to_json()["analysis"] is None and unread.to_json()["analysis_status"] == "no_analysis"
    fast = CriterionResult(Criterion.SIZE, Label.IN, 0.7, 0.3, Label.IN)
    assert fast.to_json()["analysis_status"] == "not_requested" and "text_agrees" not in fast.to_json()

def test_batch_size_and_vision_sharing_do_not_change_results(random_head_dir, random_head):
    items, _ = toy_items(10, seed=3)
    ref = random_head.predict(items)
    one = Predictor.from_students(random_head_dir, device="cpu",
                                  config=PredictConfig(batch_size=1, share_vision=False))
    assert random_head.share_vision and not one.share_vision
    single = one.predict(items)
    for a, b in zip(ref, single):
        for c in CRITERIA:
            assert a.criteria[c].p_out == pytest.approx(b.criteria[c].p_out, abs=1e-4)
            assert a.criteria[c].label is b.criteria[c].label

def test_images_preprocessed_once_give_the_processors_own_inputs(random_head):
    """Later criteria of a batch reuse the first criterion's image tensors; what they feed the
    model must be exactly what the processor itself would give (placeholders, padding, types)."""
    import torch

    sizes = [(112, 84), (200, 140), (56, 56)]  # different image-token counts in one batch
    images = [Image.new("RGB", s, (40 * i, 90, 160)) for i, s in enumerate(sizes)]
    objects = ["cow", "fire hydrant", "a very long object name here"]
    pixels = BatchPixels()
    for n, crit in enumerate(CRITERIA):
        texts = [random_head.prompt_text(crit, o) + DECISION_PREFIX for o in objects]
        reused = random_head._encode(texts, images, pixels)
        direct = random_head.processor(text=texts, images=images, padding=True, return_tensors="pt")
        assert set(reused) == set(direct), crit
        for key, value in direct.items():
            assert torch.equal(reused[key].cpu(), value), (crit, key)
        if n:  # the very tensors kept from the first criterion, not a second preprocessing
            assert reused["pixel_values"] is pixels.tensors["pixel_values"]
    with pytest.raises(ValueError, match="2 prompts for the 3 images"):
        random_head._encode(texts[:2], images[:2], pixels)

def test_attention_kernels_are_chosen_by_the_config(random_head_dir, random_head):
    items, _ = toy_items(4, seed=8)
    eager = Predictor.from_students(random_head_dir, device="cpu", config=PredictConfig(attn_implementation="eager"))
    assert eager.model.config._attn_implementation == "eager"
    assert eager.model.config.vision_config._attn_implementation == "eager"
    assert random_head.model.config._attn_implementation != "eager"
    for a, b in zip(random_head.predict(items), eager.predict(items)):
        for c in CRITERIA:
            assert a.criteria[c].p_out == pytest.approx(b.criteria[c].p_out, abs=1e-4)
    with pytest.raises(ValueError, match="attn_implementation"):
        PredictConfig(attn_implementation="fastest")
    if importlib.util.find_spec("flash_attn") is None:  # a clear error, not transformers' ImportError
        with pytest.raises(ValueError, match="attn_implementation=flash_attention_2 cannot be used here"):
            Predictor.from_students(random_head_dir, device="cpu", config=PredictConfig(attn_implementation="flash_attention_2"))

def test_each_criterion_uses_its_own_adapter(random_head_dir, random_head):
    items, _ = toy_items(6, seed=4)
    all_three = random_head.predict(items)
    size_only = Predictor.from_students({"size": random_head_dir / "size"}, device="cpu", criteria=["size"])
    assert size_only.criteria == (Criterion.SIZE,)
    alone = size_only.predict(items)
    base = random_head.predict(items, use_adapters=False)
    for a, s, b in zip(all_three, alone, base):
        assert a.criteria[Criterion.SIZE].p_out == pytest.approx(s.criteria[Criterion.SIZE].p_out, abs=1e-5)
        assert set(s.criteria) == {Criterion.SIZE}
        # distinct random adapters give distinct scores, and differ from the bare base
        assert a.criteria[Criterion.SIZE].p_out != pytest.approx(a.criteria[Criterion.LOCATION].p_out, abs=1e-4)
        assert a.criteria[Criterion.SIZE].p_out != pytest.approx(b.criteria[Criterion.SIZE].p_out, abs=1e-4)
    narrowed = random_head.predict(items[:2], criteria=["co_occurrence"])
    assert set(narrowed[0].to_json()["criteria"]) == {"co_occurrence"}

def test_baseline_has_no_adapters(tiny_model_dir):
    items, _ = toy_items(3, seed=5)
    base = Predictor.baseline(str(tiny_model_dir), device="cpu")
    assert base.is_baseline and base.info()["adapters"] == {}
    out = base.predict(items)
    assert all(set(p.to_json()["criteria"]) == {c.value for c in CRITERIA} for p in out)

def test_final_is_out_when_any_criterion_is_out(random_head):
    for labels in itertools.product((Label.IN, Label.OUT), repeat=3):
        p = Prediction("x", {c: CriterionResult(c, lab, 0.9, 0.9 if lab.is_out else 0.1, lab)
                             for c, lab in zip(CRITERIA, labels)})
        assert p.final is (Label.OUT if Label.OUT in labels else Label.IN)
        assert p.to_json()["final"] == p.final.value
    items, _ = toy_items(8, seed=6)
    for p in random_head.predict(items):
        assert p.final is fuse(r.label for r in p.criteria.values())

def test_json_shape(random_head):
    items, _ = toy_items(1, seed=8)
    doc = random_head.predict(items)[0].to_json()
    assert set(doc) == {"criteria", "final"}
    assert list(doc["criteria"]) == ["location", "size", "co_occurrence"]
    for v in doc["criteria"].values():
        assert set(v) == {"label", "probability", "decision", "analysis", "analysis_status"}
        assert v["label"] in ("In-context", "Out-of-context") and 0.5 <= v["probability"] <= 1 and v["analysis"] is None
        assert v["decision"] == "logits" and v["analysis_status"] == "not_requested"
    explained = random_head.predict(items, explain=True)[0].to_json()
    for v in explained["criteria"].values():  # the same one decision, the text's own label beside it
        assert v["decision"] == "logits" and 0.5 <= v["probability"] <= 1
        assert v["analysis_status"] == "ok" if v["analysis"] else v["analysis_status"] not in ("ok", "not_requested")
        assert v["text_agrees"] is (v["text_label"] == v["label"])
    assert doc["final"] in ("In-context", "Out-of-context")
    json.dumps(doc)

def _weight_bytes(students_dir, criteria) -> int:
    return Predictor.from_students(students_dir, device="cpu", criteria=criteria).weight_bytes()

def test_three_adapters_share_one_base(tiny_model_dir, lora_only_dir, random_head_dir):
    """Measured as the bytes of every parameter and buffer of the loaded module tree, each
    storage counted once — the weights' resident size, free of the allocator and interpreter
    noise that dominates an RSS delta for a 3 MB model (benchmarks/memory.py measures RSS on a
    larger model)."""
    from scenefit.models.loading import load_model
    from scenefit.predict import module_bytes

    base = module_bytes(load_model(tiny_model_dir, dtype="fp32", device="cpu"))
    # The paper's recipe (LoRA on q/k/v/o, no modules_to_save): within 1.15x of one student.
    one, three = _weight_bytes(lora_only_dir, ["location"]), _weight_bytes(lora_only_dir, None)
    assert three <= 1.15 * one, f"three LoRA students take {three / one:.3f}x one student"
    assert three < 0.5 * 3 * one  # three separate models would be ~3x
    # Demo-like students carry a trained lm_head copy each: no 1.15x bound is possible when the head is
    # 13% of the tiny base, but the base must still be there once — three = base + 3 x adapter.
    one_h, three_h = _weight_bytes(random_head_dir, ["location"]), _weight_bytes(random_head_dir, None)
    adapter = one_h - base
    assert adapter > 0
    assert three_h == pytest.approx(base + 3 * adapter, rel=0.01)
    assert three_h < 0.5 * 3 * one_h

def test_bad_items_are_reported_and_the_rest_goes_on(random_head, tmp_path):
    good = Image.new("RGB", (100, 80), (0, 150, 0))
    good_path = tmp_path / "ok.png"
    good.save(good_path)
    boxed_path = tmp_path / "boxed.png"
    good.save(boxed_path)
    (tmp_path / "text.png").write_text("not an image")
    items = [
        (good_path, "cow", (10, 10, 40, 50)),
        (tmp_path / "missing.png", "cow", (10, 10, 40, 50)),
        (good_path, "cow", (500, 500, 600, 600)),
        (good_path, "", (10, 10, 40, 50)),
        (tmp_path / "text.png", "cow", (10, 10, 40, 50)),
        (good_path, "cow", None),
        (good_path, "cow", "1,2,3"),
        (boxed_path, "cow", None, True),
        "nonsense",
        {"image": good, "object": "dog", "box": [0, 0, 50, 50], "id": "pil"},
        (good_path, "cow", "nan,0,10,10"),      # used to pass parsing and crash the whole batch
        (good_path, "cow", (80, 60, 200, 160)),  # 9 % on the 100x80 image: refused, not clipped to a sliver
        (good_path, "cow", (80, 60, 100, 95)),   # a small overshoot (57 % on the image): clipped and judged
    ]
    out = random_head.predict(items)
    assert len(out) == len(items)
    codes = [p.error["code"] if p.error else None for p in out]
    assert codes == [None, "not_found", "box_outside", "missing_object", "not_image", "missing_box", "bad_box", None,
                     "bad_item", None, "bad_box", "box_outside", None]
    assert "not a finite number" in out[10].error["message"] and "mostly outside" in out[11].error["message"]
    assert "missing.png" in out[1].error["message"] and out[9].id == "pil"
    assert out[1].to_json() == {"id": out[1].id, **out[1].error}  # the one error-row shape
    assert out[0].final is not None and out[7].final is not None

def test_missing_student_and_wrong_prefix_are_clear_errors(random_head_dir, tmp_path):
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(random_head_dir / "location", partial / "location")
    with pytest.raises(StudentError, match="size, co_occurrence"):
        Predictor.from_students(partial, device="cpu")
    meta = json.loads((partial / "location" / "scenefit_student.json").read_text())
    meta["decision_prefix"] = "Verdict:"
    (partial / "location" / "scenefit_student.json").write_text(json.dumps(meta))
    with pytest.raises(StudentError, match="Verdict:"):
        Predictor.from_students(partial, device="cpu", criteria=["location"])

