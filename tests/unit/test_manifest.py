"""Sample manifests: JSONL, CSV, Parquet, the paper's layout, column aliases, bad rows.

    .venv/bin/python -m pytest tests/unit/test_manifest.py -q
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from scenefit import SYNTHETIC_NOTICE
from scenefit.core.criteria import Criterion, Label
from scenefit.core.records import MANIFEST_COLUMNS, Sample
from scenefit.data.manifest import ManifestError, read_manifest, write_manifest

ROWS = [
    {"id": "a1", "image": "imgs/a1.png", "object": "zebra", "box": "10,20,60,70", "group": "g1",
     "scene": "beach", "truth_location": "In-context", "truth_size": "Out-of-context", "truth_co_occurrence": ""},
    {"id": "a2", "image": "imgs/a2.jpg", "object": "cow", "box": "0,0,5,5", "group": "", "scene": "",
     "truth_location": "", "truth_size": "", "truth_co_occurrence": ""},
]


def write_rows(rows: list[dict], path: Path) -> Path:
    """The same rows as JSONL, CSV or Parquet (chosen by the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".csv":
        cols = list(dict.fromkeys(k for r in rows for k in r))
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)
    else:
        pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_formats_read_the_same_samples(tmp_path, suffix):
    path = write_rows(ROWS, tmp_path / "data" / f"manifest{suffix}")
    samples, errors = read_manifest(path)
    assert errors == []
    a1, a2 = samples
    assert a1.id == "a1" and a1.object == "zebra" and a1.box == (10, 20, 60, 70)
    assert a1.image == str((tmp_path / "data" / "imgs" / "a1.png").resolve())  # relative to the manifest
    assert a1.group == "g1" and a1.scene == "beach" and a1.boxed is False
    assert a1.truth == {Criterion.LOCATION: Label.IN, Criterion.SIZE: Label.OUT}
    assert a2.group is None and a2.scene is None and a2.truth is None


def test_relative_paths_resolve_against_images_dir(tmp_path):
    path = write_rows(ROWS, tmp_path / "m.jsonl")
    samples, _ = read_manifest(path, images_dir=tmp_path / "elsewhere")
    assert samples[0].image == str((tmp_path / "elsewhere" / "imgs" / "a1.png").resolve())
    absolute = [dict(ROWS[0], image=str(tmp_path / "abs.png"))]
    samples, _ = read_manifest(write_rows(absolute, tmp_path / "abs.jsonl"), images_dir=tmp_path / "x")
    assert samples[0].image == str(tmp_path / "abs.png")


@pytest.mark.parametrize(
    "box_cols,expected",
    [
        ({"box": "1,2,30,40"}, (1, 2, 30, 40)),
        ({"box": "[1, 2, 30, 40]"}, (1, 2, 30, 40)),
        ({"x0": 1, "y0": 2, "x1": 30, "y1": 40}, (1, 2, 30, 40)),
        ({"xmin": 1, "ymin": 2, "xmax": 30, "ymax": 40}, (1, 2, 30, 40)),
        ({"x": 1, "y": 2, "w": 29, "h": 38}, (1, 2, 30, 40)),  # width/height, COCO style
    ],
)
def test_box_spellings(tmp_path, box_cols, expected):
    row = {"sample_id": 7, "image_path": "p.png", "object_name": "dog", **box_cols}
    samples, errors = read_manifest(write_rows([row], tmp_path / "m.csv"))
    assert errors == [] and samples[0].box == expected and samples[0].id == "7"


def test_box_as_list_in_jsonl_and_aliases(tmp_path):
    row = {"id": "x", "path": "p.png", "name": "cat", "bbox": [3, 4, 9, 12], "source_id": 55,
           "boxed": "yes", "synthetic": True}
    samples, errors = read_manifest(write_rows([row], tmp_path / "m.jsonl"))
    s = samples[0]
    assert errors == [] and s.box == (3, 4, 9, 12) and s.group == "55" and s.boxed and s.synthetic


def test_paper_layout(tmp_path):
    rows = [
        {"coco_index": 139, "replacement_object": "zebra", "xmin": 5, "ymin": 6, "xmax": 50, "ymax": 60},
        {"coco_index": 285, "replacement_object": "banana", "xmin": None, "ymin": None, "xmax": None, "ymax": None},
        {"coco_index": 632, "replacement_object": None, "xmin": None, "ymin": None, "xmax": None, "ymax": None},
    ]
    path = write_rows(rows, tmp_path / "paper.parquet")
    images = tmp_path / "images"
    samples, errors = read_manifest(path, images_dir=images)  # layout detected from the columns
    assert [s.id for s in samples] == ["139", "285"]
    first, second = samples
    assert first.image == str(images.resolve() / "139.png") and first.boxed and first.group == "139"
    assert first.object == "zebra" and first.box == (5, 6, 50, 60)
    assert second.box is None and second.boxed  # no box needed: the image carries it
    assert len(errors) == 1 and errors[0]["id"] == "632" and "replacement_object" in errors[0]["message"]
    again, _ = read_manifest(write_rows(rows[:2], tmp_path / "paper.csv"), layout="paper", images_dir=images)
    assert again == samples


