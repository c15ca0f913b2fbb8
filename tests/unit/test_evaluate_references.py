"""What the students are measured against: the shortcut test's Out recall beside its share, the
linear probe's keys in metrics.json, and the probe itself on features with a known answer.

    .venv/bin/python -m pytest tests/unit/test_evaluate_references.py -q
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scenefit.core.criteria import CRITERIA, Label
from scenefit.evaluate.config import EvaluateConfig
from scenefit.evaluate.metrics import label_metrics
from scenefit.evaluate.runner import Answer, evaluate_answers
from scenefit.evaluate.shortcut import shortcut_metrics

I, O = Label.IN, Label.OUT
TRUTH = [I, I, O, I, O, I, I, O, I, I]  # 3 of 10 out of context


def _frames() -> dict[str, pd.DataFrame]:
    ids = [f"s{i}" for i in range(len(TRUTH))]
    return {c.value: pd.DataFrame({"id": ids, "label": [t.value for t in TRUTH], "truth": [t.value for t in TRUTH],
                                   "final": [t.value for t in TRUTH], "object": "cow", "scene": "farm"})
            for c in CRITERIA}


def _answers(labels) -> dict[str, list[Answer]]:
    return {c.value: [Answer(f"s{i}", lab) for i, lab in enumerate(labels)] for c in CRITERIA}


def _metrics(student_labels, probes=None):
    originals = {c.value: [Answer(f"o{i}", I) for i in range(20)] for c in CRITERIA}  # all In on unmodified images
    return evaluate_answers(_frames(), _answers(student_labels), None, EvaluateConfig(), originals, "originals", {},
                            probes)


def test_a_constant_in_student_does_not_pass_the_shortcut_test():
    sc = _metrics([I] * len(TRUTH))["shortcut"]
    assert sc["in_context_share"]["size"] == 1.0  # the share alone would call it robust
    assert sc["recall_out_on_split"]["size"] == 0.0 and sc["recall_reference"]["size"] == "truth"
    assert sc["verdict"]["size"] == "uninformative" and sc["robust"]["size"] is False
    assert sc["verdict"]["fused"] == "uninformative"


def test_a_student_that_finds_the_out_samples_is_robust():
    sc = _metrics(TRUTH)["shortcut"]
    assert sc["recall_out_on_split"]["location"] == 1.0
    assert sc["robust"] == {"location": True, "size": True, "co_occurrence": True, "fused": True}


def test_without_recall_the_share_decides_as_before():
    sc = shortcut_metrics({"location": [I, I, O, I]}, ["a", "b", "c", "d"], threshold=0.7)
    assert sc["verdict"] == {"location": "robust"} and sc["recall_out_on_split"] == {"location": None}
    assert shortcut_metrics({"location": [I, O]}, ["a", "b"])["verdict"] == {"location": "shortcut suspected"}


def test_probe_and_teacher_keys_sit_beside_the_students():
    probe_labels = [I, I, O, I, I, I, I, O, I, I]  # misses one Out
    probes = {c.value: {"available": True, "vs_teacher": label_metrics(TRUTH, probe_labels),
                        "vs_truth": label_metrics(TRUTH, probe_labels), "labels": [x.value for x in probe_labels]}
              for c in CRITERIA}
    m = _metrics(TRUTH, probes)
    expected = label_metrics(TRUTH, probe_labels)["balanced_accuracy"]
    assert expected < 1.0 and m["size"]["probe_balanced_accuracy_vs_truth"] == pytest.approx(expected)
    assert m["fused"]["probe_balanced_accuracy_vs_truth"] == pytest.approx(expected)  # same labels per criterion
    assert m["size"]["teacher_balanced_accuracy_vs_truth"] == 1.0
    assert "labels" not in m["size"]["probe"]  # the block in metrics.json, without the per-row answers
    assert _metrics(TRUTH)["size"]["probe_balanced_accuracy_vs_truth"] is None


def test_the_probe_reads_a_linear_signal_and_not_noise():
    from scenefit.evaluate.probe import fit_probe

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16)).astype(np.float32)
    y = np.where(x[:, 3] + 0.5 * x[:, 7] > 0.4, "Out-of-context", "In-context")
    pipe = fit_probe(x[:150], list(y[:150]))
    got = label_metrics(list(y[150:]), list(pipe.predict(x[150:])))["balanced_accuracy"]
    assert got > 0.9
    noise = rng.normal(size=(200, 16)).astype(np.float32)
    pipe = fit_probe(noise[:150], list(y[:150]))
    assert label_metrics(list(y[150:]), list(pipe.predict(noise[150:])))["balanced_accuracy"] < 0.75
