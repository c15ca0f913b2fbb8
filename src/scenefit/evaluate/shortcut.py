"""The shortcut test: on unmodified images, each boxing an object that belongs in its scene,
every answer should be in-context.

A student that learned a shortcut instead of its criterion ("a red box means something was
pasted in", "this category is always out of context") answers out-of-context on these
images. The synthetic world renders the untouched original of each scene
(``WORLD/originals/manifest.parquet``, all truths In-context); with real data, pass a
manifest of original photos with their boxes (``scenefit evaluate --originals FILE``).

Only originals of scenes that the evaluated split holds are used (their ``group`` is one of the
split's groups): the split stage never puts a group in two splits, so these scenes were unseen
in training. Originals without groups (real data without them) are all used, and the metrics
say so.

Reference: a criterion (and the fused decision) is called *robust* when at least
``threshold`` (default 95 %) of its answers are in-context **and** it still finds out-of-context
samples where there are some: its out-of-context recall on the evaluated split (vs the truth where
known) is at least ``min_recall`` (default 0.5). A near-constant "In" student scores 100 % on
unmodified images; the recall beside the share keeps that from passing. Unparseable answers count
as not in-context.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

from scenefit.core.criteria import Label
from scenefit.core.records import Sample
from scenefit.evaluate.metrics import criteria_order, fuse_by_id, in_context_share


def originals_in_split(originals: Sequence[Sample], split_groups: Iterable[Any]) -> tuple[list[Sample], dict[str, Any]]:
    """The originals whose scene (group) is in the evaluated split, and how they were chosen.

    A student that saw a scene in training may answer its original from memory; a scene of the
    test split is new to it, so the shortcut test reads what the student learned in general.
    """
    groups = {str(g) for g in split_groups if g is not None and str(g) not in ("", "nan", "None")}
    if not groups or not any(s.group for s in originals):
        return list(originals), {"unseen_scenes_only": False, "given": len(originals), "used": len(originals),
                                 "reason": "no groups on the split's rows or on the originals: all originals used"}
    kept = [s for s in originals if s.group is not None and str(s.group) in groups]
    return kept, {"unseen_scenes_only": True, "given": len(originals), "used": len(kept),
                  "rule": "only originals whose group (scene) is in the evaluated split, so unseen in training"}


def verdict(share: Optional[float], recall: Optional[float], threshold: float, min_recall: float) -> str:
    """"robust", "shortcut suspected" (too few in-context answers on unmodified images) or
    "uninformative" (in-context there, but it seldom answers Out on the evaluated split either)."""
    if share is None or share < threshold:
        return "shortcut suspected"
    return "uninformative" if recall is not None and recall < min_recall else "robust"


def shortcut_metrics(
    labels: dict[str, Sequence[Optional[Label]]], ids: Sequence[str], threshold: float = 0.95, source: str = "",
    recall: Optional[dict[str, Any]] = None, min_recall: float = 0.5,
) -> dict[str, Any]:
    """Shortcut-test block of metrics.json from each criterion's labels on the originals.

    ``labels`` maps criterion name to the answers in ``ids`` order. ``in_context_share`` holds
    one share per criterion and, when all three criteria ran, ``fused``. ``recall``
    (:func:`scenefit.evaluate.runner.split_recall`) gives each one's out-of-context recall on the
    evaluated split, shown beside the share and required for ``robust``.
    """
    names = criteria_order(labels)
    details = {n: in_context_share(labels[n]) for n in names}
    if len(names) == 3:
        fused = fuse_by_id({n: dict(zip(ids, labels[n])) for n in names})
        details["fused"] = in_context_share([fused[i] for i in ids])
    shares = {n: d["in_context_share"] for n, d in details.items()}
    recalls = {n: (recall or {}).get("recall_out", {}).get(n) for n in shares}
    verdicts = {n: verdict(shares[n], recalls[n], threshold, min_recall) for n in shares}
    return {
        "available": True,
        "source": source,
        "n": len(ids),
        "threshold": threshold,
        "min_recall": min_recall,
        "in_context_share": shares,
        "recall_out_on_split": recalls,
        "recall_reference": (recall or {}).get("reference", {}),
        "verdict": verdicts,
        "robust": {n: v == "robust" for n, v in verdicts.items()},
        "details": details,
        "rule": f"every answer on an unmodified image should be in-context; >= {threshold:.0%} in-context is robust "
        f"when the out-of-context recall on the evaluated split is >= {min_recall:.0%} too (else uninformative: a "
        "student answering In to everything passes the share); unparseable answers count as not in-context",
    }
