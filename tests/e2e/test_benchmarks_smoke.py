"""Every benchmark script at its smallest size, through the runner `make bench` uses
(`benchmarks/run_all.py --smoke`): each exits 0 and prints its ratio lines, the runner writes the
generated section of a RESULTS file between its markers, and the GPU script's CPU dry run goes
through every section and writes its JSON and Markdown. Checks that the benchmarks run, never a
speed. Marked slow: a dozen processes build small models (a few minutes on 2 loaded cores).

    .venv/bin/python -m pytest tests/e2e/test_benchmarks_smoke.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import run_all  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def test_every_benchmark_runs_at_its_smallest_size_and_prints_its_ratio_lines(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text(f"# Benchmark results\n\nintro by hand\n\n{run_all.BEGIN}\nstale figures\n{run_all.END}\n\nnotes\n")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run_all.py"), "--smoke", "--out", str(out),
                           "--results", str(results)], cwd=REPO, capture_output=True, text=True, timeout=2300)
    assert (out / "run_all.json").is_file(), proc.stdout[-4000:] + proc.stderr[-2000:]
    run = json.loads((out / "run_all.json").read_text())
    assert [r["script"] for r in run["results"]] == [p.stem for p in run_all.discover()]
    for r in run["results"]:
        assert r["mode"] == "smoke" and r["args"] == ["--smoke"]
        # ratio lines, or a SKIPPED line where an optional extra (ray, vllm) is not installed
        assert r["problem"] is None and r["rc"] == 0 and (r["ratios"] or r["skipped"]), \
            f"{r['script']}: {r['problem']}\n{proc.stdout[-4000:]}"
    assert proc.returncode == 0
    assert not (out / "_cache").exists()  # the shared models are removed after the run

    text = results.read_text()
    section = text.split(run_all.BEGIN, 1)[1].split(run_all.END, 1)[0]
    assert "stale figures" not in text and "intro by hand" in text and text.rstrip().endswith("notes")
    assert "smoke mode" in section and "Versions: Python" in section
    for r in run["results"]:
        for line in r["ratios"]:
            assert f"`{line['name']}`" in section

    gpu = json.loads((out / "gpu_all" / "gpu_all.json").read_text())
    assert gpu["dry_run"] is True and not gpu["failed"]
    assert {"fast", "train", "explain", "reference"} <= set(gpu["sections"])
    assert len(gpu["sections"]["train"]["rows"]) == 2  # scenefit train (packing) and plain TRL
    assert {"transformers", "packed"} == set(gpu["sections"]["fast"]["breakdown"])
    assert "vllm" in gpu["sections"] or "vLLM is not installed" in gpu["skipped"].get("vllm", "")
    markdown = (out / "gpu_all" / "gpu_all.md").read_text()
    assert "DRY RUN" in markdown and "| packed |" in markdown and "plain TRL SFTTrainer" in markdown

    # a device run's JSON becomes RESULTS.md's GPU section, between its own markers
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_all.py"), "--write-results",
                    str(out / "gpu_all" / "gpu_all.json"), "--results", str(results)], cwd=REPO, check=True, timeout=120)
    text = results.read_text()
    assert text.count("<!-- BEGIN gpu_all") == 1 and "DRY RUN" in text.split("<!-- BEGIN gpu_all", 1)[1]
    assert "intro by hand" in text and "`consensus_rules.naive_vs_vectorised`" in text
