"""The import graph stays a tree of layers: no cycle inside connectors/, scoring/, worker/ (or web/),
and production code (connectors/, scoring/) never imports the simulator (crmsim/).

Imports inside functions count too: a loop hidden from the linter is still a loop.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("connectors", "scoring", "worker", "web", "crmsim", "store", "config")
NO_CYCLES_IN = ("connectors", "scoring", "worker", "web")


def _module(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name:
            if name in files:
                return name
            name = name.rpartition(".")[0]
        return None

    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = mod.split(".")
                    anchor = parts[: len(parts) - node.level + (1 if is_pkg else 0)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            else:
                continue
            for target in targets:
                found = resolve(target)
                if found and found != mod and not mod.startswith(found + "."):
                    graph[mod].add(found)
    return graph


def _cycles(graph: dict[str, set[str]], nodes: set[str]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v] & nodes:
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

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    graph = _graph()
    inner = {m for m in graph if m.split(".")[0] in NO_CYCLES_IN}
    assert inner, "no modules found: the test would pass about nothing"
    assert _cycles(graph, inner) == []


def test_production_code_never_imports_the_simulator() -> None:
    graph = _graph()
    into_sim = sorted(f"{m} -> {t}" for m in graph if m.split(".")[0] in ("connectors", "scoring")
                      for t in graph[m] if t.split(".")[0] == "crmsim")
    assert into_sim == []


def test_the_check_sees_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"a"}, "c": set()}
    assert _cycles(graph, set(graph)) == [["a", "b"]]


CRM_KINDS = {"salesforce", "hubspot"}
REGISTRY = REPO / "connectors" / "registry.py"


def _kind_dispatch(source: str) -> list[int]:
    """Lines comparing an attribute ``kind`` (a connection's CRM kind) with a CRM's name."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and isinstance(node.ops[0], (ast.Eq, ast.NotEq, ast.In)):
            sides = [node.left, *node.comparators]
            kind_attr = any(isinstance(s, ast.Attribute) and s.attr == "kind" for s in sides)
            names = {s.value for s in ast.walk(node) if isinstance(s, ast.Constant) and isinstance(s.value, str)}
            if kind_attr and names & CRM_KINDS:
                lines.append(node.lineno)
    return lines


def test_only_the_registry_dispatches_on_a_crm_kind() -> None:
    found = []
    files = [p for pkg in NO_CYCLES_IN for p in (REPO / pkg).rglob("*.py") if p != REGISTRY]
    assert files, "no files found: the test would pass about nothing"
    for path in files:
        found += [f"{path.relative_to(REPO)}:{line}" for line in _kind_dispatch(path.read_text())]
    assert found == []


def test_the_dispatch_check_sees_one() -> None:
    assert _kind_dispatch('if conn.kind == "salesforce":\n    pass\n') == [1]
    assert _kind_dispatch('x = [c for c in cs if c.kind != "hubspot"]\n') == [1]
    assert _kind_dispatch('if outbox.kind == "score_fields":\n    pass\n') == []
