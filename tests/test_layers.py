"""The package's import graph: no import runs back up the layers and no module imports itself
through others (function-level imports count too: they are dependencies all the same).

Layers, bottom to top (``../shared/REDESIGN.md``): a module may import modules of its own package
or of a lower layer, never of a higher one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "neurodecode"

#: top-level part of the package -> layer (lower imports nothing above it)
LAYERS = {
    "validation": 0,
    "_version": 0,
    "pretrained": 1,
    "data": 2,
    "sim": 2,
    "features": 3,
    "evaluate": 4,
    "models": 5,
    "datamodules": 5,
    "reconstruct": 6,
    "analysis": 7,
    "embedded": 8,
    "plotting": 9,
    "demo": 10,
    "cli": 11,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every neurodecode module ``path`` imports, at any depth of the file."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            names = [f"{name}.{a.name}" for a in node.names] + [name]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found.update(n for n in names if n.startswith("neurodecode"))
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        # keep only targets that are modules (``from pkg import name`` may name a function)
        graph[name] = {t for t in _imports(path) if t in files and t != name}
    return graph


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_part_of_the_package_has_a_layer():
    parts = {_part(m) for m in _graph()} - {""}
    assert parts <= set(LAYERS), f"give these a layer: {sorted(parts - set(LAYERS))}"


def test_no_import_runs_up_the_layers():
    upward = []
    for source, targets in _graph().items():
        if not _part(source):
            continue  # neurodecode/__init__.py re-exports the public entry points
        for target in targets:
            if _part(target) and _part(target) != _part(source):
                if LAYERS[_part(target)] >= LAYERS[_part(source)]:
                    upward.append(f"{source} -> {target}")
    assert not upward, "imports that run up or sideways:\n" + "\n".join(sorted(upward))


def test_no_import_loops():
    graph = _graph()
    state: dict[str, int] = {}
    loops: list[str] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                loops.append(" -> ".join([*stack[stack.index(target) :], target]))
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    # a package's __init__ importing its own submodules is not a loop of logic
    loops = [loop for loop in loops if not any(p.endswith("__init__") for p in loop.split())]
    assert not loops, "import loops:\n" + "\n".join(loops)


@pytest.mark.parametrize("library", ["features", "reconstruct", "analysis", "models", "data"])
def test_library_packages_do_not_import_the_simulation_or_commands(library):
    graph = _graph()
    bad = sorted(
        f"{source} -> {target}"
        for source, targets in graph.items()
        if _part(source) == library
        for target in targets
        if _part(target) in {"sim", "embedded", "cli", "demo"}
    )
    assert not bad, "\n".join(bad)
