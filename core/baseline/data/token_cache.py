"""On-disk cache of token streams, keyed by the dataset, the tokenizer and their configs.

A second run of the same experiment memory-maps the cached stream instead of tokenizing
again. An entry is built in a temporary directory and renamed into place when complete, so
an interrupted build never leaves a half-written entry under its final name; the next build
of that entry (holding its lock, so its former builder is dead) removes what it left.

Integrity: ``meta.json`` records each file's size and SHA-256, and ``verified.json`` the
stamp (:mod:`baseline.data.file_stamps`: size, inode, mtime, ctime) of each file when its
content was last known to match: written by the builder, which hashed the tokens as it wrote
them. A cache hit reads only those two small files and stats the others: sizes as recorded
and stamps unchanged mean the files have not been written since, and nothing is hashed. A
file whose stamp changed (truncated, altered, replaced, even touched) has its SHA-256
checked in full once; if it matches, the stamp is renewed, else the entry is rebuilt.
Deleting ``verified.json`` asks for that full check on the next start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from baseline.data.file_stamps import Stamp, current_stamps, settled_stamps
from baseline.data.tokens import (
    META_FILENAME,
    STREAM_FILES,
    TokenStream,
    build_token_stream,
    open_token_stream,
    stream_damage,
)
from baseline.plugins.protocols import TokenizerAdapter
from baseline.runs.artifacts import atomic_write_text
from baseline.runs.locks import remove_leftovers, sharing_lock, waiting_lock

#: 2: meta.json records each file's size and SHA-256 (entries of format 1 are not reused).
CACHE_FORMAT = 2
log = logging.getLogger("baseline")
#: Scratch directories of :func:`segment_scratch` in the cache root.
SCRATCH_PREFIX = ".segment-sizes-"
#: The stamps of an entry's files when their content was last known to be intact.
STAMP_FILENAME = "verified.json"
_STAMPED = (*STREAM_FILES, META_FILENAME)


def adapter_fingerprint(adapter: object) -> str | None:
    """The adapter's optional ``fingerprint()``: a string that changes when its output would."""
    method = getattr(adapter, "fingerprint", None)
    return method() if callable(method) else None


def cache_key(parts: Mapping[str, Any]) -> str:
    """A stable hash of JSON-serialisable ``parts``."""
    text = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def load_or_build(
    cache_root: Path,
    key: str,
    segments: Callable[[], Iterable[str]],
    tokenizer: TokenizerAdapter,
    *,
    label: str = "tokenizer",
) -> tuple[TokenStream, bool]:
    """The cached stream for ``key`` (and ``True``), or a newly built and cached one (the
    tokenizer's errors name ``label``)."""
    entry = cache_root / key
    if entry.is_dir() and entry_damage(entry) is None:
        return open_token_stream(entry), True
    # Runs that share a new entry build it once: the others wait, then map what it built.
    lock = cache_root / f".{key}.lock"
    with waiting_lock(lock, setting="run.token_cache_dir"):
        # Staging (and discarded) directories of this entry whose builder died: its lock is ours.
        remove_leftovers(path for path in sorted(cache_root.glob(f".{key}.*")) if path != lock)
        if entry.is_dir():
            damage = entry_damage(entry)
            if damage is None:
                return open_token_stream(entry), True
            log.warning("token cache entry %s is damaged (%s); rebuilding it", entry, damage)
            _discard(entry)
        return _build_entry(cache_root, key, segments, tokenizer, label), False


def entry_damage(entry: Path) -> str | None:
    """What is wrong with a cache entry, or ``None``; its files are hashed only when their
    stamps differ from ``verified.json`` (see the module doc)."""
    damage = stream_damage(entry, read_files=False)  # meta.json readable, sizes as recorded
    if damage is not None:
        return damage
    paths = {name: entry / name for name in _STAMPED}
    recorded = read_stamps(entry)
    if recorded is not None and recorded == current_stamps(paths):
        return None
    stamps = settled_stamps(paths)
    damage = stream_damage(entry)
    if damage is None and stamps is not None and current_stamps(paths) == stamps:
        write_stamps(entry, stamps)
    return damage


def read_stamps(entry: Path) -> dict[str, Stamp] | None:
    """The stamps ``verified.json`` records, or ``None`` when it is missing or unreadable."""
    try:
        stamps = json.loads((entry / STAMP_FILENAME).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return stamps if isinstance(stamps, dict) else None


def write_stamps(entry: Path, stamps: Mapping[str, Stamp]) -> None:
    """Record ``stamps`` in ``verified.json`` (atomically; a read-only cache is left as is)."""
    try:
        atomic_write_text(entry / STAMP_FILENAME, json.dumps({"files": dict(stamps)}))
    except OSError as error:
        log.debug("token cache: cannot record %s in %s (%s)", STAMP_FILENAME, entry, error)


@contextlib.contextmanager
def segment_scratch(cache_root: Path) -> Iterator[Path]:
    """A scratch directory ``.segment-sizes-<random>`` in the cache root, deleted afterwards.

    Its users share ``.segment-sizes.lock``; one that finds no other user first removes the
    scratch directories of interrupted processes (a live one's are never touched)."""
    cache_root.mkdir(parents=True, exist_ok=True)

    def clean() -> None:
        remove_leftovers(sorted(p for p in cache_root.glob(f"{SCRATCH_PREFIX}*") if p.is_dir()))

    lock = cache_root / f"{SCRATCH_PREFIX.rstrip('-')}.lock"
    with (
        sharing_lock(lock, clean, setting="run.token_cache_dir"),
        tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX, dir=cache_root) as scratch,
    ):
        yield Path(scratch)


def _discard(entry: Path) -> None:
    """Move a damaged entry out of the way (one rename), then delete it."""
    trash = Path(tempfile.mkdtemp(prefix=f".{entry.name}.damaged.", dir=entry.parent))
    entry.rename(trash / entry.name)
    shutil.rmtree(trash, ignore_errors=True)


def _build_entry(
    cache_root: Path,
    key: str,
    segments: Callable[[], Iterable[str]],
    tokenizer: TokenizerAdapter,
    label: str,
) -> TokenStream:
    entry = cache_root / key
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=cache_root))
    current_umask = os.umask(0)
    os.umask(current_umask)
    staging.chmod(0o777 & ~current_umask)  # mkdtemp creates 0700
    try:
        build_token_stream(segments(), tokenizer, staging, label=label)
        # The builder hashed what it wrote: its stamps spare the next start a full check.
        stamps = settled_stamps({name: staging / name for name in _STAMPED})
        if stamps is not None:
            write_stamps(staging, stamps)
        try:
            staging.rename(entry)
        except OSError:  # another process finished the same entry first
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return open_token_stream(entry)
