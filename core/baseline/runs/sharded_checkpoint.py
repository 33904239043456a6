"""Sharded checkpoints of FSDP runs, with ``torch.distributed.checkpoint`` (DCP).

A checkpoint is a directory (its names and rotation are
:class:`baseline.runs.layout.RunDirectory`'s) holding DCP's files (every rank writes its shards
of the model and optimizer state; rank 0 writes the metadata last) and the trainer state (step,
epoch, counters, each rank's random state, the config: what :mod:`baseline.runs.checkpoint`
saves besides the tensors).

Crash safety: everything is written into the staging directory; only after every rank finished
(a barrier) does rank 0 rotate the older directories and rename the new one into place. The
directory dropped by the rotation is first renamed to its retired name and deleted last (made
incomplete first). A crash at any moment therefore leaves every complete checkpoint under a
name the loader tries (a rotation's name or the retired one), and the loader picks the one
with the newest step recorded inside, whatever its name; a staging directory is never loaded.
The next save first puts the checkpoints back in order (newest step under the newest name,
what the rotation does not keep deleted), each move again one rename, then removes the
staging directory.

DCP reshards on load: a checkpoint written by N processes loads into M, or into a plain
model in one process (:func:`load_model_weights`).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import warnings
from collections.abc import Callable, Sequence
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

#: Environment variable of the crash tests: ``<step>`` kills rank 0 (SIGKILL) in that step's
#: save after the shards are written, before the rotation; ``<step>:<k>`` kills it just before
#: the k-th operation of the rotation (its renames, then the deletion of the retired directory).
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
        _put_in_order(paths)  # after a crash mid-rotation, before anything moves again
        shutil.rmtree(staging, ignore_errors=True)
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
        before = _crash_hook(step)
        before(0)
        _rotate_into_place(staging, paths, before)
    dist.barrier()


def _crash_hook(step: int) -> Callable[[int], None]:
    """What runs before each operation of step ``step``'s rotation (see ``KILL_AT_STEP_ENV``)."""
    at_step, _, point = os.environ.get(KILL_AT_STEP_ENV, "").partition(":")

    def before(operation: int) -> None:
        if at_step == str(step) and int(point or 0) == operation:
            os.kill(os.getpid(), signal.SIGKILL)

    return before


def _rotate_into_place(
    staging: Path, paths: Sequence[Path], before: Callable[[int], None] = lambda _: None
) -> None:
    """Shift ``paths[i]`` to ``paths[i + 1]`` (dropping the last), then ``staging`` to
    ``paths[0]``; every step is one rename, so every complete checkpoint stays named.
    ``before(k)`` runs before the k-th operation (1, 2, ...)."""
    operations = iter(range(1, 1 << 30))
    retired = _retired(paths[0])
    if paths[-1].exists():
        before(next(operations))
        os.replace(paths[-1], retired)
    for older, newer in zip(reversed(paths[1:]), reversed(paths[:-1]), strict=True):
        if newer.exists():
            before(next(operations))
            os.replace(newer, older)
    before(next(operations))
    os.replace(staging, paths[0])
    before(next(operations))
    _delete(retired)


def _delete(directory: Path) -> None:
    """Delete a checkpoint directory, made incomplete first (one unlink), so that a crash
    half-way never leaves a directory that looks complete but misses shards."""
    Checkpoint(directory, True).trainer_state.unlink(missing_ok=True)
    shutil.rmtree(directory, ignore_errors=True)


def _step(state: dict[str, Any]) -> int:
    step = state.get("step")
    return step if isinstance(step, int) else -1


def _put_in_order(paths: Sequence[Path]) -> None:
    """The complete checkpoints (named or retired) under the rotation's names, the newest
    step under ``paths[0]``; incomplete ones and those the rotation does not keep deleted.

    Needed after a crash in the middle of a rotation (some name empty, the oldest retired).
    Each move is one rename into an empty name the loader tries, and only checkpoints older
    than the kept ones are deleted, so a crash here too leaves the newest one loadable."""
    slots = [*paths, _retired(paths[0])]
    readable: list[tuple[int, Path]] = []
    damaged: list[Path] = []
    for path in slots:
        checkpoint = Checkpoint(path, True)
        if not path.exists():
            continue
        if not checkpoint.complete:
            _delete(path)
            continue
        try:
            readable.append((_step(read_trainer_state(checkpoint)), path))
        except DataError:
            damaged.append(path)
    ordered = [path for _, path in sorted(readable, key=lambda item: item[0], reverse=True)]
    ordered += damaged  # kept while the rotation has room, like the rotation would
    kept = ordered[: len(paths)]
    for path in ordered[len(paths) :]:
        _delete(path)
    at = {path: path for path in kept}  # where each kept checkpoint is now
    for target, moving in zip(paths, kept, strict=False):
        if at[moving] == target:
            continue
        occupant = next((other for other, now in at.items() if now == target), None)
        if occupant is not None:  # a newer one must take its name: move it aside first
            free = next(slot for slot in slots if not slot.exists())
            os.replace(target, free)
            at[occupant] = free
        os.replace(at[moving], target)
        at[moving] = target


def find_sharded_checkpoint(paths: Sequence[Path]) -> tuple[Path, dict[str, Any]] | None:
    """The complete checkpoint directory with the newest step and its trainer state (by the
    step recorded inside, not by name); ``None`` if none.

    Incomplete directories (a save that did not finish) are skipped with a warning; damaged
    trainer states are skipped like damaged checkpoint files. Raises :class:`DataError` when
    checkpoints exist but none is usable.
    """
    candidates = [Checkpoint(path, True) for path in [*paths, _retired(paths[0])]]
    found = first_usable(candidates, read_trainer_state, newest_by=_step)
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
