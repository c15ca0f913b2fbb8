"""Balanced, group-aware, seeded train/val/test split of the consensus samples.

    scenefit split runs/demo/consensus/consensus.parquet --out runs/demo/split --config demo

``balance: final`` (default): every split holds exactly as many In-context as Out-of-context samples
(by the consensus final decision). ``balance: none``: every consensus sample goes to one split, in
the proportions of ``fractions`` and without balancing anything — pools from which the datasets
stage draws each criterion's own 1:1 sets (``datasets.counts``, the authors' per-criterion
balance). Either way no group (source image) appears in two splits. Assignment is a pure function of
the seed and the group / sample ids (SHA-256), so the same input and seed give byte-identical
files, whatever the input row order.

How: groups are visited in the order of hash(seed, group); each goes to its preferred split
(drawn from hash(seed, group) in proportion to the split sizes) or, when that split needs none
of the group's classes any more, to the next split that does. Within a split, the samples of
each class are taken in the order of hash(seed, id) until the split has its count. When the
data cannot fill the requested sizes, every size shrinks by one factor (proportions kept) until
the assignment fills them exactly, and the manifest says so.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from scenefit import SYNTHETIC_NOTICE
from scenefit.core.config import StageConfig
from scenefit.core.criteria import Label
from scenefit.core.records import is_synthetic
from scenefit.data.agreement import MISSING
from scenefit.data.consensus import label_codes

SPLITS = ("train", "val", "test")


class SplitCounts(StageConfig):
    """Exact sample counts per split; each must be even (half In-context, half Out-of-context)."""

    train: int = Field(description="Training samples (even).", ge=0)
    val: int = Field(description="Validation samples (even).", ge=0)
    test: int = Field(description="Test samples (even).", ge=0)

    @model_validator(mode="after")
    def _even(self):
        odd = [s for s in SPLITS if getattr(self, s) % 2]
        if odd:
            raise ValueError(f"split count(s) {odd} must be even: every split is balanced 1:1")
        if self.train + self.val + self.test == 0:
            raise ValueError("split counts are all zero")
        return self


class SplitFractions(StageConfig):
    """Shares of the largest balanced set; normalised to sum to 1."""

    train: float = Field(default=0.8, ge=0, description="Share of the balanced set for training.")
    val: float = Field(default=0.1, ge=0, description="Share for validation.")
    test: float = Field(default=0.1, ge=0, description="Share for testing.")

    @model_validator(mode="after")
    def _positive(self):
        if self.train + self.val + self.test <= 0:
            raise ValueError("split fractions sum to zero")
        return self


class SplitConfig(StageConfig):
    """Section ``split``: what is balanced, sizes (counts or fractions), seed, what to do when data is short."""

    seed: int = Field(default=0, description="Seed of the hash-based assignment (same seed → same files).")
    balance: Literal["final", "none"] = Field(
        default="final",
        description="final: each split 1:1 on the consensus final decision (counts or fractions of the largest "
        "balanced set). none: every consensus sample into one split in the proportions of `fractions`, nothing "
        "balanced — pools for the datasets stage's per-criterion 1:1 draw (datasets.counts).",
    )
    counts: Optional[SplitCounts] = Field(
        default=None,
        description="Exact counts per split (paper: train 20000, val 2000, test 2000); when unset, fractions apply.",
    )
    fractions: SplitFractions = Field(
        default_factory=SplitFractions,
        description="Shares of the largest balanced set per split, used when counts is unset.",
    )
    allow_fewer: bool = Field(
        default=True,
        description="When the data cannot fill the requested counts, take the largest balanced set with the "
        "same proportions (and say so) instead of failing.",
    )

    @model_validator(mode="after")
    def _pools_take_fractions(self):
        if self.balance == "none" and self.counts is not None:
            raise ValueError("split.balance none assigns every sample to a split by `fractions`; unset `counts` "
                             "(each criterion's exact sizes are datasets.counts)")
        return self


def stable_hash(seed: int, tag: str, keys: pd.Series) -> np.ndarray:
    """64-bit SHA-256 prefix of 'seed:tag:key' per key (stable across runs, platforms, versions)."""
    prefix = f"{seed}:{tag}:"
    return np.fromiter(
        (int.from_bytes(hashlib.sha256((prefix + k).encode()).digest()[:8], "big") for k in keys.astype(str)),
        dtype=np.uint64,
        count=len(keys),
    )


@dataclass
class SplitResult:
    frames: dict[str, pd.DataFrame]
    manifest: dict


def _assign_groups(g_in: np.ndarray, g_out: np.ndarray, pref: np.ndarray, need: np.ndarray) -> np.ndarray:
    """Greedy fill in the given group order; returns the split index per group (-1 = unused).

    ``need``: (splits × 2) samples still wanted per split and class (0 = in, 1 = out).
    """
    rem = need.astype(np.int64).copy()
    assigned = np.full(len(g_in), -1, dtype=np.int64)
    left = int(rem.sum())
    n_splits = rem.shape[0]
    for gi in range(len(g_in)):
        if left <= 0:
            break
        a, b = int(g_in[gi]), int(g_out[gi])
        p = int(pref[gi])
        for k in range(n_splits):
            s = (p + k) % n_splits
            ra, rb = rem[s]
            if (ra > 0 and a) or (rb > 0 and b):
                take_a, take_b = min(ra, a), min(rb, b)
                rem[s, 0] -= take_a
                rem[s, 1] -= take_b
                left -= take_a + take_b
                assigned[gi] = s
                break
    return assigned


def balanced_split(frame: pd.DataFrame, cfg: SplitConfig, input_meta: Optional[dict] = None) -> SplitResult:
    """Split consensus rows (needs columns id, final; group optional) into balanced splits
    (``cfg.balance`` none: into unbalanced pools, :func:`pool_split`)."""
    input_meta = input_meta or {}
    if cfg.balance == "none":
        return pool_split(frame, cfg, input_meta)
    pool, y, groups, n_dropped = _usable_rows(frame)
    avail = np.array([(y == 0).sum(), (y == 1).sum()], dtype=np.int64)
    mode, requested = _requested_pairs(cfg, int(avail.min()))
    packing = _GroupPacking(groups, y, cfg.seed)
    pairs = packing.fit(requested, int(avail.min()), cfg.allow_fewer, avail)
    sample_split, chosen = packing.pick(pool["id"].astype(str), pairs, cfg.seed)
    frames = {name: pool.loc[chosen & (sample_split == s)].sort_values("id", kind="stable").reset_index(drop=True)
              for s, name in enumerate(SPLITS)}
    manifest = _split_manifest(frames, cfg, mode, requested, pairs, avail, input_meta,
                               dropped=n_dropped, unused=int(len(pool) - chosen.sum()),
                               synthetic=is_synthetic(input_meta, frame))
    return SplitResult(frames, manifest)


def pool_split(frame: pd.DataFrame, cfg: SplitConfig, input_meta: Optional[dict] = None) -> SplitResult:
    """Every consensus row (a final decision is not needed) into one split, whole groups at a time:
    groups visited in hash(seed, group) order, each to the split furthest below its share of what
    is assigned so far (``cfg.fractions``), so the pools keep the proportions to within one group."""
    input_meta = input_meta or {}
    if "id" not in frame.columns:
        raise ValueError("the consensus table lacks column id (is it `scenefit consensus` output?)")
    pool = frame.reset_index(drop=True)
    ids = pool["id"].astype(str)
    if ids.duplicated().any():
        raise ValueError(f"consensus table repeats sample id {ids[ids.duplicated()].iloc[0]!r}")
    groups = _group_keys(pool, ids)
    sizes = pd.Series(groups).value_counts()
    order = sizes.index[np.argsort(stable_hash(cfg.seed, "order", sizes.index.to_series()), kind="stable")]
    share = np.array([getattr(cfg.fractions, s) for s in SPLITS], dtype=np.float64)
    share = share / share.sum()
    filled = np.zeros(len(SPLITS))
    split_of: dict[str, int] = {}
    for g in order:
        n = int(sizes[g])
        s = int(np.argmax(share * (filled.sum() + n) - filled))
        split_of[g] = s
        filled[s] += n
    sample_split = pd.Series(groups).map(split_of).to_numpy()
    frames = {name: pool.loc[sample_split == s].sort_values("id", kind="stable").reset_index(drop=True)
              for s, name in enumerate(SPLITS)}
    target = np.round(share * len(pool)).astype(np.int64)  # pool sizes aimed at (pairs: half of each)
    y = label_codes(pool["final"]) if "final" in pool and len(pool) else np.full(len(pool), MISSING, np.int8)
    avail = np.array([(y == 0).sum(), (y == 1).sum()], dtype=np.int64)
    manifest = _split_manifest(frames, cfg, "pools", target // 2, target // 2, avail, input_meta, dropped=0,
                               unused=0, synthetic=is_synthetic(input_meta, frame))
    manifest.update(requested=dict(zip(SPLITS, target.tolist())),
                    note="pools: nothing balanced here; the datasets stage draws each criterion's 1:1 sets")
    return SplitResult(frames, manifest)


def _group_keys(pool: pd.DataFrame, ids: pd.Series) -> np.ndarray:
    """Each row's group key: its group, or the sample itself when it has none."""
    group_col = pool["group"] if "group" in pool else pd.Series([None] * len(pool))
    has_group = group_col.notna() & (group_col.astype(str).str.strip() != "")
    return np.where(has_group, "g:" + group_col.astype(str), "id:" + ids)


