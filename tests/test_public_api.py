"""The public import paths: documented, importable, used by the bundled plugins, and the old
paths from before the wings still working (with a warning).

The list of public paths and names is read from ``docs/writing-a-plugin.md`` (Public import
paths), so the documentation and this test cannot drift apart.
"""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
import warnings
from importlib import import_module
from pathlib import Path

import pytest

import baseline
from baseline import _compat

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "writing-a-plugin.md"
PLUGIN_SOURCES = sorted(ROOT.glob("plugins/*/src"))

#: Modules that became packages: old module -> the module that now holds its names.
PACKAGE_MOVES = {
    "baseline.plugins": "baseline.plugins.discovery",
    "baseline.metrics": "baseline.metrics.router",
    "baseline.distributed": "baseline.distributed.context",
}


def section(text: str, heading: str) -> str:
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def tables(text: str, header: str) -> list[list[list[str]]]:
    """Each Markdown table whose header row is ``header``: rows of cells, each cell the list
    of its backticked words."""
    found: list[list[list[str]]] = []
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.strip() != header:
            continue
        rows = []
        for row in lines[index + 2 :]:
            if not row.startswith("|"):
                break
            cells = row.strip().strip("|").split("|")
            rows.append([re.findall(r"`([^`]+)`", cell) for cell in cells])
        found.append(rows)
    return found


def documented_api() -> dict[str, list[str]]:
    """``path -> names`` from the guide's tables of public paths."""
    public = section(GUIDE.read_text(encoding="utf-8"), "## Public import paths")
    api: dict[str, list[str]] = {}
    for table in tables(public, "| Path | Names |"):
        for path_cell, names_cell in table:
            [path] = path_cell
            assert path not in api, f"{path} is listed twice"
            assert names_cell, f"{path} lists no names"
            assert len(set(names_cell)) == len(names_cell), f"{path} lists a name twice"
            api[path] = names_cell
    return api


def documented_moves() -> dict[str, tuple[str, ...]]:
    public = section(GUIDE.read_text(encoding="utf-8"), "## Public import paths")
    [table] = tables(public, "| Old module | New module |")
    return {old: tuple(new) for [old], new in table}


API = documented_api()
PAIRS = [(path, name) for path, names in API.items() for name in names]


def test_the_guide_lists_the_plugin_facing_paths() -> None:
    for path in (
        "baseline",
        "baseline.config",
        "baseline.errors",
        "baseline.plugins.hookspecs",
        "baseline.plugins.protocols",
        "baseline.testing",
    ):
        assert path in API, f"{path} is missing from the guide's public paths"
    assert len(PAIRS) > 100


@pytest.mark.parametrize(("path", "name"), PAIRS, ids=[f"{p}:{n}" for p, n in PAIRS])
def test_every_documented_name_imports_from_its_path_without_a_warning(
    path: str, name: str
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = getattr(import_module(path), name)
    assert value is not None
    ours = [w for w in caught if str(w.message).startswith("baseline.")]
    assert not ours, [str(w.message) for w in ours]


def defined_in(module_name: str) -> set[str]:
    module = import_module(module_name)
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module_name
    }


def test_the_guide_lists_every_public_name_of_the_contract_modules() -> None:
    """A new protocol, error or config class cannot be added without documenting its path."""
    expected = {
        "baseline.config": set(import_module("baseline.config").__all__),
        "baseline.errors": defined_in("baseline.errors"),
        "baseline.plugins.protocols": defined_in("baseline.plugins.protocols"),
        "baseline.testing": set(import_module("baseline.testing").__all__),
        "baseline": set(baseline.__all__) - {"__version__"},
    }
    for path, names in expected.items():
        assert set(API[path]) == names, (
            f"{path}: the names differ from docs/writing-a-plugin.md (Public import paths): "
            f"not listed there {sorted(names - set(API[path]))}, "
            f"not in the module {sorted(set(API[path]) - names)}"
        )
    hooks = {name for name in defined_in("baseline.plugins.hookspecs") if "register" in name}
    assert hooks <= set(API["baseline.plugins.hookspecs"])


