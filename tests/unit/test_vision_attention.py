"""The vision tower's attention in one call per block equals transformers' call per window.

    .venv/bin/python -m pytest tests/unit/test_vision_attention.py -x -q

Towers here have 56-px windows (2×2 merged tokens, 16 patches), so a few small images give
many windows, ragged ones included; weights are random, fp32, CPU.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

import scenefit.models.vision_attention as va
from scenefit.models.vision_attention import PACKED_ATTENTION, counting_sdpa_calls, set_vision_attention

pytestmark = pytest.mark.usefixtures("torch_one_thread")

PATCH_DIM = 3 * 2 * 14 * 14
#: grid_thw rows in patches (t, h, w). With 56-px windows a window is 4×4 patches.
SIZES = {
    "square, equal windows": [(1, 16, 16)],
    "non-square, equal windows": [(1, 8, 24)],
    "non-square, ragged windows": [(1, 10, 6)],
    "larger ragged": [(1, 22, 14)],
    "batch of different sizes": [(1, 16, 16), (1, 10, 6), (1, 4, 14), (1, 22, 8), (1, 2, 2)],
    "batch of equal sizes": [(1, 12, 12)] * 3,
}


def make_tower(fullatt=(1,), depth=3, seed=0):
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

    cfg = Qwen2_5_VLVisionConfig(depth=depth, hidden_size=64, intermediate_size=96, num_heads=4, out_hidden_size=32,
                                 window_size=56, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                                 fullatt_block_indexes=list(fullatt))
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    return Qwen2_5_VisionTransformerPretrainedModel(cfg).eval()


def tower_pair(**kw):
    """transformers' tower and a packed copy with the same weights."""
    reference = make_tower(**kw)
    packed = copy.deepcopy(reference)
    assert set_vision_attention(packed, "packed") == 1
    assert packed.config._attn_implementation == PACKED_ATTENTION
    assert reference.config._attn_implementation == "sdpa"
    return reference, packed


def inputs(grids, seed=1):
    grid = torch.tensor(grids)
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(int(grid.prod(-1).sum()), PATCH_DIM, generator=gen), grid


@pytest.fixture(params=["runs", "padded"])
def strategy(request, monkeypatch):
    """The CPU's strategy for ragged blocks (runs of equal length) and the GPU's (one padded
    call), both proven here on the CPU."""
    if request.param == "padded":
        monkeypatch.setattr(va, "PADDED_DEVICES", ("cpu",))
    return request.param


@pytest.fixture
def sdpa_calls():
    with counting_sdpa_calls() as calls:
        yield calls


