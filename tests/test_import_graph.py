"""The core's wings import each other in one direction only, and no modules form a cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import baseline

PACKAGE = Path(baseline.__file__).parent

#: Each wing and the wings it may import (``baseline.errors`` is open to all). The top-level
#: modules (``cli``, ``pipeline``, ``testing``) may import any wing.
WING_IMPORTS: dict[str, set[str]] = {
    "config": set(),
    "plugins": {"config"},
    "distributed": set(),
    "runs": {"config", "plugins", "distributed"},
    "data": {"config", "plugins", "runs"},
    "experiment": {"config", "plugins", "runs"},
    "metrics": {"config", "plugins", "distributed"},
    "train": {"config", "plugins", "distributed", "runs", "data", "metrics"},
    "tools": {"config", "plugins", "distributed", "runs", "data", "experiment", "metrics", "train"},
}
TOP_LEVEL = {"__init__", "__main__", "cli", "pipeline", "errors", "testing", "_compat"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_imports() -> dict[str, set[str]]:
    """``baseline.x.y`` -> every ``baseline.*`` module it imports anywhere.

    Lazy imports (inside functions) and imports for type checking count too: a dependency
    that only shows up at run time or in annotations is still a dependency, and two modules
    that need each other are one module in two files.
    """
    modules = {module_name(path) for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "baseline" or node.module.startswith("baseline."):
                    for alias in node.names:  # `from baseline.runs import artifacts`
                        candidate = f"{node.module}.{alias.name}"
                        imported.add(candidate if candidate in modules else node.module)
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names if a.name.startswith("baseline.")}
        graph[name] = imported - {name, "baseline"}
    return graph


def wing_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in WING_IMPORTS else None


def test_every_core_module_lives_in_a_wing_or_is_a_known_top_level_module() -> None:
    top = {path.stem for path in PACKAGE.glob("*.py")}
    assert top <= TOP_LEVEL, f"modules outside the wings: {sorted(top - TOP_LEVEL)}"
    folders = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").exists()}
    assert folders - TOP_LEVEL == set(WING_IMPORTS)


def test_every_wing_says_what_it_holds_and_may_import() -> None:
    for wing in WING_IMPORTS:
        doc = ast.get_docstring(ast.parse((PACKAGE / wing / "__init__.py").read_text()))
        assert doc and "May import" in doc, f"baseline.{wing} lacks its docstring"


def wing_violations(graph: dict[str, set[str]]) -> list[str]:
    """``module -> target`` for each import against :data:`WING_IMPORTS`."""
    violations = []
    for module, imported in graph.items():
        wing = wing_of(module)
        if wing is None:
            continue
        for target in imported:
            other = wing_of(target)
            if target == "baseline.errors" or other == wing:
                continue
            if other is None or other not in WING_IMPORTS[wing]:
                violations.append(f"{module} -> {target}")
    return sorted(violations)


def test_wings_import_only_the_wings_below_them() -> None:
    assert not wing_violations(module_imports()), "imports against the wing order"


def test_the_wing_check_catches_an_upward_import() -> None:
    """Not vacuous: a trainer importing a tool, or a wing importing the pipeline, is caught."""
    graph = {
        "baseline.train.trainer": {"baseline.tools.generation", "baseline.runs.artifacts"},
        "baseline.config.fields": {"baseline.pipeline", "baseline.errors"},
    }
    assert wing_violations(graph) == [
        "baseline.config.fields -> baseline.pipeline",
        "baseline.train.trainer -> baseline.tools.generation",
    ]


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
        "import sys, baseline.train.trainer; "
        "print(sorted(m for m in sys.modules if m.startswith("
        "('baseline.pipeline', 'baseline.plugins.components', 'baseline.data.preparation',"
        " 'baseline.tools'))))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert completed.stdout.strip() == "[]"
