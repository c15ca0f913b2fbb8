"""`scenefit init DIR`: a commented starter config and an example manifest for your own images.

    scenefit init my-project --base-url http://gpu-box:8000/v1 --model Qwen/Qwen2.5-VL-72B-Instruct

The config is the packaged ``own-data`` config (so the two never drift apart) with your
teacher filled in, the co-judges switched on for ``teachers=3``, and ``run.manifest`` pointing
at the manifest beside it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

from scenefit.core.errors import ScenefitError

CONFIG_NAME = "scenefit.yaml"
MANIFEST_NAME = "manifest.csv"
IMAGES_DIR = "images"
#: The packaged config the starter is made from.
TEMPLATE = "own-data"
#: Lines of the template that are the two co-judges, switched on by teachers=3.
CO_JUDGE_MARK = "#3 "

EXAMPLE_MANIFEST = (
    "id,image,object,x0,y0,x1,y1,group\n"
    "kitchen-1,images/kitchen-1.jpg,cow,120,200,340,420,kitchen\n"
    "kitchen-2,images/kitchen-2.jpg,kettle,410,160,520,300,kitchen\n"
    "beach-1,images/beach-1.jpg,zebra,60,90,200,260,beach\n"
)


class StarterError(ScenefitError, ValueError):
    """The folder already holds a starter, or a value does not fit the config."""


def _yaml_value(value: str) -> str:
    return json.dumps(value)  # a JSON string is a YAML string, whatever characters it holds


def _replace_first(text: str, pattern: str, replacement: str) -> str:
    new, n = re.subn(pattern, lambda m: m.group(1) + replacement, text, count=1, flags=re.M)
    if n != 1:
        raise StarterError(f"the packaged {TEMPLATE} config has no line matching {pattern!r}")
    return new


def starter_config(teachers: int = 1, base_url: Optional[str] = None, model: Optional[str] = None,
                   api_key_env: Optional[str] = None, manifest: str = MANIFEST_NAME) -> str:
    """The text of the starter config (validated: every section loads)."""
    from scenefit.core.config import packaged_configs

    if teachers not in (1, 3):
        raise StarterError(f"--teachers {teachers}: one teacher, or three (the designated one and two co-judges)")
    text = packaged_configs()[TEMPLATE].read_text()
    if teachers == 3:
        text = "\n".join(line.replace(CO_JUDGE_MARK, "", 1) if line.lstrip().startswith(CO_JUDGE_MARK) else line
                         for line in text.splitlines()) + "\n"
    text = _replace_first(text, r"^(\s+manifest: )null", _yaml_value(manifest))
    if model:
        text = _replace_first(text, r"^(\s+model: )Qwen/Qwen2\.5-VL-72B-Instruct", _yaml_value(model))
    if base_url:
        text = _replace_first(text, r"^(\s+base_urls: )\[http://localhost:8000/v1\]", f"[{_yaml_value(base_url)}]")
    if api_key_env:
        text = _replace_first(text, r"^(\s+api_key_env: )null", _yaml_value(api_key_env))
    check_config_text(text)
    return text


def check_config_text(text: str) -> None:
    """Every section of a config text validates (a StarterError names what does not)."""
    import tempfile

    from scenefit.core.config import ConfigError, load_project

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / CONFIG_NAME
        path.write_text(text)
        try:
            load_project(path)
        except ConfigError as e:
            raise StarterError(f"the starter config does not load: {e}") from None


def write_starter(folder: Path, teachers: int = 1, base_url: Optional[str] = None, model: Optional[str] = None,
                  api_key_env: Optional[str] = None, force: bool = False) -> dict[str, Path]:
    """Write FOLDER/scenefit.yaml, FOLDER/manifest.csv (an example) and FOLDER/images/."""
    from scenefit.core.files import atomic_write_text

    config, manifest = folder / CONFIG_NAME, folder / MANIFEST_NAME
    existing = [p for p in (config, manifest) if p.exists()]
    if existing and not force:
        raise StarterError(f"{', '.join(str(p) for p in existing)} already there; --force replaces "
                           f"{'them' if len(existing) > 1 else 'it'}")
    text = starter_config(teachers, base_url, model, api_key_env)
    (folder / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    atomic_write_text(text, config)
    atomic_write_text(EXAMPLE_MANIFEST, manifest)
    return {"config": config, "manifest": manifest, "images": folder / IMAGES_DIR}
