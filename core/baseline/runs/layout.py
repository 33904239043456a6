"""The one model of a run directory: every file name, both checkpoint kinds, the final
weights, the run lock and the run's state.

A run directory ``<artifacts_root>/<run_name>`` holds:

- ``run_config.json`` (written at the start), ``metrics.jsonl``, ``samples.jsonl``, the
  tokenizer file (named by the tokenizer plugin, recorded in ``run_config.json``), the weights
  record ``weights.fit.json`` (a :mod:`baseline.data.fit_record` record of the fitted "file"
  ``weights``), under torchrun ``ranks.json``, and ``logger_errors.log`` (the tracebacks of
  loggers that failed during the run, see :mod:`baseline.metrics.sessions`);
- checkpoints of one of two kinds, ``run.keep_last_checkpoints`` of them, newest first:
  single files ``<checkpoint_filename>``, ``<stem>.1<suffix>``, ... (one process, DDP), or
  sharded DCP directories ``<stem>.dcp``, ``<stem>.1.dcp``, ... (FSDP), each complete once it
  holds DCP's ``.metadata`` and ``trainer_state.pt``. A DCP save is written into
  ``<name>.tmp-dir`` (never loaded) and the directory a rotation drops is first renamed to
  ``<name>.old-dir`` (loaded only when it holds the newest complete step: a resume picks the
  checkpoint by the step recorded in it, not by its name);
- once training finished, the final model ``<final_model_filename>`` and
  ``inference_config.json``.

The run lock ``<artifacts_root>/.<run_name>.lock`` sits beside the directory, so that
``--overwrite`` (which deletes the directory) does not delete it. A run is ``running`` while a
process holds its lock, ``complete`` once the final model and ``inference_config.json``
exist, ``interrupted`` when it stopped with a checkpoint of either kind, and ``failed``
otherwise. This module reads only file names and JSON; loading tensors is
:mod:`baseline.runs.checkpoint`'s and :mod:`baseline.runs.sharded_checkpoint`'s.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import attrs

from baseline.config import RunConfig
from baseline.errors import DataError

log = logging.getLogger("baseline")

RUN_CONFIG = "run_config.json"
INFERENCE_CONFIG = "inference_config.json"
METRICS = "metrics.jsonl"
SAMPLES = "samples.jsonl"
RANKS = "ranks.json"
#: Tracebacks of the loggers that failed (and were switched off) during the run.
LOGGER_ERRORS = "logger_errors.log"
#: The fitted "file" whose fit record (``weights.fit.json``) says what the weights learned from.
WEIGHTS_RECORD = "weights"
#: Inside a DCP checkpoint directory: what a single-file checkpoint holds besides tensors.
TRAINER_STATE = "trainer_state.pt"
#: Inside a DCP checkpoint directory: DCP's index, written last.
DCP_METADATA = ".metadata"
DCP_SUFFIX = ".dcp"
STAGING_SUFFIX = ".tmp-dir"
RETIRED_SUFFIX = ".old-dir"
#: A file being written atomically (:func:`baseline.runs.artifacts.atomic_file`) is
#: ``.<name>.<random>.tmp`` in its destination directory until it is renamed into place.
TEMPORARY_FILE_SUFFIX = ".tmp"

#: The ``[run]`` defaults, for runs whose config lacks a key (the config spells the names).
_DEFAULT_RUN = RunConfig()
DEFAULT_CHECKPOINT = _DEFAULT_RUN.checkpoint_filename
DEFAULT_FINAL_MODEL = _DEFAULT_RUN.final_model_filename
DEFAULT_KEEP = _DEFAULT_RUN.keep_last_checkpoints

RunState = Literal["complete", "running", "interrupted", "failed"]
STATES: tuple[RunState, ...] = ("complete", "running", "interrupted", "failed")

T = TypeVar("T")

__all__ = [
    "STATES",
    "Checkpoint",
    "RunDirectory",
    "RunState",
    "first_usable",
    "read_json",
]


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; ``None`` when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _section(data: Mapping[str, Any] | None, *keys: str) -> Mapping[str, Any]:
    for key in keys:
        value = data.get(key) if isinstance(data, Mapping) else None
        data = value if isinstance(value, Mapping) else {}
    return data if isinstance(data, Mapping) else {}


@attrs.frozen
class Checkpoint:
    """One checkpoint on disk: a file, or (``sharded``) a DCP directory."""

    path: Path
    sharded: bool

    @property
    def trainer_state(self) -> Path:
        """The file holding step, counters, RNG states and config (the whole checkpoint for
        a single file)."""
        return self.path / TRAINER_STATE if self.sharded else self.path

    @property
    def complete(self) -> bool:
        """Whether it is there whole (a DCP directory needs its metadata and trainer state)."""
        if not self.sharded:
            return self.path.is_file()
        return (self.path / DCP_METADATA).is_file() and self.trainer_state.is_file()


def first_usable(
    candidates: Iterable[Checkpoint],
    read: Callable[[Checkpoint], T],
    *,
    newest_by: Callable[[T], int] | None = None,
) -> tuple[Checkpoint, T] | None:
    """The first candidate that exists, is complete and that ``read`` reads, with what it
    read; ``None`` when none exists. Incomplete or damaged ones (``read`` raises
    :class:`DataError`) are skipped with a warning; a :class:`DataError` when all are.

    With ``newest_by`` every candidate is read and the one it gives the largest value (the
    step recorded inside) wins, the first of equals: names alone may be out of order after a
    crash in the middle of a rotation."""
    damaged: list[Checkpoint] = []
    usable: list[tuple[Checkpoint, T]] = []
    for checkpoint in candidates:
        if not checkpoint.path.exists():
            continue
        if not checkpoint.complete:
            log.warning("%s is incomplete; trying the previous checkpoint", checkpoint.path)
            damaged.append(checkpoint)
            continue
        try:
            found = checkpoint, read(checkpoint)
        except DataError as error:
            log.warning("%s; trying the previous checkpoint", error)
            damaged.append(checkpoint)
            continue
        if newest_by is None:
            return found
        usable.append(found)
    if usable and newest_by is not None:
        return max(usable, key=lambda item: newest_by(item[1]))
    if damaged:
        what = "directory" if damaged[0].sharded else "file"
        raise DataError(
            f"no usable checkpoint: {', '.join(c.path.name for c in damaged)} are damaged; "
            f"start a new run (--overwrite) or restore a checkpoint {what}"
        )
    return None


@attrs.frozen
class RunDirectory:
    """The files of the run directory ``path`` (which need not exist yet)."""

    path: Path = attrs.field(converter=Path)
    checkpoint_filename: str = DEFAULT_CHECKPOINT
    final_model_filename: str = DEFAULT_FINAL_MODEL
    keep_last_checkpoints: int = DEFAULT_KEEP
    #: The checkpoint kind the run writes (``None``: unknown; both are looked for).
    sharded: bool | None = None

    @classmethod
    def of(cls, path: Path, run: RunConfig, *, sharded: bool | None = None) -> RunDirectory:
        """The run directory of a run with the ``[run]`` settings ``run``."""
        return cls(
            path,
            run.checkpoint_filename,
            run.final_model_filename,
            run.keep_last_checkpoints,
            sharded,
        )

    @classmethod
    def read(cls, path: str | Path) -> RunDirectory:
        """The run directory ``path`` with the settings its ``run_config.json`` records (the
        defaults where it is missing or lacks them)."""
        directory = cls(Path(path))
        config = _section(directory.read_run_config(), "config")
        run = _section(config, "run")
        parallelism = _section(config, "train").get("parallelism")
        keep = run.get("keep_last_checkpoints")
        return cls(
            directory.path,
            str(run.get("checkpoint_filename") or DEFAULT_CHECKPOINT),
            str(run.get("final_model_filename") or DEFAULT_FINAL_MODEL),
            keep if isinstance(keep, int) and keep >= 1 else DEFAULT_KEEP,
            None if parallelism is None else parallelism == "fsdp",
        )

    # -- files -------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The run's name: the directory's."""
        return self.path.absolute().name

    @property
    def run_config(self) -> Path:
        return self.path / RUN_CONFIG

    @property
    def inference_config(self) -> Path:
        return self.path / INFERENCE_CONFIG

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def samples(self) -> Path:
        return self.path / SAMPLES

    @property
    def ranks(self) -> Path:
        return self.path / RANKS

    @property
    def logger_errors(self) -> Path:
        """The tracebacks of the loggers that failed during the run (appended)."""
        return self.path / LOGGER_ERRORS

    @property
    def weights_record(self) -> Path:
        """The fitted "file" of the weights record (the record is its ``.fit.json``)."""
        return self.path / WEIGHTS_RECORD

    @property
    def final_model(self) -> Path:
        return self.path / self.final_model_filename

    @property
    def lock(self) -> Path:
        """``<artifacts_root>/.<run_name>.lock``, beside the directory."""
        return self.path.parent / f".{self.path.name}.lock"

    def read_run_config(self) -> dict[str, Any] | None:
        """``run_config.json``; ``None`` when missing or unreadable."""
        return read_json(self.run_config)

    def read_inference_config(self) -> dict[str, Any] | None:
        """``inference_config.json``; ``None`` when missing or unreadable."""
        return read_json(self.inference_config)

    def tokenizer_file(self) -> Path | None:
        """The tokenizer file (named in ``inference_config.json``, else ``run_config.json``)."""
        name = _section(self.read_inference_config(), "tokenizer").get("file")
        name = name or (self.read_run_config() or {}).get("tokenizer_file")
        return self.path / str(name) if name else None

    def leftovers(self) -> list[Path]:
        """What an interrupted process left in the directory: temporary files of atomic writes
        (``.<name>.<random>.tmp``) and DCP staging directories (``<name>.tmp-dir``). Stale
        only while the run lock is held (their writer is dead then)."""
        if not self.path.is_dir():
            return []
        temporary = self.path.glob(f".*{TEMPORARY_FILE_SUFFIX}")
        staging = self.path.glob(f"*{STAGING_SUFFIX}")
        return sorted({*temporary, *staging})

    def is_run(self) -> bool:
        """Whether the directory holds a run (its config or metrics)."""
        return self.run_config.is_file() or self.metrics.is_file()

    def files(self) -> list[Path]:
        """The run's files whose modification times tell when it was last written."""
        files = [self.run_config, self.metrics, self.inference_config, self.final_model]
        return files + [c.trainer_state for c in self.existing_checkpoints()]

    # -- checkpoints -------------------------------------------------------------------------

    def checkpoint_files(self) -> list[Path]:
        """Single-file checkpoints newest first: ``name.pt``, ``name.1.pt``, ..."""
        newest = self.path / self.checkpoint_filename
        keep = self.keep_last_checkpoints
        older = (newest.with_name(f"{newest.stem}.{i}{newest.suffix}") for i in range(1, keep))
        return [newest, *older]

    def checkpoint_directories(self) -> list[Path]:
        """DCP checkpoint directories newest first: ``stem.dcp``, ``stem.1.dcp``, ..."""
        stem = Path(self.checkpoint_filename).stem
        keep = self.keep_last_checkpoints
        older = [self.path / f"{stem}.{i}{DCP_SUFFIX}" for i in range(1, keep)]
        return [self.path / f"{stem}{DCP_SUFFIX}", *older]

    def checkpoint_paths(self, sharded: bool) -> list[Path]:
        """The rotation of one kind, newest first."""
        return self.checkpoint_directories() if sharded else self.checkpoint_files()

    @staticmethod
    def staging(directory: Path) -> Path:
        """Where a DCP save into ``directory`` is written before it is renamed into place."""
        return directory.with_name(directory.name + STAGING_SUFFIX)

    @staticmethod
    def retired(directory: Path) -> Path:
        """Where the DCP directory a rotation drops waits until it is deleted."""
        return directory.with_name(directory.name + RETIRED_SUFFIX)

    def candidates(self, sharded: bool | None = None) -> list[Checkpoint]:
        """Every checkpoint that may be loaded, in the order to try them: the run's kind (or
        ``sharded``'s) first, newest first; a DCP rotation's retired directory last."""
        kind = self.sharded if sharded is None else sharded
        files = [Checkpoint(path, False) for path in self.checkpoint_files()]
        directories = self.checkpoint_directories()
        shards = [Checkpoint(p, True) for p in [*directories, self.retired(directories[0])]]
        if sharded is not None:
            return shards if sharded else files
        return [*shards, *files] if kind else [*files, *shards]

    def existing_checkpoints(self, sharded: bool | None = None) -> list[Checkpoint]:
        """The complete checkpoints on disk (see :meth:`candidates`); no file is read."""
        return [c for c in self.candidates(sharded) if c.complete]

    def newest_checkpoint(self, sharded: bool | None = None) -> Checkpoint | None:
        """The first complete checkpoint on disk (no file is read)."""
        existing = self.existing_checkpoints(sharded)
        return existing[0] if existing else None

    def find_checkpoint(
        self, read: Callable[[Checkpoint], T], sharded: bool | None = None
    ) -> tuple[Checkpoint, T] | None:
        """The newest usable checkpoint and what ``read`` read from it (see
        :func:`first_usable`: a damaged one falls back to the previous one)."""
        return first_usable(self.candidates(sharded), read)

    # -- the run's state ---------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Training ended and wrote the final model and ``inference_config.json``."""
        return self.inference_config.is_file() and self.final_model.is_file()

    def state(self, *, lock_held: Callable[[Path], bool], recently_written: bool) -> RunState:
        """``running``, ``complete``, ``interrupted`` or ``failed`` (see the module).

        ``lock_held`` says whether some process holds a lock file; ``recently_written`` is
        the sign of a running run of an older baseline, which wrote no lock file.
        """
        finished = self.finished
        if self.lock.is_file():
            if lock_held(self.lock):  # held also while a complete run is resumed
                return "running"
        elif not finished and recently_written:
            return "running"
        if finished:
            return "complete"
        return "interrupted" if self.newest_checkpoint() is not None else "failed"
