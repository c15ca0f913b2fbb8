"""The rows ``scenefit predict --out`` writes, and the one writer of that file (in process or on Ray).

    scenefit predict --students runs/demo/students --manifest samples.csv --out preds.parquet

One row per item: ``image``, ``object`` and :meth:`~scenefit.predict.results.Prediction.to_record`
(with ``notice`` when the item or the students are synthetic); a manifest row that could not be
read is its error row ``{id, code, message}``. The file (JSONL, CSV or Parquet, by
its suffix) is written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

#: --out suffix -> format.
OUT_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def prediction_rows(items: Sequence[Any], predictions: Sequence[Any], synthetic: bool, first_index: int = 0) -> list[dict]:
    """One output row per (item, prediction); ``first_index`` is the first item's place in the
    whole input (items without an id are named by it)."""
    from scenefit import SYNTHETIC_NOTICE
    from scenefit.predict.items import to_item

    rows = []
    for i, (item, p) in enumerate(zip(items, predictions)):
        it = to_item(item, first_index + i)
        row = {"image": str(it.image), "object": it.object, **p.to_record()}
        if synthetic:
            row["notice"] = SYNTHETIC_NOTICE
        rows.append(row)
    return rows


def read_error_row(err: dict) -> dict:
    """The output row of a manifest row that could not be read: its error row ``{id, code, message}``."""
    from scenefit.core.errors import error_row

    return error_row(err["id"], err["code"], err["message"])


def write_rows(rows: list[dict], out: Path, synthetic: bool) -> None:
    """``rows`` to ``out`` (format from its suffix, :data:`OUT_FORMATS`), atomically."""
    import pandas as pd

    from scenefit import SYNTHETIC_NOTICE
    from scenefit.core.files import atomic_path

    kind = OUT_FORMATS[out.suffix.lower()]
    with atomic_path(out) as tmp:
        if kind == "jsonl":
            tmp.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows))
        elif kind == "csv":
            pd.DataFrame(rows).to_csv(tmp, index=False)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
            meta = {"notice": SYNTHETIC_NOTICE} if synthetic else {}
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"scenefit": json.dumps(meta).encode()})
            pq.write_table(table, tmp)
