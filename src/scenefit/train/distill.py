"""Distil the teachers' confidence: a KL term on the student's decision token (``train.distill``).

    scenefit train --criterion all --data runs/demo/datasets --model runs/demo/model \
        --out runs/demo/students --config demo --set distill.weight=1.0

The loss of one batch is

    answer cross-entropy  +  weight * T^2 * mean over rows [ KL( teacher_T || student_T ) ]

where the KL is over the two decisions {In-context, Out-of-context} at the decision token (the token
right after the answer format's decision prefix: the first line's ``Decision:`` of a decision-first
answer, the last line's ``Final decision:`` of a reasoning-first one — never a "decision:" inside the
analysis sentence; :meth:`~scenefit.student.answer.AnswerFormat.decision_offset`), ``student_T`` is the softmax of the student's
two first-token logits divided by the temperature T, and ``teacher_T`` the teacher's P(Out) softened
the same way (its log-odds divided by T). The T^2 factor keeps the gradient's size independent of T
(Hinton et al.'s convention). The teacher probability is the dataset row's ``teacher_p_out`` (the
designated teacher, ``target: teacher``) or ``teachers_mean_p_out`` (mean over the teachers,
``target: teachers_mean``), written by ``scenefit datasets``. A row whose probability is null gets the
cross-entropy only; such rows are counted before training (``metrics.json`` → ``distill``) and per
logging window (``distill_rows_skipped`` in ``log.jsonl``).

With ``hard_decision: false`` the decision token of a training row that has a target is taken out of
the cross-entropy, so its decision is learnt from the soft label alone (the rest of the answer still from
the text): "soft labels" rather than "both".

Validation: ``eval_loss`` stays the answer's cross-entropy, as in plain training (the decision token
included, whatever ``hard_decision`` says), so the best checkpoint and early stopping on ``eval_loss``
select on the same objective with or without distillation; the term is reported beside it as
``eval_distill_kl`` (the mean KL over the validation rows with a target, before weight and T^2).

``weight: 0`` (the default) is today's training exactly: nothing is wrapped, and the loss code, even
when handed soft targets, returns the plain cross-entropy (``tests/test_distill.py`` checks both).

Pieces: :class:`DistillSettings` (the config section), :func:`decision_position` (where the decision
token sits in an encoded example), :class:`SoftTargetExamples` and :class:`SoftTargetCollator` (carry
the target from the dataset row through padding or packing to the loss), :func:`soft_target_kl` (the
term) and :class:`DistillLossMixin` (the Trainer's ``compute_loss``).
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional, Sequence

from pydantic import Field

from scenefit.core.config import StageConfig
from scenefit.student.answer import AnswerFormat
from scenefit.train.data import IGNORE_INDEX, DatasetError

#: dataset column of each target
TARGET_COLUMNS = {"teacher": "teacher_p_out", "teachers_mean": "teachers_mean_p_out"}
#: batch keys the collator adds and the loss removes before the model sees the batch
BATCH_KEYS = ("distill_rows", "distill_positions", "distill_p_out")
#: example keys the wrapped examples add (popped by the collator)
EXAMPLE_KEYS = ("decision_index", "soft_p_out", "soft_only")
#: P(out) is clipped to [EPS, 1 - EPS] before its log-odds are taken (a teacher may say 0 or 1)
EPS = 1e-6


class DistillSettings(StageConfig):
    """Sub-section ``train.distill``: learn the teacher's confidence at the decision token."""

    weight: float = Field(
        0.0, ge=0.0,
        description="Weight (lambda) of the KL(teacher || student) term over {In, Out} at the decision token, added to "
        "the answer's cross-entropy; 0 = hard labels only (today's training exactly).",
    )
    temperature: float = Field(
        1.0, gt=0.0,
        description="Softens both distributions (logits and the teacher's log-odds divided by T); the term is "
        "multiplied by T^2 so its gradient keeps its size.",
    )
    hard_decision: bool = Field(
        True,
        description="Keep the hard label's cross-entropy at the decision token. False: a row with a soft target learns "
        "its decision from the KL term only (soft labels), the rest of the answer from the cross-entropy.",
    )
    target: Literal["teacher", "teachers_mean"] = Field(
        "teacher",
        description="Soft target: the designated teacher's P(Out-of-context) (dataset column teacher_p_out) or the "
        "mean over the teachers (teachers_mean_p_out).",
    )

    @property
    def enabled(self) -> bool:
        return self.weight > 0

    @property
    def column(self) -> str:
        return TARGET_COLUMNS[self.target]


