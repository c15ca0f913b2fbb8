"""Both student answer formats end to end on the tiny model: `scenefit datasets` (with
``--answer-format``) → `scenefit train` (a few steps) → `scenefit evaluate` → `scenefit predict`
→ the student server. The format is set once, in the datasets stage, and every later stage
reads it from the student's ``scenefit_student.json``.

    .venv/bin/python -m pytest tests/e2e/test_answer_format_e2e.py -q

One criterion (location) and a handful of toy scenes keep it to about a minute per format.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from scenefit import SYNTHETIC_NOTICE
from scenefit.core.criteria import Criterion, Label
from scenefit.student.answer import AnswerFormat, parse_student_answer

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("torch_one_thread")]

CRIT = Criterion.LOCATION
FORMATS = [AnswerFormat.DECISION_FIRST, AnswerFormat.REASONING_FIRST]


def _split_dir(root: Path) -> Path:
    """A folder as `scenefit split` writes it: toy scenes (boxed), the location label, the
    designated teacher's sentence and the truth."""
    from scenefit.core.images import draw_box
    from scenefit.core.parquet_io import write_table
    from scenefit.testbed.toy_students import _SENTENCES, toy_items

    images = root / "images"
    images.mkdir(parents=True)
    split = root / "split"
    for k, (name, n) in enumerate((("train", 12), ("val", 4), ("test", 4))):
        items, truths = toy_items(n, seed=20 + k)
        rows = []
        for i, ((im, obj, box), truth) in enumerate(zip(items, truths)):
            path = images / f"{name}-{i}.png"
            draw_box(im, box, width=3).save(path)
            lab = truth[CRIT]
            rows.append({"id": f"{name}-{i}", "group": f"{name}-g{i}", "image": str(path), "object": obj,
                         "box": list(box), "scene": "toy", "boxed": True, "synthetic": True, "final": lab.value,
                         f"label_{CRIT.value}": lab.value, f"designated_{CRIT.value}": lab.value,
                         f"analysis_{CRIT.value}": _SENTENCES[(CRIT, lab)].format(o=obj),
                         f"truth_{CRIT.value}": lab.value})
        write_table(pd.DataFrame(rows), split / f"{name}.parquet")
    (split / "manifest.json").write_text(json.dumps({"synthetic": True, "rule": "unanimous", "designated": "t1"}))
    return split


def _cli(*args: str):
    from typer.testing import CliRunner

    from scenefit.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module", params=FORMATS, ids=lambda f: f.value)
def pipeline(request, tiny_model_dir, tmp_path_factory):
    """datasets → train for one answer format; returns (format, root, data, students)."""
    fmt: AnswerFormat = request.param
    root = tmp_path_factory.mktemp(fmt.value)
    split = _split_dir(root)
    data, students = root / "datasets", root / "students"
    res = _cli("datasets", str(split), "--out", str(data), "--criteria", CRIT.value, "--answer-format", fmt.value)
    assert res.exit_code == 0, res.output
    conf = root / "c.yaml"
    conf.write_text(yaml.safe_dump({"train": {
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "modules_to_save": ["lm_head"]}, "max_steps": 4,
        "learning_rate": 1e-3, "warmup_ratio": 0.0, "per_device_batch_size": 4, "gradient_accumulation_steps": 1,
        "num_devices": 1, "effective_batch_size": 4, "per_device_eval_batch_size": 4, "eval_steps": 2,
        "logging_steps": 1, "early_stopping_patience": None, "metric_for_best_model": "eval_loss",
        "report_to": [], "seed": 0, "eval_max_new_tokens": 48}}))
    res = _cli("train", "--criterion", CRIT.value, "--data", str(data), "--model", str(tiny_model_dir),
               "--out", str(students), "--config", str(conf))
    assert res.exit_code == 0, res.output
    return fmt, root, data, students


