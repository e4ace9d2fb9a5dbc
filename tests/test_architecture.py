"""The import graph of the code base: dependencies point one way and never form a circle.

Layers, lowest first: the query-time core (``amzqa`` but its evaluation and shells), the evaluation
(``amzqa.evaluation``), build time (``indexing``, ``training``), the shells (``amzqa.cli``, ``amzqa.demo``,
``amzqa.recipes``, ``apps``). A module may import its own layer or lower ones. Every import counts, including the
lazy ones inside functions: a lazy back-edge is still a back-edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("amzqa", "indexing", "training", "apps")
SHELLS = ("amzqa.cli", "amzqa.demo", "amzqa.recipes", "amzqa.__main__")
LAYER_NAMES = ("core", "evaluation", "build time", "shell")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {resolve(a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets |= {resolve(f"{base}.{a.name}") if f"{base}.{a.name}" in mods else resolve(base) for a in node.names}
        edges[name] = {t for t in targets if t and t != name}
    return edges


def layer(module: str) -> int:
    if module in SHELLS or module.startswith("apps"):
        return 3
    if module.startswith(("indexing", "training")):
        return 2
    if module.startswith("amzqa.evaluation"):
        return 1
    return 0


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_lazy_imports():
    edges = import_graph()
    assert "amzqa.questions" in edges["amzqa.pipeline"]  # imported inside QA.calibrate
    assert {"amzqa.layout", "amzqa.retrieval.artifacts"} <= edges["indexing.build"]


def test_dependencies_point_one_way():
    back = [f"{m} ({LAYER_NAMES[layer(m)]}) -> {t} ({LAYER_NAMES[layer(t)]})"
            for m, targets in sorted(import_graph().items()) for t in sorted(targets) if layer(t) > layer(m)]
    assert not back, "imports against the layering:\n" + "\n".join(back)


def test_no_import_circles():
    found = circles(import_graph())
    assert not found, f"import circles: {found}"


def test_circle_and_back_edge_detection_work_on_a_known_graph():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer("amzqa.pipeline") < layer("amzqa.evaluation.metrics") < layer("training.train") < layer("amzqa.cli")
