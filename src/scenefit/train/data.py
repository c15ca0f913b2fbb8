"""Student dataset rows -> model inputs, and the collator that pads them.

Each row of ``DATA/<criterion>/{train,val,test}.parquet`` (written by ``scenefit datasets``)
becomes one chat: system prompt, user turn (the boxed image, then the criterion's prompt) and
the assistant's answer (``target``). Only the answer's tokens and its closing ``<|im_end|>`` carry
labels, every other position is ``-100``. The answer is found by token structure — the tokens after
the last ``<|im_start|>assistant\n`` up to the next ``<|im_end|>`` — so the stock Qwen2.5-VL
template, which has no ``{% generation %}`` block, trains as it is.

Sequence length: before training, :func:`length_plan` counts every row's tokens (image tokens from
the image's size, without decoding it). A row longer than ``max_seq_length`` is an error naming it
(``truncation: false``, nothing cut) or, with ``truncation: true`` (the authors' ``max_length`` with
truncation), loses the end of its answer — never a prompt or image token, and never its decision:
a row whose cut would reach the prompt or the decision line is left out of training and counted.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import pandas as pd

from scenefit.core.criteria import LABELS, Criterion
from scenefit.core.errors import DatasetError
from scenefit.core.images import open_image, stored_image_name
from scenefit.core.parquet_io import read_table
from scenefit.student.answer import AnswerFormat
from scenefit.student.chat import StudentChat, StudentRequest

IGNORE_INDEX = -100
#: ChatML turn markers of every Qwen2.5-VL chat template (the stock one and the tiny model's).
ASSISTANT_START, ASSISTANT_END = "<|im_start|>", "<|im_end|>"
SPLIT_FILES = ("train", "val", "test")
#: Columns the trainer reads; the rest of the dataset's columns travel along untouched.
REQUIRED_COLUMNS = ("id", "image", "prompt", "system", "target", "label", "criterion")



def split_path(data_dir: Path | str, criterion: str, split: str) -> Path:
    return Path(data_dir) / criterion / f"{split}.parquet"


def read_split(data_dir: Path | str, criterion: str, split: str) -> pd.DataFrame:
    """One split of one criterion's dataset, checked for the columns the trainer needs."""
    path = split_path(data_dir, criterion, split)
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path} (run `scenefit datasets` first)")
    df, _ = read_table(path)  # image paths are stored relative to the file: resolved here
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {missing}")
    wrong = sorted(set(df["criterion"].astype(str)) - {criterion})
    if wrong:
        raise DatasetError(f"{path}: rows for criterion {wrong}, expected only {criterion!r}")
    if df["id"].duplicated().any():
        raise DatasetError(f"{path}: duplicate ids, e.g. {df.loc[df['id'].duplicated(), 'id'].iloc[0]!r}")
    bad = ~df["label"].isin([lab.value for lab in LABELS])
    if bad.any():  # the decision scores compare labels as written: say which row breaks that, before training
        row = df.loc[bad].iloc[0]
        raise DatasetError(f"{path}: sample {row['id']!r} has label {row['label']!r}; expected one of "
                           f"{[lab.value for lab in LABELS]} ({int(bad.sum())} such rows)")
    return df.reset_index(drop=True)


def datasets_stage_manifest(data_dir: Path | str) -> Optional[dict[str, Any]]:
    """The datasets stage's ``manifest.json`` (None for datasets without one)."""
    stage = Path(data_dir) / "manifest.json"
    return json.loads(stage.read_text()) if stage.is_file() else None


