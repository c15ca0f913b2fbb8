"""The rows evaluate reads: one criterion's dataset split, and the predictor's item of each row.

    from scenefit.evaluate.splits import load_split, row_sample
    frames = load_split("runs/demo/datasets", ["location"], "test")
    items = [row_sample(r) for r in frames["location"].to_dict("records")]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import pandas as pd

from scenefit.core.errors import ScenefitError
from scenefit.evaluate.metrics import criteria_order
from scenefit.predict.items import PredictItem


class EvaluateError(ScenefitError, ValueError):
    """Inputs that cannot be evaluated (missing dataset files, no rows); the message names them."""


def load_split(data_dir: Path | str, criteria: Sequence[str], split: str, limit: Optional[int] = None) -> dict[str, pd.DataFrame]:
    """DATA/<criterion>/<split>.parquet per criterion (the first ``limit`` rows)."""
    from scenefit.core.parquet_io import read_table

    frames = {}
    for name in criteria_order(criteria):
        path = Path(data_dir) / name / f"{split}.parquet"
        if not path.is_file():
            raise EvaluateError(f"{name}: dataset file not found: {path} (run `scenefit datasets` first)")
        try:
            df, _ = read_table(path)
        except ValueError as e:  # e.g. an image path that leaves the run
            raise EvaluateError(f"{name}: {e}") from None
        if limit:
            df = df.head(limit)
        if df.empty:
            raise EvaluateError(f"{name}: {path} has no rows")
        frames[name] = df.reset_index(drop=True)
    return frames


def clean_cell(v: Any) -> Any:
    """A cell's value, None for a missing one (None or NaN)."""
    return None if v is None or (isinstance(v, float) and v != v) else v


def row_sample(row: dict) -> PredictItem:
    """The predictor's item of one dataset row (its image, a path or embedded in the row, already
    carries the red box)."""
    box = clean_cell(row.get("box"))
    box = None if box is None else tuple(float(x) for x in box)
    image = row["image"] if isinstance(row["image"], dict) else str(row["image"])
    return PredictItem(image, str(row["object"]), box, True, str(row["id"]))
