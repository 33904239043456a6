"""baseline plugin: dataset ``local_text``, a UTF-8 text file split into segments."""

from __future__ import annotations

import glob
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from baseline.config import DatasetConfig, path_field
from baseline.errors import ConfigError, FieldError
from baseline.plugins.hookspecs import Register, hookimpl

__all__ = ["LocalTextDataset", "LocalTextDatasetConfig"]

#: Bytes inspected for NUL characters to tell binary files from text.
_BINARY_SNIFF_BYTES = 8192


def _non_empty_delimiter(_instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value == "":
        raise FieldError(attribute.name, 'must not be empty; use "\\n\\n" to split on blank lines')


@attrs.frozen(kw_only=True)
class LocalTextDatasetConfig(DatasetConfig):
    """Local UTF-8 text, split into segments (documents) by ``segment_delimiter``.

    ``path`` is a file, a directory (every file under it, hidden ones skipped, in sorted
    order) or a glob pattern (``src/**/*.py``: the matching files in sorted order). Each file
    is split on its own, so no segment spans two files. Segments that are empty or
    whitespace-only are dropped.
    """

    #: A file, a directory or a glob pattern; relative to the experiment file's directory.
    path: str = path_field()
    segment_delimiter: str = attrs.field(default="\n\n", validator=_non_empty_delimiter)


class LocalTextDataset:
    """Reads the file once and yields its non-blank segments."""

    def __init__(self, config: LocalTextDatasetConfig) -> None:
        self.config = config
        self._segments: list[str] | None = None
        #: ``(name, segments)`` of each file read, in order: the source of each segment.
        self._file_counts: list[tuple[str, int]] = []
        self._digest = ""

    def _read(self) -> list[str]:
        files = self.files()
        digest = hashlib.sha256()
        segments: list[str] = []
        self._file_counts = []
        for name, path in files:
            raw, text = _read_text(path)
            if len(files) > 1:  # names and contents; one file keeps the digest of its bytes
                digest.update(f"{len(name.encode())}:{name}:{len(raw)}:".encode())
            digest.update(raw)
            before = len(segments)
            segments.extend(
                segment for segment in text.split(self.config.segment_delimiter) if segment.strip()
            )
            self._file_counts.append((name, len(segments) - before))
        self._digest = digest.hexdigest()
        if not segments:
            what = f"{self.config.path} ({len(files)} files)" if len(files) > 1 else files[0][1]
            raise ConfigError(
                f"{what}: is empty or whitespace only; add text", key_path="dataset.path"
            )
        return segments

    def files(self) -> list[tuple[str, Path]]:
        """``(name, path)`` of each file read, in order: the file itself; every file under a
        directory (recursively, hidden ones skipped), sorted by relative name; or the files a
        glob pattern matches (``**`` descends directories), sorted."""
        pattern = self.config.path
        path = Path(pattern)
        if any(char in pattern for char in "*?["):
            matched = sorted(Path(m) for m in glob.glob(pattern, recursive=True))
            files = [(str(m), m) for m in matched if m.is_file()]
            if not files:
                raise ConfigError(
                    f"{pattern}: no file matches the pattern; fix the path or the pattern",
                    key_path="dataset.path",
                )
            return files
        if path.is_dir():
            found = sorted(
                (str(child.relative_to(path)), child)
                for child in path.rglob("*")
                if child.is_file()
                and not any(part.startswith(".") for part in child.relative_to(path).parts)
            )
            if not found:
                raise ConfigError(
                    f"{path}: is a directory without files; add text files or fix the path",
                    key_path="dataset.path",
                )
            return found
        if not path.exists():
            raise ConfigError(f"{path}: file not found; fix the path", key_path="dataset.path")
        return [(path.name, path)]

    def source_files(self) -> list[Path]:
        """The files :meth:`segments` reads, in order (:meth:`files`, without reading them):
        while none of them changes, a run reuses the segment sizes and the fingerprint an
        earlier run measured, and does not read the corpus."""
        return [path for _, path in self.files()]

    @property
    def segment_delimiter(self) -> str:
        """The delimiter the end-of-segment token stands for (counted in bits per byte)."""
        return self.config.segment_delimiter

    def fingerprint(self) -> str:
        """Hash of the file's bytes (of several files' names and bytes): the token cache is
        reused only for identical content."""
        if self._segments is None:
            self._segments = self._read()
        return self._digest

    def segments(self) -> Iterator[str]:
        """Yield the file's non-blank segments in file order."""
        if self._segments is None:
            self._segments = self._read()
        yield from self._segments

    def segments_with_sources(self) -> Iterator[tuple[str, str]]:
        """Yield ``(segment, file)`` for each segment of :meth:`segments`: ``file`` is the
        name :meth:`files` gives the file it comes from."""
        if self._segments is None:
            self._segments = self._read()
        position = 0
        for name, count in self._file_counts:
            for segment in self._segments[position : position + count]:
                yield segment, name
            position += count


def _read_text(path: Path) -> tuple[bytes, str]:
    """The bytes and the text of a UTF-8 file; one-line errors naming it."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: file not found; fix the path", key_path="dataset.path"
        ) from None
    except OSError as error:
        raise ConfigError(
            f"{path}: cannot read ({error.strerror})", key_path="dataset.path"
        ) from None
    if b"\x00" in raw[:_BINARY_SNIFF_BYTES]:
        raise ConfigError(f"{path}: looks like a binary file, not text", key_path="dataset.path")
    try:
        return raw, raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: is not valid UTF-8 (byte {error.start}); convert it, e.g. "
            "iconv -f latin1 -t utf-8",
            key_path="dataset.path",
        ) from None


@hookimpl
def baseline_register_datasets(register: Register) -> None:
    """Register the ``local_text`` dataset."""
    register("local_text", LocalTextDatasetConfig, LocalTextDataset)
