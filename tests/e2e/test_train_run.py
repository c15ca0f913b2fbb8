"""Training runs of a tiny student on CPU: outputs, resume after a kill, the CLI, learning.

    .venv/bin/python -m pytest tests/e2e/test_train_run.py -q

The dataset is drawn here with PIL (a red box high in the sky vs standing on the ground), in
the student dataset format that ``scenefit datasets`` writes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support.train_data import make_datasets, small_config  # noqa: F401

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def datasets_dir(tmp_path_factory) -> Path:
    return make_datasets(tmp_path_factory.mktemp("train_data"))

def test_train_writes_a_complete_student(datasets_dir, tiny_model_dir, tmp_path):
    from scenefit.train.trainer import train_student

    cfg = small_config()
    res = train_student("location", datasets_dir, str(tiny_model_dir), tmp_path / "students", cfg)
    out = tmp_path / "students" / "location"
    assert res.out_dir == out and not res.skipped
    for name in ("adapter_config.json", "adapter_model.safetensors", "processor_config.json", "tokenizer_config.json",
                 "README.md", "config.yaml", "metrics.json", "dataset_manifest.json", "scenefit_student.json", "log.jsonl"):
        assert (out / name).is_file(), name
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert "visual" not in str(adapter["target_modules"])
    assert adapter["modules_to_save"] == ["lm_head"]
    info = json.loads((out / "scenefit_student.json").read_text())
    assert info["criterion"] == "location" and info["base_model_path"] == str(tiny_model_dir)
    assert info["base_model"] == tiny_model_dir.name and adapter["base_model_name_or_path"] == str(tiny_model_dir)
    assert info["decision_prefix"] == "Decision:" and set(info["label_continuations"]) == {"In-context", "Out-of-context"}
    assert info["synthetic"] is True and info["vllm_servable"] is False and "vLLM" in info["vllm_note"]
    assert all(".language_model.layers." in t for t in info["lora"]["targets"])
    # Model card: YAML front matter a hub reads.
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    # a local base is no hub id: the front matter leaves base_model out, the text names the folder
    assert "base_model" not in front and front["library_name"] == "peft" and str(tiny_model_dir) in card
    assert "synthetic" in front["tags"] and "SYNTHETIC WORLD" in card and "vLLM" in card
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 6
    # every row counted before training; all fit the default length, none cut or left out
    assert metrics["length"]["train"]["kept"] == metrics["train_rows"] and metrics["length"]["train"]["dropped"] == 0
    evals = metrics["eval_history"]
    assert [e["step"] for e in evals] == [2, 4, 6]
    assert all(0.0 <= e["eval_decision_accuracy"] <= 1.0 for e in evals)
    assert all(0.0 <= e["eval_decision_balanced_accuracy"] <= 1.0 for e in evals)
    assert metrics["best_metric"]["name"] == "eval_loss"
    assert metrics["best_metric"]["value"] == min(e["eval_loss"] for e in evals)
    assert metrics["test"]["n"] == 8 and metrics["test"]["base"]["accuracy"] is not None
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["max_steps"] == 6 and resolved["lora"]["r"] == 8
    manifest = json.loads((out / "dataset_manifest.json").read_text())
    assert set(manifest["files"]) == {"train", "val", "test"} and len(manifest["files"]["train"]["sha256"]) == 64
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in log) and any("eval_decision_accuracy" in r for r in log)
    assert list((out / "trainer").rglob("events.out.tfevents.*")), "tensorboard events"
    # A rerun skips the finished student.
    again = train_student("location", datasets_dir, str(tiny_model_dir), tmp_path / "students", cfg)
    assert again.skipped and again.metrics["global_step"] == 6

def test_base_scores_equal_a_fresh_base_model(datasets_dir, tiny_model_dir, tmp_path):
    """The 'untrained base' baseline (adapter disabled, lm_head copy off) is the real base."""
    from peft import PeftModel

    from scenefit.models.loading import load_model, load_processor
    from scenefit.student.decision import score_rows
    from scenefit.train.data import read_split
    from scenefit.train.trainer import train_student

    cfg = small_config(max_steps=4, score_test=False)
    train_student("location", datasets_dir, str(tiny_model_dir), tmp_path / "s", cfg)
    rows = read_split(datasets_dir, "location", "test").to_dict("records")
    proc = load_processor(tmp_path / "s" / "location")
    fresh = score_rows(load_model(tiny_model_dir, "fp32", "cpu"), proc, rows)
    student = PeftModel.from_pretrained(load_model(tiny_model_dir, "fp32", "cpu"), str(tmp_path / "s" / "location"))
    with student.disable_adapter():
        disabled = score_rows(student, proc, rows)
    trained = score_rows(student, proc, rows)
    assert [p["p_out"] for p in disabled] == pytest.approx([p["p_out"] for p in fresh], abs=1e-5)
    assert [p["p_out"] for p in trained] != pytest.approx([p["p_out"] for p in fresh], abs=1e-5)

def _run_cli(args: list[str], env_extra: dict | None = None, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env_extra or {})}
    scenefit = Path(sys.executable).parent / "scenefit"
    return subprocess.run([str(scenefit), "train", *args], env=env, capture_output=True, text=True, **kw)

def test_killed_training_resumes_to_the_same_final_step(datasets_dir, tiny_model_dir, tmp_path):
    """SIGKILL the CLI after its first checkpoint, rerun it: it resumes and ends at max_steps."""
    import time

    cfg = small_config(max_steps=12, eval_steps=3, save_total_limit=None, early_stopping_patience=None, score_test=False)
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump({"train": cfg.model_dump(mode="json")}))
    out = tmp_path / "students"
    args = ["--criterion", "location", "--data", str(datasets_dir), "--model", str(tiny_model_dir), "--out", str(out),
            "--config", str(conf)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "scenefit"), "train", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = out / "location" / "trainer"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            done = [p for p in run.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
            if done:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "training finished before it could be killed; make it longer"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    first = max(int(p.name.split("-")[1]) for p in run.glob("checkpoint-*") if (p / "trainer_state.json").is_file())
    assert first < 12 and not (out / "location" / "metrics.json").exists()

    res = _run_cli(args, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    metrics = json.loads((out / "location" / "metrics.json").read_text())
    assert metrics["global_step"] == 12
    assert metrics["resumed_from"] and metrics["resumed_from"].endswith(f"checkpoint-{first}") or \
        int(Path(metrics["resumed_from"]).name.split("-")[1]) >= first
    summary = json.loads(res.stdout)
    assert summary["location"]["global_step"] == 12

def test_cli_reports_a_missing_dataset_and_goes_on(tiny_model_dir, tmp_path):
    res = _run_cli(["--criterion", "size", "--data", str(tmp_path), "--model", str(tiny_model_dir), "--out", str(tmp_path / "o")],
                   timeout=300)
    assert res.returncode == 1
    flat = "".join(res.stderr.split())  # rich wraps long paths
    assert "size" in flat and "size/train.parquet" in flat
    assert json.loads(res.stdout)["size"]["error"]

def test_student_learns_the_location_cue(tiny_model_dir, tmp_path):
    """Real learning: 'box in the sky' vs 'box on the grass' goes from chance to >= 90 % held out."""
    from scenefit.train.trainer import train_student

    data = make_datasets(tmp_path / "learn", sizes=(("train", 96), ("val", 16), ("test", 32)))
    cfg = small_config(max_steps=120, eval_steps=40, per_device_batch_size=8, effective_batch_size=8,
                       lora={"r": 32, "alpha": 64, "dropout": 0.0, "modules_to_save": ["lm_head"],
                             "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]},
                       warmup_ratio=0.05, metric_for_best_model="eval_decision_accuracy", cache_examples=True,
                       report_to=[], keep_checkpoints=False)
    res = train_student("location", data, str(tiny_model_dir), tmp_path / "s", cfg)
    test = res.metrics["test"]
    assert test["student"]["accuracy"] >= 0.9, test
    assert test["base"]["accuracy"] <= 0.75, test

