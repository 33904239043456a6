"""The adapters an experiment resolves to, built once from the registry."""

from __future__ import annotations

from typing import Any

import attrs

from baseline.config import ComponentConfig, ExperimentConfig
from baseline.errors import ConfigError, DataError
from baseline.plugins.protocols import DatasetAdapter, ModelAdapter, SplitAdapter, TokenizerAdapter
from baseline.plugins.registry import Component, ComponentRegistry


@attrs.frozen
class Components:
    """The adapters an experiment resolved to."""

    dataset: DatasetAdapter
    tokenizer: TokenizerAdapter
    model: ModelAdapter
    split: SplitAdapter


def resolve_components(config: ExperimentConfig, registry: ComponentRegistry) -> Components:
    """Build every adapter from its registered factory."""
    built: dict[str, Any] = {}
    for section in ("dataset", "tokenizer", "model", "split"):
        section_config = getattr(config, section)
        component = registry.get(section, registry.name_of(section, section_config))
        built[section] = build_adapter(component, section_config)
    return Components(**built)


def build_adapter(component: Component, config: ComponentConfig) -> Any:
    """Call ``component``'s factory; anything it raises other than :class:`ConfigError` or
    :class:`DataError` becomes one line naming the component and its distribution."""
    try:
        return component.create(config)
    except (ConfigError, DataError):
        raise
    except Exception as error:
        message = str(error).strip().splitlines()
        raise DataError(
            f"{component.kind} {component.name!r} from {component.distribution} failed to "
            f"build: {type(error).__name__}: {message[0] if message else ''}"
        ) from error
