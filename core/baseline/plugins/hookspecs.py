"""Pluggy hook specifications: how a plugin tells the core what it provides.

A plugin is any module or object, exposed through the ``baseline.plugins`` entry-point
group, that implements some of these hooks with :data:`hookimpl`. Each hook receives a
``register(name, config_cls, factory)`` callable:

* ``name`` is what an experiment writes as ``[dataset] name = "..."`` (or ``provider`` for
  loggers); it must be unique per kind across all installed plugins.
* ``config_cls`` is an attrs config class derived from the kind's base class in
  :mod:`baseline.config`; the rest of the TOML table is structured into it.
* ``factory(config)`` returns the adapter (see :mod:`baseline.plugins.protocols`); a class whose
  ``__init__`` takes the config is the usual choice. Import heavy libraries (torch, datasets)
  inside the factory or the adapter module, not at plugin import, so that ``baseline plugins``
  stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT_NAME = "baseline"
ENTRY_POINT_GROUP = "baseline.plugins"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
#: Decorate your hook functions with this marker.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

#: The ``register`` callable every registration hook receives.
Register = Callable[[str, type[Any], Callable[[Any], Any]], None]


@hookspec
def baseline_register_datasets(register: Register) -> None:
    """Register dataset components: ``factory(config)`` returns a ``DatasetAdapter``."""


@hookspec
def baseline_register_tokenizers(register: Register) -> None:
    """Register tokenizer components: ``factory(config)`` returns a ``TokenizerAdapter``."""


@hookspec
def baseline_register_models(register: Register) -> None:
    """Register model components: ``factory(config)`` returns a ``ModelAdapter``."""


@hookspec
def baseline_register_splits(register: Register) -> None:
    """Register train/validation splits: ``factory(config)`` returns a ``SplitAdapter``."""


@hookspec
def baseline_register_loggers(register: Register) -> None:
    """Register metrics loggers: ``factory(config)`` returns a ``LoggerAdapter``."""


#: Component kind -> the hook that registers components of that kind.
HOOK_BY_KIND = {
    "dataset": "baseline_register_datasets",
    "tokenizer": "baseline_register_tokenizers",
    "model": "baseline_register_models",
    "split": "baseline_register_splits",
    "logger": "baseline_register_loggers",
}
