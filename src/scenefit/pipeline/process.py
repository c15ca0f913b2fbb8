"""How `scenefit run` starts a stage's process: this interpreter's own scenefit, an environment
that turns progress bars on, and (Linux) a stage that dies with the runner.

    from scenefit.pipeline.process import child_env, stage_command
    subprocess.Popen(stage_command(["split", "RUN/consensus/consensus.parquet", "--out", "RUN/split"]), env=child_env())
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Callable, Optional

from scenefit.core.progress import PROGRESS_ENV

_PR_SET_PDEATHSIG = 1


def parent_death_hook() -> Optional[Callable[[], None]]:
    """Linux: a function for the child to run between fork and exec that asks the kernel to send
    it SIGTERM when the runner dies (libc is loaded here, so the child only makes one call)."""
    if sys.platform != "linux":
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return lambda: libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def child_env() -> dict[str, str]:
    """The environment of a stage: unbuffered output, progress bars on (they become log lines)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **{PROGRESS_ENV: "1"})
    env.setdefault("COLUMNS", "120")  # tables in the logs as wide as a usual terminal
    return env


def stage_command(argv: list[str]) -> list[str]:
    """The process of one stage: this interpreter's own scenefit (the same install, any folder)."""
    return [sys.executable, "-m", "scenefit.cli", *argv]
