"""The plugins wing: the contract between the core and its plugins, and how plugins are found.

- ``hookspecs``: the pluggy hook specifications and ``hookimpl`` (public: plugin authors import it);
- ``protocols``: the adapter protocols and records a component implements or receives (public);
- ``discovery``: loading the ``baseline.plugins`` entry points, each in isolation;
- ``registry``: components by kind and name, with did-you-mean and duplicate detection;
- ``components``: building the adapters an experiment names;
- ``output_checks``: checking plugin output (logits, ids, shapes) where it enters the core;
- ``versions``: the installed versions recorded in a run;
- ``commands``: the commands plugins add to ``baseline`` (``baseline_register_commands``);
- ``calls``: labelling what a plugin's adapter raises with the component's name;
- ``listing``: the table ``baseline plugins`` prints.

May import: :mod:`baseline.config` and :mod:`baseline.errors`.
"""

from __future__ import annotations

from typing import Any

#: Names of the old module ``baseline.plugins`` (now :mod:`baseline.plugins.discovery`),
#: importable from here with a ``DeprecationWarning``; discovery is imported on first use.
_MOVED = {
    "PluginInfo",
    "PluginSet",
    "PluginSource",
    "activated",
    "build_plugin_set",
    "default_plugins",
    "discover",
    "installed_sources",
}


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module 'baseline.plugins' has no attribute {name!r}")
    import warnings
    from importlib import import_module

    warnings.warn(
        f"baseline.plugins.{name} is deprecated: import it from baseline.plugins.discovery",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(import_module("baseline.plugins.discovery"), name)
