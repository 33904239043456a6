"""Each segment's UTF-8 size, known before anything is tokenized: what the split sees.

The sizes are streamed: with a directory they are appended to a file chunk by chunk and
returned as a read-only memory map, so memory stays bounded by one chunk of segments.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from baseline.errors import DataError

SIZES_FILENAME = "segment_bytes.npy"
_RAW_FILENAME = "segment_bytes.raw"
_META_FILENAME = "meta.json"
_CHUNK = 4096


def chunks(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    """Lists of up to ``size`` consecutive texts."""
    chunk: list[str] = []
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


def measure_segments(segments: Iterable[str], directory: Path | None = None) -> np.ndarray:
    """The UTF-8 size of every segment, in order (a memory map when ``directory`` is given)."""
    if directory is None:
        parts = [utf8_sizes(chunk) for chunk in chunks(segments, _CHUNK)]
        if not parts:
            raise DataError("the dataset yielded no segments")
        return np.concatenate(parts)
    raw_path = directory / _RAW_FILENAME
    count = 0
    with raw_path.open("wb") as out:
        for chunk in chunks(segments, _CHUNK):
            out.write(utf8_sizes(chunk).tobytes())
            count += len(chunk)
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
    (directory / _META_FILENAME).write_text(json.dumps({"segments": count}))
    return _open(directory)


def _open(directory: Path) -> np.ndarray:
    meta = json.loads((directory / _META_FILENAME).read_text())
    sizes: np.ndarray = np.load(directory / SIZES_FILENAME, mmap_mode="r")
    if len(sizes) != meta["segments"]:
        raise DataError(f"{directory}: segment sizes are incomplete; delete the directory")
    return sizes
