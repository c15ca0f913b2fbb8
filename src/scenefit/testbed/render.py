"""Draw one synthetic scene from its layout (a plain dict, as stored in ``layout.jsonl``).

    from scenefit.testbed.render import render_scene
    image = render_scene(layout)          # PIL RGB image, the target already in its red box

Rendering is a pure function of the layout: the world generator samples layouts, then calls
this; tests call it too, to check the drawn geometry against the record. Boxes are
``[x0, y0, x1, y1]`` with x1, y1 exclusive; each object fills its box, so a box is exactly
the object's extent. Shapes are deliberately simple — at 112 px an object is a few dozen
pixels — and never use pure red, which only the target's box uses.
"""

from __future__ import annotations

from typing import Callable, Sequence

from PIL import Image, ImageDraw

from scenefit.core.images import draw_box
from scenefit.testbed.catalog import BOX_RED, CATEGORIES, PERSON, PERSON_LEGS, PERSON_SHIRT, PERSON_SKIN, RGB

Painter = Callable[[ImageDraw.ImageDraw, tuple[int, int, int, int], RGB, RGB], None]


def _frac(box, fx0: float, fy0: float, fx1: float, fy1: float) -> list[int]:
    """A sub-rectangle of ``box`` given in fractions of its width/height (inclusive corners)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    a, b = x0 + int(fx0 * w), y0 + int(fy0 * h)
    c, d = x0 + max(int(fx0 * w), int(fx1 * w) - 1), y0 + max(int(fy0 * h), int(fy1 * h) - 1)
    return [a, b, c, d]


def _person(d, box, colour, accent) -> None:
    d.rectangle(_frac(box, 0.0, 0.5, 0.45, 1.0), fill=PERSON_LEGS)
    d.rectangle(_frac(box, 0.55, 0.5, 1.0, 1.0), fill=PERSON_LEGS)
    d.rectangle(_frac(box, 0.0, 0.22, 1.0, 0.6), fill=PERSON_SHIRT)
    d.ellipse(_frac(box, 0.15, 0.0, 0.85, 0.25), fill=PERSON_SKIN)


def _quadruped(d, box, colour, accent) -> None:
    for fx in (0.12, 0.62):
        d.rectangle(_frac(box, fx, 0.6, fx + 0.14, 1.0), fill=accent)
    d.ellipse(_frac(box, 0.0, 0.25, 0.82, 0.72), fill=colour)
    d.ellipse(_frac(box, 0.68, 0.0, 1.0, 0.4), fill=colour)
    d.rectangle(_frac(box, 0.3, 0.35, 0.45, 0.5), fill=accent)  # a patch: cows and dogs alike


def _vehicle(d, box, colour, accent) -> None:
    d.rectangle(_frac(box, 0.2, 0.0, 0.8, 0.45), fill=colour)
    d.rectangle(_frac(box, 0.3, 0.08, 0.7, 0.4), fill=(190, 225, 245))
    d.rectangle(_frac(box, 0.0, 0.35, 1.0, 0.8), fill=colour)
    for fx in (0.08, 0.64):
        d.ellipse(_frac(box, fx, 0.6, fx + 0.28, 1.0), fill=accent)


def _bicycle(d, box, colour, accent) -> None:
    for fx in (0.0, 0.55):
        d.ellipse(_frac(box, fx, 0.45, fx + 0.45, 1.0), outline=accent, width=max(1, (box[3] - box[1]) // 12))
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    lw = max(1, h // 10)
    d.line([x0 + w * 0.22, y0 + h * 0.72, x0 + w * 0.5, y0 + h * 0.35, x0 + w * 0.77, y0 + h * 0.72], fill=colour, width=lw)
    d.line([x0 + w * 0.5, y0 + h * 0.35, x0 + w * 0.5, y0], fill=colour, width=lw)


def _post(d, box, colour, accent) -> None:
    d.rectangle(_frac(box, 0.15, 0.2, 0.85, 1.0), fill=colour)
    d.ellipse(_frac(box, 0.15, 0.0, 0.85, 0.35), fill=colour)
    d.rectangle(_frac(box, 0.0, 0.4, 1.0, 0.55), fill=accent)


def _umbrella(d, box, colour, accent) -> None:
    d.rectangle(_frac(box, 0.45, 0.3, 0.55, 1.0), fill=(60, 60, 60))
    d.pieslice(_frac(box, 0.0, 0.0, 1.0, 0.8), 180, 360, fill=colour)
    d.pieslice(_frac(box, 0.3, 0.0, 0.7, 0.8), 180, 360, fill=accent)


def _board(d, box, colour, accent) -> None:
    d.ellipse(_frac(box, 0.0, 0.0, 1.0, 1.0), fill=colour)
    d.rectangle(_frac(box, 0.4, 0.1, 0.6, 0.9), fill=accent)


def _cabinet(d, box, colour, accent) -> None:
    d.rectangle(_frac(box, 0.0, 0.0, 1.0, 1.0), fill=colour)
    d.rectangle(_frac(box, 0.0, 0.35, 1.0, 0.4), fill=accent)
    d.rectangle(_frac(box, 0.75, 0.1, 0.85, 0.3), fill=accent)
    d.rectangle(_frac(box, 0.75, 0.5, 0.85, 0.75), fill=accent)


def _oven(d, box, colour, accent) -> None:
    d.rectangle(_frac(box, 0.0, 0.0, 1.0, 1.0), fill=colour)
    d.rectangle(_frac(box, 0.15, 0.35, 0.85, 0.85), fill=accent)
    d.rectangle(_frac(box, 0.0, 0.0, 1.0, 0.2), fill=(30, 30, 30))


def _chair(d, box, colour, accent) -> None:
    d.rectangle(_frac(box, 0.0, 0.0, 0.25, 1.0), fill=colour)
    d.rectangle(_frac(box, 0.0, 0.5, 1.0, 0.65), fill=colour)
    d.rectangle(_frac(box, 0.8, 0.5, 1.0, 1.0), fill=accent)


def _shelf(d, box, colour, accent) -> None:
    d.rectangle(_frac(box, 0.0, 0.0, 1.0, 1.0), fill=colour)
    books = ((60, 140, 220), (240, 230, 80), (40, 170, 90))
    for i, fy in enumerate((0.08, 0.4, 0.72)):
        d.rectangle(_frac(box, 0.1, fy, 0.9, fy + 0.22), fill=books[i % len(books)])


def _snowman(d, box, colour, accent) -> None:
    d.ellipse(_frac(box, 0.0, 0.45, 1.0, 1.0), fill=colour, outline=accent)
    d.ellipse(_frac(box, 0.15, 0.2, 0.85, 0.55), fill=colour, outline=accent)
    d.ellipse(_frac(box, 0.28, 0.0, 0.72, 0.25), fill=colour, outline=accent)
    d.rectangle(_frac(box, 0.45, 0.1, 0.7, 0.16), fill=(250, 140, 0))


def _bird(d, box, colour, accent) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    d.polygon([(x0, y0), (x0 + w * 0.5, y0 + h * 0.55), (x1 - 1, y0)], fill=colour)
    d.ellipse(_frac(box, 0.3, 0.4, 0.7, 1.0), fill=colour)
    d.rectangle(_frac(box, 0.65, 0.6, 0.8, 0.75), fill=accent)


def _kite(d, box, colour, accent) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    d.polygon([(x0 + w * 0.5, y0), (x1 - 1, y0 + h * 0.35), (x0 + w * 0.5, y0 + h * 0.75), (x0, y0 + h * 0.35)],
              fill=colour)
    d.line([(x0 + w * 0.5, y0 + h * 0.75), (x0 + w * 0.3, y1 - 1)], fill=accent, width=max(1, h // 12))


def _plane(d, box, colour, accent) -> None:
    d.ellipse(_frac(box, 0.0, 0.35, 1.0, 0.65), fill=colour)
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    d.polygon([(x0 + w * 0.35, y0 + h * 0.5), (x0 + w * 0.55, y0), (x0 + w * 0.65, y0 + h * 0.5)], fill=accent)
    d.polygon([(x0 + w * 0.35, y0 + h * 0.5), (x0 + w * 0.55, y1 - 1), (x0 + w * 0.65, y0 + h * 0.5)], fill=accent)
    d.rectangle(_frac(box, 0.0, 0.1, 0.1, 0.5), fill=accent)


PAINTERS: dict[str, Painter] = {
    "person": _person, "quadruped": _quadruped, "vehicle": _vehicle, "bicycle": _bicycle, "post": _post,
    "umbrella": _umbrella, "board": _board, "cabinet": _cabinet, "oven": _oven, "chair": _chair,
    "shelf": _shelf, "snowman": _snowman, "bird": _bird, "kite": _kite, "plane": _plane,
}


def draw_object(d: ImageDraw.ImageDraw, category: str, box: Sequence[int]) -> None:
    """Paint one object of ``category`` filling ``box`` (x1, y1 exclusive)."""
    b = tuple(int(v) for v in box)
    if category == PERSON:
        _person(d, b, PERSON_SHIRT, PERSON_LEGS)
        return
    cat = CATEGORIES[category]
    PAINTERS[cat.shape](d, b, cat.colour, cat.accent)


def render_background(layout: dict) -> Image.Image:
    """Sky (or wall) above the horizon row, ground (or floor) from it down: one sharp edge."""
    s = int(layout["image_size"])
    horizon = int(layout["horizon"])
    im = Image.new("RGB", (s, s), tuple(layout["sky_color"]))
    ImageDraw.Draw(im).rectangle([0, horizon, s - 1, s - 1], fill=tuple(layout["ground_color"]))
    return im


def render_scene(layout: dict) -> Image.Image:
    """The full image: background, reference and context objects, the target, its red box."""
    im = render_background(layout)
    d = ImageDraw.Draw(im)
    for ref in layout["references"]:
        draw_object(d, ref["category"], ref["box"])
    target = layout["target"]
    draw_object(d, target["category"], target["box"])
    return draw_box(im, target["box"], width=int(layout["box_width"]), color=BOX_RED)
