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
``threshold`` (default 95 %) of its answers are in-context. Unparseable answers count as not
in-context.
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


def shortcut_metrics(
    labels: dict[str, Sequence[Optional[Label]]], ids: Sequence[str], threshold: float = 0.95, source: str = "",
) -> dict[str, Any]:
    """Shortcut-test block of metrics.json from each criterion's labels on the originals.

    ``labels`` maps criterion name to the answers in ``ids`` order. ``in_context_share`` holds
    one share per criterion and, when all three criteria ran, ``fused``.
    """
    names = criteria_order(labels)
    details = {n: in_context_share(labels[n]) for n in names}
    if len(names) == 3:
        fused = fuse_by_id({n: dict(zip(ids, labels[n])) for n in names})
        details["fused"] = in_context_share([fused[i] for i in ids])
    shares = {n: d["in_context_share"] for n, d in details.items()}
    return {
        "available": True,
        "source": source,
        "n": len(ids),
        "threshold": threshold,
        "in_context_share": shares,
        "robust": {n: (s is not None and s >= threshold) for n, s in shares.items()},
        "details": details,
        "rule": f"every answer on an unmodified image should be in-context; >= {threshold:.0%} in-context is "
        "robust; unparseable answers count as not in-context",
    }
