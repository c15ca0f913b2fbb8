"""Calibration of the students' decision probabilities: ECE and Brier against the teacher's labels,
the truth and the teacher's own P(out), hand-computed; in metrics.json and in the report's table.

    .venv/bin/python -m pytest tests/unit/test_calibration.py -q
"""

from __future__ import annotations

import pandas as pd
import pytest

from scenefit.core.criteria import Label
from scenefit.evaluate.config import EvaluateConfig
from scenefit.evaluate.metrics import reliability
from scenefit.evaluate.report import render_html
from scenefit.evaluate.runner import Answer, calibration_blocks, evaluate_answers

I, O = Label.IN, Label.OUT


def test_reliability_against_a_teacher_probability():
    # bins of width 0.5: [0, 0.5) holds 0.1 and 0.3, [0.5, 1] holds 0.6 and 0.9
    cal = reliability([0.1, 0.3, 0.6, 0.9], [0.2, 0.2, 0.7, float("nan")], bins=2)
    assert cal["n"] == 3  # the NaN reference is left out
    low, high = cal["bins"]
    assert (low["n"], high["n"]) == (2, 1)
    assert low["mean_p_out"] == pytest.approx(0.2) and low["observed_out"] == pytest.approx(0.2)
    assert high["mean_p_out"] == pytest.approx(0.6) and high["observed_out"] == pytest.approx(0.7)
    # ECE: bin [0, .5): |0.2 - 0.2| x 2/3 = 0; bin [.5, 1]: |0.7 - 0.6| x 1/3
    assert cal["ece"] == pytest.approx(0.1 / 3)
    assert cal["brier"] == pytest.approx((0.1**2 + 0.1**2 + 0.1**2) / 3)
    # labels and label texts still work, and a number outside [0, 1] is no reference
    assert reliability([0.8, 0.2], ["Out-of-context", I], bins=2)["brier"] == pytest.approx(0.04)
    assert reliability([0.5], [1.5]) is None


def test_calibration_blocks_vs_teacher_truth_and_teacher_probability():
    df = pd.DataFrame({
        "id": ["a", "b", "c", "d"],
        "label": [O.value, O.value, I.value, I.value],        # the teacher's labels
        "truth": [O.value, I.value, I.value, None],           # one truth unknown
        "teacher_p_out": [0.9, 0.6, 0.2, None],               # one probability unknown
    })
    p = [0.8, 0.7, 0.4, 0.1]
    m = calibration_blocks(p, df, bins=10)
    # vs the teacher's labels: every bin holds one answer, ECE = mean |label - p|
    assert m["ece"] == pytest.approx((0.2 + 0.3 + 0.4 + 0.1) / 4)
    assert m["brier"] == pytest.approx((0.04 + 0.09 + 0.16 + 0.01) / 4)
    # vs the truth (d has none): truths 1, 0, 0
    assert m["calibration_vs_truth"]["n"] == 3
    assert m["ece_vs_truth"] == pytest.approx((0.2 + 0.7 + 0.4) / 3)
    assert m["brier_vs_truth"] == pytest.approx((0.04 + 0.49 + 0.16) / 3)
    # vs the teacher's own probability (d has none)
    assert m["ece_vs_teacher_p"] == pytest.approx((0.1 + 0.1 + 0.2) / 3)
    assert m["brier_vs_teacher_p"] == pytest.approx((0.01 + 0.01 + 0.04) / 3)
    # the teacher's probabilities against the truth (a, b, c)
    assert m["teacher_ece_vs_truth"] == pytest.approx((0.1 + 0.6 + 0.2) / 3)
    assert m["teacher_brier_vs_truth"] == pytest.approx((0.01 + 0.36 + 0.04) / 3)

    bare = calibration_blocks(p, df.drop(columns=["truth", "teacher_p_out"]), bins=10)
    assert bare["ece"] == m["ece"]
    assert bare["ece_vs_truth"] is None and bare["calibration_vs_teacher_p"] is None
    assert bare["teacher_brier_vs_truth"] is None


def test_metrics_and_report_carry_the_calibration_numbers():
    df = pd.DataFrame({
        "id": ["a", "b", "c", "d"], "image": ["x.png"] * 4, "object": ["cow"] * 4, "criterion": "location",
        "label": [O.value, O.value, I.value, I.value], "truth": [O.value, I.value, I.value, I.value],
        "teacher_p_out": [0.9, 0.6, 0.2, 0.1], "synthetic": True,
    })
    answers = [Answer(i, O if p > 0.5 else I, p) for i, p in zip(df["id"], [0.8, 0.7, 0.4, 0.1])]
    metrics = evaluate_answers({"location": df}, {"location": answers}, None, EvaluateConfig(criteria=["location"]))
    loc = metrics["location"]
    assert loc["brier_vs_teacher_p"] == pytest.approx((0.01 + 0.01 + 0.04 + 0.0) / 4)
    assert loc["ece_vs_truth"] == pytest.approx((0.2 + 0.7 + 0.4 + 0.1) / 4)
    assert "calibration" in metrics["conventions"] and "equal-width" in metrics["conventions"]["calibration"]
    html = render_html(metrics)
    section = html[html.index('id="calibration"'):html.index('id="reasoning"')]
    for key in ("ece", "brier", "ece_vs_truth", "brier_vs_truth", "ece_vs_teacher_p", "brier_vs_teacher_p",
                "teacher_ece_vs_truth"):
        assert f"{loc[key]:.3f}" in section, key
    assert "ECE (vs teacher P(out))" in section and "teacher Brier (vs truth)" in section
