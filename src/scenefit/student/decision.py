"""The student's decision, read two ways — the one scorer of train, evaluate and predict.

Fast path (decision-first students only): the prompt is rendered by the one chat builder
(:meth:`scenefit.student.chat.StudentChat.decision_prompt`) with the format's forced answer prefix
``Decision:`` appended, and the label is the alternative
(:func:`~scenefit.student.answer.decision_continuations`) whose first token has the larger logit
at the last position (:func:`decide`). The alternatives' first tokens must differ and the prefix
must tokenize as it does after the prompt — both checked once by :func:`decision_token_ids`
(a test also checks the prefix against :func:`scenefit.train.data.encode_example`).
Training-time eval (:func:`score_rows`) and :class:`scenefit.predict.Predictor` both call
:func:`decide`.

Generation (any answer format): greedy generation, then
:func:`~scenefit.student.answer.parse_student_answer`; an unreadable answer has no label
(counted, never guessed). :func:`generate_rows` is what training-time eval of a
reasoning-first student uses; the Predictor does the same on its batches.
"""

from __future__ import annotations

from typing import Optional, Sequence

from scenefit.core.criteria import Criterion, Label
from scenefit.core.errors import ScenefitError
from scenefit.core.images import open_image
from scenefit.core.progress import Progress
from scenefit.student.answer import AnswerFormat, decision_continuations, parse_student_answer
from scenefit.student.chat import StudentChat, StudentRequest


class DecisionTokenError(ScenefitError, RuntimeError):
    """The answer prefix or the decision alternatives do not tokenize as the fast path needs."""


def decision_token_ids(processor, chat: Optional[StudentChat] = None) -> tuple[list[int], dict[Label, int]]:
    """(token ids of the forced prefix in context, first token id of each alternative).

    ``chat``: the layout the prompt is rendered in (default: the packaged decision-first one).
    Raises DecisionTokenError when the prefix would tokenize differently joined to the prompt
    than on its own (training and inference could then disagree), when an alternative does not
    extend the prefix's tokens, or when both alternatives start with the same token.
    """
    chat = chat or StudentChat.packaged()
    prefix = AnswerFormat.DECISION_FIRST.decision_prefix
    tok = processor.tokenizer
    prompt = chat.prompt_text(processor, StudentRequest("x", chat.system))

    def ids(text: str) -> list[int]:
        return list(tok(text, add_special_tokens=False)["input_ids"])

    prompt_ids, joined = ids(prompt), ids(prompt + prefix)
    prefix_ids = ids(prefix)
    if joined != prompt_ids + prefix_ids:
        raise DecisionTokenError(
            f"the answer prefix {prefix!r} tokenizes differently after the prompt "
            f"({tok.convert_ids_to_tokens(joined[len(prompt_ids):])}) than alone "
            f"({tok.convert_ids_to_tokens(prefix_ids)}): the fast path cannot match training"
        )
    first: dict[Label, int] = {}
    for label, continuation in decision_continuations().items():
        full = ids(prompt + prefix + continuation + "\n")
        if full[: len(joined)] != joined or len(full) <= len(joined):
            raise DecisionTokenError(
                f"{prefix + continuation!r} does not start with the prefix's own tokens; "
                "the decision position is not well defined for this tokenizer"
            )
        first[label] = full[len(joined)]
    if first[Label.IN] == first[Label.OUT]:
        token = tok.convert_ids_to_tokens([first[Label.IN]])[0]
        raise DecisionTokenError(
            f"both decision alternatives start with the same token {token!r}; the fast path cannot tell them apart"
        )
    return prefix_ids, first


def two_way(logits, first: dict[Label, int]) -> tuple[list[float], list[Label]]:
    """P(out) from the last position's logits of the two alternatives' first tokens, and the
    label they pick (out when P(out) > 0.5)."""
    pair = logits[:, [first[Label.IN], first[Label.OUT]]].float().softmax(-1)
    p_out = pair[:, 1].tolist()
    return p_out, [Label.OUT if p > 0.5 else Label.IN for p in p_out]


def written(logits, first: dict[Label, int], labels: Sequence[Label]) -> list[bool]:
    """Per row, whether ``labels``' first token is the argmax over the whole vocabulary at the
    decision position — whether the student would *write* the decision it picks among the two.
    An early checkpoint can rank " In" above " Out" while writing a line break there (greedy text
    ``Decision:`` with no label: unreadable, counted wrong by evaluate)."""
    top = logits.argmax(-1).tolist()
    return [t == first[lab] for t, lab in zip(top, labels)]


def decision_logits(model, inputs: dict, prefix_ids: Sequence[int]):
    """The fast path's one forward pass over left-padded ``inputs`` whose rows end with the
    decision prefix: the last position's logits. Raises DecisionTokenError when a row does not end
    with the prefix's tokens (right padding, or a prompt built elsewhere)."""
    import torch

    ids = inputs["input_ids"]
    n = len(prefix_ids)
    expected = torch.tensor(list(prefix_ids), device=ids.device).expand(ids.shape[0], n)
    if not bool((ids[:, -n:] == expected).all()):
        raise DecisionTokenError("a batch row does not end with the answer prefix tokens (is padding on the right?)")
    return model(**inputs, logits_to_keep=1, use_cache=False).logits[:, -1, :]


