"""Fixtures shared by the end-to-end tests: the students served by tests/e2e/test_serve_students.py
and tests/e2e/test_webpage.py (the demo students when `make demo` has run, else untrained ones)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scenefit.cli.common import demo_students  # noqa: E402

CRITERIA = ("location", "size", "co_occurrence")


DEVICE = os.environ.get("SCENEFIT_TEST_DEVICE", "cpu")  # "cuda" on a GPU machine: same tests, bf16 there


def _demo_students() -> Path | None:
    d = demo_students()
    if all((d / c / "adapter_config.json").is_file() for c in CRITERIA):
        return d
    return None


@pytest.fixture(scope="module")
def students_dir(tiny_model_dir, tmp_path_factory) -> Path:
    found = _demo_students()
    if found is not None:
        return found
    from scenefit.testbed.toy_students import build_toy_students

    return build_toy_students(tiny_model_dir, tmp_path_factory.mktemp("students"), steps=0)


@pytest.fixture(scope="module")
def predictor(students_dir):
    from scenefit.predict import PredictConfig, Predictor

    return Predictor.from_students(students_dir, config=PredictConfig(max_new_tokens=8, batch_size=16, device=DEVICE))


@pytest.fixture(scope="module")
def items():
    from scenefit.testbed.toy_students import toy_items

    found, _ = toy_items(6, seed=3)
    return found

