"""Test helpers first written for tests/e2e/test_train_run.py, shared by other tests."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from scenefit.core.criteria import Criterion, Label
from scenefit.prompts import student_prompt, student_prompt_version, student_system_prompt
from scenefit.student.answer import render_student_answer
from scenefit.train.config import TrainConfig

CRIT = Criterion.LOCATION


def _draw(path: Path, floating: bool, seed: int) -> None:
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    im = Image.new("RGB", (112, 112), (120, 200, 255))
    d = ImageDraw.Draw(im)
    d.rectangle((0, 66, 111, 111), fill=(60, 170, 50))
    w, h = rng.randint(14, 26), rng.randint(14, 22)
    x0 = rng.randint(2, 110 - w)
    y1 = rng.randint(8 + h, 40) if floating else rng.randint(76, 108)
    d.rectangle((x0, y1 - h, x0 + w, y1), fill=(250, 250, 250), outline=(255, 0, 0), width=2)
    im.save(path)


def student_row(crit: Criterion, sample_id: str, group: str, image: Path, label: Label) -> dict:
    """One row as `scenefit datasets` writes it: a cow in a boxed image, on the grass or in the sky."""
    sentence = "The cow hangs in the sky." if label is Label.OUT else "The cow stands on the grass."
    return {
        "id": sample_id, "group": group, "image": str(image), "object": "cow", "box": None,
        "criterion": crit.value, "label": label.value, "analysis": sentence,
        "prompt": student_prompt(crit).render("cow"), "system": student_system_prompt(),
        "target": render_student_answer(crit, label, sentence), "prompt_version": student_prompt_version(),
        "truth": label.value, "final": label.value, "scene": "farm", "synthetic": True,
    }


def make_datasets(root: Path, sizes=(("train", 32), ("val", 8), ("test", 8))) -> Path:
    """DATA/location/{train,val,test}.parquet with the columns `scenefit datasets` writes."""
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    data = root / "datasets"
    k = 0
    for split, n in sizes:
        rows = []
        for i in range(n):
            floating = i % 2 == 1
            label = Label.OUT if floating else Label.IN
            path = img_dir / f"{split}-{i}.png"
            _draw(path, floating, k)
            k += 1
            rows.append(student_row(CRIT, f"{split}-{i}", f"g{k}", path, label))
        (data / CRIT.value).mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_parquet(data / CRIT.value / f"{split}.parquet")
    (data / "manifest.json").write_text(json.dumps({"stage": "datasets", "synthetic": True}))
    return data


def small_config(**over) -> TrainConfig:
    base = dict(
        lora={"r": 8, "alpha": 16, "dropout": 0.0, "modules_to_save": ["lm_head"]},
        max_steps=6, learning_rate=1e-3, warmup_ratio=0.0, per_device_batch_size=4, gradient_accumulation_steps=1,
        num_devices=1, effective_batch_size=4, per_device_eval_batch_size=8, eval_steps=2, logging_steps=1,
        early_stopping_patience=None, metric_for_best_model="eval_loss", report_to=["tensorboard"], seed=0,
        save_total_limit=None,
    )
    base.update(over)
    return TrainConfig(**base)

