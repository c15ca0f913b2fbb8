"""Student dataset rows -> model inputs, and the collator that pads them.

Each row of ``DATA/<criterion>/{train,val,test}.parquet`` (written by ``scenefit datasets``)
becomes one chat: system prompt, user turn (the boxed image, then the criterion's prompt) and
the assistant's answer (``target``). Only the answer's tokens and its closing ``<|im_end|>`` carry
labels, every other position is ``-100``. The answer is found by token structure — the tokens after
the last ``<|im_start|>assistant\n`` up to the next ``<|im_end|>`` — so the stock Qwen2.5-VL
template, which has no ``{% generation %}`` block, trains as it is. Nothing is truncated: a sample longer than ``max_seq_length`` is an
error naming it, so no image is ever cut.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import pandas as pd

from scenefit.core.errors import DatasetError
from scenefit.core.criteria import LABELS
from scenefit.core.images import open_image
from scenefit.student.chat import student_messages
from scenefit.core.parquet_io import read_table
from scenefit.student.answer import AnswerFormat

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


def dataset_answer_format(data_dir: Path | str, criterion: str, frames: dict[str, pd.DataFrame]) -> AnswerFormat:
    """The answer format of a criterion's dataset (its ``answer_format`` column, written by
    ``scenefit datasets``; datasets from before the setting are decision-first). The student
    records it, so predict/evaluate/serve read it from the student, never from a flag."""
    seen = set()
    for split, df in frames.items():
        if "answer_format" in df.columns:
            seen |= {str(v) for v in df["answer_format"].dropna().unique()}
        elif len(df):
            seen.add(AnswerFormat.DECISION_FIRST.value)
    if len(seen) > 1:
        raise DatasetError(f"{Path(data_dir) / criterion}: splits mix answer formats {sorted(seen)}; "
                           "rebuild them with one `datasets.answer_format`")
    try:
        return AnswerFormat.parse(seen.pop() if seen else None)
    except ValueError as e:
        raise DatasetError(f"{Path(data_dir) / criterion}: {e}") from None


def row_messages(row: dict, image, with_answer: bool = True) -> list[dict]:
    """The chat of one row, the image object placed in the user turn."""
    msgs = student_messages(row["prompt"], row.get("system") or None, row["target"] if with_answer else None)
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


def encode_example(processor, row: dict, max_seq_length: int) -> dict[str, Any]:
    """Token ids, answer-only labels and pixel values of one row (1-D tensors, no batch dim)."""
    import torch

    out = processor.apply_chat_template(
        row_messages(row, open_image(row)), tokenize=True, return_dict=True, return_tensors="pt"
    )
    input_ids = out["input_ids"][0]
    start, end = answer_span(processor.tokenizer, input_ids.tolist(), row["id"])
    if len(input_ids) > max_seq_length:
        raise DatasetError(
            f"sample {row['id']!r}: {len(input_ids)} tokens exceed max_seq_length {max_seq_length} "
            "(lower max_pixels or raise max_seq_length; samples are never truncated)"
        )
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[start:end] = input_ids[start:end]
    enc = {
        "input_ids": input_ids,
        "attention_mask": out["attention_mask"][0],
        "labels": labels,
        "pixel_values": out["pixel_values"],
        "image_grid_thw": out["image_grid_thw"],
    }
    if "mm_token_type_ids" in out:
        enc["mm_token_type_ids"] = out["mm_token_type_ids"][0]
    return enc


class StudentExamples:
    """Map-style dataset of encoded rows; encodes lazily, optionally keeping what it encoded."""

    def __init__(self, frame: pd.DataFrame, processor, max_seq_length: int, cache: bool = False):
        self.rows = frame.to_dict("records")
        self.processor = processor
        self.max_seq_length = max_seq_length
        self._cache: Optional[dict[int, dict]] = {} if cache else None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        enc = encode_example(self.processor, self.rows[i], self.max_seq_length)
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
