"""File stamps: tell, without reading a file, that it has not changed since it was checked.

A stamp is a file's size, inode, modification time and change time (``st_ctime_ns``). Any
write, truncation, ``chmod``, ``touch`` or replacement moves the change time (or the inode),
and no user call sets it back, so a file whose stamp still matches has not been written
since the stamp was taken, with one exception: a write within the filesystem's timestamp
granularity after the stamp leaves the times as they were (git's "racy" files). A stamp is
therefore only taken once that tick has passed: :func:`settled_stamps` waits until the
files' newest change time is :data:`RACY_NS` old (``COARSE_RACY_NS`` on filesystems with
whole-second timestamps) before it stats them, so any later write gets a later change time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

#: Fine-grained filesystems (ext4, xfs, btrfs, tmpfs, APFS) stamp with the kernel's coarse
#: clock: ticks of 1 to 10 ms.
RACY_NS = 20_000_000
#: Filesystems that keep whole seconds (FAT keeps 2 s).
COARSE_RACY_NS = 2_100_000_000

Stamp = dict[str, int]


def file_stamp(path: Path) -> Stamp:
    """Size, inode, ``mtime_ns`` and ``ctime_ns`` of ``path`` (``OSError`` when absent)."""
    status = os.stat(path)
    return {
        "bytes": status.st_size,
        "inode": status.st_ino,
        "mtime_ns": status.st_mtime_ns,
        "ctime_ns": status.st_ctime_ns,
    }


def current_stamps(paths: Mapping[str, Path]) -> dict[str, Stamp] | None:
    """The stamp of each named file, or ``None`` when one of them cannot be stat'ed."""
    try:
        return {name: file_stamp(path) for name, path in paths.items()}
    except OSError:
        return None


def settled_stamps(paths: Mapping[str, Path]) -> dict[str, Stamp] | None:
    """Stamps of ``paths`` that a later write cannot leave unchanged.

    Waits (at most the granularity margin, 20 ms on usual filesystems) until the newest
    change time among the files is older than the margin, then stats them again. ``None``
    when a file is missing, changed while waiting, or has a change time further in the
    future than the margin (a clock that disagrees with the file server's): such files are
    not stamped and are checked in full each time.
    """
    stamps = current_stamps(paths)
    if not stamps:
        return None
    changes = [stamp["ctime_ns"] for stamp in stamps.values()]
    coarse = all(change % 1_000_000_000 == 0 for change in changes)
    margin = COARSE_RACY_NS if coarse else RACY_NS
    wait = max(changes) + margin - time.time_ns()
    if wait > margin:
        return None
    if wait > 0:
        time.sleep(wait / 1e9)
        if current_stamps(paths) != stamps:
            return None
    return stamps
