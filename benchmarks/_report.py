"""The benchmarks' one output contract: ratio lines that ``run_all.py`` reads, and where files go.

    from _report import ratio, smoke_flag, out_dir
    ratio("fast_vs_reference", 11.8, what="fast path 103.9 vs reference 8.81 images/s", goal=">= 10", met=True)
    # prints: RATIO fast_vs_reference=11.8 {"what": "...", "goal": ">= 10", "met": true}

Every script in ``benchmarks/`` (not starting with ``_``) is discovered by ``run_all.py`` and must

- accept ``--smoke``: the smallest size, seconds, building everything it needs itself (no
  ``make demo``), same code paths; the test suite runs every script this way;
- print at least one ``RATIO name=value`` line (this module's :func:`ratio`): a figure measured
  against a baseline of the same run (a ratio, a share, or a difference the name says it is),
  never a bare speed; ``run_all.py`` copies them into ``RESULTS.md``'s generated table;
- optionally set a module-level ``BENCH_ARGS``: the arguments ``make bench`` runs it with (a list
  of strings; default: none), or the string ``"smoke"`` when its full run does not belong in
  ``make bench`` (hours, or a GPU) — ``make bench`` then runs its smoke mode only and says so;
- write any files under :func:`out_dir` (``$SCENEFIT_BENCH_OUT`` when ``run_all.py`` sets it);
- when it cannot run here (an optional extra such as ``ray`` not installed), call :func:`skipped`
  and exit 0: ``run_all.py`` reports it as skipped, with the reason, instead of failed.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Optional

#: A ratio line: ``RATIO <name>=<value>`` and, optionally, one JSON object with its context.
RATIO_LINE = re.compile(r"^RATIO (?P<name>[A-Za-z0-9_.\-]+)=(?P<value>\S+)(?: (?P<info>\{.*\}))?\s*$")


def ratio(name: str, value: float, what: str = "", goal: Optional[str] = None, met: Optional[bool] = None,
          **extra: Any) -> str:
    """Print (and return) one ratio line. ``what`` says what was divided by what, with both
    figures; ``goal``/``met`` when the project set one; ``extra`` any further JSON-able context."""
    info = {"what": what, **({"goal": goal} if goal is not None else {}), **({"met": bool(met)} if met is not None else {}),
            **extra}
    text = "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{float(value):.4g}"
    line = f"RATIO {name}={text} {json.dumps(info, ensure_ascii=False, default=str)}"
    print(line, flush=True)
    return line


#: The line of a script that cannot run here: ``SKIPPED <reason>``.
SKIPPED_LINE = re.compile(r"^SKIPPED (?P<reason>.+)$", re.MULTILINE)


def skipped(reason: str) -> str:
    """Print (and return) the line saying this script cannot run here and why."""
    line = f"SKIPPED {reason}"
    print(line, flush=True)
    return line


def parse_skipped(text: str) -> Optional[str]:
    """The reason of a script's ``SKIPPED`` line, or None."""
    m = SKIPPED_LINE.search(text)
    return m["reason"].strip() if m else None


def parse_ratios(text: str) -> list[dict[str, Any]]:
    """Every ratio line of a script's output: ``{"name", "value" (float), **info}``."""
    out = []
    for line in text.splitlines():
        m = RATIO_LINE.match(line.strip())
        if not m:
            continue
        try:
            value = float(m["value"])
        except ValueError:
            continue
        info = json.loads(m["info"]) if m["info"] else {}
        out.append({"name": m["name"], "value": value, **info})
    return out


def smoke_flag(parser) -> None:
    """Add the ``--smoke`` flag every benchmark takes."""
    parser.add_argument("--smoke", action="store_true",
                        help="smallest size (seconds), everything built here: checks the script runs, measures nothing")


def out_dir(name: str) -> Path:
    """Where a benchmark writes its files: ``$SCENEFIT_BENCH_OUT`` (set by run_all.py), else a new
    temporary folder."""
    env = os.environ.get("SCENEFIT_BENCH_OUT")
    folder = Path(env) if env else Path(tempfile.mkdtemp(prefix=f"scenefit-bench-{name}-"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def shown_command(script: str, argv: list[str], path_flags=("--out", "--results", "--write-results")) -> str:
    """The command line as a results file shows it: the values of path flags (machine-specific)
    replaced by the flag's name in capitals."""
    shown, hide = [f"benchmarks/{script}"], False
    for arg in argv:
        flag = arg.split("=", 1)[0]
        if hide:
            shown.append(shown[-1].lstrip("-").upper().replace("-", "_"))
            hide = False
        elif flag in path_flags and "=" in arg:
            shown.append(f"{flag}={flag.lstrip('-').upper().replace('-', '_')}")
        else:
            shown.append(arg)
            hide = arg in path_flags
    return " ".join(shown)
