"""Finding the trained students on disk and the base model under them.

A student folder (written by ``scenefit train``) holds a PEFT LoRA adapter
(``adapter_config.json`` + weights), the processor, and ``scenefit_student.json`` (typed and
read by :mod:`scenefit.student.metadata`). A students folder holds one such folder per
criterion, named by the criterion's machine name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from scenefit.core.criteria import CRITERIA, Criterion
from scenefit.student.metadata import ADAPTER_CONFIG, STUDENT_META, StudentError, StudentInfo, read_student

__all__ = ["ADAPTER_CONFIG", "STUDENT_META", "StudentError", "StudentInfo", "StudentsArg", "choose_base",
           "fast_path_note", "find_students", "module_bytes", "read_student", "resolve_base"]

StudentsArg = Union[str, os.PathLike, Mapping[Any, Union[str, os.PathLike]]]


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


def fast_path_note(students: Mapping[Criterion, StudentInfo], criteria: Sequence[Criterion]) -> Optional[str]:
    """One sentence naming the students among ``criteria`` that answer reasoning-first (no one-pass
    fast path), or None when every one has it (criteria without a student: the base, decision-first)."""
    slow = [c for c in criteria if c in students and not students[c].answer_format.has_fast_path]
    if not slow:
        return None
    names = ", ".join(f"{c.value} ({students[c].path})" for c in slow)
    return (f"student(s) {names} answer reasoning_first: the decision is read from the generated "
            "'Final decision:' line, there is no one-pass fast path (slower; no decision probability)")


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
