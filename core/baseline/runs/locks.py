"""Advisory file locks (``flock``) that the kernel releases when their process ends.

A process killed with SIGKILL leaves the lock file behind but never the lock itself, so the
next run is never blocked by a stale lock. Lock files are kept after use: deleting one while
another process has it open would let two processes hold "the" lock on two different files.
Every holder writes its pid, host and start time into the lock file, so a process that finds
the lock taken names its holder.

Three uses:

* :func:`run_directory_lock`: one process trains in a run directory at a time; a second one
  fails at once, naming the holder.
* :func:`waiting_lock`: one process at a time builds a shared file (a vocabulary file, a
  token-cache entry); the others wait (at most ``run.lock_timeout_s``, see
  :func:`lock_wait_limit`), then find it built.
* :func:`sharing_lock`: any number of processes share a scratch area; one that finds no other
  user cleans it first.

Since a dead writer no longer holds its lock, whatever it left behind under a lock is stale
once that lock is held again: the holder removes it (:func:`remove_leftovers`), and never
touches what a live process is writing.

A filesystem without ``flock`` support (some network filesystems) is a :class:`LockError`
naming the lock file and the setting that moves it to a local disk.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path

from baseline.errors import LockError, RunDirectoryError
from baseline.runs.layout import RunDirectory

log = logging.getLogger("baseline")

#: How long :func:`waiting_lock` waits for another holder by default (``run.lock_timeout_s``).
DEFAULT_LOCK_TIMEOUT_S = 600.0
_POLL_S = 0.1
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}
_wait_limit: contextvars.ContextVar[float] = contextvars.ContextVar(
    "baseline_lock_wait_limit", default=DEFAULT_LOCK_TIMEOUT_S
)


def run_lock_path(run_dir: Path) -> Path:
    """The run's lock file, beside the run directory, so that ``--overwrite`` (which deletes
    the directory) does not delete the lock with it (:attr:`RunDirectory.lock`)."""
    return RunDirectory(run_dir).lock


@contextlib.contextmanager
def lock_wait_limit(seconds: float) -> Iterator[None]:
    """Within the block, :func:`waiting_lock` waits at most ``seconds`` (by default)."""
    token = _wait_limit.set(seconds)
    try:
        yield
    finally:
        _wait_limit.reset(token)


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)


def _flock(fd: int, path: Path, flags: int, fix: str) -> bool:
    """Lock ``fd``; ``False`` when another process holds it (with ``LOCK_NB``)."""
    try:
        fcntl.flock(fd, flags)
    except BlockingIOError:
        return False
    except OSError as error:
        if error.errno in _UNSUPPORTED:
            raise LockError(
                f"{path}: cannot lock this file, its filesystem does not support file locks "
                f"({error.strerror or errno.errorcode.get(error.errno or 0, 'error')}); {fix}"
            ) from None
        raise
    return True


def _write_holder(fd: int) -> None:
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now().isoformat(timespec="seconds"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + "\n").encode("utf-8"), 0)


@contextlib.contextmanager
def run_directory_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's lock, or raise a :class:`RunDirectoryError` naming its holder.

    Once held, the leftovers of an interrupted process in the run directory (its temporary
    files and DCP staging directories: :meth:`RunDirectory.leftovers`) are removed.
    """
    path = run_lock_path(run_dir)
    try:
        fd = _open(path)
    except OSError as error:
        raise RunDirectoryError(
            f"{path.parent}: cannot write the run directory's lock file ({error.strerror}); "
            "set run.artifacts_root to a writable directory"
        ) from None
    try:
        fix = "set run.artifacts_root to a directory on a local disk"
        if not _flock(fd, path, fcntl.LOCK_EX | fcntl.LOCK_NB, fix):
            raise RunDirectoryError(
                f"run dir {run_dir} is in use by {_describe_holder(fd)}; wait for it to finish, "
                "stop it, or choose another run.run_name"
            )
        _write_holder(fd)
        remove_leftovers(RunDirectory(run_dir).leftovers())
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def _describe_holder(fd: int) -> str:
    """``process <pid> on <host> (started <time>)`` from the lock file; the holder writes it
    just after locking, so a reader that comes in between retries for a moment."""
    for _ in range(20):
        try:
            holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
            host = f" on {holder['host']}" if holder.get("host") else ""
            return f"process {int(holder['pid'])}{host} (started {holder['started']})"
        except (ValueError, KeyError, TypeError, AttributeError):
            time.sleep(0.05)
    return "another process"


@contextlib.contextmanager
def waiting_lock(
    path: Path, *, setting: str | None = None, timeout_s: float | None = None
) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing), waiting for another holder at
    most ``timeout_s`` (default: :func:`lock_wait_limit`'s, ``run.lock_timeout_s``).

    ``setting`` names the setting that places ``path`` (for the error of a filesystem without
    locks). A wait is logged with the holder; running out of time is a :class:`LockError`.
    """
    limit = _wait_limit.get() if timeout_s is None else timeout_s
    place = f"set {setting} to a place on a local disk" if setting else "use a local disk"
    fd = _open(path)
    try:
        if not _flock(fd, path, fcntl.LOCK_EX | fcntl.LOCK_NB, place):
            log.info(
                "waiting for %s, held by %s (at most %gs, run.lock_timeout_s)",
                path,
                _describe_holder(fd),
                limit,
            )
            deadline = time.monotonic() + limit
            while not _flock(fd, path, fcntl.LOCK_EX | fcntl.LOCK_NB, place):
                if time.monotonic() >= deadline:
                    raise LockError(
                        f"{path}: still held by {_describe_holder(fd)} after waiting {limit:g}s; "
                        "wait for that process to finish or stop it, or raise run.lock_timeout_s"
                    )
                time.sleep(_POLL_S)
        _write_holder(fd)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def sharing_lock(path: Path, clean: Callable[[], None], *, setting: str) -> Iterator[None]:
    """Hold a shared lock on ``path`` with any number of other processes; when none holds
    it, run ``clean`` first (under the exclusive lock: no live process shares the area)."""
    fix = f"set {setting} to a place on a local disk"
    fd = _open(path)
    try:
        if _flock(fd, path, fcntl.LOCK_EX | fcntl.LOCK_NB, fix):
            clean()
        _flock(fd, path, fcntl.LOCK_SH, fix)  # waits while another process cleans
        yield
    finally:
        os.close(fd)


def remove_leftovers(paths: Iterable[Path]) -> list[Path]:
    """Delete ``paths`` (files or directories that an interrupted process left, stale since
    the lock guarding them is held by the caller) and say so in one line; what was removed."""
    removed: list[Path] = []
    for path in paths:
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue
        except OSError as error:
            log.warning("cannot remove %s, left by an interrupted process (%s)", path, error)
            continue
        removed.append(path)
    if removed:
        folders = sorted({str(path.parent) for path in removed})
        log.warning(
            "removed %d leftover%s of an interrupted process: %s (in %s)",
            len(removed),
            "" if len(removed) == 1 else "s",
            ", ".join(path.name for path in removed),
            ", ".join(folders),
        )
    return removed
