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
from baseline.plugins.hookspecs import Register, hookimpl

if TYPE_CHECKING:
    from baseline_hf_datasets.dataset import HFTextDataset

__all__ = ["HFTextDatasetConfig"]


def _non_empty(_instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value.strip():
        raise FieldError(attribute.name, "must not be empty")


def _optional_non_empty(_instance: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and not value.strip():
        raise FieldError(attribute.name, "must not be empty; leave the key out instead")


#: What ``datasets.load_dataset`` accepts as ``data_files``, as the config holds it: a list
#: (a single string becomes a list of one) or a table of split name -> list.
DataFiles = tuple[str, ...] | dict[str, tuple[str, ...]]

#: ``load_dataset`` arguments that have their own key in the ``hf_text`` table.
_OWN_KEYS = {
    "path": "path",
    "name": "config_name",
    "data_files": "data_files",
    "split": "split",
    "streaming": "streaming",
    "revision": "revision",
    "trust_remote_code": "trust_remote_code",
}


def _file_list(value: Any, key: str) -> tuple[str, ...]:
    entries = [value] if isinstance(value, str) else value
    if not isinstance(entries, list | tuple):
        raise FieldError(
            key,
            "expected a string, a list of strings or a table of split = files, got "
            f"{type(value).__name__}",
        )
    if not entries:
        raise FieldError(key, "must not be an empty list; leave the key out instead")
    for index, entry in enumerate(entries):
        if not isinstance(entry, str):
            raise FieldError(f"{key}[{index}]", f"expected a string, got {type(entry).__name__}")
        if not entry.strip():
            raise FieldError(f"{key}[{index}]" if len(entries) > 1 else key, "must not be empty")
    return tuple(entries)


def _data_files(value: Any) -> DataFiles | None:
    """A string, a list of strings, or a table of split -> string or list (``load_dataset``'s
    forms), checked and normalised to a tuple or a dict of tuples."""
    if value is None:
        return None
    if isinstance(value, dict):
        if not value:
            raise FieldError("data_files", "must not be an empty table; leave the key out instead")
        return {split: _file_list(files, f"data_files.{split}") for split, files in value.items()}
    return _file_list(value, "data_files")


def _builder_options(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FieldError("builder_options", f"expected a table, got {type(value).__name__}")
    for key in value:
        if key in _OWN_KEYS:
            raise FieldError(f"builder_options.{key}", f"set dataset.{_OWN_KEYS[key]} instead")
    return dict(value)


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
    #: Data files (paths or glob patterns), as ``datasets.load_dataset`` takes them: a string,
    #: a list, or a table of split -> string or list (``{train = "a.txt", test = ["b.txt"]}``).
    #: With a builder ``path`` a relative entry is resolved against ``base_dir``; with a local
    #: directory or a Hub dataset it is relative to that.
    data_files: Any = attrs.field(default=None, converter=_data_files)
    #: Further keyword arguments of ``datasets.load_dataset``, passed as they are: the
    #: builder's options, e.g. ``{sample_by = "document"}`` for the ``text`` builder (one
    #: segment per file) or ``{field = "data"}`` for ``json``.
    builder_options: Any = attrs.field(factory=dict, converter=_builder_options)
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
