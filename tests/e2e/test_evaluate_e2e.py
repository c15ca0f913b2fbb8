"""`scenefit evaluate` end to end on real (tiny, random-adapter) students: the CLI loads them
through scenefit.predict, runs students and the adapter-free base on a small test split and
on unmodified originals, and writes the report. Marked slow (loads and runs a model).

    .venv/bin/python -m pytest tests/e2e/test_evaluate_e2e.py -q
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from scenefit.core.criteria import CRITERIA, Label, fuse

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def toy_setup(tiny_model_dir, tmp_path_factory):
    from scenefit.core.images import draw_box
    from scenefit.core.parquet_io import write_table
    from scenefit.core.records import Sample
    from scenefit.data.datasets import DATASET_COLUMNS
    from scenefit.data.manifest import write_manifest
    from scenefit.testbed.toy_students import build_toy_students, toy_answer, toy_items

    root = tmp_path_factory.mktemp("e2e")
    students = build_toy_students(tiny_model_dir, root / "students", steps=0)  # random LoRA B: a real, untrained student
    items, truths = toy_items(10, seed=4)
    (root / "images").mkdir()
    rows = {c: [] for c in CRITERIA}
    for k, ((im, obj, box), truth) in enumerate(zip(items, truths)):
        path = root / "images" / f"t{k}.png"
        draw_box(im, box, width=3).save(path)
        final = fuse(truth.values()).value
        for c in CRITERIA:
            sentence = toy_answer(c, truth[c], obj).split("\n", 1)[1].split(": ", 1)[1]
            rows[c].append({"id": f"t{k}", "group": f"g{k}", "image": str(path), "object": obj, "box": list(box),
                            "criterion": c.value, "label": truth[c].value, "analysis": sentence, "prompt": "",
                            "system": "", "target": toy_answer(c, truth[c], obj), "prompt_version": "",
                            "truth": truth[c].value, "final": final, "scene": "toy", "synthetic": True,
                            "teacher_p_out": None if k == 0 else (0.9 if truth[c].value == "Out-of-context" else 0.2)})
    for c in CRITERIA:
        write_table(pd.DataFrame(rows[c], columns=DATASET_COLUMNS), root / "data" / c.value / "test.parquet")
    originals, _ = toy_items(4, seed=9)
    samples = []
    for k, (im, obj, box) in enumerate(originals):
        path = root / "images" / f"o{k}.png"
        im.save(path)
        samples.append(Sample(id=f"o{k}", image=str(path), object=obj, box=box, synthetic=True,
                              truth={c: Label.IN for c in CRITERIA}))
    write_manifest(samples, root / "originals.parquet")
    return root, students


def test_cli_evaluates_real_students_end_to_end(toy_setup, tiny_model_dir):
    from typer.testing import CliRunner

    from scenefit.cli import app

    root, students = toy_setup
    out = root / "report"
    res = CliRunner().invoke(app, [
        "evaluate", "--students", str(students), "--data", str(root / "data"), "--out", str(out),
        "--originals", str(root / "originals.parquet"), "--batch-size", "4", "--set", "predict.max_new_tokens=12",
        "--device", "cpu", "--json",
    ])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    answers = pd.read_parquet(out / "answers.parquet")
    for c in CRITERIA:
        m = metrics[c.value]
        assert m["n"] == 10
        # the headline accuracy is exactly what the stored answers give (unparseable = wrong)
        mine = answers[(answers["model"] == "student") & (answers["criterion"] == c.value)]
        data = pd.read_parquet(root / "data" / c.value / "test.parquet")
        assert m["accuracy"] == pytest.approx((mine["label"].to_numpy() == data["label"].to_numpy()).mean())
        assert m["unparseable"] == int(mine["label"].isna().sum())
        assert m["baseline_accuracy"] is not None and m["accuracy_vs_truth"] is not None
        assert m["calibration"]["n"] == 10  # every answer carries the decision probability
        assert m["calibration_vs_teacher_p"]["n"] == 9  # the row without a teacher probability is left out
        assert m["calibration_vs_truth"]["n"] == 10 and m["teacher_calibration_vs_truth"]["n"] == 9
        assert mine["raw"].str.startswith("Decision:").all()  # explanations were generated
    assert metrics["fused"]["n"] == 10
    assert set(metrics["shortcut"]["in_context_share"]) == {"location", "size", "co_occurrence", "fused"}
    assert metrics["shortcut"]["n"] == 4
    assert metrics["base_model"] == str(tiny_model_dir.resolve())
    assert (out / "report.html").is_file()
    headline = json.loads(res.stdout[res.stdout.index("["):])
    assert [r["criterion"] for r in headline] == ["location", "size", "co_occurrence", "fused"]
