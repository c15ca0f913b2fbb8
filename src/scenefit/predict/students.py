"""Finding the trained students on disk and the base model under them.

A student folder (written by ``scenefit train``) holds a PEFT LoRA adapter
(``adapter_config.json`` + weights), the processor, and ``scenefit_student.json``
(``criterion``, ``base_model``, ``prompt_version``, ``decision_prefix``, …). A students folder
holds one such folder per criterion, named by the criterion's machine name.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from scenefit.core.criteria import CRITERIA, Criterion
from scenefit.formats import DECISION_PREFIX
from scenefit.prompts import student_prompt_version

STUDENT_META = "scenefit_student.json"
ADAPTER_CONFIG = "adapter_config.json"

StudentsArg = Union[str, os.PathLike, Mapping[Any, Union[str, os.PathLike]]]


class StudentError(ValueError):
    """Students that cannot be used as asked (missing folders, mismatched bases, bad prefix)."""


@dataclass(frozen=True)
class StudentInfo:
    """One student folder and what its metadata says."""

    criterion: Criterion
    path: Path
    base_model: Optional[str]
    meta: dict = field(default_factory=dict)
    adapter_config: dict = field(default_factory=dict)

    @property
    def synthetic(self) -> bool:
        """Trained on the synthetic world, or a toy student of the test bed: what it says carries
        the SYNTHETIC notice wherever it is shown (predict, serve)."""
        return bool(self.meta.get("synthetic") or self.meta.get("toy"))

    @property
    def rank(self) -> int:
        ranks = [int(self.adapter_config.get("r", 0) or 0)]
        ranks += [int(v) for v in (self.adapter_config.get("rank_pattern") or {}).values()]
        return max(ranks)


def read_student(path: Path, criterion: Optional[Criterion] = None) -> StudentInfo:
    """Read one student folder; the criterion comes from its metadata, else from ``criterion``."""
    path = Path(path)
    if not (path / ADAPTER_CONFIG).is_file():
        raise StudentError(f"{path}: no {ADAPTER_CONFIG} (not a PEFT adapter folder)")
    adapter_config = json.loads((path / ADAPTER_CONFIG).read_text())
    meta: dict = {}
    if (path / STUDENT_META).is_file():
        meta = json.loads((path / STUDENT_META).read_text())
    named = meta.get("criterion")
    crit = Criterion.parse(named) if named else criterion
    if crit is None:
        crit = Criterion.parse(path.name)
    if criterion is not None and crit is not criterion:
        raise StudentError(f"{path}: {STUDENT_META} says criterion {crit.value}, but it was given for {criterion.value}")
    prefix = meta.get("decision_prefix", DECISION_PREFIX)
    if prefix != DECISION_PREFIX:
        raise StudentError(
            f"{path}: trained with answer prefix {prefix!r}, but this version decides after {DECISION_PREFIX!r}"
        )
    version = meta.get("prompt_version")
    if version and version != student_prompt_version():
        warnings.warn(
            f"{path}: trained with student prompts {version}, this install has {student_prompt_version()}; "
            "answers may be worse than measured",
            stacklevel=2,
        )
    base = meta.get("base_model") or adapter_config.get("base_model_name_or_path")
    return StudentInfo(crit, path.resolve(), base, meta, adapter_config)


def find_students(students: StudentsArg, criteria: Optional[list[Criterion]] = None) -> dict[Criterion, StudentInfo]:
    """Students for the asked criteria (default: all three), from a folder or a {criterion: folder} map."""
    wanted = list(criteria) if criteria else list(CRITERIA)
    found: dict[Criterion, StudentInfo] = {}
    if isinstance(students, Mapping):
        for key, folder in students.items():
            crit = key if isinstance(key, Criterion) else Criterion.parse(str(key))
            if crit in wanted:
                found[crit] = read_student(Path(folder), crit)
    else:
        root = Path(students)
        if not root.is_dir():
            raise StudentError(f"students folder not found: {root}")
        if (root / ADAPTER_CONFIG).is_file():  # a single student folder
            info = read_student(root)
            if info.criterion in wanted:
                found[info.criterion] = info
        for crit in wanted:
            if crit not in found and (root / crit.value).is_dir():
                found[crit] = read_student(root / crit.value, crit)
    missing = [c.value for c in wanted if c not in found]
    if missing:
        raise StudentError(
            f"no student for {', '.join(missing)} in {students} (expected <folder>/<criterion>/{ADAPTER_CONFIG}); "
            "judge fewer criteria with --criteria, or train them"
        )
    return {c: found[c] for c in wanted}


def resolve_base(name: str, relative_to: Optional[Path] = None) -> str:
    """A base-model reference as a usable path when it is a local folder, else the hub id as given.

    Relative paths are tried against the working directory, then against ``relative_to``.
    """
    p = Path(name).expanduser()
    if p.is_absolute():
        return str(p)
    if p.exists():
        return str(p.resolve())
    if relative_to is not None and (relative_to / p).exists():
        return str((relative_to / p).resolve())
    return name


def choose_base(infos: Mapping[Criterion, StudentInfo], base: Optional[str]) -> str:
    """The one base all students share (an explicit ``base`` wins); different bases are an error."""
    if base:
        return resolve_base(base)
    resolved = {c: resolve_base(i.base_model, i.path) for c, i in infos.items() if i.base_model}
    if not resolved:
        raise StudentError("the students do not name their base model; pass base= (CLI: --base)")
    distinct = set(resolved.values())
    if len(distinct) > 1:
        detail = ", ".join(f"{c.value}: {b}" for c, b in resolved.items())
        raise StudentError(f"the students were trained on different base models ({detail}); "
                           "one Predictor shares one base — pass base= to override")
    return distinct.pop()


def module_bytes(module) -> int:
    """Bytes of every parameter and buffer reachable from ``module``, each storage counted once
    (tied or shared tensors are not double-counted). The resident size of the weights."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for t in list(module.parameters()) + list(module.buffers()):
        if t.device.type == "meta":
            continue
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key in seen:
            continue
        seen.add(key)
        total += t.untyped_storage().nbytes()
    return total
