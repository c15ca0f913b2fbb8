"""Shared pieces of the command line: the --config option, console, errors, flag help."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Mapping, Optional

import typer
from rich.console import Console
from rich.markup import escape

from scenefit.core.config import ConfigError, StageConfig, flag_help, parse_set, resolve, section_class

# Progress and tables go to stderr; stdout stays for data (JSON). Written to a file or a pipe (a run's
# logs, `make demo | tee`), rich would squeeze tables into 80 columns and cut their cells: 120 there.
console = Console(stderr=True, width=None if sys.stderr.isatty() or "COLUMNS" in os.environ else 120)

ConfigOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--config",
        "-c",
        help="Project config: a packaged one by name (demo, paper, own-data; `scenefit configs` lists them) or a YAML "
        "file (`scenefit init DIR` writes one for your own data); its section for this verb sets defaults, flags "
        "override it.",
        exists=False,
        dir_okay=False,
    ),
]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="Override a field of this verb's config section: --set key=value (keys as in the "
                 "YAML section, without its name; dotted keys reach nested fields). Repeatable."),
]


def examples(module_doc: Optional[str], verb: str) -> Optional[str]:
    """The ``scenefit VERB …`` lines of a CLI module's docstring, as the verb's --help epilog
    (the examples are written once, at the top of each entry file)."""
    lines = [" ".join(line.split()) for line in (module_doc or "").splitlines()]
    found = [line for line in lines if line == f"scenefit {verb}" or line.startswith(f"scenefit {verb} ")]
    if not found:
        return None
    return "Examples:\n\n" + "\n\n".join(escape(line) for line in found)


def fhelp(section: str, field: str) -> str:
    """Help text of the flag that overrides ``field`` of ``section`` (from its description);
    escaped, since help is rich markup and would swallow "[default: …]"."""
    return escape(flag_help(section_class(section), field))


def error_line(message: str, style: str = "red") -> None:
    """Print ``error: message``; the message quotes user data, so it is never read as markup."""
    console.print(f"[{style}]error:[/] {escape(message)}")


def fail(message: str, code: int = 2) -> "typer.Exit":
    """Print a clear error and exit non-zero (no traceback for user errors)."""
    error_line(message, "bold red")
    raise typer.Exit(code)


#: How a full or read-only disk shows in the errors of the libraries that write our files (torch,
#: safetensors and Arrow wrap the OS error in their own exception types and texts).
_DISK_FULL_WORDS = ("no space left on device", "os error 28", "database or disk is full", "disk quota exceeded")
_READ_ONLY_WORDS = ("read-only file system", "os error 30")


def disk_problem(exc: BaseException) -> Optional[str]:
    """"full" or "read-only" when ``exc`` (or an exception it was raised from) is the disk
    refusing a write — ENOSPC, EDQUOT or EROFS, however a library wrapped it — else None."""
    import errno

    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = getattr(current, "errno", None)
        text = str(current).lower()
        if code in (errno.ENOSPC, errno.EDQUOT) or any(w in text for w in _DISK_FULL_WORDS):
            return "full"
        if code == errno.EROFS or any(w in text for w in _READ_ONLY_WORDS):
            return "read-only"
        current = current.__cause__ or current.__context__
    return None


@contextlib.contextmanager
def disk_errors(where: Path, rerun: str):
    """Inside it, a write the disk refuses (full, read-only) ends the command with one error line
    naming ``where`` and what a rerun does (``rerun``), not a library's traceback."""
    try:
        yield
    except Exception as e:
        problem = disk_problem(e)
        if problem is None:
            raise
        fail(f"the disk holding {where} is {problem} ({type(e).__name__}: {str(e).strip().splitlines()[-1][:200]}); "
             f"{'free some space' if problem == 'full' else 'make it writable'} and {rerun}")


def load_config(section: str, config: Optional[Path], sets: Optional[list[str]] = None, **flags: Any) -> StageConfig:
    """defaults < YAML section < --set < explicit flags; a validation error exits with its message."""
    try:
        overrides: dict[str, Any] = parse_set(sets)
        overrides.update({k: v for k, v in flags.items() if v is not None})
        return resolve(section, config, overrides)
    except ConfigError as e:
        fail(str(e))
        raise  # unreachable; keeps type checkers quiet


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def synthetic_banner(is_synthetic: bool) -> None:
    """Every output that comes from the synthetic world says so."""
    if is_synthetic:
        from scenefit import SYNTHETIC_NOTICE

        console.print(f"[yellow]{SYNTHETIC_NOTICE}[/]")


def summary_table(title: str, rows: Mapping[str, Any]) -> None:
    from rich.table import Table

    t = Table(title=title, show_header=False)
    for k, v in rows.items():
        t.add_row(str(k), str(v))
    console.print(t)


def open_store(db: Path):
    """The answer store at ``db``, or a clear error (a folder, a file that is not SQLite)."""
    from scenefit.teachers.store import AnnotationStore, StoreError

    try:
        return AnnotationStore(db)
    except StoreError as e:
        fail(str(e))
        raise  # unreachable


JsonOpt = Annotated[bool, typer.Option("--json", help="Also print the report / manifest as JSON on stdout.")]


#: Addresses that only this machine can reach: binding anything else without a token is refused
#: unless --insecure-no-auth says it is meant (both servers).
LOOPBACK = ("127.0.0.1", "localhost", "::1")

#: Distributions of the ``serve`` extra (pyproject.toml), checked before the server modules load.
SERVE_EXTRA = ("fastapi", "uvicorn", "python-multipart")


def require_serve_extra() -> None:
    """Fail with the install command, not an import traceback, when the serve extra is missing."""
    from importlib.metadata import PackageNotFoundError, version

    missing = []
    for dist in SERVE_EXTRA:
        try:
            version(dist)
        except PackageNotFoundError:
            missing.append(dist)
    if missing:
        fail(f"scenefit serve needs the 'serve' extra (missing: {', '.join(missing)}): pip install 'scenefit[serve]'")


def demo_dir() -> Path:
    """$DEMO_DIR (default runs/demo): the run folder `make demo` (`scenefit run --config demo --out runs/demo`) fills."""
    return Path(os.environ.get("DEMO_DIR", "runs/demo"))


def demo_students() -> Path:
    """$DEMO_DIR/students (default runs/demo/students): what `make demo` trains."""
    return demo_dir() / "students"
