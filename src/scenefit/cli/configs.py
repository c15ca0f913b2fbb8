"""`scenefit configs` — the project configs shipped inside the package, by name and path.

    scenefit configs
    scenefit configs demo > my-config.yaml
    accelerate launch --config_file "$(scenefit configs --path accelerate/multi_gpu_ddp)" "$(command -v scenefit)" train …
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from scenefit.cli import app
from scenefit.cli.common import examples, fail, print_json


def _summary(text: str) -> str:
    """A config's first comment line, without the '#'."""
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


@app.command("configs", epilog=examples(__doc__, "configs"))
def configs_cmd(
    name: Annotated[Optional[str], typer.Argument(help="Print this config's text (to copy and edit) instead of the list.")] = None,
    path: Annotated[bool, typer.Option("--path", help="With NAME: print only its file path.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="The list as JSON.")] = False,
) -> None:
    """List the packaged configs: every verb's config option takes their names (demo, paper,
    own-data) from any folder; accelerate/* are launch configs for multi-GPU training.

    `scenefit init DIR` writes a commented starter config and manifest for your own images.
    """
    from scenefit.core.config import packaged_configs

    found = packaged_configs()
    if name is not None:
        key = name[:-5] if name.endswith(".yaml") else name
        if key not in found:
            fail(f"no packaged config {name!r}; packaged: {', '.join(found)}")
        typer.echo(str(found[key]) if path else found[key].read_text(), nl=path)
        return
    if json_out:
        print_json({k: {"path": str(p), "about": _summary(p.read_text())} for k, p in found.items()})
        return
    width = max(len(k) for k in found)
    for k, p in found.items():
        typer.echo(f"{k:<{width}}  {p}\n{'':<{width}}  {_summary(p.read_text())}")
