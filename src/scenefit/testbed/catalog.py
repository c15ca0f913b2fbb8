"""What the synthetic world is made of: scene types (palettes, words) and object categories
(home scenes, flying or not, apparent size, shape and colours).

Used by the layout sampler (:mod:`scenefit.testbed.world`), the renderer
(:mod:`scenefit.testbed.render`) and the simulated teachers (:mod:`scenefit.testbed.personas`),
so all three agree on what a cow is and where it belongs.

Design choices that serve learnability by tiny students (16 image tokens, each a 28×28 px cell
at 112 px): each scene type has a sky and a ground colour far from every other scene type's;
every category's normal apparent height lies in a narrow band (0.75–1.0 of the reference
person), so "too big" (×2.2 or more) and "too small" (×0.38 or less) are separable by scale
alone; no object uses pure red, which only the target's box uses.
"""

from __future__ import annotations

from dataclasses import dataclass

RGB = tuple[int, int, int]

#: The colour of the target's box; no palette or object colour is this exact value.
BOX_RED: RGB = (255, 0, 0)


@dataclass(frozen=True)
class SceneType:
    """One kind of place: its colours and the words the teachers use for it."""

    name: str
    sky: RGB  # upper part: sky outdoors, wall indoors
    ground: RGB  # lower part: what objects stand on
    sky_word: str  # "sky" / "wall"
    ground_word: str  # "sand", "asphalt", "grass" …
    place: str  # "on the beach", "in the kitchen" …
    indoor: bool


SCENES: dict[str, SceneType] = {
    s.name: s
    for s in (
        SceneType("beach", (120, 200, 255), (240, 215, 140), "sky", "sand", "on the beach", False),
        SceneType("street", (150, 160, 175), (55, 55, 60), "sky", "asphalt", "in the street", False),
        SceneType("farm", (70, 130, 230), (60, 170, 50), "sky", "grass", "on the farm", False),
        SceneType("snowfield", (150, 110, 190), (250, 250, 250), "sky", "snow", "on the snowfield", False),
        SceneType("kitchen", (170, 235, 215), (130, 75, 35), "wall", "floor", "in the kitchen", True),
        SceneType("office", (235, 225, 130), (35, 45, 110), "wall", "carpet", "in the office", True),
    )
}


@dataclass(frozen=True)
class Category:
    """One kind of object that can be a target (and, in its home scenes, a context object)."""

    name: str
    home: tuple[str, ...]  # scene types where it belongs (co-occurrence in-context)
    flying: bool  # may be in the air without violating location
    height: float  # normal apparent height as a fraction of the reference person's height
    aspect: float  # width / height
    shape: str  # drawing routine in render.py
    colour: RGB
    accent: RGB


_OUTDOOR = ("beach", "street", "farm", "snowfield")

CATEGORIES: dict[str, Category] = {
    c.name: c
    for c in (
        Category("cow", ("farm",), False, 0.9, 1.5, "quadruped", (250, 250, 250), (20, 20, 20)),
        Category("sheep", ("farm",), False, 0.75, 1.3, "quadruped", (225, 220, 195), (70, 70, 70)),
        Category("dog", ("street", "farm", "beach", "snowfield"), False, 0.75, 1.3, "quadruped",
                 (160, 110, 60), (60, 40, 20)),
        Category("car", ("street",), False, 0.8, 1.8, "vehicle", (40, 90, 200), (20, 20, 20)),
        Category("bicycle", ("street",), False, 0.8, 1.5, "bicycle", (30, 150, 60), (20, 20, 20)),
        Category("fire hydrant", ("street",), False, 0.75, 0.6, "post", (240, 210, 0), (90, 80, 0)),
        Category("umbrella", ("beach", "street"), False, 1.0, 1.0, "umbrella", (0, 170, 170), (255, 255, 255)),
        Category("surfboard", ("beach",), False, 1.0, 0.35, "board", (255, 120, 190), (255, 255, 255)),
        Category("refrigerator", ("kitchen",), False, 1.0, 0.55, "cabinet", (215, 220, 228), (60, 60, 70)),
        Category("oven", ("kitchen",), False, 0.8, 0.9, "oven", (70, 70, 70), (255, 160, 40)),
        Category("chair", ("kitchen", "office"), False, 0.8, 0.6, "chair", (140, 80, 30), (90, 50, 20)),
        Category("bookshelf", ("office",), False, 1.0, 0.75, "shelf", (110, 65, 25), (60, 140, 220)),
        Category("snowman", ("snowfield",), False, 0.9, 0.65, "snowman", (245, 245, 245), (60, 60, 60)),
        Category("bird", _OUTDOOR, True, 0.75, 1.6, "bird", (45, 45, 45), (250, 200, 0)),
        Category("kite", ("beach", "farm"), True, 0.9, 0.8, "kite", (170, 0, 210), (250, 240, 0)),
        Category("airplane", _OUTDOOR, True, 0.8, 2.2, "plane", (175, 175, 185), (40, 70, 160)),
    )
}

#: The reference object drawn in every scene at a stable size.
PERSON = "person"
PERSON_ASPECT = 0.42
PERSON_SKIN: RGB = (235, 190, 150)
PERSON_SHIRT: RGB = (255, 140, 0)
PERSON_LEGS: RGB = (30, 30, 120)


def home_categories(scene: str, flying: bool | None = None) -> list[str]:
    """Categories that belong in ``scene`` (optionally only flying / only non-flying ones)."""
    return [c.name for c in CATEGORIES.values() if scene in c.home and (flying is None or c.flying == flying)]


def plural(name: str) -> str:
    """English plural of a category name (for "as cows do")."""
    if name.endswith("sheep"):
        return name
    if name.endswith(("sh", "ch", "s", "x")):
        return name + "es"
    return name + "s"


def article(name: str) -> str:
    """'a cow', 'an oven'."""
    return ("an " if name[0] in "aeiou" else "a ") + name
