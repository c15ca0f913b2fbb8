"""Soft-label distillation (train.distill), without training: the KL term by hand, the decision
position, the collators carrying the target (padded and packed), weight 0 = the plain loss.
The short training run is tests/e2e/test_distill_training.py.

    .venv/bin/python -m pytest tests/unit/test_distill.py -q
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from scenefit.core.criteria import Criterion, Label
from scenefit.prompts import student_prompt, student_system_prompt
from scenefit.student.answer import AnswerFormat, render_student_answer
from scenefit.train.distill import EXAMPLE_KEYS


def test_kl_term_matches_a_hand_computation():
    import torch

    from scenefit.train.distill import soft_target_kl

    vocab, in_id, out_id = 6, 2, 4
    logits = torch.zeros(2, 5, vocab)
    logits[0, 3, in_id], logits[0, 3, out_id] = 1.0, 3.0      # student P(out) = sigmoid(2)
    logits[1, 1, in_id], logits[1, 1, out_id] = 0.5, 0.5      # student P(out) = 0.5
    rows, positions = torch.tensor([0, 1]), torch.tensor([3, 1])
    p = torch.tensor([0.9, 0.2])

    def kl(t: float, s: float) -> float:
        return t * math.log(t / s) + (1 - t) * math.log((1 - t) / (1 - s))

    s0 = 1 / (1 + math.exp(-2.0))
    expected = (kl(0.9, s0) + kl(0.2, 0.5)) / 2
    value, used = soft_target_kl(logits, rows, positions, p, in_id, out_id)
    assert used == 2 and float(value) == pytest.approx(expected, rel=1e-5)

    # temperature 2: both sides' log-odds halved, the mean KL times T^2 = 4
    t0 = 1 / (1 + math.exp(-math.log(9) / 2))
    t1 = 1 / (1 + math.exp(-math.log(0.25) / 2))
    s0_t = 1 / (1 + math.exp(-1.0))
    expected_t = 4 * (kl(t0, s0_t) + kl(t1, 0.5)) / 2
    value_t, _ = soft_target_kl(logits, rows, positions, p, in_id, out_id, temperature=2.0)
    assert float(value_t) == pytest.approx(expected_t, rel=1e-5)

    # a null target leaves its row out of the mean; no target at all: zero, nothing used
    value_n, used_n = soft_target_kl(logits, rows, positions, torch.tensor([0.9, float("nan")]), in_id, out_id)
    assert used_n == 1 and float(value_n) == pytest.approx(kl(0.9, s0), rel=1e-5)
    value_z, used_z = soft_target_kl(logits, rows, positions, torch.tensor([float("nan")] * 2), in_id, out_id)
    assert used_z == 0 and float(value_z) == 0.0
    # a teacher sure of itself (p = 1) is clipped, not a log(0)
    value_1, _ = soft_target_kl(logits, rows, positions, torch.tensor([1.0, 0.0]), in_id, out_id)
    assert math.isfinite(float(value_1))

def test_settings_are_documented_and_checked():
    from scenefit.train.config import TrainConfig
    from scenefit.train.distill import DistillSettings

    cfg = TrainConfig()
    assert cfg.distill.weight == 0 and not cfg.distill.enabled and cfg.distill.column == "teacher_p_out"
    assert DistillSettings(target="teachers_mean").column == "teachers_mean_p_out"
    for name, field in DistillSettings.model_fields.items():
        assert field.description, name
    from scenefit.core.config import resolve

    flags = resolve("train", overrides={"distill.weight": "0.5", "distill.hard_decision": "false"})  # as --set gives them
    assert flags.distill.weight == 0.5 and flags.distill.hard_decision is False and flags.distill.enabled
    with pytest.raises(ValueError):
        DistillSettings(weight=-1)
    with pytest.raises(ValueError):
        DistillSettings(temperature=0)
    with pytest.raises(ValueError):
        DistillSettings(target="student")

def test_target_probabilities_name_the_row_or_the_file():
    from scenefit.train.data import DatasetError
    from scenefit.train.distill import DistillSettings, target_probabilities

    frame = pd.DataFrame({"id": ["a", "b", "c"], "teacher_p_out": [0.25, None, float("nan")]})
    probs = target_probabilities(frame, DistillSettings(weight=1))
    assert probs[0] == 0.25 and math.isnan(probs[1]) and math.isnan(probs[2])
    with pytest.raises(DatasetError, match="train.parquet: no column 'teachers_mean_p_out'"):
        target_probabilities(frame, DistillSettings(weight=1, target="teachers_mean"), "train.parquet")
    with pytest.raises(DatasetError, match="sample 'b': teacher_p_out 1.5 is outside"):
        target_probabilities(pd.DataFrame({"id": ["a", "b"], "teacher_p_out": [0.1, 1.5]}), DistillSettings(weight=1))

def _row(image, label: Label, rid: str, p_out, words: int = 3) -> dict:
    crit = Criterion.LOCATION
    return {"id": rid, "image": str(image), "prompt": student_prompt(crit).render("cow"),
            "system": student_system_prompt(), "label": label.value, "criterion": crit.value,
            "target": render_student_answer(crit, label, " ".join(["grass"] * words)),
            "teacher_p_out": p_out, "teachers_mean_p_out": p_out}

@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    from PIL import Image

    from scenefit.core.criteria import Label as L
    from scenefit.models.loading import load_model, load_processor
    from scenefit.predict.predictor import decision_token_ids

    folder = tmp_path_factory.mktemp("distill")
    paths = []
    for i, size in enumerate([(112, 112), (56, 112), (112, 56)]):
        p = folder / f"{i}.png"
        Image.new("RGB", size, (40 * i, 180, 60)).save(p)
        paths.append(p)
    rows = [_row(paths[0], L.OUT, "a", 0.8), _row(paths[1], L.IN, "b", None, 9), _row(paths[2], L.IN, "c", 0.3, 15)]
    processor = load_processor(tiny_model_dir)
    model = load_model(tiny_model_dir, "fp32", "cpu").eval()
    _, first = decision_token_ids(processor)
    return {"rows": rows, "processor": processor, "model": model, "ids": (first[L.IN], first[L.OUT])}

def _examples(setup, soft_only: bool = False):
    from scenefit.train.data import StudentExamples
    from scenefit.train.distill import DistillSettings, SoftTargetExamples, target_probabilities

    frame = pd.DataFrame(setup["rows"])
    base = StudentExamples(frame, setup["processor"], 8192)
    probs = target_probabilities(frame, DistillSettings(weight=1))
    return SoftTargetExamples(base, probs, setup["processor"].tokenizer, setup["ids"], soft_only=soft_only)

def test_decision_position_is_the_label_token_after_the_prefix(setup):
    from scenefit.train.data import IGNORE_INDEX

    examples = _examples(setup)
    for i, row in enumerate(setup["rows"]):
        e = examples[i]
        ids, labels = e["input_ids"].tolist(), e["labels"].tolist()
        k = e["decision_index"]
        start = next(j for j, lab in enumerate(labels) if lab != IGNORE_INDEX)
        assert setup["processor"].tokenizer.decode(ids[start:k]) == "Decision:"
        want = setup["ids"][1] if row["label"] == Label.OUT.value else setup["ids"][0]
        assert ids[k] == want

@pytest.mark.parametrize("target", [
    render_student_answer(Criterion.LOCATION, Label.IN, "The cow floats; a decision: Out of place.", AnswerFormat.REASONING_FIRST),
    # the earlier reasoning-first layout: a per-criterion summary line (same label token after 'Location:')
    "Analysis:\nLocation: The cow floats.\nSummary:\nLocation: Out-of-context\nFinal decision: In-context",
])
def test_decision_position_also_found_in_a_reasoning_first_answer(setup, target):
    """A reasoning-first answer ends with 'Final decision: <label>'; no label token earlier in it is taken."""
    from scenefit.train.data import encode_example
    from scenefit.train.distill import decision_position

    row = dict(setup["rows"][0], target=target)
    enc = encode_example(setup["processor"], row, 8192)
    k = decision_position(setup["processor"].tokenizer, enc["input_ids"].tolist(), enc["labels"].tolist(), setup["ids"],
                          AnswerFormat.REASONING_FIRST)
    ids = enc["input_ids"].tolist()
    assert ids[k] == setup["ids"][0]  # In: the final decision, not the summary's or the sentence's Out
    assert setup["processor"].tokenizer.decode(ids[k:]).startswith(" In")


def test_decision_first_takes_the_token_right_after_its_prefix_never_one_in_the_analysis(setup):
    """'a hasty decision: In my view…' in the sentence of a decision-first answer (the label Out) leaves
    the decision token where the answer starts: the KL goes on the first line's label, nowhere else."""
    from scenefit.train.data import IGNORE_INDEX, encode_example
    from scenefit.train.distill import decision_position

    row = dict(setup["rows"][0], target=render_student_answer(
        Criterion.LOCATION, Label.OUT, "A hasty decision: In my view the cow floats.", AnswerFormat.DECISION_FIRST))
    enc = encode_example(setup["processor"], row, 8192)
    ids, labels = enc["input_ids"].tolist(), enc["labels"].tolist()
    k = decision_position(setup["processor"].tokenizer, ids, labels, setup["ids"], AnswerFormat.DECISION_FIRST)
    start = next(j for j, lab in enumerate(labels) if lab != IGNORE_INDEX)
    assert setup["processor"].tokenizer.decode(ids[start:k]) == "Decision:"
    assert ids[k] == setup["ids"][1]  # Out, the answer's decision
    assert setup["ids"][0] in ids[k + 1:]  # the sentence's " In" is there, and was not taken

