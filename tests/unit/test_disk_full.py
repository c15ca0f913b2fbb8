"""A full (or read-only) disk during `train` and `evaluate` ends in one clear line naming the
output folder and what a rerun does, not a library's traceback (issue 27.6, probes).

    .venv/bin/python -m pytest tests/unit/test_disk_full.py -q

The disk is made full where the libraries write (safetensors for a checkpoint, the OS for a
report), with the exceptions and texts a real full disk gave on a small tmpfs: safetensors'
"I/O error: No space left on device (os error 28)" mid-checkpoint, the OS's ENOSPC in evaluate.
"""

from __future__ import annotations

import errno

from typer.testing import CliRunner

from scenefit.cli import app
from scenefit.cli.common import disk_problem


class SafetensorLikeError(Exception):
    """safetensors' SafetensorError is a bare Exception carrying the OS error as text."""


def test_disk_problems_are_recognised_however_they_are_wrapped():
    assert disk_problem(OSError(errno.ENOSPC, "No space left on device")) == "full"
    assert disk_problem(SafetensorLikeError("Error while serializing: I/O error: No space left on device (os error 28)")) == "full"
    assert disk_problem(RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed")) is None
    try:
        try:
            raise OSError(errno.EROFS, "Read-only file system")
        except OSError as inner:
            raise RuntimeError("file write failed") from inner
    except RuntimeError as outer:
        assert disk_problem(outer) == "read-only"
    assert disk_problem(ValueError("bad value")) is None


def test_train_on_a_full_disk_says_so_and_how_to_resume(tmp_path, monkeypatch):
    import scenefit.train.trainer as trainer

    def full(*a, **kw):
        raise SafetensorLikeError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(trainer, "train_student", full)
    (tmp_path / "data").mkdir()
    r = CliRunner().invoke(app, ["train", "--criterion", "location", "--data", str(tmp_path / "data"), "--model", "m",
                                 "--out", str(tmp_path / "out")])
    out = " ".join(r.output.split())
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert f"the disk holding {tmp_path / 'out'} is full" in out and "resumes from the last complete checkpoint" in out


def test_evaluate_on_a_full_disk_says_so(tmp_path, monkeypatch):
    import scenefit.evaluate.runner as runner

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runner, "evaluate_dirs", full)
    for name in ("students", "data"):
        (tmp_path / name).mkdir()
    r = CliRunner().invoke(app, ["evaluate", "--students", str(tmp_path / "students"), "--data", str(tmp_path / "data"),
                                 "--out", str(tmp_path / "eval")])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert f"the disk holding {tmp_path / 'eval'} is full" in " ".join(r.output.split())


def test_other_errors_pass_through(tmp_path, monkeypatch):
    import scenefit.evaluate.runner as runner

    monkeypatch.setattr(runner, "evaluate_dirs", lambda *a, **kw: (_ for _ in ()).throw(KeyError("a bug")))
    for name in ("students", "data"):
        (tmp_path / name).mkdir()
    r = CliRunner().invoke(app, ["evaluate", "--students", str(tmp_path / "students"), "--data", str(tmp_path / "data"),
                                 "--out", str(tmp_path / "eval")])
    assert isinstance(r.exception, KeyError)  # a bug stays a traceback: it is not the disk