def assert_same_tower_output(reference, packed, grids):
    pixels, grid = inputs(grids)
    with torch.no_grad():
        want = reference(pixels, grid_thw=grid, output_hidden_states=True)
        got = packed(pixels, grid_thw=grid, output_hidden_states=True)
    for block, (w, g) in enumerate(zip(want.hidden_states, got.hidden_states)):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6, msg=lambda m: f"block {block}: {m}")
    torch.testing.assert_close(got.pooler_output, want.pooler_output, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("label", list(SIZES))
def test_tower_output_equals_transformers(label, strategy):
    reference, packed = tower_pair()
    assert_same_tower_output(reference, packed, SIZES[label])


@pytest.mark.parametrize("fullatt", [(0, 1, 2), ()], ids=["all full-attention", "all windowed"])
def test_full_attention_and_window_blocks_each_equal(fullatt, strategy):
    """Full-attention blocks keep attending over whole images (of different sizes), window
    blocks over windows: each kind alone equals transformers."""
    reference, packed = tower_pair(fullatt=fullatt)
    assert_same_tower_output(reference, packed, SIZES["batch of different sizes"])


def test_full_attention_block_still_sees_the_whole_image():
    """A change in one window reaches another window of the same image only through a
    full-attention block; it never reaches another image."""
    _, windowed = tower_pair(fullatt=())
    _, full = tower_pair(fullatt=(0,), depth=1)
    pixels, grid = inputs([(1, 8, 8), (1, 8, 8)])  # two images of 2×2 windows of 16 patches each
    changed = pixels.clone()
    changed[:4] += 1.0  # the first 2×2 merged patch of the first image: inside its first window
    with torch.no_grad():
        for tower, crosses_windows in ((windowed, False), (full, True)):
            a = tower(pixels, grid_thw=grid).last_hidden_state
            b = tower(changed, grid_thw=grid).last_hidden_state
            other_windows = (a[16:64] - b[16:64]).abs().max().item()  # outputs come in window order
            assert (other_windows > 1e-4) is crosses_windows
            torch.testing.assert_close(a[64:], b[64:])  # the second image is untouched


def test_one_sdpa_call_per_block_where_windows_are_equal(sdpa_calls):
    reference, packed = tower_pair(depth=4, fullatt=(3,))
    pixels, grid = inputs([(1, 16, 16)] * 2)  # 2 images × 16 windows
    with torch.no_grad():
        reference(pixels, grid_thw=grid)
        per_window = len(sdpa_calls)
        sdpa_calls.clear()
        packed(pixels, grid_thw=grid)
    assert per_window == 3 * 32 + 2  # three window blocks, one full-attention block per image
    assert len(sdpa_calls) == 4
    assert sdpa_calls[0][0] == 32  # the 32 windows as one batch


def test_ragged_blocks_take_one_padded_call_on_the_gpu_strategy(sdpa_calls, monkeypatch):
    monkeypatch.setattr(va, "PADDED_DEVICES", ("cpu",))
    _, packed = tower_pair(depth=4, fullatt=(3,))
    pixels, grid = inputs(SIZES["batch of different sizes"][:4])
    with torch.no_grad():
        packed(pixels, grid_thw=grid)
    assert len(sdpa_calls) == 4


def test_ragged_blocks_on_the_cpu_take_fewer_calls_than_windows(sdpa_calls):
    reference, packed = tower_pair(depth=1, fullatt=())
    pixels, grid = inputs([(1, 22, 14)])  # 6 × 4 windows, the last row and column narrower
    with torch.no_grad():
        reference(pixels, grid_thw=grid)
        windows = len(sdpa_calls)
        sdpa_calls.clear()
        packed(pixels, grid_thw=grid)
    assert windows == 24
    # Rows 1-5 of windows: a run of three full windows, then the narrow one; the narrow one of
    # row 5 has the length of row 6's first three (both 2 merged patches) and joins them: 11 runs.
    assert len(sdpa_calls) == 11


def test_gradients_equal_transformers(strategy):
    """Training backpropagates through the packed call: same gradients on the tower's weights."""
    reference, packed = tower_pair()
    pixels, grid = inputs(SIZES["batch of different sizes"])
    grads = []
    for tower in (reference, packed):
        tower.train()
        tower.zero_grad()
        out = tower(pixels, grid_thw=grid).pooler_output
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append({n: p.grad.clone() for n, p in tower.named_parameters()})
    for name, want in grads[0].items():
        torch.testing.assert_close(grads[1][name], want, rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")


def test_switching_back_to_transformers_and_models_without_a_tower():
    reference, packed = tower_pair()
    assert set_vision_attention(packed, "transformers") == 1
    assert packed.config._attn_implementation == "sdpa"
    assert set_vision_attention(torch.nn.Linear(2, 2), "packed") == 0
    with pytest.raises(ValueError, match="vision_attention='fast'"):
        set_vision_attention(packed, "fast")


def test_eager_tower_is_left_alone():
    tower = make_tower()
    tower.config._attn_implementation = "eager"  # asked for to see attention weights
    assert set_vision_attention(tower, "packed") == 0
    assert tower.config._attn_implementation == "eager"


def tiny_batch(processor):
    from PIL import Image

    from scenefit.student.chat import chat_messages

    images = [Image.new("RGB", (112, 84), (200, 30, 30)), Image.new("RGB", (140, 112), (30, 200, 30))]
    text = processor.apply_chat_template(chat_messages("Where is it?"), tokenize=False, add_generation_prompt=True)
    return processor(text=[text, text], images=images, return_tensors="pt", padding=True)


def test_load_model_installs_it_for_the_tower_only_and_logits_are_unchanged(tiny_model_dir, tmp_path):
    from scenefit.models.loading import load_model, load_processor

    packed = load_model(tiny_model_dir, dtype="fp32", device="cpu")
    plain = load_model(tiny_model_dir, dtype="fp32", device="cpu", vision_attention="transformers")
    assert packed.config.vision_config._attn_implementation == PACKED_ATTENTION
    assert packed.config.text_config._attn_implementation == "sdpa"
    assert plain.config.vision_config._attn_implementation == "sdpa"
    batch = tiny_batch(load_processor(tiny_model_dir))
    with torch.no_grad():
        torch.testing.assert_close(packed(**batch).logits, plain(**batch).logits, rtol=1e-5, atol=1e-5)
    # A saved folder names no scenefit attention: it loads anywhere.
    packed.save_pretrained(tmp_path / "saved")
    assert PACKED_ATTENTION not in json.dumps(json.loads((tmp_path / "saved" / "config.json").read_text()))


def test_load_model_refuses_an_unknown_setting_before_loading(tmp_path):
    from scenefit.models.loading import load_model

    with pytest.raises(ValueError, match="vision_attention='windows' is not one of packed, transformers"):
        load_model(tmp_path / "no-model-here", device="cpu", vision_attention="windows")
