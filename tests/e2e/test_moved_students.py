"""A finished run copied elsewhere, its original hidden: predict, evaluate and serve find the
students' base from a third folder with no flags (issue 26 item 1).

    .venv/bin/python -m pytest tests/e2e/test_moved_students.py -q
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from scenefit.cli import app

pytestmark = pytest.mark.slow

runner = CliRunner()


def _run(*argv: str):
    res = runner.invoke(app, list(argv))
    return res


@pytest.fixture(scope="module")
def moved(tmp_path_factory, tiny_model_dir) -> dict:
    """run/{model,datasets,students}: trained from inside run/ with the relative `--model model`
    (as `make demo` names runs/demo/model), then copied to elsewhere/run2 and the original renamed."""
    from support.train_data import make_datasets, small_config

    root = tmp_path_factory.mktemp("moved")
    run = root / "first" / "run"
    shutil.copytree(tiny_model_dir, run / "model")
    make_datasets(run)
    cfg = small_config(max_steps=2, eval_steps=2, score_test=False).model_dump(mode="json")
    (run / "train.yaml").write_text(yaml.safe_dump({"train": cfg}))
    old = Path.cwd()
    os.chdir(run)
    try:
        res = _run("train", "--criterion", "location", "--data", "datasets", "--model", "model", "--out", "students",
                   "--config", "train.yaml")
    finally:
        os.chdir(old)
    assert res.exit_code == 0, res.output
    copy = root / "elsewhere" / "run2"
    shutil.copytree(run, copy)
    hidden = run.with_name("run-hidden")
    run.rename(hidden)
    third = root / "third"
    third.mkdir()
    (third / "predict.yaml").write_text(yaml.safe_dump({"predict": {"criteria": ["location"], "device": "cpu"}}))
    return {"run": copy, "old": run, "third": third}


def test_the_student_records_its_base_three_ways(moved):
    meta = json.loads((moved["run"] / "students" / "location" / "scenefit_student.json").read_text())
    assert meta["base_model"] == "model"  # the folder's own name, not a path relative to where train ran
    assert meta["base_model_relative"] == os.path.join("..", "model")
    assert meta["base_model_path"] == str(moved["old"] / "model")  # the absolute path it was trained from
    adapter = json.loads((moved["run"] / "students" / "location" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(moved["old"] / "model")  # what PEFT loads from any folder


def test_predict_and_evaluate_from_a_third_folder_without_flags(moved, monkeypatch):
    from PIL import Image

    run = moved["run"]
    monkeypatch.chdir(moved["third"])
    image = next((run / "images").glob("test-*.png"))
    res = _run("predict", "--students", str(run / "students"), "--criteria", "location", "--image", str(image),
               "--object", "cow", "--boxed", "--json", "--device", "cpu")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["criteria"]["location"]["label"] in ("In-context", "Out-of-context")
    assert Image.open(image).size == (112, 112)
    res = _run("evaluate", "--students", str(run / "students"), "--data", str(run / "datasets"), "--out", "report",
               "--criteria", "location", "--no-baseline", "--no-explain", "--device", "cpu")
    assert res.exit_code == 0, res.output
    metrics = json.loads(Path("report/metrics.json").read_text())
    assert metrics["base_model"] == str(run / "model")  # found relative to the moved students folder


def test_serve_from_a_third_folder_and_a_missing_base_is_named(moved, tmp_path):
    import httpx
    from PIL import Image

    run, third = moved["run"], moved["third"]
    exe = Path(sys.executable).with_name("scenefit")
    proc = subprocess.Popen([str(exe), "serve", "--students", str(run / "students"), "--port", "0",
                             "--config", "predict.yaml"], cwd=third, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("serving http://127.0.0.1:"), line
        buf = io.BytesIO()
        Image.open(next((run / "images").glob("test-*.png"))).save(buf, format="PNG")
        with httpx.Client(base_url=line.split()[1], timeout=300) as c:
            r = c.post("/v1/classify", json={"image": base64.b64encode(buf.getvalue()).decode(), "object": "cow"})
        assert r.status_code == 200, r.text
        assert set(r.json()["criteria"]) == {"location"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    # the same students with their base gone from both places: every place tried is named, and --base
    students = tmp_path / "lost" / "students"
    shutil.copytree(run / "students", students)
    res = subprocess.run([str(exe), "serve", "--students", str(students), "--port", "0", "--config", "predict.yaml"],
                         cwd=third, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "COLUMNS": "1000"})
    assert res.returncode != 0
    err = " ".join((res.stdout + res.stderr).split())
    assert "cannot listen" not in err
    assert "--base" in err and str(tmp_path / "lost" / "model") in err and str(moved["old"] / "model") in err
    assert "no hub id" in err
