"""A finished run folder can be moved and carried on from: every table from ingest to the
student datasets stores image paths relative to its own folder (issue 21.9).

    .venv/bin/python -m pytest tests/e2e/test_portable_run.py -q
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from scenefit.core.criteria import CRITERIA
from scenefit.core.parquet_io import portable_path, resolved_path
from support.annotate import PERSONAS
from support.cli import run_verb


def data_stages(run: Path, config: Path) -> None:
    """consensus -> split -> datasets inside ``run``."""
    run_verb("consensus", "--db", str(run / "annotate" / "a.sqlite"), "--manifest", str(run / "ingest" / "manifest.parquet"),
             "--out", str(run / "consensus"), "--config", str(config))
    run_verb("split", str(run / "consensus" / "consensus.parquet"), "--out", str(run / "split"), "--config", str(config))
    run_verb("datasets", str(run / "split"), "--out", str(run / "datasets"), "--config", str(config))


@pytest.fixture(scope="module")
def moved_run(tmp_path_factory) -> dict:
    """A small run made in one folder (world, ingest, annotate, consensus, split, datasets),
    then moved elsewhere whole; the old folder is gone."""
    root = tmp_path_factory.mktemp("portable")
    config = root / "run.yaml"
    teachers = [{"name": p, "backend": "simulated", "persona": p, "concurrency": 4} for p in PERSONAS]
    config.write_text(yaml.safe_dump({
        "annotate": {"teachers": teachers, "progress": False},
        "consensus": {"rule": "unanimous_final", "designated": "qwen72b-sim"},
        "split": {"seed": 0, "fractions": {"train": 0.6, "val": 0.2, "test": 0.2}, "allow_fewer": True},
        "datasets": {"rebalance": False, "seed": 0},
    }))
    run = root / "first" / "run"
    run_verb("synth", "--n", "80", "--out", str(run / "world"), "--seed", "1", "--image-size", "112",
             "--samples-per-group", "2")
    # draw the boxes again into ingest/images, so the tables point into two folders of the run
    unboxed = run / "world" / "unboxed.jsonl"
    frame = pq.read_table(run / "world" / "manifest.parquet").to_pandas()
    frame["boxed"] = [i % 2 == 0 for i in range(len(frame))]
    frame["image"] = [resolved_path(p, run / "world") for p in frame["image"]]
    frame.to_json(unboxed, orient="records", lines=True)
    run_verb("ingest", str(unboxed), "--out", str(run / "ingest"), "--config", str(config))
    run_verb("annotate", str(run / "ingest" / "manifest.parquet"), "--db", str(run / "annotate" / "a.sqlite"),
             "--config", str(config), "--no-progress")
    data_stages(run, config)
    moved = root / "second" / "elsewhere" / "run"
    moved.parent.mkdir(parents=True)
    shutil.move(str(run), str(moved))
    return {"old": run, "moved": moved, "config": config}


def test_no_table_names_the_old_folder_and_every_image_is_found_after_the_move(moved_run):
    old, moved = moved_run["old"], moved_run["moved"]
    assert not old.exists()
    tables = sorted(moved.rglob("*.parquet"))
    assert {t.parent.name for t in tables} >= {"world", "ingest", "consensus", "split", *(c.value for c in CRITERIA)}
    for table in tables:
        images = pq.read_table(table).column("image").to_pylist()
        if table.parent.parent.name == "datasets":  # the student datasets carry their images
            assert images and all(isinstance(p, dict) and p["bytes"] for p in images), table
            continue
        assert images and not any(str(old) in p for p in images), table
    from scenefit.core.images import open_image
    from scenefit.train.data import read_split

    for c in CRITERIA:
        for split in ("train", "val", "test"):
            frame = read_split(moved / "datasets", c.value, split)
            assert len(frame) and all(open_image(row).size == (112, 112) for row in frame.to_dict("records"))


def test_the_data_stages_carry_on_from_the_moved_folder(moved_run):
    moved = moved_run["moved"]
    for stage in ("consensus", "split", "datasets"):
        shutil.rmtree(moved / stage)
    data_stages(moved, moved_run["config"])
    from scenefit.core.images import open_image
    from scenefit.train.data import read_split

    frame = read_split(moved / "datasets", "size", "train")
    assert all(isinstance(p, dict) and p["bytes"] for p in frame["image"])  # embedded, nothing to resolve
    assert all(open_image(row).size == (112, 112) for row in frame.to_dict("records"))


@pytest.mark.slow
def test_training_runs_from_the_moved_datasets(moved_run, tiny_model_dir):
    from scenefit.train.trainer import train_student
    from support.train_data import small_config

    moved = moved_run["moved"]
    cfg = small_config(max_steps=2, eval_steps=2, score_test=False, per_device_batch_size=2, effective_batch_size=2)
    res = train_student("location", moved / "datasets", str(tiny_model_dir), moved / "students", cfg)
    assert res.metrics["global_step"] == 2 and (moved / "students" / "location" / "adapter_model.safetensors").is_file()


def test_paths_far_from_the_table_stay_absolute(tmp_path):
    table_dir = tmp_path / "a" / "b" / "run" / "stage"
    near = str(tmp_path / "a" / "b" / "run" / "world" / "x.png")
    far = str(tmp_path / "data" / "x.png")  # a shared dataset folder outside the run
    assert portable_path(near, table_dir) == "../world/x.png"
    assert resolved_path("../world/x.png", table_dir) == near
    assert portable_path(far, table_dir) == far and resolved_path(far, table_dir) == far
    assert portable_path(None, table_dir) is None
