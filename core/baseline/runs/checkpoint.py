"""Training checkpoints: everything needed to continue a run, saved atomically and rotated.

The file names and their rotation are :class:`baseline.runs.layout.RunDirectory`'s. A
checkpoint that cannot be read is reported and the previous one is used.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from baseline.errors import DataError
from baseline.runs.artifacts import atomic_write_with
from baseline.runs.layout import Checkpoint, RunDirectory, first_usable

CHECKPOINT_FORMAT = 1
log = logging.getLogger("baseline")


def checkpoint_paths(run_dir: Path, filename: str, keep: int) -> list[Path]:
    """Checkpoint files newest first: ``name.pt``, ``name.1.pt``, ... (``keep`` in all)."""
    return RunDirectory(run_dir, filename, keep_last_checkpoints=keep).checkpoint_files()


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states, in a form ``torch.load(weights_only=True)`` accepts."""
    np_state: tuple[Any, ...] = np.random.get_state(legacy=True)  # type: ignore[assignment]
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def tensors_to_arrays(value: Any) -> Any:
    """Tensors inside ``value`` as NumPy arrays (``all_gather_object`` mishandles tensors)."""
    if isinstance(value, torch.Tensor):
        return value.cpu().numpy()
    if isinstance(value, dict):
        return {k: tensors_to_arrays(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(tensors_to_arrays(v) for v in value)
    return value


def arrays_to_tensors(value: Any) -> Any:
    """The inverse of :func:`tensors_to_arrays`."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, dict):
        return {k: arrays_to_tensors(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(arrays_to_tensors(v) for v in value)
    return value


def restore_rng_state(state: dict[str, Any], device_count: int | None = None) -> str | None:
    """Restore what :func:`capture_rng_state` captured.

    The CUDA states are restored for the devices present (``device_count``, by default
    ``torch.cuda.device_count()``): a checkpoint saved with more devices than this process
    sees resumes on the first ones. Returns a one-line note when the device counts differ
    (``None`` otherwise), for the caller to log.
    """
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if device_count is None:
        device_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    restored, note = matching_cuda_states(list(state.get("cuda", [])), device_count)
    for device, cuda_state in enumerate(restored):
        torch.cuda.set_rng_state(cuda_state, device)
    return note


def matching_cuda_states(saved: list[Any], device_count: int) -> tuple[list[Any], str | None]:
    """The saved CUDA random states of the devices present (the first ``device_count``), and
    a note when the checkpoint's device count differs from this process's."""
    if len(saved) == device_count or not saved:
        return saved, None  # saved without CUDA: the devices keep their seeded states
    kept = saved[:device_count]
    rest = (
        f"the other {len(saved) - device_count} are not used"
        if len(saved) > device_count
        else "the other devices keep their seeded states"
    )
    return kept, (
        f"the checkpoint holds the CUDA random states of {len(saved)} device(s) and this "
        f"process sees {device_count}: restored {len(kept)}, {rest}"
    )


def save_checkpoint(paths: list[Path], state: dict[str, Any]) -> None:
    """Write ``state`` as the newest checkpoint, shifting the older ones down the list.

    The new file is complete and fsynced before any older file moves, so a crash at any
    moment leaves at least one complete checkpoint.
    """

    def rotate() -> None:
        for older, newer in zip(reversed(paths[1:]), reversed(paths[:-1]), strict=True):
            if newer.exists():
                os.replace(newer, older)

    atomic_write_with(
        paths[0],
        lambda handle: torch.save({"format": CHECKPOINT_FORMAT, **state}, handle),
        before_replace=rotate,
    )


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint without running any pickled code; a damaged file is a clear error."""
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise DataError(
            f"{path}: checkpoint is corrupt or unreadable ({type(error).__name__})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"{path}: not a baseline checkpoint (format {CHECKPOINT_FORMAT})")
    return state


def load_latest_checkpoint(paths: list[Path]) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable checkpoint, skipping (and reporting) damaged ones; ``None`` if none.

    Raises :class:`DataError` when checkpoints exist but none can be read.
    """
    found = first_usable((Checkpoint(path, False) for path in paths), _read)
    return None if found is None else (found[0].path, found[1])


def _read(checkpoint: Checkpoint) -> dict[str, Any]:
    return load_checkpoint(checkpoint.trainer_state)
