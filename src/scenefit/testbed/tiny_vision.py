"""Perception pretraining of the tiny model's vision tower (the demo's stand-in for a real
base model's pretrained ViT).

    scenefit tiny-model runs/demo/model --config demo     # vision_pretrain_steps > 0

Why: a real Qwen2.5-VL-3B student starts from a vision tower that already sees; LoRA then only
adapts the language model. A tiny *random* tower does not see a thin red outline: its random
patch embedding spreads "some red pixels somewhere in this 14 px patch" over unrelated
directions (a linear probe of its 16 output tokens finds the box barely above the majority
class), and the LoRA students cannot learn what their inputs do not carry.

What it learns, from the pixels and the world's own drawing of each picture: for each image
token (a 2×2 group of patches), which of its four patches contain the box colour (pure red, which
nothing else in the synthetic world uses), how much of the token's cell is box colour and the
cell's mean colour; for the whole picture, how tall the box is and where its bottom edge lies
(bins, as a grounding answer would give the box's coordinates), how tall it is next to the scene's
reference person and whether its bottom edge lies above or below the ground line (as a grounding
model compares two boxes, or a box with the horizon), and which kind of place the image shows (as
an image classifier would; the world's six scene types). Without the last two geometric targets
the tower's features carried size and location only as far as a linear probe could read them at
0.72 and 0.91 balanced accuracy on the demo's test split (docs/demo-results.md). The images are a
synthetic world drawn with the tiny model's own seed (``vision_pretrain_seed``), never the demo's
samples, and no in/out label, teacher answer or prompt is involved. A temporary linear head reads
the targets from the merger's output and is thrown away; the language model is not touched.
SYNTHETIC: a test-bed device, documented in
the model folder's ``scenefit_tiny.json``.
"""

from __future__ import annotations

import random
from typing import Optional

import numpy as np

from scenefit.core.progress import Progress
from scenefit.testbed.catalog import BOX_RED, SCENES

#: Box height bins, as fractions of the image side (log-spaced; bin 0 also means "no box").
HEIGHT_EDGES = (0.06, 0.09, 0.12, 0.16, 0.21, 0.28, 0.37)
BITS = 4  # box colour in each of the token's 2x2 patches
HEIGHT_BINS = len(HEIGHT_EDGES) + 1
#: Box bottom-edge bins: eighths of the image height.
BOTTOM_BINS = 8
SCENE_TYPES = tuple(SCENES)
#: Bins of the boxed thing's height relative to the scene's reference person (log-spaced; as a
#: grounding model compares two boxes it has found).
PERSON_RATIO_EDGES = (0.3, 0.45, 0.6, 0.75, 0.9, 1.05, 1.25, 1.6, 2.0, 2.6)
RATIO_BINS = len(PERSON_RATIO_EDGES) + 1
#: Where the box's bottom edge lies against the scene's ground line (the horizon row):
#: 0 above it (in the sky / on the wall), 1 on or below it (on the ground / the floor).
GROUND_BINS = 2
#: Per image token: the 4 bits, the box-colour fraction of its cell (times RED_SCALE), its mean
#: R, G, B, then the image's box height bin, box bottom bin, scene type, box height relative to
#: the person and box bottom against the ground line (one-hots, the same on every token).
TARGETS_PER_TOKEN = BITS + 1 + 3 + HEIGHT_BINS + BOTTOM_BINS + len(SCENE_TYPES) + RATIO_BINS + GROUND_BINS
_AMOUNTS = slice(BITS, BITS + 4)  # box-colour fraction of the cell, mean R, G, B
_HEIGHT = slice(_AMOUNTS.stop, _AMOUNTS.stop + HEIGHT_BINS)
_BOTTOM = slice(_HEIGHT.stop, _HEIGHT.stop + BOTTOM_BINS)
_SCENE = slice(_BOTTOM.stop, _BOTTOM.stop + len(SCENE_TYPES))
_RATIO = slice(_SCENE.stop, _SCENE.stop + RATIO_BINS)
_GROUND = slice(_RATIO.stop, TARGETS_PER_TOKEN)
_ONE_HOTS = (_HEIGHT, _BOTTOM, _SCENE, _RATIO, _GROUND)
#: A 2 px outline fills little of a cell; scaled so the fraction spans a useful part of [0, 1].
RED_SCALE = 4.0