def test_datasets_write_the_format_and_train_records_it(pipeline):
    fmt, _, data, students = pipeline
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["student"]["answer_format"] == fmt.value  # recorded once, for the whole run
    train = pd.read_parquet(data / CRIT.value / "train.parquet")
    assert "answer_format" not in train.columns
    for target, label in zip(train["target"], train["label"]):
        parsed = parse_student_answer(target, CRIT, fmt)
        assert parsed.status == "ok" and parsed.label is Label(label)
        # the format's decision line is where it says: first line, or last line
        line = target.splitlines()[0 if fmt is AnswerFormat.DECISION_FIRST else -1]
        assert line == ("Decision: " if fmt is AnswerFormat.DECISION_FIRST else "Final decision: ") + label
    meta = json.loads((students / CRIT.value / "scenefit_student.json").read_text())
    assert meta["answer_format"] == fmt.value
    # the student records how it was asked, as the datasets manifest says (the packaged prompts of its
    # format: reasoning-first ones in the authors' layout, image first and the template's system turn)
    asked = manifest["student"]
    assert (meta["prompt"], meta["system"], meta["image_position"], meta["prompt_version"]) == (
        asked["prompts"][CRIT.value], asked["system"], asked["image_position"], asked["prompt_version"])
    assert train["prompt"].iloc[0] == asked["prompts"][CRIT.value].replace("{object}", train["object"].iloc[0])
    if fmt is AnswerFormat.REASONING_FIRST:
        assert (meta["system"], meta["image_position"]) == (None, "before_text")
        assert train["system"].isna().all()
    assert meta["decision_prefix"] == ("Decision:" if fmt is AnswerFormat.DECISION_FIRST else "Final decision:")
    assert meta["synthetic"] is True
    metrics = json.loads((students / CRIT.value / "metrics.json").read_text())
    assert metrics["answer_format"] == fmt.value
    evals = metrics["eval_history"]
    assert [e["step"] for e in evals] == [2, 4]
    assert all(0.0 <= e["eval_decision_accuracy"] <= 1.0 for e in evals)
    # the unreadable decisions are counted (and scored wrong) in both formats: reasoning-first
    # reads generated text, decision-first counts a label the student would not write
    assert all(0 <= e["eval_decision_unreadable"] <= 4 for e in evals)
    if fmt is AnswerFormat.REASONING_FIRST:
        assert 0 <= metrics["test"]["student"]["unreadable"] <= 4
    card = (students / CRIT.value / "README.md").read_text()
    assert fmt.value in card


def test_evaluate_reads_the_format_from_the_student(pipeline):
    fmt, root, data, students = pipeline
    out = root / "report"
    res = _cli("evaluate", "--students", str(students), "--data", str(data), "--split", "test",
               "--criteria", CRIT.value, "--out", str(out), "--no-baseline", "--batch-size", "4", "--no-explain")
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["answer_formats"] == {CRIT.value: fmt.value}
    answers = pd.read_parquet(out / "answers.parquet")
    mine = answers[answers["model"] == "student"]
    assert len(mine) == 4
    if fmt is AnswerFormat.REASONING_FIRST:
        # generated even with --no-explain; no decision logits, so no probability
        assert mine["raw"].notna().all() and mine["p_out"].isna().all()
        assert "reasoning_first" in res.output
    else:
        assert mine["p_out"].notna().all() and mine["raw"].isna().all()


def _one_item(root: Path) -> tuple[Path, str, str]:
    from scenefit.testbed.toy_students import toy_items

    (im, obj, box), = toy_items(1, seed=77)[0]
    path = root / "predict.png"
    im.save(path)
    return path, obj, ",".join(map(str, box))


def test_predict_reads_the_format_and_refuses_a_fast_path_it_cannot_give(pipeline):
    fmt, root, _, students = pipeline
    image, obj, box = _one_item(root)
    args = ["predict", "--students", str(students), "--criteria", CRIT.value, "--image", str(image),
            "--object", obj, "--box", box, "--json", "--max-new-tokens", "48"]
    res = _cli(*args)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout[res.stdout.index("{"):])
    got = doc["criteria"][CRIT.value]
    assert got["label"] in (Label.IN.value, Label.OUT.value, None)
    fast = _cli(*args, "--no-explain")
    if fmt is AnswerFormat.REASONING_FIRST:
        assert got["probability"] is None  # read from the text, no decision logits
        assert "reasoning_first" in res.output
        assert fast.exit_code == 2
        assert "fast path" in fast.output and str((students / CRIT.value).resolve()) in fast.output
    else:
        assert 0.5 <= got["probability"] <= 1.0 and got["label"] is not None
        assert fast.exit_code == 0, fast.output


def test_the_server_answers_in_the_students_format(pipeline):
    import httpx
    from PIL import Image

    from scenefit.core.records import is_synthetic
    from scenefit.predict import PredictConfig, Predictor
    from scenefit.serve.app import create_app
    from scenefit.serve.openai_server import serve_in_thread

    fmt, root, _, students = pipeline
    predictor = Predictor.from_students(students, config=PredictConfig(criteria=[CRIT.value], device="cpu",
                                                                        max_new_tokens=48))
    image, obj, box = _one_item(root)
    buf = io.BytesIO()
    Image.open(image).save(buf, format="PNG")
    body = {"image": base64.b64encode(buf.getvalue()).decode(), "object": obj, "box": [int(v) for v in box.split(",")]}
    with serve_in_thread(create_app(predictor, synthetic=is_synthetic(*predictor.students.values()))) as base:
        r = httpx.post(f"{base}/v1/classify", json=body, timeout=300)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["notice"] == SYNTHETIC_NOTICE
    got = doc["criteria"][CRIT.value]
    direct = predictor.predict([(image, obj, tuple(body["box"]))])[0].to_json()["criteria"][CRIT.value]
    assert got["label"] == direct["label"]  # greedy generation / the fast path: the same answer served
    if fmt is AnswerFormat.REASONING_FIRST:
        assert got["probability"] is None and predictor.answer_format(CRIT) is AnswerFormat.REASONING_FIRST
    else:
        assert abs(got["probability"] - direct["probability"]) < 2e-3
