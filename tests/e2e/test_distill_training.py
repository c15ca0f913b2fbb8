"""Soft-label distillation end to end: a short `train` with the teacher's probabilities logs the
KL term and the rows it skipped, and its model card names the setting.

    .venv/bin/python -m pytest tests/e2e/test_distill_training.py -q
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from scenefit.core.criteria import Label


@pytest.mark.slow
def test_training_with_soft_targets_logs_the_term_and_the_skipped_rows(tiny_model_dir, tmp_path):
    """Two runs on the same rows: weight 0 (the datasets carry the soft columns, unused) logs the same
    losses as the plain config; weight 1 logs the KL, counts the null rows and changes the loss."""
    from scenefit.train.trainer import train_student
    from support.train_data import make_datasets, small_config

    data = make_datasets(tmp_path, sizes=(("train", 8), ("val", 4), ("test", 4)))
    for split in ("train", "val", "test"):
        path = data / "location" / f"{split}.parquet"
        df = pd.read_parquet(path)
        df["teacher_p_out"] = [None if i % 4 == 3 else (0.85 if lab == Label.OUT.value else 0.1)
                               for i, lab in enumerate(df["label"])]
        df["teachers_mean_p_out"] = df["teacher_p_out"]
        df.to_parquet(path)

    def run(name, **distill):
        cfg = small_config(max_steps=2, eval_steps=2, logging_steps=1, score_test=False, report_to=[])
        if distill:
            cfg = cfg.model_copy(update={"distill": cfg.distill.model_copy(update=distill)})
        res = train_student("location", data, str(tiny_model_dir), tmp_path / name, cfg)
        log = [json.loads(x) for x in (res.out_dir / "log.jsonl").read_text().splitlines()]
        return res, log

    plain, plain_log = run("plain")
    zero, zero_log = run("zero", weight=0.0)
    soft, soft_log = run("soft", weight=1.0, temperature=2.0)
    losses = lambda log: [r["loss"] for r in log if "loss" in r] + [r["eval_loss"] for r in log if "eval_loss" in r]  # noqa: E731
    assert losses(zero_log) == losses(plain_log)
    assert plain.metrics["distill"] is None
    assert soft.metrics["distill"]["rows"]["train"] == {"with_target": 6, "skipped_null": 2}
    steps = [r for r in soft_log if "loss" in r]
    assert steps and all(r["distill_kl"] > 0 for r in steps)
    assert sum(r["distill_rows_skipped"] for r in steps) + sum(r["distill_rows_used"] for r in steps) == 2 * 4
    assert losses(soft_log)[0] != pytest.approx(losses(plain_log)[0], rel=1e-4)
    card = (soft.out_dir / "README.md").read_text()
    assert "Soft labels: + 1.0 x KL" in card and "6 training rows with a target, 2 without" in card
    assert "Soft labels" not in (plain.out_dir / "README.md").read_text()

