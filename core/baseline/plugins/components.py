"""The adapters an experiment resolves to (built by
:meth:`baseline.experiment.resolved.ResolvedExperiment.build_components`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from baseline.config import ComponentConfig
from baseline.errors import ConfigError, DataError
from baseline.plugins.protocols import DatasetAdapter, ModelAdapter, SplitAdapter, TokenizerAdapter
from baseline.plugins.registry import Component


@attrs.frozen
class Components:
    """The adapters an experiment resolved to."""

    dataset: DatasetAdapter
    tokenizer: TokenizerAdapter
    model: ModelAdapter
    split: SplitAdapter
    #: Each kind's ``"<kind> '<name>' from <distribution>"``, what errors of its calls say.
    labels: Mapping[str, str] = attrs.field(factory=dict)
    #: A ``mixture`` dataset's sources (``baseline.plugins.mixture.SourceAdapters``), in the
    #: order of the file; empty for one dataset.
    sources: tuple[Any, ...] = ()

    def label(self, kind: str, name: str = "") -> str:
        """The label of the ``kind`` adapter, or :func:`component_label` of ``name``."""
        if kind in self.labels:
            return self.labels[kind]
        from baseline.plugins.output_checks import component_label

        return component_label(kind, name) if name else kind


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
