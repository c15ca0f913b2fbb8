"""The model card's Python runs as written with plain PEFT and transformers, inside the student's
folder, and decides as scenefit's Predictor does (issue 26 item 4).

    .venv/bin/python -m pytest tests/unit/test_card_snippet.py -q
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from scenefit.core.criteria import Criterion


def card_code(card: str) -> str:
    """The one ```python block under the card's '## Use' heading."""
    use = card.split("## Use", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", use, flags=re.S)
    assert len(blocks) == 1, blocks
    return blocks[0]


def run_in(folder: Path, code: str, monkeypatch) -> tuple[dict, str]:
    """exec ``code`` exactly as written, from ``folder``; (its namespace, what it printed)."""
    monkeypatch.chdir(folder)
    namespace: dict = {"__name__": "__main__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "model-card", "exec"), namespace)
    return namespace, out.getvalue()


def test_the_decision_first_snippet_decides_as_the_predictor(random_head_students, monkeypatch):
    from scenefit.predict import Predictor
    from scenefit.student.metadata import read_student_meta
    from scenefit.train.card import usage_snippet

    folder = random_head_students / "size"
    code = usage_snippet(read_student_meta(folder))
    assert "scenefit" not in code  # plain PEFT + transformers
    ns, printed = run_in(folder, code, monkeypatch)
    assert printed.startswith(f"size: {ns['label']} P(Out-of-context) = ")
    pred = Predictor.from_students({Criterion.SIZE: folder}, criteria=["size"], device="cpu")
    res = pred.predict([(ns["image"], "cow", None, True)])[0].criteria[Criterion.SIZE]
    assert res.label.value == ns["label"] and res.p_out == pytest.approx(ns["p_out"], abs=1e-4)


def test_the_reasoning_first_snippet_runs(tiny_model_dir, tmp_path, monkeypatch):
    from scenefit.student.metadata import read_student_meta
    from scenefit.testbed.toy_students import build_toy_students
    from scenefit.train.card import usage_snippet

    students = build_toy_students(tiny_model_dir, tmp_path / "rf", criteria=[Criterion.LOCATION], steps=0, rank=4,
                                  answer_format="reasoning_first")
    folder = students / "location"
    ns, printed = run_in(folder, usage_snippet(read_student_meta(folder)), monkeypatch)
    assert printed.startswith("location: ") and ns["label"] in ("In-context", "Out-of-context", None)
