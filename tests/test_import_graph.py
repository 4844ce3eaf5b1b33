"""The layout stays acyclic and small: the import graph of ``src/oncosynth`` (lazy imports inside
functions included) has no cycle, and no module is over the size limit.

The graph is read from the source with ``ast``, not by importing, so a cycle hidden in a function
body counts as much as one at the top of a file.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "oncosynth"
MAX_LINES = 450


def _modules(src: Path = SRC) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under src/oncosynth (a package is its __init__)."""
    found = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The longest existing module that is ``name`` or a prefix of it."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every oncosynth module that ``module`` imports, anywhere in its body."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from a.b import c`: imports a.b, and a.b.c too when c is a module
            names = [stem] + [f"{stem}.{alias.name}" for alias in node.names if alias.name != "*"]
        else:
            continue
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                owner = _owner(name, modules)
                if owner is not None and owner != module:
                    targets.add(owner)
    return targets


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    modules = _modules(src)
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None (iterative DFS, white/grey/black)."""
    state = {node: 0 for node in graph}  # 0 unseen, 1 on the stack, 2 done
    for root in sorted(graph):
        if state[root]:
            continue
        stack = [(root, iter(sorted(graph[root])))]
        path = [root]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child, 2) == 1:
                return path[path.index(child):] + [child]
            elif state.get(child, 2) == 0:
                state[child] = 1
                stack.append((child, iter(sorted(graph[child]))))
                path.append(child)
    return None


def test_graph_reader_sees_lazy_relative_and_from_imports(tmp_path):
    # the reader itself: a cycle through a function-level relative import is found
    pkg = tmp_path / PACKAGE / "sub"
    pkg.mkdir(parents=True)
    (tmp_path / PACKAGE / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("from oncosynth.sub.a import f\n")
    (pkg / "a.py").write_text("def f():\n    from . import b\n")
    (pkg / "b.py").write_text("from oncosynth.sub import a\n")
    graph = import_graph(tmp_path)
    assert graph["oncosynth.sub"] == {"oncosynth.sub.a"}
    assert graph["oncosynth.sub.a"] == {"oncosynth.sub", "oncosynth.sub.b"}
    assert graph["oncosynth.sub.b"] == {"oncosynth.sub", "oncosynth.sub.a"}
    assert find_cycle(graph) is not None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_over_size_limit():
    long = {name: n for name, path in _modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
