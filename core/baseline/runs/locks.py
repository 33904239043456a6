"""Advisory file locks (``flock``) that the kernel releases when their process ends.

A process killed with SIGKILL leaves the lock file behind but never the lock itself, so the
next run is never blocked by a stale lock. Lock files are kept after use: deleting one while
another process has it open would let two processes hold "the" lock on two different files.

Two uses:

* :func:`run_directory_lock`: one process trains in a run directory at a time; a second one
  fails at once, naming the holder (its pid and start time are written into the lock file).
* :func:`waiting_lock`: one process at a time builds a shared file (a vocabulary file, a
  token-cache entry); the others wait, then find it built.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from baseline.errors import RunDirectoryError
from baseline.runs.layout import RunDirectory


def run_lock_path(run_dir: Path) -> Path:
    """The run's lock file, beside the run directory, so that ``--overwrite`` (which deletes
    the directory) does not delete the lock with it (:attr:`RunDirectory.lock`)."""
    return RunDirectory(run_dir).lock


@contextlib.contextmanager
def run_directory_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's lock, or raise a :class:`RunDirectoryError` naming its holder."""
    path = run_lock_path(run_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        raise RunDirectoryError(
            f"{path.parent}: cannot write the run directory's lock file ({error.strerror}); "
            "set run.artifacts_root to a writable directory"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirectoryError(
                f"run dir {run_dir} is in use by {_describe_holder(fd)}; wait for it to finish, "
                "stop it, or choose another run.run_name"
            ) from None
        holder = {"pid": os.getpid(), "started": datetime.now().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode("utf-8"), 0)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def _describe_holder(fd: int) -> str:
    """``process <pid> (started <time>)`` from the lock file; the holder writes it just after
    locking, so a reader that comes in between retries for a moment."""
    for _ in range(20):
        try:
            holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
            return f"process {int(holder['pid'])} (started {holder['started']})"
        except (ValueError, KeyError, TypeError):
            time.sleep(0.05)
    return "another process"


@contextlib.contextmanager
def waiting_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing), waiting for other holders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
