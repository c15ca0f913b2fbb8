"""Typed configuration: one pydantic model per stage, merged as defaults < YAML < flags.

A project YAML file (``configs/demo.yaml``, ``configs/paper.yaml``) has one top-level key per
stage (``world``, ``annotate``, ``train`` …). Each stage's model lives beside the code that
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


class StageConfig(BaseModel):
    """Base of every stage config: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class ConfigError(ValueError):
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
}

C = TypeVar("C", bound=StageConfig)


def section_class(section: str) -> type[StageConfig]:
    """The typed model of one section, imported on demand (stage modules may be heavy)."""
    try:
        target = SECTIONS[section]
    except KeyError:
        raise ConfigError(f"unknown config section {section!r}; known: {', '.join(SECTIONS)}") from None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def read_yaml(path: Path | str) -> dict[str, Any]:
    """Read a project YAML file; a missing file or a non-mapping top level is a ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
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

    ``overrides`` keys may be dotted (``lora.r``) to reach nested models.
    """
    model = cls or section_class(section)
    data: dict[str, Any] = {}
    if config_path is not None:
        raw = read_yaml(config_path).get(section) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{config_path}: section {section!r} must be a mapping")
        data = _deep_copy(raw)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        _set_dotted(data, key, value)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        where = f"{config_path}: " if config_path else ""
        raise ConfigError(f"{where}[{section}] {_format_validation(e, model)}") from None


def load_project(config_path: Path | str) -> dict[str, StageConfig]:
    """Validate every section of a project file (used by tests and `scenefit config check`)."""
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


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    cur = data
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def _deep_copy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in d.items()}


def dump_yaml(cfg: BaseModel, path: Path | str) -> None:
    """Write a resolved config (run folders keep the exact settings they ran with)."""
    from scenefit.core.files import atomic_write_text

    atomic_write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), path)
