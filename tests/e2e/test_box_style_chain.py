"""How the images' boxes were drawn travels from synth and ingest through consensus, split and
datasets into the record train writes beside each student, which predict then draws (issue 28 item 1).

    .venv/bin/python -m pytest tests/e2e/test_box_style_chain.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from scenefit.core.images import BoxStyle
from scenefit.core.parquet_io import read_meta
from support.annotate import PERSONAS
from support.cli import run_verb


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """synth (3 px boxes) -> ingest -> annotate -> consensus -> split -> datasets."""
    tmp_path = tmp_path_factory.mktemp("box_chain")
    config = tmp_path / "run.yaml"
    teachers = [{"name": p, "backend": "simulated", "persona": p, "concurrency": 4} for p in PERSONAS]
    config.write_text(yaml.safe_dump({
        "world": {"box_width": 3},
        "ingest": {"box_width": 7},  # draws nothing here: the world's images come boxed
        "annotate": {"teachers": teachers, "progress": False},
        "consensus": {"rule": "unanimous_final", "designated": "qwen72b-sim"},
        "split": {"seed": 0, "fractions": {"train": 0.6, "val": 0.2, "test": 0.2}, "allow_fewer": True},
        "datasets": {"rebalance": False, "seed": 0},
    }))
    run = tmp_path / "run"
    run_verb("synth", "--n", "60", "--out", str(run / "world"), "--seed", "1", "--image-size", "112",
             "--samples-per-group", "2", "--config", str(config))
    run_verb("ingest", str(run / "world" / "manifest.parquet"), "--out", str(run / "ingest"), "--config", str(config))
    run_verb("annotate", str(run / "ingest" / "manifest.parquet"), "--db", str(run / "a.sqlite"),
             "--config", str(config), "--no-progress")
    run_verb("consensus", "--db", str(run / "a.sqlite"), "--manifest", str(run / "ingest" / "manifest.parquet"),
             "--out", str(run / "consensus"), "--config", str(config))
    run_verb("split", str(run / "consensus" / "consensus.parquet"), "--out", str(run / "split"), "--config", str(config))
    run_verb("datasets", str(run / "split"), "--out", str(run / "datasets"), "--config", str(config))
    return run


def test_the_worlds_box_reaches_the_datasets(run):
    world = {"width": 3, "color": [255, 0, 0]}
    assert read_meta(run / "world" / "manifest.parquet")["box_style"] == world
    assert json.loads((run / "ingest" / "summary.json").read_text())["box_style"] == world
    assert read_meta(run / "consensus" / "consensus.parquet")["box_style"] == world
    assert json.loads((run / "split" / "manifest.json").read_text())["box_style"] == world
    assert json.loads((run / "datasets" / "manifest.json").read_text())["box_style"] == world
    assert "The red boxes: 3 px wide, RGB (255, 0, 0)." in (run / "datasets" / "location" / "README.md").read_text()


@pytest.mark.slow
def test_train_records_the_datasets_box_in_each_student(run, tiny_model_dir, tmp_path):
    from scenefit.predict import Predictor
    from scenefit.student.metadata import read_student_meta
    from scenefit.train.trainer import train_student
    from support.train_data import small_config

    cfg = small_config(max_steps=1, eval_steps=1, score_test=False, per_device_batch_size=2, effective_batch_size=2)
    train_student("location", run / "datasets", str(tiny_model_dir), tmp_path / "students", cfg)
    assert read_student_meta(tmp_path / "students" / "location").box_style == BoxStyle(width=3)
    assert "trained on: 3 px wide, RGB (255, 0, 0)" in (tmp_path / "students" / "location" / "README.md").read_text()
    predictor = Predictor.from_students(tmp_path / "students", device="cpu", criteria=["location"])
    assert predictor.info()["box"] == {"width": 3, "color": [255, 0, 0], "from": "students"}


def photo_manifest(folder: Path, boxed: list[bool]) -> Path:
    rows = []
    for i, is_boxed in enumerate(boxed):
        Image.new("RGB", (90, 60), (20 * i, 90, 40)).save(folder / f"p{i}.png")
        rows.append({"id": f"p{i}", "image": f"p{i}.png", "object": "cow", "box": [10, 10, 50, 40], "boxed": is_boxed})
    path = folder / "samples.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_ingest_records_what_it_drew_and_nothing_for_a_mix(tmp_path):
    from scenefit.core.images import box_width_for

    drawn = photo_manifest(tmp_path, [False, False])
    run_verb("ingest", str(drawn), "--out", str(tmp_path / "drawn"), "--box-width", "4")
    assert read_meta(tmp_path / "drawn" / "manifest.parquet")["box_style"] == {"width": 4, "color": [255, 0, 0]}
    run_verb("ingest", str(drawn), "--out", str(tmp_path / "by_size"))
    assert json.loads((tmp_path / "by_size" / "summary.json").read_text())["box_style"] == {"width": None,
                                                                                           "color": [255, 0, 0]}
    assert box_width_for((90, 60)) == 2
    # a row whose image came boxed from elsewhere: how its box was drawn is unknown, so the whole is
    mixed = photo_manifest(tmp_path, [False, True])
    run_verb("ingest", str(mixed), "--out", str(tmp_path / "mixed"))
    assert json.loads((tmp_path / "mixed" / "summary.json").read_text())["box_style"] is None
    # re-ingesting ingest's own manifest keeps its record (the images now carry their box)
    run_verb("ingest", str(tmp_path / "drawn" / "manifest.parquet"), "--out", str(tmp_path / "again"))
    assert pq.read_table(tmp_path / "again" / "manifest.parquet").num_rows == 2
    assert read_meta(tmp_path / "again" / "manifest.parquet")["box_style"] == {"width": 4, "color": [255, 0, 0]}
