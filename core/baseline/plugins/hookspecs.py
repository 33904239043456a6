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

:func:`baseline_register_commands` is the one hook that does not register a component: it adds
a subcommand to ``baseline`` (``baseline sweep``), see :mod:`baseline.plugins.commands`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    import argparse

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


class RegisterCommand(Protocol):
    """The ``register`` callable :func:`baseline_register_commands` receives."""

    def __call__(
        self,
        name: str,
        build: Callable[[argparse.ArgumentParser], None],
        run: Callable[[argparse.Namespace], int],
        *,
        help: str = "",
    ) -> None: ...


@hookspec
def baseline_register_commands(register: RegisterCommand) -> None:
    """Add subcommands to ``baseline``: ``register(name, build, run, help=...)``.

    * ``name``: the word after ``baseline`` (lowercase letters, digits and ``-``, starting with
      a letter). A core command's name cannot be taken; two plugins registering one name make
      that command fail with a line naming both.
    * ``build(parser)``: add the command's arguments to its ``argparse`` parser. It runs each
      time ``baseline`` lists or parses plugin commands (``baseline --help``), so it must be
      cheap: import heavy libraries in ``run``.
    * ``run(args)``: do the work and return the exit status. A
      :class:`~baseline.errors.BaselineError` it raises is printed as the core prints its own
      (one line, its ``exit_code``); any other exception is printed as one line naming the
      command and its distribution, status 1.
    """


#: Component kind -> the hook that registers components of that kind.
HOOK_BY_KIND = {
    "dataset": "baseline_register_datasets",
    "tokenizer": "baseline_register_tokenizers",
    "model": "baseline_register_models",
    "split": "baseline_register_splits",
    "logger": "baseline_register_loggers",
}
