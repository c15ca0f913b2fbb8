"""The box the students were trained on travels with them: scenefit_student.json's box_style,
drawn by predict (and so serve and evaluate) unless a setting says otherwise (issue 28 item 1).

    .venv/bin/python -m pytest tests/unit/test_box_style.py -q
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from scenefit.core.images import BOX_RED, BoxStyle, common_box_style
from scenefit.predict import PredictConfig, Predictor
from scenefit.student.metadata import STUDENT_META, read_student_meta

BLUE = (0, 0, 255)
GREY = (128, 128, 128)
BOX = (40, 30, 160, 120)  # on a 200 x 150 image: the size rule draws 2 px (shorter side 150 / 150, at least 2)


@pytest.fixture(scope="module")
def blue_students(random_head_students, tmp_path_factory):
    """The session's toy students, recorded as trained on 5 px blue boxes."""
    out = tmp_path_factory.mktemp("blue_students") / "students"
    shutil.copytree(random_head_students, out)
    for meta_path in out.glob(f"*/{STUDENT_META}"):
        meta = json.loads(meta_path.read_text())
        meta_path.write_text(json.dumps({**meta, "box_style": {"width": 5, "color": list(BLUE)}}))
    return out


@pytest.fixture(scope="module")
def grey_image(tmp_path_factory):
    path = tmp_path_factory.mktemp("grey") / "grey.png"
    Image.new("RGB", (200, 150), GREY).save(path)
    return path


def drawn(students, image, monkeypatch, **settings) -> tuple[np.ndarray, Predictor]:
    """The image predict hands the model for one unboxed item, and the predictor."""
    import scenefit.predict.predictor as predictor_module

    seen = []

    def recording(*args, **kwargs):
        seen.append(original(*args, **kwargs))
        return seen[-1]

    original = predictor_module.prepare_image
    monkeypatch.setattr(predictor_module, "prepare_image", recording)
    predictor = Predictor.from_students(students, config=PredictConfig(device="cpu", batch_size=4, **settings))
    out = predictor.predict([(image, "cow", BOX)], criteria=["location"])
    assert out[0].error is None and len(seen) == 1
    return np.asarray(seen[0]), predictor


def line(pixels: np.ndarray) -> tuple[int, tuple]:
    """Width and colour of the box's left side, read along the middle row."""
    row = pixels[75, BOX[0]:BOX[0] + 12]
    colour = tuple(int(v) for v in row[0])
    return int(np.all(row == row[0], axis=1).argmin()), colour


def test_predict_draws_the_box_the_students_were_trained_on(blue_students, grey_image, monkeypatch):
    pixels, predictor = drawn(blue_students, grey_image, monkeypatch)
    assert line(pixels) == (5, BLUE)
    assert predictor.info()["box"] == {"width": 5, "color": list(BLUE), "from": "students"}


def test_an_explicit_setting_wins_over_the_students_record(blue_students, grey_image, monkeypatch):
    pixels, predictor = drawn(blue_students, grey_image, monkeypatch, box_width=3)
    assert line(pixels) == (3, BLUE)  # the colour the setting leaves null is still the students'
    assert predictor.info()["box"]["from"] == "settings+students"
    pixels, _ = drawn(blue_students, grey_image, monkeypatch, box_width=3, box_color=BOX_RED)
    assert line(pixels) == (3, BOX_RED)


def test_students_without_a_record_draw_as_before(random_head_students, grey_image, monkeypatch):
    assert read_student_meta(random_head_students / "location").box_style is None
    pixels, predictor = drawn(random_head_students, grey_image, monkeypatch)
    assert line(pixels) == (2, BOX_RED)  # the size rule, red
    assert predictor.info()["box"] == {"width": None, "color": list(BOX_RED), "from": "defaults"}


def test_an_old_student_record_without_the_fields_still_loads(tmp_path):
    (tmp_path / STUDENT_META).write_text(json.dumps({"criterion": "size", "base_model": "model"}))
    assert read_student_meta(tmp_path).box_style is None
    (tmp_path / STUDENT_META).write_text(json.dumps({"criterion": "size", "box_style": {"width": None, "color": [1, 2, 3]}}))
    assert read_student_meta(tmp_path).box_style == BoxStyle(width=None, color=(1, 2, 3))


def test_students_trained_on_different_boxes_record_none_and_warn(blue_students, random_head_students, tmp_path,
                                                                  grey_image, monkeypatch):
    mixed = tmp_path / "mixed"
    shutil.copytree(blue_students, mixed)
    meta_path = mixed / "size" / STUDENT_META
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "box_style": {"width": 3, "color": [255, 0, 0]}}))
    with pytest.warns(UserWarning, match="differently drawn boxes"):
        pixels, _ = drawn(mixed, grey_image, monkeypatch)
    assert line(pixels) == (2, BOX_RED)


def test_one_style_is_common_only_when_every_source_knows_it():
    red2 = BoxStyle(width=2)
    assert common_box_style([red2, {"width": 2, "color": [255, 0, 0]}]) == red2
    assert common_box_style([red2, None]) is None  # a part drawn elsewhere: unknown
    assert common_box_style([red2, BoxStyle(width=3)]) is None  # a mix is no one style
    assert common_box_style([]) is None
    assert "2 px wide" in BoxStyle.words(red2) and "grown with the image" in BoxStyle.words(BoxStyle())
    assert "not recorded" in BoxStyle.words(None)
