"""Streamed chat text (scenefit.serve.streaming): the pieces a client receives add up to the
whole answer, and handing them out costs work linear in the answer's length.

    .venv/bin/python -m pytest tests/unit/test_streaming.py -q
"""

from __future__ import annotations

import threading

import pytest
import torch

from scenefit.serve.streaming import IncrementalText, RequestWatch

TEXT = ("The zebra stands on the sand beside a person — plausible.\nÜber größe: 斑马在沙滩上。 🦓🏖️ end. "
        "Location: In-context\n")


@pytest.fixture(scope="module")
def tokenizer(standin_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(standin_model_dir)  # the real Qwen2.5-VL vocabulary (byte-level BPE)


def stream(tokenizer, ids: list[int]) -> list[str]:
    text = IncrementalText(tokenizer)
    return [piece for k in range(1, len(ids) + 1) if (piece := text.add(ids[:k]))]


def test_the_pieces_add_up_to_the_whole_answer(tokenizer):
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    pieces = stream(tokenizer, ids)
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True) == TEXT
    assert not any("\ufffd" in p for p in pieces)  # a character split across tokens waits until whole
    assert len(pieces) > 20  # it streams: many pieces, not one at the end
    # special tokens (the end of turn) add no text
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert "".join(stream(tokenizer, ids + [end])) == TEXT


class CountingTokenizer:
    """Decodes one word per id and counts how many ids it was asked to decode."""

    def __init__(self):
        self.decoded = 0

    def decode(self, ids, skip_special_tokens=True):
        self.decoded += len(ids)
        return "".join(f"w{i} " for i in ids)


def test_streaming_work_is_linear_in_the_answer():
    n = 400
    counting = CountingTokenizer()

    class Request:
        cancel = threading.Event()
        got: list[str] = []

        def on_text(self, piece):
            self.got.append(piece)

    req = Request()
    watch = RequestWatch([req], counting)
    prompt = [7] * 5
    for step in range(1, n + 1):
        watch(torch.tensor([prompt + list(range(step))]))
    assert "".join(req.got) == "".join(f"w{i} " for i in range(n))
    # each step decodes the ids since the last piece plus the piece before: about 3 per step;
    # decoding the whole answer again at every step (as before) was n^2/2 = 80,000 ids
    assert counting.decoded <= 4 * n