def dataset_chat(data_dir: Path | str, criterion: str, frames: dict[str, pd.DataFrame]) -> StudentChat:
    """How the criterion's dataset asks its student: the ``student`` record of the datasets
    manifest (written by ``scenefit datasets``: prompts, system turn, image position, answer
    format), checked against the first row of each split. Datasets from before that record asked with the
    packaged student-v2 prompts, in the answer format of their ``answer_format`` column
    (decision-first without it). The student records it, so predict/evaluate/serve ask as it was
    trained, never by a flag."""
    where = Path(data_dir) / criterion
    manifest = datasets_stage_manifest(data_dir) or {}
    if manifest.get("student") is None:
        return StudentChat.legacy(_column_answer_format(where, frames))
    try:
        chat = StudentChat.model_validate(manifest["student"])
        for split, df in frames.items():
            if len(df) and "object" in df:
                row = df.iloc[0].to_dict()
                if tuple(StudentRequest.of_row(row)) != tuple(chat.request(Criterion.parse(criterion), str(row["object"]))):
                    raise ValueError(f"{split}.parquet: sample {row['id']!r} was not asked with the student prompts "
                                     f"the manifest records ({chat.prompt_version}); rebuild the datasets")
    except ValueError as e:
        raise DatasetError(f"{where}: {e}") from None
    return chat


def _column_answer_format(where: Path, frames: dict[str, pd.DataFrame]) -> AnswerFormat:
    """The answer format of datasets written before the manifest's student record (their rows'
    ``answer_format`` column; decision-first without it)."""
    seen = set()
    for df in frames.values():
        if "answer_format" in df.columns:
            seen |= {str(v) for v in df["answer_format"].dropna().unique()}
        elif len(df):
            seen.add(AnswerFormat.DECISION_FIRST.value)
    if len(seen) > 1:
        raise DatasetError(f"{where}: splits mix answer formats {sorted(seen)}; "
                           "rebuild them with one `datasets.answer_format`")
    try:
        return AnswerFormat.parse(seen.pop() if seen else None)
    except ValueError as e:
        raise DatasetError(f"{where}: {e}") from None


def row_messages(row: dict, image, chat: StudentChat, with_answer: bool = True) -> list[dict]:
    """The chat of one row in ``chat``'s layout, the image object placed in the user turn."""
    msgs = chat.messages(StudentRequest.of_row(row), row["target"] if with_answer else None)
    for m in msgs:
        if m["role"] == "user":
            for part in m["content"]:
                if part["type"] == "image":
                    part["image"] = image
    return msgs



def answer_span(tokenizer, ids: Sequence[int], sample_id: Any = "?") -> tuple[int, int]:
    """``(start, end)`` of the last assistant turn's content plus its ``<|im_end|>`` in ``ids``
    (``ids[start:end]``), found by token structure, not by a template feature."""
    header = tokenizer(f"{ASSISTANT_START}assistant\n", add_special_tokens=False)["input_ids"]
    im_end = tokenizer.convert_tokens_to_ids(ASSISTANT_END)
    n = len(header)
    starts = [i + n for i in range(len(ids) - n + 1) if list(ids[i : i + n]) == header]
    if not starts:
        raise DatasetError(
            f"sample {sample_id!r}: no {ASSISTANT_START!r}assistant turn found in the rendered chat "
            "(does the answer begin with whitespace, or is the template not ChatML?)"
        )
    start = starts[-1]
    try:
        end = list(ids).index(im_end, start) + 1
    except ValueError:
        raise DatasetError(f"sample {sample_id!r}: the assistant turn has no closing {ASSISTANT_END}") from None
    if end - start < 2:
        raise DatasetError(f"sample {sample_id!r}: the assistant answer is empty")
    return start, end


