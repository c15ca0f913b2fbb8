"""Knowledge pretraining of the tiny language model: what it is taught (the catalog only, never a
demo sample, label, student prompt or answer), and that it learns it on held-out pictures.

    .venv/bin/python -m pytest tests/e2e/test_tiny_knowledge.py -q
"""

from __future__ import annotations

import json

import pytest

from scenefit.testbed.catalog import CATEGORIES, SCENES, home_categories
from scenefit.testbed.tiny_knowledge import box_caption, box_ratio, caption, text_facts

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_the_facts_are_the_catalog_s():
    facts = text_facts()
    for c in CATEGORIES.values():
        belongs = next(f for f in facts if f.lower().startswith(("a " + c.name, "an " + c.name)) and " belongs " in f)
        for s in SCENES.values():
            assert (s.place in belongs) == (s.name in c.home), (c.name, s.name, belongs)
        assert any(c.name in f and ("can be up" if c.flying else "cannot be up") in f for f in facts)
        assert any(c.name in f and f"{c.height:.1f} times as tall as a person" in f for f in facts)
    import random

    cap = caption("kitchen", random.Random(0))
    assert cap.startswith("This picture shows a kitchen.") and set(home_categories("kitchen")) == {"refrigerator", "oven", "chair"}
    assert all(name in cap for name in home_categories("kitchen"))


def test_box_captions_describe_the_drawing_never_a_judgement():
    """Where the box is and how tall its content is next to the person, read off the world's own
    layouts: a floating cow and a bird in the sky are both "up in the sky"; no caption says
    whether that is right."""
    import random

    from scenefit.testbed.world import WorldConfig, iter_layouts

    seen = set()
    for lay, _ in iter_layouts(WorldConfig(n=120, seed=5, originals=False)):
        text = box_caption(lay)
        t, scene = lay["target"], SCENES[lay["scene"]]
        where = f"up in the {scene.sky_word}" if t["placement"] == "sky" else f"on the {scene.ground_word}"
        assert text.startswith(f"The red box is {where}."), (lay["id"], text)
        assert abs(box_ratio(lay) - t["height_ratio"]) <= 0.05 and f"{box_ratio(lay):.1f} times as tall" in text
        assert not any(w in text.lower() for w in ("context", "decision", "belong", "wrong", "too "))
        full = caption(lay["scene"], random.Random(0), lay)
        assert full.startswith(f"This picture shows a {lay['scene']}.") and full.endswith(text)
        seen.add((t["placement"], t["size_class"]))
    assert {p for p, _ in seen} == {"sky", "ground"} and {c for _, c in seen} == {"small", "normal", "big"}


def test_pretraining_sees_only_its_own_pictures_and_no_decision(tiny_model_dir, monkeypatch):
    """The pictures come from a world of the pretraining's own seed; no text it trains on holds a
    decision, a label or a chat turn (the students' LoRA must still learn every decision)."""
    import scenefit.testbed.world as world
    from scenefit.models.loading import load_model, load_processor
    from scenefit.testbed.tiny_knowledge import pretrain_language

    drawn, texts = [], []
    real_draw = world.draw_pictures

    def spy_draw(cfg):  # only what was drawn where: no truth, size class or placement to read
        drawn.append(cfg)
        out = []
        for im, lay in real_draw(cfg):
            lay = {k: v for k, v in lay.items() if k != "truth"}
            lay["target"] = {"category": lay["target"]["category"], "box": lay["target"]["box"]}
            out.append((im, lay))
        return out

    monkeypatch.setattr(world, "draw_pictures", spy_draw)
    processor = load_processor(tiny_model_dir)
    real_call = type(processor).__call__

    def spy_call(self, *args, **kwargs):
        texts.extend(kwargs.get("text") or [])
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(type(processor), "__call__", spy_call)
    model = load_model(tiny_model_dir, dtype="fp32", device="cpu")
    pretrain_language(model, processor, steps=2, images=24, seed=123, batch_size=4)
    assert [c.seed for c in drawn] == [123] and not drawn[0].originals
    assert texts and not any(w in t for t in texts for w in ("Decision", "In-context", "Out-of-context", "<|im_start|>"))


def test_knowledge_pretraining_is_learned_on_held_out_pictures_and_recorded(tmp_path):
    from scenefit.testbed.tiny_model import TinyModelConfig, build_tiny_model

    out = build_tiny_model(tmp_path / "m", TinyModelConfig(seed=0, knowledge_pretrain_steps=120,
                                                           knowledge_pretrain_images=160))
    record = json.loads((out / "scenefit_tiny.json").read_text())
    k = record["knowledge_pretraining"]
    assert k["steps"] == 120 and k["held_out_pictures"] == 20
    # the scene is read off held-out pictures far better than before and than the commonest scene
    assert k["scene_accuracy_after"] > max(k["scene_accuracy_before"], k["scene_majority"]) + 0.2
    assert k["at_home_accuracy_after"] > k["at_home_accuracy_before"]
    # what the red box shows is measured on held-out pictures too (this random tower cannot show it
    # in 120 steps; the demo's pretrained one does: docs/demo-results.md)
    for key in ("box_ground_line_accuracy", "box_height_ratio_within_0.2"):
        assert 0.0 <= k[f"{key}_before"] <= 1.0 and 0.0 <= k[f"{key}_after"] <= 1.0
    assert "pretrained on the synthetic world's catalog" in record["note"]
