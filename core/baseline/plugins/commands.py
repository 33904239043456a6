"""Commands that plugins add to ``baseline`` through the hook ``baseline_register_commands``.

Discovery (:mod:`baseline.plugins.discovery`) calls each plugin's hook with a ``register``
callable (:func:`collect_commands`) and keeps what it registered as :class:`PluginCommand`
records in the plugin set; :func:`add_commands` then gives each one a subparser of
``baseline`` and a handler:

- a :class:`~baseline.errors.BaselineError` the command raises is reported like a core
  command's (one line, its exit status);
- any other exception becomes a :class:`PluginCommandError` naming the command and its
  distribution (one line, status 1);
- a command whose ``build`` raises, or whose name two plugins registered, fails with one line
  when it is run; the other commands keep working. A plugin command named like a core command
  is not added (the core command runs).

``baseline`` discovers the plugins only when the first word of its command line is not a core
command (``--help``, a plugin's command, a typo), so ``baseline run`` and ``baseline runs``
start as fast as without plugin commands.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any

import attrs

from baseline.errors import BaselineError, PluginError

if TYPE_CHECKING:
    import pluggy

#: A command's handler: parsed arguments in, exit status out.
Handler = Callable[[argparse.Namespace], int]

_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
HOOK = "baseline_register_commands"


class PluginCommandError(PluginError):
    """An unexpected exception inside a plugin command (a bug of the plugin): status 1."""

    exit_code = 1


@attrs.frozen
class PluginCommand:
    """A command a plugin registered, with the distribution that provides it."""

    name: str
    build: Callable[[argparse.ArgumentParser], None]
    run: Handler
    help: str
    distribution: str
    version: str

    @property
    def label(self) -> str:
        """``command 'sweep' from baseline-sweeps 0.1.0``, for messages."""
        return f"command {self.name!r} from {self.distribution} {self.version}"


def collect_commands(
    manager: pluggy.PluginManager, plugin: object, distribution: str, version: str
) -> list[PluginCommand]:
    """Call ``plugin``'s command hook (if it implements one) and return what it registered;
    a malformed registration is a :class:`PluginError` (the plugin fails to load)."""
    staged: list[PluginCommand] = []

    def register(
        name: str,
        build: Callable[[argparse.ArgumentParser], None],
        run: Handler,
        *,
        help: str = "",
    ) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise PluginError(
                f"command name {name!r} is invalid: use lowercase letters, digits or '-', "
                "starting with a letter"
            )
        if not callable(build) or not callable(run):
            raise PluginError(f"command {name!r}: build and run must be callable")
        if any(command.name == name for command in staged):
            raise PluginError(f"registers command {name!r} more than once")
        staged.append(PluginCommand(name, build, run, help, distribution, version))

    for impl in getattr(manager.hook, HOOK).get_hookimpls():
        if impl.plugin is plugin:
            impl.function(register=register)
    return staged


def _describe(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _handler(command: PluginCommand) -> Handler:
    def handle(args: argparse.Namespace) -> int:
        try:
            return command.run(args)
        except BaselineError:
            raise
        except Exception as error:
            raise PluginCommandError(
                f"{command.label} failed: {_describe(error)} "
                "(set BASELINE_DEBUG=1 to see the traceback)"
            ) from error

    return handle


def _failing(error: BaselineError) -> Handler:
    def handle(_args: argparse.Namespace) -> int:
        raise error

    return handle


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[Any]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise ValueError("the parser has no subcommands")


def add_commands(
    parser: argparse.ArgumentParser, commands: Iterable[PluginCommand], core: Collection[str]
) -> dict[str, Handler]:
    """Give each of ``commands`` a subcommand of ``parser`` (whose own subcommands are
    ``core``) and return their handlers by name (see the module)."""
    subparsers = _subparsers(parser)
    handlers: dict[str, Handler] = {}
    owners: dict[str, PluginCommand] = {}
    for command in commands:
        if command.name in core:
            continue
        first = owners.get(command.name)
        if first is not None:
            handlers[command.name] = _failing(
                PluginError(
                    f"command {command.name!r} is registered twice: by {first.distribution} "
                    f"{first.version} and by {command.distribution} {command.version}; "
                    "uninstall one of them"
                )
            )
            continue
        owners[command.name] = command
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        try:
            command.build(sub)
        except Exception as error:
            handlers[command.name] = _failing(
                PluginError(f"{command.label} cannot build its arguments: {_describe(error)}")
            )
            continue
        handlers[command.name] = _handler(command)
    return handlers
