"""Library and plugin versions recorded in ``run_config.json``."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

from baseline.plugins.discovery import PluginSet


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def environment_versions(plugins: PluginSet) -> dict[str, Any]:
    """Python, core, library and plugin versions."""
    libraries = ("torch", "numpy", "tokenizers", "attrs", "cattrs", "pluggy")
    return {
        "python": platform.python_version(),
        "baseline": _version("baseline"),
        "libraries": {name: _version(name) for name in libraries if _version(name)},
        "plugins": {info.distribution: info.version for info in plugins.plugins},
    }
