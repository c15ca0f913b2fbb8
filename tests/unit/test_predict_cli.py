"""`scenefit predict` on the command line: JSON when piped, files out, bad items, --help.

    .venv/bin/python -m pytest tests/unit/test_predict_cli.py -q
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from scenefit.cli import app

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def students(random_head_students):
    return random_head_students


@pytest.fixture()
def images(tmp_path):
    ok = tmp_path / "ok.png"
    Image.new("RGB", (120, 90), (60, 140, 60)).save(ok)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    return tmp_path


def test_help_lists_the_flags():
    r = runner.invoke(app, ["predict", "--help"])
    assert r.exit_code == 0
    for flag in ("--image", "--object", "--box", "--boxed", "--manifest", "--out", "--explain", "--students", "--demo", "--json"):
        assert flag in r.output
    r = runner.invoke(app, ["export-vllm", "--help"])
    assert r.exit_code == 0 and "--force" in r.output and "--students" in r.output


def test_one_image_prints_the_json_contract(students, images):
    r = runner.invoke(app, ["predict", "--students", str(students), "--image", str(images / "ok.png"),
                            "--object", "cow", "--box", "10,10,60,70", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert set(doc) == {"criteria", "final"}
    assert set(doc["criteria"]) == {"location", "size", "co_occurrence"}
    for v in doc["criteria"].values():
        assert set(v) == {"label", "probability", "decision", "analysis", "analysis_status"} and v["label"] in ("In-context", "Out-of-context")
    assert "SYNTHETIC" in r.stderr  # toy students: the output says where it comes from


def test_a_nan_box_is_one_item_error_not_a_crash(students, images):
    # `--box nan,0,10,10` is four numbers to read, so the item is judged and refused by the box
    # rule: an error row and exit 1, never a traceback
    r = runner.invoke(app, ["predict", "--students", str(students), "--image", str(images / "ok.png"),
                            "--object", "cow", "--box", "nan,0,10,10", "--json"])
    assert r.exit_code == 1, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert "not a finite number" in r.stderr and "bad_box" in r.stderr


def test_explain_adds_analyses(students, images):
    r = runner.invoke(app, ["predict", "--students", str(students), "--image", str(images / "ok.png"),
                            "--object", "cow", "--boxed", "--explain", "--max-new-tokens", "8", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    # random adapters write no readable answer; the raw text is kept in --out, the JSON says why it is missing
    size = doc["criteria"]["size"]
    assert set(size) == {"label", "probability", "decision", "analysis", "analysis_status", "text_label", "text_agrees"}
    assert size["analysis"] is not None or size["analysis_status"] not in ("ok", "not_requested")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_manifest_to_file_with_bad_items(students, images, suffix):
    manifest = images / "items.jsonl"
    rows = [
        {"id": "good", "image": "ok.png", "object": "cow", "box": [10, 10, 60, 70]},
        {"id": "gone", "image": "missing.png", "object": "cow", "box": [10, 10, 60, 70]},
        {"id": "far", "image": "ok.png", "object": "cow", "box": [500, 500, 600, 600]},
        {"id": "broken", "image": "broken.png", "object": "cow", "box": [1, 1, 5, 5]},
        {"id": "bad-row", "image": "ok.png", "object": "cow", "box": [5, 5, 1, 1]},
        {"id": "good2", "image": "ok.png", "object": "dog", "boxed": True},
    ]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = images / f"preds{suffix}"
    r = runner.invoke(app, ["predict", "--students", str(students), "--manifest", str(manifest), "--out", str(out),
                            "--batch-size", "2"])
    assert r.exit_code == 1, r.output  # some items could not be judged
    for name in ("gone", "far", "broken", "bad-row"):
        assert f"{name}" in r.stderr
    assert "judged 2 item(s), 4 could not be judged" in " ".join(r.stderr.split())
    frame = {".jsonl": lambda p: pd.read_json(p, lines=True), ".csv": pd.read_csv, ".parquet": pd.read_parquet}[suffix](out)
    assert len(frame) == 6
    by_id = frame.set_index("id")
    assert by_id.loc["good", "final"] in ("In-context", "Out-of-context")
    assert by_id.loc["good2", "size_label"] in ("In-context", "Out-of-context")
    assert by_id.loc["gone", "code"] == "not_found"
    assert by_id.loc["far", "code"] == "box_outside"
    assert by_id.loc["broken", "code"] in ("corrupt", "truncated")
    assert by_id.loc["bad-row", "code"] == "bad_box"
    summary = json.loads(r.stdout)
    assert summary == {"out": str(out), "rows": 6, "judged": 2, "errors": 4}


def test_manifest_json_to_stdout_and_demo_dir(students, images, monkeypatch):
    manifest = images / "items.csv"
    manifest.write_text("id,image,object,box\na,ok.png,cow,\"10,10,60,70\"\n")
    monkeypatch.setenv("DEMO_DIR", str(students.parent))
    demo = students.parent / "students"
    if not demo.exists():
        demo.symlink_to(students)
    r = runner.invoke(app, ["predict", "--demo", "--manifest", str(manifest)])
    assert r.exit_code == 0, r.output
    docs = json.loads(r.stdout)
    assert [d["id"] for d in docs] == ["a"] and set(docs[0]) == {"id", "criteria", "final"}


def test_usage_errors_exit_2(students, images, tmp_path):
    cases = [
        ["predict", "--image", str(images / "ok.png"), "--object", "cow", "--box", "1,1,5,5"],  # no students
        ["predict", "--students", str(students), "--image", str(images / "ok.png"), "--box", "1,1,5,5"],  # no object
        ["predict", "--students", str(students), "--image", str(images / "ok.png"), "--object", "cow"],  # no box
        ["predict", "--students", str(students), "--image", str(images / "ok.png"), "--object", "cow", "--box", "1,2"],
        ["predict", "--students", str(tmp_path / "none"), "--image", str(images / "ok.png"), "--object", "c", "--boxed"],
        ["predict", "--demo", "--students", str(students), "--image", str(images / "ok.png"), "--object", "c", "--boxed"],
        ["export-vllm", "--demo", "--students", str(students), "--out", str(tmp_path / "v.json")],
    ]
    for argv in cases:
        r = runner.invoke(app, argv)
        assert r.exit_code == 2, (argv, r.output)
        assert "error" in r.stderr
    # a device this machine lacks is named before any weights load, not a torch traceback
    for device, said in [("bogus", "is not a torch device"), ("cuda:7", "cuda:7")]:
        if device.startswith("cuda") and torch.cuda.device_count() > 7:
            continue  # this machine has the device
        r = runner.invoke(app, ["predict", "--students", str(students), "--image", str(images / "ok.png"),
                                "--object", "cow", "--boxed", "--device", device])
        assert r.exit_code == 2 and said in r.stderr and "Traceback" not in r.output, (device, r.output)
