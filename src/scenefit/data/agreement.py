"""Agreement between teachers: raw agreement, pairwise Cohen's kappa, Fleiss' kappa.

Labels arrive as small integer codes in a (samples × teachers) matrix: 0 = In-context,
1 = Out-of-context, -1 = no label (missing answer, unusable answer, or the criterion was
not readable). Every statistic is computed on the samples where the raters involved all
have a label, and says on how many samples (``n``) it rests.

    from scenefit.data.agreement import fleiss_kappa, pairwise_cohen
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Optional, Sequence

import numpy as np

MISSING = -1


def _finite(x: float) -> Optional[float]:
    """NaN/inf (undefined kappa) become None so JSON reports stay valid."""
    return None if x is None or not math.isfinite(x) else float(x)


def fleiss_kappa(category_counts: np.ndarray) -> Optional[float]:
    """Fleiss' kappa from a (subjects × categories) matrix of rater counts.

    Every row must sum to the same number of raters n ≥ 2. With N subjects:
    p_j = share of all ratings in category j; P_i = agreeing rater pairs of subject i,
    (Σ_j n_ij² − n) / (n(n − 1)); κ = (mean P_i − Σ p_j²) / (1 − Σ p_j²).
    Undefined (None) when there are no subjects or every rating falls in one category
    (the chance agreement is then 1).
    """
    counts = np.asarray(category_counts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] == 0:
        return None
    raters = counts.sum(axis=1)
    n = raters[0]
    if n < 2 or not np.all(raters == n):
        raise ValueError("fleiss_kappa needs the same number (>= 2) of ratings for every subject")
    p_j = counts.sum(axis=0) / counts.sum()
    p_i = (np.square(counts).sum(axis=1) - n) / (n * (n - 1))
    p_bar = p_i.mean()
    p_e = float(np.square(p_j).sum())
    if p_e >= 1.0:
        return None
    return _finite((p_bar - p_e) / (1.0 - p_e))


def fleiss_from_codes(codes: np.ndarray, n_categories: int = 2) -> tuple[Optional[float], int]:
    """Fleiss' kappa over the samples where every teacher has a label; returns (kappa, n)."""
    complete = (codes != MISSING).all(axis=1) if codes.size else np.zeros(len(codes), bool)
    rows = codes[complete]
    if codes.shape[1] < 2 or len(rows) == 0:
        return None, int(len(rows))
    counts = np.stack([(rows == k).sum(axis=1) for k in range(n_categories)], axis=1)
    return fleiss_kappa(counts), int(len(rows))


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> tuple[Optional[float], int]:
    """Cohen's kappa (scikit-learn) on the samples where both raters have a label."""
    both = (a != MISSING) & (b != MISSING)
    n = int(both.sum())
    if n == 0:
        return None, 0
    x, y = a[both], b[both]
    # One shared single category: scikit-learn divides 0 by 0 and warns; the kappa is undefined.
    if len(np.union1d(np.unique(x), np.unique(y))) < 2:
        return None, n
    from sklearn.metrics import cohen_kappa_score

    return _finite(cohen_kappa_score(x, y)), n


def pairwise_cohen(codes: np.ndarray, teachers: Sequence[str]) -> list[dict]:
    """Cohen's kappa for every pair of teachers: [{a, b, kappa, n}, ...] in teacher order."""
    out = []
    for i, j in combinations(range(len(teachers)), 2):
        kappa, n = cohen_kappa(codes[:, i], codes[:, j])
        out.append({"a": teachers[i], "b": teachers[j], "kappa": kappa, "n": n})
    return out


def agreement_rate(codes: np.ndarray) -> tuple[Optional[float], int]:
    """Share of samples on which all teachers gave the same label, among those where all gave one."""
    if codes.shape[1] == 0:
        return None, 0
    complete = (codes != MISSING).all(axis=1)
    n = int(complete.sum())
    if n == 0:
        return None, 0
    rows = codes[complete]
    same = (rows == rows[:, :1]).all(axis=1)
    return float(same.mean()), n
