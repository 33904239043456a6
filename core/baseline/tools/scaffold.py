"""``baseline new-plugin``: write a separately installable plugin distribution to start from.

``baseline new-plugin my-plugin --kind dataset --kind model`` writes ``./my-plugin``: a
hatchling ``pyproject.toml`` with the ``baseline.plugins`` entry point, ``src/my_plugin`` (the
config classes and registration hooks in ``__init__.py``, one small but real adapter module per
kind), ``tests/test_my_plugin.py`` running the contract checks of :mod:`baseline.testing`, and
a README. The files are rendered from ``scaffold_templates/`` (``{{name}}`` placeholders).
Everything is checked and rendered before the first file is written, so a refusal (an invalid
name, an unknown kind, a non-empty target) writes nothing.
"""

from __future__ import annotations

import argparse
import keyword
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import attrs

from baseline.errors import ConfigError

#: The kinds a plugin can provide, in the order files and hooks are written.
KINDS = ("dataset", "tokenizer", "model", "split", "logger")
TEMPLATES = Path(__file__).with_name("scaffold_templates")
_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
#: ``baseline.config`` names each kind's config class needs (its base class, then helpers).
_CONFIG_NAMES = {
    "dataset": ("DatasetConfig", "at_least", "path_field"),
    "tokenizer": ("TokenizerConfig",),
    "model": ("ModelConfig", "at_least"),
    "split": ("SplitConfig", "at_least"),
    "logger": ("LoggerConfig",),
}
#: ``baseline.testing`` names each kind's tests use.
_TESTING_NAMES = {
    "dataset": ("check_dataset_adapter",),
    "tokenizer": ("SAMPLE_TEXTS", "check_tokenizer_adapter"),
    "model": ("check_model_adapter",),
    "split": ("check_split_adapter",),
    "logger": ("LoggedRun", "LoggerContract", "check_logger_adapter"),
}
_EXPERIMENT = {
    "dataset": '[dataset]\nname = "{p}_dataset"\npath = "corpus.txt"  # one segment per line',
    "tokenizer": '[tokenizer]\nname = "{p}_tokenizer"',
    "model": '[model]\nname = "{p}_model"\nd_model = 64\nhidden = 128',
    "split": '[split]\nname = "{p}_split"\nevery = 10',
    "logger": '[logging]\nprovider = ["console", "{p}_logger"]\n\n[logging.{p}_logger]\n'
    'file_name = "{p}_metrics.jsonl"',
}
_GITIGNORE = "__pycache__/\n*.egg-info/\n.pytest_cache/\nbuild/\ndist/\n"


@attrs.frozen
class PluginNames:
    """The names derived from ``NAME``: ``my-plugin`` -> module ``my_plugin``."""

    distribution: str
    module: str

    @property
    def class_prefix(self) -> str:
        """``MyPlugin``: the prefix of the generated class names."""
        return "".join(part.capitalize() for part in self.module.split("_"))

    def component(self, kind: str) -> str:
        """``my_plugin_dataset``: the name an experiment selects."""
        return f"{self.module}_{kind}"


def plugin_names(name: str) -> PluginNames:
    """Check ``name`` and derive the module name, or raise a one-line :class:`ConfigError`."""
    if not _NAME.match(name):
        raise ConfigError(
            f"invalid plugin name {name!r}: use lowercase letters and digits, words joined by "
            "'-' or '_', starting with a letter (e.g. my-plugin)"
        )
    module = name.replace("-", "_")
    if keyword.iskeyword(module) or module in sys.stdlib_module_names or module == "baseline":
        raise ConfigError(
            f"invalid plugin name {name!r}: its module {module!r} would shadow "
            f"{'the core' if module == 'baseline' else 'a Python module'}; pick another name"
        )
    return PluginNames(distribution=name, module=module)


def parse_kinds(values: Iterable[str]) -> tuple[str, ...]:
    """The kinds asked for (``--kind`` repeated, or comma-separated), in :data:`KINDS` order."""
    from baseline.plugins.registry import did_you_mean

    asked = {kind.strip() for value in values for kind in value.split(",") if kind.strip()}
    unknown = sorted(asked - set(KINDS))
    if unknown:
        kind = unknown[0]
        raise ConfigError(
            f"unknown kind {kind!r}{did_you_mean(kind, KINDS)} Choose from: {', '.join(KINDS)}",
            key_path="--kind",
        )
    if not asked:
        raise ConfigError(f"give at least one of {', '.join(KINDS)}", key_path="--kind")
    return tuple(kind for kind in KINDS if kind in asked)


def _template(name: str) -> str:
    return (TEMPLATES / f"{name}.tmpl").read_text(encoding="utf-8")