def test_answer_without_a_decision_is_an_error_naming_the_sample(setup):
    from scenefit.train.data import DatasetError, encode_example
    from scenefit.train.distill import decision_position

    row = dict(setup["rows"][0], target="Location: The cow floats.", id="nodecision")
    enc = encode_example(setup["processor"], row, 8192)
    with pytest.raises(DatasetError, match="sample 'nodecision': no decision token"):
        decision_position(setup["processor"].tokenizer, enc["input_ids"].tolist(), enc["labels"].tolist(),
                          setup["ids"], AnswerFormat.DECISION_FIRST, "nodecision")

@pytest.mark.parametrize("packed", [False, True])
def test_collator_points_at_the_logits_that_predict_the_decision(setup, packed):
    import torch

    from scenefit.train.data import AnswerOnlyCollator
    from scenefit.train.distill import SoftTargetCollator
    from scenefit.train.packing import PackedCollator

    examples = _examples(setup)
    items = [examples[i] for i in range(len(examples))]
    inner = PackedCollator(setup["model"]) if packed else AnswerOnlyCollator(setup["processor"].tokenizer.pad_token_id)
    batch = SoftTargetCollator(inner, packed)(items)
    rows, positions = batch["distill_rows"], batch["distill_positions"]
    # the token after each picked position is the example's decision token, and its label is that token
    for i, e in enumerate(items):
        r, pos = int(rows[i]), int(positions[i])
        assert int(batch["input_ids"][r, pos + 1]) == int(e["input_ids"][e["decision_index"]])
        assert int(batch["labels"][r, pos + 1]) == int(e["input_ids"][e["decision_index"]])
    p = batch["distill_p_out"]
    assert p[0] == pytest.approx(0.8) and math.isnan(float(p[1])) and p[2] == pytest.approx(0.3)
    # soft labels only (training rows): the decision token of a row with a target leaves the CE, the null
    # row keeps it
    soft_items = [_examples(setup, soft_only=True)[i] for i in range(len(items))]
    soft_only = SoftTargetCollator(inner, packed)(soft_items)
    changed = (soft_only["labels"] != batch["labels"]).nonzero().tolist()
    assert changed == [[int(rows[i]), int(positions[i]) + 1] for i in (0, 2)]
    assert (soft_only["labels"][tuple(zip(*changed))] == -100).all()
    # the model runs on the batch once the loss has taken its keys off
    from scenefit.train.distill import pop_soft_targets

    assert pop_soft_targets(batch) is not None and "distill_rows" not in batch
    with torch.no_grad():
        assert setup["model"](**batch).loss is not None

