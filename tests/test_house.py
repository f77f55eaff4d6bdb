"""The shape of the package, read from its source with `ast` (nothing is imported): the import graph
has no circle and flows down the floors, the rooms that use a trained run never reach the training
loop, and no function grows past what a reader takes in at once."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "zoo"
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(path): ast.parse(path.read_text()) for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The zoo modules `name` imports, anywhere in the file (function-level imports count too)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {module for module in found if module in known and module != name}


def import_graph() -> dict[str, set[str]]:
    """module -> the zoo modules importing it runs: those it names, and the `__init__` of every
    package above it (Python runs those first)."""
    trees = modules()
    known = set(trees)
    graph = {name: imports_of(name, tree, known) for name, tree in trees.items()}
    for name in known:
        parent = name.rpartition(".")[0]
        while parent and parent != "zoo":
            graph[name].add(parent)
            parent = parent.rpartition(".")[0]
    return graph


def room_graph() -> dict[str, set[str]]:
    """The import graph without a package's `__init__` importing its own submodules: a package that
    gathers its modules into one face is not a dependency between rooms."""
    return {name: {dep for dep in deps if not dep.startswith(name + ".")} for name, deps in import_graph().items()}


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_the_import_graph_has_no_circle():
    graph = room_graph()
    assert sorted(name for name in graph if name in reachable(graph, name)) == []


def test_nothing_in_the_package_imports_the_command_line():
    graph = import_graph()
    assert sorted(name for name, deps in graph.items() if "zoo.cli" in deps) == []


def test_evaluation_prediction_and_import_never_reach_the_training_loop():
    graph = import_graph()
    users = [name for name in graph if name.startswith(("zoo.inference", "zoo.interop"))]
    assert users, "the inference and interop rooms exist"
    reaching = {name: sorted(reachable(graph, name) & {"zoo.training.loop", "zoo.training.hooks"}) for name in users}
    assert {name: hit for name, hit in reaching.items() if hit} == {}


def test_lower_floors_never_import_higher_ones():
    """config/errors/util/metrics -> models, data, checkpoint, rundir -> training -> inference,
    comparison, interop -> zoo.cli: nothing reaches up a floor."""
    graph = room_graph()
    higher = {
        "zoo.models": ("zoo.data", "zoo.training", "zoo.inference", "zoo.comparison", "zoo.checkpoint"),
        "zoo.data": ("zoo.models", "zoo.training", "zoo.inference", "zoo.comparison", "zoo.checkpoint"),
        "zoo.checkpoint": ("zoo.models", "zoo.data", "zoo.training", "zoo.inference", "zoo.comparison"),
        "zoo.rundir": ("zoo.models", "zoo.data", "zoo.training", "zoo.inference", "zoo.comparison", "zoo.checkpoint"),
        "zoo.training": ("zoo.inference", "zoo.comparison", "zoo.interop"),
    }
    wrong = {name: sorted(dep for dep in reachable(graph, name) if dep.startswith(banned))
             for floor, banned in higher.items() for name in graph if name == floor or name.startswith(floor + ".")}
    assert {name: deps for name, deps in wrong.items() if deps} == {}


def long_functions(limit: int = MAX_FUNCTION_LINES) -> list[tuple[int, str]]:
    """(lines, 'module:function') of every function in the package longer than `limit` lines."""
    found = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append((length, f"{name}:{node.name}"))
    return sorted(found, reverse=True)


def test_no_function_in_the_package_is_longer_than_sixty_lines():
    assert long_functions() == []
