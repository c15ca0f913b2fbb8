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

__all__ = ["ADAPTER_CONFIG", "STUDENT_META", "StudentError", "StudentInfo", "StudentsArg", "base_candidates",
           "choose_base", "explicit_base", "fast_path_note", "find_students", "module_bytes", "read_student",
           "student_base"]

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


def base_candidates(info: StudentInfo) -> list[tuple[str, str]]:
    """Where a student's base may be, in the order tried: (how it was found, reference).

    A student that recorded its base folder (``base_model_relative``, ``base_model_path``) is
    looked for relative to its students folder first (a run moved or copied whole), then at the
    absolute path it was trained from; one trained on a hub id has only that id. Older students
    that recorded only the path as given are looked for from the working folder, from the
    student's folder, and as a hub id when the text is one."""
    meta = info.meta
    if meta.base_model_relative or meta.base_model_path:
        found = []
        if meta.base_model_relative:
            found.append(("relative to the students folder",
                          os.path.normpath(info.path.parent / meta.base_model_relative)))
        if meta.base_model_path:
            found.append(("absolute path recorded at training", meta.base_model_path))
        return found
    name = info.base_model
    if not name:
        return []
    p = Path(name).expanduser()
    if p.is_absolute():
        return [("absolute path recorded at training", str(p))]
    found = [("relative to the working folder", str(p.resolve())),
             ("relative to the student folder", os.path.normpath(info.path / p))]
    return found + ([("hub id", name)] if _hub_id_form(name) else [])


def _hub_id_form(name: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _hub_id_problem(name: str) -> Optional[str]:
    """Why ``name`` cannot be a hub model id here (None when it can be tried)."""
    if not _hub_id_form(name):
        return "not a folder and not a hub id"
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json"), str):
            return "not in the local hub cache, and HF_HUB_OFFLINE is set"
    return None


def _candidate_problem(how: str, ref: str) -> Optional[str]:
    if how == "hub id":
        return _hub_id_problem(ref)
    return None if Path(ref).is_dir() else "no such folder"


def student_base(info: StudentInfo) -> tuple[Optional[str], list[str]]:
    """(the first usable place of the student's base or None, the places tried and why each failed)."""
    tried = []
    for how, ref in base_candidates(info):
        problem = _candidate_problem(how, ref)
        if problem is None:
            return ref, tried
        tried.append(f"{how}: {ref} ({problem})")
    if info.meta.base_model_path and not any(how == "hub id" for how, _ in base_candidates(info)):
        tried.append(f"no hub id: the base was the local folder {info.base_model!r}")
    return None, tried


def explicit_base(base: str) -> str:
    """``--base`` as given: an existing folder (absolute) or a hub id; anything else is a StudentError."""
    folder = Path(base).expanduser()
    if folder.is_dir():
        return str(folder.resolve())
    problem = _hub_id_problem(base)
    if problem:
        raise StudentError(f"--base {base}: {problem}")
    return base


def choose_base(infos: Mapping[Criterion, StudentInfo], base: Optional[str]) -> str:
    """The one base all students share: ``base`` (``--base``) when given, else each student's own
    (:func:`student_base`); a base found nowhere, or different bases, are StudentErrors naming
    ``--base`` and every place tried."""
    if base:
        return explicit_base(base)
    resolved: dict[Criterion, str] = {}
    missing: dict[str, list[str]] = {}
    for c, info in infos.items():
        ref, tried = student_base(info)
        if ref is not None:
            resolved[c] = ref
        else:
            missing.setdefault("; ".join(tried) or "the student names no base model", []).append(c.value)
    if missing:
        detail = " | ".join(f"{', '.join(crits)}: {tried}" for tried, crits in missing.items())
        raise StudentError(f"cannot find the students' base model — tried {detail}. "
                           "Pass --base FOLDER_OR_HUB_ID (Python: base=)")
    distinct = set(resolved.values())
    if len(distinct) > 1:
        detail = ", ".join(f"{c.value}: {b}" for c, b in resolved.items())
        raise StudentError(f"the students were trained on different base models ({detail}); "
                           "one Predictor shares one base — pass --base (Python: base=) to override")
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
