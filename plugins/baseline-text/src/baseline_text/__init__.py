"""baseline plugin: dataset ``local_text``, a UTF-8 text file split into segments."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from baseline.config import DatasetConfig, path_field
from baseline.errors import ConfigError, FieldError
from baseline.hookspecs import Register, hookimpl

__all__ = ["LocalTextDataset", "LocalTextDatasetConfig"]

#: Bytes inspected for NUL characters to tell binary files from text.
_BINARY_SNIFF_BYTES = 8192


def _non_empty_delimiter(_instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value == "":
        raise FieldError(attribute.name, 'must not be empty; use "\\n\\n" to split on blank lines')


@attrs.frozen(kw_only=True)
class LocalTextDatasetConfig(DatasetConfig):
    """A local UTF-8 text file, split into segments (documents) by ``segment_delimiter``.

    Segments that are empty or whitespace-only are dropped.
    """

    path: str = path_field()
    segment_delimiter: str = attrs.field(default="\n\n", validator=_non_empty_delimiter)


class LocalTextDataset:
    """Reads the file once and yields its non-blank segments."""

    def __init__(self, config: LocalTextDatasetConfig) -> None:
        self.config = config
        self._segments: list[str] | None = None
        self._digest = ""

    def _read(self) -> list[str]:
        path = Path(self.config.path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(
                f"{path}: file not found; fix the path", key_path="dataset.path"
            ) from None
        except IsADirectoryError:
            raise ConfigError(
                f"{path}: is a directory; point it at a text file", key_path="dataset.path"
            ) from None
        except OSError as error:
            raise ConfigError(
                f"{path}: cannot read ({error.strerror})", key_path="dataset.path"
            ) from None
        if b"\x00" in raw[:_BINARY_SNIFF_BYTES]:
            raise ConfigError(
                f"{path}: looks like a binary file, not text", key_path="dataset.path"
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ConfigError(
                f"{path}: is not valid UTF-8 (byte {error.start}); convert it, e.g. "
                "iconv -f latin1 -t utf-8",
                key_path="dataset.path",
            ) from None
        self._digest = hashlib.sha256(raw).hexdigest()
        segments = [
            segment for segment in text.split(self.config.segment_delimiter) if segment.strip()
        ]
        if not segments:
            raise ConfigError(
                f"{path}: is empty or whitespace only; add text", key_path="dataset.path"
            )
        return segments

    @property
    def segment_delimiter(self) -> str:
        """The delimiter the end-of-segment token stands for (counted in bits per byte)."""
        return self.config.segment_delimiter

    def fingerprint(self) -> str:
        """Hash of the file's bytes: the token cache is reused only for identical content."""
        if self._segments is None:
            self._segments = self._read()
        return self._digest

    def segments(self) -> Iterator[str]:
        """Yield the file's non-blank segments in file order."""
        if self._segments is None:
            self._segments = self._read()
        yield from self._segments


@hookimpl
def baseline_register_datasets(register: Register) -> None:
    """Register the ``local_text`` dataset."""
    register("local_text", LocalTextDatasetConfig, LocalTextDataset)
