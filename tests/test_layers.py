"""The import layering: no two parts of the project import each other (at module level or inside functions), and
the core never imports the layers built on it. A part is a direct child of `neuroal_jax` (a module or a
subpackage: `models`, `pruning`, `cli`, ...) or one of the top-level packages `converters` and `pallas_kernels`."""
from __future__ import annotations

import ast
from pathlib import Path

from cli_run import REPO

PACKAGES = ("neuroal_jax", "converters", "pallas_kernels")
CORE = ("config", "errors", "options", "models", "pruning", "topups", "registry", "runtime")
ABOVE_CORE = ("cli", "api", "sweeps", "recovery", "comparison", "converters")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, anywhere in it (functions included), as absolute dotted names."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            found.add(name)
            found |= {f"{name}.{alias.name}" for alias in node.names}  # `from . import x` may name a module
    return found


def part_of(module: str) -> str | None:
    """The part a module belongs to (None: not ours, or the package root `neuroal_jax` itself)."""
    parts = module.split(".")
    if parts[0] in ("converters", "pallas_kernels"):
        return parts[0]
    if parts[0] == "neuroal_jax" and len(parts) > 1:
        return parts[1]
    return None


def part_graph() -> dict[str, set[str]]:
    """{part: the other parts it imports}, only parts that exist as files."""
    files = [p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")]
    existing = {part_of(module_name(p)) for p in files} - {None}
    graph: dict[str, set[str]] = {part: set() for part in existing}
    for path in files:
        me = part_of(module_name(path))
        if me is None:
            continue
        graph[me] |= {part_of(m) for m in imported_modules(path)} & existing - {me}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one part (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_walker_sees_imports_inside_functions_and_relative_ones(tmp_path):
    graph = part_graph()
    assert "converters" in graph["api"]                     # `from converters.load import ...` inside a function
    assert "models" in graph["pruning"]                     # `from ..models import ...`
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_two_parts_import_each_other():
    found = cycles(part_graph())
    assert found == [], f"import cycles between parts: {found}"


def test_the_core_imports_no_layer_above_it():
    graph = part_graph()
    wrong = {part: sorted(graph[part] & set(ABOVE_CORE)) for part in CORE if part in graph}
    assert {k: v for k, v in wrong.items() if v} == {}
