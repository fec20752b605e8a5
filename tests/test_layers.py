"""The package's layers, as README's Development table draws them, checked against the imports.

From the bottom up: errors, system, data, engine, records, outputs, training, runs; above them the
face (api, cli, the commands, the package's __init__). A module imports its own layer or lower
ones, never a higher one; the import graph has no cycle; no library module imports a command."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["errors", "system", "data", "engine", "records", "outputs", "training", "runs"]
FACE = len(LAYERS)
COMMANDS = {"fastcifar.train", "fastcifar.find_lr", "fastcifar.evaluate", "fastcifar.predict",
            "fastcifar.explain", "fastcifar.summary", "fastcifar.aggregate",
            "fastcifar.export"}  # fmt: skip


def imports_of(path: Path) -> set[str]:
    """The fastcifar modules a file imports, at its top or inside its functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fastcifar"):
            package = node.module
            found.add(package)
            found |= {f"{package}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("fastcifar")}
    return found


def module_graph() -> dict[str, set[str]]:
    modules = {}
    for path in (ROOT / "fastcifar").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    return {name: imports_of(path) & set(modules) - {name} for name, path in modules.items()}


def layer_of(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else FACE


def test_every_module_sits_in_a_layer_or_is_part_of_the_face():
    top_level = {m for m in module_graph() if layer_of(m) == FACE}
    assert top_level == {"fastcifar", "fastcifar.api", "fastcifar.cli"} | COMMANDS


def test_no_layer_imports_one_above_it():
    breaches = {
        (module, imported)
        for module, imports in module_graph().items()
        for imported in imports
        if layer_of(imported) > layer_of(module)
    }
    assert breaches == set()


def test_the_import_graph_has_no_cycle_and_no_library_module_imports_a_command():
    graph = module_graph()
    graph["fastcifar"] = set()  # the package's face imports lazily, by name
    visiting, done, cycles = set(), set(), []

    def visit(node: str, path: list[str]) -> None:
        if node in visiting:
            cycles.append([*path[path.index(node) :], node])
            return
        if node in done:
            return
        visiting.add(node)
        for child in sorted(graph[node]):
            visit(child, [*path, child])
        visiting.discard(node)
        done.add(node)

    for node in sorted(graph):
        visit(node, [node])
    assert cycles == []
    library = set(graph) - COMMANDS
    assert {(m, c) for m in library for c in graph[m] & COMMANDS} == set()


def test_a_layer_breach_would_be_seen(tmp_path):
    """The rule's own check: an upward import in a file is found by imports_of/layer_of."""
    module = tmp_path / "breach.py"
    module.write_text("def f():\n    from fastcifar.runs.lifecycle import resume_hint\n")
    upward = [m for m in imports_of(module) if layer_of(m) > LAYERS.index("engine")]
    assert "fastcifar.runs.lifecycle" in upward
