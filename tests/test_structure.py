"""The package reads as the pipeline (issue 18): few modules at the top, no import cycles, no private imports.

The import graph is read from the source with :mod:`ast` (nothing is imported): every ``import mrisr...`` and
``from mrisr... import ...`` of a module, at module level or inside a function, is an edge from that module to the
module it names (``from mrisr.io import dicom`` names ``mrisr.io.dicom``). Imports under ``if TYPE_CHECKING:``
never run (annotations only) and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mrisr

PACKAGE = Path(mrisr.__file__).parent
#: At most this many modules directly in ``mrisr/`` (``__init__``, ``__main__``, ``errors``, ``volume``, ...).
MAX_TOP_MODULES = 8


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _absolute(node: ast.ImportFrom, module: str, path: Path) -> str:
    """The absolute module a ``from ... import`` names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:``."""
    nodes, todo = [], [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo += node.orelse
            continue
        todo += list(ast.iter_child_nodes(node))
    return nodes


def imports(module: str) -> list[tuple[str, list[str]]]:
    """``(imported module, names taken from it)`` for each import of mrisr's modules in ``module``."""
    path = MODULES[module]
    found = []
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.split(".")[0] == "mrisr"]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, module, path)
            if source.split(".")[0] != "mrisr":
                continue
            names = [a.name for a in node.names]
            submodules = [n for n in names if f"{source}.{n}" in MODULES]
            found += [(f"{source}.{n}", []) for n in submodules]
            found.append((source, [n for n in names if n not in submodules]))
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the mrisr modules it imports (packages' ``__init__`` included, itself excluded)."""
    return {m: {target for target, _ in imports(m) if target in MODULES and target != m} for m in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_few_modules_directly_in_the_package():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, top


def test_the_graph_sees_function_level_imports():
    """A check of the checker: imports inside functions count (the pipeline loads the engine when it runs)."""
    graph = import_graph()
    assert "mrisr.inference.engine" in graph["mrisr.pipeline.upscale"]
    assert "mrisr.errors" in graph["mrisr.inference.engine"]


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_names_imported_across_modules():
    private = [f"{m}: from {source} import {name}" for m in MODULES for source, names in imports(m)
               for name in names if name.startswith("_") and not name.startswith("__") and source != m]
    assert private == []
