"""The ``mixture`` dataset: several ordinary dataset tables, each with a name and a weight.

A mixture is selected like any dataset (``[dataset] name = "mixture"``); each
``[dataset.sources.<name>]`` table is an ordinary dataset table (its own ``name`` selects the
component, e.g. ``local_text``) plus ``weight`` and, optionally, a ``[...split]`` table of its
own. The loader (:mod:`baseline.experiment.mixture`) structures each source through the
component registry like a top-level ``[dataset]`` table.

What a weight means: the fraction of training tokens drawn from that source. Weights are
normalized by their sum (``0.8``/``0.2`` and ``4``/``1`` are the same mix).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

import attrs

from baseline.config.experiment import DatasetConfig, SplitConfig
from baseline.errors import FieldError

#: The reserved dataset name that selects a mixture.
MIXTURE_NAME = "mixture"
#: Field metadata: the field's keys sit in its parent's TOML table (a source's dataset keys
#: are written beside its ``weight``), so key paths leave the field's name out.
INLINE_METADATA_KEY = "baseline_inline"
#: Field metadata: a mapping whose TOML table keeps the field's name (``dataset.sources.x``,
#: unlike ``logging.<provider>`` for ``LoggingConfig.loggers``).
NAMED_TABLE_METADATA_KEY = "baseline_named_table"

#: What happens when a source has given every training window once
#: (``dataset.on_exhausted``): ``repeat`` starts a new pass over it, in a new order;
#: ``stop`` ends training at the last step before any source would repeat.
OnExhausted = Literal["repeat", "stop"]


def _on_exhausted(_instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in get_args(OnExhausted):
        raise FieldError(
            attribute.name,
            f"must be one of {', '.join(map(repr, get_args(OnExhausted)))}, got {value!r}",
        )


@attrs.frozen(kw_only=True)
class MixtureSource:
    """One source of a mixture: a dataset component's config and its weight.

    ``split`` (with ``split_name``, the registered split component) replaces the experiment's
    ``[split]`` for this source only; ``None`` uses ``[split]``.
    """

    weight: float
    #: The registered name of the dataset component (``local_text``, ``hf_text``, ...).
    dataset_name: str
    dataset: DatasetConfig = attrs.field(metadata={INLINE_METADATA_KEY: True})
    split_name: str | None = None
    split: SplitConfig | None = None


@attrs.frozen(kw_only=True)
class MixtureConfig(DatasetConfig):
    """The ``mixture`` dataset: named sources, each split and validated on its own, mixed at
    their weights (the fraction of training tokens drawn from each)."""

    sources: Mapping[str, MixtureSource] = attrs.field(metadata={NAMED_TABLE_METADATA_KEY: True})
    on_exhausted: OnExhausted = attrs.field(default="repeat", validator=_on_exhausted)

    @property
    def names(self) -> tuple[str, ...]:
        """The sources' names, in the order of the file."""
        return tuple(self.sources)

    @property
    def weights(self) -> tuple[float, ...]:
        """Each source's weight divided by their sum, in :attr:`names` order."""
        total = sum(source.weight for source in self.sources.values())
        return tuple(source.weight / total for source in self.sources.values())
