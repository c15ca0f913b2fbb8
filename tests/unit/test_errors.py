"""One exception base and one error-row shape across the package (issue #28 item 3).

    .venv/bin/python -m pytest tests/unit/test_errors.py -q
"""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path

import scenefit
from scenefit.core.errors import ERROR_ROW_KEYS, ScenefitError, error_row

PACKAGE = Path(scenefit.__file__).resolve().parent


def _modules():
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = p.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield importlib.import_module(".".join(("scenefit", *parts)))


def test_every_exception_the_package_defines_derives_from_the_one_base():
    own = [obj for m in _modules() for obj in vars(m).values()
           if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == m.__name__]
    assert len(own) >= 19
    stray = sorted(f"{c.__module__}.{c.__name__}" for c in own if not issubclass(c, ScenefitError))
    assert stray == [], f"exceptions outside scenefit.core.errors.ScenefitError: {stray}"


def test_the_base_keeps_each_builtin_so_existing_handlers_still_catch():
    from scenefit.core.config import ConfigError
    from scenefit.teachers.store import StoreError

    assert issubclass(ConfigError, ValueError) and issubclass(StoreError, OSError)


def test_error_rows_have_id_code_message_first_and_drop_empty_places():
    row = error_row(7, "bad_box", "sample 7: box is empty", row=3, line=None)
    assert list(row)[:3] == list(ERROR_ROW_KEYS) and row == {"id": "7", "code": "bad_box",
                                                             "message": "sample 7: box is empty", "row": 3}


def test_ingest_manifest_and_predict_errors_share_the_row_shape(tmp_path):
    from typer.testing import CliRunner

    from scenefit.cli import app
    from scenefit.data.manifest import read_manifest

    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "image": "missing.png", "object": "dog", "box": "1,1,5,5"}) + "\n"
                        + json.dumps({"id": "b", "image": "x.png", "object": "", "box": "1,1,5,5"}) + "\n")
    read = read_manifest(manifest)
    assert [set(ERROR_ROW_KEYS) <= set(e) for e in read.errors] == [True]
    r = CliRunner().invoke(app, ["ingest", str(manifest), "--out", str(tmp_path / "ingest")])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in (tmp_path / "ingest" / "errors.jsonl").read_text().splitlines()]
    assert {x["id"] for x in lines} == {"a", "b"}
    assert all(list(x)[:3] == list(ERROR_ROW_KEYS) or set(ERROR_ROW_KEYS) <= set(x) for x in lines)
    assert all("reason" not in x and x["id"] in x["message"] or x["id"] == "b" for x in lines)
