"""The component registry: which config class and factory each (kind, name) maps to."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from baseline.config import (
    ComponentConfig,
    DatasetConfig,
    LoggerConfig,
    ModelConfig,
    SplitConfig,
    TokenizerConfig,
)
from baseline.errors import ConfigError, PluginError

#: Component kind -> base class its configs must derive from.
CONFIG_BASE_BY_KIND: dict[str, type[ComponentConfig]] = {
    "dataset": DatasetConfig,
    "tokenizer": TokenizerConfig,
    "model": ModelConfig,
    "split": SplitConfig,
    "logger": LoggerConfig,
}
KINDS = tuple(CONFIG_BASE_BY_KIND)

#: Where each kind is selected in an experiment file, for error messages.
SELECTOR_KEY_BY_KIND = {
    "dataset": "dataset.name",
    "tokenizer": "tokenizer.name",
    "model": "model.name",
    "split": "split.name",
    "logger": "logging.provider",
}

_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_\-]*$")


@attrs.frozen
class Component:
    """One registered component and the distribution that provided it."""

    kind: str
    name: str
    config_cls: type[ComponentConfig]
    factory: Callable[[Any], Any]
    distribution: str
    version: str

    def create(self, config: ComponentConfig) -> Any:
        """Build the adapter for ``config``."""
        return self.factory(config)

    @property
    def label(self) -> str:
        """``model 'x' from <distribution>``, for messages about this component."""
        return f"{self.kind} {self.name!r} from {self.distribution}"


@attrs.frozen
class LoadFailure:
    """A plugin entry point that could not be loaded or failed while registering."""

    entry_point: str
    distribution: str
    version: str
    error: str

    def describe(self) -> str:
        """One line: which plugin failed and why."""
        return (
            f"plugin {self.entry_point!r} from {self.distribution} {self.version} "
            f"failed to load: {self.error}"
        )


class ComponentRegistry:
    """Components by kind and name, plus the plugins that failed to load."""

    def __init__(self) -> None:
        self._components: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
        self.failures: list[LoadFailure] = []

    def add(self, component: Component) -> None:
        """Register ``component``; a name taken by another distribution is an error."""
        check_registration(component.kind, component.name, component.config_cls, component.factory)
        existing = self._components[component.kind].get(component.name)
        if existing is not None:
            raise PluginError(
                f"{component.kind} {component.name!r} is registered twice: by "
                f"{existing.distribution} {existing.version} and by "
                f"{component.distribution} {component.version}; uninstall one of them"
            )
        for other in self._components[component.kind].values():
            if other.config_cls is component.config_cls:
                raise PluginError(shared_config_class_message(other, component))
        self._components[component.kind][component.name] = component

    def names(self, kind: str) -> list[str]:
        """Sorted names registered for ``kind``."""
        return sorted(self._components[kind])

    def components(self, kind: str | None = None) -> list[Component]:
        """Registered components, of one kind or all, sorted by kind then name."""
        kinds = [kind] if kind else list(KINDS)
        return [self._components[k][n] for k in kinds for n in sorted(self._components[k])]

    def get(self, kind: str, name: str) -> Component:
        """The component ``name`` of ``kind``, or a :class:`ConfigError` listing the choices."""
        try:
            return self._components[kind][name]
        except KeyError:
            pass
        installed = self.names(kind)
        message = f"unknown {kind} {name!r}{did_you_mean(name, installed)}"
        message += f" Installed: {', '.join(installed) if installed else 'none'}"
        if self.failures:
            broken = "; ".join(failure.describe() for failure in self.failures)
            message += f". Not loaded: {broken}"
        raise ConfigError(message, key_path=SELECTOR_KEY_BY_KIND[kind])

    def name_of(self, kind: str, config: ComponentConfig) -> str:
        """The registered name whose config class is exactly ``type(config)``."""
        return self.component_of(kind, config).name

    def component_of(self, kind: str, config: ComponentConfig) -> Component:
        """The component whose config class is exactly ``type(config)``, or a
        :class:`ConfigError` listing the installed ones."""
        for component in self._components[kind].values():
            if type(config) is component.config_cls:
                return component
        raise ConfigError(
            f"{type(config).__name__} is not the config class of any installed {kind}; "
            f"installed: {', '.join(self.names(kind)) or 'none'}",
            key_path=SELECTOR_KEY_BY_KIND[kind].split(".")[0],
        )


def shared_config_class_message(first: Component, second: Component) -> str:
    """Two components of one kind with one config class: the registry maps a config class
    to its name (:meth:`ComponentRegistry.name_of`), so the second would be mistaken for the
    first."""
    return (
        f"{second.kind}s {first.name!r} ({first.distribution}) and {second.name!r} "
        f"({second.distribution}) are registered with the same config class "
        f"{second.config_cls.__qualname__}; give each its own config class (a subclass is enough)"
    )


def check_registration(kind: str, name: str, config_cls: Any, factory: Any) -> None:
    """Reject a malformed registration with a message a plugin author can act on."""
    if kind not in CONFIG_BASE_BY_KIND:
        raise PluginError(f"unknown component kind {kind!r}; expected one of {', '.join(KINDS)}")
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise PluginError(
            f"{kind} name {name!r} is invalid: use lowercase letters, digits, '_' or '-', "
            "starting with a letter"
        )
    base = CONFIG_BASE_BY_KIND[kind]
    if not (
        isinstance(config_cls, type) and issubclass(config_cls, base) and attrs.has(config_cls)
    ):
        raise PluginError(
            f"{kind} {name!r}: config class must be an attrs class derived from "
            f"baseline.config.{base.__name__}, got {config_cls!r}"
        )
    if not callable(factory):
        raise PluginError(f"{kind} {name!r}: factory must be callable, got {factory!r}")


def did_you_mean(name: str, choices: Iterable[str], aliases: Mapping[str, str] = {}) -> str:
    """``"; did you mean 'x'?"`` when a close match exists, else ``"."`` (ends the clause).

    ``aliases`` maps other words a user may mean to a choice (``train`` -> ``run``): a name
    close to one of them suggests its choice.
    """
    choices = list(choices)
    close = difflib.get_close_matches(name, [*choices, *aliases], n=1)
    return f"; did you mean {aliases.get(close[0], close[0])!r}?" if close else "."
