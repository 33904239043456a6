"""Segment sizes measured on an earlier start, reused while the dataset's files are unchanged.

Measuring is a pass over the whole corpus, and a dataset's fingerprint is often a hash of it.
A dataset adapter whose segments come from local files may say which (optional
``source_files() -> Sequence[str | Path]``: every file ``segments()`` reads; ``local_text``
has it). After a preparation that succeeded, the core records under
``<token cache>/.measured/<key>/`` (the key: the adapter and all its settings) the segment
sizes, the dataset's fingerprint and the stamp of every file
(:mod:`baseline.data.file_stamps`: size, inode, mtime, ctime), taken before the measuring
pass and still the same after the preparation. A later start whose dataset lists the same
files with the same stamps takes the sizes and the fingerprint from the record: the corpus
is neither read nor hashed. Any change to a file, a new or a removed file, or another
setting, and the pass runs again (and the record is renewed).

Only splits of protocol 1 (segment sizes) use records: a split of protocol 2 sees the text,
which is read in the pass.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from baseline.data.file_stamps import Stamp, current_stamps, settled_stamps
from baseline.data.presence import source_files
from baseline.data.token_cache import cache_key

log = logging.getLogger("baseline")

#: The directory of records in the token cache root.
RECORDS_DIRNAME = ".measured"
RECORD_FILENAME = "record.json"
SIZES_FILENAME = "segment_bytes.npy"
_FORMAT = 1
_BLOCK = 1 << 20


@attrs.frozen
class DatasetFiles:
    """The files a dataset reads and their stamps, taken before a measuring pass."""

    key: str
    files: list[tuple[str, Stamp]]


@attrs.frozen
class MeasuredRecord:
    """What an earlier pass measured: each segment's UTF-8 size, and the fingerprint."""

    sizes: np.ndarray
    fingerprint: str


def record_key(dataset: object, dataset_config: Any) -> str:
    """The adapter's class and every setting of its config (paths included)."""
    kind = type(dataset)
    settings = {
        field.name: getattr(dataset_config, field.name)
        for field in attrs.fields(type(dataset_config))
    }
    return cache_key(
        {
            "measured": _FORMAT,
            "adapter": f"{kind.__module__}.{kind.__qualname__}",
            "config": type(dataset_config).__qualname__,
            **settings,
        }
    )


def dataset_files(dataset: object, dataset_config: Any) -> DatasetFiles | None:
    """The dataset's files with settled stamps (waits at most a few milliseconds when a file
    just changed); ``None`` when the adapter does not list its files or one of them cannot
    be stamped."""
    files = source_files(dataset)
    if not files:
        return None
    stamps = settled_stamps({str(index): Path(path) for index, path in enumerate(files)})
    if stamps is None:
        return None
    return DatasetFiles(
        record_key(dataset, dataset_config),
        [(path, stamps[str(index)]) for index, path in enumerate(files)],
    )


def load_record(cache_root: Path, files: DatasetFiles) -> MeasuredRecord | None:
    """The record of ``files.key`` when it lists the same files with the same stamps."""
    directory = cache_root / RECORDS_DIRNAME / files.key
    try:
        record = json.loads((directory / RECORD_FILENAME).read_text(encoding="utf-8"))
        recorded = [(str(path), dict(stamp)) for path, stamp in record["files"]]
        if record.get("format") != _FORMAT or recorded != files.files:
            return None
        if record["sizes"] != current_stamps({SIZES_FILENAME: directory / SIZES_FILENAME}):
            return None
        sizes = np.load(directory / SIZES_FILENAME, mmap_mode="r")
        fingerprint = record["fingerprint"]
        if len(sizes) != record["segments"] or not isinstance(fingerprint, str):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return MeasuredRecord(sizes, fingerprint)


def forget_record(cache_root: Path, scratch: Path, key: str) -> None:
    """Remove the record of ``key``: moved into ``scratch`` (deleted with it)."""
    with contextlib.suppress(OSError):
        trash = Path(tempfile.mkdtemp(prefix="stale-", dir=scratch))
        (cache_root / RECORDS_DIRNAME / key).rename(trash / key)


def save_record(
    cache_root: Path, scratch: Path, files: DatasetFiles, sizes: np.ndarray, fingerprint: str
) -> bool:
    """Record ``sizes`` and ``fingerprint`` for ``files`` when every file still has the stamp
    it had before the pass; whether a record was written.

    Built in ``scratch`` (a directory of :func:`~baseline.data.token_cache.segment_scratch`
    on the same filesystem, removed with whatever a crash leaves in it) and renamed into
    place; a record it replaces is moved into ``scratch`` first.
    """
    now = current_stamps({str(i): Path(path) for i, (path, _) in enumerate(files.files)})
    if now != {str(i): stamp for i, (_, stamp) in enumerate(files.files)}:
        return False  # a file changed during the preparation: measure again next time
    staging = Path(tempfile.mkdtemp(prefix="measured-", dir=scratch))
    _copy_sizes(sizes, staging / SIZES_FILENAME)
    sizes_stamp = settled_stamps({SIZES_FILENAME: staging / SIZES_FILENAME})
    if sizes_stamp is None:
        return False
    record = {
        "format": _FORMAT,
        "fingerprint": fingerprint,
        "segments": len(sizes),
        "files": [list(f) for f in files.files],
        "sizes": sizes_stamp,
    }
    (staging / RECORD_FILENAME).write_text(json.dumps(record), encoding="utf-8")
    target = cache_root / RECORDS_DIRNAME / files.key
    try:
        target.parent.mkdir(exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            target.rename(Path(tempfile.mkdtemp(prefix="replaced-", dir=scratch)) / files.key)
        staging.rename(target)
    except OSError as error:  # another run recorded it first, or a read-only cache
        log.debug("segment sizes not recorded in %s (%s)", target, error)
        return False
    return True


def _copy_sizes(sizes: np.ndarray, path: Path) -> None:
    """Write ``sizes`` (a memory map, maybe) to an ``.npy`` file block by block."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.int64, shape=(len(sizes),))
    for start in range(0, len(sizes), _BLOCK):
        out[start : start + _BLOCK] = sizes[start : start + _BLOCK]
    out.flush()
    del out
