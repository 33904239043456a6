"""Training and validation windows over a token array, batched by tensor indexing.

A window is ``seq_len + 1`` consecutive tokens (inputs plus shifted targets). Batches are
gathered with one advanced-indexing call per batch, with no Python loop per token.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


def window_starts(num_tokens: int, seq_len: int, stride: int) -> np.ndarray:
    """Start offsets of every full window of ``seq_len + 1`` tokens."""
    last_start = num_tokens - (seq_len + 1)
    if last_start < 0:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, last_start + 1, stride, dtype=np.int64)


class TrainWindows:
    """The training windows of one run, reshuffled each epoch from ``seed`` and the epoch.

    Only the first ``data_fraction`` of the windows (in corpus order) are used. The last
    partial batch of an epoch is dropped so every step sees ``batch_size`` windows.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        *,
        seq_len: int,
        stride: int,
        batch_size: int,
        data_fraction: float,
        seed: int,
    ) -> None:
        starts = window_starts(len(tokens), seq_len, stride)
        used = int(len(starts) * data_fraction)
        self.total_windows = len(starts)
        self.starts = torch.from_numpy(starts[:used])
        self.tokens = torch.from_numpy(tokens.astype(np.int64))
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.seed = seed
        self._offsets = torch.arange(seq_len + 1)

    @property
    def num_windows(self) -> int:
        """Windows used per epoch."""
        return len(self.starts)

    @property
    def steps_per_epoch(self) -> int:
        """Full batches per epoch."""
        return self.num_windows // self.batch_size

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The window permutation of ``epoch`` (deterministic)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_windows, generator=generator)

    def batches(self, epoch: int, start_step: int = 0) -> Iterator[torch.Tensor]:
        """Yield ``(batch_size, seq_len + 1)`` token batches of ``epoch`` from ``start_step``."""
        order = self.epoch_order(epoch)
        for step in range(start_step, self.steps_per_epoch):
            chosen = self.starts[order[step * self.batch_size : (step + 1) * self.batch_size]]
            yield self.tokens[chosen[:, None] + self._offsets]


class EvalWindows:
    """Non-overlapping validation windows in corpus order, in batches (last may be short)."""

    def __init__(self, tokens: np.ndarray, *, seq_len: int, batch_size: int) -> None:
        self.starts = torch.from_numpy(window_starts(len(tokens), seq_len, seq_len))
        self.tokens = torch.from_numpy(tokens.astype(np.int64))
        self.batch_size = batch_size
        self._offsets = torch.arange(seq_len + 1)

    @property
    def num_windows(self) -> int:
        """Number of validation windows."""
        return len(self.starts)

    def batches(self) -> Iterator[torch.Tensor]:
        """Yield ``(<= batch_size, seq_len + 1)`` token batches."""
        for begin in range(0, self.num_windows, self.batch_size):
            chosen = self.starts[begin : begin + self.batch_size]
            yield self.tokens[chosen[:, None] + self._offsets]
