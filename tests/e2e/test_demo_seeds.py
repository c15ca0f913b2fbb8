"""benchmarks/demo_seeds.py end to end at toy sizes: seeds, the ablation and the probe into a
table between the markers of a markdown file, resumable.

    .venv/bin/python -m pytest tests/e2e/test_demo_seeds.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # three toy pipelines: minutes on a busy machine


def test_smoke_run_writes_the_table_between_the_markers_and_resumes(repo_root, tmp_path):
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\nkept above\n\n<!-- demo-seeds:begin -->\nold table\n<!-- demo-seeds:end -->\n\nkept below\n")
    out = tmp_path / "runs"
    cmd = [sys.executable, str(repo_root / "benchmarks" / "demo_seeds.py"), "--smoke", "--seeds", "1", "--out", str(out),
           "--doc", str(doc)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    assert first.returncode == 0, first.stderr[-3000:]
    text = doc.read_text()
    assert text.startswith("# Results\n\nkept above\n") and text.rstrip().endswith("kept below")
    assert "old table" not in text and text.count("<!-- demo-seeds:begin -->") == 1
    header = next(line for line in text.splitlines() if line.startswith("| criterion"))
    for column in ("students", "ablation", "linear probe", "designated teacher", "floor", "in-context share", "Out recall"):
        assert column in header, column
    rows = [line for line in text.splitlines() if line.startswith(("| location", "| size", "| co-occurrence", "| fused"))]
    assert len(rows) == 4 and all(row.count("|") == header.count("|") for row in rows)
    assert "SMOKE RUN" in text and "1 seed(s) [0]" in text
    results = json.loads((out / "results.json").read_text())
    assert set(results["runs"]) == {"0"} and results["ablation"]["stage1"]["person_ratio_bin"] is None  # not pretrained
    assert results["runs"]["0"]["stage1"]["person_ratio_bin"] is not None
    # a rerun finds every stage done: same table, no stage run again
    again = subprocess.run(cmd[:-2] + ["--no-write"], capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert ": model " not in again.stderr and rows[0] in again.stdout
    # a stage redone (here: its record removed, as a new config or code does) starts from nothing:
    # the verbs resume, so without clearing its outputs `train` would keep the finished students
    seed0 = out / "seed-0"
    (seed0 / ".done" / "train").unlink()
    stale = seed0 / "students" / "stale-marker.txt"
    stale.write_text("from the earlier run")
    redo = subprocess.run(cmd[:-2] + ["--no-write"], capture_output=True, text=True, env=env, timeout=1200)
    assert redo.returncode == 0, redo.stderr[-3000:]
    assert "seed-0: train " in redo.stderr and "seed-0: evaluate " in redo.stderr and ": model " not in redo.stderr
    assert not stale.exists() and (seed0 / "students" / "location" / "adapter_model.safetensors").is_file()
