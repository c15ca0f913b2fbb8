"""`scenefit run` as a user drives it: killed mid-stage, a stage that fails, the same command
continuing, --from/--to, and `scenefit status` along the way — ending with the same tables as a
run that was never interrupted.

    .venv/bin/python -m pytest tests/e2e/test_run_resume.py -q

The run is the synthetic world with simulated teachers up to the student datasets (no model:
the stages that train and serve are proved in test_wheel_own_data.py); the teachers answer
slowly (delay_s) so that the kill lands inside annotate.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from scenefit.teachers.store import stored_answers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # three runs and a few reruns

CONFIG = """\
world: {n: 40, seed: 3, image_size: 112, samples_per_group: 2, originals: false,
        violation_rates: {location: 0.3, size: 0.3, co_occurrence: 0.3}}
ingest: {box_width: 2, workers: 1}
annotate:
  commit_every: 4
  commit_interval_s: 0.5
  teachers:
    - {name: qwen72b-sim, backend: simulated, persona: qwen72b-sim, concurrency: 1, delay_s: 0.15}
    - {name: molmo72b-sim, backend: simulated, persona: molmo72b-sim, concurrency: 1, delay_s: 0.15}
consensus: {rule: unanimous_final, designated: qwen72b-sim}
split: {seed: 0, fractions: {train: 0.6, val: 0.2, test: 0.2}, allow_fewer: true}
datasets: {rebalance: [train, val]}
"""
TABLES = ["ingest/manifest.parquet", "consensus/consensus.parquet", "split/train.parquet", "split/val.parquet",
          "split/test.parquet", "datasets/location/train.parquet", "datasets/size/test.parquet",
          "datasets/co_occurrence/val.parquet"]


def scenefit(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("scenefit")
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=900, **kw)


def answers(run: Path) -> pd.DataFrame:
    con = sqlite3.connect(f"file:{run / 'annotate' / 'annotations.sqlite'}?mode=ro", uri=True)
    try:
        df = pd.read_sql("SELECT sample_id, teacher, prompt_hash, raw, status, final FROM annotations", con)
    finally:
        con.close()
    return df.sort_values(["sample_id", "teacher"]).reset_index(drop=True)


def stored(run: Path) -> int:
    return stored_answers(run / "annotate" / "annotations.sqlite")


def table(run: Path, name: str) -> pd.DataFrame:
    df = pd.read_parquet(run / name)
    return df.sort_values("id").reset_index(drop=True) if "id" in df else df


def status(run: Path, cwd: Path) -> dict[str, str]:
    r = scenefit("status", str(run), "--json", cwd=cwd)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    return {s["stage"]: s["status"] for s in out["stages"]} | {"next": "\n".join(out["next"])}


def test_killed_and_failed_runs_continue_with_the_same_command_to_the_same_tables(tmp_path):
    (tmp_path / "cfg.yaml").write_text(CONFIG)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cmd = ["run", "--config", "cfg.yaml", "--out", "cut", "--to", "datasets"]

    # the reference: one uninterrupted run
    ref = scenefit("run", "--config", "cfg.yaml", "--out", "ref", "--to", "datasets", cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr
    total = stored(tmp_path / "ref")
    assert total == 80  # 40 samples x 2 teachers

    # killed (the whole process group, as a closed terminal or `kill -9` of a job) inside annotate
    exe = Path(sys.executable).with_name("scenefit")
    proc = subprocess.Popen([str(exe), *cmd], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 600
    while stored(tmp_path / "cut") < 8:
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "annotate never stored an answer"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    cut = tmp_path / "cut"
    kept = stored(cut)
    assert 8 <= kept < total
    st = status(cut, elsewhere)  # read from another folder
    assert (st["synth"], st["ingest"], st["annotate"], st["consensus"]) == ("done", "done", "partial", "not started")
    assert f"scenefit run --out {cut}" in st["next"] and "continues with annotate" in st["next"]

    # a stage that fails (its output folder is blocked by a file): the run stops there, shows the
    # end of its log and how to continue, and exits non-zero
    (cut / "split").write_text("not a folder")
    failed = scenefit(*cmd, cwd=tmp_path)
    assert failed.returncode != 0
    err = failed.stderr
    assert "done earlier" in err and "annotate" in err and "FAILED (exit" in err and "split failed" in err
    assert f"continue with: scenefit run --out {cut}" in err
    assert "Traceback" in err or "Error" in err  # the end of the stage's log
    assert stored(cut) == total  # annotate resumed and finished before
    log = (cut / "logs" / "03-annotate.log").read_text()
    assert log.count("=== ") >= 3  # two attempts: started, exit 0 (the killed one never wrote its exit)

    # the cause removed, the same command continues from the failed stage
    (cut / "split").unlink()
    again = scenefit(*cmd, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    for kept_stage in ("synth", "ingest", "annotate", "consensus"):
        assert any(line.split()[1:3] == [kept_stage, "–"] for line in again.stderr.splitlines()), (kept_stage, again.stderr)
    st = status(cut, elsewhere)
    assert all(st[s] == "done" for s in ("synth", "ingest", "annotate", "consensus", "split", "datasets"))
    assert st["train"] == "not started" and "continues with train" in st["next"]

    # the same tables as the uninterrupted run
    pd.testing.assert_frame_equal(answers(cut), answers(tmp_path / "ref"))
    for name in TABLES:
        pd.testing.assert_frame_equal(table(cut, name), table(tmp_path / "ref", name), obj=name)

    # a finished stage is a no-op: the rerun keeps everything
    before = {p: p.stat().st_mtime_ns for p in (cut / "split").iterdir()}
    noop = scenefit(*cmd, cwd=elsewhere.parent)
    assert noop.returncode == 0 and {p: p.stat().st_mtime_ns for p in (cut / "split").iterdir()} == before

    # --from/--to: consensus and split run again (also when done), datasets is left as it was
    datasets_mark = (cut / "datasets" / "manifest.json").stat().st_mtime_ns
    redo = scenefit("run", "--out", str(cut), "--from", "consensus", "--to", "split", cwd=elsewhere)
    assert redo.returncode == 0, redo.stderr
    assert "stopped after split (--to)" in redo.stderr and "--from datasets runs them again" in redo.stderr
    assert (cut / "logs" / "04-consensus.log").read_text().count("=== exit 0") == 2
    assert (cut / "datasets" / "manifest.json").stat().st_mtime_ns == datasets_mark
    pd.testing.assert_frame_equal(table(cut, "split/train.parquet"), table(tmp_path / "ref", "split/train.parquet"))


def test_a_signal_to_the_runner_alone_reaches_its_stage_and_the_run_says_how_to_continue(tmp_path):
    """SIGTERM to the runner (not its group): the stage gets it too and ends, the run exits 143,
    says the stage was interrupted and prints the command that continues; the stage's process is gone."""
    import psutil

    (tmp_path / "cfg.yaml").write_text(CONFIG.replace("n: 40", "n: 16"))
    exe = Path(sys.executable).with_name("scenefit")
    proc = subprocess.Popen([str(exe), "run", "--config", "cfg.yaml", "--out", "r", "--to", "annotate"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 600
    while stored(tmp_path / "r") < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "annotate never stored an answer"
        time.sleep(0.2)
    stage = [c for c in psutil.Process(proc.pid).children() if "annotate" in " ".join(c.cmdline())]
    assert len(stage) == 1
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "annotate" in err and "interrupted" in err and f"continue with: scenefit run --out {tmp_path / 'r'}" in err
    stage[0].wait(timeout=60)  # raises if it were still running
    assert (tmp_path / "r" / "logs" / "03-annotate.log").read_text().rstrip().splitlines()[-1].startswith("=== exit 143")
    assert 2 <= stored(tmp_path / "r") < 32


def test_a_world_left_half_drawn_is_continued_by_the_same_command(tmp_path):
    """A kill inside synth leaves RUN/world/ with images but no world.json (synth writes it last);
    the same `scenefit run` draws the world again there instead of refusing a non-empty folder."""
    (tmp_path / "cfg.yaml").write_text(CONFIG.replace("n: 40", "n: 8"))
    cmd = ["run", "--config", "cfg.yaml", "--out", "r", "--to", "synth"]
    first = scenefit(*cmd, cwd=tmp_path, env=dict(os.environ, COLUMNS="80"))  # output to a file: 80 columns
    assert first.returncode == 0, first.stderr
    assert f"scenefit run -> {tmp_path / 'r'}   settings" in first.stderr  # a path is never broken across lines
    world = tmp_path / "r" / "world"
    reference = table(tmp_path / "r", "world/manifest.parquet")
    for name in ("world.json", "manifest.parquet", "layout.jsonl"):  # what a kill before the end leaves out
        (world / name).unlink()
    assert status(tmp_path / "r", tmp_path)["synth"] == "partial"
    again = scenefit(*cmd, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (world / "world.json").is_file() and status(tmp_path / "r", tmp_path)["synth"] == "done"
    pd.testing.assert_frame_equal(table(tmp_path / "r", "world/manifest.parquet"), reference)


def test_an_ingest_that_kept_nothing_runs_again_once_the_photos_are_there(tmp_path):
    """`scenefit init` then `scenefit run` before the photos are in images/: ingest rejects every
    row (not_found) and is not done; with the photos in place the same command ingests them."""
    from PIL import Image

    assert scenefit("init", "proj", cwd=tmp_path).returncode == 0
    cmd = ["run", "--config", "proj/scenefit.yaml", "--out", "r", "--to", "ingest"]
    first = scenefit(*cmd, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "0 samples kept, 3 rejected" in first.stderr
    st = status(tmp_path / "r", tmp_path)
    assert st["ingest"] == "partial" and "continues with ingest" in st["next"]
    for name in ("kitchen-1", "kitchen-2", "beach-1"):  # the example manifest's photos
        Image.new("RGB", (640, 480), (120, 140, 90)).save(tmp_path / "proj" / "images" / f"{name}.jpg")
    again = scenefit(*cmd, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "3 samples kept, 0 rejected" in again.stderr and status(tmp_path / "r", tmp_path)["ingest"] == "done"
