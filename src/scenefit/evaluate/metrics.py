"""Decision metrics of one model on one criterion, the fused decision, calibration and error
breakdowns — pure functions over label sequences, so they are tested on hand-made answers.

Conventions (also written into ``metrics.json`` under ``conventions``):

- Out-of-context is the positive class (``precision_out``, ``recall_out``, ``f1_out``).
- An unparseable answer (label ``None``) is never a third class. It is counted on its own
  (``unparseable``) and *counted wrong*: for accuracy, F1, macro-F1, kappa and the confusion
  matrix's ``counted_wrong`` view it stands for the label opposite to the reference.
  ``accuracy_parseable`` and ``parseable_only`` score the parseable answers alone.
- A ratio whose denominator is zero is ``None`` (JSON null), not 0 or 1: precision when no
  answer is out-of-context, recall when no reference is, F1 of a class that is in neither
  the references nor the answers, kappa when both sides use one and the same label.
  ``macro_f1`` averages the F1 of the classes that are defined (present on either side).
- Rows whose reference is missing (e.g. no truth) are left out and counted in ``no_reference``.
- Headline numbers come with what is needed to read them: ``accuracy_ci95`` (Wilson score
  interval, 95 %), ``majority_rate`` (the accuracy of always answering the reference's most
  frequent label, the floor a skewed set gives for free), ``balanced_accuracy`` (mean recall of
  the labels present in the references: 0.5 for any constant answer) with
  ``balanced_accuracy_ci95``, and ``macro_f1``.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from scenefit.core.criteria import CRITERIA, LABELS, Criterion, Label, fuse

#: Written into metrics.json so a reader knows how the numbers were made.
CONVENTIONS = {
    "positive_class": Label.OUT.value,
    "unparseable": "never a third class: counted separately and counted wrong (as the label opposite to the "
    "reference) in accuracy, F1, macro-F1, kappa; accuracy_parseable scores parseable answers only",
    "undefined_ratio": "null when the denominator is zero (e.g. F1 of a class absent from references and answers)",
    "macro_f1": "mean F1 of the two labels, over the labels whose F1 is defined",
    "fused": "out-of-context when any criterion is; unknown when none is out and one is unparseable",
    "accuracy_ci95": "Wilson score interval, z = 1.96",
    "majority_rate": "share of the most frequent reference label (accuracy of always answering it)",
    "balanced_accuracy": "mean recall of the labels present in the references (unparseable counted wrong)",
    "balanced_accuracy_ci95": "mean of the per-label recalls, each shifted as in Wilson's interval "
    "((k + z^2/2) / (n + z^2)), +- z times the standard error of that mean; z = 1.96, clipped to [0, 1] "
    "and widened to hold the value itself",
}

#: Two-sided 95 % normal quantile.
Z95 = 1.959963984540054


def as_label(value: Any) -> Optional[Label]:
    """A Label from a Label, its text, or a loose spelling; None for None/NaN/unreadable text."""
    if value is None or isinstance(value, Label):
        return value
    if isinstance(value, float) and math.isnan(value):
        return None
    return Label.parse(str(value))


def _ratio(num: float, den: float) -> Optional[float]:
    return float(num) / float(den) if den else None


def _nan_to_none(x: float) -> Optional[float]:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def wilson_interval(successes: int, n: int, z: float = Z95) -> Optional[list[float]]:
    """Wilson score interval [low, high] of a proportion ``successes / n``; None when n = 0.

    Unlike the plain normal interval it stays inside [0, 1] and is not empty at 0 or n
    successes, which the small test splits here hit."""
    if n <= 0:
        return None
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return [max(0.0, min(centre - half, p)), min(1.0, max(centre + half, p))]  # p inside despite rounding


def balanced_accuracy(matrix: Sequence[Sequence[int]], z: float = Z95) -> tuple[Optional[float], Optional[list[float]]]:
    """(balanced accuracy, its 95 % interval) from a confusion matrix (rows = references).

    The value is the mean recall over the labels that occur in the references. The interval
    shifts each recall as Wilson's does, (k + z²/2) / (n + z²), and spans ± z standard errors
    of their mean (the recalls come from disjoint rows, so their variances add)."""
    rows = [(int(r[i]), int(sum(r))) for i, r in enumerate(matrix) if sum(r) > 0]
    if not rows:
        return None, None
    value = sum(k / n for k, n in rows) / len(rows)
    z2 = z * z
    shifted = [((k + z2 / 2) / (n + z2), n + z2) for k, n in rows]
    centre = sum(p for p, _ in shifted) / len(rows)
    half = z * math.sqrt(sum(p * (1 - p) / m for p, m in shifted)) / len(rows)
    # the shifted centre can sit a rounding error away from a perfect score: keep the value inside
    return value, [max(0.0, min(centre - half, value)), min(1.0, max(centre + half, value))]


#: Headline numbers of every (model, reference) pair in metrics.json: each accuracy with its
#: 95 % interval and the majority-class rate of its references; balanced accuracy and macro-F1
#: beside it, because on a skewed set plain accuracy flatters a constant answer.
HEADLINE_KEYS = ("accuracy", "accuracy_ci95", "majority_rate", "balanced_accuracy", "balanced_accuracy_ci95",
                 "macro_f1")


def headline_key(key: str, prefix: str = "", suffix: str = "") -> str:
    """metrics.json name of a headline number: ``baseline_`` + ``accuracy`` + ``_vs_truth`` +
    ``_ci95`` (an interval's name is its value's name plus ``_ci95``)."""
    base, ci = (key[: -len("_ci95")], "_ci95") if key.endswith("_ci95") else (key, "")
    return f"{prefix}{base}{suffix}{ci}"


def headline_value(numbers: Mapping[str, Any], key: str, prefix: str = "", suffix: str = "") -> Any:
    """A headline number of a metrics block (or a headline row) by :func:`headline_key`'s name."""
    return numbers.get(headline_key(key, prefix, suffix))


