"""Training and validation windows over a token array, batched by array indexing.

A window is ``seq_len + 1`` consecutive tokens (inputs plus shifted targets). A split is a
set of token ranges of the stream (runs of adjacent segments); windows never cross from one
range into another. The token array may be a read-only ``np.memmap``: batches gather their
rows from it with one fancy-indexing call, with no copy of the corpus and no Python loop per
token.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from itertools import count
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

TokenRanges = Sequence[tuple[int, int]]


def window_starts(num_tokens: int, seq_len: int, stride: int) -> np.ndarray:
    """Start offsets of every full window of ``seq_len + 1`` tokens in ``num_tokens``."""
    last_start = num_tokens - (seq_len + 1)
    if last_start < 0:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, last_start + 1, stride, dtype=np.int64)


def range_window_starts(ranges: TokenRanges, seq_len: int, stride: int) -> np.ndarray:
    """Window starts, in stream coordinates, of every full window inside each range."""
    parts = [start + window_starts(end - start, seq_len, stride) for start, end in ranges]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _gather(tokens: np.ndarray, starts: np.ndarray, width: int) -> torch.Tensor:
    rows = tokens[starts[:, None] + np.arange(width)]
    return torch.from_numpy(rows.astype(np.int64, copy=False))


class TrainWindows:
    """The training windows of a run, reshuffled each epoch from ``seed`` and the epoch.

    Only the first ``data_fraction`` of the windows (in corpus order) are used. The last
    partial batch of an epoch is dropped so every step sees ``batch_size`` windows.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        ranges: TokenRanges,
        *,
        seq_len: int,
        stride: int,
        batch_size: int,
        data_fraction: float,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        starts = range_window_starts(ranges, seq_len, stride)
        self.total_windows = len(starts)
        self.starts = starts[: int(len(starts) * data_fraction)]
        self.tokens = tokens
        self.width = seq_len + 1
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.local_batch_size = batch_size // world_size

    @property
    def num_windows(self) -> int:
        """Windows used per epoch."""
        return len(self.starts)

    @property
    def steps_per_epoch(self) -> int:
        """Full batches per epoch."""
        return self.num_windows // self.batch_size

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The window permutation of ``epoch`` (deterministic)."""
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_windows)

    def optimizer_steps(
        self, first_epoch: int, step_in_epoch: int, epochs: int | None, accumulation: int
    ) -> Iterator[tuple[int, list[torch.Tensor]]]:
        """``(epoch, micro-batches)`` of each optimizer step from step ``step_in_epoch`` of
        ``first_epoch`` on (``accumulation`` batches a step), through ``epochs`` or forever."""
        steps_per_epoch = self.steps_per_epoch // accumulation
        for epoch in range(first_epoch, epochs) if epochs is not None else count(first_epoch):
            start = step_in_epoch if epoch == first_epoch else 0
            micro_batches = self.batches(epoch, start * accumulation)
            for _ in range(start, steps_per_epoch):
                yield epoch, [next(micro_batches) for _ in range(accumulation)]

    def batches(self, epoch: int, start_batch: int = 0) -> Iterator[torch.Tensor]:
        """Yield this rank's ``(batch_size / world_size, seq_len + 1)`` share of each global
        batch of ``epoch``, from batch ``start_batch`` on.

        Every rank draws the same permutation; rank ``r`` takes the ``r``-th slice of each
        global batch, so the ranks' shards are disjoint and together are the global batch.
        """
        order = self.epoch_order(epoch)
        size, local = self.batch_size, self.local_batch_size
        for index in range(start_batch, self.steps_per_epoch):
            begin = index * size + self.rank * local
            chosen = self.starts[order[begin : begin + local]]
            yield _gather(self.tokens, chosen, self.width)


class EvalWindows:
    """Non-overlapping validation windows in corpus order, in batches (the last may be short)."""

    def __init__(
        self,
        tokens: np.ndarray,
        ranges: TokenRanges,
        *,
        seq_len: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        # Each rank evaluates every world_size-th window; the sums are all-reduced.
        self.starts = range_window_starts(ranges, seq_len, seq_len)[rank::world_size]
        self.tokens = tokens
        self.width = seq_len + 1
        self.batch_size = batch_size

    @property
    def num_windows(self) -> int:
        """Number of validation windows."""
        return len(self.starts)

    @property
    def num_batches(self) -> int:
        """Number of batches :meth:`batches` yields."""
        return -(-self.num_windows // self.batch_size)

    def batches(self) -> Iterator[torch.Tensor]:
        """Yield ``(<= batch_size, seq_len + 1)`` token batches."""
        for begin in range(0, self.num_windows, self.batch_size):
            yield _gather(self.tokens, self.starts[begin : begin + self.batch_size], self.width)


def window_loss_sum(
    model: torch.nn.Module,
    windows: EvalWindows,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
) -> tuple[torch.Tensor, int]:
    """The summed cross-entropy (nats, float64 on ``device``) of every target of ``windows``
    and the number of targets: validation's loss, and ``baseline eval``'s."""
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    with torch.no_grad():
        for batch in windows.batches():
            batch = batch.to(device)
            inputs, targets = batch[:, :-1], batch[:, 1:]
            with autocast():
                logits = model(inputs)
            total += F.cross_entropy(
                logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="sum"
            ).double()
            count += targets.numel()
    return total, count
