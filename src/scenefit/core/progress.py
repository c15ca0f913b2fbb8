"""The one progress interface of long work (ingest, synth, annotate, evaluate, predict, the tiny
model's pretraining): a :class:`Progress` object, handed down from the CLI to the library. The
code that knows a stage's size opens a bar with :meth:`Progress.bar`; the code doing the work
calls :meth:`Progress.advance` as items finish. Bars are tqdm on stderr, so stdout stays free
for a command's JSON; a disabled Progress (or ``progress=None``) makes every call a no-op.

    from scenefit.core.progress import Progress, progress_enabled
    with Progress(enabled=progress_enabled(), unit="sample") as progress:
        progress.bar("evaluate location", total=500)   # closes the previous bar, if any
        predictor.predict(items, progress=progress)    # calls progress.advance(n)
"""

from __future__ import annotations

import os
import sys
from typing import Any, Optional

#: Set to 1 by `scenefit run` for its stages: their bars are drawn although stderr is not a
#: terminal, and the run turns them into progress lines in the stage's log.
PROGRESS_ENV = "SCENEFIT_PROGRESS"


def progress_enabled() -> bool:
    """Whether a CLI verb shows progress bars: on a terminal, or as a stage of `scenefit run`."""
    return sys.stderr.isatty() or os.environ.get(PROGRESS_ENV) == "1"


class Progress:
    """Bars for work that comes in stages, one bar at a time: :meth:`bar` closes the previous bar
    and opens the next; :meth:`advance` moves the open one; :meth:`note` shows a few counts beside
    it; leaving the ``with`` block closes the last. CLI verbs enable it with :func:`progress_enabled`."""

    def __init__(self, enabled: bool = True, unit: str = "it"):
        self.enabled = enabled
        self.unit = unit
        self._bar = None

    def bar(self, desc: str, total: Optional[int], unit: Optional[str] = None) -> "Progress":
        """Open the bar of the next stage (``total`` units; none when disabled or 0) and return self."""
        self.close()
        if self.enabled and total != 0:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit or self.unit, file=sys.stderr, dynamic_ncols=True,
                             smoothing=0.1, mininterval=0.5)
        return self

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def note(self, **counts: Any) -> None:
        """Counts shown after the bar (e.g. ``failed=3``), refreshed with the bar's next update."""
        if self._bar is not None:
            self._bar.set_postfix(counts, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
