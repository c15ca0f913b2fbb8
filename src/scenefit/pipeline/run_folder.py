"""A run folder and the settings it runs with: RUN/run.yaml, resolved once when the run starts.

    from scenefit.pipeline.run_folder import RunFolder, start_or_continue
    run = start_or_continue(Path("runs/demo"), config="demo", manifest=None, sets=[])
    run = RunFolder(Path("runs/demo"))             # read back (scenefit status)

``run.yaml`` is a whole project config (one section per stage, as ``--config`` takes) with the
``--set`` overrides applied and the manifest made absolute, so every stage of the run, and every
later ``scenefit run --out RUN`` or ``scenefit status RUN`` from any folder, reads the same
settings. Starting again with other settings is refused (naming the keys that differ) unless
``--reconfigure`` says to record them.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Optional

import yaml

from scenefit.core.config import SECTIONS, ConfigError, StageConfig, parse_set, read_yaml, resolve, set_dotted

RUN_FILE = "run.yaml"


class RunFolder:
    """RUN/ and where each stage writes in it (the same layout `make demo` always had)."""

    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()
        self.config_file = self.root / RUN_FILE
        self.logs = self.root / "logs"
        self.model = self.root / "model"
        self.world = self.root / "world"
        self.ingest = self.root / "ingest"
        self.db = self.root / "annotate" / "annotations.sqlite"
        self.consensus = self.root / "consensus"
        self.split = self.root / "split"
        self.datasets = self.root / "datasets"
        self.students = self.root / "students"
        self.report = self.root / "report"
        self.serve = self.root / "serve"

    def exists(self) -> bool:
        return self.config_file.is_file()

    @cached_property
    def settings(self):
        """The run's own section (:class:`scenefit.pipeline.config.RunConfig`)."""
        return self.section("run")

    def section(self, name: str) -> StageConfig:
        """One stage's settings as this run resolves them."""
        return resolve(name, self.config_file)

    @property
    def samples_manifest(self) -> Path:
        """What ingest reads: the user's manifest, or the synthetic world's."""
        m = self.settings.manifest
        return Path(m) if m is not None else self.world / "manifest.parquet"


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): d}


def differences(old: dict, new: dict) -> list[str]:
    """Dotted keys whose values differ between two configs (lists compared whole)."""
    a, b = _flat(old), _flat(new)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _apply_sets(data: dict[str, Any], sets: Optional[list[str]]) -> None:
    for key, value in parse_set(sets).items():
        section = key.split(".")[0]
        if section not in SECTIONS or "." not in key:
            raise ConfigError(f"--set {key}=…: `scenefit run` takes SECTION.KEY=VALUE (e.g. train.max_steps=20); "
                              f"sections: {', '.join(SECTIONS)}")
        set_dotted(data, key, value)


def _header(source: str, sets: Optional[list[str]]) -> str:
    given = f"{source}" + (" with --set " + " --set ".join(sets) if sets else "")
    return ("# scenefit run: the settings of this run folder, resolved once when it started.\n"
            f"# From: {given}\n"
            "# Continue it from any folder with `scenefit run --out <this folder>`; `scenefit status <this folder>`\n"
            "# shows where it stands. Another config for it: `scenefit run ... --reconfigure`.\n")


def start_or_continue(root: Path, config: Optional[str], manifest: Optional[Path], sets: Optional[list[str]],
                      reconfigure: bool = False) -> RunFolder:
    """Record the run's settings in RUN/run.yaml (first start, or --reconfigure) or check that
    what was given matches them; return the run folder. ConfigError on anything wrong."""
    from scenefit.core.config import find_config
    from scenefit.core.files import atomic_write_text

    run = RunFolder(root)
    old = read_yaml(run.config_file) if run.exists() else None
    if config is None and manifest is None and not sets:
        if old is None:
            raise ConfigError(f"{run.root} holds no run yet (no {RUN_FILE}): start one with `scenefit run --config "
                              "NAME --out RUN` (`scenefit configs` lists the packaged configs; `scenefit init DIR` writes "
                              "one for your own data)")
        return run
    if config is not None:
        source = find_config(config)
        data = read_yaml(source)
        origin = f"{config}" if str(config) != str(source) else str(source.resolve())
    elif old is not None:
        data, source, origin = _copy(old), None, f"{run.config_file} (as recorded)"
    else:
        raise ConfigError(f"{run.root} holds no run yet: give --config NAME or FILE to start it")
    data.setdefault("run", {})
    data["run"] = dict(data["run"] or {})
    _apply_sets(data, sets)
    if manifest is not None:
        data["run"]["manifest"] = str(Path(manifest).resolve())
    elif data["run"].get("manifest") and source is not None:
        # a manifest named in a config file is relative to that file's folder
        data["run"]["manifest"] = str((source.resolve().parent / str(data["run"]["manifest"])).resolve())
    for name in data:  # every section validates before anything is written
        resolve_section(name, data[name], origin)
    _check_samples(data)
    if old is not None and not reconfigure:
        changed = differences(old, data)
        if changed:
            raise ConfigError(
                f"{run.root} was started with other settings ({', '.join(changed[:8])}"
                f"{' …' if len(changed) > 8 else ''} differ from {RUN_FILE}): continue it as it is with `scenefit run "
                f"--out {run.root}`, start a new --out, or pass --reconfigure to record these settings (stages already "
                "done are kept; --from STAGE runs them again)")
        return run
    run.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(_header(origin, sets) + yaml.safe_dump(data, sort_keys=False), run.config_file)
    return RunFolder(root)


def _check_samples(data: dict[str, Any]) -> None:
    """A run needs samples: a manifest that exists, or a synthetic world to draw."""
    manifest = data["run"].get("manifest")
    if manifest is None and "world" not in data:
        raise ConfigError("no samples: pass --manifest FILE (your samples; columns: `scenefit ingest --help`) or set "
                          "run.manifest in the config (`scenefit init DIR` writes a config and an example manifest)")
    if manifest is not None and not Path(manifest).is_file():
        raise ConfigError(f"manifest not found: {manifest}")


def resolve_section(name: str, raw: Any, where: str) -> StageConfig:
    """Validate one section's mapping (a ConfigError names the source and the field)."""
    if name not in SECTIONS:
        raise ConfigError(f"{where}: unknown section {name!r}; known: {', '.join(SECTIONS)}")
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{where}: section {name!r} must be a mapping")
    try:
        return resolve(name, None, dict(raw or {}))
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def _copy(d: Any) -> Any:
    return yaml.safe_load(yaml.safe_dump(d))