def test_bad_rows_are_reported_and_the_rest_goes_on(tmp_path):
    lines = [
        json.dumps({"id": "ok1", "image": "a.png", "object": "cat", "box": "0,0,4,4"}),
        "{not json",
        json.dumps({"id": "noobj", "image": "a.png", "box": "0,0,4,4"}),
        json.dumps({"id": "flat", "image": "a.png", "object": "cat", "box": "5,5,5,9"}),
        json.dumps({"id": "three", "image": "a.png", "object": "cat", "box": "1,2,3"}),
        json.dumps({"id": "nobox", "image": "a.png", "object": "cat"}),
        json.dumps({"id": "badlabel", "image": "a.png", "object": "cat", "box": "0,0,4,4", "truth_size": "huge"}),
        json.dumps({"id": "ok1", "image": "b.png", "object": "dog", "box": "0,0,4,4"}),
        json.dumps({"id": "ok2", "image": "b.png", "object": "dog", "x": 0, "y": 0, "w": 4}),
        json.dumps({"id": "ok3", "image": "b.png", "object": "dog", "box": "0,0,4,4"}),
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n")
    samples, errors = read_manifest(path)
    assert [s.id for s in samples] == ["ok1", "ok3"]
    by_id = {e["id"]: e for e in errors}
    assert set(by_id) == {"row 2", "noobj", "flat", "three", "nobox", "badlabel", "ok1", "ok2"}
    assert by_id["row 2"]["code"] == "bad_row"
    assert by_id["noobj"]["code"] == "missing_field" and "object" in by_id["noobj"]["message"]
    assert by_id["flat"]["code"] == "bad_box" and by_id["three"]["code"] == "bad_box"
    assert by_id["nobox"]["code"] == "bad_box"
    assert by_id["badlabel"]["code"] == "bad_value" and "huge" in by_id["badlabel"]["message"]
    assert by_id["ok1"]["code"] == "duplicate_id" and by_id["ok1"]["row"] == 8  # the later one is the error
    assert by_id["ok2"]["code"] == "bad_box" and "h" in by_id["ok2"]["message"]
    assert all(e["message"].startswith(f"row {e['row']}") or e["code"] == "bad_row" for e in errors)


def test_format_detection(tmp_path):
    path = write_rows(ROWS, tmp_path / "m.txt")  # written as Parquet, suffix says nothing
    with pytest.raises(ManifestError, match="suffix"):
        read_manifest(path)
    samples, _ = read_manifest(path, fmt="parquet")
    assert len(samples) == 2
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "nope.csv")


def test_write_manifest_round_trip(tmp_path):
    samples, _ = read_manifest(write_rows(ROWS, tmp_path / "m.jsonl"))
    out = write_manifest(samples, tmp_path / "out" / "manifest.parquet")
    table = pq.read_table(out)
    assert table.column_names == MANIFEST_COLUMNS
    assert b"notice" not in (table.schema.metadata or {}).get(b"scenefit", b"")
    back, errors = read_manifest(out)
    assert errors == [] and back == samples


def test_synthetic_manifest_says_so(tmp_path):
    s = Sample(id="s", image=str(tmp_path / "s.png"), object="cow", box=(0, 0, 2, 2), synthetic=True)
    out = write_manifest([s], tmp_path / "m.parquet")
    meta = json.loads(pq.read_schema(out).metadata[b"scenefit"])
    assert meta["notice"] == SYNTHETIC_NOTICE
    assert write_manifest([], tmp_path / "empty.parquet") and pq.read_table(tmp_path / "empty.parquet").num_rows == 0


def test_one_synthetic_rule_for_tables_provenance_samples_and_students():
    import pandas as pd

    from scenefit.core.records import Sample, is_synthetic

    real = Sample(id="a", image="a.png", object="cat", box=(0, 0, 4, 4))
    synth = real.model_copy(update={"synthetic": True})
    assert not is_synthetic() and not is_synthetic(real, {"synthetic": None}, pd.DataFrame({"id": ["a"]}))
    assert is_synthetic(real, synth) and is_synthetic({"synthetic": True})
    assert is_synthetic(pd.DataFrame({"synthetic": [None, False, True]}))
    assert not is_synthetic(pd.DataFrame({"synthetic": [None, False]}), pd.DataFrame({"synthetic": []}))

    class Student:  # a loaded student's info: toy students count as synthetic
        synthetic = True

    assert is_synthetic(Student())
