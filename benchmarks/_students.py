"""Shared setup of the student benchmarks: the students to measure and the images to judge.

Trained demo students ($DEMO_DIR/students, from `make demo`) when present, else toy students
(scenefit.testbed.toy_students) built on a tiny base in a temporary folder.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from scenefit.core.criteria import CRITERIA


def demo_students() -> Optional[Path]:
    d = Path(os.environ.get("DEMO_DIR", "runs/demo")) / "students"
    ok = all((d / c.value / "adapter_config.json").is_file() for c in CRITERIA)
    return d if ok else None


def toy_students(steps: int = 45, tiny_cfg=None, rank: int = 16, modules_to_save=("lm_head",)) -> Path:
    """Build a tiny base and three toy students (joint-trained when steps > 0) in a temp folder."""
    from scenefit.testbed.toy_students import build_toy_students
    from scenefit.testbed.tiny_model import TinyModelConfig, build_tiny_model

    root = Path(tempfile.mkdtemp(prefix="scenefit-bench-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    base = build_tiny_model(root / "base", tiny_cfg or TinyModelConfig(seed=0))
    return build_toy_students(base, root / "students", steps=steps, batch_size=4, joint=True, rank=rank,
                              modules_to_save=modules_to_save)


def bench_items(n: int, students: Path, seed: int = 0) -> tuple[list, str]:
    """``n`` items and where they come from: the demo's test split when the students are the
    demo's, else toy scenes."""
    demo_test = students.parent / "datasets" / "location" / "test.parquet"
    if demo_test.is_file():
        from scenefit.core.parquet_io import read_table

        frame = read_table(demo_test)[0].head(n)  # image paths resolved against the file's folder
        if len(frame) == n:
            items = [(row.image, row.object, None, True) for row in frame.itertuples()]
            return items, f"demo test split ({demo_test})"
    from scenefit.testbed.toy_students import toy_items

    items, _ = toy_items(n, seed=seed)
    return items, "toy scenes (scenefit.testbed.toy_students)"
