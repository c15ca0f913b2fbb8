"""Typed configuration: one pydantic model per stage, merged as defaults < YAML < flags.

A project YAML file has one top-level key per stage (``world``, ``annotate``, ``train`` …).
The package ships a few (``scenefit/configs/NAME.yaml``: ``demo``, ``paper``, ``own-data``), and
every ``--config`` takes one of their names or a path (:func:`find_config`; ``scenefit configs``
lists them, ``scenefit init DIR`` writes a starter for your own data). Each stage's model lives beside the code that
uses it and is named in :data:`SECTIONS`; this module only loads and merges. Every field of
every stage model carries a ``description`` (a test checks it), which is also the ``--help``
text of the flag that overrides it (see :func:`flag_help`).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Mapping, Optional, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from scenefit.core.errors import ScenefitError


class StageConfig(BaseModel):
    """Base of every stage config: unknown keys are errors, assignments are validated, and a
    number must be finite (``--set learning_rate=inf`` or ``nan`` is refused, naming the field)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False)


class ConfigError(ScenefitError, ValueError):
    """A config file or flag that does not validate; the message names file, section and field."""


#: section name in the YAML file -> "module:Class" of its typed model.
SECTIONS: dict[str, str] = {
    "world": "scenefit.testbed.world:WorldConfig",
    "tiny_model": "scenefit.testbed.tiny_model:TinyModelConfig",
    "ingest": "scenefit.data.ingest:IngestConfig",
    "annotate": "scenefit.teachers.config:AnnotateConfig",
    "consensus": "scenefit.data.consensus:ConsensusConfig",
    "split": "scenefit.data.split:SplitConfig",
    "datasets": "scenefit.data.datasets:DatasetsConfig",
    "train": "scenefit.train.config:TrainConfig",
    "evaluate": "scenefit.evaluate.config:EvaluateConfig",
    "predict": "scenefit.predict:PredictConfig",
    "serve": "scenefit.serve.config:ServeConfig",
    "serve_teacher": "scenefit.serve.config:ServeTeacherConfig",
    "run": "scenefit.pipeline.config:RunConfig",
}

#: Where the packaged configs live (package data), and the suffix of their files.
CONFIGS_PACKAGE_DIR = "configs"
CONFIG_SUFFIX = ".yaml"

C = TypeVar("C", bound=StageConfig)


def section_class(section: str) -> type[StageConfig]:
    """The typed model of one section, imported on demand (stage modules may be heavy)."""
    try:
        target = SECTIONS[section]
    except KeyError:
        raise ConfigError(f"unknown config section {section!r}; known: {', '.join(SECTIONS)}") from None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def packaged_configs_dir() -> Path:
    """The folder of the configs shipped inside the package (a real folder in a wheel install,
    so `accelerate launch --config_file` can name a file in it)."""
    from importlib.resources import files

    return Path(str(files("scenefit") / CONFIGS_PACKAGE_DIR))


def packaged_configs() -> dict[str, Path]:
    """Name -> file of every packaged project config (``demo``, ``paper``, ``own-data``), and of
    the accelerate launch configs as ``accelerate/NAME``."""
    root = packaged_configs_dir()
    found = {p.stem: p for p in sorted(root.glob(f"*{CONFIG_SUFFIX}"))}
    found.update({f"{p.parent.name}/{p.stem}": p for p in sorted(root.glob(f"*/*{CONFIG_SUFFIX}"))})
    return found


def project_config_names() -> list[str]:
    """The names ``--config`` takes (the packaged project configs, not the accelerate ones)."""
    return [name for name in packaged_configs() if "/" not in name]


def find_config(config: Path | str) -> Path:
    """A ``--config`` value as a file: an existing file as given, else a packaged config by name
    (``demo`` or ``demo.yaml``); anything else is a ConfigError naming what exists."""
    p = Path(config)
    if p.is_file():
        return p
    name = p.name[: -len(CONFIG_SUFFIX)] if p.name.endswith(CONFIG_SUFFIX) else p.name
    packaged = packaged_configs()
    if p.parent == Path(".") and name in packaged and "/" not in name:
        return packaged[name]
    raise ConfigError(
        f"config not found: {config} is neither a file nor a packaged config; packaged: "
        f"{', '.join(project_config_names())} (`scenefit configs` lists them); `scenefit init DIR` writes a "
        "starter config for your own images and teacher")


