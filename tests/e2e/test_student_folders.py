"""Student folders that cannot be served say so, naming the file (issue 27.6): no
``scenefit_student.json`` is refused (never served with guessed defaults), an empty or damaged
adapter file is a clear error, not a library traceback.

    .venv/bin/python -m pytest tests/e2e/test_student_folders.py -q
"""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from scenefit.student.metadata import STUDENT_META, StudentError, read_student

pytestmark = pytest.mark.slow


@pytest.fixture()
def students(random_head_students, tmp_path):
    copy = tmp_path / "students"
    shutil.copytree(random_head_students, copy)
    return copy


def test_a_student_without_its_metadata_is_refused(students):
    (students / "size" / STUDENT_META).unlink()
    with pytest.raises(StudentError, match=f"{students / 'size'}: no {STUDENT_META}.*\"criterion\": \"size\""):
        read_student(students / "size")
    from scenefit.cli import app

    r = CliRunner().invoke(app, ["predict", "--students", str(students), "--image", "x.png", "--object", "dog", "--boxed"])
    assert r.exit_code == 2 and f"no {STUDENT_META}" in " ".join(r.output.split()), r.output


def test_an_empty_adapter_file_names_itself(students):
    weights = students / "location" / "adapter_model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(StudentError, match=f"{weights}: the adapter weights file is empty"):
        read_student(students / "location")


def test_a_damaged_adapter_file_is_a_student_error(students):
    from scenefit.predict import Predictor

    (students / "co_occurrence" / "adapter_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(StudentError, match="co_occurrence adapter cannot be loaded"):
        Predictor.from_students(students, device="cpu")


def test_serve_refuses_such_students_with_one_line(students, monkeypatch):
    from scenefit.cli import app

    (students / "location" / "adapter_model.safetensors").write_bytes(b"")
    monkeypatch.delenv("SCENEFIT_API_TOKEN", raising=False)
    r = CliRunner().invoke(app, ["serve", "--students", str(students), "--port", "0"])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert "adapter weights file is empty" in " ".join(r.output.split())
    meta = json.loads((students / "size" / STUDENT_META).read_text())
    assert meta["criterion"] == "size"  # the other students are left as they were
