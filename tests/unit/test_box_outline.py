"""The rule for "this image carries its box" (serve's 422 no_red_box): a rectangle outline in the
box colour, found on photographs with and without a drawn box (JPEG artefacts included), on the
synthetic world's images and not on unboxed toy scenes (issue 26 item 6).

    .venv/bin/python -m pytest tests/unit/test_box_outline.py -q
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from scenefit.core.images import draw_box, find_box_outline


def photo(name: str) -> Image.Image:
    """Photographs shipped by dependencies: china and flower (scikit-learn, 640 x 427; the flower
    is mostly red), grace_hopper (matplotlib, 512 x 600)."""
    if name == "hopper":
        import matplotlib

        return Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB")
    import sklearn

    return Image.open(Path(sklearn.__file__).parent / "datasets" / "images" / f"{name}.jpg").convert("RGB")


def jpeg(image: Image.Image, quality: int = 75) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)  # 4:2:0, as cameras and browsers write it
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


@pytest.mark.parametrize("name", ["china", "hopper", "flower"])
def test_photographs_with_and_without_a_drawn_box(name):
    image = photo(name)
    assert find_box_outline(jpeg(image)) is None  # no box: nothing found, also on the red flower
    for box in ((100, 80, 300, 260), (400, 300, 440, 340)):
        found = find_box_outline(jpeg(draw_box(image, box)))
        assert found is not None and all(abs(a - b) <= 4 for a, b in zip(found, box)), (box, found)


def test_a_phone_size_photo_is_searched_at_a_bounded_size():
    big = photo("china").resize((4032, 3024))
    assert find_box_outline(jpeg(big, 85)) is None
    found = find_box_outline(jpeg(draw_box(big, (600, 500, 2400, 2000)), 85))
    assert found is not None and all(abs(a - b) <= 8 for a, b in zip(found, (600, 500, 2400, 2000)))


def test_the_synthetic_world_and_toy_scenes(tmp_path):
    from scenefit.core.parquet_io import read_table
    from scenefit.testbed.toy_students import toy_items
    from scenefit.testbed.world import WorldConfig, generate_world

    items, _ = toy_items(60, seed=1)
    assert all(find_box_outline(im) is None for im, _, _ in items)  # unboxed scenes
    assert all(find_box_outline(draw_box(im, box, width=2)) is not None for im, _, box in items)
    generate_world(WorldConfig(n=40, seed=3, image_size=112), tmp_path / "world")
    frame, _ = read_table(tmp_path / "world" / "manifest.parquet")
    assert all(find_box_outline(Image.open(p)) is not None for p in frame["image"])  # every boxed world image
