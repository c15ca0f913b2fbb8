"""The one progress-bar style of long CLI work (ingest, synth, annotate, evaluate, predict, the tiny
model's pretraining): tqdm on stderr, so stdout stays free for a command's JSON.

    from scenefit.core.progress import Progress
    with Progress(enabled=sys.stderr.isatty()) as bars:
        advance = bars.bar("evaluate location", total=500)   # closes the previous bar, if any
        advance(16)
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Optional

#: Set to 1 by `scenefit run` for its stages: their bars are drawn although stderr is not a
#: terminal, and the run turns them into progress lines in the stage's log.
PROGRESS_ENV = "SCENEFIT_PROGRESS"


def progress_enabled() -> bool:
    """Whether a CLI verb shows progress bars: on a terminal, or as a stage of `scenefit run`."""
    return sys.stderr.isatty() or os.environ.get(PROGRESS_ENV) == "1"


def progress_bar(total: Optional[int], enabled: bool, desc: str, unit: str = "it"):
    """A tqdm bar over ``total`` units, or None when disabled or there is nothing to do."""
    if not enabled or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, smoothing=0.1,
                mininterval=0.5)


class Progress:
    """Bars for a verb whose work comes in stages, one bar at a time (:func:`progress_bar`):
    :meth:`bar` closes the previous bar and returns the ``advance(n)`` of the new one; leaving
    the ``with`` block closes the last. Disabled, every call is a no-op. CLI verbs enable it with
    :func:`progress_enabled`."""

    def __init__(self, enabled: bool = True, unit: str = "it"):
        self.enabled = enabled
        self.unit = unit
        self._bar = None

    def bar(self, desc: str, total: Optional[int]) -> Callable[[int], None]:
        self.close()
        self._bar = progress_bar(total, self.enabled, desc, self.unit)
        return self.advance

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
