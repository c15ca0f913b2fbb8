"""Training with padding-free packing follows the padded run (same steps, close losses).

    .venv/bin/python -m pytest tests/e2e/test_packing_training.py -q
"""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_training_with_packing_follows_the_padded_run(tiny_model_dir, tmp_path):
    from scenefit.train.trainer import train_student
    from support.train_data import make_datasets, small_config

    data = make_datasets(tmp_path, sizes=(("train", 16), ("val", 4), ("test", 4)))
    losses = {}
    for packing in (False, True):
        cfg = small_config(max_steps=4, eval_steps=4, logging_steps=1, score_test=False, report_to=[], packing=packing)
        res = train_student("location", data, str(tiny_model_dir), tmp_path / f"packing-{packing}", cfg)
        log = [json.loads(x) for x in (res.out_dir / "log.jsonl").read_text().splitlines()]
        losses[packing] = [r["loss"] for r in log if "loss" in r] + [r["eval_loss"] for r in log if "eval_loss" in r]
    assert len(losses[True]) == 5
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)

