"""The one progress-bar style of long CLI work (annotation, vision pretraining): tqdm on stderr,
so stdout stays free for a command's JSON."""

from __future__ import annotations

import sys


def progress_bar(total: int, enabled: bool, desc: str, unit: str):
    """A tqdm bar over ``total`` units, or None when disabled or there is nothing to do."""
    if not enabled or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, smoothing=0.1,
                mininterval=0.5)
