"""Sequence length before training: every row's tokens counted without encoding its image, equal to
what the encoder gives; too long is an error naming the rows, or with ``train.truncation`` (the
authors' max_length with truncation) the answer's end is cut — never a prompt or image token, never
the decision, and a row whose decision would not fit is left out and counted.

    .venv/bin/python -m pytest tests/unit/test_train_lengths.py -q
"""

from __future__ import annotations

import pandas as pd
import pytest
from PIL import Image

from scenefit.core.criteria import Criterion, Label
from scenefit.student.answer import AnswerFormat
from scenefit.student.chat import StudentChat

CRIT = Criterion.LOCATION
LONG = " ".join(["The cow stands on the green grass beside the fence."] * 12)


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    from scenefit.models.loading import load_processor

    return load_processor(tiny_model_dir)


def _rows(tmp_path, chat: StudentChat, sentences) -> pd.DataFrame:
    rows = []
    for i, (size, sentence) in enumerate(sentences):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", size, (30 * i, 160, 90)).save(path)
        req = chat.request(CRIT, "cow")
        rows.append({"id": f"r{i}", "image": str(path), "object": "cow", "prompt": req.prompt, "system": req.system,
                     "target": chat.answer_format.render(CRIT, Label.OUT if i % 2 else Label.IN, sentence),
                     "label": (Label.OUT if i % 2 else Label.IN).value, "criterion": CRIT.value})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("fmt", list(AnswerFormat))
def test_counted_lengths_equal_the_encoded_ones(processor, tmp_path, fmt):
    from scenefit.train.data import encode_example, length_plan

    chat = StudentChat.packaged(fmt)
    frame = _rows(tmp_path, chat, [((112, 112), "It floats."), ((56, 112), LONG), ((112, 56), "On the grass.")])
    lengths = [len(encode_example(processor, r, 10**6, chat)["input_ids"]) for r in frame.to_dict("records")]
    plan = length_plan(processor, frame, chat, 10**6, truncation=False)
    assert plan.longest == max(lengths) and plan.keep == [0, 1, 2]
    # one token less than each row: every row is too long, and the error names them
    from scenefit.train.data import DatasetError

    with pytest.raises(DatasetError, match=r"3 sample\(s\) exceed max_seq_length .*'r0' \(%d tokens\)" % lengths[0]):
        length_plan(processor, frame, chat, min(lengths) - 1, truncation=False, where="data/location/train.parquet")


def test_truncation_cuts_the_answer_end_and_keeps_the_decision(processor, tmp_path):
    from scenefit.train.data import IGNORE_INDEX, encode_example, length_plan

    chat = StudentChat.packaged(AnswerFormat.DECISION_FIRST)
    frame = _rows(tmp_path, chat, [((112, 112), "It floats."), ((112, 112), LONG)])
    full = [encode_example(processor, r, 10**6, chat) for r in frame.to_dict("records")]
    limit = len(full[0]["input_ids"]) + 4  # the short row fits; the long one's sentence does not
    plan = length_plan(processor, frame, chat, limit, truncation=True)
    assert plan.keep == [0, 1] and plan.cut == ["r1"] and plan.dropped == []
    cut = encode_example(processor, frame.iloc[1].to_dict(), limit, chat, truncation=True)
    assert len(cut["input_ids"]) == len(cut["labels"]) == len(cut["attention_mask"]) == limit
    # the prompt and every image token are whole; the answer starts with its decision, then stops short
    assert cut["input_ids"].tolist() == full[1]["input_ids"][:limit].tolist()
    assert (cut["pixel_values"] == full[1]["pixel_values"]).all()
    answer = [t for t, lab in zip(cut["input_ids"].tolist(), cut["labels"].tolist()) if lab != IGNORE_INDEX]
    assert processor.tokenizer.decode(answer).startswith("Decision: Out-of-context\nLocation: The cow")
    with pytest.raises(Exception, match="exceed max_seq_length"):
        encode_example(processor, frame.iloc[1].to_dict(), limit, chat, truncation=False)


def test_a_row_whose_decision_would_be_cut_is_left_out_and_counted(processor, tmp_path):
    """A reasoning-first answer decides on its last line: a cut anywhere in it would train an answer
    without its decision, so the row leaves training (counted); so does a row whose prompt alone fills the limit."""
    from scenefit.train.data import encode_example, length_plan

    chat = StudentChat.packaged(AnswerFormat.REASONING_FIRST)
    frame = _rows(tmp_path, chat, [((112, 112), "It floats."), ((112, 112), LONG)])
    short = len(encode_example(processor, frame.iloc[0].to_dict(), 10**6, chat)["input_ids"])
    plan = length_plan(processor, frame, chat, short + 4, truncation=True)
    assert plan.keep == [0] and plan.dropped == ["r1"] and plan.cut == []
    assert plan.summary()["dropped"] == 1 and plan.summary()["dropped_ids"] == ["r1"]
    tiny = length_plan(processor, frame, chat, 20, truncation=True)
    assert tiny.keep == [] and tiny.dropped == ["r0", "r1"]
