"""Plugin discovery: load every ``baseline.plugins`` entry point and collect registrations.

Each entry point is loaded and registered in isolation: one that fails to import, or raises
while registering, is recorded as a :class:`~baseline.plugins.registry.LoadFailure` and skipped, so
the other plugins keep working. Besides components, a plugin may register commands of
``baseline`` (:mod:`baseline.plugins.commands`); :func:`add_plugin_commands` adds those of the
plugin set in use to the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from importlib import metadata
from typing import Any

import attrs
import pluggy

from baseline.errors import PluginError
from baseline.plugins import hookspecs
from baseline.plugins.commands import Handler, PluginCommand, add_commands, collect_commands
from baseline.plugins.registry import (
    Component,
    ComponentRegistry,
    LoadFailure,
    check_registration,
    shared_config_class_message,
)


@attrs.frozen
class PluginInfo:
    """A loaded plugin: its entry point, distribution and what it registered."""

    entry_point: str
    distribution: str
    version: str
    #: ``(kind, name)`` of each component, then ``("command", name)`` of each command.
    components: tuple[tuple[str, str], ...]


@attrs.frozen
class PluginSet:
    """The result of discovery: loaded plugins, failures, and the registry they built."""

    plugins: tuple[PluginInfo, ...]
    failures: tuple[LoadFailure, ...]
    registry: ComponentRegistry
    #: The commands the plugins add to ``baseline``, in registration order.
    commands: tuple[PluginCommand, ...] = ()


@attrs.frozen
class PluginSource:
    """A plugin object to register, with the names used in reports."""

    plugin: object
    entry_point: str
    distribution: str
    version: str


def _describe_error(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def installed_sources() -> tuple[list[PluginSource], list[LoadFailure]]:
    """Load every entry point of the ``baseline.plugins`` group."""
    sources: list[PluginSource] = []
    failures: list[LoadFailure] = []
    for entry_point in sorted(
        metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP), key=lambda ep: ep.name
    ):
        dist = entry_point.dist
        dist_name = dist.metadata["Name"] if dist is not None else "<unknown distribution>"
        version = dist.version if dist is not None else "?"
        try:
            plugin = entry_point.load()
        except Exception as error:  # a broken plugin must not take the others down
            failures.append(
                LoadFailure(entry_point.name, dist_name, version, _describe_error(error))
            )
            continue
        sources.append(PluginSource(plugin, entry_point.name, dist_name, version))
    return sources, failures


def build_plugin_set(
    sources: Iterable[PluginSource], failures: Sequence[LoadFailure] = ()
) -> PluginSet:
    """Register every source's components; conflicting names are an error naming both."""
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    registry = ComponentRegistry()
    all_failures = list(failures)
    infos: list[PluginInfo] = []
    commands: list[PluginCommand] = []
    for source in sources:
        try:
            manager.register(source.plugin, name=f"{source.distribution}:{source.entry_point}")
            staged = _collect_registrations(manager, source)
            added = collect_commands(manager, source.plugin, source.distribution, source.version)
        except PluginError as error:
            all_failures.append(
                LoadFailure(source.entry_point, source.distribution, source.version, str(error))
            )
            _unregister(manager, source.plugin)
            continue
        except Exception as error:
            all_failures.append(
                LoadFailure(
                    source.entry_point,
                    source.distribution,
                    source.version,
                    f"raised while registering: {_describe_error(error)}",
                )
            )
            _unregister(manager, source.plugin)
            continue
        for component in staged:
            registry.add(component)  # duplicates across plugins raise PluginError
        commands += added
        infos.append(
            PluginInfo(
                source.entry_point,
                source.distribution,
                source.version,
                tuple((c.kind, c.name) for c in staged) + tuple(("command", c.name) for c in added),
            )
        )
    registry.failures = all_failures
    return PluginSet(tuple(infos), tuple(all_failures), registry, tuple(commands))


def _unregister(manager: pluggy.PluginManager, plugin: object) -> None:
    if manager.is_registered(plugin):
        manager.unregister(plugin)


def _collect_registrations(manager: pluggy.PluginManager, source: PluginSource) -> list[Component]:
    """Call this plugin's registration hooks, staging what it registers."""
    staged: list[Component] = []
    for kind, hook_name in hookspecs.HOOK_BY_KIND.items():
        hook_caller = getattr(manager.hook, hook_name)
        for impl in hook_caller.get_hookimpls():
            if impl.plugin is not source.plugin:
                continue

            def register(
                name: str, config_cls: type[Any], factory: Callable[[Any], Any], _kind: str = kind
            ) -> None:
                check_registration(_kind, name, config_cls, factory)
                staged.append(
                    Component(_kind, name, config_cls, factory, source.distribution, source.version)
                )

            impl.function(register=register)
    names = [(c.kind, c.name) for c in staged]
    for kind_name in set(names):
        if names.count(kind_name) > 1:
            raise PluginError(f"registers {kind_name[0]} {kind_name[1]!r} more than once")
    for index, component in enumerate(staged):
        for earlier in staged[:index]:
            if earlier.kind == component.kind and earlier.config_cls is component.config_cls:
                raise PluginError(shared_config_class_message(earlier, component))
    return staged


def discover(extra: Sequence[PluginSource] = (), *, installed: bool = True) -> PluginSet:
    """Discover installed plugins (unless ``installed`` is false) plus ``extra`` in-process ones."""
    sources: list[PluginSource] = []
    failures: list[LoadFailure] = []
    if installed:
        sources, failures = installed_sources()
        # An in-process plugin that is also installed is registered once, as in-process.
        extra_ids = {id(source.plugin) for source in extra}
        sources = [source for source in sources if id(source.plugin) not in extra_ids]
    return build_plugin_set([*sources, *extra], failures)


@functools.cache
def _installed_plugins() -> PluginSet:
    return discover()


_active: list[PluginSet] = []


def default_plugins() -> PluginSet:
    """The plugin set in use: the innermost :func:`activated` one, else the installed plugins
    (discovered once per process)."""
    return _active[-1] if _active else _installed_plugins()


@contextlib.contextmanager
def activated(plugin_set: PluginSet) -> Iterator[PluginSet]:
    """Make ``plugin_set`` what :func:`default_plugins` returns inside the ``with`` block."""
    _active.append(plugin_set)
    try:
        yield plugin_set
    finally:
        _active.remove(plugin_set)


def add_plugin_commands(
    parser: argparse.ArgumentParser, core: Collection[str]
) -> dict[str, Handler]:
    """Add the commands of the plugin set in use to ``parser`` (whose subcommands are ``core``);
    their handlers by name (see :func:`baseline.plugins.commands.add_commands`)."""
    return add_commands(parser, default_plugins().commands, core)
