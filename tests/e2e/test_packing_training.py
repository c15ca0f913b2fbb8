"""Padding-free packing gives the padded batch's logits and losses, sample by sample (fp32, CPU).

    .venv/bin/python -m pytest tests/unit/test_packing.py -q

Samples of different lengths (image sizes, object names, answers) are run once as a right-padded
batch and once packed into one row; a naive packing (positions over the whole row, no per-sample
mask) is the control that shows the comparison can fail.
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

