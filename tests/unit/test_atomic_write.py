"""The one atomic writer (scenefit.core.files.atomic_path) that every output file goes through.

    .venv/bin/python -m pytest tests/unit/test_atomic_write.py -q
"""

from __future__ import annotations

import pandas as pd
import pytest
from PIL import Image

from scenefit.core.files import atomic_path, atomic_write_text, write_json
from scenefit.core.parquet_io import read_table, write_table


def test_a_finished_write_replaces_the_file_whole(tmp_path):
    target = tmp_path / "deep" / "out.txt"  # its folder is made
    atomic_write_text("old\n", target)
    atomic_write_text("new\n", target)
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    write_json({"done": True}, target)
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"done": fal')  # half written, then the writer fails
            raise RuntimeError("disk full")
    assert target.read_text() == '{\n  "done": true\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no .tmp left behind


def test_tables_and_images_go_through_it(tmp_path):
    table = write_table(pd.DataFrame({"id": ["a"], "n_teachers": [3]}), tmp_path / "t.parquet", {"k": 1})
    frame, meta = read_table(table)
    assert frame["id"].tolist() == ["a"] and meta == {"k": 1}
    from scenefit.data.ingest import save_boxed

    save_boxed(Image.new("RGB", (4, 4)), tmp_path / "a.png", "PNG", 95)
    save_boxed(Image.new("RGB", (4, 4)), tmp_path / "a.jpg", "JPEG", 95)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "a.png", "t.parquet"]