# ---------------------------------------------------------------- data: where the decision sits, what the target is

def _probability(value: Any, sample_id: Any, column: str) -> float:
    """The row's P(out) as a float, NaN when unknown; an error naming the row for anything else."""
    if value is None:
        return math.nan
    try:
        p = float(value)
    except (TypeError, ValueError):
        raise DatasetError(f"sample {sample_id!r}: {column} {value!r} is not a probability") from None
    if math.isnan(p):
        return p
    if not 0.0 <= p <= 1.0:
        raise DatasetError(f"sample {sample_id!r}: {column} {p} is outside [0, 1]")
    return p


def target_probabilities(frame, settings: DistillSettings, path: Any = "dataset") -> list[float]:
    """The soft target of every row (NaN = null); an error naming the file when the column is missing."""
    column = settings.column
    if column not in frame.columns:
        raise DatasetError(
            f"{path}: no column {column!r} for train.distill.target={settings.target!r} (rebuild the datasets with a "
            "`scenefit datasets` that writes teacher probabilities, or set train.distill.weight=0)"
        )
    return [_probability(v, sid, column) for v, sid in zip(frame[column].tolist(), frame["id"].tolist())]


def decision_position(tokenizer, input_ids: Sequence[int], labels: Sequence[int], label_ids: Sequence[int],
                      answer_format: AnswerFormat, sample_id: Any = "?") -> int:
    """Index of the decision token in an encoded example: the labelled token that starts right after the
    answer format's decision prefix (:meth:`AnswerFormat.decision_offset`: ``Decision:`` opening a
    decision-first answer, ``Final decision:`` opening a reasoning-first answer's last line) and is a
    label's first token (``label_ids``). A "decision: In…" inside the analysis text is never taken. Its
    logits sit one position earlier."""
    ids, labels = list(input_ids), list(labels)
    answer = [i for i, lab in enumerate(labels) if lab != IGNORE_INDEX]
    if not answer:
        raise DatasetError(f"sample {sample_id!r}: no labelled answer tokens")
    start, end = answer[0], answer[-1] + 1
    offset = answer_format.decision_offset(tokenizer.decode(ids[start:end], skip_special_tokens=True))
    if offset is not None:
        for i in range(start + 1, end):
            decoded = len(tokenizer.decode(ids[start:i], skip_special_tokens=True))
            if decoded == offset and ids[i] in label_ids:
                return i
            if decoded >= offset:
                break
    raise DatasetError(
        f"sample {sample_id!r}: no decision token (a label's first token right after "
        f"{answer_format.decision_prefix!r} where the {answer_format.value} answer puts it); "
        "the soft target has no position to apply to"
    )


class SoftTargetExamples:
    """Wraps :class:`scenefit.train.data.StudentExamples`: each example also carries the index of its
    decision token (``decision_index``), its soft target (``soft_p_out``, NaN = none) and whether its
    decision token leaves the cross-entropy (``soft_only``: training rows with a target when
    ``hard_decision`` is false; never validation rows, whose loss stays the plain cross-entropy)."""

    def __init__(self, examples, probabilities: Sequence[float], tokenizer, label_ids: Sequence[int],
                 answer_format: AnswerFormat = AnswerFormat.DECISION_FIRST, soft_only: bool = False):
        if len(probabilities) != len(examples):
            raise ValueError(f"{len(probabilities)} soft targets for {len(examples)} examples")
        self.examples = examples
        self.probabilities = list(probabilities)
        self.tokenizer = tokenizer
        self.label_ids = tuple(label_ids)
        self.answer_format = answer_format
        self.soft_only = soft_only
        self._positions: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        enc = self.examples[i]
        if i not in self._positions:
            sample_id = self.examples.rows[i]["id"] if hasattr(self.examples, "rows") else i
            self._positions[i] = decision_position(self.tokenizer, enc["input_ids"].tolist(), enc["labels"].tolist(),
                                                   self.label_ids, self.answer_format, sample_id)
        p = self.probabilities[i]
        return {**enc, "decision_index": self._positions[i], "soft_p_out": p,
                "soft_only": self.soft_only and not math.isnan(p)}


