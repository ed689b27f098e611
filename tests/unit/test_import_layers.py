"""The console's modules import one another as layers: no module reaches, through the imports it
makes when it is loaded, back to itself, and the read side imports nothing inside a function.

The graph holds every import a module runs when it is loaded (those under ``if TYPE_CHECKING:``
only inform the type checker and are left out). ``from package import name`` counts as an
import of the submodule when ``name`` is one, else of the package.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in APP.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _load_time_imports(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """The imports a module runs when it is loaded: its top level, and blocks there (if, try, with)."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If):
            if not _is_type_checking(node):
                found += _load_time_imports(node.body)
            found += _load_time_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                found += _load_time_imports(block)
        elif isinstance(node, ast.With):
            found += _load_time_imports(node.body)
    return found


def _targets(name: str, path: Path, node: ast.Import | ast.ImportFrom, known: dict[str, Path]) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in known}
    if node.level:
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for _ in range(node.level - 1):
            package = package.rsplit(".", 1)[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    out: set[str] = set()
    for alias in node.names:
        if f"{base}.{alias.name}" in known:
            out.add(f"{base}.{alias.name}")
        elif base in known:
            out.add(base)
    return out


def import_graph() -> dict[str, set[str]]:
    known = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[name] = set()
        for node in _load_time_imports(tree.body):
            graph[name] |= _targets(name, path, node, known)
        graph[name].discard(name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules, the first repeated at the end), or None."""
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_the_modules_of_app_import_one_another_without_a_cycle():
    graph = import_graph()
    assert len(graph) > 50 and graph["app.read.feeds"], "the graph holds the console's modules and their imports"
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle_it_is_shown():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "d": {"a", "c"}}) is None



def test_the_read_side_imports_nothing_inside_a_function():
    inside: list[str] = []
    for path in sorted((APP / "read").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inside += [f"{path.name}:{n.lineno}" for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert inside == []


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_read_side_is_layered_bottom_modules_then_per_source_modules_then_the_lookup_then_the_public_ones():
    graph = import_graph()
    per_source = {m for m in graph if m.startswith("app.read.") and m.endswith("_reads")}
    assert per_source == {"app.read.dispatch_reads", "app.read.cart_reads", "app.read.order_reads"}
    lookup = "app.read.by_source"
    generic = {m for m in graph if m.startswith("app.read.") and lookup in _reach(graph, m)}
    assert {"app.read.failures", "app.read.feeds", "app.read.duplicates", "app.read.rollup",
            "app.read.stats"} <= generic
    for module in per_source:
        below = _reach(graph, module)
        assert lookup not in below and not (below & (per_source | generic)), module
    assert per_source <= graph[lookup]
    for module in ("app.read.hooks", "app.read.failed_parts", "app.read.feed_parts", "app.read.rule_specs",
                   "app.read.chart_window", "app.read.order_docs", "app.read.common", "app.read.models",
                   "app.read.rules"):
        assert not (_reach(graph, module) & (per_source | {lookup})), module
