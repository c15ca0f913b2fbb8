"""The layout CONTRIBUTING.md promises: a root of packages only and one CLI file per verb (the
import floors and the test bed's boundary: tests/unit/test_imports.py).

    .venv/bin/python -m pytest tests/unit/test_layout.py -q
"""

from __future__ import annotations

from pathlib import Path

import scenefit
from scenefit.cli import app

PACKAGE = Path(scenefit.__file__).resolve().parent


def test_the_package_root_holds_only_packages():
    modules = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert modules == [], f"modules at the package root: {modules}; put them in the room they belong to"


def test_every_verb_has_its_own_cli_file():
    import typer.main

    group = typer.main.get_group(app)
    files = {p.stem for p in (PACKAGE / "cli").glob("*.py")}
    helpers_of = {"parse": "annotate", "import-answers": "annotate"}  # answers' verbs share the teachers' entry
    for verb in group.commands:
        entry = helpers_of.get(verb, verb).replace("-", "_")
        assert entry in files, f"`scenefit {verb}` has no cli/{entry}.py"