def encode_example(processor, row: dict, max_seq_length: int, chat: Optional[StudentChat] = None,
                   truncation: bool = False) -> dict[str, Any]:
    """Token ids, answer-only labels and pixel values of one row (1-D tensors, no batch dim);
    ``chat``: the layout the dataset was built for (default: the packaged decision-first one).
    A row longer than ``max_seq_length`` is an error, or with ``truncation`` loses the end of its
    answer — an error still when the cut would reach the prompt (rows :func:`length_plan` keeps never do)."""
    import torch

    out = processor.apply_chat_template(
        row_messages(row, open_image(row), chat or StudentChat.packaged()), tokenize=True, return_dict=True,
        return_tensors="pt"
    )
    input_ids = out["input_ids"][0]
    start, end = answer_span(processor.tokenizer, input_ids.tolist(), row["id"])
    keep = len(input_ids)
    if keep > max_seq_length:
        if not truncation or start >= max_seq_length:
            raise DatasetError(
                f"sample {row['id']!r}: {len(input_ids)} tokens exceed max_seq_length {max_seq_length} "
                + ("and its prompt alone fills it" if truncation else
                   "(lower max_pixels, raise max_seq_length or set truncation; nothing is cut)")
            )
        keep = max_seq_length  # the answer's tail goes, as the authors' max_length truncation cuts it
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[start:end] = input_ids[start:end]
    enc = {
        "input_ids": input_ids[:keep],
        "attention_mask": out["attention_mask"][0][:keep],
        "labels": labels[:keep],
        "pixel_values": out["pixel_values"],
        "image_grid_thw": out["image_grid_thw"],
    }
    if "mm_token_type_ids" in out:
        enc["mm_token_type_ids"] = out["mm_token_type_ids"][0][:keep]
    return enc


def _upright_size(row: dict) -> tuple[int, int]:
    """The image's (width, height) after its EXIF orientation, read from the header only (a path,
    or the image embedded in the row by ``scenefit datasets``)."""
    import io

    from PIL import Image

    value = row["image"]
    if isinstance(value, dict):
        value = io.BytesIO(bytes(value["bytes"])) if value.get("bytes") is not None else value.get("path")
    try:
        with Image.open(value) as im:
            w, h = im.size
            turned = im.getexif().get(0x0112) in (5, 6, 7, 8)  # rotated by 90 degrees
    except Exception as e:
        raise DatasetError(f"sample {row['id']!r}: image {stored_image_name(row['image'])!r} cannot be read: {e}") from None
    return (h, w) if turned else (w, h)


def image_tokens(processor, size: tuple[int, int]) -> int:
    """Tokens the processor gives an image of ``size`` (width, height) at its pixel budget."""
    ip = processor.image_processor
    return ip.get_number_of_image_patches(size[1], size[0], {}) // (ip.merge_size ** 2)


@dataclass
class LengthPlan:
    """Which rows train, from their token counts: ``keep`` (row positions), the rows ``cut`` (their
    answer's end goes) and ``dropped`` (their cut would reach the prompt or the decision), by id."""

    keep: list[int]
    cut: list[str]
    dropped: list[str]
    longest: int

    def summary(self) -> dict[str, Any]:
        return {"rows": len(self.keep) + len(self.dropped), "kept": len(self.keep), "answer_cut": len(self.cut),
                "dropped": len(self.dropped), "dropped_ids": self.dropped[:20], "longest": self.longest}


def length_plan(processor, frame: pd.DataFrame, chat: StudentChat, max_seq_length: int, truncation: bool,
                where: Any = "dataset") -> LengthPlan:
    """Count every row's tokens without encoding its image (the processor's resize rule on the
    image's size) and decide: fits, answer cut (``truncation``: the prompt, the image and the
    decision line stay whole), or — too long without ``truncation`` — an error naming the rows;
    with ``truncation`` a row whose decision line would not fit is dropped (counted, never silent)."""
    tok = processor.tokenizer
    fmt = chat.answer_format
    keep, cut, dropped, too_long, longest = [], [], [], [], 0
    for i, row in enumerate(frame.to_dict("records")):
        request = StudentRequest.of_row(row)
        n_image = image_tokens(processor, _upright_size(row)) - 1  # the placeholder itself is one token
        prompt = chat.prompt_text(processor, request)
        n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"]) + n_image
        answer = str(row["target"])
        n_total = n_prompt + len(tok(answer + ASSISTANT_END + "\n", add_special_tokens=False)["input_ids"])
        longest = max(longest, n_total)
        if n_total <= max_seq_length:
            keep.append(i)
            continue
        if not truncation:
            too_long.append(f"{row['id']!r} ({n_total} tokens)")
            continue
        offset = fmt.decision_offset(answer)
        newline = answer.find("\n", offset) if offset is not None else -1
        line_end = len(answer) if newline < 0 else newline
        # +1: the decision line's tokens counted apart may merge differently with what follows
        needed = n_prompt + len(tok(answer[:line_end], add_special_tokens=False)["input_ids"]) + 1
        if offset is not None and needed <= max_seq_length:
            keep.append(i)
            cut.append(str(row["id"]))
        else:
            dropped.append(str(row["id"]))
    if too_long:
        raise DatasetError(
            f"{where}: {len(too_long)} sample(s) exceed max_seq_length {max_seq_length}, e.g. {', '.join(too_long[:5])}; "
            "lower max_pixels, raise max_seq_length or set train.truncation (the answer's end is cut, never the "
            "prompt, an image or the decision)"
        )
    return LengthPlan(keep, cut, dropped, longest)


