"""The embedded synthetic world: scenes with one boxed target object and known truth.

    scenefit synth --n 400 --out runs/demo/world            # the CLI (see cli/synth.py)

    from scenefit.testbed.world import WorldConfig, generate_world
    summary = generate_world(WorldConfig(n=400, seed=0), "runs/demo/world")

A *scene instance* (the group) is a background — scene type, horizon row, palette, a reference
person of stable size and one or two context objects that belong there. Each sample adds one
target object to it, drawn in a red box, with the truth per criterion decided first and then
made visible:

- location: a non-flying target standing on the ground (box bottom below the horizon) is
  in-context; one floating in the sky/on the wall (box bottom at least ``sky_gap`` above the
  horizon) is out-of-context. Flying categories (bird, kite, airplane) are in-context on the
  ground or in the sky, so location violations are always non-flying targets.
- size: the target's height is its category's normal height (relative to the person) times a
  factor from ``normal_factor`` (in-context), ``small_factor`` or ``big_factor`` (out).
- co-occurrence: the category's home scenes include the scene type (in) or not (out).

The three truths are drawn independently with the configured violation rates. Same config
and seed → byte-identical images, manifest and layouts. Outputs (``OUT/``): ``images/*.png``,
``manifest.parquet`` (normalised, exactly ``MANIFEST_COLUMNS``, synthetic=True),
``layout.jsonl`` (what was drawn, one line per sample; see :func:`sample_layout`),
``world.json`` (config, counts, rates, the SYNTHETIC notice) and ``originals/`` (per scene
instance, the unmodified background with one of its own context objects boxed — every
criterion in-context — for the shortcut test; same files inside).

One line of ``layout.jsonl`` (boxes ``[x0, y0, x1, y1]`` in pixels, x1/y1 exclusive)::

    id, group, scene, indoor, image_size, horizon (first ground row), sky_color, ground_color,
    box_color, box_width, original (bool), synthetic (true),
    truth: {location, size, co_occurrence: "In-context" | "Out-of-context"},
    references: [{category ("person" first, then context objects), role ("reference" |
                  "context"), box, placement ("ground"), flying}],
    target: {category, role ("target"), box, placement ("ground" | "sky"), flying,
             home_scenes, size_class ("normal" | "small" | "big"), size_factor,
             normal_height (px), height_ratio (target height / person height)}

Location violations are drawn as floating only (never as "embedded" in another object).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

from pydantic import Field, field_validator, model_validator

from scenefit import SYNTHETIC_NOTICE
from scenefit.core.config import StageConfig
from scenefit.core.criteria import CRITERIA, Criterion, Label, fuse
from scenefit.core.errors import ScenefitError
from scenefit.core.progress import Progress
from scenefit.core.records import Sample
from scenefit.testbed.catalog import BOX_RED, CATEGORIES, PERSON, PERSON_ASPECT, SCENES, home_categories

if TYPE_CHECKING:
    from PIL import Image

FORMAT_VERSION = 1
Range = tuple[float, float]


class WorldConfig(StageConfig):
    """Section ``world``: how the synthetic world is drawn."""

    n: int = Field(default=400, ge=1, le=1_000_000, description="Number of samples (boxed target objects) to draw.")
    seed: int = Field(default=0, description="Random seed; the same seed and config give byte-identical outputs.")
    image_size: int = Field(default=112, ge=56, le=1024, description="Side of the square images in pixels.")
    samples_per_group: int = Field(
        default=4, ge=1, le=256,
        description="Samples drawn on each scene instance (same background, different targets; one group id).",
    )
    violation_rates: dict[str, float] = Field(
        default_factory=lambda: {c.value: 0.3 for c in CRITERIA},
        description="Probability that a sample violates each criterion (keys: location, size, co_occurrence); "
        "drawn independently per criterion.",
    )
    scenes: list[str] = Field(
        default_factory=lambda: list(SCENES),
        description="Scene types to draw from: " + ", ".join(SCENES) + ".",
    )
    context_objects: tuple[int, int] = Field(
        default=(1, 2), description="Min and max number of context objects (categories at home there) per scene."
    )
    flying_in_sky_rate: float = Field(
        default=0.7, ge=0.0, le=1.0,
        description="Probability that a flying target (bird, kite, airplane) without a location violation is "
        "drawn in the sky rather than on the ground (both are in-context).",
    )
    person_height: float = Field(
        default=0.16, gt=0.05, le=0.5, description="Height of the reference person as a fraction of the image side."
    )
    normal_factor: Range = Field(
        default=(0.85, 1.15), description="Size factor range (times the category's normal height) of an in-context size."
    )
    small_factor: Range = Field(default=(0.25, 0.35), description="Size factor range of a too-small target.")
    big_factor: Range = Field(default=(2.4, 3.0), description="Size factor range of a too-big target.")
    horizon: Range = Field(
        default=(0.48, 0.52),
        description="Range of the horizon row as a fraction of the image height (sky above). Around 0.5 the "
        "horizon lies on the border of the image-token cells (28 px at 112), so a floating target's box "
        "lies in the upper cells and a standing target's bottom in the lower ones.",
    )
    sky_gap: float = Field(
        default=0.06, gt=0.0, lt=0.5,
        description="Least gap between the horizon and a floating target's bottom (above) or a standing target's "
        "bottom (below), as a fraction of the image side.",
    )
    palette_jitter: int = Field(
        default=8, ge=0, le=30, description="Per-channel random shift of a scene instance's sky and ground colours."
    )
    box_width: int = Field(default=2, ge=1, le=10, description="Width in pixels of the red box around the target.")
    originals: bool = Field(
        default=True, description="Also write originals/: each scene unmodified, one of its own objects boxed."
    )

    @field_validator("violation_rates")
    @classmethod
    def _rates(cls, v: dict[str, float]) -> dict[str, float]:
        out = {c.value: 0.3 for c in CRITERIA}
        for key, rate in v.items():
            try:
                crit = Criterion.parse(str(key))
            except ValueError as e:
                raise ValueError(f"violation_rates: {e}") from None
            if not 0.0 <= float(rate) <= 1.0:
                raise ValueError(f"violation_rates.{crit.value}={rate} is not a probability in [0, 1]")
            out[crit.value] = float(rate)
        return out

    @field_validator("scenes")
    @classmethod
    def _scenes(cls, v: list[str]) -> list[str]:
        unknown = [s for s in v if s not in SCENES]
        if unknown or not v:
            raise ValueError(f"unknown or no scene types {unknown}; known: {', '.join(SCENES)}")
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _geometry(self):
        for name in ("normal_factor", "small_factor", "big_factor", "horizon", "context_objects"):
            lo, hi = getattr(self, name)
            if lo > hi or lo < 0:
                raise ValueError(f"{name}: need 0 <= min <= max, got ({lo}, {hi})")
        if not (self.small_factor[1] < self.normal_factor[0] and self.normal_factor[1] < self.big_factor[0]):
            raise ValueError("size factor ranges must not touch: small < normal < big")
        if self.context_objects[0] < 1:
            raise ValueError("context_objects: at least one per scene (originals box one of them)")
        # A floating too-big target must fit between the top margin and the sky gap.
        tallest = max(c.height for c in CATEGORIES.values())
        need = self.big_factor[0] * tallest * self.person_height + self.sky_gap + _MARGIN
        if need > self.horizon[0]:
            raise ValueError(
                f"a floating too-big target needs the horizon at >= {need:.3f} of the image height, "
                f"but horizon starts at {self.horizon[0]}: lower big_factor/person_height/sky_gap or raise horizon"
            )
        return self

    def rate(self, criterion: Criterion) -> float:
        return self.violation_rates[Criterion(criterion).value]


_MARGIN = 0.02  # fraction of the side kept free at the image border


def _jitter(rng: random.Random, rgb, amount: int) -> list[int]:
    return [min(254, max(1, ch + rng.randint(-amount, amount))) for ch in rgb]


def _overlap(a, b) -> int:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(0, w) * max(0, h)


def _place_x(rng: random.Random, width: int, side: int, margin: int, avoid: list, y0: int, y1: int) -> int:
    """Left edge for a box of ``width``: the least overlap with ``avoid`` among a few draws."""
    hi = max(margin, side - margin - width)
    best, best_cost = margin, None
    for _ in range(12):
        x = rng.randint(margin, hi)
        cost = sum(_overlap((x, y0, x + width, y1), b) for b in avoid)
        if best_cost is None or cost < best_cost:
            best, best_cost = x, cost
        if cost == 0:
            break
    return best


def _ground_bottom(rng: random.Random, cfg: WorldConfig, horizon: int, below_height: int = 0) -> int:
    """Bottom row of an object standing on the ground.

    It is at least ``sky_gap`` below the horizon, so standing and floating bottoms are two gaps
    (about one image-token cell at 112 px) apart. With ``below_height`` the whole object stays
    under the horizon (reference and context objects): the sky holds nothing but the target.
    """
    s = cfg.image_size
    hi = s - max(1, round(_MARGIN * s))
    lo = horizon + max(2, round(cfg.sky_gap * s))
    return rng.randint(min(hi, max(lo, horizon + below_height + 1)), hi)


def _px(cfg: WorldConfig) -> dict[str, int]:
    s = cfg.image_size
    return {
        "margin": max(1, round(_MARGIN * s)),
        "person": round(cfg.person_height * s),
        "min_side": max(2 * cfg.box_width + 1, round(0.04 * s)),
        "gap": max(2, round(cfg.sky_gap * s)),
    }


def sample_background(cfg: WorldConfig, group_index: int) -> dict:
    """One scene instance: type, horizon, colours, the reference person and context objects."""
    rng = random.Random(f"scenefit-world/{cfg.seed}/group/{group_index}")
    s, px = cfg.image_size, _px(cfg)
    scene = SCENES[rng.choice(cfg.scenes)]
    horizon = round(rng.uniform(*cfg.horizon) * s)
    ph, pw = px["person"], max(2, round(px["person"] * PERSON_ASPECT))
    bottom = _ground_bottom(rng, cfg, horizon, ph)
    px0 = rng.choice([rng.randint(px["margin"], s // 4), rng.randint(3 * s // 4 - pw, s - px["margin"] - pw)])
    refs = [{"category": PERSON, "role": "reference", "box": [px0, bottom - ph, px0 + pw, bottom],
             "placement": "ground", "flying": False}]
    homes = home_categories(scene.name, flying=False)
    for _ in range(rng.randint(*cfg.context_objects)):
        cat = CATEGORIES[rng.choice(homes)]
        h = round(cat.height * ph)
        w = min(s - 2 * px["margin"], max(px["min_side"], round(h * cat.aspect)))
        b = _ground_bottom(rng, cfg, horizon, h)
        x0 = _place_x(rng, w, s, px["margin"], [r["box"] for r in refs], b - h, b)
        refs.append({"category": cat.name, "role": "context", "box": [x0, b - h, x0 + w, b],
                     "placement": "ground", "flying": False})
    return {
        "group": f"scene{group_index:05d}",
        "scene": scene.name,
        "indoor": scene.indoor,
        "image_size": s,
        "horizon": horizon,
        "sky_color": _jitter(rng, scene.sky, cfg.palette_jitter),
        "ground_color": _jitter(rng, scene.ground, cfg.palette_jitter),
        "box_color": list(BOX_RED),
        "box_width": cfg.box_width,
        "references": refs,
    }


def _target(category: str, box: list[int], placement: str, size_class: str, factor: float, normal: float,
            person_h: int) -> dict:
    cat = CATEGORIES[category]
    return {
        "category": category, "role": "target", "box": box, "placement": placement, "flying": cat.flying,
        "home_scenes": list(cat.home), "size_class": size_class, "size_factor": round(factor, 4),
        "normal_height": round(normal, 2), "height_ratio": round((box[3] - box[1]) / person_h, 4),
    }


def sample_layout(cfg: WorldConfig, background: dict, index: int) -> dict:
    """One sample on ``background``: its truth per criterion, then a target that shows it.

    The layout (one line of ``layout.jsonl``) is the background's keys plus ``id``, ``original``
    (False), ``truth`` {criterion: label} and ``target`` {category, box, placement
    ("ground"|"sky"), flying, home_scenes, size_class ("normal"|"small"|"big"), size_factor,
    normal_height (px), height_ratio (target height / person height)}.
    """
    rng = random.Random(f"scenefit-world/{cfg.seed}/sample/{index}")
    s, px = cfg.image_size, _px(cfg)
    scene, horizon = background["scene"], background["horizon"]
    truth = {c.value: (Label.OUT if rng.random() < cfg.rate(c) else Label.IN).value for c in CRITERIA}
    loc_out = truth[Criterion.LOCATION.value] == Label.OUT.value
    co_out = truth[Criterion.CO_OCCURRENCE.value] == Label.OUT.value
    candidates = [c for c in CATEGORIES.values()
                  if (scene in c.home) != co_out and not (loc_out and c.flying)]
    cat = rng.choice(candidates)
    person_h = background["references"][0]["box"][3] - background["references"][0]["box"][1]
    normal = cat.height * person_h
    if truth[Criterion.SIZE.value] == Label.IN.value:
        size_class, band = "normal", cfg.normal_factor
    else:
        size_class = rng.choice(["small", "big"])
        band = cfg.small_factor if size_class == "small" else cfg.big_factor
    factor = rng.uniform(*band)
    in_sky = loc_out or (cat.flying and rng.random() < cfg.flying_in_sky_rate)
    height = max(px["min_side"], round(normal * factor))
    if in_sky:
        room = horizon - px["gap"] - px["margin"]
        height = min(height, room)  # only a too-big target can hit this; the config check keeps it big
        bottom = rng.randint(px["margin"] + height, horizon - px["gap"])
    else:
        bottom = _ground_bottom(rng, cfg, horizon)
        height = min(height, bottom - px["margin"])
    width = min(s - 2 * px["margin"], max(px["min_side"], round(height * cat.aspect)))
    x0 = _place_x(rng, width, s, px["margin"], [background["references"][0]["box"]], bottom - height, bottom)
    box = [x0, bottom - height, x0 + width, bottom]
    layout = dict(background)
    layout.update(
        id=f"syn{index:06d}", original=False, truth=truth,
        target=_target(cat.name, box, "sky" if in_sky else "ground", size_class, height / normal, normal, person_h),
    )
    return layout


def original_layout(background: dict) -> dict:
    """The unmodified scene with its first context object boxed: in-context on every criterion."""
    refs = background["references"]
    ctx = next(i for i, r in enumerate(refs) if r["role"] == "context")
    obj = refs[ctx]
    person_h = refs[0]["box"][3] - refs[0]["box"][1]
    normal = CATEGORIES[obj["category"]].height * person_h
    layout = dict(background)
    layout.update(
        id=f"{background['group']}-orig", original=True, references=refs[:ctx] + refs[ctx + 1:],
        truth={c.value: Label.IN.value for c in CRITERIA},
        target=_target(obj["category"], list(obj["box"]), "ground", "normal",
                       (obj["box"][3] - obj["box"][1]) / normal, normal, person_h),
    )
    return layout


def iter_layouts(cfg: WorldConfig) -> Iterator[tuple[dict, Optional[dict]]]:
    """(sample layout, the original of its scene or None) for every sample, in id order.

    The original comes with the first sample of each group (when ``cfg.originals``).
    """
    groups = -(-cfg.n // cfg.samples_per_group)
    for g in range(groups):
        bg = sample_background(cfg, g)
        first = g * cfg.samples_per_group
        for i in range(first, min(cfg.n, first + cfg.samples_per_group)):
            yield sample_layout(cfg, bg, i), (original_layout(bg) if cfg.originals and i == first else None)


def layout_sample(layout: dict, image: str) -> Sample:
    """The manifest record of a layout (already boxed, synthetic, truth set)."""
    return Sample(
        id=layout["id"], image=image, object=layout["target"]["category"], box=tuple(layout["target"]["box"]),
        group=layout["group"], scene=layout["scene"], boxed=True, synthetic=True,
        truth={Criterion(k): Label(v) for k, v in layout["truth"].items()},
    )


def load_layouts(world_dir: Path | str) -> dict[str, dict]:
    """Layouts of a world folder by sample id (``layout.jsonl`` plus ``originals/layout.jsonl``)."""
    root = Path(world_dir)
    out: dict[str, dict] = {}
    paths = [p for p in (root / "layout.jsonl", root / "originals" / "layout.jsonl") if p.is_file()]
    if not paths:
        raise FileNotFoundError(f"no layout.jsonl in {root} (is it a `scenefit synth` output folder?)")
    for p in paths:
        with open(p) as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{p}:{n}: not JSON ({e.msg})") from None
                    out[rec["id"]] = rec
    return out


class WorldExistsError(ScenefitError, RuntimeError):
    """The output folder holds something else (another world's config, or foreign files)."""


_OUTPUTS = ("images", "originals", "manifest.parquet", "layout.jsonl", "world.json")


def check_output(out: Path | str, cfg: WorldConfig, overwrite: bool = False) -> None:
    """Raise WorldExistsError when ``out`` holds another world or foreign files (reads only)."""
    out = Path(out)
    marker = out / "world.json"
    if marker.is_file():
        try:
            old = json.loads(marker.read_text()).get("config")
        except (json.JSONDecodeError, AttributeError):
            old = None  # unreadable: treat as another world
        if old != cfg.model_dump(mode="json") and not overwrite:
            raise WorldExistsError(f"{out} holds a world made with another config; pass overwrite "
                                   "(--overwrite) to replace it, or choose another --out")
    elif out.is_dir() and any(out.iterdir()) and not overwrite:
        raise WorldExistsError(f"{out} is not empty and holds no world.json; choose an empty --out or --overwrite")


def _prepare(out: Path, cfg: WorldConfig, overwrite: bool) -> None:
    check_output(out, cfg, overwrite)
    for name in _OUTPUTS:  # only what this stage writes: a rerun never leaves stale images behind
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def generate_world(cfg: WorldConfig, out_dir: Path | str, overwrite: bool = False,
                   progress: Optional[Progress] = None) -> dict:
    """Draw the world into ``out_dir`` and return its summary (also written as world.json).

    ``progress.advance(1)`` is called after every sample written. Rerunning with the same config
    rewrites identical files; another config in the same folder needs ``overwrite``.
    """
    from scenefit.core.files import atomic_write_bytes, write_json, write_jsonl
    from scenefit.core.images import BoxStyle, png_bytes
    from scenefit.data.manifest import write_manifest
    from scenefit.testbed.render import render_scene

    out = Path(out_dir)
    _prepare(out, cfg, overwrite)
    parts = {"": out} if not cfg.originals else {"": out, "originals": out / "originals"}
    for p in parts.values():
        (p / "images").mkdir(parents=True, exist_ok=True)
    samples: dict[str, list[Sample]] = {k: [] for k in parts}
    layouts: dict[str, list[dict]] = {k: [] for k in parts}
    for layout, original in iter_layouts(cfg):
        for key, lay in (("", layout), ("originals", original)):
            if lay is None:
                continue
            rel = f"images/{lay['id']}.png"
            atomic_write_bytes(png_bytes(render_scene(lay)), parts[key] / rel)
            layouts[key].append({**lay, "synthetic": True})
            samples[key].append(layout_sample(lay, rel))
        if progress:
            progress.advance(1)
    for key, p in parts.items():
        write_jsonl(layouts[key], p / "layout.jsonl")
    summary = summarize(cfg, samples[""], samples.get("originals", []))
    # how every image's box was drawn: what the students trained on these images will be told to draw
    meta = {"stage": "synth", "seed": cfg.seed, "format_version": FORMAT_VERSION,
            "box_style": BoxStyle(width=cfg.box_width, color=BOX_RED).model_dump(mode="json")}
    for key, p in parts.items():
        write_manifest(samples[key], p / "manifest.parquet", {**meta, "part": key or "samples"})
    if cfg.originals:
        write_json({"notice": SYNTHETIC_NOTICE, "synthetic": True, "of": "originals",
                    "description": "each scene instance unmodified, one of its own objects boxed; all in-context",
                    "count": len(samples["originals"])}, out / "originals" / "world.json")
    write_json(summary, out / "world.json")  # last: its presence marks a complete world
    return summary


def summarize(cfg: WorldConfig, samples: list[Sample], originals: list[Sample]) -> dict:
    """Counts per scene and category, configured and realised violation rates."""
    n = max(1, len(samples))
    per_scene: dict[str, int] = {}
    per_category: dict[str, int] = {}
    for smp in samples:
        per_scene[smp.scene] = per_scene.get(smp.scene, 0) + 1
        per_category[smp.object] = per_category.get(smp.object, 0) + 1
    realised = {c.value: round(sum(smp.truth[c] is Label.OUT for smp in samples) / n, 4) for c in CRITERIA}
    final_out = sum(fuse(smp.truth[c] for c in CRITERIA) is Label.OUT for smp in samples) / n
    return {
        "notice": SYNTHETIC_NOTICE,
        "synthetic": True,
        "format_version": FORMAT_VERSION,
        "config": cfg.model_dump(mode="json"),
        "counts": {
            "samples": len(samples), "groups": len({smp.group for smp in samples}), "originals": len(originals),
            "per_scene": dict(sorted(per_scene.items())), "per_category": dict(sorted(per_category.items())),
        },
        "violation_rates": {"configured": dict(cfg.violation_rates), "realised": realised},
        "final_out_rate": round(final_out, 4),
        "catalog": {
            "scenes": {k: {"sky": v.sky, "ground": v.ground, "indoor": v.indoor} for k, v in SCENES.items()},
            "categories": {k: {"home": list(v.home), "flying": v.flying, "height": v.height}
                           for k, v in CATEGORIES.items()},
        },
        "files": {"manifest": "manifest.parquet", "layout": "layout.jsonl", "images": "images/",
                  "originals": "originals/manifest.parquet" if cfg.originals else None},
    }


def draw_pictures(cfg: WorldConfig) -> list[tuple[Image.Image, dict]]:
    """A world's pictures in memory with their layouts, rendered straight from the layouts (the
    pixels ``generate_world`` would save; nothing is written). The tiny model's pretraining
    draws worlds of its own seeds this way."""
    from scenefit.testbed.render import render_scene

    return [(render_scene(layout), layout) for layout, _ in iter_layouts(cfg)]