class SoftTargetCollator:
    """Wraps a collator (padded or packed) and adds where each example's decision logits sit in the
    batch (``distill_rows``, ``distill_positions``: row and position of the logits that predict the
    decision token) and its target (``distill_p_out``, NaN = none); the decision token of a
    ``soft_only`` example leaves the labels."""

    def __init__(self, inner, packed: bool):
        self.inner = inner
        self.packed = packed

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        plain = [{k: v for k, v in e.items() if k not in EXAMPLE_KEYS} for e in examples]
        batch = self.inner(plain)
        rows, positions, offset = [], [], 0
        for i, e in enumerate(examples):
            rows.append(0 if self.packed else i)
            positions.append(offset + int(e["decision_index"]) - 1)
            if self.packed:
                offset += len(e["input_ids"])
        batch["distill_rows"] = torch.tensor(rows, dtype=torch.long)
        batch["distill_positions"] = torch.tensor(positions, dtype=torch.long)
        batch["distill_p_out"] = torch.tensor([float(e["soft_p_out"]) for e in examples], dtype=torch.float32)
        soft_only = torch.tensor([bool(e["soft_only"]) for e in examples])
        if soft_only.any():  # soft labels only: the decision token of such a row leaves the CE
            batch["labels"][batch["distill_rows"][soft_only], batch["distill_positions"][soft_only] + 1] = IGNORE_INDEX
        return batch


# ---------------------------------------------------------------- the loss term

def soft_target_kl(logits, rows, positions, p_out, in_id: int, out_id: int, temperature: float = 1.0):
    """``(T^2 * mean KL(teacher_T || student_T) over the rows with a target, rows used)``; the term is a
    zero tensor when no row has one. ``logits``: ``[batch, length, vocab]``; ``rows``/``positions``
    pick each example's decision logits; ``p_out``: the teacher's P(out) per example, NaN = none."""
    import torch

    known = ~torch.isnan(p_out)
    used = int(known.sum())
    if used == 0:
        return logits.new_zeros((), dtype=torch.float32), 0
    # two numbers per row: float64 costs nothing and keeps a small KL from float32 cancellation
    pair = logits[rows[known], positions[known]][:, [in_id, out_id]].double() / temperature
    log_student = pair.log_softmax(-1)
    p = p_out[known].to(pair.device).double().clamp(EPS, 1.0 - EPS)
    teacher_out = torch.sigmoid(torch.log(p / (1.0 - p)) / temperature)
    teacher = torch.stack([1.0 - teacher_out, teacher_out], dim=-1)
    kl = (teacher * (teacher.log() - log_student)).sum(-1)
    return (kl.mean() * temperature**2).float(), used


def pop_soft_targets(inputs: dict[str, Any]) -> Optional[tuple]:
    """Removes the distillation keys from a batch; ``(rows, positions, p_out)`` or None when absent."""
    if BATCH_KEYS[0] not in inputs:
        return None
    return tuple(inputs.pop(k) for k in BATCH_KEYS)