def _usable_rows(frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, int]:
    """The rows with a final decision, their class codes (0 in, 1 out), their group keys (the
    group, or the sample itself when it has none) and how many rows had no final decision."""
    missing = [c for c in ("id", "final") if c not in frame.columns]
    if missing:
        raise ValueError(f"the consensus table lacks column(s) {', '.join(missing)} (is it `scenefit consensus` output?)")
    y_all = label_codes(frame["final"]) if len(frame) else np.zeros(0, np.int8)
    usable = y_all != MISSING
    pool = frame.loc[usable].reset_index(drop=True)
    ids = pool["id"].astype(str)
    if ids.duplicated().any():
        raise ValueError(f"consensus table repeats sample id {ids[ids.duplicated()].iloc[0]!r}")
    return pool, y_all[usable], _group_keys(pool, ids), int((~usable).sum())


def _requested_pairs(cfg: SplitConfig, pairs_possible: int) -> tuple[str, np.ndarray]:
    """In/out pairs wanted per split: from ``counts``, else ``fractions`` of the pairs there are."""
    if cfg.counts is not None:
        return "counts", np.array([getattr(cfg.counts, s) // 2 for s in SPLITS], dtype=np.int64)
    fr = np.array([getattr(cfg.fractions, s) for s in SPLITS], dtype=np.float64)
    return "fractions", np.floor(pairs_possible * fr / fr.sum()).astype(np.int64)


class _GroupPacking:
    """Whole groups packed into the splits: groups visited in hash(seed, group) order, each to
    its preferred split (a second hash, in proportion to the sizes) or the next that still needs
    its classes; then per split and class the samples taken in hash(seed, id) order."""

    def __init__(self, groups: np.ndarray, y: np.ndarray, seed: int):
        self.groups = groups
        self.y = y
        gdf = pd.DataFrame({"g": groups, "y": y})
        self.per_group = pd.crosstab(gdf["g"], gdf["y"]).reindex(columns=[0, 1], fill_value=0)
        gkeys = self.per_group.index.to_series()
        self.pref_u = stable_hash(seed, "split", gkeys).astype(np.float64) / 2.0**64
        self.order = np.argsort(stable_hash(seed, "order", gkeys), kind="stable")
        self.g_in = self.per_group[0].to_numpy()[self.order]
        self.g_out = self.per_group[1].to_numpy()[self.order]
        self.assigned = np.zeros(0, dtype=np.int64)

    def _preferred(self, pairs: np.ndarray) -> np.ndarray:
        w = pairs / max(int(pairs.sum()), 1)
        return np.minimum(np.searchsorted(np.cumsum(w), self.pref_u[self.order], side="right"), len(SPLITS) - 1)

    def _attempt(self, requested: np.ndarray, total: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """Sizes for ``total`` pairs in the requested proportions; whether the assignment fills them."""
        pairs = np.floor(requested * total / max(int(requested.sum()), 1)).astype(np.int64)
        need = np.stack([pairs, pairs], axis=1)
        assigned = _assign_groups(self.g_in, self.g_out, self._preferred(pairs), need)
        got = np.stack([[self.g_in[assigned == s].sum(), self.g_out[assigned == s].sum()] for s in range(len(SPLITS))])
        return pairs, assigned, bool((got >= need).all())

    def fit(self, requested: np.ndarray, pairs_possible: int, allow_fewer: bool, avail: np.ndarray) -> np.ndarray:
        """The pairs per split the packing fills: as requested, else (``allow_fewer``) the largest
        total in the same proportions that it fills; ValueError otherwise."""
        total_requested = int(requested.sum())
        pairs, assigned, filled = self._attempt(requested, total_requested)
        if not filled:
            if not allow_fewer:
                raise ValueError(
                    f"requested {2 * total_requested} samples ({dict(zip(SPLITS, (2 * requested).tolist()))}) but only "
                    f"{pairs_possible} balanced pairs exist (In-context {avail[0]}, Out-of-context {avail[1]}) "
                    "or the groups cannot be packed into them; set split.allow_fewer to take fewer"
                )
            # The largest total (same proportions) that the assignment fills: binary search, since
            # packing whole groups can waste a few samples below the class-count bound.
            lo, hi = 0, min(total_requested, pairs_possible)
            best = self._attempt(requested, 0)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                trial = self._attempt(requested, mid)
                if trial[2]:
                    lo, best = mid, trial
                else:
                    hi = mid - 1
            pairs, assigned, _ = best
        self.assigned = assigned
        return pairs

    def pick(self, ids: pd.Series, pairs: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Each sample's split (its group's; -1 unused) and which samples are taken: per split and
        class the first ``pairs[s]`` by hash(seed, id)."""
        split_of_group = pd.Series(np.full(len(self.per_group), -1), index=self.per_group.index)
        split_of_group.iloc[self.order] = self.assigned
        sample_split = split_of_group.reindex(self.groups).to_numpy()
        pick_h = stable_hash(seed, "pick", ids)
        chosen = np.zeros(len(ids), dtype=bool)
        for s in range(len(SPLITS)):
            for cls in (0, 1):
                idx = np.flatnonzero((sample_split == s) & (self.y == cls))
                idx = idx[np.argsort(pick_h[idx], kind="stable")][: pairs[s]]
                chosen[idx] = True
        return sample_split, chosen


def _split_manifest(frames: dict[str, pd.DataFrame], cfg: SplitConfig, mode: str, requested: np.ndarray,
                    pairs: np.ndarray, avail: np.ndarray, input_meta: dict, *, dropped: int, unused: int,
                    synthetic: bool) -> dict:
    """What the split did: sizes requested and taken, class ratios and groups per split, any
    shortfall said in words, and the consensus provenance carried on."""
    counts, ratios, n_groups = {}, {}, {}
    for name, rows in frames.items():
        final = rows["final"] if "final" in rows else pd.Series([None] * len(rows), dtype=object)
        n_in = int((final == Label.IN.value).sum())
        n_out = int((final == Label.OUT.value).sum())
        counts[name] = len(rows)
        ratios[name] = {Label.IN.value: n_in, Label.OUT.value: n_out, "out_share": n_out / len(rows) if len(rows) else None}
        n_groups[name] = int(rows["group"].nunique()) if "group" in rows else len(rows)
    shortfall = int(pairs.sum()) < int(requested.sum())
    message = None
    if shortfall:
        message = (
            f"too few samples for the requested sizes {dict(zip(SPLITS, (2 * requested).tolist()))}: "
            f"In-context {avail[0]}, Out-of-context {avail[1]} available; took the largest balanced set with the "
            f"same proportions the group-aware assignment fills: {counts}"
        )
    return {
        "stage": "split",
        "seed": cfg.seed,
        "balance": cfg.balance,
        "mode": mode,
        "requested": dict(zip(SPLITS, (2 * requested).tolist())),
        "counts": counts,
        "class_ratios": ratios,
        "groups": n_groups,
        "shortfall": shortfall,
        "message": message,
        "available": {Label.IN.value: int(avail[0]), Label.OUT.value: int(avail[1])},
        "dropped_without_final": dropped,
        "unused": unused,
        "rule": input_meta.get("rule"),
        "designated": input_meta.get("designated"),
        "teachers": input_meta.get("teachers"),
        "prompt_hash": input_meta.get("prompt_hash"),
        "box_style": input_meta.get("box_style"),
        "synthetic": synthetic,
        "notice": SYNTHETIC_NOTICE if synthetic else None,
    }


def write_split(result: SplitResult, out_dir: Path | str, inputs: dict[str, str]) -> dict[str, Path]:
    """OUT/{train,val,test}.parquet + OUT/manifest.json; ``inputs``: file name -> sha256."""
    from scenefit.core.files import write_json
    from scenefit.core.parquet_io import write_table

    out = Path(out_dir)
    manifest = {**result.manifest, "inputs": inputs}
    paths = {}
    for name, df in result.frames.items():
        meta = {k: manifest[k] for k in ("stage", "seed", "rule", "designated", "box_style", "synthetic", "notice")}
        paths[name] = write_table(df, out / f"{name}.parquet", {**meta, "split": name})
    paths["manifest"] = write_json(manifest, out / "manifest.json")
    return paths