def decide(model, inputs: dict, prefix_ids: Sequence[int], first: dict[Label, int]) -> tuple[list[float], list[Label]]:
    """The fast path over ``inputs`` (see :func:`decision_logits`): (P(out), label) per row."""
    return two_way(decision_logits(model, inputs, prefix_ids), first)


def scoring_batch(processor, rows: Sequence[dict], images: Optional[Sequence] = None,
                  chat: Optional[StudentChat] = None):
    """Left-padded model inputs whose last position predicts the label's first token (``chat``: the
    students' layout, default the packaged decision-first one)."""
    chat = chat or StudentChat.packaged()
    imgs = list(images) if images is not None else [open_image(r) for r in rows]
    texts = [chat.decision_prompt(processor, StudentRequest.of_row(r)) for r in rows]
    return processor(text=texts, images=imgs, padding=True, padding_side="left", return_tensors="pt")


def _in_batches(model, rows: Sequence[dict], batch_size: int, progress: Optional[Progress], judge) -> list[dict]:
    """``judge(chunk, device)`` over ``rows`` in batches, the model in eval mode without gradients
    (its training mode restored after)."""
    import torch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[dict] = []
    try:
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                out.extend(judge(chunk, device))
                if progress:
                    progress.advance(len(chunk))
    finally:
        model.train(was_training)
    return out


def score_rows(model, processor, rows: Sequence[dict], batch_size: int = 8, progress: Optional[Progress] = None,
               chat: Optional[StudentChat] = None, written_only: bool = False) -> list[dict]:
    """Fast path over dataset rows: per row the predicted label, P(Out-of-context) and whether the
    student would write that label (``written``, see :func:`written`); ``written_only``: a label
    the student would not write is None (unreadable), as evaluate's generated-text headline scores
    it. ``chat``: the students' layout, default the packaged decision-first one."""
    chat = chat or StudentChat.packaged()
    prefix_ids, first = decision_token_ids(processor, chat)

    def judge(chunk: Sequence[dict], device) -> list[dict]:
        inputs = dict(scoring_batch(processor, chunk, chat=chat).to(device))
        logits = decision_logits(model, inputs, prefix_ids)
        p_out, labels = two_way(logits, first)
        shown = written(logits, first, labels)
        return [{"id": r["id"], "label": None if written_only and not w else lab.value, "p_out": p, "written": w}
                for r, p, lab, w in zip(chunk, p_out, labels, shown)]

    return _in_batches(model, rows, batch_size, progress, judge)


def generate_rows(model, processor, rows: Sequence[dict], chat: StudentChat, batch_size: int = 8,
                  max_new_tokens: int = 128, progress: Optional[Progress] = None) -> list[dict]:
    """Generation over dataset rows (any answer format): per row the label parsed from the
    greedy answer (None when unreadable), the parse status and the text; ``p_out`` is None."""
    from scenefit.models.loading import generate_text

    def judge(chunk: Sequence[dict], device) -> list[dict]:
        texts = [chat.prompt_text(processor, StudentRequest.of_row(r)) for r in chunk]
        inputs = processor(text=texts, images=[open_image(r) for r in chunk], padding=True, padding_side="left",
                           return_tensors="pt").to(device)
        out = []
        for r, text in zip(chunk, generate_text(model, processor.tokenizer, dict(inputs), max_new_tokens).texts):
            parsed = parse_student_answer(text, Criterion.parse(str(r["criterion"])), chat.answer_format)
            out.append({"id": r["id"], "label": parsed.label.value if parsed.label else None, "p_out": None,
                        "status": parsed.status, "raw": text})
        return out

    return _in_batches(model, rows, batch_size, progress, judge)


def judge_rows(model, processor, rows: Sequence[dict], chat: StudentChat, batch_size: int = 8,
               max_new_tokens: int = 128, written_only: bool = False) -> list[dict]:
    """The student's decision on dataset rows the way its answer format allows: the fast path
    for decision-first students (``written_only``: see :func:`score_rows`), generation and parsing
    for reasoning-first ones."""
    if chat.answer_format.has_fast_path:
        return score_rows(model, processor, rows, batch_size, chat=chat, written_only=written_only)
    return generate_rows(model, processor, rows, chat, batch_size, max_new_tokens)


def accuracy(predicted: Sequence[dict], rows: Sequence[dict], column: str = "label") -> Optional[float]:
    """Share of rows whose predicted label equals ``column`` (rows without a reference skipped;
    a prediction without a label — an unreadable answer — counts as wrong)."""
    pairs = [(p["label"], r.get(column)) for p, r in zip(predicted, rows) if r.get(column) not in (None, "")]
    pairs = [(p, t) for p, t in pairs if not (isinstance(t, float) and t != t)]  # NaN = no reference
    if not pairs:
        return None
    return sum(p is not None and Label.parse(str(t)) == Label(p) for p, t in pairs) / len(pairs)
