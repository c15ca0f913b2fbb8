"""`scenefit env` — versions of the stack and the compute device.

    scenefit env
    scenefit env --json
"""

from __future__ import annotations

import importlib.metadata as md
import platform
from typing import Annotated

import typer

from scenefit.cli import app
from scenefit.cli.common import console, examples, print_json

STACK = ("torch", "transformers", "tokenizers", "trl", "peft", "accelerate", "datasets", "pillow",
         "pydantic", "typer", "pyarrow", "scikit-learn", "matplotlib", "fastapi", "uvicorn", "httpx",
         "torchvision", "vllm", "deepspeed", "ray")


def environment() -> dict:
    """Versions of the installed stack (None when absent) and the device torch would use."""
    versions = {}
    for name in STACK:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    import torch

    if torch.cuda.is_available():
        device = {"type": "cuda", "count": torch.cuda.device_count(), "name": torch.cuda.get_device_name(0),
                  "bf16": torch.cuda.is_bf16_supported()}
    else:
        device = {"type": "cpu", "threads": torch.get_num_threads()}
    from scenefit import __version__

    return {"scenefit": __version__, "python": platform.python_version(), "platform": platform.platform(),
            "packages": versions, "device": device}


@app.command("env", epilog=examples(__doc__, "env"))
def env_cmd(as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False) -> None:
    """Print versions of the stack (torch, transformers, trl, peft, …) and the device."""
    info = environment()
    if as_json:
        print_json(info)
        return
    from rich.table import Table

    t = Table(title=f"scenefit {info['scenefit']} · Python {info['python']}")
    t.add_column("package")
    t.add_column("version")
    for k, v in info["packages"].items():
        t.add_row(k, v or "[dim]not installed[/]")
    console.print(t)
    console.print(f"device: {info['device']}")
