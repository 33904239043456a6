"""The adapters an experiment resolves to, built once from the registry."""

from __future__ import annotations

from typing import Any

import attrs

from baseline.config import ExperimentConfig
from baseline.errors import ConfigError, DataError
from baseline.protocols import DatasetAdapter, ModelAdapter, SplitAdapter, TokenizerAdapter
from baseline.registry import ComponentRegistry


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
        try:
            built[section] = component.create(section_config)
        except (ConfigError, DataError):
            raise
        except Exception as error:
            raise DataError(
                f"{section} {component.name!r} from {component.distribution} failed to build: "
                f"{type(error).__name__}: {error}"
            ) from error
    return Components(**built)
