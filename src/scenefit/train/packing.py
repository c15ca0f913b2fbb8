"""Padding-free packing for Qwen2.5-VL: several samples in one row, each with its own mRoPE.

    from scenefit.train.packing import PackedCollator, use_packed_attention
    use_packed_attention(model)               # what `scenefit train` does with train.packing: true
    collator = PackedCollator(model)          # instead of AnswerOnlyCollator

A padded batch spends compute on pad tokens; a packed row holds the samples back to back. Two
things must then hold for the result to equal the padded batch:

* **No sample sees another.** The row carries no attention mask; its text position ids restart at 0
  at every sample, and transformers turns such position ids into a block-diagonal causal mask
  (``masking_utils.find_packed_sequence_indices``; Qwen2.5-VL reads them from row 0 of a
  ``[4, batch, length]`` position tensor).
* **Each sample keeps its own 3-D rotary positions.** Qwen2.5-VL gives image tokens (temporal,
  height, width) positions and continues the text after the image from the largest of them. Computed
  over a whole packed row, the second sample's positions would continue from the first sample's; here
  they are computed per sample with the model's own ``get_rope_index`` and concatenated.

Attention over a packed row: transformers' sdpa path masks the whole row block-diagonally, so it
still computes attention over the row's full length squared (slower than the padded batch on CPU).
:func:`use_packed_attention` switches the model to ``scenefit_packed_sdpa``, which runs sdpa once per
sample of a packed row (what flash-attention's variable-length kernels do on GPU) and plain sdpa for
the text model's padded batches and generation; the vision tower keeps its own attention.

The loss needs nothing special: the token after a sample's last labelled token is the next sample's
``<|im_start|>``, whose label is -100. ``tests/test_packing.py`` checks logits and per-sample loss
against the padded forward; ``benchmarks/packing.py`` measures the speed of both.
"""

from __future__ import annotations

from typing import Any

from scenefit.train.data import IGNORE_INDEX


def rope_index_function(model):
    """The ``get_rope_index`` of the Qwen2.5-VL inside ``model`` (PEFT-wrapped or not)."""
    for module in model.modules():
        if hasattr(module, "get_rope_index") and hasattr(module, "language_model"):
            return module.get_rope_index
    raise TypeError(f"{type(model).__name__}: no Qwen2.5-VL get_rope_index inside; packing needs one")


class PackedCollator:
    """Packs a list of encoded examples (``scenefit.train.data.encode_example``) into one row."""

    def __init__(self, model):
        self.get_rope_index = rope_index_function(model)

    def positions(self, example: dict[str, Any]):
        """``[4, length]``: the text positions, then the sample's own temporal/height/width positions."""
        import torch

        ids = example["input_ids"][None]
        kwargs = {"image_grid_thw": example["image_grid_thw"]}
        if "mm_token_type_ids" in example:
            kwargs["mm_token_type_ids"] = example["mm_token_type_ids"][None]
        with torch.no_grad():
            mrope, _ = self.get_rope_index(ids, attention_mask=torch.ones_like(ids), **kwargs)
        text = torch.arange(ids.shape[1], dtype=mrope.dtype)[None]
        return torch.cat([text, mrope[:, 0, :]], dim=0)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch = {
            "input_ids": torch.cat([e["input_ids"] for e in examples])[None],
            "labels": torch.cat([e["labels"] for e in examples])[None],
            "position_ids": torch.cat([self.positions(e) for e in examples], dim=1)[:, None, :],
            "pixel_values": torch.cat([e["pixel_values"] for e in examples]),
            "image_grid_thw": torch.cat([e["image_grid_thw"] for e in examples]),
        }
        if "mm_token_type_ids" in examples[0]:
            batch["mm_token_type_ids"] = torch.cat([e["mm_token_type_ids"] for e in examples])[None]
        # transformers builds the block-diagonal mask from position ids only when no KV cache is made
        batch["use_cache"] = False
        return batch


PACKED_ATTENTION = "scenefit_packed_sdpa"


def _sample_starts(position_ids) -> list[int]:
    return [int(i) for i in (position_ids == 0).nonzero().flatten()]


def packed_sdpa_attention(module, query, key, value, attention_mask, position_ids=None, **kwargs):
    """sdpa per sample where a row is packed (no mask, text positions restarting at 0), else plain sdpa.

    Shapes as transformers' attention functions: query/key/value ``[batch, heads, length, dim]``,
    output ``[batch, length, heads, dim]``."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    rows = [] if attention_mask is not None or position_ids is None or key.shape[2] != query.shape[2] else \
        [_sample_starts(position_ids[b]) for b in range(query.shape[0])]
    if not rows or all(len(starts) <= 1 for starts in rows):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    outputs = []
    for b, starts in enumerate(rows):
        bounds = starts + [query.shape[2]]
        parts = [
            sdpa_attention_forward(module, query[b : b + 1, :, s:e], key[b : b + 1, :, s:e], value[b : b + 1, :, s:e],
                                   None, is_causal=True, **kwargs)[0]
            for s, e in zip(bounds, bounds[1:])
        ]
        outputs.append(torch.cat(parts, dim=1))
    return torch.cat(outputs, dim=0), None


def _packed_mask(*args, attention_mask=None, **kwargs):
    """No 4-D mask for rows without a padding mask (packed rows: the attention splits them by sample)."""
    from transformers.masking_utils import sdpa_mask

    return None if attention_mask is None else sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def use_packed_attention(model) -> None:
    """Register ``scenefit_packed_sdpa`` with transformers and switch ``model``'s text attention to it."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(PACKED_ATTENTION, packed_sdpa_attention)
    AttentionMaskInterface.register(PACKED_ATTENTION, _packed_mask)
    # the text model only: a plain string would reach every sub-config and undo the vision tower's
    # one-call window attention (scenefit.models.vision_attention) that load_model installed
    model.set_attn_implementation({"text_config": PACKED_ATTENTION})


def sample_spans(examples: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """(start, end) of each example inside a packed row."""
    spans, start = [], 0
    for e in examples:
        spans.append((start, start + len(e["input_ids"])))
        start += len(e["input_ids"])
    return spans


def per_sample_loss(logits, labels) -> float:
    """Mean next-token cross-entropy over one sample's labelled tokens (1-D labels, 2-D logits)."""
    import torch.nn.functional as F

    return float(F.cross_entropy(logits[:-1].float(), labels[1:], ignore_index=IGNORE_INDEX))
