"""What the split sees, recorded in the one pass that measures the corpus.

Each segment's UTF-8 size (all a split of protocol 1 sees) and, for a split of protocol 2
(:class:`~baseline.plugins.protocols.Segments`), its text and its source. Everything is
streamed: appended to files chunk by chunk and read back lazily (sizes and source ids as
read-only memory maps, text with positioned reads), so memory stays bounded by one chunk of
segments whatever the corpus' size.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from baseline.errors import DataError, PluginError
from baseline.plugins.protocols import SEGMENTS_SPLIT_PROTOCOL

SIZES_FILENAME = "segment_bytes.npy"
TEXT_FILENAME = "segment_text.bin"
SOURCE_IDS_FILENAME = "segment_source_ids.bin"
SOURCES_FILENAME = "sources.bin"
SOURCE_OFFSETS_FILENAME = "source_offsets.bin"
_RAW_FILENAME = "segment_bytes.raw"
_META_FILENAME = "meta.json"
_CHUNK = 4096


def chunks(texts: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Lists of up to ``size`` consecutive items."""
    chunk: list[Any] = []
    for text in texts:
        chunk.append(text)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def utf8_sizes(texts: list[str]) -> np.ndarray:
    """UTF-8 byte count of each text."""
    return np.fromiter((len(t.encode("utf-8")) for t in texts), dtype=np.int64, count=len(texts))


def split_protocol(split: object) -> int:
    """The protocol a split adapter declares (``split_protocol``; 1 when it has none)."""
    version = getattr(split, "split_protocol", 1)
    if isinstance(version, bool) or version not in (1, SEGMENTS_SPLIT_PROTOCOL):
        raise PluginError(
            f"split {type(split).__name__}: split_protocol must be 1 (segment sizes) or "
            f"{SEGMENTS_SPLIT_PROTOCOL} (Segments), got {version!r}"
        )
    return int(version)


def measure_segments(segments: Iterable[str], directory: Path | None = None) -> np.ndarray:
    """The UTF-8 size of every segment, in order (a memory map when ``directory`` is given)."""
    if directory is None:
        parts = [utf8_sizes(chunk) for chunk in chunks(segments, _CHUNK)]
        if not parts:
            raise DataError("the dataset yielded no segments")
        return np.concatenate(parts)
    return record_segments(((text, "") for text in segments), directory, keep_text=False).sizes


def record_segments(
    items: Iterable[tuple[str, str]], directory: Path, *, keep_text: bool
) -> SegmentStore:
    """Record ``(text, source)`` of every segment in ``directory``: the sizes always, the text
    and sources with ``keep_text``. A source equal to the previous segment's is stored once."""
    raw_path = directory / _RAW_FILENAME
    count = 0
    previous: str | None = None
    sources = 0
    source_bytes = 0
    with (
        raw_path.open("wb") as out,
        _maybe_open(directory / TEXT_FILENAME, keep_text) as text_out,
        _maybe_open(directory / SOURCE_IDS_FILENAME, keep_text) as ids_out,
        _maybe_open(directory / SOURCES_FILENAME, keep_text) as sources_out,
        _maybe_open(directory / SOURCE_OFFSETS_FILENAME, keep_text) as offsets_out,
    ):
        for chunk in chunks(items, _CHUNK):
            encoded = [text.encode("utf-8") for text, _ in chunk]
            out.write(np.fromiter(map(len, encoded), np.int64, len(encoded)).tobytes())
            count += len(chunk)
            if text_out is None or ids_out is None or sources_out is None or offsets_out is None:
                continue
            text_out.write(b"".join(encoded))
            ids = np.empty(len(chunk), dtype=np.int64)
            for position, (_, source) in enumerate(chunk):
                if source != previous:
                    data = str(source).encode("utf-8")
                    offsets_out.write(source_bytes.to_bytes(8, "little", signed=True))
                    sources_out.write(data)
                    source_bytes += len(data)
                    sources += 1
                    previous = source
                ids[position] = sources - 1
            ids_out.write(ids.tobytes())
        if offsets_out is not None:
            offsets_out.write(source_bytes.to_bytes(8, "little", signed=True))
    if not count:
        raise DataError("the dataset yielded no segments")
    raw = np.memmap(raw_path, dtype=np.int64, mode="r", shape=(count,))
    sizes = np.lib.format.open_memmap(
        directory / SIZES_FILENAME, mode="w+", dtype=np.int64, shape=(count,)
    )
    for start in range(0, count, 1 << 20):
        sizes[start : start + (1 << 20)] = raw[start : start + (1 << 20)]
    sizes.flush()
    del sizes, raw
    raw_path.unlink()
    meta = {"segments": count, "text": keep_text, "sources": sources}
    (directory / _META_FILENAME).write_text(json.dumps(meta))
    return SegmentStore(directory)


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _maybe_open(path: Path, wanted: bool) -> Any:
    return path.open("wb") if wanted else _Null()


