"""Settings are finite numbers (issue 27.6): ``--set learning_rate=inf`` used to be accepted.

    .venv/bin/python -m pytest tests/unit/test_finite_settings.py -q
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from scenefit.core.config import SECTIONS, ConfigError, parse_set, resolve


@pytest.mark.parametrize("section, key", [("train", "learning_rate"), ("train", "distill.weight"),
                                          ("train", "lora.dropout"), ("serve", "max_wait_ms"),
                                          ("serve_teacher", "request_timeout_s"), ("annotate", "commit_interval_s")])
@pytest.mark.parametrize("value", ["inf", "-.inf", ".nan", "1e999"])
def test_a_setting_that_is_not_finite_is_refused_naming_it(section, key, value):
    assert section in SECTIONS
    with pytest.raises(ConfigError, match=f"{key}: Input should be a finite number"):
        resolve(section, None, parse_set([f"{key}={value}"]))


def test_the_command_line_says_so(tmp_path):
    from scenefit.cli import app

    r = CliRunner().invoke(app, ["train", "--criterion", "location", "--data", str(tmp_path), "--model", str(tmp_path),
                                 "--out", str(tmp_path / "out"), "--set", "learning_rate=inf"])
    assert r.exit_code == 2 and "learning_rate: Input should be a finite number" in " ".join(r.output.split()), r.output
