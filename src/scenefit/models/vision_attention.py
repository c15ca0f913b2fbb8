"""All windows of a Qwen2.5-VL vision block in one attention call (issue 20, item 2).

How transformers 5.24 runs the tower's attention (models/qwen2_5_vl/modeling_qwen2_5_vl.py):
the tower packs every image's patches into one sequence, ordered window by window, and hands
each block ``cu_seqlens`` — cumulative window boundaries for the window blocks, image boundaries
for the full-attention blocks (``fullatt_block_indexes``). For flash attention the whole packed
sequence goes to one variable-length call; for any other implementation (sdpa, eager) the
attention module splits the sequence and makes one small call per window — on the 3B at batch
64 about 29,000 SDPA calls per forward, which leaves a GPU mostly idle.

:func:`set_vision_attention` (called by ``scenefit.models.loading.load_model``) registers
:func:`packed_attention` in transformers' ``AttentionInterface`` and makes it the tower's
implementation (the text model keeps its own). The vision attention module passes
``cu_seqlens`` only to implementations whose name contains "flash"
(``transformers.utils.generic.is_flash_attention_requested``), hence the registered name; no
flash-attn package is involved. Per block:

- all sequences of equal length (square images whose token grid is a multiple of the window,
  the common case): one SDPA call over the windows viewed as a batch, no mask, no copy;
- ragged (the narrower edge windows of other sizes; images of different sizes in a
  full-attention block), on a GPU: padded to the longest and masked, one SDPA call;
- ragged on a CPU, or where padding would more than double the tokens: one call per run of
  consecutive equal-length sequences (views, no copy) — still far fewer than one per window.

Equality with transformers' own tower output is tested in tests/test_vision_attention.py;
the speed is measured by benchmarks/vision_tower.py.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Optional

#: Name registered in transformers' AttentionInterface ("flash" in it: see the module docstring).
PACKED_ATTENTION = "scenefit_packed_sdpa_flash_api"

#: Values of ``load_model(vision_attention=...)``.
VISION_ATTENTION_MODES = ("packed", "transformers")

#: Devices where ragged sequences are padded into one call. A GPU is bound by kernel launches
#: (~29,000 per batch without this); on a CPU a call costs microseconds and the padding's copies
#: cost more than they save (benchmarks/vision_tower.py), so there runs of equal length are
#: batched without copies instead.
PADDED_DEVICES = ("cuda",)

#: Padding is worth one call up to this many padded tokens per real token; past it (say one
#: large image among many small ones in a full-attention block) runs of equal length do less work.
MAX_PADDING_RATIO = 2.0

#: Implementations whose per-window loop the packed call replaces (sdpa, the default); flash,
#: eager (asked for to see attention weights) and others are left alone.
_REPLACEABLE = (None, "sdpa")


def _padding_plan(cu_seqlens, max_len: int):
    """Index tensors for one padded call: ``gather`` (n*M,) picks each padded slot's token
    (padding slots pick token 0 and are masked), ``keep`` (n, 1, 1, M) masks padded keys,
    ``slot`` (S,) is each token's padded slot, to read the outputs back in sequence order."""
    import torch

    starts = cu_seqlens[:-1].long()
    lengths = cu_seqlens[1:].long() - starts
    n, total = lengths.numel(), int(cu_seqlens[-1])
    offsets = torch.arange(max_len, device=cu_seqlens.device)
    valid = offsets[None, :] < lengths[:, None]
    gather = torch.where(valid, starts[:, None] + offsets[None, :], 0).reshape(-1)
    seq_of_token = torch.repeat_interleave(torch.arange(n, device=cu_seqlens.device), lengths, output_size=total)
    slot = seq_of_token * max_len + torch.arange(total, device=cu_seqlens.device) - starts[seq_of_token]
    return gather, valid[:, None, None, :], slot


def _equal_length_runs(cu_seqlens) -> list[tuple[int, int, int]]:
    """(first token, sequences, length) of each run of consecutive equal-length sequences: an
    image's full windows come in runs, cut by the narrower window closing each row of windows."""
    bounds = cu_seqlens.tolist()
    runs: list[tuple[int, int, int]] = []
    for start, end in zip(bounds, bounds[1:]):
        if runs and runs[-1][2] == end - start:
            first, count, length = runs[-1]
            runs[-1] = (first, count + 1, length)
        else:
            runs.append((start, 1, end - start))
    return runs


class _PerForwardCache:
    """Plans derived from ``cu_seqlens``, kept for the last tensor seen: every window block of
    one tower forward gets the same ``cu_seqlens`` tensor, so a plan is built once per forward,
    not once per block. The entry is read and replaced whole, so concurrent forwards at worst
    rebuild a plan."""

    entry: Optional[tuple[Any, dict]] = None

    def get(self, cu_seqlens, key, build):
        entry = self.entry
        if entry is None or entry[0] is not cu_seqlens:
            entry = self.entry = (cu_seqlens, {})
        if key not in entry[1]:
            entry[1][key] = build()
        return entry[1][key]


