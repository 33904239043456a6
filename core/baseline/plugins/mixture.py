"""The adapters of a ``mixture`` dataset: each source's dataset and split, and the
:class:`MixtureDataset` that yields every source's segments one source after the other
(the order of the token stream, so the token cache works for a mixture as for one dataset)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from baseline.config.mixture import MIXTURE_NAME, MixtureConfig
from baseline.plugins.protocols import DatasetAdapter, SplitAdapter


@attrs.frozen
class SourceAdapters:
    """One source of a mixture, built: its name, weight (normalized), dataset and split
    adapters, and the labels errors of their calls carry."""

    name: str
    weight: float
    dataset: DatasetAdapter
    split: SplitAdapter
    labels: Mapping[str, str] = attrs.field(factory=dict)

    @property
    def key_path(self) -> str:
        """The TOML table of this source (``dataset.sources.<name>``)."""
        return f"dataset.sources.{self.name}"


class MixtureDataset:
    """The segments of every source in the order of the mixture's sources (source by source,
    each in its own order): what the token stream holds. Which source a token range belongs
    to, and how the sources are mixed, is the preparation's and the schedule's business."""

    def __init__(self, config: MixtureConfig, sources: tuple[SourceAdapters, ...]) -> None:
        self.config = config
        self.sources = sources

    def segments(self) -> Iterator[str]:
        """Every source's segments, source after source."""
        for source in self.sources:
            yield from source.dataset.segments()

    @property
    def segment_delimiter(self) -> str:
        """The first source's delimiter (what samples print for an end-of-segment token)."""
        return str(getattr(self.sources[0].dataset, "segment_delimiter", ""))

    def fingerprint(self) -> str | None:
        """A hash of each source's name and fingerprint; ``None`` when one source has none."""
        parts: list[Any] = [MIXTURE_NAME]
        for source in self.sources:
            method = getattr(source.dataset, "fingerprint", None)
            if method is None:
                return None
            value = method()
            if value is None:
                return None
            parts.append([source.name, str(value)])
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()
