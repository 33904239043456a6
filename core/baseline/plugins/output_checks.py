"""What a plugin's adapter returns, checked where it enters the core.

The checks are cheap: the model's logits are checked once, on the first training forward
(a shape compare), and each chunk of token ids by its minimum and maximum.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from baseline.errors import PluginError


class PluginOutputError(PluginError):
    """An adapter returned something the core cannot use; the message names neither the
    component nor its distribution (see :func:`component_label`)."""


def component_label(kind: str, name: str) -> str:
    """``model 'x' from <distribution>``; the distribution when the active plugins know it."""
    from baseline.plugins.discovery import default_plugins

    try:
        distribution = default_plugins().registry.get(kind, name).distribution
    except Exception:  # only a label: never fail while reporting another failure
        return f"{kind} {name!r}"
    return f"{kind} {name!r} from {distribution}"


def check_logits(logits: Any, expected: tuple[int, int, int], label: str) -> None:
    """Raise a :class:`PluginError` unless ``logits`` is a tensor of shape ``expected``
    (``(batch, seq_len, vocab_size)``)."""
    import torch

    rule = f"expected logits of shape (batch, seq_len, vocab_size) = {expected}"
    if not isinstance(logits, torch.Tensor):
        raise PluginError(
            f"{label}: forward returned a {type(logits).__name__}, {rule}; return the logits "
            "tensor alone"
        )
    shape = tuple(logits.shape)
    if shape != expected:
        raise PluginError(
            f"{label}: forward returned a tensor of shape {shape}, {rule}; the output layer "
            "must have vocab_size outputs (the vocab_size passed to build())"
        )


def check_token_ids(ids: np.ndarray, vocab_size: int) -> None:
    """Raise a :class:`PluginOutputError` when an id of ``ids`` is outside ``0..vocab_size-1``."""
    if not ids.size:
        return
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise PluginOutputError(
            f"encode_batch returned id {bad}, outside the vocabulary 0..{vocab_size - 1} "
            f"(vocab_size={vocab_size}); ids must be below vocab_size"
        )
