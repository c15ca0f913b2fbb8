"""The tiny model's vision pretraining (the demo's stand-in for a pretrained ViT) and the
students' chat layout that lets a small student read image rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from scenefit.prompts import student_image_after_text
from scenefit.student.chat import StudentChat
from scenefit.testbed.catalog import BOX_RED
from scenefit.testbed.tiny_vision import (
    _BOTTOM,
    _GROUND,
    _HEIGHT,
    _RATIO,
    _SCENE,
    BITS,
    HEIGHT_EDGES,
    PERSON_RATIO_EDGES,
    SCENE_TYPES,
    TARGETS_PER_TOKEN,
    scene_geometry,
    token_targets,
)


def scene_with_box(box, size=112):
    img = Image.new("RGB", (size, size), (120, 200, 255))
    ImageDraw.Draw(img).rectangle(box, outline=BOX_RED, width=2)
    return img


def layout(box, scene="farm", horizon=56, person=(90, 70, 98, 88)):
    """The parts of a world layout the targets read (box corners x1/y1 exclusive, as the world's)."""
    x0, y0, x1, y1 = box
    return {"scene": scene, "horizon": horizon, "target": {"box": [x0, y0, x1 + 1, y1 + 1]},
            "references": [{"role": "reference", "box": list(person)}]}


def test_token_targets_locate_the_box_patch_by_patch():
    # A box inside the patch at row 5, col 2 (14 px patches): x 30..39, y 72..81.
    t = token_targets(scene_with_box([30, 72, 39, 81]), (8, 8), layout([30, 72, 39, 81]))
    assert t.shape == (16, TARGETS_PER_TOKEN)
    # patch (5, 2) -> merged token (2, 1) = index 9, its bottom-left patch (sub-index 2)
    hit = np.argwhere(t[:, :BITS] > 0.5).tolist()
    assert hit == [[9, 2]]
    # the image-level one-hots are the same on every token
    assert (t[:, _HEIGHT] == t[0, _HEIGHT]).all() and t[:, _HEIGHT].sum(1).tolist() == [1.0] * 16
    assert int(t[0, _HEIGHT].argmax()) == int(np.searchsorted(HEIGHT_EDGES, 10 / 112))
    assert int(t[0, _BOTTOM].argmax()) == 81 * 8 // 112
    assert SCENE_TYPES[int(t[0, _SCENE].argmax())] == "farm"
    # 10 px tall next to an 18 px person; its bottom (row 81) below the ground line (row 56)
    assert int(t[0, _RATIO].argmax()) == int(np.searchsorted(PERSON_RATIO_EDGES, 10 / 18))
    assert int(t[0, _GROUND].argmax()) == 1
    # mean colours are in [0, 1]; the sky colour dominates every cell
    assert np.allclose(t[0, BITS + 1 : BITS + 4], np.array([120, 200, 255]) / 255.0)


def test_token_targets_tall_and_low_boxes_land_in_other_bins():
    short_high = token_targets(scene_with_box([10, 5, 20, 15]), (8, 8), layout([10, 5, 20, 15], "beach"))
    tall_low = token_targets(scene_with_box([10, 50, 40, 108]), (8, 8), layout([10, 50, 40, 108], "beach"))
    assert tall_low[0, _HEIGHT].argmax() > short_high[0, _HEIGHT].argmax()
    assert tall_low[0, _BOTTOM].argmax() == 7 and short_high[0, _BOTTOM].argmax() == 1
    assert tall_low[0, _RATIO].argmax() > short_high[0, _RATIO].argmax()
    assert tall_low[0, _GROUND].argmax() == 1 and short_high[0, _GROUND].argmax() == 0
    with pytest.raises(ValueError, match="merge size"):
        token_targets(scene_with_box([1, 1, 5, 5]), (7, 8), layout([1, 1, 5, 5], "beach"))


def test_scene_geometry_reads_the_world_s_own_layouts():
    """Height relative to the person and the side of the ground line, on drawn world layouts."""
    from scenefit.testbed.world import WorldConfig, iter_layouts

    seen = set()
    for lay, _ in iter_layouts(WorldConfig(n=80, seed=3, originals=False)):
        ratio_bin, ground = scene_geometry(lay)
        t = lay["target"]
        assert ground == (0 if t["placement"] == "sky" else 1), lay["id"]
        assert ratio_bin == int(np.searchsorted(PERSON_RATIO_EDGES, t["height_ratio"])), lay["id"]
        seen.add(t["size_class"])
    assert seen == {"small", "normal", "big"}


def test_vision_pretraining_teaches_the_tower_to_see_the_box(tmp_path, torch_one_thread):
    """A short pretraining beats both the random tower and the majority class on held-out
    images, and the saved folder records it."""
    from scenefit.testbed.tiny_model import TinyModelConfig, build_tiny_model

    cfg = TinyModelConfig(vision_pretrain_steps=120, vision_pretrain_images=240, vision_pretrain_lr=5e-3)
    out = build_tiny_model(tmp_path / "m", cfg)
    record = json.loads((out / "scenefit_tiny.json").read_text())
    vp = record["vision_pretraining"]
    assert vp["box_patch_accuracy_after"] > vp["box_patch_accuracy_before"] + 0.1
    assert vp["box_patch_accuracy_after"] > vp["box_patch_majority"]
    assert "vision tower pretrained" in record["note"]
    for key in ("box_height_bin", "person_ratio_bin", "ground_line"):  # the geometry is measured too
        assert 0.0 <= vp[f"{key}_accuracy_before"] <= 1.0 and 0.0 <= vp[f"{key}_accuracy_after"] <= 1.0


def _drawing_only(layout: dict) -> dict:
    """A layout without what the world decided (truth, size class, placement, flying, homes): only
    what was drawn where."""
    kept = {k: v for k, v in layout.items() if k != "truth"}
    kept["target"] = {"category": layout["target"]["category"], "box": layout["target"]["box"]}
    return kept


def test_vision_pretraining_sees_only_its_own_pictures_and_their_drawing(tmp_path, monkeypatch, torch_one_thread):
    """The tower's pictures come from a world of its own seed, and its targets need nothing but the
    drawing: with every truth and size class taken out of the layouts, it trains the same."""
    import scenefit.testbed.world as world
    from scenefit.models.loading import load_processor
    from scenefit.testbed.tiny_model import TinyModelConfig, build_tiny_model
    from scenefit.testbed.tiny_vision import pretrain_vision

    drawn = []
    real_draw = world.draw_pictures

    def spy_draw(cfg):
        drawn.append(cfg)
        return [(im, _drawing_only(lay)) for im, lay in real_draw(cfg)]

    monkeypatch.setattr(world, "draw_pictures", spy_draw)
    out = build_tiny_model(tmp_path / "m", TinyModelConfig())
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(out))
    record = pretrain_vision(model, load_processor(out).image_processor, steps=2, images=24, seed=321,
                             batch_size=4, progress=False)
    assert [c.seed for c in drawn] == [321] and not drawn[0].originals
    assert record["steps"] == 2 and 0.0 <= record["ground_line_accuracy_after"] <= 1.0


def test_student_chat_puts_the_image_right_before_the_answer(tiny_model_dir):
    """The decision token sits at the same distance from the image whatever the object's
    name (whose token count varies) — the point of the after-text layout."""
    from scenefit.models.loading import load_processor

    assert student_image_after_text()
    proc = load_processor(tiny_model_dir)
    tok = proc.tokenizer
    gaps = set()
    for name in ("cow", "fire hydrant", "refrigerator"):
        chat = StudentChat.packaged()
        msgs = chat.messages(chat.request("location", name))
        text = proc.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        assert text.index("<|vision_start|>") > text.index(f"marks a {name}")
        ids = tok(text)["input_ids"]
        gaps.add(len(ids) - ids.index(tok.convert_tokens_to_ids("<|vision_end|>")))
    assert len(gaps) == 1
