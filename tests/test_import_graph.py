"""The core's modules import each other without cycles; the trainer needs no pipeline."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import baseline

PACKAGE = Path(baseline.__file__).parent


def module_imports() -> dict[str, set[str]]:
    """``baseline.x`` -> every ``baseline.*`` module it imports anywhere.

    Lazy imports (inside functions) and imports for type checking count too: a dependency
    that only shows up at run time or in annotations is still a dependency, and two modules
    that need each other are one module in two files.
    """
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        name = "baseline" if path.stem == "__init__" else f"baseline.{path.stem}"
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "baseline":
                    imported |= {f"baseline.{alias.name}" for alias in node.names}
                elif node.module.startswith("baseline."):
                    imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names if a.name.startswith("baseline.")}
        graph[name] = imported - {name}
    return graph


def test_no_import_cycles() -> None:
    graph = module_imports()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target in graph and not state.get(target):
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if not state.get(module):
            visit(module, [module])
    assert not cycles, f"import cycles: {cycles}"


def test_the_trainer_depends_on_plain_data_types_only() -> None:
    code = (
        "import sys, baseline.training; "
        "print(sorted(m for m in sys.modules if m in "
        "('baseline.pipeline', 'baseline.components', 'baseline.data_preparation')))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert completed.stdout.strip() == "[]"