def fit_lengths(processor, frames: dict[str, pd.DataFrame], chat: StudentChat, max_seq_length: int, truncation: bool,
                paths: dict[str, Any]) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The train and val rows that fit ``max_seq_length`` (:func:`length_plan`: too long is an error, or
    with ``truncation`` the answer's end is cut and a row whose decision would not fit is left out),
    and what was done, per split, for metrics.json (``paths``: split -> file, for messages)."""
    out, report = dict(frames), {"max_seq_length": max_seq_length, "truncation": truncation}
    for split in ("train", "val"):
        plan = length_plan(processor, frames[split], chat, max_seq_length, truncation, paths.get(split, split))
        out[split] = frames[split].iloc[plan.keep].reset_index(drop=True)
        report[split] = plan.summary()
        if plan.dropped or plan.cut:
            print(f"warning: {paths.get(split, split)}: {len(plan.cut)} answer(s) cut to max_seq_length "
                  f"{max_seq_length}; {len(plan.dropped)} row(s) left out (their decision would not fit), "
                  f"e.g. {plan.dropped[:3]}", file=sys.stderr)
        if out[split].empty:
            raise DatasetError(f"{paths.get(split, split)}: no row fits max_seq_length {max_seq_length}")
    return out, report


class StudentExamples:
    """Map-style dataset of encoded rows; encodes lazily, optionally keeping what it encoded."""

    def __init__(self, frame: pd.DataFrame, processor, max_seq_length: int, cache: bool = False,
                 chat: Optional[StudentChat] = None, truncation: bool = False):
        self.rows = frame.to_dict("records")
        self.processor = processor
        self.max_seq_length = max_seq_length
        self.chat = chat or StudentChat.packaged()
        self.truncation = truncation
        self._cache: Optional[dict[int, dict]] = {} if cache else None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        enc = encode_example(self.processor, self.rows[i], self.max_seq_length, self.chat, self.truncation)
        if self._cache is not None:
            self._cache[i] = enc
        return enc


def pad_right(seqs: Sequence, value: int):
    import torch

    longest = max(len(s) for s in seqs)
    out = torch.full((len(seqs), longest), value, dtype=seqs[0].dtype)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out


class AnswerOnlyCollator:
    """Pads a list of encoded examples (right padding; pads are masked and never labelled)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch = {
            "input_ids": pad_right([e["input_ids"] for e in examples], self.pad_token_id),
            "attention_mask": pad_right([e["attention_mask"] for e in examples], 0),
            "labels": pad_right([e["labels"] for e in examples], IGNORE_INDEX),
            "pixel_values": torch.cat([e["pixel_values"] for e in examples]),
            "image_grid_thw": torch.cat([e["image_grid_thw"] for e in examples]),
        }
        if "mm_token_type_ids" in examples[0]:
            batch["mm_token_type_ids"] = pad_right([e["mm_token_type_ids"] for e in examples], 0)
        return batch
