"""Sharded checkpoints of FSDP runs, with ``torch.distributed.checkpoint`` (DCP).

A checkpoint is a directory (its names and rotation are
:class:`baseline.runs.layout.RunDirectory`'s) holding DCP's files (every rank writes its shards
of the model and optimizer state; rank 0 writes the metadata last) and the trainer state (step,
epoch, counters, each rank's random state, the config: what :mod:`baseline.runs.checkpoint`
saves besides the tensors).

Crash safety: everything is written into the staging directory; only after every rank finished
(a barrier) does rank 0 rotate the older directories and rename the new one into place. The
directory dropped by the rotation is first renamed to its retired name and deleted last. A
crash at any moment therefore leaves the previous checkpoint under its name (or, in the one
instant of a one-checkpoint rotation, retired, which the loader also accepts); a staging
directory is never loaded and is removed by the next save.

DCP reshards on load: a checkpoint written by N processes loads into M, or into a plain
model in one process (:func:`load_model_weights`).
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from baseline.distributed.context import DistributedContext
from baseline.errors import DataError
from baseline.runs.artifacts import atomic_write_with
from baseline.runs.checkpoint import CHECKPOINT_FORMAT, load_checkpoint
from baseline.runs.layout import Checkpoint, RunDirectory, first_usable

log = logging.getLogger("baseline")

#: Environment variable of the crash test: the step whose checkpoint save is killed (SIGKILL
#: of rank 0 after the shards are written, before the rename).
KILL_AT_STEP_ENV = "BASELINE_TEST_KILL_DURING_CHECKPOINT_AT_STEP"


def dcp_checkpoint_paths(run_dir: Path, filename: str, keep: int) -> list[Path]:
    """Checkpoint directories newest first: ``stem.dcp``, ``stem.1.dcp``, ... (``keep``)."""
    return RunDirectory(run_dir, filename, keep_last_checkpoints=keep).checkpoint_directories()


_temporary = RunDirectory.staging
_retired = RunDirectory.retired


def is_complete(path: Path) -> bool:
    """Whether ``path`` is a whole checkpoint directory (DCP metadata and trainer state)."""
    return Checkpoint(path, True).complete


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
            Checkpoint(staging, True).trainer_state,
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
    candidates = [Checkpoint(path, True) for path in [*paths, _retired(paths[0])]]
    found = first_usable(candidates, read_trainer_state)
    return None if found is None else (found[0].path, found[1])


def read_trainer_state(checkpoint: Checkpoint) -> dict[str, Any]:
    """A checkpoint's trainer state (the whole checkpoint, for a single file)."""
    return load_checkpoint(checkpoint.trainer_state)


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


def load_model_weights(path: Path, template: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model weights of the DCP checkpoint ``path``, loaded in this process alone into
    copies of ``template`` (a plain model's state dict: its keys, shapes and dtypes).

    Each process reads the whole tensors; nothing is communicated, also under torchrun.
    """
    from torch.distributed.checkpoint.state_dict_loader import load

    state = {key: value.detach().clone() for key, value in template.items()}
    try:
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process"
            warnings.simplefilter("ignore", UserWarning)
            load({"model": state}, checkpoint_id=path, no_dist=True)
    except Exception as error:
        reason = str(error).strip().splitlines()
        raise DataError(
            f"{path}: cannot load the model weights of the checkpoint "
            f"({type(error).__name__}{': ' + reason[0][:200] if reason else ''})"
        ) from None
    return state


def model_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The model tensors of the DCP checkpoint ``path`` and their shapes, from its metadata."""
    from torch.distributed.checkpoint.filesystem import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    try:
        metadata = FileSystemReader(path).read_metadata()
    except Exception as error:
        raise DataError(
            f"{path}: checkpoint metadata is corrupt or unreadable ({type(error).__name__})"
        ) from None
    return {
        key.removeprefix("model."): tuple(item.size)
        for key, item in metadata.state_dict_metadata.items()
        if key.startswith("model.") and isinstance(item, TensorStorageMetadata)
    }


__all__ = [
    "dcp_checkpoint_paths",
    "find_sharded_checkpoint",
    "is_complete",
    "load_model_weights",
    "load_sharded_checkpoint",
    "model_shapes",
    "read_trainer_state",
    "save_sharded_checkpoint",
]