class DistillLossMixin:
    """``compute_loss`` of a transformers Trainer with the distillation term; put it before ``Trainer``
    in the bases and set ``distill`` (settings) and ``distill_token_ids`` ((In, Out) first-token ids)."""

    distill: Optional[DistillSettings] = None
    distill_token_ids: Optional[tuple[int, int]] = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        soft = pop_soft_targets(inputs)
        if soft is None or self.distill is None or not self.distill.enabled:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,  # type: ignore[misc]
                                        num_items_in_batch=num_items_in_batch)
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True,  # type: ignore[misc]
                                             num_items_in_batch=num_items_in_batch)
        in_id, out_id = self.distill_token_ids  # type: ignore[misc]
        kl, used = soft_target_kl(outputs.logits, *soft, in_id, out_id, self.distill.temperature)
        window = "_distill_window" if model.training else "_distill_eval"
        stats = self.__dict__.setdefault(window, {"kl_sum": 0.0, "used": 0, "skipped": 0})
        stats["kl_sum"] += float(kl.detach()) * used
        stats["used"] += used
        stats["skipped"] += int(soft[2].numel()) - used
        if not model.training:
            # eval_loss stays the answer's cross-entropy (the objective the best checkpoint and early
            # stopping compare); the term is reported beside it as eval_distill_kl
            return (loss, outputs) if return_outputs else loss
        term = self.distill.weight * kl
        # The Trainer leaves a loss normalised by num_items_in_batch undivided by the accumulation steps;
        # the KL is a per-batch mean, so it is divided here (a mean over the accumulated batch, as the CE).
        scaled = self.loss_is_scaled_for_ga if self.loss_is_scaled_for_ga is not None else (  # type: ignore[attr-defined]
            self.model_accepts_loss_kwargs and num_items_in_batch is not None)  # type: ignore[attr-defined]
        if num_items_in_batch is not None and scaled:
            term = term / self.current_gradient_accumulation_steps  # type: ignore[attr-defined]
        loss = loss + term.to(loss.dtype)
        return (loss, outputs) if return_outputs else loss

    def evaluation_loop(self, *args, **kwargs):
        self.__dict__["_distill_eval"] = {"kl_sum": 0.0, "used": 0, "skipped": 0}
        out = super().evaluation_loop(*args, **kwargs)  # type: ignore[misc]
        stats = self.__dict__.pop("_distill_eval", None)
        if stats is not None and self.distill is not None and self.distill.enabled:
            prefix = kwargs.get("metric_key_prefix", args[4] if len(args) > 4 else "eval")
            out.metrics[f"{prefix}_distill_kl"] = stats["kl_sum"] / stats["used"] if stats["used"] else float("nan")
        return out

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        stats = self.__dict__.get("_distill_window")
        if stats is not None and "loss" in logs:
            logs["distill_kl"] = stats["kl_sum"] / stats["used"] if stats["used"] else float("nan")
            logs["distill_rows_used"] = stats["used"]
            logs["distill_rows_skipped"] = stats["skipped"]
            self.__dict__["_distill_window"] = {"kl_sum": 0.0, "used": 0, "skipped": 0}
        super().log(logs, *args, **kwargs)  # type: ignore[misc]


def prepare(settings: DistillSettings, processor, datasets: dict[str, Any], frames: dict[str, Any], collator,
            packed: bool, paths: Optional[dict[str, Any]] = None,
            answer_format: AnswerFormat = AnswerFormat.DECISION_FIRST) -> tuple[dict[str, Any], Any, tuple[int, int], dict]:
    """Wrap the train/val example sets and the collator so the soft targets reach the loss.

    ``datasets`` and ``frames`` map split names to example sets and their data frames; ``answer_format``
    says where the decision token sits. Returns the wrapped sets, the wrapped collator, the (In, Out)
    first-token ids and a summary for metrics.json (rows with a target and rows skipped, per split)."""
    from scenefit.core.criteria import Label
    from scenefit.student.decision import decision_token_ids

    _, first = decision_token_ids(processor)
    token_ids = (first[Label.IN], first[Label.OUT])
    wrapped, summary = {}, {"weight": settings.weight, "temperature": settings.temperature,
                            "target": settings.target, "column": settings.column, "rows": {},
                            "eval_loss": "the answer's cross-entropy only; the term is eval_distill_kl"}
    for split, examples in datasets.items():
        probs = target_probabilities(frames[split], settings, (paths or {}).get(split, split))
        wrapped[split] = SoftTargetExamples(examples, probs, processor.tokenizer, token_ids, answer_format,
                                            soft_only=split == "train" and not settings.hard_decision)
        known = sum(not math.isnan(p) for p in probs)
        summary["rows"][split] = {"with_target": known, "skipped_null": len(probs) - known}
    summary["hard_decision"] = settings.hard_decision
    return wrapped, SoftTargetCollator(collator, packed), token_ids, summary
