"""A dataset's files, listed and checked without reading them: what ``baseline validate``
says about the data (``data: 1 file, 1,115,394 bytes``), and a missing file as a one-line
error before any run starts.

A dataset adapter whose segments come from local files may list them (optional
``source_files() -> Sequence[str | Path]``: every file ``segments()`` reads; ``local_text``
has it). An adapter without the method (a hub dataset, a generator) is reported as not
checked: its data is read when a run starts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import attrs

from baseline.errors import ConfigError, PluginError
from baseline.plugins.calls import plugin_call

__all__ = ["DataFiles", "check_data_files", "dataset_key_under", "source_files"]


def source_files(dataset: object) -> list[str] | None:
    """The adapter's optional ``source_files()`` as strings; ``None`` when it has none."""
    method = getattr(dataset, "source_files", None)
    if not callable(method):
        return None
    files = method()
    if (
        isinstance(files, str | bytes)
        or not isinstance(files, Sequence)
        or not all(isinstance(f, str | Path) for f in files)
    ):
        raise PluginError(
            "dataset source_files() must return a sequence of paths (str or Path), got "
            f"{type(files).__name__}"
        )
    return [os.fspath(path) for path in files]


def dataset_key_under(key_path: str, table: str) -> str:
    """A dataset adapter's key path (``dataset.path``) under the table its settings come
    from (a mixture source's ``dataset.sources.prose``: ``dataset.sources.prose.path``)."""
    if key_path == "dataset" or key_path.startswith("dataset."):
        return table + key_path[len("dataset") :]
    return key_path or table


@attrs.frozen
class DataFiles:
    """What a dataset's files add up to (``files`` is ``None``: the adapter lists none)."""

    files: int | None
    size_bytes: int

    def describe(self) -> str:
        """``1 file, 1,115,394 bytes``, or why nothing was checked."""
        if self.files is None:
            return "not checked (the dataset lists no local files; it is read when a run starts)"
        noun = "file" if self.files == 1 else "files"
        return f"{self.files:,} {noun}, {self.size_bytes:,} bytes"


def check_data_files(dataset: object, label: str, key_path: str = "dataset") -> DataFiles:
    """List the files of ``dataset`` (an adapter built from the table at ``key_path``) and
    check each is a readable file; a :class:`ConfigError` naming the file, the adapter
    (``label``) and ``key_path`` otherwise."""
    try:
        with plugin_call(label):
            files = source_files(dataset)
    except ConfigError as error:  # the adapter's key path, under the table it comes from
        where = dataset_key_under(error.key_path, key_path)
        raise ConfigError(error.message, key_path=where, source=error.source) from None
    if files is None:
        return DataFiles(None, 0)
    total = 0
    for name in files:
        path = Path(name)
        if not path.is_file():
            what = "is not a file" if path.exists() else "does not exist"
            raise ConfigError(
                f"{label}: {path} {what}; fix the path or create the file", key_path=key_path
            )
        if not os.access(path, os.R_OK):
            raise ConfigError(
                f"{label}: {path} cannot be read (permission denied); fix its permissions",
                key_path=key_path,
            )
        total += path.stat().st_size
    return DataFiles(len(files), total)
