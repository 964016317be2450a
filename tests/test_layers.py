"""The package's layer rules, read from the source's import statements.

- The engine (the loop and its helpers) knows no concrete method: it talks to ``Method`` only.
- Samplers, losses and models know no method at all: any method can use any of them.
- No module imports, directly or through others, a module that imports it back (no import circles).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every ``i2i`` module ``path`` imports (module level and inside functions)."""
    tree = ast.parse(path.read_text(), str(path))
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module_name(path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "i2i"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] == "i2i":
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}  # ``from i2i.methods import cut``
    return found


MODULES = {_module_name(p): p for p in sorted((SRC / "i2i").rglob("*.py"))}
GRAPH = {name: {m for m in _imports(path) if m in MODULES and m != name} for name, path in MODULES.items()}


def _concrete_methods(imports: set[str]) -> set[str]:
    return {m for m in imports if m.startswith("i2i.methods.") and m != "i2i.methods.base"}


def test_the_import_graph_is_read():  # the rules below check something
    assert len(MODULES) > 50
    assert "i2i.methods.cut" in GRAPH["i2i.methods.qsattn"]
    assert "i2i.methods.base" in GRAPH["i2i.methods.cut"]


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("i2i.engine")))
def test_engine_imports_no_concrete_method(name):
    assert not _concrete_methods(GRAPH[name]), f"{name} imports {_concrete_methods(GRAPH[name])}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith(("i2i.samplers", "i2i.losses", "i2i.models"))))
def test_samplers_losses_and_models_import_no_method(name):
    methods = {m for m in GRAPH[name] if m == "i2i.methods" or m.startswith("i2i.methods.")}
    assert not methods, f"{name} imports {methods}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _without_packages(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Package ``__init__`` modules re-export their members; an edge into one stands for its members only."""
    packages = {n for n, p in MODULES.items() if p.name == "__init__.py"}
    return {n: {m for m in deps if m not in packages} for n, deps in graph.items() if n not in packages}


def test_no_import_circles():
    assert _cycles(_without_packages(GRAPH)) == []


def test_the_cycle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_the_test_folders_mirror_the_package():
    """tests/<folder>/ holds the tests of src/i2i/<folder>/; cross-cutting tests stay at the top of tests/."""
    tests = Path(__file__).resolve().parent
    folders = {p.name for p in tests.iterdir() if p.is_dir() and any(p.glob("test_*.py"))}
    packages = {p.name for p in (SRC / "i2i").iterdir() if (p / "__init__.py").exists()}
    assert folders and folders <= packages, sorted(folders - packages)
