"""Training checkpoints: everything needed to continue a run, saved atomically."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from baseline.artifacts import atomic_write_with
from baseline.errors import DataError

CHECKPOINT_FORMAT = 1


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


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` captured."""
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically."""
    atomic_write_with(
        path, lambda handle: torch.save({"format": CHECKPOINT_FORMAT, **state}, handle)
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