def read_yaml(path: Path | str) -> dict[str, Any]:
    """Read a project YAML file (a path or a packaged config's name, :func:`find_config`); a
    missing file or a non-mapping top level is a ConfigError."""
    p = find_config(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections, got {type(data).__name__}")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{p}: unknown section(s) {unknown}; known: {', '.join(SECTIONS)}")
    return data


def _format_validation(err: ValidationError, model: type[BaseModel]) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(section)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden" and len(e["loc"]) == 1:
            # the usual slip: a key spelt wrong, or prefixed with its section in --set
            msg = f"not a setting of this section (known: {', '.join(model.model_fields)})"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def resolve(
    section: str,
    config_path: Optional[Path | str] = None,
    overrides: Optional[Mapping[str, Any]] = None,
    cls: Optional[type[C]] = None,
) -> C:
    """Build one stage's config: class defaults, then the YAML section, then non-None flags.

    ``overrides`` keys may be dotted (``lora.r``) to reach nested models. A field whose type is
    another section's model (``evaluate.predict``) starts from that section of the same file, so
    its settings are written once: ``evaluate.predict.batch_size`` overrides ``predict.batch_size``
    for evaluate only.
    """
    model = cls or section_class(section)
    data: dict[str, Any] = {}
    if config_path is not None:
        sections = read_yaml(config_path)
        data = _section(sections, section, config_path)
        for field, nested in _nested_sections(model).items():
            own = data.get(field)
            if own is not None and not isinstance(own, dict):
                raise ConfigError(f"{config_path}: {section}.{field} must be a mapping")
            data[field] = _deep_merge(_section(sections, nested, config_path), own or {})
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        set_dotted(data, key, value)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        where = f"{config_path}: " if config_path else ""
        raise ConfigError(f"{where}[{section}] {_format_validation(e, model)}") from None


def _section(sections: Mapping[str, Any], name: str, config_path: Path | str) -> dict[str, Any]:
    raw = sections.get(name) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{config_path}: section {name!r} must be a mapping")
    return _deep_copy(raw)


def _nested_sections(model: type[BaseModel]) -> dict[str, str]:
    """Fields of ``model`` typed with another section's model -> that section's name."""
    by_target = {target: name for name, target in SECTIONS.items()}
    out = {}
    for field, info in model.model_fields.items():
        t = info.annotation
        if isinstance(t, type) and issubclass(t, StageConfig):
            name = by_target.get(f"{t.__module__}:{t.__name__}") or next(
                (n for n in SECTIONS if section_class(n) is t), None)
            if name:
                out[field] = name
    return out


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def load_project(config_path: Path | str) -> dict[str, StageConfig]:
    """Validate every section of a project file (tests load every shipped config with it)."""
    data = read_yaml(config_path)
    return {name: resolve(name, config_path) for name in data}


def flag_help(cls: type[BaseModel], field: str) -> str:
    """The field's description, so a flag's help is never a hand-copied second text."""
    info = cls.model_fields[field]
    text = info.description or ""
    default = info.get_default(call_default_factory=True)
    if default is not None and not isinstance(default, (list, dict, BaseModel)):
        text += f" [default: {default}]"
    return text


def parse_set(items: Optional[list[str]]) -> dict[str, Any]:
    """``--set key.path=value`` items into overrides; values are read as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` in nested mappings; a number reaches into a list that is already there
    (``teachers.0.max_tokens``: the first teacher's)."""
    parts = key.split(".")
    cur: Any = data
    for i, p in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(cur, list):
            if not p.isdigit() or int(p) >= len(cur):
                raise ConfigError(f"--set {key}: {p!r} is not an index of the list there (it has {len(cur)} item(s))")
            if last:
                cur[int(p)] = value
            else:
                cur = cur[int(p)]
            continue
        if last:
            cur[p] = value
            break
        nxt = cur.get(p)
        if not isinstance(nxt, (dict, list)):
            nxt = {}
            cur[p] = nxt
        cur = nxt


def _deep_copy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deep_copy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deep_copy(v) for v in d]
    return d


def dump_yaml(cfg: BaseModel, path: Path | str) -> None:
    """Write a resolved config (run folders keep the exact settings they ran with)."""
    from scenefit.core.files import atomic_write_text

    atomic_write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), path)
