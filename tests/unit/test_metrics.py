"""Metric arithmetic on hand-made answers: unparseable answers, one-class sets, the fused rule,
calibration, reasoning consistency and ROUGE-L, error breakdowns.

    .venv/bin/python -m pytest tests/unit/test_metrics.py -q
"""

from __future__ import annotations

import math

import pytest

from scenefit.core.criteria import Label
from scenefit.evaluate.metrics import (
    balanced_accuracy,
    error_breakdown,
    fuse_by_id,
    headline_key,
    in_context_share,
    label_metrics,
    reliability,
    top_confusions,
    wilson_interval,
)
from scenefit.evaluate.reasoning import consistency, cue_counts, reasoning_metrics, rouge_l, stance
from scenefit.evaluate.shortcut import shortcut_metrics

I, O = Label.IN, Label.OUT


def test_counts_and_ratios_with_unparseable_answers_counted_wrong():
    ref = [O, O, O, I, I, I, I, O]
    pred = [O, O, I, I, I, O, None, None]
    m = label_metrics(ref, pred)
    # counted wrong: the unparseable In-reference is a false positive, the Out one a false negative,
    # so TP=2, FN=2, FP=2, TN=2.
    assert (m["n"], m["parseable"], m["unparseable"]) == (8, 6, 2)
    assert m["unparseable_share"] == pytest.approx(0.25)
    assert m["accuracy"] == pytest.approx(4 / 8)
    assert m["accuracy_parseable"] == pytest.approx(4 / 6)
    assert m["precision_out"] == pytest.approx(2 / 4)
    assert m["recall_out"] == pytest.approx(2 / 4)
    assert m["f1_out"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx(0.5)
    assert m["kappa"] == pytest.approx(0.0)  # po = 0.5 = pe
    # the confusion matrix holds parseable answers only; unparseable ones are counted beside it
    assert m["confusion"]["labels"] == ["In-context", "Out-of-context"]
    assert m["confusion"]["matrix"] == [[2, 1], [1, 2]]
    assert m["confusion"]["unparseable"] == {"In-context": 1, "Out-of-context": 1}
    assert m["parseable_only"]["accuracy"] == pytest.approx(4 / 6)
    assert m["parseable_only"]["f1_out"] == pytest.approx(2 / 3)
    # never a third class: answered counts only the two labels
    assert m["answered"] == {"In-context": 3, "Out-of-context": 3}


def test_kappa_and_text_labels():
    # po = 3/4, pe = 3/4*2/4 + 1/4*2/4 = 1/2 -> kappa = 1/2
    m = label_metrics(["In-context", "in context", "In-context", "Out-of-context"], [I, I, O, "out-of-context"])
    assert m["kappa"] == pytest.approx(0.5)
    assert m["accuracy"] == pytest.approx(0.75)


def test_all_one_class_has_documented_undefined_values():
    m = label_metrics([I] * 5, [I] * 5)
    assert m["accuracy"] == 1.0
    # no Out-of-context on either side: precision, recall, F1(out) and kappa are undefined -> None
    assert m["precision_out"] is None and m["recall_out"] is None and m["f1_out"] is None
    assert m["kappa"] is None
    assert m["f1_in"] == 1.0 and m["macro_f1"] == 1.0  # macro over the defined class only

    m = label_metrics([I] * 4, [O] * 4)
    assert m["accuracy"] == 0.0
    assert m["precision_out"] == 0.0 and m["recall_out"] is None
    assert m["f1_out"] == 0.0 and m["macro_f1"] == 0.0

    m = label_metrics([O] * 3, [None] * 3)  # nothing readable at all
    assert m["accuracy"] == 0.0 and m["accuracy_parseable"] is None and m["unparseable"] == 3
    assert m["recall_out"] == 0.0  # counted wrong: every Out answer was missed


def test_missing_references_are_left_out_and_counted():
    m = label_metrics([I, None, float("nan"), O], [I, O, O, O])
    assert m["n"] == 2 and m["no_reference"] == 2 and m["accuracy"] == 1.0


def test_empty_and_length_mismatch():
    m = label_metrics([], [])
    assert m["n"] == 0 and m["accuracy"] is None
    with pytest.raises(ValueError, match="2 references but 1 answers"):
        label_metrics([I, O], [I])


def test_fused_rule_by_id():
    fused = fuse_by_id({
        "location": {"a": I, "b": O, "c": I, "d": None, "e": I},
        "size": {"a": I, "b": I, "c": None, "d": O, "e": I},
        "co_occurrence": {"a": I, "b": I, "c": I, "d": I, "f": O},
    })
    # only ids every criterion has; any Out -> Out; no Out but an unreadable one -> unknown
    assert fused == {"a": I, "b": O, "c": None, "d": O}
    assert list(fused) == ["a", "b", "c", "d"]


def test_reliability_bins_ece_and_brier():
    cal = reliability([0.05, 0.15, 0.95, 0.85, None], [I, O, O, O, O], bins=10)
    assert cal["n"] == 4  # the answer without a probability is skipped
    assert cal["ece"] == pytest.approx((0.05 + 0.85 + 0.15 + 0.05) / 4)
    assert cal["brier"] == pytest.approx((0.05**2 + 0.85**2 + 0.05**2 + 0.15**2) / 4)
    filled = [b for b in cal["bins"] if b["n"]]
    assert [b["lo"] for b in filled] == pytest.approx([0.0, 0.1, 0.8, 0.9])
    assert reliability([None, None], [I, O]) is None
    assert reliability([1.0], [O], bins=4)["bins"][-1]["n"] == 1  # p = 1 lands in the last bin


def test_error_breakdown_and_top_confusions():
    keys = ["cow", "cow", "cow", "car", "car", "bird"]
    ref = [I, I, O, O, I, I]
    pred = [O, O, O, None, I, I]
    rows = error_breakdown(keys, ref, pred)
    assert [r["key"] for r in rows] == ["cow", "car", "bird"]
    assert rows[0]["errors"] == 2 and rows[0]["error_rate"] == pytest.approx(2 / 3)
    assert rows[0]["confusions"] == {"In-context -> Out-of-context": 2}
    assert rows[1]["unparseable"] == 1 and rows[1]["confusions"] == {"Out-of-context -> unparseable": 1}
    assert rows[2]["errors"] == 0
    top = top_confusions(keys, ref, pred, top=1)
    assert top == [{"key": "cow", "reference": "In-context", "answer": "Out-of-context", "count": 2}]


@pytest.mark.parametrize("sentence,expected", [
    ("The cow floats in the sky, well above the ground line.", O),
    ("The horse stands on the ground near the barn.", I),
    ("A zebra is not unusual on a savanna.", I),
    ("The banana does not belong in a bathroom.", O),
    ("It is far too large next to the chair.", O),
    ("The car does not float; it rests on the road.", I),
    ("Here is a car.", None),
    ("The kite flies in the sky, as expected.", I),  # "flies in the sky" is one in-context cue
    ("The cow stands, but it looks odd.", None),  # one cue each side: neutral
])
def test_stance_rule(sentence, expected):
    assert stance(sentence) is expected


def test_rule_reads_the_simulated_teachers_sentences():
    """Every sentence the simulated teachers write (any belief) argues for its own label."""
    from scenefit.teachers.parse import parse_teacher_answer
    from scenefit.testbed import WorldConfig, iter_layouts, layout_sample
    from scenefit.testbed.personas import PERSONAS, SimulatedTeacher

    teacher = SimulatedTeacher(PERSONAS["molmo72b-sim"])  # the noisiest writer
    verdicts = []
    for layout, _ in iter_layouts(WorldConfig(n=120, seed=5)):
        parsed = parse_teacher_answer(teacher.answer(layout_sample(layout, "x.png"), layout))
        verdicts += [consistency(parsed.labels[c], parsed.analyses[c]) for c in parsed.labels
                     if parsed.labels[c] is not None and parsed.analyses[c]]
    assert len(verdicts) > 300
    assert verdicts.count("inconsistent") == 0
    assert verdicts.count("consistent") / len(verdicts) > 0.97


def test_consistency_verdicts_and_rouge():
    assert consistency(O, "The cow floats in the sky.") == "consistent"
    assert consistency(I, "The cow floats in the sky.") == "inconsistent"
    assert consistency(I, "A cow.") == "neutral"
    assert consistency(I, None) == "no_analysis"
    assert consistency(None, "The cow floats.") == "no_label"
    assert cue_counts("It would not fit here") == (2, 0)  # "would not" + negated "fit"
    assert rouge_l("the cow floats in the sky", "the cow floats in the sky") == pytest.approx(1.0)
    assert rouge_l(None, "the cow floats") == 0.0
    assert rouge_l("anything", None) is None
    assert 0.0 < rouge_l("a cow floating high in the sky", "the cow floats in the sky") < 1.0


def test_reasoning_metrics_shares():
    labels = [O, I, I, None, O]
    analyses = ["It floats in the sky.", "It floats in the sky.", "A thing.", "It stands.", None]
    teacher = [O, O, I, I, O]
    teacher_sentences = ["The cow floats in the sky.", "It hangs in the air.", "It stands on the ground.",
                         "It stands on the floor.", "It is far too large."]
    r = reasoning_metrics(labels, analyses, teacher, teacher_sentences)
    assert (r["consistent"], r["inconsistent"], r["neutral"], r["no_analysis"], r["no_label"]) == (1, 1, 1, 1, 1)
    assert r["consistent_share"] == pytest.approx(1 / 4)
    assert r["consistent_share_of_cued"] == pytest.approx(1 / 2)
    assert r["teacher_consistent_share"] == pytest.approx(1.0)
    assert r["rouge_l_answered"] is not None and r["rouge_l"] < r["rouge_l_answered"]  # the missing one scores 0


def test_in_context_share_and_shortcut_block():
    share = in_context_share([I, I, O, None])
    assert share == {"n": 4, "in_context": 2, "out_of_context": 1, "unparseable": 1, "in_context_share": 0.5}
    ids = [f"s{k}" for k in range(20)]
    labels = {
        "location": [I] * 20,
        "size": [I] * 19 + [O],
        "co_occurrence": [I] * 18 + [None, O],
    }
    s = shortcut_metrics(labels, ids, threshold=0.95, source="hand-made")
    assert s["in_context_share"]["location"] == 1.0
    assert s["in_context_share"]["size"] == pytest.approx(0.95)
    assert s["in_context_share"]["co_occurrence"] == pytest.approx(0.9)
    # fused: s18 has an unreadable co-occurrence answer (unknown), s19 is out -> 18/20
    assert s["in_context_share"]["fused"] == pytest.approx(0.9)
    assert s["robust"] == {"location": True, "size": True, "co_occurrence": False, "fused": False}
    assert not math.isnan(s["details"]["fused"]["n"])


# --- headline numbers: Wilson intervals, majority-class rate, balanced accuracy -------------------

@pytest.mark.parametrize("k, n, low, high", [
    # published Wilson score intervals (z = 1.96)
    (8, 10, 0.4902, 0.9433), (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (1, 2, 0.0945, 0.9055),
])
def test_wilson_interval_matches_published_values(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=1e-4) and hi == pytest.approx(high, abs=1e-4)
    assert lo <= k / n <= hi


def test_wilson_interval_of_nothing_is_none():
    assert wilson_interval(0, 0) is None


def test_balanced_accuracy_and_its_interval_by_hand():
    # recalls 8/10 (In) and 9/10 (Out): balanced accuracy 0.85. Interval: each recall shifted to
    # (k + 1.9207) / 13.8415 = 0.71675 and 0.78899, centre 0.75287; variances 0.71675*0.28325/13.8415
    # = 0.014668 and 0.78899*0.21101/13.8415 = 0.012028; half = 1.96 * sqrt(0.026696) / 2 = 0.16012.
    value, (lo, hi) = balanced_accuracy([[8, 2], [1, 9]])
    assert value == pytest.approx(0.85)
    assert lo == pytest.approx(0.75287 - 0.16012, abs=2e-4) and hi == pytest.approx(0.75287 + 0.16012, abs=2e-4)
    # a label absent from the references does not enter the mean
    assert balanced_accuracy([[3, 1], [0, 0]])[0] == pytest.approx(0.75)
    assert balanced_accuracy([[0, 0], [0, 0]]) == (None, None)


def test_constant_answer_on_a_skewed_set_is_exposed():
    """8 In / 2 Out references, every answer In: 80 % accuracy is exactly the majority rate,
    balanced accuracy is 0.5 and macro-F1 is (16/18 + 0) / 2."""
    m = label_metrics([I] * 8 + [O] * 2, [I] * 10)
    assert m["accuracy"] == pytest.approx(0.8) and m["majority_rate"] == pytest.approx(0.8)
    assert m["majority_label"] == "In-context"
    assert m["accuracy_ci95"] == pytest.approx([0.4902, 0.9433], abs=1e-4)
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx((16 / 18 + 0.0) / 2)


def test_balanced_accuracy_counts_unparseable_answers_wrong():
    # In refs: 7 right + 1 unparseable -> recall 7/8; Out refs: 1 right + 1 unparseable -> 1/2
    m = label_metrics([I] * 8 + [O] * 2, [I] * 7 + [None] + [O, None])
    assert m["balanced_accuracy"] == pytest.approx((7 / 8 + 1 / 2) / 2)
    assert m["accuracy"] == pytest.approx(0.8) and m["accuracy_ci95"] == pytest.approx(wilson_interval(8, 10))
    assert m["parseable_only"]["balanced_accuracy"] == pytest.approx(1.0)
    lo, hi = m["balanced_accuracy_ci95"]
    assert lo < m["balanced_accuracy"] < hi


def test_headline_key_names():
    assert headline_key("accuracy") == "accuracy"
    assert headline_key("accuracy_ci95", "baseline_", "_vs_truth") == "baseline_accuracy_vs_truth_ci95"
    assert headline_key("balanced_accuracy", suffix="_vs_truth") == "balanced_accuracy_vs_truth"