def _trainer(setup, tmp_path, weight: float):
    from scenefit.train.config import TrainConfig
    from scenefit.train.distill import DistillSettings
    from scenefit.train.trainer import _trainer_classes, training_arguments

    cfg = TrainConfig(per_device_batch_size=3, gradient_accumulation_steps=1, num_devices=1, effective_batch_size=3,
                      precision="fp32", report_to=[])
    _, StudentTrainer = _trainer_classes()
    trainer = StudentTrainer(model=setup["model"], args=training_arguments(cfg, tmp_path, 1), eval_dataset=[{}],
                             decision_rows=[], scoring_processor=setup["processor"], scoring_batch_size=4)
    trainer.distill = DistillSettings(weight=weight, temperature=1.5)
    trainer.distill_token_ids = setup["ids"]
    return trainer

def test_weight_zero_is_the_plain_loss_and_weight_adds_the_term(setup, tmp_path):
    import torch

    from scenefit.train.data import AnswerOnlyCollator
    from scenefit.train.distill import SoftTargetCollator, soft_target_kl

    examples = _examples(setup)
    items = [examples[i] for i in range(len(examples))]
    inner = AnswerOnlyCollator(setup["processor"].tokenizer.pad_token_id)
    plain_batch = inner([{k: v for k, v in e.items() if k not in EXAMPLE_KEYS} for e in items])
    model = setup["model"].train()  # the tiny model has no dropout: train mode changes no number
    try:
        with torch.no_grad():
            plain = _trainer(setup, tmp_path, 0.0).compute_loss(model, dict(plain_batch))
            zero = _trainer(setup, tmp_path, 0.0).compute_loss(model, SoftTargetCollator(inner, False)(items))
            soft_batch = SoftTargetCollator(inner, False)(items)
            kl, used = soft_target_kl(model(**plain_batch).logits, soft_batch["distill_rows"],
                                      soft_batch["distill_positions"], soft_batch["distill_p_out"], *setup["ids"], 1.5)
            weighted = _trainer(setup, tmp_path, 2.0).compute_loss(model, SoftTargetCollator(inner, False)(items))
    finally:
        model.eval()
    assert torch.equal(zero, plain)  # bitwise
    assert used == 2 and float(kl) > 0
    assert float(weighted) == pytest.approx(float(plain) + 2.0 * float(kl), rel=1e-6)


