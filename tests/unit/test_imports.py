"""The package's import graph, read statically (imports inside functions included): rooms sit on
floors and import only their own floor or lower ones; no module is part of a circle; no product
module reaches the test bed.

    .venv/bin/python -m pytest tests/unit/test_imports.py -q
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import scenefit

PACKAGE = Path(scenefit.__file__).resolve().parent

#: The floors, lowest first (docs/architecture.md draws them). A room imports only rooms on its
#: own floor or below; "<root>" is the package's __init__ (the synthetic notice).
FLOORS = ["<root>", "core", "prompts", "models", "student", "teachers", "data", "predict", "evaluate", "train",
          "serve", "pipeline", "testbed", "cli"]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the scenefit modules it imports anywhere in its file."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in modules:  # `from scenefit.core.files import x` -> scenefit.core.files
                    t = t.rpartition(".")[0]
                if t.startswith("scenefit") and t != name:
                    graph[name].add(t)
    return graph


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


def test_every_room_has_a_floor():
    rooms = {room(m) for m in import_graph()} | {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert rooms <= set(FLOORS), f"rooms without a floor: {sorted(rooms - set(FLOORS))}; add them to FLOORS"


def test_no_import_reaches_a_higher_floor():
    level = {r: i for i, r in enumerate(FLOORS)}
    up = sorted(f"{a} -> {b}" for a, bs in import_graph().items() for b in bs
                if level[room(b)] > level[room(a)])
    assert up == [], "imports that reach up a floor:\n" + "\n".join(up)


def test_no_module_is_part_of_an_import_circle():
    graph = import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    assert circles == [], f"import circles: {circles}"


def test_no_product_module_imports_the_test_bed():
    stray = sorted(f"{a} -> {b}" for a, bs in import_graph().items() for b in bs
                   if room(b) == "testbed" and room(a) not in ("testbed", "cli"))
    assert stray == []
