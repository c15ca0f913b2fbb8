"""The registry of teacher backends: a name in ``annotate.teachers[].backend`` -> the class that answers.

    from scenefit.teachers.registry import make_teacher, register_backend
    teacher = make_teacher(teacher_config, json_answer=False, manifest_path=path)
    register_backend("mine", MyTeacher)          # a Teacher subclass, for this process

Backends register themselves through the package's entry points (group
``scenefit.teacher_backends`` in ``pyproject.toml``: ``openai``, ``transformers``, ``ray_http``,
``ray_vllm`` and the test bed's ``simulated``), or at run time with :func:`register_backend`. A
backend's module is imported only when a teacher uses it, so this module imports none of them and
none of them imports it back: the backends depend on :mod:`scenefit.teachers.base`, the registry on
nothing, and no product module reaches the test bed. A backend class builds itself with
``create(cfg, context)`` (:meth:`scenefit.teachers.base.Teacher.create`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

#: The entry-point group backends register under.
ENTRY_POINT_GROUP = "scenefit.teacher_backends"

_registered: dict[str, Any] = {}


@dataclass(frozen=True)
class TeacherContext:
    """What a run tells every backend beside its own config: whether the JSON prompt variant is
    asked (``json_answer``) and where the manifest lies (``manifest_path``; the simulated teachers
    find their world next to it)."""

    json_answer: bool = False
    manifest_path: Optional[Path] = None


def register_backend(name: str, backend: Any) -> None:
    """Make ``backend`` (a Teacher subclass, or anything with ``create(cfg, context)``) answer
    for ``name`` in this process; it wins over an entry point of the same name."""
    if not callable(getattr(backend, "create", None)):
        raise TypeError(f"backend {name!r}: {backend!r} has no create(cfg, context)")
    _registered[name] = backend


@functools.lru_cache(maxsize=1)
def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def backend_names() -> list[str]:
    """Every backend name known here (entry points and run-time registrations), sorted."""
    return sorted(set(_entry_points()) | set(_registered))


def backend_class(name: str) -> Any:
    """The class registered for ``name`` (its module imported now). Raises ValueError naming
    the known backends when there is none."""
    if name in _registered:
        return _registered[name]
    ep = _entry_points().get(name)
    if ep is None:
        raise ValueError(f"unknown teacher backend {name!r}; known: {', '.join(backend_names())} "
                         f"(entry points of group {ENTRY_POINT_GROUP!r}; reinstall the package if one is missing)")
    return ep.load()


def make_teacher(cfg: Any, json_answer: bool = False, manifest_path: Optional[Path] = None) -> Any:
    """The backend object for one teacher config (its backend imported only now)."""
    return backend_class(cfg.backend).create(cfg, TeacherContext(json_answer=json_answer, manifest_path=manifest_path))