def _fill(text: str, values: Mapping[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    assert "{{" not in text, f"unfilled placeholder in {text[text.index('{{') :][:40]!r}"
    return text


def _from_import(module: str, names: Iterable[str]) -> str:
    """``from module import a, b`` sorted like ruff's isort (constants, classes, functions)."""
    unique = sorted(set(names), key=lambda n: (not n.isupper(), not n[:1].isupper(), n))
    line = f"from {module} import {', '.join(unique)}"
    if len(line) <= 100:
        return line
    return f"from {module} import (\n" + "".join(f"    {n},\n" for n in unique) + ")"


def _init_module(names: PluginNames, kinds: Sequence[str], values: Mapping[str, str]) -> str:
    file_names = "tokenizer" in kinds or "logger" in kinds
    imports = ["from typing import Any", ""] if file_names else []
    imports.append("import attrs")
    imports.append(_from_import("baseline.config", (n for k in kinds for n in _CONFIG_NAMES[k])))
    if file_names:
        imports.append("from baseline.errors import FieldError")
    imports.append("from baseline.plugins.hookspecs import Register, hookimpl")
    classes = sorted(f"{names.class_prefix}{kind.capitalize()}Config" for kind in kinds)
    body = _template("file_name_validator.py") if file_names else ""
    body += "".join(_template(f"{kind}_config.py") for kind in kinds)
    listed = ", ".join(f'"{c}"' for c in classes)
    if len(listed) > 85:
        listed = "\n" + "".join(f'    "{c}",\n' for c in classes)
    components = "".join(f"\n- {kind} ``{names.component(kind)}``" for kind in kinds)
    extra = {"imports": "\n".join(imports), "all": listed, "components": components}
    return _fill(_template("init.py"), {**values, **extra, "body": _fill(body, values).rstrip()})


def _test_module(names: PluginNames, kinds: Sequence[str], values: Mapping[str, str]) -> str:
    stdlib = ["import json"] if "logger" in kinds else []
    if set(kinds) & {"dataset", "tokenizer", "logger"}:
        stdlib.append("from pathlib import Path")
    third = ["import numpy as np"] if "split" in kinds else []
    if set(kinds) & {"dataset", "tokenizer", "split"}:
        third += ["import pytest", "from baseline.errors import ConfigError"]
    third.append("from baseline.plugins.discovery import default_plugins")
    testing = ["in_process_plugins", *(n for kind in kinds for n in _TESTING_NAMES[kind])]
    third.append(_from_import("baseline.testing", testing))
    prefix, module = names.class_prefix, names.module
    own = [
        f"import {module}",
        _from_import(module, (f"{prefix}{k.capitalize()}Config" for k in kinds)),
    ]
    own += [f"from {module}.{kind} import {prefix}{kind.capitalize()}" for kind in sorted(kinds)]
    sections = ["\n".join(section) for section in (stdlib, third, own) if section]
    registered = "\n".join(
        f'    assert registry.names("{kind}") == ["{names.component(kind)}"]' for kind in kinds
    )
    installed = "\n".join(
        f'    assert plugins.registry.get("{kind}", "{names.component(kind)}").distribution == '
        f'"{names.distribution}"'
        for kind in kinds
    )
    extra = {"imports": "\n\n".join(sections), "registered": registered, "installed": installed}
    text = _fill(_template("test_header.py"), {**values, **extra})
    return text + _fill("".join(_template(f"{kind}_test.py") for kind in kinds), values)


def render_plugin(name: str, kinds: Iterable[str]) -> dict[str, str]:
    """The plugin's files, by path relative to its directory (nothing written)."""
    names = plugin_names(name)
    chosen = parse_kinds(kinds)
    prefix, module = names.class_prefix, names.module
    values = {
        "dist": names.distribution,
        "module": module,
        "prefix": module,
        "Class": prefix,
        "summary": ", ".join(f"{kind} '{names.component(kind)}'" for kind in chosen),
    }
    table = "\n".join(
        f"| {kind} | `{names.component(kind)}` | `{prefix}{kind.capitalize()}Config` | "
        f"`{module}.{kind}.{prefix}{kind.capitalize()}` |"
        for kind in chosen
    )
    experiment = "\n\n".join(_EXPERIMENT[kind].format(p=module) for kind in chosen)
    files = {
        "pyproject.toml": _fill(_template("pyproject.toml"), values),
        "README.md": _fill(
            _template("README.md"), {**values, "table": table, "experiment": "\n" + experiment}
        ),
        ".gitignore": _GITIGNORE,
        f"src/{module}/__init__.py": _init_module(names, chosen, values),
        f"src/{module}/py.typed": "",
        f"tests/test_{module}.py": _test_module(names, chosen, values),
    }
    for kind in chosen:
        files[f"src/{module}/{kind}.py"] = _fill(_template(f"{kind}.py"), values)
    if "model" in chosen:
        files[f"src/{module}/network.py"] = _fill(_template("network.py"), values)
    return files


def write_plugin(name: str, kinds: Iterable[str], directory: str | Path | None = None) -> Path:
    """Write the plugin into ``directory`` (default ``./NAME``), which must not exist or be
    empty; return the directory."""
    files = render_plugin(name, kinds)
    target = Path(name if directory is None else directory)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{target} exists and is not a directory; give another --dir")
    if target.is_dir() and any(target.iterdir()):
        raise ConfigError(f"{target} exists and is not empty; give another --dir or remove it")
    for relative, text in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return target


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``baseline new-plugin``."""
    parser = commands.add_parser(
        "new-plugin", help="write a plugin distribution to start from (components, tests)"
    )
    parser.add_argument("name", metavar="NAME", help="distribution name, e.g. my-plugin")
    parser.add_argument(
        "--kind",
        dest="kinds",
        action="append",
        required=True,
        metavar="KIND",
        help=f"a component to include: {', '.join(KINDS)} (repeatable)",
    )
    parser.add_argument(
        "--dir", dest="directory", metavar="PATH", help="where to write it (default: ./NAME)"
    )


def command_new_plugin(args: argparse.Namespace) -> int:
    """Write the plugin and say what to do next."""
    target = write_plugin(args.name, args.kinds, args.directory)
    names = plugin_names(args.name)
    components = ", ".join(f"{kind} {names.component(kind)}" for kind in parse_kinds(args.kinds))
    print(f"{target}: plugin {names.distribution} (module {names.module}) with {components}")
    print(f"next: pip install -e {target} && pytest {target} && baseline plugins")
    return 0