class SegmentStore:
    """The :class:`~baseline.plugins.protocols.Segments` recorded by :func:`record_segments`."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        meta = json.loads((directory / _META_FILENAME).read_text())
        sizes: np.ndarray = np.load(directory / SIZES_FILENAME, mmap_mode="r")
        if len(sizes) != meta["segments"]:
            raise DataError(f"{directory}: segment sizes are incomplete; delete the directory")
        self._sizes = sizes
        self._has_text = bool(meta.get("text"))
        self._ends: np.ndarray | None = None
        self._fd: int | None = None
        self._sources_fd: int | None = None
        self._source_ids: np.ndarray | None = None
        self._source_offsets: np.ndarray | None = None
        if self._has_text and len(sizes):
            shape = (len(sizes),)
            self._source_ids = np.memmap(
                directory / SOURCE_IDS_FILENAME, dtype=np.int64, mode="r", shape=shape
            )
            self._source_offsets = np.memmap(
                directory / SOURCE_OFFSETS_FILENAME,
                dtype=np.int64,
                mode="r",
                shape=(int(meta["sources"]) + 1,),
            )

    @property
    def sizes(self) -> np.ndarray:
        """``sizes[i]``: the UTF-8 size of segment ``i`` (a read-only memory map)."""
        return self._sizes

    def __len__(self) -> int:
        return len(self._sizes)

    def _check(self, index: int) -> int:
        if not self._has_text:
            raise DataError("these segments were measured without their text")
        if not -len(self) <= index < len(self):
            raise IndexError(f"segment {index} out of range (0 .. {len(self) - 1})")
        return index % len(self)

    def _start(self, index: int) -> int:
        if self._ends is None:  # 8 bytes a segment, built on the first random access
            self._ends = np.cumsum(self._sizes, dtype=np.int64)
        return int(self._ends[index]) - int(self._sizes[index])

    def text(self, index: int) -> str:
        """Segment ``index``'s text, read from disk."""
        index = self._check(index)
        if self._fd is None:
            self._fd = os.open(self._directory / TEXT_FILENAME, os.O_RDONLY)
        return _pread(self._fd, int(self._sizes[index]), self._start(index)).decode("utf-8")

    def source(self, index: int) -> str:
        """Where segment ``index`` comes from (``""`` when its dataset does not say)."""
        index = self._check(index)
        return self._source_of(int(self._ids()[index]))

    def _ids(self) -> np.ndarray:
        assert self._source_ids is not None
        return self._source_ids

    def _source_of(self, source_id: int) -> str:
        assert self._source_offsets is not None
        if self._sources_fd is None:
            self._sources_fd = os.open(self._directory / SOURCES_FILENAME, os.O_RDONLY)
        start, end = int(self._source_offsets[source_id]), int(self._source_offsets[source_id + 1])
        return _pread(self._sources_fd, end - start, start).decode("utf-8")

    def __iter__(self) -> Iterator[tuple[int, str, str]]:
        """``(index, text, source)`` of every segment, read sequentially a chunk at a time."""
        self._check(0)
        ids = self._ids()
        last_id, last_source = -1, ""
        with (self._directory / TEXT_FILENAME).open("rb") as text_file:
            for start in range(0, len(self), _CHUNK):
                sizes = np.asarray(self._sizes[start : start + _CHUNK])
                data = text_file.read(int(sizes.sum()))
                position = 0
                for offset, size in enumerate(sizes.tolist()):
                    source_id = int(ids[start + offset])
                    if source_id != last_id:
                        last_id, last_source = source_id, self._source_of(source_id)
                    text = data[position : position + size].decode("utf-8")
                    position += size
                    yield start + offset, text, last_source

    def close(self) -> None:
        """Close the files read so far (the object reads no more text afterwards)."""
        for fd in (self._fd, self._sources_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._sources_fd = None
        self._has_text = False


def _pread(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    while len(data) < size:  # a short read is allowed; a regular file rarely gives one
        more = os.pread(fd, size - len(data), offset + len(data))
        if not more:
            raise DataError("a segment store file is truncated")
        data += more
    return data


class SegmentList:
    """:class:`~baseline.plugins.protocols.Segments` of texts held in memory (for tests)."""

    def __init__(self, texts: Sequence[str], sources: Sequence[str] | None = None) -> None:
        self._texts = list(texts)
        self._sources = list(sources) if sources is not None else [""] * len(self._texts)
        if len(self._sources) != len(self._texts):
            raise ValueError("one source per text")
        sizes = utf8_sizes(self._texts)
        sizes.setflags(write=False)
        self._sizes = sizes

    @classmethod
    def of(cls, items: Iterable[str | tuple[str, str]]) -> SegmentList:
        """From texts, or ``(text, source)`` pairs."""
        pairs = [(item, "") if isinstance(item, str) else item for item in items]
        return cls([text for text, _ in pairs], [source for _, source in pairs])

    @property
    def sizes(self) -> np.ndarray:
        """The UTF-8 size of each text (read-only)."""
        return self._sizes

    def __len__(self) -> int:
        return len(self._texts)

    def text(self, index: int) -> str:
        """Text ``index``."""
        return self._texts[index]

    def source(self, index: int) -> str:
        """Source ``index``."""
        return self._sources[index]

    def __iter__(self) -> Iterator[tuple[int, str, str]]:
        """``(index, text, source)`` of every text."""
        return iter(zip(range(len(self)), self._texts, self._sources, strict=True))
