"""The one progress helper (scenefit.core.progress): tqdm bars on stderr, stdout left to JSON.

    .venv/bin/python -m pytest tests/unit/test_progress.py -q
"""

from __future__ import annotations

from scenefit.core.progress import Progress


def test_bars_go_to_stderr_one_at_a_time(capsys):
    with Progress(unit="sample") as bars:
        first = bars.bar("evaluate location", 3)
        first(3)
        second = bars.bar("shortcut test", 2)  # closes the first
        second(1)
        second(1)
    out, err = capsys.readouterr()
    assert out == ""
    assert "evaluate location" in err and "3/3" in err and "shortcut test" in err and "2/2" in err
    assert bars._bar is None  # the last bar is closed on leaving the block


def test_disabled_or_empty_bars_print_nothing(capsys):
    with Progress(enabled=False) as bars:
        bars.bar("predict", 10)(5)
    with Progress() as bars:
        bars.bar("predict", 0)(0)
        bars.advance(2)  # no bar: a no-op
    assert capsys.readouterr() == ("", "")
