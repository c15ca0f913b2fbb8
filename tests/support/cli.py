"""Running scenefit verbs in-process from tests."""

from __future__ import annotations

from typer.testing import CliRunner

from scenefit.cli import app

runner = CliRunner()


def run_verb(*argv: str) -> None:
    """``scenefit ARGV…`` in this process; a non-zero exit fails the test with the verb's output."""
    res = runner.invoke(app, list(argv))
    assert res.exit_code == 0, f"{argv[0]}: {res.output}"