def _opposite(lab: Label) -> Label:
    return Label.IN if lab is Label.OUT else Label.OUT


def _scores(ref: list[str], pred: list[str]) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1, macro-F1, kappa of two label-text lists."""
    from sklearn.metrics import cohen_kappa_score, confusion_matrix, precision_recall_fscore_support

    names = [lab.value for lab in LABELS]
    if not ref:
        return {"n": 0, "accuracy": None, "accuracy_ci95": None, "majority_rate": None, "majority_label": None,
                "balanced_accuracy": None, "balanced_accuracy_ci95": None, "precision_out": None,
                "recall_out": None, "f1_out": None, "f1_in": None, "macro_f1": None, "kappa": None,
                "matrix": [[0, 0], [0, 0]]}
    with warnings.catch_warnings():  # undefined ratios are reported as None, not warned about
        warnings.simplefilter("ignore")
        p, r, f, _ = precision_recall_fscore_support(ref, pred, labels=names, average=None, zero_division=np.nan)
        kappa = cohen_kappa_score(ref, pred, labels=names, replace_undefined_by=np.nan)
    matrix = confusion_matrix(ref, pred, labels=names)
    i_out = names.index(Label.OUT.value)
    i_in = names.index(Label.IN.value)
    defined = [x for x in f if not math.isnan(x)]
    support = Counter(ref)
    majority_label, majority_n = max(((name, support[name]) for name in names), key=lambda kv: kv[1])
    balanced, balanced_ci = balanced_accuracy(matrix.tolist())
    return {
        "n": len(ref),
        "accuracy": float(np.trace(matrix)) / len(ref),
        "accuracy_ci95": wilson_interval(int(np.trace(matrix)), len(ref)),
        "majority_rate": majority_n / len(ref),
        "majority_label": majority_label,
        "balanced_accuracy": balanced,
        "balanced_accuracy_ci95": balanced_ci,
        "precision_out": _nan_to_none(float(p[i_out])),
        "recall_out": _nan_to_none(float(r[i_out])),
        "f1_out": _nan_to_none(float(f[i_out])),
        "f1_in": _nan_to_none(float(f[i_in])),
        "macro_f1": float(np.mean(defined)) if defined else None,
        "kappa": _nan_to_none(float(kappa)),
        "matrix": matrix.astype(int).tolist(),
    }


def label_metrics(reference: Sequence[Any], predicted: Sequence[Any]) -> dict[str, Any]:
    """Metrics of ``predicted`` labels (None = unparseable) against ``reference`` labels.

    See the module docstring for how unparseable answers and undefined ratios are scored.
    The confusion matrix rows are references, columns answers, both in (In, Out) order;
    ``confusion.unparseable`` counts unparseable answers per reference label.
    """
    if len(reference) != len(predicted):
        raise ValueError(f"{len(reference)} references but {len(predicted)} answers")
    pairs = [(as_label(r), as_label(p)) for r, p in zip(reference, predicted)]
    no_reference = sum(1 for r, _ in pairs if r is None)
    pairs = [(r, p) for r, p in pairs if r is not None]
    parsed = [(r, p) for r, p in pairs if p is not None]
    unparseable_by_ref = Counter(r.value for r, p in pairs if p is None)
    wrong = _scores([r.value for r, _ in pairs], [(p or _opposite(r)).value for r, p in pairs])
    only = _scores([r.value for r, _ in parsed], [p.value for _, p in parsed])
    n = len(pairs)
    n_unparseable = n - len(parsed)
    return {
        "n": n,
        "no_reference": no_reference,
        "parseable": len(parsed),
        "unparseable": n_unparseable,
        "unparseable_share": _ratio(n_unparseable, n),
        "accuracy": wrong["accuracy"],
        "accuracy_ci95": wrong["accuracy_ci95"],
        "majority_rate": wrong["majority_rate"],
        "majority_label": wrong["majority_label"],
        "balanced_accuracy": wrong["balanced_accuracy"],
        "balanced_accuracy_ci95": wrong["balanced_accuracy_ci95"],
        "accuracy_parseable": only["accuracy"],
        "precision_out": wrong["precision_out"],
        "recall_out": wrong["recall_out"],
        "f1_out": wrong["f1_out"],
        "f1_in": wrong["f1_in"],
        "macro_f1": wrong["macro_f1"],
        "kappa": wrong["kappa"],
        "support": {lab.value: sum(1 for r, _ in pairs if r is lab) for lab in LABELS},
        "answered": {lab.value: sum(1 for _, p in pairs if p is lab) for lab in LABELS},
        "confusion": {
            "labels": [lab.value for lab in LABELS],
            "matrix": only["matrix"],  # parseable answers only
            "unparseable": {lab.value: int(unparseable_by_ref.get(lab.value, 0)) for lab in LABELS},
        },
        "parseable_only": {k: only[k] for k in ("accuracy", "balanced_accuracy", "precision_out", "recall_out", "f1_out",
                                                "macro_f1", "kappa")},
    }


def fuse_by_id(per_criterion: Mapping[Criterion | str, Mapping[str, Any]]) -> dict[str, Optional[Label]]:
    """Fused decision per sample id over the ids present for every given criterion.

    ``per_criterion`` maps a criterion to {id: label or None}; the result follows
    :func:`scenefit.core.criteria.fuse` (out when any is out; unknown when none is out but one is unknown).
    """
    if not per_criterion:
        return {}
    maps = [dict(m) for m in per_criterion.values()]
    common = set(maps[0]).intersection(*maps[1:])
    order = [i for i in maps[0] if i in common]  # keep the first criterion's row order
    return {i: fuse(as_label(m[i]) for m in maps) for i in order}


def reliability(p_out: Sequence[Optional[float]], reference: Sequence[Any], bins: int = 10) -> Optional[dict[str, Any]]:
    """Calibration of the out-of-context probability against the reference labels.

    Returns equal-width bins of p(out) with their mean predicted probability and the observed
    share of out-of-context references, the expected calibration error (ECE, count-weighted
    |observed - predicted|) and the Brier score; None when no answer has a probability.
    """
    pairs = [(float(p), as_label(r)) for p, r in zip(p_out, reference)
             if p is not None and not (isinstance(p, float) and math.isnan(p)) and as_label(r) is not None]
    if not pairs:
        return None
    probs = np.clip(np.array([p for p, _ in pairs]), 0.0, 1.0)
    outs = np.array([1.0 if r is Label.OUT else 0.0 for _, r in pairs])
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.minimum(np.digitize(probs, edges[1:-1], right=False), bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        mask = index == b
        n = int(mask.sum())
        row = {"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": n, "mean_p_out": None, "observed_out": None}
        if n:
            row["mean_p_out"] = float(probs[mask].mean())
            row["observed_out"] = float(outs[mask].mean())
            ece += n / len(pairs) * abs(row["observed_out"] - row["mean_p_out"])
        table.append(row)
    return {"n": len(pairs), "bins": table, "ece": float(ece), "brier": float(np.mean((probs - outs) ** 2))}


def error_breakdown(
    keys: Sequence[Any], reference: Sequence[Any], predicted: Sequence[Any], top: int = 10
) -> list[dict[str, Any]]:
    """Errors grouped by a key (object category, scene): the groups with most errors first.

    Each group: n, errors (unparseable counted wrong), error_rate, unparseable and its
    confusions as "reference -> answer" counts ("unparseable" for None answers).
    """
    groups: dict[str, dict[str, Any]] = {}
    for key, r, p in zip(keys, reference, predicted):
        ref, pred = as_label(r), as_label(p)
        if ref is None:
            continue
        name = "(unknown)" if key is None or (isinstance(key, float) and math.isnan(key)) else str(key)
        g = groups.setdefault(name, {"key": name, "n": 0, "errors": 0, "unparseable": 0, "confusions": Counter()})
        g["n"] += 1
        if pred is not ref:
            g["errors"] += 1
            g["unparseable"] += pred is None
            g["confusions"][f"{ref.value} -> {pred.value if pred else 'unparseable'}"] += 1
    rows = []
    for g in groups.values():
        g["error_rate"] = g["errors"] / g["n"]
        g["confusions"] = dict(g["confusions"].most_common())
        rows.append(g)
    rows.sort(key=lambda g: (-g["errors"], -g["error_rate"], g["key"]))
    return rows[:top]


def top_confusions(keys: Sequence[Any], reference: Sequence[Any], predicted: Sequence[Any], top: int = 10) -> list[dict[str, Any]]:
    """The most frequent (key, reference, answer) error triples, e.g. ("cow", In, Out): 7."""
    c: Counter = Counter()
    for key, r, p in zip(keys, reference, predicted):
        ref, pred = as_label(r), as_label(p)
        if ref is not None and pred is not ref:
            c[(str(key), ref.value, pred.value if pred else "unparseable")] += 1
    return [{"key": k, "reference": r, "answer": a, "count": n} for (k, r, a), n in c.most_common(top)]


def in_context_share(predicted: Iterable[Any]) -> dict[str, Any]:
    """Share of in-context answers (the shortcut test's score; unparseable answers count as not in-context)."""
    labels = [as_label(p) for p in predicted]
    n = len(labels)
    n_in = sum(1 for x in labels if x is Label.IN)
    n_bad = sum(1 for x in labels if x is None)
    return {"n": n, "in_context": n_in, "out_of_context": n - n_in - n_bad, "unparseable": n_bad,
            "in_context_share": _ratio(n_in, n)}


def criteria_order(names: Iterable[str]) -> list[str]:
    """Criterion names in the canonical order (files, tables, reports)."""
    wanted = {Criterion.parse(n).value for n in names}
    return [c.value for c in CRITERIA if c.value in wanted]