# --- the bundled plugins import baseline through the public paths only -------------------


def baseline_imports(source: str) -> list[tuple[int, str, str | None]]:
    """``(line, module, name)`` for each ``baseline`` import (``name`` is None for
    ``import baseline.x``)."""
    found: list[tuple[int, str, str | None]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "baseline" or node.module.startswith("baseline."):
                found += [(node.lineno, node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "baseline" or alias.name.startswith("baseline."):
                    found.append((node.lineno, alias.name, None))
    return found


def private_imports(source: str) -> list[str]:
    problems = []
    for line, module, name in baseline_imports(source):
        if module not in API:
            problems.append(f"line {line}: {module} is not a public path")
        elif name is not None and name not in API[module]:
            problems.append(f"line {line}: {module}.{name} is not a public name")
    return problems


def test_the_import_check_catches_private_and_old_paths() -> None:
    source = (
        "from baseline.runs.artifacts import atomic_write_text, atomic_write_json\n"
        "from baseline.training import Trainer\n"
        "import baseline.train.trainer\n"
        "from baseline.errors import ConfigError\n"
        "from . import sibling\n"
    )
    assert private_imports(source) == [
        "line 1: baseline.runs.artifacts.atomic_write_json is not a public name",
        "line 2: baseline.training is not a public path",
        "line 3: baseline.train.trainer is not a public path",
    ]


def test_bundled_plugins_import_baseline_through_public_paths_only() -> None:
    assert len(PLUGIN_SOURCES) >= 9
    problems = []
    scanned = 0
    for src in PLUGIN_SOURCES:
        for path in sorted(src.rglob("*.py")):
            scanned += 1
            for problem in private_imports(path.read_text(encoding="utf-8")):
                problems.append(f"{path.relative_to(ROOT)}: {problem}")
    assert scanned > 20
    assert not problems, "\n".join(problems)


# --- old paths ------------------------------------------------------------------------------


def test_the_guide_lists_every_old_path() -> None:
    expected = {**_compat.MOVED_MODULES, **{old: (new,) for old, new in PACKAGE_MOVES.items()}}
    assert documented_moves() == expected


@pytest.mark.parametrize("old", sorted(_compat.MOVED_MODULES))
def test_an_old_module_path_gives_the_new_module_with_a_warning(old: str) -> None:
    new = _compat.MOVED_MODULES[old]
    sys.modules.pop(old, None)
    try:
        with pytest.warns(DeprecationWarning, match=re.escape(f"moved to {new[0]}")) as caught:
            module = import_module(old)
        [warning] = [w for w in caught if str(w.message).startswith(old)]
        assert warning.filename == __file__, "the warning points at the import statement"
        if len(new) == 1:
            assert module is import_module(new[0])
        else:  # a split module: the names of each new module, the first one's on a clash
            targets = [vars(import_module(target)) for target in new]
            names = {name for names in targets for name in names if not name.startswith("__")}
            assert names <= set(vars(module))
            for name in names:
                owner = next(names for names in targets if name in names)
                assert getattr(module, name) is owner[name], name
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert import_module(old) is module  # imported once, warned once
    finally:
        sys.modules.pop(old, None)
        baseline.__dict__.pop(old.rpartition(".")[2], None)


def test_old_from_imports_work() -> None:
    with pytest.warns(DeprecationWarning, match="baseline.plugins.hookspecs"):
        from baseline.hookspecs import Register, hookimpl
    from baseline.plugins import hookspecs

    assert hookimpl is hookspecs.hookimpl
    assert Register is hookspecs.Register
    with pytest.warns(DeprecationWarning, match="baseline.runs.source_run"):
        from baseline.init_from import (
            check_lineage,
            read_source_run,
        )
    from baseline.data import lineage
    from baseline.runs import source_run

    assert read_source_run is source_run.read_source_run
    assert check_lineage is lineage.check_lineage
    for old in ("baseline.hookspecs", "baseline.init_from"):
        sys.modules.pop(old, None)
        baseline.__dict__.pop(old.rpartition(".")[2], None)


@pytest.mark.parametrize(("package", "new"), sorted(PACKAGE_MOVES.items()))
def test_names_of_a_module_that_became_a_package_import_with_a_warning(
    package: str, new: str
) -> None:
    moved = import_module(package)._MOVED
    assert moved
    for name in sorted(moved):
        with pytest.warns(DeprecationWarning, match=re.escape(f"import it from {new}")):
            value = getattr(import_module(package), name)
        assert value is getattr(import_module(new), name)
    with pytest.raises(AttributeError):
        import_module(package).no_such_name  # noqa: B018


def test_the_old_plugins_names_are_the_old_modules() -> None:
    """``baseline.plugins`` gives what the module ``baseline/plugins.py`` defined."""
    assert {
        "default_plugins",
        "discover",
        "activated",
        "PluginSet",
        "PluginSource",
    } <= import_module("baseline.plugins")._MOVED
    with pytest.warns(DeprecationWarning, match="baseline.plugins.discovery"):
        from baseline.plugins import default_plugins
    from baseline.plugins import discovery

    assert default_plugins is discovery.default_plugins


def imported_by(code: str) -> set[str]:
    """The modules ``python -X importtime -c code`` imports, in a fresh interpreter."""
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return {
        line.rsplit("|", 1)[1].strip()
        for line in completed.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    } - {"imported package"}


def test_import_baseline_imports_nothing_heavy() -> None:
    modules = imported_by("import baseline")
    assert "baseline._compat" in modules
    heavy = {"torch", "numpy", "pluggy", "attrs", "cattrs", "importlib.abc"}
    assert not modules & heavy, sorted(modules & heavy)
    assert not {m for m in modules if m.startswith("baseline.")} - {"baseline._compat"}


def test_the_old_names_of_packages_are_loaded_lazily() -> None:
    modules = imported_by("import baseline.plugins, baseline.metrics, baseline.distributed")
    assert not modules & set(PACKAGE_MOVES.values())
    assert "torch" not in modules


# --- the scripting API ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(baseline._EXPORTS))
def test_the_scripting_api_imports_from_baseline(name: str) -> None:
    module = import_module(baseline._EXPORTS[name])
    assert getattr(baseline, name) is getattr(module, name)
    assert name in dir(baseline)
    assert name in baseline.__all__


def test_the_scripting_api_covers_running_and_using_a_run() -> None:
    for name in (
        "model_pipeline",
        "RunResult",
        "load_experiment",
        "validate_experiment_config",
        "ExperimentConfig",
        "load_run",
        "LoadedRun",
        "generate",
        "SamplingOptions",
        "evaluate_run",
        "EvalResult",
        "export_run",
    ):
        assert name in baseline.__all__
    with pytest.raises(AttributeError):
        baseline.no_such_name  # noqa: B018


# --- the wing graph in docs/architecture.md -------------------------------------------------


def test_the_architecture_doc_draws_the_enforced_wing_graph() -> None:
    from test_import_graph import WING_IMPORTS

    wings = section((ROOT / "docs" / "architecture.md").read_text(encoding="utf-8"), "## Wings")
    mermaid = wings[wings.index("```mermaid") : wings.index("```", wings.index("```mermaid") + 3)]
    drawn: dict[str, set[str]] = {wing: set() for wing in WING_IMPORTS}
    for source, target in re.findall(r"^\s*(\w+) --> (\w+)\s*$", mermaid, re.MULTILINE):
        drawn[source].add(target)
    assert drawn == WING_IMPORTS, "the mermaid flowchart"

    text = wings[wings.index("```text") : wings.index("```", wings.index("```text") + 3)]
    written = {
        wing: set(targets.split())
        for wing, targets in re.findall(r"^(\w+)\s+->(.*)$", text, re.MULTILINE)
    }
    assert written == WING_IMPORTS, "the plain-text graph"
    for wing, allowed in WING_IMPORTS.items():
        row = next(line for line in wings.splitlines() if line.startswith(f"| `baseline.{wing}` |"))
        may_import = row.rstrip("|").rsplit("|", 1)[1]
        if "every other wing" not in may_import:
            assert set(re.findall(r"`(\w+)`", may_import)) == allowed, wing
