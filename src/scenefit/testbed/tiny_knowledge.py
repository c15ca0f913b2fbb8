"""Knowledge pretraining of the tiny model's language model (the demo's stand-in for what a real
base model knows about the world before any student is trained).

    scenefit tiny-model runs/demo/model --config configs/demo.yaml     # knowledge_pretrain_steps > 0

Why: a real Qwen2.5-VL-3B knows that cows live on farms and ovens stand in kitchens; a random
tiny language model knows nothing, so its co-occurrence student has to learn a 16 × 6 table of
where things belong from a few hundred demo rows (it did not). This gives the tiny base that
knowledge the way pretraining gives it to a real one — from the synthetic world's **catalog
only**, never the demo's samples, images, teacher answers or labels:

- text facts: where each category belongs (its home scene types) and where it does not, whether
  it can be up in the air, and its typical height relative to a person;
- image-grounded captions of the world's own kind of pictures, drawn with this model's own seed
  (``knowledge_pretrain_seed``): which kind of place the picture shows and which things are at
  home there (perception plus the catalog, as a captioning corpus would teach a real model).

The vision tower stays as it is (frozen); the whole language model learns. What it learned is
measured on held-out pictures and recorded in the model folder's ``scenefit_tiny.json``. No in/out
decision, student prompt or answer format is involved: each student's LoRA still has to learn
its decision. SYNTHETIC: a test-bed device.
"""

from __future__ import annotations

import random

from scenefit.core.progress import progress_bar
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


def caption(scene: str, rng: random.Random) -> str:
    """One caption of a picture of ``scene``: the place, then what is at home there."""
    things = home_categories(scene)
    rng.shuffle(things)
    return f"This picture shows a {scene}. At home here: {', '.join(things)}."


def pretrain_language(
    model,
    processor,
    steps: int,
    images: int = 600,
    seed: int = 11,
    lr: float = 1e-3,
    batch_size: int = 16,
    image_size: int = 112,
    progress: bool = True,
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
    pictures = [(im, layout["scene"]) for im, layout in
                draw_pictures(WorldConfig(n=images, seed=seed, image_size=image_size, originals=False))]
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
        texts = [IMAGE + " " + caption(s, rng) for _, s in pics]
        # text facts ride along in the same sequences, after a caption (one padded batch)
        texts = [t + " " + " ".join(rng.sample(facts, 3)) for t in texts]
        return batch(texts, [p for p, _ in pics])

    scene_ids = {s: tok.encode(f" {s}", add_special_tokens=False)[0] for s in SCENES}
    category_ids = {c: tok.encode(f" {c}", add_special_tokens=False)[0] for c in CATEGORIES}

    def held_out_accuracy() -> tuple[float, float]:
        """On held-out pictures: is the scene the likeliest place word after "This picture shows a",
        and is the likeliest thing after "... At home here:" one that belongs there?"""
        scene_right = home_right = 0
        scenes, cats = list(scene_ids), list(category_ids)
        with torch.no_grad():
            for i in range(0, len(held_out), 16):
                chunk = held_out[i : i + 16]
                pics = [p for p, _ in chunk]
                enc = processor(text=[IMAGE + " This picture shows a" for _ in chunk], images=pics,
                                return_tensors="pt", padding=True)
                pick = model(**enc).logits[:, -1, list(scene_ids.values())].argmax(-1).tolist()
                scene_right += sum(scenes[k] == s for k, (_, s) in zip(pick, chunk))
                enc = processor(text=[IMAGE + f" This picture shows a {s}. At home here:" for _, s in chunk], images=pics,
                                return_tensors="pt", padding=True)
                pick = model(**enc).logits[:, -1, list(category_ids.values())].argmax(-1).tolist()
                home_right += sum(s in CATEGORIES[cats[k]].home for k, (_, s) in zip(pick, chunk))
        return scene_right / len(held_out), home_right / len(held_out)

    side, tok.padding_side = tok.padding_side, "left"
    visual = model.model.visual
    for p in visual.parameters():
        p.requires_grad_(False)
    params = [p for n, p in model.named_parameters() if not n.startswith("model.visual")]
    opt = torch.optim.AdamW(params, lr=lr)
    before = held_out_accuracy()
    model.train()
    bar = progress_bar(steps, progress, "knowledge pretraining", "step")
    for _ in range(steps):
        loss = model(**step_batch()).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if bar is not None:
            bar.set_postfix(loss=f"{loss.item():.4f}")
            bar.update()
    if bar is not None:
        bar.close()
    model.eval()
    for p in visual.parameters():
        p.requires_grad_(True)
    after = held_out_accuracy()
    tok.padding_side = side
    return {"scene_accuracy_before": round(before[0], 4), "scene_accuracy_after": round(after[0], 4),
            "scene_majority": round(max(sum(s == k for _, s in held_out) for k in SCENES) / len(held_out), 4),
            "at_home_accuracy_before": round(before[1], 4), "at_home_accuracy_after": round(after[1], 4),
            "held_out_pictures": len(held_out), "steps": steps, "images": images, "seed": seed,
            "facts": len(facts)}
