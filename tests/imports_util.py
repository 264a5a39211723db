"""The package's module import graph, read from the source (AST): for the boundary tests and for
what a test build depends on (models_util)."""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import Dict, FrozenSet, Set

from conftest import REPO

PACKAGE = REPO / "edgepose"


@functools.lru_cache(maxsize=1)
def module_files() -> Dict[str, Path]:
    """Every module of the package by dotted name (a package is its ``__init__``)."""
    mods = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


@functools.cache
def parse(path: Path) -> ast.Module:
    """A source file's syntax tree (read once per session: do not modify it)."""
    return ast.parse(path.read_text(), str(path))


@functools.cache
def imported_names(module: str, path: Path, at_import: bool = False) -> FrozenSet[str]:
    """:func:`_imported_names`, read once per session."""
    return frozenset(_imported_names(module, path, at_import))


def _nodes(tree: ast.AST, at_import: bool):
    """Every node of ``tree``; ``at_import``: only those run when the module is imported (not the
    bodies of functions)."""
    if not at_import:
        yield from ast.walk(tree)
        return
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        todo.extend(c for c in ast.iter_child_nodes(node)
                    if not isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))


def _imported_names(module: str, path: Path, at_import: bool = False) -> Set[str]:
    """Every dotted name ``module`` imports anywhere in its source (relative imports resolved), plus
    string constants naming an edgepose module (``importlib.import_module`` targets, e.g. cli.COMMANDS);
    ``at_import``: only the imports made when the module is imported."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: Set[str] = set()
    for node in _nodes(parse(path), at_import):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("edgepose.")
              and not at_import):
            names.add(node.value)
    return names


@functools.lru_cache(maxsize=2)
def import_graph(at_import: bool = False) -> Dict[str, Set[str]]:
    """module -> the edgepose modules and the outside top-level packages it imports (``at_import``:
    the imports made when it is imported, i.e. without those inside functions).  Read once per session:
    do not modify the result."""
    mods = module_files()
    graph = {}
    for module, path in mods.items():
        targets = set()
        for name in imported_names(module, path, at_import):
            if name == "edgepose" or name.startswith("edgepose."):
                while name and name not in mods:  # `from edgepose.core.errors import X` -> edgepose.core.errors
                    name = name.rpartition(".")[0]
                if name and name != module:
                    targets.add(name)
            else:
                targets.add(name.split(".")[0])
        graph[module] = targets
    return graph


def reachable(graph: Dict[str, Set[str]], start: str) -> Set[str]:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph.get(m, ()))
    return seen
