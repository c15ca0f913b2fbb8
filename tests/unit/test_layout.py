"""The layout CONTRIBUTING.md promises: a root of packages only, one CLI file per verb, and a
test bed no product module loads at import time.

    .venv/bin/python -m pytest tests/unit/test_layout.py -q
"""

from __future__ import annotations

import subprocess
import sys
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


def test_no_product_module_imports_the_test_bed():
    product = [
        "scenefit." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts)
        for p in PACKAGE.rglob("*.py")
        if p.relative_to(PACKAGE).parts[0] not in ("testbed", "cli") and p.name != "__init__.py"
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {product!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in sys.modules if m.startswith('scenefit.testbed')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"importing product modules loaded the test bed: {out}"
