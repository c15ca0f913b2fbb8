"""A linear probe on the frozen base model's features: how much of each criterion the base's
hidden states already carry before any student is trained.

    scenefit evaluate --students runs/demo/students --data runs/demo/datasets --out runs/demo/report \
        --config demo --set evaluate.probe=true

    from scenefit.evaluate.probe import probe_criterion
    block = probe_criterion(model, processor, train_rows, test_rows)

The informative baseline for a student. The untrained base answers near one constant label (a
floor: 50 % balanced accuracy); a probe asks instead whether a linear read-out of the base's
features separates In from Out. For each criterion, every row of the student dataset goes through
the base exactly as a student's decision does (its chat prompt, its image, the forced answer
prefix; :func:`scenefit.student.decision.scoring_batch`), and the features are the last
position's hidden state in every layer plus the final layer's mean over the sequence. A
standardised logistic regression (scikit-learn, class weights balanced, its strength picked by
5-fold cross-validation on the training rows) is fitted on the **training split's labels** — the
designated teacher's, what the students learn from — and scored on the evaluated split against
the teacher's labels and, where known, the truth. Where a student beats its probe, fine-tuning
found more than a linear read-out of the frozen features; where the probe is as good, the
features already decided the label.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from scenefit.core.progress import Progress
from scenefit.evaluate.metrics import label_metrics

#: Regularisation strengths tried by the cross-validation (inverse of the L2 penalty).
PROBE_CS = (0.001, 0.01, 0.1, 1.0, 10.0)
#: What the probe reads, for the report.
FEATURES = ("the base's hidden state at the decision position in every layer, and the final layer's mean over "
            "the sequence (prompt, image and answer prefix as a student sees them)")


def probe_features(model, processor, rows: Sequence[dict], batch_size: int = 16, progress: Optional[Progress] = None):
    """Feature matrix (rows × features, float32 numpy) of ``rows`` (dataset rows with ``prompt``,
    ``system`` and ``image``) from the frozen ``model``."""
    import numpy as np
    import torch

    from scenefit.student.decision import scoring_batch

    device = next(model.parameters()).device
    chunks = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                part = list(rows[start:start + batch_size])
                inputs = scoring_batch(processor, part).to(device)
                hidden = model(**inputs, output_hidden_states=True, use_cache=False).hidden_states
                mask = inputs["attention_mask"].unsqueeze(-1).to(hidden[-1].dtype)
                mean = (hidden[-1] * mask).sum(1) / mask.sum(1).clamp(min=1)
                last = [h[:, -1, :] for h in hidden]  # left padding: the decision position is the last
                chunks.append(torch.cat([*last, mean], dim=-1).float().cpu().numpy())
                if progress:
                    progress.advance(len(part))
    finally:
        model.train(was_training)
    return np.concatenate(chunks).astype(np.float32)


def fit_probe(features, labels: Sequence[Any], seed: int = 0):
    """The standardised, class-balanced logistic regression fitted on ``features``/``labels``
    (In/Out strings), its strength chosen by 5-fold cross-validation (fewer folds for few rows)."""
    import warnings

    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = [str(v) for v in labels]
    folds = max(2, min(5, min(y.count(v) for v in set(y))))
    clf = LogisticRegressionCV(Cs=list(PROBE_CS), cv=folds, class_weight="balanced", scoring="balanced_accuracy",
                               max_iter=5000, random_state=seed)
    with warnings.catch_warnings():  # scikit-learn 1.9 announces changes of defaults this probe does not use
        warnings.simplefilter("ignore", FutureWarning)
        return make_pipeline(StandardScaler(), clf).fit(features, y)


def probe_criterion(model, processor, train_rows: Sequence[dict], test_rows: Sequence[dict], batch_size: int = 16,
                    progress: Optional[Progress] = None, seed: int = 0) -> dict[str, Any]:
    """One criterion's probe block: fitted on ``train_rows``' labels, scored on ``test_rows``
    against their labels (``student``-style metrics) and their truth (``vs_truth``, None without)."""
    import numpy as np

    from scenefit.evaluate.metrics import as_label

    usable = [r for r in train_rows if as_label(r.get("label")) is not None]
    labels = [as_label(r["label"]).value for r in usable]
    if len(set(labels)) < 2 or min(labels.count(v) for v in set(labels)) < 2:
        return {"available": False, "reason": "too few training rows of each label to fit and cross-validate a probe "
                f"({ {v: labels.count(v) for v in sorted(set(labels))} })"}
    pipe = fit_probe(probe_features(model, processor, usable, batch_size, progress), labels, seed)
    predicted = list(pipe.predict(probe_features(model, processor, test_rows, batch_size, progress)))
    truth = [r.get("truth") for r in test_rows]
    vs_truth = label_metrics(truth, predicted) if any(as_label(t) is not None for t in truth) else None
    return {"available": True, "features": FEATURES, "train_rows": len(usable), "test_rows": len(test_rows),
            "C": float(np.ravel(pipe[-1].C_)[0]), "fitted_on": "the training split's labels (the designated teacher's)",
            "vs_teacher": label_metrics([r.get("label") for r in test_rows], predicted), "vs_truth": vs_truth,
            "labels": predicted}


def run_probes(base: Optional[str], data_dir, frames: dict, cfg,
               bar: Callable[[str, int], Optional[Progress]]) -> dict[str, dict]:
    """Each criterion's probe block for ``frames`` (the evaluated split's rows, per criterion),
    fitted on DATA/<criterion>/train.parquet with the frozen ``base`` loaded once; a block saying
    why where the probe cannot run (no base named, no training rows)."""
    from scenefit.evaluate.splits import load_split
    from scenefit.models.loading import load_model, load_processor

    if not base:
        return {name: {"available": False, "reason": "no base model named"} for name in frames}
    model = load_model(base, dtype=cfg.predict.dtype, device=cfg.predict.device)
    processor = load_processor(base, padding_side="left")
    train = load_split(data_dir, list(frames), "train")
    out = {}
    for name, df in frames.items():
        rows = df.to_dict("records")
        tr = train[name].to_dict("records")
        out[name] = probe_criterion(model, processor, tr, rows, cfg.predict.batch_size,
                                    bar(f"probe · {name}", len(tr) + len(rows)), cfg.probe_seed)
    return out
