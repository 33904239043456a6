"""The device a run trains on, the autocast it computes under and the device's peak FLOP/s."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from baseline.errors import ConfigError

#: Dense bf16 peak FLOP/s by CUDA device name fragment, for model FLOPs utilisation.
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


def select_device(requested: str, local_rank: int | None = None) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an unavailable explicit choice is an error.

    With ``local_rank`` (a distributed run), a CUDA device is that rank's GPU.
    """
    cuda = torch.cuda.is_available()
    mps = hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    if (requested == "cuda" and not cuda) or (requested == "mps" and not mps):
        raise ConfigError(
            f'{requested} is not available on this machine; use "auto" or "cpu"',
            key_path="train.device",
        )
    kind = ("cuda" if cuda else "mps" if mps else "cpu") if requested == "auto" else requested
    if kind == "cuda" and local_rank is not None:
        return torch.device("cuda", local_rank)
    return torch.device(kind)


def peak_flops(device: torch.device) -> float | None:
    """The device's bf16 peak, when it is a known CUDA GPU."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)


def autocast(dtype: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast when the run's matmul dtype (``PrecisionPlan.autocast``) is bf16."""
    if dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
