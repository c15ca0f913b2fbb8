"""`scenefit train --jobs 2`: two students trained side by side, each in its own process, give the
students one-after-another training gives (the same adapter weights, tensor for tensor), the
summary on stdout as before, each student's output marked on stderr; a failing student fails alone.

    .venv/bin/python -m pytest tests/e2e/test_train_jobs.py -q
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from scenefit.train.jobs import job_env
from support.train_data import make_datasets, small_config

pytestmark = pytest.mark.slow


def _two_criteria(root: Path) -> Path:
    """location's small dataset, and the same rows again as size's (the trainer checks the column)."""
    data = make_datasets(root)
    (data / "size").mkdir()
    for split in ("train", "val", "test"):
        df = pd.read_parquet(data / "location" / f"{split}.parquet")
        df.assign(criterion="size").to_parquet(data / "size" / f"{split}.parquet")
    return data


def _train(data: Path, model: Path, out: Path, conf: Path, *extra: str) -> subprocess.CompletedProcess:
    # one torch thread for the one-after-another run too: a student must not depend on how it was run
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    args = ["train", "--criterion", "all", "--data", str(data), "--model", str(model), "--out", str(out),
            "--config", str(conf), *extra]
    return subprocess.run([sys.executable, "-m", "scenefit.cli", *args], env=env, capture_output=True, text=True,
                          timeout=1200)


def _tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_two_jobs_train_the_same_students_as_one_after_another(tiny_model_dir, tmp_path):
    data = _two_criteria(tmp_path)
    cfg = small_config(max_steps=4, eval_steps=2, score_test=True, report_to=[], criteria=["location", "size"])
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump({"train": cfg.model_dump(mode="json")}))

    alone = _train(data, tiny_model_dir, tmp_path / "alone", conf)
    assert alone.returncode == 0, alone.stderr[-3000:]
    side = _train(data, tiny_model_dir, tmp_path / "side", conf, "--jobs", "2")
    assert side.returncode == 0, side.stderr[-3000:]
    assert "2 at a time" in " ".join(side.stderr.split())
    assert "[location] " in side.stderr and "[size] " in side.stderr  # each student's lines marked

    summary = json.loads(side.stdout[side.stdout.index("{"):])
    assert set(summary) == {"location", "size"} and all(s["global_step"] == 4 for s in summary.values())
    for name in ("location", "size"):
        a, b = _tensors(tmp_path / "alone" / name), _tensors(tmp_path / "side" / name)
        assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a), name

    # a rerun finds both students finished and trains nothing
    again = _train(data, tiny_model_dir, tmp_path / "side", conf, "--jobs", "2")
    assert again.returncode == 0 and all(s["skipped"] for s in json.loads(again.stdout[again.stdout.index("{"):]).values())


def test_a_failing_student_fails_alone(tiny_model_dir, tmp_path):
    data = _two_criteria(tmp_path)
    shutil.rmtree(data / "size")  # size has no dataset: its process fails, location's trains
    cfg = small_config(max_steps=2, eval_steps=2, score_test=False, report_to=[], criteria=["location", "size"])
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump({"train": cfg.model_dump(mode="json")}))
    res = _train(data, tiny_model_dir, tmp_path / "out", conf, "--jobs", "2")
    assert res.returncode == 1
    summary = json.loads(res.stdout[res.stdout.index("{"):])
    assert summary["location"]["global_step"] == 2 and "exit status 1" in summary["size"]["error"]
    assert "size/train.parquet" in "".join(res.stderr.split())


def test_each_process_gets_its_share_of_the_cores_and_its_own_gpu():
    env = job_env(1, 2, base={}, cpus=2, gpus=["0", "1", "2"])
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1" and env["CUDA_VISIBLE_DEVICES"] == "1"
    assert job_env(3, 2, base={}, cpus=16, gpus=["0", "1", "2"])["CUDA_VISIBLE_DEVICES"] == "0"
    assert job_env(0, 4, base={}, cpus=16, gpus=[])["OMP_NUM_THREADS"] == "4" and \
        "CUDA_VISIBLE_DEVICES" not in job_env(0, 4, base={}, cpus=16, gpus=[])