_plans = _PerForwardCache()


def packed_attention(module, query, key, value, attention_mask=None, scaling: Optional[float] = None,
                     dropout: float = 0.0, cu_seq_lens_q=None, max_length_q: Optional[int] = None, **kwargs):
    """Attention over the packed sequences of ``cu_seq_lens_q`` in as few SDPA calls as it takes.

    ``query``/``key``/``value``: (1, heads, S, head_dim), as the vision attention passes them;
    returns ((1, S, heads, head_dim), None) like transformers' flash path."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    def attend(q, k, v, mask=None):  # (batch, heads, length, dim) -> (batch, length, heads, dim)
        return sdpa_attention_forward(module, q, k, v, mask, dropout=dropout, scaling=scaling, is_causal=False)[0]

    if cu_seq_lens_q is None:  # not called by the vision tower: one sequence, plain SDPA
        return attend(query, key, value, attention_mask), None
    _, heads, total, head_dim = query.shape
    n = cu_seq_lens_q.numel() - 1
    max_len = int(max_length_q) if max_length_q is not None else int((cu_seq_lens_q[1:] - cu_seq_lens_q[:-1]).max())

    if n * max_len == total:  # every sequence has the longest length: one batch, no mask, no copy
        return attend(*(t[0].unflatten(1, (n, max_len)).transpose(0, 1) for t in (query, key, value))).reshape(
            1, total, heads, head_dim), None

    if query.device.type in PADDED_DEVICES and n * max_len <= MAX_PADDING_RATIO * total:
        gather, keep, slot = _plans.get(cu_seq_lens_q, ("pad", max_len), lambda: _padding_plan(cu_seq_lens_q, max_len))

        def padded(t):  # rows of the (S, heads, dim) layout the vision attention's rope produced
            return t[0].transpose(0, 1).index_select(0, gather).view(n, max_len, heads, head_dim).transpose(1, 2)

        out = attend(padded(query), padded(key), padded(value), keep)
        return out.reshape(n * max_len, heads, head_dim).index_select(0, slot).unsqueeze(0), None

    # One call per run of equal-length sequences, each a view of the packed tensors (no copy).
    runs = _plans.get(cu_seq_lens_q, "runs", lambda: _equal_length_runs(cu_seq_lens_q))
    outs = []
    for first, count, length in runs:
        part = [t[0, :, first:first + count * length].unflatten(1, (count, length)).transpose(0, 1)
                for t in (query, key, value)]
        outs.append(attend(*part).reshape(count * length, heads, head_dim))
    return torch.cat(outs).unsqueeze(0), None


def vision_towers(model) -> list:
    """The Qwen2.5-VL vision towers inside ``model`` (one for a Qwen2.5-VL, with or without PEFT)."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

    return [m for m in model.modules() if isinstance(m, Qwen2_5_VisionTransformerPretrainedModel)]


def check_vision_attention(mode: str) -> str:
    """``mode`` if it is one of :data:`VISION_ATTENTION_MODES`, else ValueError naming it."""
    if mode not in VISION_ATTENTION_MODES:
        raise ValueError(f"vision_attention={mode!r} is not one of {', '.join(VISION_ATTENTION_MODES)}")
    return mode


def set_vision_attention(model, mode: str) -> int:
    """Switch every Qwen2.5-VL vision tower inside ``model`` to ``mode``: "packed" (one attention
    call per block) or "transformers" (back to transformers' sdpa, one call per window).

    Only towers on sdpa (for "packed") or on the packed call (for "transformers") change: a tower
    on flash attention (already one call), eager or another implementation is left alone.
    Returns the number of towers switched (0 for models without one)."""
    from transformers import AttentionInterface

    check_vision_attention(mode)
    if mode == "packed":
        AttentionInterface.register(PACKED_ATTENTION, packed_attention)
    switched = 0
    for tower in vision_towers(model):
        current = tower.config._attn_implementation
        if mode == "packed" and current in _REPLACEABLE:
            # Set on the tower's own config (the parent's vision_config, not the text model's),
            # not through set_attn_implementation, which looks for a flash kernel on the hub
            # for a name containing "flash".
            tower.config._attn_implementation = PACKED_ATTENTION
        elif mode == "transformers" and current == PACKED_ATTENTION:
            tower.config._attn_implementation = "sdpa"
        else:
            continue
        switched += 1
    return switched


@contextmanager
def counting_sdpa_calls() -> Iterator[list]:
    """Inside the block, record the query shape of every torch SDPA call (transformers' sdpa
    function looks the torch function up at each call); for tests and benchmarks."""
    import torch

    calls: list = []
    original = torch.nn.functional.scaled_dot_product_attention

    def counting(query, *args, **kwargs):
        calls.append(tuple(query.shape))
        return original(query, *args, **kwargs)

    torch.nn.functional.scaled_dot_product_attention = counting
    try:
        yield calls
    finally:
        torch.nn.functional.scaled_dot_product_attention = original
