"""Sharded checkpoints of FSDP runs, with ``torch.distributed.checkpoint`` (DCP).

A checkpoint is a directory, ``<checkpoint stem>.dcp`` (older ones ``<stem>.1.dcp``, ...),
holding DCP's files (every rank writes its shards of the model and optimizer state; rank 0
writes ``.metadata`` last) and ``trainer_state.pt`` (step, epoch, counters, each rank's random
state, the config: what :mod:`baseline.runs.checkpoint` saves besides the tensors).

Crash safety: everything is written into ``<name>.tmp-dir``; only after every rank finished
(a barrier) does rank 0 rotate the older directories and rename the new one into place. The
directory dropped by the rotation is first renamed to ``<name>.old-dir`` and deleted last. A
crash at any moment therefore leaves the previous checkpoint under its name (or, in the one
instant of a one-checkpoint rotation, as ``.old-dir``, which the loader also accepts); a
``.tmp-dir`` is never loaded and is removed by the next save.

DCP reshards on load: a checkpoint written by N processes loads into M.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from baseline.distributed.context import DistributedContext
from baseline.errors import DataError
from baseline.runs.artifacts import atomic_write_with
from baseline.runs.checkpoint import CHECKPOINT_FORMAT, load_checkpoint

log = logging.getLogger("baseline")

TRAINER_STATE_FILENAME = "trainer_state.pt"
METADATA_FILENAME = ".metadata"
#: Environment variable of the crash test: the step whose checkpoint save is killed (SIGKILL
#: of rank 0 after the shards are written, before the rename).
KILL_AT_STEP_ENV = "BASELINE_TEST_KILL_DURING_CHECKPOINT_AT_STEP"


def dcp_checkpoint_paths(run_dir: Path, filename: str, keep: int) -> list[Path]:
    """Checkpoint directories newest first: ``stem.dcp``, ``stem.1.dcp``, ... (``keep``)."""
    stem = Path(filename).stem
    return [run_dir / f"{stem}.dcp"] + [run_dir / f"{stem}.{i}.dcp" for i in range(1, keep)]


def _temporary(path: Path) -> Path:
    return path.with_name(path.name + ".tmp-dir")


def _retired(path: Path) -> Path:
    return path.with_name(path.name + ".old-dir")


def is_complete(path: Path) -> bool:
    """Whether ``path`` is a whole checkpoint directory (DCP metadata and trainer state)."""
    return (path / METADATA_FILENAME).is_file() and (path / TRAINER_STATE_FILENAME).is_file()


def _optimizers(optimizer: Any) -> list[torch.optim.Optimizer]:
    """The ``torch.optim`` optimizers behind ``optimizer`` (an ``OptimizerGroup`` has several)."""
    return list(getattr(optimizer, "optimizers", [optimizer]))


def save_sharded_checkpoint(
    paths: Sequence[Path],
    model: nn.Module,
    optimizer: Any,
    trainer_state: dict[str, Any],
    dist: DistributedContext,
    *,
    step: int,
) -> None:
    """Write a checkpoint as ``paths[0]`` and rotate the older ones (every rank calls this)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict
    from torch.distributed.checkpoint.state_dict_saver import save

    newest = paths[0]
    staging = _temporary(newest)
    if dist.is_main:
        retired = _retired(newest)
        if retired.exists() and not newest.exists() and is_complete(retired):
            os.replace(retired, newest)  # a crash mid-rotation: put it back before going on
        for leftover in (staging, retired):
            shutil.rmtree(leftover, ignore_errors=True)
        staging.mkdir(parents=True)
        atomic_write_with(
            staging / TRAINER_STATE_FILENAME,
            lambda handle: torch.save({"format": CHECKPOINT_FORMAT, **trainer_state}, handle),
        )
    dist.barrier()
    model_state, optimizer_state = get_state_dict(model, _optimizers(optimizer))
    save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=staging)
    dist.barrier()
    if dist.is_main:
        if os.environ.get(KILL_AT_STEP_ENV) == str(step):
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        _rotate_into_place(staging, paths)
    dist.barrier()


def _rotate_into_place(staging: Path, paths: Sequence[Path]) -> None:
    """Shift ``paths[i]`` to ``paths[i + 1]`` (dropping the last), then ``staging`` to
    ``paths[0]``; every step is one rename, so some complete checkpoint is always named."""
    retired = _retired(paths[0])
    if paths[-1].exists():
        os.replace(paths[-1], retired)
    for older, newer in zip(reversed(paths[1:]), reversed(paths[:-1]), strict=True):
        if newer.exists():
            os.replace(newer, older)
    os.replace(staging, paths[0])
    shutil.rmtree(retired, ignore_errors=True)


def find_sharded_checkpoint(paths: Sequence[Path]) -> tuple[Path, dict[str, Any]] | None:
    """The newest complete checkpoint directory and its trainer state; ``None`` if none.

    Incomplete directories (a save that did not finish) are skipped with a warning; damaged
    trainer states are skipped like damaged checkpoint files. Raises :class:`DataError` when
    checkpoints exist but none is usable.
    """
    damaged: list[str] = []
    for path in [*paths, _retired(paths[0])]:
        if not path.exists():
            continue
        if not is_complete(path):
            log.warning("%s is incomplete; trying the previous checkpoint", path)
            damaged.append(path.name)
            continue
        try:
            return path, load_checkpoint(path / TRAINER_STATE_FILENAME)
        except DataError as error:
            log.warning("%s; trying the previous checkpoint", error)
            damaged.append(path.name)
    if damaged:
        raise DataError(
            f"no usable checkpoint: {', '.join(damaged)} are damaged; start a new run "
            "(--overwrite) or restore a checkpoint directory"
        )
    return None


def load_sharded_checkpoint(path: Path, model: nn.Module, optimizer: Any) -> None:
    """Load the model and optimizer state of ``path`` into the (sharded) ``model`` and
    ``optimizer``, resharding to this job's process count (every rank calls this)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.distributed.checkpoint.state_dict_loader import load

    optimizers = _optimizers(optimizer)
    model_state, optimizer_state = get_state_dict(model, optimizers)
    # DCP loads in place, into the (sharded) tensors of these state dicts.
    load({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=path)
    set_state_dict(
        model, optimizers, model_state_dict=model_state, optim_state_dict=optimizer_state
    )


__all__ = [
    "dcp_checkpoint_paths",
    "find_sharded_checkpoint",
    "is_complete",
    "load_sharded_checkpoint",
    "save_sharded_checkpoint",
]
