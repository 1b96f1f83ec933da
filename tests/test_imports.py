"""No import cycles in the package, the stages, the app, the scripts or the tests.

Every import counts, wherever it stands (a lazy import inside a function hides a cycle, it does not
remove it), so each module can be read, and changed, after the modules it builds on.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.workspace import ROOT

FOLDERS = ("lorapipe", "stages", "scripts", "bench", "tests")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of this repository it imports (`from a.b import c` counts a.b.c where c is one)."""
    paths = [ROOT / "app.py", *(p for folder in FOLDERS for p in sorted((ROOT / folder).rglob("*.py")))]
    modules = {module_name(p): p for p in paths}
    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        graph[name] = {m for m in imported if m in modules and m != name}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules in order, the first repeated at the end), or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        path.append(module)
        for imported in sorted(graph[module]):
            if found := visit(imported):
                return found
        path.pop()
        done.add(module)
        return None

    return next(filter(None, map(visit, sorted(graph))), None)


def test_no_module_imports_itself_through_others():
    graph = import_graph()
    assert {"lorapipe.core.cli", "tests.workspace", "stages.train"} <= graph.keys()  # the walk found the code
    assert cycle(graph) is None, " -> ".join(cycle(graph))


def test_the_cycle_finder_finds_a_lazy_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_reporting_loads_without_torch():
    """The report job and the results page install no torch: no reporting module imports it when loaded
    (publish loads the tokenizer, which needs it, only when it builds a card). Nor transformers or scipy, a
    second of CPU for each command of the PR job before it does anything (scipy: when an interval is drawn)."""
    modules = sorted(f"lorapipe.reporting.{p.stem}" for p in (ROOT / "lorapipe/reporting").glob("*.py"))
    code = f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\nprint(sorted(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "'lorapipe.reporting.publish'" in loaded
    assert "'torch'" not in loaded and "'transformers'" not in loaded and "'scipy'" not in loaded


# The package's layers, lowest first: a module imports from its own layer and those before it, never from a
# later one. `workspace` (the commands around a checkout) builds on the core alone.
LAYERS = ("core", "data", "model", "train", "eval", "reporting")
ALLOWED = {layer: set(LAYERS[: i + 1]) for i, layer in enumerate(LAYERS)} | {"workspace": {"core", "workspace"}}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """`a -> b` for each import of the package that runs up a layer (or into one it may not use)."""
    found = []
    for module, imported in sorted(graph.items()):
        layer = module.split(".")[1] if module.startswith("lorapipe.") and module.count(".") >= 2 else None
        if layer is None:
            continue
        for target in sorted(imported):
            parts = target.split(".")
            if parts[0] == "lorapipe" and len(parts) >= 2 and parts[1] in ALLOWED and parts[1] not in ALLOWED[layer]:
                found.append(f"{module} -> {target}")
    return found


def test_no_module_imports_from_a_layer_above_its_own():
    graph = import_graph()
    assert {m.split(".")[1] for m in graph if m.startswith("lorapipe.") and m.count(".") >= 2} == set(ALLOWED)
    assert upward_imports(graph) == []


def test_the_layer_check_fails_on_a_planted_upward_import():
    graph = import_graph()
    graph["lorapipe.core.params"] = graph["lorapipe.core.params"] | {"lorapipe.reporting.report"}
    assert upward_imports(graph) == ["lorapipe.core.params -> lorapipe.reporting.report"]


def test_no_test_imports_another_test_module_or_a_benchmark():
    """Shared test code lives in tests/workspace.py (and the fixtures in tests/conftest.py)."""
    graph = import_graph()
    tests = {m: ts for m, ts in graph.items() if m.startswith("tests.")}
    assert [
        f"{m} -> {t}" for m, ts in sorted(tests.items()) for t in sorted(ts) if t.startswith(("tests.test_", "bench."))
    ] == []