def scene_geometry(layout: dict) -> tuple[int, int]:
    """From a picture's layout (what the world drew): the bins of the boxed thing's height
    relative to the reference person and of its bottom edge against the ground line."""
    x0, y0, x1, y1 = layout["target"]["box"]
    person = next(r["box"] for r in layout["references"] if r["role"] == "reference")
    ratio = (y1 - y0) / max(1, person[3] - person[1])
    return int(np.searchsorted(PERSON_RATIO_EDGES, ratio)), int(y1 > int(layout["horizon"]))


def token_targets(image, grid_hw: tuple[int, int], layout: dict, patch: int = 14, merge: int = 2) -> np.ndarray:
    """Per-token perception targets of one image, in the merger's output order (row-major
    over merged tokens).

    ``grid_hw`` is the processor's patch grid (height, width); the image is resized to exactly
    that many patches, as the processor does. ``layout`` is the picture's layout (scene type,
    horizon, reference person, target box: :func:`scene_geometry`). Returns
    ``(tokens, TARGETS_PER_TOKEN)`` floats in [0, 1].
    """
    gh, gw = grid_hw
    if gh % merge or gw % merge:
        raise ValueError(f"patch grid {grid_hw} is not a multiple of the merge size {merge}")
    img = image.convert("RGB")
    if img.size != (gw * patch, gh * patch):
        img = img.resize((gw * patch, gh * patch))
    a = np.asarray(img, dtype=np.int16)
    red = np.all(a == np.array(BOX_RED, dtype=np.int16), axis=-1)
    per_patch = red.reshape(gh, patch, gw, patch).any(axis=(1, 3))  # (gh, gw)
    th, tw = gh // merge, gw // merge
    bits = per_patch.reshape(th, merge, tw, merge).transpose(0, 2, 1, 3).reshape(th * tw, merge * merge)
    cell = patch * merge
    colour = a.reshape(th, cell, tw, cell, 3).mean(axis=(1, 3)).reshape(th * tw, 3) / 255.0
    local = np.clip(red.reshape(th, cell, tw, cell).mean(axis=(1, 3)).reshape(th * tw, 1) * RED_SCALE, 0.0, 1.0)
    rows = np.flatnonzero(red.any(axis=1))
    height = (rows[-1] - rows[0] + 1) / red.shape[0] if rows.size else 0.0
    height_bin = np.zeros((th * tw, HEIGHT_BINS))
    height_bin[:, int(np.searchsorted(HEIGHT_EDGES, height))] = 1.0
    bottom_bin = np.zeros((th * tw, BOTTOM_BINS))
    bottom_bin[:, min(BOTTOM_BINS - 1, int(rows[-1] * BOTTOM_BINS // red.shape[0])) if rows.size else 0] = 1.0
    scene_type = np.zeros((th * tw, len(SCENE_TYPES)))
    scene_type[:, SCENE_TYPES.index(layout["scene"])] = 1.0
    ratio, ground = scene_geometry(layout)
    ratio_bin = np.zeros((th * tw, RATIO_BINS))
    ratio_bin[:, ratio] = 1.0
    ground_bin = np.zeros((th * tw, GROUND_BINS))
    ground_bin[:, ground] = 1.0
    return np.concatenate([bits, local, colour, height_bin, bottom_bin, scene_type, ratio_bin, ground_bin],
                          axis=1).astype(np.float32)


def _vision_features(visual, pixel_values, grid_thw):
    out = visual(pixel_values, grid_thw=grid_thw)
    pooled = getattr(out, "pooler_output", None)  # transformers 5: merged tokens live here
    return pooled if pooled is not None else out


def pretrain_vision(
    model,
    image_processor,
    steps: int,
    images: int = 1600,
    seed: int = 7,
    lr: float = 1e-3,
    batch_size: int = 32,
    image_size: int = 112,
    progress: Optional[Progress] = None,
) -> dict[str, float]:
    """Train ``model``'s vision tower in place on :func:`token_targets`; return held-out
    box-patch accuracy (and its majority-class rate) and the exact-bin accuracies of the box's
    height, its height next to the person and its side of the ground line, before and after, for
    the record."""
    import torch

    from scenefit.testbed.world import WorldConfig, draw_pictures

    if steps <= 0:
        raise ValueError("pretrain_vision: steps must be positive")
    held_out = min(200, max(1, images // 8))
    cfg = WorldConfig(n=images, seed=seed, image_size=image_size, originals=False,
                      violation_rates={"location": 0.5, "size": 0.5, "co_occurrence": 0.5})
    pixels, grids, targets = [], [], []
    for im, layout in draw_pictures(cfg):
        enc = image_processor(images=[im], return_tensors="pt")
        _, gh, gw = (int(v) for v in enc["image_grid_thw"][0])
        pixels.append(enc["pixel_values"])
        grids.append(enc["image_grid_thw"])
        targets.append(torch.from_numpy(token_targets(im, (gh, gw), layout)))

    visual = model.model.visual
    head = torch.nn.Linear(model.config.text_config.hidden_size, TARGETS_PER_TOKEN)
    opt = torch.optim.AdamW(list(visual.parameters()) + list(head.parameters()), lr=lr)
    # a tenth of the steps warming up to ``lr``, then a cosine decay: a higher peak learns the
    # box's height and ground line in fewer steps than a constant rate
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    train, val = list(range(len(pixels) - held_out)), list(range(len(pixels) - held_out, len(pixels)))

    def forward(idx):
        feats = _vision_features(visual, torch.cat([pixels[i] for i in idx]), torch.cat([grids[i] for i in idx]))
        pred = head(feats).reshape(-1, TARGETS_PER_TOKEN)
        target = torch.cat([targets[i] for i in idx])
        F = torch.nn.functional
        bits = F.binary_cross_entropy_with_logits(pred[:, :BITS], target[:, :BITS])
        amounts = F.mse_loss(torch.sigmoid(pred[:, _AMOUNTS]), target[:, _AMOUNTS])
        one_hots = sum(F.cross_entropy(pred[:, part], target[:, part].argmax(-1)) for part in _ONE_HOTS)
        return bits + 10.0 * amounts + one_hots, pred, target

    def box_accuracy() -> tuple[float, ...]:
        with torch.no_grad():
            _, pred, target = forward(val)
        bits = ((pred[:, :BITS] > 0) == (target[:, :BITS] > 0.5)).float().mean()
        return (float(bits), *(float((pred[:, part].argmax(-1) == target[:, part].argmax(-1)).float().mean())
                               for part in (_HEIGHT, _RATIO, _GROUND)))

    visual.train()
    before = box_accuracy()
    rng = random.Random(seed)
    bar = (progress or Progress(enabled=False)).bar("vision pretraining", steps, unit="step")
    for _ in range(steps):
        loss, _, _ = forward(rng.sample(train, min(batch_size, len(train))))
        loss.backward()
        opt.step()
        opt.zero_grad()
        schedule.step()
        bar.note(loss=f"{loss.item():.4f}")
        bar.advance()
    bar.close()
    after = box_accuracy()
    majority = float(1.0 - torch.cat([targets[i] for i in val])[:, :BITS].mean())
    visual.eval()
    record = {"box_patch_accuracy_before": round(before[0], 4), "box_patch_accuracy_after": round(after[0], 4),
              "box_patch_majority": round(majority, 4)}
    for i, name in enumerate(("box_height_bin", "person_ratio_bin", "ground_line"), 1):
        record[f"{name}_accuracy_before"], record[f"{name}_accuracy_after"] = round(before[i], 4), round(after[i], 4)
    return {**record, "steps": steps, "images": images, "seed": seed}
