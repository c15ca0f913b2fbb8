"""Soft labels in the consensus: the teachers' stored P(Out-of-context) as a (samples × teachers)
matrix per field, and their mean over the teachers that gave one.

    scenefit consensus --db runs/demo/annotate/annotations.sqlite \
        --manifest runs/demo/ingest/manifest.parquet --out runs/demo/consensus --config demo

:mod:`scenefit.data.consensus` writes ``designated_p_out_<field>`` and ``teachers_mean_p_out_<field>``
with these; the store's ``p_out`` column (JSON per answer) is what they read.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def p_out_table(cells: np.ndarray, fields: Sequence[str]) -> np.ndarray:
    """Stored ``p_out`` cells (JSON text, a mapping, or None) -> (rows, len(fields)) floats, NaN
    where unknown. Only non-empty cells are decoded (stores without probabilities cost nothing);
    a value outside [0, 1] is a ValueError naming its row and field."""
    import json

    out = np.full((len(cells), len(fields)), np.nan)
    present = np.array([c is not None and not (isinstance(c, float) and np.isnan(c)) for c in cells], dtype=bool)
    if not present.any():
        return out
    parsed = [json.loads(c) if isinstance(c, str) else c for c in cells[present]]
    for k, field in enumerate(fields):
        values = np.array([d.get(field) for d in parsed], dtype=float)  # None -> NaN
        bad = ~np.isnan(values) & ((values < 0) | (values > 1))
        if bad.any():
            row = int(np.flatnonzero(present)[np.flatnonzero(bad)[0]])
            raise ValueError(f"answer row {row}: p_out.{field} = {values[bad][0]} is not a probability in [0, 1]")
        out[present, k] = values
    return out


def mean_p_out(m: np.ndarray) -> np.ndarray:
    """Per sample: the mean of the teachers' probabilities that are known (NaN when none is)."""
    known = ~np.isnan(m)
    total = np.where(known, m, 0.0).sum(axis=1)
    count = known.sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)
