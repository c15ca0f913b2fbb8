"""A student's processor loads with plain ``AutoProcessor`` (no torchvision, no scenefit code) and
gives exactly the inputs of the Qwen2.5-VL processor it was saved from: on the tiny model and on
the 3B stand-in with the real vocabulary (issue 26 item 4).

    .venv/bin/python -m pytest tests/unit/test_student_processor.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image, ImageDraw


@pytest.mark.parametrize("base", ["tiny_model_dir", "standin_model_dir"])
def test_autoprocessor_loads_a_student_processor_and_matches_the_qwen_processor(base, request, tmp_path):
    import torch
    from transformers import AutoProcessor

    from scenefit.core.criteria import Criterion
    from scenefit.models.loading import STUDENT_PROCESSOR_CLASS, load_processor, save_student_processor
    from scenefit.student.chat import StudentChat

    base_dir = request.getfixturevalue(base)
    reference = load_processor(base_dir)  # the Qwen2.5-VL processor (images-only here: no torchvision)
    student = tmp_path / "student"
    save_student_processor(reference, student)
    assert not (student / "video_preprocessor_config.json").exists()
    assert json.loads((student / "processor_config.json").read_text())["processor_class"] == STUDENT_PROCESSOR_CLASS

    loaded = AutoProcessor.from_pretrained(str(student))
    assert type(loaded).__name__ == STUDENT_PROCESSOR_CLASS and not hasattr(loaded, "video_processor")
    image = Image.new("RGB", (300, 220), (120, 180, 240))
    ImageDraw.Draw(image).rectangle((100, 60, 200, 180), outline=(255, 0, 0), width=3)
    chat = StudentChat.packaged()
    text = chat.prompt_text(reference, chat.request(Criterion.SIZE, "cow"))
    assert chat.prompt_text(loaded, chat.request(Criterion.SIZE, "cow")) == text
    want = reference(text=[text + "Decision:"], images=[image], return_tensors="pt")
    got = loaded(text=[text + "Decision:"], images=[image], return_tensors="pt")
    assert set(got) == set(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key
    # the project's own loader reads the folder too
    again = load_processor(student)(text=[text], images=[image], return_tensors="pt")
    assert torch.equal(again["input_ids"], reference(text=[text], images=[image], return_tensors="pt")["input_ids"])


def test_a_plain_python_without_scenefit_loads_it(tiny_model_dir, tmp_path):
    """A fresh interpreter that imports only transformers (scenefit registers nothing)."""
    from scenefit.models.loading import load_processor, save_student_processor

    save_student_processor(load_processor(tiny_model_dir), tmp_path / "student")
    code = ("import sys; from transformers import AutoProcessor; p = AutoProcessor.from_pretrained(sys.argv[1]); "
            "assert 'scenefit' not in sys.modules; print(type(p).__name__, p.image_token)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "student")], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["PaddleOCRVLProcessor", "<|image_pad|>"]
