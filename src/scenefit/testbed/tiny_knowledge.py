"""Knowledge pretraining of the tiny model's language model (the demo's stand-in for what a real
base model knows about the world before any student is trained).

    scenefit tiny-model runs/demo/model --config demo     # knowledge_pretrain_steps > 0

Why: a real Qwen2.5-VL-3B knows that cows live on farms and ovens stand in kitchens; a random
tiny language model knows nothing, so its co-occurrence student has to learn a 16 × 6 table of
where things belong from a few hundred demo rows (it did not). This gives the tiny base that
knowledge the way pretraining gives it to a real one — from the synthetic world's **catalog
only**, never the demo's samples, images, teacher answers or labels:

- text facts: where each category belongs (its home scene types) and where it does not, whether
  it can be up in the air, and its typical height relative to a person;
- image-grounded captions of the world's own kind of pictures, drawn with this model's own seed
  (``knowledge_pretrain_seed``): which kind of place the picture shows and which things are at
  home there (perception plus the catalog, as a captioning corpus would teach a real model), and
  what the red box shows — up in the sky (or on the wall) or on the ground, and how tall its
  content is next to the picture's person — read off the world's own drawing of that picture, as
  a grounding corpus describes boxes. A caption states where and how tall, never whether that is
  right for the thing: the students still learn every judgement.

The vision tower stays as it is (frozen); the whole language model learns. What it learned is
measured on held-out pictures and recorded in the model folder's ``scenefit_tiny.json``. No in/out
decision, student prompt or answer format is involved: each student's LoRA still has to learn
its decision. SYNTHETIC: a test-bed device.
"""

from __future__ import annotations

import random
from typing import Optional

from scenefit.core.progress import Progress
from scenefit.testbed.catalog import CATEGORIES, SCENES, article, home_categories, plural

IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


