"""The student contract on models: toy students record their format and the notice, a
reasoning-first Predictor reads its decision from the text only, training's scorer and the
Predictor decide alike, the Predictor's chat and an in-process teacher generate alike.

    .venv/bin/python -m pytest tests/e2e/test_student_contract_models.py -q
"""

from __future__ import annotations

import pytest

from scenefit.core.criteria import Criterion, Label
from scenefit.student.answer import AnswerFormat
from scenefit.student.metadata import (
    read_student,
)

DF, RF = AnswerFormat.DECISION_FIRST, AnswerFormat.REASONING_FIRST

@pytest.fixture(scope="module")
def reasoning_students(tiny_model_dir, tmp_path_factory):
    from scenefit.testbed.toy_students import build_toy_students

    return build_toy_students(tiny_model_dir, tmp_path_factory.mktemp("rf_students"), criteria=[Criterion.LOCATION],
                              steps=0, rank=4, answer_format=RF)

@pytest.mark.slow
def test_toy_students_record_their_format_and_the_notice(reasoning_students):
    info = read_student(reasoning_students / "location")
    assert info.answer_format is RF and info.meta.decision_prefix == "Final decision:"
    assert info.synthetic and info.meta.toy  # served and printed with the SYNTHETIC notice

@pytest.mark.slow
def test_reasoning_first_predictor_reads_the_text_never_the_logits(reasoning_students, monkeypatch):
    from scenefit.predict import PredictConfig, Predictor
    from scenefit.testbed.toy_students import toy_items

    pred = Predictor.from_students(reasoning_students, config=PredictConfig(criteria=["location"], device="cpu"))
    assert pred.without_fast_path() == [Criterion.LOCATION] and "location" in pred.fast_path_note()
    answers = iter([["Analysis:\nLocation: It floats.\nSummary:\nLocation: Out-of-context\n"
                     "Final decision: Out-of-context", "I am not sure."]])
    monkeypatch.setattr(pred, "generate", lambda *a, **k: (next(answers), [12, 5], None))
    monkeypatch.setattr(pred, "_decide", lambda *a, **k: pytest.fail("the fast path ran for a reasoning-first student"))
    items, _ = toy_items(2, seed=5)
    out = pred.predict(items, explain=False)
    read, unread = out[0].criteria[Criterion.LOCATION], out[1].criteria[Criterion.LOCATION]
    assert (read.label, read.status, read.analysis, read.probability) == (Label.OUT, "ok", "It floats.", None)
    assert (unread.label, unread.status, unread.probability) == (None, "no_decision", None)
    assert out[0].final is Label.OUT and out[1].final is None  # unknown stays unknown
    assert out[1].to_json()["criteria"]["location"] == {"label": None, "probability": None, "analysis": None,
                                                        "decision": "generated_text", "analysis_status": "no_decision"}
    assert out[1].to_record()["location_p_out"] is None

@pytest.mark.slow
def test_training_scorer_and_predictor_give_the_same_decision(tiny_model_dir, tmp_path):
    """score_rows (training-time eval: prompts from the dataset rows) and the Predictor (prompts
    from the registry) run the one decide() and give the same P(out) for the same item."""
    from scenefit.core.images import draw_box
    from scenefit.predict import PredictConfig, PredictItem, Predictor
    from scenefit.prompts import student_prompt, student_system_prompt
    from scenefit.student.decision import score_rows
    from scenefit.testbed.toy_students import toy_items

    pred = Predictor.baseline(str(tiny_model_dir), config=PredictConfig(criteria=["size"], device="cpu", dtype="fp32"))
    items, _ = toy_items(3, seed=8)
    rows, boxed = [], []
    for k, (im, obj, box) in enumerate(items):
        path = tmp_path / f"{k}.png"
        draw_box(im, box, width=3).save(path)
        rows.append({"id": str(k), "image": str(path), "prompt": student_prompt(Criterion.SIZE).render(obj),
                     "system": student_system_prompt()})
        boxed.append(PredictItem(str(path), obj, None, True, id=str(k)))
    scored = score_rows(pred.model, pred.processor, rows, batch_size=3)
    judged = [p.criteria[Criterion.SIZE] for p in pred.predict(boxed, explain=False)]
    for s, j in zip(scored, judged):
        assert abs(s["p_out"] - j.p_out) < 1e-4 and s["label"] == j.label.value

@pytest.mark.slow
def test_training_eval_counts_a_decision_the_student_would_not_write_as_unreadable(tiny_model_dir, tmp_path):
    """score_rows(written_only=True), what training's eval scores: a row keeps its label exactly
    when greedy generation after the forced prefix writes that label's first token; the others are
    unreadable (None). Checked against generate() itself on the untrained tiny base."""
    import torch

    from scenefit.core.images import draw_box
    from scenefit.predict import PredictConfig, Predictor
    from scenefit.prompts import student_prompt, student_system_prompt
    from scenefit.student.chat import StudentChat
    from scenefit.student.decision import decision_token_ids, score_rows, scoring_batch
    from scenefit.testbed.toy_students import toy_items

    pred = Predictor.baseline(str(tiny_model_dir), config=PredictConfig(criteria=["size"], device="cpu", dtype="fp32"))
    items, _ = toy_items(6, seed=3)
    rows = []
    for k, (im, obj, box) in enumerate(items):
        path = tmp_path / f"{k}.png"
        draw_box(im, box, width=3).save(path)
        rows.append({"id": str(k), "image": str(path), "prompt": student_prompt(Criterion.SIZE).render(obj),
                     "system": student_system_prompt()})
    ranked = score_rows(pred.model, pred.processor, rows, batch_size=6)
    strict = score_rows(pred.model, pred.processor, rows, batch_size=6, written_only=True)
    _, first = decision_token_ids(pred.processor, StudentChat.packaged())
    inputs = dict(scoring_batch(pred.processor, rows))
    with torch.no_grad():
        greedy = pred.model.generate(**inputs, max_new_tokens=1, do_sample=False, repetition_penalty=1.0)[:, -1].tolist()
    for r, s, g in zip(ranked, strict, greedy):
        writes = g == first[Label(r["label"])]
        assert r["written"] is writes and s["written"] is writes and s["p_out"] == r["p_out"]
        assert s["label"] == (r["label"] if writes else None)


@pytest.mark.slow
def test_predictor_chat_and_the_teacher_backend_generate_alike(tiny_model_dir):
    from scenefit.predict import PredictConfig, Predictor
    from scenefit.student.chat import chat_messages
    from scenefit.teachers.transformers_backend import generate_chat
    from scenefit.testbed.toy_students import toy_items

    pred = Predictor.baseline(str(tiny_model_dir), config=PredictConfig(device="cpu", dtype="fp32"))
    (im, obj, _), = toy_items(1, seed=2)[0]
    conv = chat_messages(f"Where is the {obj}?")
    texts, counts, prompt_counts = pred.chat([conv], [im], max_new_tokens=12)
    teacher = generate_chat(pred.model, pred.processor, [conv], [[im]], max_new_tokens=12)[0]
    assert texts[0] == teacher["text"] and counts[0] == teacher["completion_tokens"]
    assert prompt_counts[0] == teacher["prompt_tokens"]

