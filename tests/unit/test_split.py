"""Balanced, group-aware, seeded splits: exact balance, no shared groups, byte-identical files.

    .venv/bin/python -m pytest tests/unit/test_split.py -q
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from scenefit.data.consensus import output_columns
from scenefit.data.split import SPLITS, SplitConfig, balanced_split, write_split

I, O = "In-context", "Out-of-context"


def consensus_frame(n: int, out_share: float = 0.5, group_size: int = 3, seed: int = 0) -> pd.DataFrame:
    """A consensus table: groups of up to `group_size` samples with mixed labels."""
    rng = np.random.default_rng(seed)
    final = np.where(rng.random(n) < out_share, O, I)
    rows = []
    for i in range(n):
        row = {c: None for c in output_columns()}
        row.update(id=f"s{i:05d}", image=f"/img/{i}.png", object="cow", box=[0, 0, 4, 4],
                   group=f"g{i // group_size}", scene="farm", boxed=False, synthetic=True, final=final[i],
                   n_usable=3)
        rows.append(row)
    return pd.DataFrame(rows)


def groups_of(frames) -> dict[str, set]:
    return {s: set(df["group"]) for s, df in frames.items()}


def test_counts_are_exact_balanced_and_groups_never_shared():
    frame = consensus_frame(3000, out_share=0.35)
    cfg = SplitConfig(counts={"train": 600, "val": 100, "test": 100}, seed=7)
    res = balanced_split(frame, cfg)
    for s, n in {"train": 600, "val": 100, "test": 100}.items():
        df = res.frames[s]
        assert len(df) == n
        assert (df["final"] == I).sum() == (df["final"] == O).sum() == n // 2
    g = groups_of(res.frames)
    assert not (g["train"] & g["val"]) and not (g["train"] & g["test"]) and not (g["val"] & g["test"])
    ids = pd.concat(res.frames.values())["id"]
    assert ids.is_unique
    assert res.manifest["shortfall"] is False and res.manifest["counts"] == {"train": 600, "val": 100, "test": 100}
    assert res.manifest["class_ratios"]["val"]["out_share"] == 0.5


def test_fractions_take_the_largest_balanced_set():
    frame = consensus_frame(1000, out_share=0.3, group_size=1)
    n_out = int((frame["final"] == O).sum())
    res = balanced_split(frame, SplitConfig(fractions={"train": 0.8, "val": 0.1, "test": 0.1}))
    total = sum(res.manifest["counts"].values())
    assert total >= 2 * n_out - 6  # floor per split loses at most one pair each
    for df in res.frames.values():
        assert (df["final"] == I).sum() == (df["final"] == O).sum()


def test_too_few_samples_keeps_proportions_and_says_so():
    frame = consensus_frame(400, out_share=0.25)
    cfg = SplitConfig(counts={"train": 1000, "val": 100, "test": 100})
    res = balanced_split(frame, cfg)
    m = res.manifest
    assert m["shortfall"] is True and "too few samples" in m["message"]
    c = m["counts"]
    assert 0 < c["train"] < 1000 and c["val"] > 0
    assert c["train"] == pytest.approx(10 * c["val"], abs=20) and c["val"] == c["test"]
    n_out = int((frame["final"] == O).sum())
    assert sum(c.values()) <= 2 * n_out and sum(c.values()) >= 0.8 * 2 * n_out  # near the class bound
    for df in res.frames.values():
        assert (df["final"] == I).sum() == (df["final"] == O).sum()
    assert not (groups_of(res.frames)["train"] & groups_of(res.frames)["test"])
    with pytest.raises(ValueError, match="balanced pairs exist"):
        balanced_split(frame, cfg.model_copy(update={"allow_fewer": False}))


def test_same_seed_gives_byte_identical_files_whatever_the_row_order(tmp_path):
    frame = consensus_frame(600)
    cfg = SplitConfig(counts={"train": 200, "val": 40, "test": 40}, seed=3)
    inputs = {"consensus.parquet": "abc"}
    write_split(balanced_split(frame, cfg), tmp_path / "a", inputs)
    shuffled = frame.sample(frac=1.0, random_state=1).reset_index(drop=True)
    write_split(balanced_split(shuffled, cfg), tmp_path / "b", inputs)
    for name in [f"{s}.parquet" for s in SPLITS] + ["manifest.json"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    write_split(balanced_split(frame, cfg.model_copy(update={"seed": 4})), tmp_path / "c", inputs)
    assert (tmp_path / "a" / "test.parquet").read_bytes() != (tmp_path / "c" / "test.parquet").read_bytes()
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["inputs"] == inputs and manifest["notice"]


def test_samples_without_a_group_are_their_own_group_and_unlabelled_rows_are_dropped():
    frame = consensus_frame(200, group_size=1)
    frame["group"] = None
    frame.loc[:9, "final"] = None
    res = balanced_split(frame, SplitConfig(counts={"train": 40, "val": 10, "test": 10}))
    assert res.manifest["dropped_without_final"] == 10
    assert sum(len(df) for df in res.frames.values()) == 60


def test_big_mixed_groups_still_fill_exactly():
    # groups of 10 with mixed labels: whole-group packing wastes samples; counts must still be exact
    frame = consensus_frame(2000, out_share=0.5, group_size=10)
    res = balanced_split(frame, SplitConfig(counts={"train": 800, "val": 100, "test": 100}))
    assert res.manifest["counts"] == {"train": 800, "val": 100, "test": 100}
    g = groups_of(res.frames)
    assert not (g["train"] & g["val"]) and not (g["val"] & g["test"]) and not (g["train"] & g["test"])


def test_odd_counts_are_rejected():
    with pytest.raises(ValidationError, match="even"):
        SplitConfig(counts={"train": 101, "val": 10, "test": 10})
