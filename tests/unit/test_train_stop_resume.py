"""`scenefit train`'s stopping and rerunning — one student per criterion, early stopping, the
saved best checkpoint, reruns with --overwrite and --no-resume, accumulation from the world size —
as docs/reference.md, "Training", states it. The checks share one early-stopped 4-step run of the
tiny model.

    .venv/bin/python -m pytest tests/unit/test_train_stop_resume.py -q
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from scenefit.cli import app
from scenefit.core.config import packaged_configs_dir
from scenefit.core.criteria import CRITERIA

runner = CliRunner()

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _summary_json(stdout: str) -> dict:
    """The JSON object a verb prints last on stdout (after any table)."""
    return json.loads(stdout[stdout.index("{"):])


def test_train_criterion_all_trains_one_student_per_criterion(tmp_path, monkeypatch):
    """"The verbs" and "Training": `train --criterion all` gives one LoRA
    adapter per criterion — the verb calls the trainer once for each of the three. ``--jobs 1``
    keeps them in this process (the demo config trains two at a time in child processes, where
    the stand-in trainer would not reach; tests/e2e/test_train_jobs.py covers that path)."""
    import scenefit.train.trainer as trainer

    calls: list[tuple[str, Path]] = []

    def fake_train_student(criterion, data_dir, base_model, out_root, cfg, overwrite=False, extra_callbacks=None):
        calls.append((criterion, Path(out_root)))
        return trainer.TrainResult(criterion, Path(out_root) / criterion, {"global_step": 1}, skipped=False)

    monkeypatch.setattr(trainer, "train_student", fake_train_student)
    (tmp_path / "data").mkdir()
    for extra in ([], ["--config", str(packaged_configs_dir() / "demo.yaml")], ["--config", str(packaged_configs_dir() / "paper.yaml")]):
        calls.clear()
        r = runner.invoke(app, ["train", "--criterion", "all", "--data", str(tmp_path / "data"), "--model", "m",
                                "--out", str(tmp_path / "students"), "--jobs", "1", *extra])
        assert r.exit_code == 0, r.output
        assert sorted(c for c, _ in calls) == sorted(c.value for c in CRITERIA), extra
        assert {o for _, o in calls} == {tmp_path / "students"}
        assert set(_summary_json(r.stdout)) == {c.value for c in CRITERIA}


@pytest.fixture(scope="module")
def early_stopped(tmp_path_factory, tiny_model_dir):
    """One finished student whose validation decision accuracy cannot improve: (datasets,
    students folder, its config, result). The learning rate is so small that no decision on the
    validation rows changes, while the zero-initialised LoRA B matrices still move (bit-exactly
    different checkpoints)."""
    from scenefit.train.trainer import train_student
    from support.train_data import make_datasets, small_config

    root = tmp_path_factory.mktemp("early_stop")
    data = make_datasets(root)
    cfg = small_config(max_steps=12, eval_steps=2, learning_rate=1e-9, early_stopping_patience=1,
                       metric_for_best_model="eval_decision_accuracy", score_test=False, report_to=[],
                       logging_steps=2)
    res = train_student("location", data, str(tiny_model_dir), root / "students", cfg)
    return data, root / "students", cfg, res


def test_early_stopping_after_patience_evaluations_without_improvement(early_stopped):
    """Training stops after `early_stopping_patience` evaluations without
    improvement (patience 1: the evaluation after the first one ends a 12-step run at step 4)."""
    _, _, cfg, res = early_stopped
    assert cfg.max_steps == 12
    assert res.metrics["global_step"] == 4, res.metrics["global_step"]
    assert [e["step"] for e in res.metrics["eval_history"]] == [2, 4]
    accuracies = [e["eval_decision_accuracy"] for e in res.metrics["eval_history"]]
    assert accuracies[0] == accuracies[1]  # the stop is for want of improvement


def test_the_best_checkpoint_is_the_saved_adapter(early_stopped):
    """The best checkpoint by `metric_for_best_model` is kept — the adapter in
    OUT/<criterion>/ is checkpoint-2's (the first of two equal accuracies), not the last one's."""
    import torch
    from safetensors.torch import load_file

    from scenefit.train.trainer import CHECKPOINTS_DIR

    _, students, _, res = early_stopped
    out = students / "location"
    assert Path(res.metrics["best_checkpoint"]).name == "checkpoint-2"
    saved = load_file(str(out / "adapter_model.safetensors"))
    best = load_file(str(Path(res.metrics["best_checkpoint"]) / "adapter_model.safetensors"))
    last = load_file(str(out / CHECKPOINTS_DIR / "checkpoint-4" / "adapter_model.safetensors"))
    assert saved.keys() == best.keys() == last.keys()
    assert all(torch.equal(saved[k], best[k]) for k in saved)
    assert not all(torch.equal(saved[k], last[k]) for k in saved)  # the two checkpoints do differ


def _config_file(cfg, path: Path) -> Path:
    path.write_text(yaml.safe_dump({"train": cfg.model_dump(mode="json")}))
    return path


def test_rerun_skips_a_finished_student_and_overwrite_retrains_it(early_stopped, tmp_path, tiny_model_dir):
    """A rerun skips a finished student; `--overwrite` retrains a finished one."""
    data, students, cfg, _ = early_stopped
    copy = tmp_path / "students"
    shutil.copytree(students, copy)
    marker = copy / "location" / "stale.txt"
    marker.write_text("left by the earlier run")
    argv = ["train", "--criterion", "location", "--data", str(data), "--model", str(tiny_model_dir), "--out", str(copy),
            "--config", str(_config_file(cfg, tmp_path / "cfg.yaml"))]
    r = runner.invoke(app, argv)
    assert r.exit_code == 0, r.output
    assert _summary_json(r.stdout)["location"]["skipped"] is True and marker.exists()
    r = runner.invoke(app, argv + ["--overwrite"])
    assert r.exit_code == 0, r.output
    summary = _summary_json(r.stdout)["location"]
    assert summary["skipped"] is False and summary["global_step"] == 4
    assert not marker.exists()  # the folder was cleared, not trained on top of
    assert (copy / "location" / "metrics.json").is_file()


def test_no_resume_starts_over(early_stopped, tmp_path, tiny_model_dir):
    """An interrupted run resumes from its latest complete checkpoint, and
    `--no-resume` starts over instead."""
    data, students, cfg, _ = early_stopped
    copy = tmp_path / "students"
    shutil.copytree(students, copy)
    (copy / "location" / "metrics.json").unlink()  # as a kill after the last checkpoint leaves it
    from scenefit.train.checkpoints import scan_checkpoints
    from scenefit.train.trainer import CHECKPOINTS_DIR

    assert scan_checkpoints(copy / "location" / CHECKPOINTS_DIR).resume_from is not None  # there is one to resume
    r = runner.invoke(app, ["train", "--criterion", "location", "--data", str(data), "--model", str(tiny_model_dir),
                            "--out", str(copy), "--config", str(_config_file(cfg, tmp_path / "cfg.yaml")), "--no-resume"])
    assert r.exit_code == 0, r.output
    metrics = json.loads((copy / "location" / "metrics.json").read_text())
    assert metrics["resumed_from"] is None
    assert metrics["global_step"] == 4 and [e["step"] for e in metrics["eval_history"]] == [2, 4]


def test_accumulation_follows_the_world_size_the_trainer_sees(tmp_path, monkeypatch):
    """The effective batch is kept when the GPU count changes — accumulation
    is recomputed from the world size (8 GPUs -> 2; 1 GPU -> 16) for the paper recipe, and
    train_student asks for it with the launcher's WORLD_SIZE."""
    import scenefit.train.trainer as trainer
    from scenefit.core.config import resolve
    from scenefit.train.launch import world_size

    paper = resolve("train", packaged_configs_dir() / "paper.yaml")
    assert paper.effective_batch_size == 64
    for n, acc in ((8, 2), (1, 16), (4, 4)):
        monkeypatch.setenv("WORLD_SIZE", str(n))
        assert world_size() == n and paper.accumulation_for(world_size()) == acc

    class Reached(Exception):
        pass

    seen = {}

    def spy(cfg, run_dir, accumulation):
        seen["accumulation"] = accumulation
        raise Reached

    monkeypatch.setattr(trainer, "training_arguments", spy)
    monkeypatch.setenv("WORLD_SIZE", "8")
    with pytest.raises(Reached):
        trainer.train_student("location", tmp_path, "unused", tmp_path / "out", paper)
    assert seen == {"accumulation": 2}