def test_eval_loss_is_the_cross_entropy_and_the_term_is_reported_beside_it(setup, tmp_path):
    """Validation (the model in eval mode): the loss equals plain training's, bit for bit, so early
    stopping on eval_loss selects on the same objective with distillation on; the term is kept
    for eval_distill_kl."""
    import torch

    from scenefit.train.data import AnswerOnlyCollator
    from scenefit.train.distill import SoftTargetCollator, soft_target_kl

    items = [_examples(setup)[i] for i in range(len(setup["rows"]))]
    inner = AnswerOnlyCollator(setup["processor"].tokenizer.pad_token_id)
    plain_batch = inner([{k: v for k, v in e.items() if k not in EXAMPLE_KEYS} for e in items])
    model = setup["model"].eval()
    trainer = _trainer(setup, tmp_path, 2.0)
    with torch.no_grad():
        plain = _trainer(setup, tmp_path, 0.0).compute_loss(model, dict(plain_batch))
        batch = SoftTargetCollator(inner, False)(items)
        kl, _ = soft_target_kl(model(**plain_batch).logits, batch["distill_rows"], batch["distill_positions"],
                               batch["distill_p_out"], *setup["ids"], 1.5)
        evaluated = trainer.compute_loss(model, batch)
    assert torch.equal(evaluated, plain)
    stats = trainer.__dict__["_distill_eval"]
    assert stats["used"] == 2 and stats["kl_sum"] / 2 == pytest.approx(float(kl), rel=1e-6)

