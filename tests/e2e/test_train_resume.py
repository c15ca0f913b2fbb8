"""A kill at an awkward moment never blocks the resume of `scenefit train` (issue 21 item 3).

    .venv/bin/python -m pytest tests/e2e/test_train_resume.py -q

One uninterrupted 6-step run is the reference. Copies of its folder are cut back to the state a
kill leaves (checkpoint-6 only half written; everything written but metrics.json), then
resumed: the rerun must end at the same step with the same adapter and the same train_loss.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from scenefit.train.checkpoints import logged_loss_sum, scan_checkpoints, training_finished, whole_run_train_loss
from support.train_data import make_datasets, small_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("torch_one_thread")]

STEPS = 6


def _cfg():
    # logging every step: the log then holds every step's loss, so a whole-run mean can be exact
    return small_config(max_steps=STEPS, eval_steps=2, logging_steps=1, score_test=False, report_to=[])


def _adapter(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def _assert_same_adapter(a: dict, b: dict) -> None:
    import torch

    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir):
    """(datasets, students folder of an uninterrupted run, its metrics, its adapter)."""
    from scenefit.train.trainer import train_student

    root = tmp_path_factory.mktemp("resume")
    data = make_datasets(root)
    res = train_student("location", data, str(tiny_model_dir), root / "students", _cfg())
    return data, root / "students", res.metrics, _adapter(res.out_dir)


def _killed_copy(reference, tmp_path: Path) -> Path:
    """The reference run as a kill after its last checkpoint leaves it: no metrics.json."""
    students = tmp_path / "students"
    shutil.copytree(reference[1], students)
    (students / "location" / "metrics.json").unlink()
    return students


def _resume(reference, tiny_model_dir, students: Path):
    from scenefit.train.trainer import train_student

    return train_student("location", reference[0], str(tiny_model_dir), students, _cfg())


def _loss_steps(out: Path) -> list[int]:
    return [r["step"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]



@pytest.mark.parametrize("moment", ["folder_created", "adapter_written", "state_half_written"])
def test_a_half_written_checkpoint_is_skipped_and_named(reference, tiny_model_dir, tmp_path, moment):
    students = _killed_copy(reference, tmp_path)
    run = students / "location" / "trainer"
    last = run / f"checkpoint-{STEPS}"
    if moment == "folder_created":
        shutil.rmtree(last)
        last.mkdir()
    elif moment == "adapter_written":
        for name in ("trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
            (last / name).unlink()
    else:
        state = last / "trainer_state.json"
        state.write_text(state.read_text()[:100])
    # Two steps of the log came after checkpoint-4 and must not appear twice after the resume.
    assert _loss_steps(students / "location") == list(range(1, STEPS + 1))

    res = _resume(reference, tiny_model_dir, students)
    m = res.metrics
    assert m["resumed_from"] == str(run / "checkpoint-4")
    assert [s["path"] for s in m["skipped_checkpoints"]] == [str(last)]
    assert m["skipped_checkpoints"][0]["problem"]
    assert m["global_step"] == STEPS
    assert m["train"]["train_loss"] == pytest.approx(reference[2]["train"]["train_loss"], rel=1e-5)
    _assert_same_adapter(_adapter(res.out_dir), reference[3])
    assert _loss_steps(res.out_dir) == list(range(1, STEPS + 1))
    assert (last / "trainer_state.json").is_file(), "checkpoint-6 is written again, whole"


def test_resume_from_the_final_checkpoint_trains_no_extra_step(reference, tiny_model_dir, tmp_path):
    students = _killed_copy(reference, tmp_path)
    res = _resume(reference, tiny_model_dir, students)
    m = res.metrics
    assert m["global_step"] == STEPS  # not STEPS + 1
    assert m["resumed_from"].endswith(f"checkpoint-{STEPS}")
    assert m["train"]["train_loss"] == pytest.approx(reference[2]["train"]["train_loss"], rel=1e-6)
    assert m["best_metric"] == reference[2]["best_metric"]
    _assert_same_adapter(_adapter(res.out_dir), reference[3])
    assert _loss_steps(res.out_dir) == list(range(1, STEPS + 1))
    assert not (students / "location" / "trainer" / f"checkpoint-{STEPS + 1}").exists()


def test_a_kill_while_metrics_json_is_written_leaves_the_student_incomplete(reference, tiny_model_dir, tmp_path, monkeypatch):
    """metrics.json marks a student complete: half of it must never be there."""
    from scenefit.train.trainer import is_trained

    students = _killed_copy(reference, tmp_path)
    real_write_text = Path.write_text

    def dies_halfway(self, data, *a, **kw):
        if self.name.startswith("metrics.json"):
            real_write_text(self, data[: len(data) // 2], *a, **kw)
            raise KeyboardInterrupt("killed while writing metrics.json")
        return real_write_text(self, data, *a, **kw)

    monkeypatch.setattr(Path, "write_text", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        _resume(reference, tiny_model_dir, students)
    monkeypatch.undo()
    out = students / "location"
    assert not (out / "metrics.json").exists() and not is_trained(out)
    res = _resume(reference, tiny_model_dir, students)  # and the rerun completes it
    assert not res.skipped and res.metrics["global_step"] == STEPS and is_trained(out)


def test_scan_without_checkpoints_starts_fresh(tmp_path):
    scan = scan_checkpoints(tmp_path / "missing")
    assert scan.resume_from is None and scan.skipped == [] and scan.resumed_step == 0
    (tmp_path / "checkpoint-3").mkdir()
    (tmp_path / "checkpoint-x").mkdir()  # not a checkpoint name: ignored
    scan = scan_checkpoints(tmp_path)
    assert scan.resume_from is None and [p.name for p, _ in scan.skipped] == ["checkpoint-3"]


def test_scan_reads_each_trainer_state_once(tmp_path, monkeypatch):
    import json

    import scenefit.train.checkpoints as checkpoints

    for step, complete in ((2, True), (4, True), (6, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        if complete:
            (folder / "adapter_model.safetensors").write_bytes(b"w")
    parsed = []
    monkeypatch.setattr(checkpoints.json, "loads", lambda text, *a, **kw: parsed.append(text) or json.JSONDecoder().decode(text))
    scan = scan_checkpoints(tmp_path)
    assert scan.resume_from == tmp_path / "checkpoint-4" and scan.resumed_step == 4
    assert [(p.name, why) for p, why in scan.skipped] == [("checkpoint-6", "no weights file")]
    assert len(parsed) == 3  # one parse per checkpoint (the resumed one was parsed twice before)


def test_training_finished_reads_the_step_limit_and_early_stopping():
    def state(step, max_steps, stop):
        return {"global_step": step, "max_steps": max_steps,
                "stateful_callbacks": {"TrainerControl": {"args": {"should_training_stop": stop}}}}

    assert training_finished(state(200, 200, True), 200)
    assert not training_finished(state(100, 200, False), 200)
    assert training_finished(state(100, 200, True), 200)  # early stopping ended the run at 100
    assert not training_finished(state(200, 200, True), 400)  # the rerun asks for more steps
    assert training_finished(state(375, 375, True), -1)  # epoch-based: the state's own limit


def test_whole_run_train_loss_weighs_log_windows():
    log = [{"step": 2, "loss": 4.0}, {"step": 2, "eval_loss": 9.0}, {"step": 4, "loss": 2.0}, {"step": 5, "loss": 1.0}]
    assert logged_loss_sum(log, 4) == (12.0, 4)
    # resumed at step 4, then 2 steps averaging 0.5: (4*2 + 2*2 + 0.5*2) / 6
    assert whole_run_train_loss(log, 4, 0.5, 2) == pytest.approx(13.0 / 6)
    assert whole_run_train_loss([], 0, None, 0) is None
