"""The one progress interface (scenefit.core.progress.Progress): tqdm bars on stderr, stdout left
to JSON, handed from the CLI down to the library.

    .venv/bin/python -m pytest tests/unit/test_progress.py -q
"""

from __future__ import annotations

import ast
from pathlib import Path

import scenefit
from scenefit.core.progress import Progress

PACKAGE = Path(scenefit.__file__).resolve().parent


def test_bars_go_to_stderr_one_at_a_time(capsys):
    with Progress(unit="sample") as bars:
        bars.bar("evaluate location", 3).advance(3)
        second = bars.bar("shortcut test", 2)  # closes the first
        second.note(failed=1)
        second.advance(1)
        second.advance(1)
    out, err = capsys.readouterr()
    assert out == ""
    assert "evaluate location" in err and "3/3" in err and "shortcut test" in err and "2/2" in err
    assert "failed=1" in err
    assert bars._bar is None  # the last bar is closed on leaving the block


def test_disabled_or_empty_bars_print_nothing(capsys):
    with Progress(enabled=False) as bars:
        bars.bar("predict", 10).advance(5)
    with Progress() as bars:
        bars.bar("predict", 0).advance(0)
        bars.advance(2)  # no bar: a no-op
        bars.note(failed=3)
    assert capsys.readouterr() == ("", "")


def test_library_functions_take_progress_as_the_one_interface():
    """No callback-style progress parameters (on_progress, on_start, progress_factory) or bare
    tqdm outside core/progress.py: long work takes ``progress: Progress``."""
    stray = []
    for p in sorted(PACKAGE.rglob("*.py")):
        if p.relative_to(PACKAGE).as_posix() == "core/progress.py":
            continue
        tree = ast.parse(p.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for a in node.args.args + node.args.kwonlyargs:
                    if a.arg in ("on_progress", "on_start", "progress_factory", "progress_fn"):
                        stray.append(f"{p.name}:{node.lineno} {node.name}({a.arg})")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [getattr(node, "module", None) or ""] + [a.name for a in node.names]
                if any(n == "tqdm" or n.startswith("tqdm.") for n in names):
                    stray.append(f"{p.name}:{node.lineno} imports tqdm")
    assert stray == []
