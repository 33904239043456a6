"""baseline plugin: dataset ``hf_text``, a text column of a Hugging Face ``datasets`` dataset.

The source may be a dataset on the Hugging Face Hub, a local data directory, a directory
written by ``Dataset.save_to_disk``/``DatasetDict.save_to_disk``, or a packaged builder
(``text``, ``json``, ``csv``, ``parquet``, ...) reading ``data_files``.

This module holds only the config class and the registration hook; ``datasets`` is imported
by the adapter (:mod:`baseline_hf_datasets.dataset`) when a run loads the data, so
``baseline plugins`` and ``baseline validate`` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from baseline.config import DatasetConfig, ExperimentConfig, at_least, path_field
from baseline.errors import FieldError
from baseline.hookspecs import Register, hookimpl

if TYPE_CHECKING:
    from baseline_hf_datasets.dataset import HFTextDataset

__all__ = ["HFTextDatasetConfig"]


def _non_empty(_instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value.strip():
        raise FieldError(attribute.name, "must not be empty")


def _optional_non_empty(_instance: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and not value.strip():
        raise FieldError(attribute.name, "must not be empty; leave the key out instead")


def _data_files(
    _instance: Any, attribute: attrs.Attribute[Any], value: tuple[str, ...] | None
) -> None:
    if value is None:
        return
    if not value:
        raise FieldError(attribute.name, "must not be an empty list; leave the key out instead")
    for index, entry in enumerate(value):
        if not entry.strip():
            raise FieldError(f"{attribute.name}[{index}]", "must not be empty")


@attrs.frozen(kw_only=True)
class HFTextDatasetConfig(DatasetConfig):
    """One split and one text column of a Hugging Face dataset; each non-blank row is a segment.

    ``path`` is, in this order of precedence: a packaged builder name (``text``, ``json``,
    ``csv``, ``parquet``, ...) used with ``data_files``; an existing local directory, either
    written by ``save_to_disk`` or holding data files; otherwise a Hub dataset name
    (``owner/name``).
    """

    #: Builder name, local directory, ``save_to_disk`` directory or Hub dataset name.
    path: str = attrs.field(validator=_non_empty)
    #: Data files (paths or glob patterns). With a builder ``path`` a relative entry is resolved
    #: against ``base_dir``; with a local directory or a Hub dataset it is relative to that.
    data_files: tuple[str, ...] | None = attrs.field(default=None, validator=_data_files)
    #: The dataset's configuration (``name`` in ``datasets.load_dataset``).
    config_name: str | None = attrs.field(default=None, validator=_optional_non_empty)
    split: str = attrs.field(default="train", validator=_non_empty)
    text_column: str = attrs.field(default="text", validator=_non_empty)
    #: Iterate the rows lazily (``IterableDataset``) instead of preparing an Arrow copy.
    streaming: bool = False
    #: Git revision (branch, tag or commit) of a Hub dataset.
    revision: str | None = attrs.field(default=None, validator=_optional_non_empty)
    #: Passed to ``datasets.load_dataset`` (dataset scripts; ignored by datasets >= 4).
    trust_remote_code: bool = False
    #: Stop after this many non-blank rows.
    max_segments: int | None = attrs.field(default=None, validator=at_least(1))
    #: What separates two rows in the source text: the end-of-segment token stands for it
    #: (bits per byte count its bytes; samples render the token as it). ``"\n"`` suits the
    #: ``text`` builder's one row per line; use ``"\n\n"`` for paragraphs or documents.
    segment_delimiter: str = "\n"
    #: Directory that a relative local ``path`` and builder ``data_files`` are resolved
    #: against. A path field: the default ``"."`` becomes the experiment file's directory.
    base_dir: str = path_field(default=".", validator=_non_empty)

    def validate(self, experiment: ExperimentConfig) -> None:
        """A streamed split cannot be sliced (``train[:10%]``); ``max_segments`` can cap it."""
        if self.streaming and "[" in self.split:
            raise FieldError(
                "split",
                f"slices such as {self.split!r} need streaming = false; with streaming, "
                "use max_segments to read only the start of a split",
            )


def _create(config: HFTextDatasetConfig) -> HFTextDataset:
    from baseline_hf_datasets.dataset import HFTextDataset  # the adapter loads on first use

    return HFTextDataset(config)


@hookimpl
def baseline_register_datasets(register: Register) -> None:
    """Register the ``hf_text`` dataset."""
    register("hf_text", HFTextDatasetConfig, _create)
