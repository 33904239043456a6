"""The training windows of a mixture: each source's windows, drawn by the
:class:`~baseline.data.mixture.MixtureSchedule` (see :mod:`baseline.data.mixture`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import count

import numpy as np
import torch

from baseline.data.mixture import MixtureSchedule, pass_order
from baseline.data.windows import TokenRanges, _gather, range_window_starts


class MixtureTrainWindows:
    """Training windows drawn from several sources at their weights.

    An epoch of a mixture is as many batches as the sources of positive weight have windows
    together (``on_exhausted = "repeat"``), or the batches before the first source would repeat
    (``"stop"``, which trains one such epoch). Which windows a step gets depends only on the
    seed, the weights and the step: every rank computes the same global batch and takes its
    own slice of it, so the ranks' windows are disjoint and together follow the mix.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        source_ranges: Sequence[TokenRanges],
        weights: Sequence[float],
        *,
        seq_len: int,
        stride: int,
        batch_size: int,
        data_fraction: float,
        seed: int,
        on_exhausted: str = "repeat",
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.source_starts = []
        for ranges in source_ranges:
            starts = range_window_starts(ranges, seq_len, stride)
            self.source_starts.append(starts[: int(len(starts) * data_fraction)])
        self.tokens = tokens
        self.seq_len = seq_len
        self.width = seq_len + 1
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.local_batch_size = batch_size // world_size
        self.schedule = MixtureSchedule(weights)
        self.stop_when_exhausted = on_exhausted == "stop"
        self._orders: dict[int, tuple[int, np.ndarray]] = {}
        if self.stop_when_exhausted:
            sizes = [len(starts) for starts in self.source_starts]
            self.epoch_windows = self.schedule.windows_before_exhaustion(sizes)
        else:
            self.epoch_windows = sum(
                len(starts)
                for starts, weight in zip(self.source_starts, self.schedule.weights, strict=True)
                if weight > 0  # a source of weight 0 is validated, never trained on
            )

    @property
    def num_windows(self) -> int:
        """Windows per epoch (see the class docstring)."""
        return self.epoch_windows

    @property
    def windows_per_source(self) -> list[int]:
        """Each source's training windows (one pass)."""
        return [len(starts) for starts in self.source_starts]

    @property
    def steps_per_epoch(self) -> int:
        """Full batches per epoch."""
        return self.num_windows // self.batch_size

    def epoch_limit(self, epochs: int | None) -> int | None:
        """The epochs training can run: one when the mixture stops at its first exhaustion."""
        if self.stop_when_exhausted:
            return 1 if epochs is None else min(epochs, 1)
        return epochs

    def counts(self, windows: int) -> np.ndarray:
        """Windows drawn from each source after the first ``windows`` global windows."""
        return self.schedule.counts(windows)

    def optimizer_steps(
        self, first_epoch: int, step_in_epoch: int, epochs: int | None, accumulation: int
    ) -> Iterator[tuple[int, list[torch.Tensor]]]:
        """``(epoch, micro-batches)`` of each optimizer step from step ``step_in_epoch`` of
        ``first_epoch`` on (``accumulation`` batches a step), through ``epochs`` or forever."""
        steps_per_epoch = self.steps_per_epoch // accumulation
        per_step = self.batch_size * accumulation
        epochs = self.epoch_limit(epochs)
        for epoch in range(first_epoch, epochs) if epochs is not None else count(first_epoch):
            start = step_in_epoch if epoch == first_epoch else 0
            for step in range(start, steps_per_epoch):
                first = (epoch * steps_per_epoch + step) * per_step
                yield (
                    epoch,
                    [self._batch(first + index * self.batch_size) for index in range(accumulation)],
                )

    def _batch(self, first: int) -> torch.Tensor:
        """This rank's slice of the global batch of windows ``first`` to
        ``first + batch_size - 1``."""
        sources, draws = self.schedule.assign(first, self.batch_size)
        begin = self.rank * self.local_batch_size
        mine = slice(begin, begin + self.local_batch_size)
        starts = np.array(
            [self._start(int(s), int(d)) for s, d in zip(sources[mine], draws[mine], strict=True)],
            dtype=np.int64,
        )
        return _gather(self.tokens, starts, self.width)

    def _start(self, source: int, draw: int) -> int:
        starts = self.source_starts[source]
        size = len(starts)
        pass_number, position = divmod(draw, size)
        cached = self._orders.get(source)
        if cached is None or cached[0] != pass_number:
            cached = (pass_number, pass_order(self.seed, source, pass_number, size))
            self._orders[source] = cached
        return int(starts[cached[1][position]])
