"""Teachers' probabilities from annotation to evaluation: simulated teachers annotate a small
synthetic world, the datasets carry teacher_p_out, a tiny student trains with the KL term on them
and is evaluated with its calibration against the teacher's probability. Marked slow (trains).

    .venv/bin/python -m pytest tests/e2e/test_soft_labels_train_e2e.py -q
"""

from __future__ import annotations

import json

import pytest

from scenefit.core.criteria import Criterion

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("torch_one_thread")]


def test_probabilities_from_annotation_through_training_to_calibration(tiny_model_dir, tmp_path):
    from scenefit.data.manifest import read_manifest
    from scenefit.evaluate.config import EvaluateConfig
    from scenefit.evaluate.runner import evaluate_dirs
    from scenefit.teachers.annotate import annotate
    from scenefit.teachers.config import AnnotateConfig
    from scenefit.testbed.world import WorldConfig, generate_world
    from scenefit.train.trainer import train_student
    from support.soft_pipeline import CO_JUDGES, DESIGNATED, run_to_datasets
    from support.train_data import small_config

    world = tmp_path / "world"
    generate_world(WorldConfig(n=48, seed=11, originals=False), world)
    samples, _ = read_manifest(world / "manifest.parquet")
    teachers = [{"name": p, "backend": "simulated", "persona": p} for p in (DESIGNATED, *CO_JUDGES)]
    annotate(samples, AnnotateConfig(teachers=teachers, progress=False), tmp_path / "a.sqlite",
             manifest_path=world / "manifest.parquet")
    frames = run_to_datasets(tmp_path, tmp_path / "a.sqlite", world / "manifest.parquet")
    crit = Criterion.LOCATION.value
    data = tmp_path / "d"
    with_p = int(frames[crit]["teacher_p_out"].notna().sum())
    assert with_p > 0

    cfg = small_config(max_steps=2, eval_steps=2, logging_steps=1, score_test=False, report_to=[])
    cfg = cfg.model_validate({**cfg.model_dump(), "distill": {"weight": 1.0, "hard_decision": False}})
    res = train_student(crit, data, str(tiny_model_dir), tmp_path / "students", cfg)
    rows = res.metrics["distill"]["rows"]["train"]
    assert rows["with_target"] > 0 and rows["with_target"] + rows["skipped_null"] == res.metrics["train_rows"]
    log = [json.loads(x) for x in (res.out_dir / "log.jsonl").read_text().splitlines()]
    assert any(r.get("distill_rows_used", 0) > 0 and r["distill_kl"] >= 0 for r in log if "loss" in r)

    ecfg = EvaluateConfig(criteria=[crit], baseline=False, explain=False, gallery_size=0,
                          predict={"device": "cpu", "dtype": "fp32", "batch_size": 4})
    metrics, _, _ = evaluate_dirs(tmp_path / "students", data, tmp_path / "report", ecfg)
    m = metrics[crit]
    assert m["calibration_vs_teacher_p"]["n"] == m["n"] > 0
    assert 0.0 <= m["brier_vs_teacher_p"] <= 1.0 and m["ece_vs_truth"] is not None
    assert m["teacher_ece_vs_truth"] is not None  # the designated teacher's own calibration, same rows
    assert "teacher P(out)" in (tmp_path / "report" / "report.html").read_text()
