"""The modules of fewlabel import each other without cycles (layers depend downwards only), and none uses
another module's private (underscore) names: what one module needs from another is public there."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "common" / "fewlabel"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def _imports(tree: ast.Module, name: str, is_package: bool, modules: set[str]) -> set[str]:
    """fewlabel modules that ``tree`` imports, at module level or inside functions, except inside a module
    ``__getattr__`` (a lazy re-export of names that moved, which runs only when such a name is asked for)."""
    skip = {id(n) for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "__getattr__"
            for n in ast.walk(f)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node.module, node.level, name, is_package)
            found |= {f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names}
    return {m for m in found if m in modules and m != name}


def _absolute(module: str | None, level: int, name: str, is_package: bool) -> str:
    """The absolute module of ``from <level dots><module> import ...`` written in module ``name``."""
    module = module or ""
    if not level:
        return module
    base = name.split(".") if is_package else name.split(".")[:-1]
    return ".".join(base[: len(base) - level + 1] + ([module] if module else []))


def _is_private(attr: str) -> bool:
    return attr.startswith("_") and not attr.startswith("__")


def private_uses(tree: ast.Module, name: str, is_package: bool, modules: set[str]) -> list[str]:
    """Private names of other fewlabel modules that ``tree`` uses: ``from fewlabel.x import _y`` and
    ``x._y`` where ``x`` is a fewlabel module (however imported), as ``"line N: fewlabel.x._y"``."""
    bound: dict[str, str] = {}  # local name -> the fewlabel module it is bound to
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = _absolute(node.module, node.level, name, is_package)
            if module not in modules:
                continue
            for alias in node.names:
                full = f"{module}.{alias.name}"
                if full in modules:
                    bound[alias.asname or alias.name] = full
                elif _is_private(alias.name) and module != name:
                    found.append(f"line {node.lineno}: {full}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "fewlabel":
                    bound[alias.asname or "fewlabel"] = alias.name if alias.asname else "fewlabel"

    def dotted(node: ast.expr) -> str | None:
        if isinstance(node, ast.Name):
            return bound.get(node.id)
        if isinstance(node, ast.Attribute):
            base = dotted(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            module = dotted(node.value)
            if module in modules and module != name:
                found.append(f"line {node.lineno}: {module}.{node.attr}")
    return sorted(set(found))


def import_graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _imports(ast.parse(p.read_text()), name, p.name == "__init__.py", set(paths))
            for name, p in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_fewlabel_has_no_import_cycles():
    graph = import_graph()
    assert {"fewlabel.protocols", "fewlabel.sweep.spec", "fewlabel.deploy.app"} <= set(graph)
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_uses_another_modules_private_names():
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    found = {name: uses for name, p in sorted(paths.items())
             if (uses := private_uses(ast.parse(p.read_text()), name, p.name == "__init__.py", set(paths)))}
    assert found == {}, "make these names public in their module (drop the underscore):\n" + "\n".join(
        f"{paths[name].relative_to(PACKAGE.parent)}: {', '.join(uses)}" for name, uses in found.items())


def test_the_private_name_finder_finds_each_form():
    modules = {"fewlabel", "fewlabel.a", "fewlabel.a.b", "fewlabel.c"}
    source = """
from fewlabel.a.b import _x, y, __version__
from .b import _z
from fewlabel.a import b
import fewlabel.c
import fewlabel.a.b as ab
b._q, ab._r, fewlabel.c._s, b.__doc__, b.public
from . import _own
"""
    found = private_uses(ast.parse(source), "fewlabel.a.m", False, modules)
    assert found == ["line 2: fewlabel.a.b._x", "line 3: fewlabel.a.b._z", "line 7: fewlabel.a.b._q",
                     "line 7: fewlabel.a.b._r", "line 7: fewlabel.c._s", "line 8: fewlabel.a._own"]
    assert private_uses(ast.parse("from fewlabel.a import _mine\n"), "fewlabel.a", True, modules) == []
