"""A student `scenefit train` wrote loads as its model card shows: the card's Python block, run
exactly as written from the student's folder with PEFT and transformers only, judges one image
as scenefit's Predictor does (issue 26 item 4).

    .venv/bin/python -m pytest tests/e2e/test_student_card.py -q
"""

from __future__ import annotations

import contextlib
import io
import re

import pytest

from scenefit.core.criteria import Criterion

pytestmark = pytest.mark.slow


def test_the_trained_students_card_code_runs_and_decides_as_predict(tiny_model_dir, tmp_path, monkeypatch):
    from scenefit.predict import Predictor
    from scenefit.train.trainer import train_student
    from support.train_data import make_datasets, small_config

    data = make_datasets(tmp_path / "data")
    res = train_student("location", data, str(tiny_model_dir), tmp_path / "students",
                        small_config(max_steps=2, eval_steps=2, score_test=False))
    card = (res.out_dir / "README.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", card.split("## Use", 1)[1], flags=re.S)
    monkeypatch.chdir(res.out_dir)
    namespace: dict = {"__name__": "__main__"}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), namespace)
    assert printed.getvalue().startswith(f"location: {namespace['label']} ")
    pred = Predictor.from_students({Criterion.LOCATION: res.out_dir}, criteria=["location"], device="cpu")
    got = pred.predict([(namespace["image"], "cow", None, True)])[0].criteria[Criterion.LOCATION]
    assert got.label.value == namespace["label"] and got.p_out == pytest.approx(namespace["p_out"], abs=1e-4)
