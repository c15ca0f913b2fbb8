"""Fast decision scoring: one forward pass per sample, no generation.

The prompt is rendered exactly as in training, the assistant turn is opened and the forced
answer prefix ``Decision:`` (:data:`scenefit.formats.DECISION_PREFIX`) appended; the label is
the alternative (:func:`scenefit.formats.decision_continuations`) whose first token has the
larger logit at the last position. The alternatives' first tokens must differ and the prefix must
tokenize as it does after the prompt — both checked once, for training and prediction alike, by
:func:`scenefit.predict.predictor.decision_token_ids` (a test also checks the prefix against
:func:`scenefit.train.data.encode_example`). Training-time eval and the demo's test scores use
this path; generation + :func:`scenefit.formats.parse_student_answer` is the slow equivalent.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

from scenefit.core.criteria import Label
from scenefit.formats import DECISION_PREFIX
from scenefit.train.data import open_image, row_messages


def prompt_text(processor, row: dict) -> str:
    """Chat text up to and including the forced answer prefix."""
    msgs = row_messages(row, image=None, with_answer=False)
    return processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) + DECISION_PREFIX


def scoring_batch(processor, rows: Sequence[dict], images: Optional[Sequence] = None):
    """Left-padded model inputs whose last position predicts the label's first token."""
    imgs = list(images) if images is not None else [open_image(r) for r in rows]
    texts = [prompt_text(processor, r) for r in rows]
    return processor(text=texts, images=imgs, padding=True, padding_side="left", return_tensors="pt")


def score_rows(model, processor, rows: Sequence[dict], batch_size: int = 8, progress: Optional[Iterable] = None) -> list[dict]:
    """Per row: predicted label and P(Out-of-context) from the two first-token logits."""
    import torch

    from scenefit.predict.predictor import decision_token_ids

    _, ids = decision_token_ids(processor)
    order = [ids[Label.IN], ids[Label.OUT]]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[dict] = []
    try:
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                batch = scoring_batch(processor, chunk).to(device)
                logits = model(**batch, logits_to_keep=1).logits[:, -1, :]
                pair = logits[:, order].float().softmax(-1)
                for r, p in zip(chunk, pair.tolist()):
                    out.append({"id": r["id"], "label": (Label.OUT if p[1] > p[0] else Label.IN).value, "p_out": p[1]})
                if progress is not None:
                    progress.update(len(chunk))  # type: ignore[attr-defined]
    finally:
        model.train(was_training)
    return out


def accuracy(predicted: Sequence[dict], rows: Sequence[dict], column: str = "label") -> Optional[float]:
    """Share of rows whose predicted label equals ``column`` (rows without a reference skipped)."""
    pairs = [(p["label"], r.get(column)) for p, r in zip(predicted, rows) if r.get(column) not in (None, "")]
    pairs = [(p, t) for p, t in pairs if not (isinstance(t, float) and t != t)]  # NaN = no reference
    if not pairs:
        return None
    return sum(Label.parse(str(t)) == Label(p) for p, t in pairs) / len(pairs)
