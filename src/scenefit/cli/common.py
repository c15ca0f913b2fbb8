"""Shared pieces of the command line: the --config option, console, errors, flag help."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Mapping, Optional

import typer
from rich.console import Console
from rich.markup import escape

from scenefit.core.config import ConfigError, StageConfig, flag_help, parse_set, resolve, section_class

console = Console(stderr=True)  # progress and tables go to stderr; stdout stays for data (JSON)

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


def demo_dir() -> Path:
    """$DEMO_DIR (default runs/demo): the run folder `make demo` (`scenefit run --config demo --out runs/demo`) fills."""
    return Path(os.environ.get("DEMO_DIR", "runs/demo"))


def demo_students() -> Path:
    """$DEMO_DIR/students (default runs/demo/students): what `make demo` trains."""
    return demo_dir() / "students"
