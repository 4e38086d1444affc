"""No import cycles inside the `autointerp` package (design.md, "Floors of the code").

The check reads the source with `ast` (nothing is imported), builds the graph "module A imports module
B" over the package's own modules and fails listing every strongly connected component of more than one
module, i.e. every group of modules that import each other round a cycle, with the import lines that
close it.

What counts as an import of module B:
- `import autointerp.x.y` and `from autointerp.x.y import name` (also relative: `from .y import name`);
  `from autointerp.x import y` is an import of module `autointerp.x.y` when `y` is a submodule, else of
  `autointerp.x` (a package is its `__init__`). A constant `importlib.import_module("autointerp.x")`
  counts too: importing by string is still importing.
- Imports inside functions count as much as module-level ones: a function-level import only defers the
  cycle to the first call, the two modules still depend on each other.
- Imports under `if TYPE_CHECKING:` do not count: they never run.

What does not count: the parent packages Python imports on the way. `from autointerp.sae.config import
X` runs `autointerp/sae/__init__.py` first, but every submodule "imports" its package that way, so
counting it would make every package whose `__init__` re-exports its submodules (`autointerp/sae/__init__`
imports `sae.load`, which imports `sae.config`) a cycle, and no layout could avoid it. Such a
re-export only breaks at runtime when a submodule imports the package `__init__` itself (`from
autointerp.sae import SAEConfig` inside `sae/load.py`), and that is an explicit edge to the `__init__`
here, so it is caught.
"""

from __future__ import annotations

import ast
import importlib.util
import textwrap
from collections.abc import Iterator
from pathlib import Path

Graph = dict[str, dict[str, list[int]]]  # module -> imported module -> line numbers of the imports


def package_modules(root: Path, package: str) -> dict[str, Path]:
    """Every module of the package under `root` (its folder) -> its file; a package is its __init__."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join((package, *parts))] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _nodes(node: ast.AST) -> Iterator[ast.AST]:
    """Every node below `node`, except the bodies of `if TYPE_CHECKING:` (their `else` is kept)."""
    for child in ast.iter_child_nodes(node):
        yield child
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for sub in child.orelse:
                yield sub
                yield from _nodes(sub)
        else:
            yield from _nodes(child)


def _imported_names(module: str, is_package: bool, node: ast.AST) -> Iterator[tuple[str, str | None]]:
    """(dotted module, name imported from it or None) for one import node; nothing for other nodes."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name, None
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            anchor = module.split(".") if is_package else module.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        for alias in node.names:
            yield base, None if alias.name == "*" else alias.name
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute | ast.Name)
        and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        yield node.args[0].value, None


def _resolve(target: str, name: str | None, modules: dict[str, Path]) -> str | None:
    """The package module an import refers to: `target.name` if that is a module, else the longest
    prefix of `target` that is one (attributes and outside packages resolve to None)."""
    if name is not None and f"{target}.{name}" in modules:
        return f"{target}.{name}"
    parts = target.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return None


def import_graph(root: Path, package: str) -> Graph:
    """The package's own imports: module -> imported module -> lines (self-imports left out)."""
    modules = package_modules(root, package)
    graph: Graph = {m: {} for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in _nodes(tree):
            for target, name in _imported_names(module, is_package, node):
                imported = _resolve(target, name, modules)
                if imported is not None and imported != module:
                    lines = graph[module].setdefault(imported, [])
                    if node.lineno not in lines:  # type: ignore[attr-defined]  # one entry per import statement
                        lines.append(node.lineno)  # type: ignore[attr-defined]
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted, in name order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # the package has tens of modules: recursion depth is no concern
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
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
    return sorted(found)


def describe(graph: Graph, component: list[str], root: Path, package: str) -> str:
    """One cycle group as lines 'a imports b (a.py:12, 40)' for every import inside the group."""
    modules = package_modules(root, package)
    members = set(component)
    lines = [" <-> ".join(component)]
    for source in component:
        for target, linenos in sorted(graph[source].items()):
            if target in members:
                where = modules[source].relative_to(root.parent)
                lines.append(f"    {source} imports {target} ({where}:{', '.join(map(str, linenos))})")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- the package


def test_the_package_has_no_import_cycles() -> None:
    spec = importlib.util.find_spec("autointerp")
    assert spec is not None and spec.submodule_search_locations, "the autointerp package is not installed"
    root = Path(next(iter(spec.submodule_search_locations)))
    graph = import_graph(root, "autointerp")
    assert len(graph) > 20 and any(graph.values()), f"found {len(graph)} modules under {root}; expected the package"
    found = cycles(graph)
    assert not found, f"{len(found)} import cycle group(s) in autointerp:\n" + "\n".join(
        describe(graph, c, root, "autointerp") for c in found
    )


# --------------------------------------------------------------------------------------------- the checker


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


def test_the_checker_finds_cycles_and_ignores_what_never_runs(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    _write(
        root,
        {
            "__init__.py": "",
            # a <-> b, closed by an import inside a function
            "a.py": "from pkg.b import helper\n",
            "b.py": """
                def helper():
                    from pkg import a
                    return a
            """,
            # c imports a only for type checking: no cycle with a or b
            "c.py": """
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from pkg.a import helper
                else:
                    from pkg import d
            """,
            "d.py": "import os\n",
            # a package __init__ re-exporting submodules that import a sibling: no cycle
            "sub/__init__.py": "from pkg.sub.leaf import Y\n",
            "sub/leaf.py": "from pkg.sub.conf import Z\nY = Z\n",
            "sub/conf.py": "Z = 1\n",
            # relative imports and import_module by string: e <-> f
            "sub/e.py": "from .f import g\n",
            "sub/f.py": "import importlib\ng = importlib.import_module('pkg.sub.e')\n",
        },
    )
    graph = import_graph(root, "pkg")
    assert graph["pkg.b"] == {"pkg.a": [3]}
    assert graph["pkg.c"] == {"pkg.d": [6]}  # the TYPE_CHECKING import of pkg.a is left out
    assert graph["pkg.sub"] == {"pkg.sub.leaf": [1]} and graph["pkg.sub.leaf"] == {"pkg.sub.conf": [1]}
    assert cycles(graph) == [["pkg.a", "pkg.b"], ["pkg.sub.e", "pkg.sub.f"]]
    text = describe(graph, ["pkg.a", "pkg.b"], root, "pkg")
    assert "pkg.b imports pkg.a (pkg/b.py:3)" in text and "pkg.a imports pkg.b (pkg/a.py:1)" in text


def test_a_submodule_importing_its_own_package_init_is_a_cycle(tmp_path: Path) -> None:
    """The re-export case that does break at runtime: the __init__ imports leaf, leaf imports the __init__."""
    root = tmp_path / "pkg"
    _write(
        root,
        {
            "__init__.py": "",
            "sub/__init__.py": "from pkg.sub.leaf import Y\nZ = 1\n",
            "sub/leaf.py": "from pkg.sub import Z\nY = Z\n",
        },
    )
    assert cycles(import_graph(root, "pkg")) == [["pkg.sub", "pkg.sub.leaf"]]