def _names(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def text_facts() -> list[str]:
    """Every fact of the catalog, as short English sentences."""
    facts = []
    for c in CATEGORIES.values():
        homes = [SCENES[s].place for s in c.home]
        away = [SCENES[s].place for s in SCENES if s not in c.home]
        facts.append(f"{article(c.name).capitalize()} belongs {_names(homes)}.")
        facts.append(f"{plural(c.name).capitalize()} are at home {_names(homes)}.")
        for place in away:
            facts.append(f"{article(c.name).capitalize()} does not belong {place}.")
        facts.append(f"{article(c.name).capitalize()} {'can' if c.flying else 'cannot'} be up in the sky.")
        facts.append(f"{article(c.name).capitalize()} is about {c.height:.1f} times as tall as a person.")
    for s in SCENES.values():
        facts.append(f"{s.place.capitalize()} you find {_names([article(n) for n in home_categories(s.name)])}.")
    return facts


def box_ratio(layout: dict) -> float:
    """Height of the boxed thing relative to the picture's reference person, to one decimal."""
    _, y0, _, y1 = layout["target"]["box"]
    person = next(r["box"] for r in layout["references"] if r["role"] == "reference")
    return round((y1 - y0) / max(1, person[3] - person[1]), 1)


def box_caption(layout: dict) -> str:
    """Where the red box is against the ground line and how tall its content is next to the
    person — what the picture shows, read off the world's own drawing (no judgement)."""
    scene = SCENES[layout["scene"]]
    above = layout["target"]["box"][3] <= int(layout["horizon"])
    where = f"up in the {scene.sky_word}" if above else f"on the {scene.ground_word}"
    return f"The red box is {where}. It is {box_ratio(layout):.1f} times as tall as the person."


def caption(scene: str, rng: random.Random, layout: dict | None = None) -> str:
    """One caption of a picture of ``scene``: the place, then what is at home there (and, with the
    picture's ``layout``, where its red box is and how tall its content is: :func:`box_caption`)."""
    things = home_categories(scene)
    rng.shuffle(things)
    text = f"This picture shows a {scene}. At home here: {', '.join(things)}."
    return text + " " + box_caption(layout) if layout is not None else text


def pretrain_language(
    model,
    processor,
    steps: int,
    images: int = 600,
    seed: int = 11,
    lr: float = 1e-3,
    batch_size: int = 16,
    image_size: int = 112,
    progress: Optional[Progress] = None,
) -> dict[str, float]:
    """Train ``model``'s language model in place on the catalog's facts and captions of pictures
    of its own seed; return held-out scene and at-home accuracies before and after."""
    import torch

    from scenefit.testbed.world import WorldConfig, draw_pictures

    if steps <= 0:
        raise ValueError("pretrain_language: steps must be positive")
    tok = processor.tokenizer
    rng = random.Random(seed)
    facts = text_facts()
    # every kind of target in equal measure: standing and up in the air, small, normal and big
    world = WorldConfig(n=images, seed=seed, image_size=image_size, originals=False,
                        violation_rates={"location": 0.5, "size": 0.5, "co_occurrence": 0.5})
    pictures = list(draw_pictures(world))
    held_out = pictures[-max(1, len(pictures) // 8):]
    train = pictures[: len(pictures) - len(held_out)]

    def batch(texts: list[str], pics: list) -> dict:
        enc = processor(text=texts, images=pics or None, return_tensors="pt", padding=True)
        labels = enc["input_ids"].clone()
        labels[enc["attention_mask"] == 0] = -100
        for special in ("<|image_pad|>", "<|vision_start|>", "<|vision_end|>"):
            labels[labels == tok.convert_tokens_to_ids(special)] = -100
        enc["labels"] = labels
        return enc

    def step_batch() -> dict:
        n_pic = batch_size // 2
        pics = rng.sample(train, n_pic)
        texts = [IMAGE + " " + caption(layout["scene"], rng, layout) for _, layout in pics]
        # text facts ride along in the same sequences, after a caption (one padded batch)
        texts = [t + " " + " ".join(rng.sample(facts, 3)) for t in texts]
        return batch(texts, [p for p, _ in pics])

    def first_id(text: str) -> int:
        return tok.encode(text, add_special_tokens=False)[0]

    scene_ids = {s: first_id(f" {s}") for s in SCENES}
    category_ids = {c: first_id(f" {c}") for c in CATEGORIES}
    where_ids = [first_id(" on"), first_id(" up")]  # on the ground / up in the sky
    digit_ids = [tok.convert_tokens_to_ids(str(d)) for d in range(10)]

    def next_pick(texts: list[str], pics: list, ids: list[int]) -> list[int]:
        enc = processor(text=texts, images=pics, return_tensors="pt", padding=True)
        return model(**enc).logits[:, -1, ids].argmax(-1).tolist()

    def held_out_accuracy() -> tuple[float, ...]:
        """On held-out pictures: is the scene the likeliest place word after "This picture shows a",
        is the likeliest thing after "... At home here:" one that belongs there, is the likelier of
        "on"/"up" after "The red box is" right, and is the height ratio read after "It is" within
        0.2 of the drawn one (its units digit, then its tenths given the true units)?"""
        right = [0, 0, 0, 0]
        scenes, cats = list(scene_ids), list(category_ids)
        with torch.no_grad():
            for i in range(0, len(held_out), 16):
                chunk = held_out[i : i + 16]
                pics = [p for p, _ in chunk]
                lays = [lay for _, lay in chunk]
                pick = next_pick([IMAGE + " This picture shows a" for _ in chunk], pics, list(scene_ids.values()))
                right[0] += sum(scenes[k] == lay["scene"] for k, lay in zip(pick, lays))
                heads = [IMAGE + f" This picture shows a {lay['scene']}. At home here:" for lay in lays]
                pick = next_pick(heads, pics, list(category_ids.values()))
                right[1] += sum(lay["scene"] in CATEGORIES[cats[k]].home for k, lay in zip(pick, lays))
                heads = [h + f" {', '.join(home_categories(lay['scene']))}. The red box is" for h, lay in zip(heads, lays)]
                pick = next_pick(heads, pics, where_ids)
                right[2] += sum(k == int(box_caption(lay).startswith("The red box is up")) for k, lay in zip(pick, lays))
                heads = [h + box_caption(lay)[len("The red box is"):].split(" It is")[0] + " It is " for h, lay in zip(heads, lays)]
                units = next_pick(heads, pics, digit_ids)
                tenths = next_pick([h + f"{int(box_ratio(lay))}." for h, lay in zip(heads, lays)], pics, digit_ids)
                right[3] += sum(abs(u + t / 10 - box_ratio(lay)) <= 0.2 + 1e-9 for u, t, lay in zip(units, tenths, lays))
        return tuple(r / len(held_out) for r in right)

    side, tok.padding_side = tok.padding_side, "left"
    visual = model.model.visual
    for p in visual.parameters():
        p.requires_grad_(False)
    params = [p for n, p in model.named_parameters() if not n.startswith("model.visual")]
    opt = torch.optim.AdamW(params, lr=lr)
    before = held_out_accuracy()
    model.train()
    bar = (progress or Progress(enabled=False)).bar("knowledge pretraining", steps, unit="step")
    for _ in range(steps):
        loss = model(**step_batch()).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        bar.note(loss=f"{loss.item():.4f}")
        bar.advance()
    bar.close()
    model.eval()
    for p in visual.parameters():
        p.requires_grad_(True)
    after = held_out_accuracy()
    tok.padding_side = side
    return {"scene_accuracy_before": round(before[0], 4), "scene_accuracy_after": round(after[0], 4),
            "scene_majority": round(max(sum(lay["scene"] == k for _, lay in held_out) for k in SCENES) / len(held_out), 4),
            "at_home_accuracy_before": round(before[1], 4), "at_home_accuracy_after": round(after[1], 4),
            "box_ground_line_accuracy_before": round(before[2], 4), "box_ground_line_accuracy_after": round(after[2], 4),
            "box_height_ratio_within_0.2_before": round(before[3], 4),
            "box_height_ratio_within_0.2_after": round(after[3], 4),
            "held_out_pictures": len(held_out), "steps": steps, "images": images, "seed": seed,
            "facts": len(facts)}
