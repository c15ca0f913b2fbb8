"""A table row whose image path leaves the run is refused, naming the row (issue 27, probes).

    .venv/bin/python -m pytest tests/unit/test_paths_leaving_the_run.py -q

scenefit stores image paths relative to a table only within two folders of it (farther images
keep their absolute path); a ``../../../../…`` path is one no stage writes, so a dataset that
holds one was made by hand, and its path is not followed to wherever it climbs.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scenefit.core.parquet_io import read_table, write_table


def raw_table(path, images):
    pq.write_table(pa.Table.from_pandas(pd.DataFrame({"id": [f"s{i}" for i in range(len(images))],
                                                      "image": images})), path)


def test_a_relative_path_that_climbs_out_of_the_run_is_refused(tmp_path):
    table = tmp_path / "run" / "datasets" / "location" / "train.parquet"
    table.parent.mkdir(parents=True)
    raw_table(table, ["../../synth/images/a.png", "../../../../../../etc/hostname"])
    with pytest.raises(ValueError, match=r"row 's1': image path '\.\./\.\./\.\./\.\./\.\./\.\./etc/hostname' leaves the run"):
        read_table(table)
    raw_table(table, ["a/../../../../x.png"])  # climbing through a folder counts too
    with pytest.raises(ValueError, match="climbs 3 folders"):
        read_table(table)


def test_paths_scenefit_writes_are_read_back(tmp_path):
    run = tmp_path / "run"
    (run / "synth" / "images").mkdir(parents=True)
    far = tmp_path / "shared" / "b.png"
    table = run / "datasets" / "location" / "train.parquet"
    frame = pd.DataFrame({"id": ["a", "b"], "image": [str(run / "synth" / "images" / "a.png"), str(far)]})
    write_table(frame, table)
    assert list(pq.read_table(table).to_pandas()["image"]) == ["../../synth/images/a.png", str(far)]
    back, _ = read_table(table)
    assert list(back["image"]) == [str(run / "synth" / "images" / "a.png"), str(far)]


def test_train_and_evaluate_name_the_table(tmp_path):
    from scenefit.evaluate.splits import EvaluateError, load_split
    from scenefit.train.data import read_split

    table = tmp_path / "location" / "test.parquet"
    table.parent.mkdir()
    raw_table(table, ["../../../../../../etc/passwd"])
    with pytest.raises(EvaluateError, match="location: .*leaves the run"):
        load_split(tmp_path, ["location"], "test")
    with pytest.raises(ValueError, match="leaves the run"):
        read_split(tmp_path, "location", "test")
