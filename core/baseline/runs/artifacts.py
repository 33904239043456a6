"""Crash-safe artifact writing and the run directory.

Every file is written to a temporary file in the destination directory, flushed, fsynced and
renamed into place, so a crash never leaves a half-written artifact under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from baseline.errors import RunDirectoryError
from baseline.runs import layout

# The file names are the layout's (:class:`baseline.runs.layout.RunDirectory`); these aliases
# keep older imports working.
RUN_CONFIG_FILENAME = layout.RUN_CONFIG
INFERENCE_CONFIG_FILENAME = layout.INFERENCE_CONFIG
METRICS_FILENAME = layout.METRICS


@contextlib.contextmanager
def atomic_file(
    path: Path, mode: str = "wb", before_replace: Callable[[], None] | None = None
) -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` on success.

    ``before_replace`` runs once the data is flushed and fsynced, just before the rename.
    """
    path = Path(path)
    # The temporary name is chosen before the file exists, so that a KeyboardInterrupt (a
    # second Ctrl-C) at any moment after its creation finds the name here and removes it.
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}{layout.TEMPORARY_FILE_SUFFIX}"
    try:
        # O_EXCL: never an existing file; 0o666 less the umask, the usual file mode
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
        _fsync_directory(path.parent)
    except BaseException as error:
        if not (isinstance(error, FileExistsError) and error.filename == os.fspath(tmp)):
            tmp.unlink(missing_ok=True)  # ours (an existing file of that name is left alone)
        raise


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_file(path, "w") as handle:
        handle.write(text)


def atomic_write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def atomic_write_with(
    path: Path,
    writer: Callable[[IO[bytes]], None],
    before_replace: Callable[[], None] | None = None,
) -> None:
    """Let ``writer`` fill a binary handle that is then renamed atomically onto ``path``."""
    with atomic_file(path, "wb", before_replace) as handle:
        writer(handle)


def prepare_run_directory(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Create ``run_dir``; an existing non-empty one needs ``resume`` or ``overwrite``."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirectoryError(
            f"{run_dir}: exists and is not a directory; choose another run.run_name"
        )
    if run_dir.is_dir() and any(run_dir.iterdir()) and not resume:
        if not overwrite:
            raise RunDirectoryError(
                f"{run_dir}: run directory already exists; resume it with --resume "
                "(run.resume_from_checkpoint = true), replace it with --overwrite "
                "(run.overwrite = true), or choose another run.run_name"
            )
        shutil.rmtree(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise RunDirectoryError(
            f"{run_dir}: cannot write the run directory ({error.strerror}); "
            "set run.artifacts_root to a writable directory"
        ) from None


class MetricsFile:
    """The metrics file: one JSON object per logged record, appended and flushed."""

    def __init__(self, path: Path, *, keep_up_to_step: int | None = None) -> None:
        self.path = path
        if keep_up_to_step is not None and path.exists():
            self._truncate_after(keep_up_to_step)
        self._handle = path.open("a", encoding="utf-8")

    def _truncate_after(self, step: int) -> None:
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            if record.get("step", 0) <= step:
                kept.append(line)
        atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one line."""
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()

    def close(self) -> None:
        """Close the file."""
        self._handle.close()
